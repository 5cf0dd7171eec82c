//! Weekly templates: sessions a clinic writes down once ("Dr Rao, Monday
//! and Thursday, 09:00 to 13:00, 20 patients") that the service makes into
//! dated slots a set number of days ahead.
//!
//! The rules and their expansion are plain data and arithmetic; reading
//! them from a file is the application's business. The service runs the
//! expansion at start-up, from its tick once a day, and when the rules are
//! replaced.

use std::collections::{BTreeMap, BTreeSet};

use jiff::civil::{Date, Time, Weekday};
use jiff::ToSpan;

use crate::engine::{Capacity, DoctorId, SlotId, SlotSpec};

/// A slot id's longest form (the id limit of every identifier).
const SLOT_ID_MAX: usize = 64;

/// What a template's slot id adds to the doctor's id: `-YYYY-MM-DD-HHMM`.
const SLOT_ID_SUFFIX: usize = "-2030-01-15-0900".len();

/// The longest doctor id a session may name, so that its slot ids stay
/// within the id limit.
pub const DOCTOR_ID_MAX: usize = SLOT_ID_MAX - SLOT_ID_SUFFIX;

/// The most sessions one file may hold: far beyond a clinic's week, small
/// enough that checking every pair for overlaps stays instant.
pub const SESSIONS_MAX: usize = 2_000;

/// The most days after today the service makes slots for.
pub const DAYS_AHEAD_MAX: u16 = 366;

/// One weekly session: one slot on each date it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub doctor: DoctorId,
    /// Indexed by [`Weekday::to_monday_zero_offset`].
    pub weekdays: [bool; 7],
    pub start: Time,
    pub end: Time,
    pub capacity: Capacity,
    /// The first date the session runs on, if it starts later than now.
    pub from: Option<Date>,
    /// The last date the session runs on, if it stops.
    pub until: Option<Date>,
    /// Dates the session does not run on (leave, training).
    pub skip: BTreeSet<Date>,
    /// Dates on which it takes another number of patients.
    pub capacity_on: BTreeMap<Date, Capacity>,
}

impl Session {
    /// Whether the weekly rule, the date range and the session's own
    /// exceptions let it run on `date` (the clinic's holidays aside).
    pub fn runs_on(&self, date: Date) -> bool {
        self.in_week_and_range(date) && !self.skip.contains(&date)
    }

    fn in_week_and_range(&self, date: Date) -> bool {
        self.weekdays[index(date.weekday())]
            && self.from.is_none_or(|from| from <= date)
            && self.until.is_none_or(|until| date <= until)
    }

    /// The slot this session makes on `date`; its id is
    /// `<doctor>-<YYYY-MM-DD>-<HHMM>`.
    pub fn slot_on(&self, date: Date) -> SlotSpec {
        SlotSpec {
            id: slot_id(&self.doctor, date, self.start),
            doctor: self.doctor.clone(),
            date,
            start: self.start,
            end: self.end,
            capacity: self
                .capacity_on
                .get(&date)
                .copied()
                .unwrap_or(self.capacity),
        }
    }

    fn weekday_names(&self) -> String {
        let names: Vec<_> = WEEKDAYS
            .iter()
            .filter(|day| self.weekdays[index(**day)])
            .map(|day| weekday_name(*day))
            .collect();
        names.join(", ")
    }
}

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

/// A weekday's place in [`Session::weekdays`].
pub fn index(day: Weekday) -> usize {
    day.to_monday_zero_offset().unsigned_abs().into()
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "Monday",
        Weekday::Tuesday => "Tuesday",
        Weekday::Wednesday => "Wednesday",
        Weekday::Thursday => "Thursday",
        Weekday::Friday => "Friday",
        Weekday::Saturday => "Saturday",
        Weekday::Sunday => "Sunday",
    }
}

/// The id of a template's slot: `<doctor>-<YYYY-MM-DD>-<HHMM>`.
pub fn slot_id(doctor: &DoctorId, date: Date, start: Time) -> SlotId {
    SlotId::parse(&format!(
        "{}-{}-{:02}{:02}",
        doctor,
        date,
        start.hour(),
        start.minute()
    ))
    .expect("a checked doctor id with a date and time is a valid slot id")
}

/// The prefix every template slot of `doctor` on `date` has.
fn day_prefix(doctor: &DoctorId, date: Date) -> String {
    format!("{doctor}-{date}-")
}

/// A session that cannot be used, by its place in the file (0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub session: usize,
    pub message: String,
}

/// A checked set of weekly sessions and the clinic's holidays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Templates {
    sessions: Vec<Session>,
    holidays: BTreeSet<Date>,
}

