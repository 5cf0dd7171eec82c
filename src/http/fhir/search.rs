//! Reading FHIR search parameters: which parameters a search has, date
//! comparisons, references, tokens, paging, and the links of the answer.
//!
//! Unknown parameters are refused (400) unless the client asks for
//! lenient handling with `Prefer: handling=lenient`, as FHIR lets a client
//! choose; a hospital system that mistypes a filter then learns it,
//! instead of receiving every appointment of the day. The `self` link
//! lists exactly the parameters the search applied.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp, ToSpan};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::ids;
use super::outcome::FhirError;

/// Entries in a page when the search does not say (`_count`).
pub const COUNT_DEFAULT: usize = 50;
/// The most entries one page holds.
pub const COUNT_MAX: usize = 100;
/// The most days a date range may span for the search to read the days one
/// by one; a wider or open range reads the whole listing, within
/// [`SCAN_SLOTS_MAX`](super::SCAN_SLOTS_MAX).
pub const RANGE_DAYS_MAX: i64 = 31;

/// Parameters every search takes besides its own.
const COMMON: [&str; 4] = ["_count", "_cursor", "_total", "_format"];

/// The longest cursor a next link gives (the pattern the OpenAPI document
/// states for `_cursor`).
const CURSOR_MAX_LEN: usize = 80;

/// Characters written as is in the links' query values: ids, references
/// and dates need no escaping, everything else is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b':')
    .remove(b',');

/// A search's query, taken parameter by parameter.
pub struct Params {
    pairs: Vec<(String, String)>,
    used: Vec<(String, String)>,
}

/// What every search has: the page asked for, and the parameters applied,
/// in the order given, for the links.
#[derive(Debug)]
pub struct Search {
    pub count: usize,
    pub cursor: Option<String>,
    /// The parameters applied (paging left out), for the `self` link.
    pub applied: Vec<(String, String)>,
}

impl Params {
    pub fn new(pairs: Vec<(String, String)>) -> Params {
        Params {
            pairs,
            used: Vec::new(),
        }
    }

    /// Every value given for `name`, in order; an empty value is refused.
    pub fn take(&mut self, name: &str) -> Result<Vec<String>, FhirError> {
        let mut values = Vec::new();
        let mut kept = Vec::new();
        for (key, value) in std::mem::take(&mut self.pairs) {
            if key == name {
                if value.is_empty() {
                    return Err(FhirError::invalid(format!("{name} has an empty value")));
                }
                self.used.push((key, value.clone()));
                values.push(value);
            } else {
                kept.push((key, value));
            }
        }
        self.pairs = kept;
        Ok(values)
    }

    /// The paging and format parameters, then what is left: unknown
    /// parameters are refused unless `lenient`, and then left out of the
    /// `self` link. `supported` are the search's own parameters.
    pub fn finish(mut self, lenient: bool, supported: &[&str]) -> Result<Search, FhirError> {
        let count = match single(&self.take("_count")?, "_count")? {
            None => COUNT_DEFAULT,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|count| *count <= COUNT_MAX)
                .ok_or_else(|| {
                    FhirError::invalid(format!("_count must be an integer from 0 to {COUNT_MAX}"))
                })?,
        };
        let cursor = single(&self.take("_cursor")?, "_cursor")?.map(str::to_owned);
        // A cursor is a slot or doctor id and a number, as the next link
        // gives it; anything else is refused even when the search finds
        // nothing, so that no page answers 200 to a cursor it never gave.
        if let Some(cursor) = &cursor {
            let well_formed = (1..=CURSOR_MAX_LEN).contains(&cursor.len())
                && cursor.bytes().all(|byte| {
                    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-')
                });
            if !well_formed {
                return Err(FhirError::invalid("_cursor is not one this server gave"));
            }
        }
        if let Some(total) = single(&self.take("_total")?, "_total")? {
            // The total is always counted exactly, which every choice allows.
            if !matches!(total, "none" | "estimate" | "accurate") {
                return Err(FhirError::invalid(
                    "_total must be none, estimate or accurate",
                ));
            }
        }
        if let Some(format) = single(&self.take("_format")?, "_format")? {
            if !matches!(
                format,
                "json" | "application/json" | "application/fhir+json"
            ) {
                return Err(FhirError::not_acceptable(
                    "this server answers only in JSON (_format=json)",
                ));
            }
        }
        if let Some((name, _)) = self.pairs.first() {
            if !lenient {
                let mut names: Vec<&str> = supported.to_vec();
                names.extend(COMMON);
                return Err(FhirError::unknown_parameter(name, &names));
            }
        }
        let applied = self
            .used
            .into_iter()
            .filter(|(name, _)| name != "_cursor" && name != "_count")
            .collect();
        Ok(Search {
            count,
            cursor,
            applied,
        })
    }
}

