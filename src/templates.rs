//! Reads a weekly templates file (TOML) into the service's [`Templates`].
//!
//! TOML because an operator writes this file by hand and keeps it for
//! years: it takes comments ("# Dr Rao is on leave in August"), needs no
//! brackets balanced across the file, and a typo is reported with its line.
//! Every session is checked before any is used; an error names the session
//! by number and line and says what is wrong.

use std::collections::{BTreeMap, BTreeSet};

use jiff::civil::{Date, Time, Weekday};
use serde::Deserialize;
use toml::{Spanned, Value};

use crate::engine::{Capacity, DoctorId, CAPACITY_MAX};
use crate::http::input::{parse_date, parse_time};
use crate::service::weekly::{self, Session, Templates};

/// The whole file: the clinic's holidays and its sessions.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    holidays: Vec<Spanned<Value>>,
    #[serde(default)]
    session: Vec<Spanned<RawSession>>,
}

/// One `[[session]]` table as written; dates and times may be TOML's own
/// (`09:00:00`, `2026-12-25`) or strings (`"09:00"`, `"2026-12-25"`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    doctor: String,
    days: Vec<String>,
    start: Value,
    end: Value,
    capacity: i64,
    from: Option<Value>,
    until: Option<Value>,
    #[serde(default)]
    skip: Vec<Value>,
    #[serde(default)]
    capacity_on: BTreeMap<String, i64>,
}

/// Reads and checks a templates file. The error names the place: the
/// line and column of a syntax error, or the session's number and line.
pub fn parse(text: &str) -> Result<Templates, String> {
    let file: File = toml::from_str(text).map_err(|error| error.to_string())?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut holidays = BTreeSet::new();
    for holiday in &file.holidays {
        let date = date(holiday.get_ref()).map_err(|message| {
            format!(
                "holidays (line {}): {message}",
                line_of(holiday.span().start)
            )
        })?;
        holidays.insert(date);
    }
    let mut sessions = Vec::with_capacity(file.session.len());
    let mut lines = Vec::with_capacity(file.session.len());
    for (index, raw) in file.session.iter().enumerate() {
        let line = line_of(raw.span().start);
        let session = session(raw.get_ref())
            .map_err(|message| format!("session {} (line {line}): {message}", index + 1))?;
        sessions.push(session);
        lines.push(line);
    }
    Templates::new(sessions, holidays).map_err(|invalid| match lines.get(invalid.session) {
        Some(line) => format!(
            "session {} (line {line}): {}",
            invalid.session + 1,
            invalid.message
        ),
        None => invalid.message,
    })
}

fn session(raw: &RawSession) -> Result<Session, String> {
    let doctor = DoctorId::parse(&raw.doctor).ok_or_else(|| {
        format!(
            "doctor {:?} must be 1 to {} letters, digits, '.', '_' or '-'",
            raw.doctor,
            weekly::DOCTOR_ID_MAX
        )
    })?;
    let mut weekdays = [false; 7];
    for day in &raw.days {
        weekdays[weekly::index(weekday(day)?)] = true;
    }
    let mut skip = BTreeSet::new();
    for value in &raw.skip {
        skip.insert(date(value).map_err(|message| format!("skip: {message}"))?);
    }
    let mut capacity_on = BTreeMap::new();
    for (day, seats) in &raw.capacity_on {
        let day = parse_date(day)
            .ok_or_else(|| format!("capacity_on: {day:?} is not a date YYYY-MM-DD"))?;
        capacity_on.insert(
            day,
            capacity(*seats).map_err(|message| format!("capacity_on {day}: {message}"))?,
        );
    }
    Ok(Session {
        doctor,
        weekdays,
        start: time(&raw.start).map_err(|message| format!("start: {message}"))?,
        end: time(&raw.end).map_err(|message| format!("end: {message}"))?,
        capacity: capacity(raw.capacity).map_err(|message| format!("capacity: {message}"))?,
        from: raw
            .from
            .as_ref()
            .map(date)
            .transpose()
            .map_err(|message| format!("from: {message}"))?,
        until: raw
            .until
            .as_ref()
            .map(date)
            .transpose()
            .map_err(|message| format!("until: {message}"))?,
        skip,
        capacity_on,
    })
}