impl Templates {
    /// Checks every session and every pair of sessions: a doctor id short
    /// enough for slot ids, an end after the start, at least one weekday,
    /// a range that is not empty, exceptions on days the session runs, and
    /// no two sessions of one doctor overlapping on a day both could run.
    pub fn new(sessions: Vec<Session>, holidays: BTreeSet<Date>) -> Result<Templates, Invalid> {
        if sessions.len() > SESSIONS_MAX {
            return Err(Invalid {
                session: SESSIONS_MAX,
                message: format!("a file holds at most {SESSIONS_MAX} sessions"),
            });
        }
        for (index, session) in sessions.iter().enumerate() {
            check(session).map_err(|message| Invalid {
                session: index,
                message,
            })?;
        }
        for (later, session) in sessions.iter().enumerate() {
            for (earlier, other) in sessions[..later].iter().enumerate() {
                if let Some(day) = shared_weekday(session, other) {
                    return Err(Invalid {
                        session: later,
                        message: format!(
                            "overlaps session {} of the same doctor {} on {} ({}–{} and {}–{}); \
                             give one of them other times, days or dates",
                            earlier + 1,
                            session.doctor,
                            weekday_name(day),
                            hhmm(other.start),
                            hhmm(other.end),
                            hhmm(session.start),
                            hhmm(session.end),
                        ),
                    });
                }
            }
        }
        Ok(Templates { sessions, holidays })
    }

    pub fn sessions(&self) -> &[Session] {
        &self.sessions
    }

    /// The slots the sessions make on `date`, by doctor, in start order.
    pub fn slots_on(&self, date: Date) -> BTreeMap<DoctorId, Vec<SlotSpec>> {
        let mut slots: BTreeMap<DoctorId, Vec<SlotSpec>> = BTreeMap::new();
        if self.holidays.contains(&date) {
            return slots;
        }
        for session in self.sessions.iter().filter(|s| s.runs_on(date)) {
            slots
                .entry(session.doctor.clone())
                .or_default()
                .push(session.slot_on(date));
        }
        for day in slots.values_mut() {
            day.sort_by_key(|slot| slot.start);
        }
        slots
    }
}

fn hhmm(time: Time) -> String {
    format!("{:02}:{:02}", time.hour(), time.minute())
}

fn check(session: &Session) -> Result<(), String> {
    if session.doctor.as_str().len() > DOCTOR_ID_MAX {
        return Err(format!(
            "doctor {:?} is longer than {DOCTOR_ID_MAX} characters, which slot ids need \
             to add the date and time to it",
            session.doctor.as_str()
        ));
    }
    if session.end <= session.start {
        return Err(format!(
            "end {} is not after start {}",
            hhmm(session.end),
            hhmm(session.start)
        ));
    }
    if !session.weekdays.contains(&true) {
        return Err("days lists no weekday".into());
    }
    if let (Some(from), Some(until)) = (session.from, session.until) {
        if until < from {
            return Err(format!("until {until} is before from {from}"));
        }
    }
    let not_a_day = |what: &str, date: Date| {
        format!(
            "{what} {date} is a {}, outside the session's days ({}) or dates",
            weekday_name(date.weekday()),
            session.weekday_names()
        )
    };
    if let Some(&date) = session
        .skip
        .iter()
        .find(|d| !session.in_week_and_range(**d))
    {
        return Err(not_a_day("skip date", date));
    }
    if let Some(&date) = session
        .capacity_on
        .keys()
        .find(|d| !session.in_week_and_range(**d))
    {
        return Err(not_a_day("capacity_on date", date));
    }
    if let Some(date) = session
        .capacity_on
        .keys()
        .find(|d| session.skip.contains(d))
    {
        return Err(format!("{date} is both skipped and given a capacity"));
    }
    Ok(())
}

/// A weekday on which two sessions of one doctor both run at overlapping
/// times within overlapping date ranges, if there is one.
fn shared_weekday(a: &Session, b: &Session) -> Option<Weekday> {
    if a.doctor != b.doctor || a.end <= b.start || b.end <= a.start {
        return None;
    }
    let starts = a.from.max(b.from);
    let ends = match (a.until, b.until) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    if let (Some(starts), Some(ends)) = (starts, ends) {
        if ends < starts {
            return None;
        }
        // A short shared range holds only some weekdays: look at its dates.
        if ends.since(starts).ok()?.get_days() < 7 {
            let mut date = starts;
            while date <= ends {
                if a.in_week_and_range(date) && b.in_week_and_range(date) {
                    return Some(date.weekday());
                }
                date = date.tomorrow().ok()?;
            }
            return None;
        }
    }
    WEEKDAYS.into_iter().find(|day| {
        let place = index(*day);
        a.weekdays[place] && b.weekdays[place]
    })
}

/// The dates from `today` through `days_ahead` days later.
pub(super) fn window(today: Date, days_ahead: u16) -> impl Iterator<Item = Date> {
    (0..=i32::from(days_ahead)).map_while(move |offset| today.checked_add(offset.days()).ok())
}