/// The one value of a parameter that may be given once.
fn single<'a>(values: &'a [String], name: &str) -> Result<Option<&'a str>, FhirError> {
    match values {
        [] => Ok(None),
        [value] => Ok(Some(value)),
        _ => Err(FhirError::invalid(format!("{name} may be given only once"))),
    }
}

/// The values of a parameter's comma-separated list (FHIR's "or").
pub fn either(values: &[String]) -> impl Iterator<Item = &str> {
    values.iter().flat_map(|value| value.split(','))
}

/// The service id that a reference value names, for a reference search
/// parameter on `resource_type`: `Type/id`, a bare `id`, or an absolute
/// URL ending in `/Type/id`. `Ok(None)` when the value refers to that type
/// but no slot or doctor can have the id; an error when it refers to
/// another type.
pub fn reference_id(value: &str, resource_type: &str) -> Result<Option<String>, FhirError> {
    let (kind, id) = match value.rsplit_once('/') {
        None => (None, value),
        Some((before, id)) => {
            let kind = before.rsplit_once('/').map_or(before, |(_, kind)| kind);
            let absolute = before.starts_with("http://") || before.starts_with("https://");
            if before.contains('/') && !absolute {
                return Err(FhirError::invalid(format!(
                    "{value:?} is not a reference to a {resource_type}"
                )));
            }
            (Some(kind), id)
        }
    };
    if kind.is_some_and(|kind| kind != resource_type) {
        return Err(FhirError::invalid(format!(
            "{value:?} is not a reference to a {resource_type}"
        )));
    }
    Ok(ids::decode(id))
}

/// The codes of a token parameter whose values belong to `system`:
/// `code` or `system|code`; each must be one of `codes`.
pub fn codes(
    values: &[String],
    name: &str,
    system: &str,
    codes: &[&'static str],
) -> Result<Vec<&'static str>, FhirError> {
    let mut found = Vec::new();
    for value in either(values) {
        let code = match value.split_once('|') {
            None => value,
            Some((given, code)) if given.is_empty() || given == system => code,
            Some(_) => {
                return Err(FhirError::invalid(format!(
                    "{name} takes codes of {system}"
                )))
            }
        };
        let known = codes.iter().find(|known| **known == code).ok_or_else(|| {
            FhirError::invalid(format!("{name} must be one of {}", codes.join(", ")))
        })?;
        found.push(*known);
    }
    Ok(found)
}

/// An identifier a token search asks for: a value, with the system it
/// must have (`Some("")` for "no system", `None` for any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierQuery {
    pub system: Option<String>,
    pub value: String,
}

impl IdentifierQuery {
    pub fn matches(&self, system: &str, value: &str) -> bool {
        self.value == value && self.system.as_deref().is_none_or(|wanted| wanted == system)
    }
}

/// The identifiers of an `:identifier` search: `value`, `system|value`
/// or `|value`.
pub fn identifiers(values: &[String]) -> Vec<IdentifierQuery> {
    either(values)
        .map(|value| match value.split_once('|') {
            None => IdentifierQuery {
                system: None,
                value: value.to_owned(),
            },
            Some((system, value)) => IdentifierQuery {
                system: Some(system.to_owned()),
                value: value.to_owned(),
            },
        })
        .collect()
}

/// How a date parameter compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

/// One date value of a search: a prefix and the range of instants the
/// value stands for at its precision (a day is the whole day in the
/// clinic's zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateValue {
    prefix: Prefix,
    from: Timestamp,
    until: Timestamp,
}