/// A weekday by its English name or first three letters, in any case.
fn weekday(name: &str) -> Result<Weekday, String> {
    let days = [
        ("mon", "monday", Weekday::Monday),
        ("tue", "tuesday", Weekday::Tuesday),
        ("wed", "wednesday", Weekday::Wednesday),
        ("thu", "thursday", Weekday::Thursday),
        ("fri", "friday", Weekday::Friday),
        ("sat", "saturday", Weekday::Saturday),
        ("sun", "sunday", Weekday::Sunday),
    ];
    let lower = name.to_ascii_lowercase();
    days.iter()
        .find(|(short, long, _)| lower == *short || lower == *long)
        .map(|(_, _, day)| *day)
        .ok_or_else(|| format!("days: {name:?} is not a weekday (mon, tue, … sun)"))
}

fn capacity(seats: i64) -> Result<Capacity, String> {
    u32::try_from(seats)
        .ok()
        .and_then(Capacity::new)
        .ok_or_else(|| format!("{seats} is not a number of patients from 0 to {CAPACITY_MAX}"))
}

fn date(value: &Value) -> Result<Date, String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Datetime(datetime) if datetime.time.is_none() && datetime.offset.is_none() => {
            datetime
                .date
                .map(|day| format!("{:04}-{:02}-{:02}", day.year, day.month, day.day))
                .unwrap_or_default()
        }
        other => format!("a {}", other.type_str()),
    };
    parse_date(&text).ok_or_else(|| format!("{text} is not a date YYYY-MM-DD"))
}

fn time(value: &Value) -> Result<Time, String> {
    let text = match value {
        Value::String(text) => text.clone(),
        // TOML's local time `09:00:00`; seconds must be zero.
        Value::Datetime(datetime) if datetime.date.is_none() && datetime.offset.is_none() => {
            match datetime.time {
                Some(time) if time.second == 0 && time.nanosecond == 0 => {
                    format!("{:02}:{:02}", time.hour, time.minute)
                }
                _ => "a time with seconds".to_owned(),
            }
        }
        other => format!("a {}", other.type_str()),
    };
    parse_time(&text).ok_or_else(|| format!("{text} is not a time HH:MM from 00:00 to 23:59"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
holidays = ["2030-01-26"]

[[session]]
doctor = "RAO"
days = ["mon", "Thursday"]
start = "09:00"
end = 13:00:00
capacity = 20
skip = [2030-01-17]
capacity_on = { "2030-01-24" = 8 }
"#;

    #[test]
    fn a_file_of_sessions_is_read() {
        let templates = parse(SMALL).unwrap();
        let [rao] = templates.sessions() else {
            panic!("one session")
        };
        assert_eq!(rao.doctor.as_str(), "RAO");
        assert_eq!(
            (rao.start, rao.end),
            (
                jiff::civil::time(9, 0, 0, 0),
                jiff::civil::time(13, 0, 0, 0)
            )
        );
        assert!(rao.skip.contains(&jiff::civil::date(2030, 1, 17)));
        assert_eq!(rao.capacity_on[&jiff::civil::date(2030, 1, 24)].get(), 8);
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let example = parse(include_str!("../schedules/small-opd.toml")).unwrap();
        assert_eq!(example.sessions().len(), 7);
    }

    #[test]
    fn the_readme_example_is_valid() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").expect("a TOML example") + "```toml\n".len();
        let length = readme[start..].find("```").expect("the example's end");
        let example = parse(&readme[start..start + length]).unwrap();
        assert_eq!(example.sessions()[0].doctor.as_str(), "PAED-RAO");
    }

    #[test]
    fn errors_name_the_session_its_line_and_what_is_wrong() {
        let cases = [
            (SMALL.replace("\"09:00\"", "\"9am\""), "session 1 (line 4): start: 9am is not a time"),
            (SMALL.replace("\"mon\"", "\"monday-friday\""), "session 1 (line 4): days: \"monday-friday\""),
            (SMALL.replace("capacity = 20", "capacity = -2"), "session 1 (line 4): capacity: -2 is not"),
            (SMALL.replace("capacity = 20", "capcity = 20"), "unknown field `capcity`"),
            (SMALL.replace("2030-01-26", "2030-02-30"), "holidays (line 2): 2030-02-30 is not a date"),
            (
                format!("{SMALL}\n[[session]]\ndoctor = \"RAO\"\ndays = [\"mon\"]\nstart = \"12:00\"\nend = \"14:00\"\ncapacity = 5\n"),
                "session 2 (line 13): overlaps session 1",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&text).unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} should say {expected:?}"
            );
        }
        let syntax = parse("[[session]\ndoctor = 1").unwrap_err();
        assert!(syntax.contains("line 1"), "{syntax}");
    }
}