/// Whether a listing of a doctor's slots on `date` holds a slot the
/// templates made: then that doctor's date is filled and left alone.
pub(super) fn filled(doctor: &DoctorId, date: Date, ids: &[SlotId]) -> bool {
    let prefix = day_prefix(doctor, date);
    ids.iter().any(|id| id.as_str().starts_with(&prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::{date, time};

    fn session(doctor: &str, days: &[Weekday], start: (i8, i8), end: (i8, i8)) -> Session {
        let mut weekdays = [false; 7];
        for day in days {
            weekdays[index(*day)] = true;
        }
        Session {
            doctor: DoctorId::parse(doctor).unwrap(),
            weekdays,
            start: time(start.0, start.1, 0, 0),
            end: time(end.0, end.1, 0, 0),
            capacity: Capacity::new(10).unwrap(),
            from: None,
            until: None,
            skip: BTreeSet::new(),
            capacity_on: BTreeMap::new(),
        }
    }

    #[test]
    fn a_session_makes_one_slot_on_each_of_its_days_with_the_date_in_the_id() {
        let rao = session("RAO", &[Weekday::Monday], (9, 0), (13, 0));
        let templates = Templates::new(vec![rao], BTreeSet::new()).unwrap();
        // 2030-01-14 is a Monday.
        let monday = templates.slots_on(date(2030, 1, 14));
        let slots = &monday[&DoctorId::parse("RAO").unwrap()];
        assert_eq!(slots.len(), 1);
        assert_eq!(slots[0].id.as_str(), "RAO-2030-01-14-0900");
        assert!(templates.slots_on(date(2030, 1, 15)).is_empty());
    }

    #[test]
    fn ranges_skips_holidays_and_capacities_apply() {
        let mut rao = session("RAO", &[Weekday::Monday], (9, 0), (13, 0));
        rao.from = Some(date(2030, 1, 7));
        rao.until = Some(date(2030, 1, 28));
        rao.skip.insert(date(2030, 1, 14));
        rao.capacity_on
            .insert(date(2030, 1, 21), Capacity::new(4).unwrap());
        let holidays = BTreeSet::from([date(2030, 1, 28)]);
        let templates = Templates::new(vec![rao], holidays).unwrap();
        let made: Vec<_> = window(date(2029, 12, 31), 35)
            .flat_map(|day| templates.slots_on(day).into_values().flatten())
            .map(|slot| (slot.date, slot.capacity.get()))
            .collect();
        assert_eq!(made, [(date(2030, 1, 7), 10), (date(2030, 1, 21), 4)]);
    }

    #[test]
    fn bad_sessions_are_named_with_what_is_wrong() {
        let long = "D".repeat(DOCTOR_ID_MAX + 1);
        let cases = [
            (
                session(&long, &[Weekday::Monday], (9, 0), (10, 0)),
                "longer than 48",
            ),
            (
                session("A", &[Weekday::Monday], (10, 0), (9, 0)),
                "end 09:00 is not after start 10:00",
            ),
            (session("A", &[], (9, 0), (10, 0)), "no weekday"),
        ];
        for (bad, expected) in cases {
            let error = Templates::new(vec![bad], BTreeSet::new()).unwrap_err();
            assert_eq!(error.session, 0);
            assert!(error.message.contains(expected), "{}", error.message);
        }
        let mut skips_a_tuesday = session("A", &[Weekday::Monday], (9, 0), (10, 0));
        skips_a_tuesday.skip.insert(date(2030, 1, 15));
        let error = Templates::new(vec![skips_a_tuesday], BTreeSet::new()).unwrap_err();
        assert!(
            error.message.contains("2030-01-15 is a Tuesday"),
            "{}",
            error.message
        );
    }

    #[test]
    fn overlapping_sessions_of_one_doctor_are_refused_unless_their_dates_part() {
        let morning = session("A", &[Weekday::Monday, Weekday::Tuesday], (9, 0), (13, 0));
        let noon = session("A", &[Weekday::Tuesday], (12, 0), (14, 0));
        let error =
            Templates::new(vec![morning.clone(), noon.clone()], BTreeSet::new()).unwrap_err();
        assert_eq!(error.session, 1);
        assert!(
            error.message.contains("overlaps session 1"),
            "{}",
            error.message
        );
        assert!(error.message.contains("Tuesday"), "{}", error.message);

        // A rule replaced from a date on: the old one ends the day before.
        let mut old = morning.clone();
        old.until = Some(date(2030, 1, 31));
        let mut new = noon.clone();
        new.from = Some(date(2030, 2, 1));
        assert!(Templates::new(vec![old, new], BTreeSet::new()).is_ok());

        // Another doctor, or another weekday, does not overlap.
        let other = session("B", &[Weekday::Tuesday], (12, 0), (14, 0));
        let wednesday = session("A", &[Weekday::Wednesday], (12, 0), (14, 0));
        assert!(Templates::new(vec![morning, other, wednesday], BTreeSet::new()).is_ok());
    }

    #[test]
    fn a_doctors_date_is_filled_by_any_template_slot_of_it() {
        let rao = DoctorId::parse("RAO").unwrap();
        let day = date(2030, 1, 14);
        let ids = |list: &[&str]| -> Vec<SlotId> {
            list.iter().map(|id| SlotId::parse(id).unwrap()).collect()
        };
        assert!(filled(&rao, day, &ids(&["RAO-2030-01-14-1400"])));
        assert!(!filled(
            &rao,
            day,
            &ids(&["RAO-EXTRA", "RAO-2030-01-15-0900"])
        ));
    }
}