impl DateValue {
    /// Whether an instant (which is exact to the second) matches.
    fn matches(&self, at: Timestamp) -> bool {
        match self.prefix {
            Prefix::Eq => self.from <= at && at < self.until,
            Prefix::Ne => !(self.from <= at && at < self.until),
            Prefix::Gt => at >= self.until,
            Prefix::Lt => at < self.from,
            Prefix::Ge => at >= self.from,
            Prefix::Le => at < self.until,
        }
    }

    /// The instants a match lies in, as far as this value alone bounds
    /// them.
    fn bounds(&self) -> (Option<Timestamp>, Option<Timestamp>) {
        match self.prefix {
            Prefix::Eq => (Some(self.from), Some(self.until)),
            Prefix::Ne => (None, None),
            Prefix::Gt => (Some(self.until), None),
            Prefix::Ge => (Some(self.from), None),
            Prefix::Lt => (None, Some(self.from)),
            Prefix::Le => (None, Some(self.until)),
        }
    }
}

/// A date parameter: each repetition must match ("and"), and within one,
/// one of its comma-separated values ("or").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DateFilter(Vec<Vec<DateValue>>);

impl DateFilter {
    /// Reads a date parameter's values; dates and times without an offset
    /// are in the clinic's zone.
    pub fn parse(values: &[String], name: &str, zone: &TimeZone) -> Result<DateFilter, FhirError> {
        let mut all = Vec::new();
        for value in values {
            let mut any = Vec::new();
            for one in value.split(',') {
                any.push(date_value(one, zone).ok_or_else(|| {
                    FhirError::invalid(format!(
                        "{name} {one:?} is not a date search: an optional prefix (eq, ne, gt, lt, ge, le) and YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][Z|±hh:mm]"
                    ))
                })?);
            }
            all.push(any);
        }
        Ok(DateFilter(all))
    }

    pub fn matches(&self, at: Timestamp) -> bool {
        self.0
            .iter()
            .all(|any| any.iter().any(|value| value.matches(at)))
    }

    /// The clinic's dates a match can fall on, when the filter bounds them
    /// both ways within [`RANGE_DAYS_MAX`] days; `None` otherwise.
    pub fn dates(&self, zone: &TimeZone) -> Option<Vec<Date>> {
        let mut from: Option<Timestamp> = None;
        let mut until: Option<Timestamp> = None;
        for any in &self.0 {
            // A list of alternatives bounds a match only by its widest
            // reach, which a single value gives exactly.
            let [value] = any.as_slice() else { continue };
            let (low, high) = value.bounds();
            from = from.max(low);
            until = match (until, high) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let (from, until) = (from?, until?);
        if until <= from {
            return Some(Vec::new());
        }
        let first = from.to_zoned(zone.clone()).date();
        let last = (until - SignedDuration::from_nanos(1))
            .to_zoned(zone.clone())
            .date();
        if (last - first).get_days() >= RANGE_DAYS_MAX as i32 {
            return None;
        }
        let mut dates = Vec::new();
        let mut date = first;
        while date <= last {
            dates.push(date);
            date = date.tomorrow().ok()?;
        }
        Some(dates)
    }
}

/// One date value: prefix, then the date at year, month, day, minute or
/// second precision.
fn date_value(raw: &str, zone: &TimeZone) -> Option<DateValue> {
    let prefixes = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
    ];
    let (prefix, text) = prefixes
        .iter()
        .find_map(|(name, prefix)| raw.strip_prefix(name).map(|rest| (*prefix, rest)))
        .unwrap_or((Prefix::Eq, raw));
    let (from, until) = date_range(text, zone)?;
    Some(DateValue {
        prefix,
        from,
        until,
    })
}

/// The instants a date stands for.
fn date_range(text: &str, zone: &TimeZone) -> Option<(Timestamp, Timestamp)> {
    let start_of = |date: Date| -> Option<Timestamp> {
        zone.to_ambiguous_timestamp(date.to_datetime(Time::midnight()))
            .compatible()
            .ok()
    };
    let digits = |part: &str, len: usize| -> Option<i32> {
        (part.len() == len && part.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let (day, time) = match text.split_once('T') {
        Some((day, time)) => (day, Some(time)),
        None => (text, None),
    };
    let parts: Vec<&str> = day.split('-').collect();
    match (parts.as_slice(), time) {
        ([year], None) => {
            let year = i16::try_from(digits(year, 4)?).ok()?;
            let first = Date::new(year, 1, 1).ok()?;
            Some((
                start_of(first)?,
                start_of(first.checked_add(1.year()).ok()?)?,
            ))
        }
        ([year, month], None) => {
            let year = i16::try_from(digits(year, 4)?).ok()?;
            let month = i8::try_from(digits(month, 2)?).ok()?;
            let first = Date::new(year, month, 1).ok()?;
            Some((
                start_of(first)?,
                start_of(first.checked_add(1.month()).ok()?)?,
            ))
        }
        ([_, _, _], None) => {
            let date = full_date(day)?;
            Some((start_of(date)?, start_of(date.tomorrow().ok()?)?))
        }
        ([_, _, _], Some(time)) => {
            let date = full_date(day)?;
            let (clock, offset) = split_offset(time)?;
            let (time, step) = match clock.len() {
                5 => (
                    Time::strptime("%H:%M", clock).ok()?,
                    SignedDuration::from_secs(60),
                ),
                8.. => (clock.parse::<Time>().ok()?, SignedDuration::from_secs(1)),
                _ => return None,
            };
            let local = DateTime::from_parts(date, time);
            let from = match offset {
                Some(offset) => offset.to_timestamp(local).ok()?,
                None => zone.to_ambiguous_timestamp(local).compatible().ok()?,
            };
            Some((from, from.checked_add(step).ok()?))
        }
        _ => None,
    }
}

/// A YYYY-MM-DD date that exists on the calendar.
fn full_date(text: &str) -> Option<Date> {
    let well_formed = text.len() == 10
        && text.bytes().enumerate().all(|(index, byte)| match index {
            4 | 7 => byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    well_formed.then(|| text.parse().ok()).flatten()
}

/// A time of day and its offset, if it has one: `Z`, `+hh:mm` or
/// `-hh:mm`. A `+` that arrived unencoded in a query reads as a space,
/// and is taken as `+`.
fn split_offset(time: &str) -> Option<(&str, Option<Offset>)> {
    if let Some(clock) = time.strip_suffix('Z') {
        return Some((clock, Some(Offset::UTC)));
    }
    let Some(at) = time.rfind(['+', '-', ' ']) else {
        return Some((time, None));
    };
    let (clock, offset) = time.split_at(at);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let hours_minutes = &offset[1..];
    if hours_minutes.len() != 5 || hours_minutes.as_bytes()[2] != b':' {
        return None;
    }
    let hours: i32 = hours_minutes[..2].parse().ok()?;
    let minutes: i32 = hours_minutes[3..].parse().ok()?;
    if hours > 14 || minutes > 59 {
        return None;
    }
    let offset = Offset::from_seconds(sign * (hours * 3600 + minutes * 60)).ok()?;
    Some((clock, Some(offset)))
}

/// A search URL: the base, the type, and the parameters.
pub fn search_url(base: &str, resource_type: &str, parameters: &[(String, String)]) -> String {
    let mut url = format!("{base}/{resource_type}");
    for (index, (name, value)) in parameters.iter().enumerate() {
        url.push(if index == 0 { '?' } else { '&' });
        url.extend(utf8_percent_encode(name, QUERY_VALUE));
        url.push('=');
        url.extend(utf8_percent_encode(value, QUERY_VALUE));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn filter(values: &[&str], zone: &TimeZone) -> DateFilter {
        let values: Vec<String> = values.iter().map(|value| value.to_string()).collect();
        DateFilter::parse(&values, "start", zone).unwrap()
    }

    #[test]
    fn a_day_is_the_whole_day_in_the_clinics_zone() {
        let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
        let day = filter(&["2030-01-15"], &kolkata);
        assert!(day.matches(at("2030-01-14T18:30:00Z")));
        assert!(day.matches(at("2030-01-15T18:29:59Z")));
        assert!(!day.matches(at("2030-01-15T18:30:00Z")));
        assert!(!day.matches(at("2030-01-14T18:29:59Z")));
    }

    #[test]
    fn prefixes_compare_with_the_range_a_value_stands_for() {
        let zone = utc();
        let nine = at("2030-01-15T09:00:00Z");
        for (value, matches) in [
            ("ge2030-01-15", true),
            ("gt2030-01-15", false),
            ("gt2030-01-14", true),
            ("lt2030-01-15", false),
            ("lt2030-01-16", true),
            ("le2030-01-15", true),
            ("eq2030-01", true),
            ("2030", true),
            ("ne2030-01-15", false),
            ("ge2030-01-15T09:00Z", true),
            ("gt2030-01-15T09:00:00Z", false),
            ("eq2030-01-15T09:00", true),
            ("eq2030-01-15T14:30:00+05:30", true),
            ("eq2030-01-15T14:30:00 05:30", true),
            ("lt2030-01-15T04:00:00-05:00", false),
            ("lt2030-01-15T04:00:01-05:00", true),
        ] {
            assert_eq!(filter(&[value], &zone).matches(nine), matches, "{value}");
        }
    }

    #[test]
    fn repetitions_must_all_match_and_commas_are_alternatives() {
        let zone = utc();
        let nine = at("2030-01-15T09:00:00Z");
        assert!(filter(&["ge2030-01-15", "lt2030-01-16"], &zone).matches(nine));
        assert!(!filter(&["ge2030-01-16", "lt2030-01-17"], &zone).matches(nine));
        assert!(filter(&["2030-01-20,2030-01-15"], &zone).matches(nine));
    }

    #[test]
    fn malformed_dates_are_refused() {
        for value in [
            "",
            "sa2030-01-15",
            "2030-1-15",
            "2030-02-30",
            "2030-01-15T9:00",
            "2030-01-15T09:00+5:30",
            "2030-01-15T09:00:00+15:00",
            "tomorrow",
            "20300115",
        ] {
            assert!(
                DateFilter::parse(&[value.to_owned()], "start", &utc()).is_err(),
                "{value}"
            );
        }
    }

    #[test]
    fn a_bounded_range_gives_its_dates() {
        let zone = utc();
        let days = filter(&["ge2030-01-15", "lt2030-01-17"], &zone).dates(&zone);
        assert_eq!(
            days,
            Some(vec![
                "2030-01-15".parse().unwrap(),
                "2030-01-16".parse().unwrap()
            ])
        );
        assert_eq!(filter(&["ge2030-01-15"], &zone).dates(&zone), None);
        assert_eq!(filter(&["2030"], &zone).dates(&zone), None);
        assert_eq!(
            filter(&["ge2030-01-16", "lt2030-01-15"], &zone).dates(&zone),
            Some(Vec::new())
        );
    }

    #[test]
    fn references_name_ids_of_their_type() {
        for value in [
            "Practitioner/D1",
            "D1",
            "http://localhost:8080/fhir/Practitioner/D1",
        ] {
            assert_eq!(
                reference_id(value, "Practitioner").unwrap().as_deref(),
                Some("D1"),
                "{value}"
            );
        }
        assert_eq!(
            reference_id("Practitioner/D.-1", "Practitioner")
                .unwrap()
                .as_deref(),
            Some("D_1")
        );
        assert_eq!(
            reference_id("Practitioner/D_1", "Practitioner").unwrap(),
            None
        );
        for value in ["Patient/P1", "a/Practitioner/D1", "Slot/D1-09"] {
            assert!(reference_id(value, "Practitioner").is_err(), "{value}");
        }
    }

    #[test]
    fn unknown_parameters_are_refused_unless_lenient() {
        let pairs = vec![("colour".to_owned(), "blue".to_owned())];
        assert!(Params::new(pairs.clone())
            .finish(false, &["status"])
            .is_err());
        let search = Params::new(pairs).finish(true, &["status"]).unwrap();
        assert!(search.applied.is_empty());
    }

    #[test]
    fn links_escape_what_a_query_value_needs() {
        let url = search_url(
            "http://h/fhir",
            "Appointment",
            &[
                ("patient:identifier".into(), "sys|P 1+".into()),
                ("date".into(), "ge2030-01-15".into()),
            ],
        );
        assert_eq!(
            url,
            "http://h/fhir/Appointment?patient:identifier=sys%7CP%201%2B&date=ge2030-01-15"
        );
    }
}
