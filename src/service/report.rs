//! Day reports for the clinic: how many patients came, how long they
//! waited, how long consultations took, how busy each doctor was and how
//! good the call estimates were, for one date, per doctor and for the
//! whole clinic.
//!
//! A report is made from the events alone (the token events of the date's
//! slots and the slots' creations, see [`Service::report_events`]), folded
//! in id order, so every backend gives the same answer for the same day.
//! The log keeps events 24 hours; what reports need of older ones is kept
//! for good as they are pruned (ARCHITECTURE.md, "Day reports").
//!
//! [`Service::report_events`]: super::Service::report_events

use std::collections::{BTreeMap, HashMap};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use uuid::Uuid;

use crate::engine::{Decision, DoctorId, Reason, Source, Status};
use crate::store::events::{Event, EventKind};

/// The most days one range report covers.
pub const RANGE_DAYS_MAX: i32 = 92;

/// The decisions a report counts, in the order it lists them.
pub const DECISIONS: [Decision; 4] = [
    Decision::Allocated,
    Decision::BumpedLower,
    Decision::Overbooked,
    Decision::Waitlisted,
];

/// The final statuses a report counts, in the order it lists them.
pub const OUTCOMES: [Status; 4] = [
    Status::Completed,
    Status::NoShow,
    Status::Cancelled,
    Status::Expired,
];

/// One date's report.
#[derive(Debug, Clone, PartialEq)]
pub struct DayReport {
    pub date: Date,
    /// The whole clinic: every doctor's figures taken together (medians
    /// over all patients, not a median of the doctors' medians).
    pub clinic: Figures,
    /// Each doctor with a slot or a token on the date, by id (or only the
    /// doctor asked for).
    pub doctors: Vec<(DoctorId, Figures)>,
}

/// The figures of one doctor, or of the clinic, on one date. Durations
/// are in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Tokens booked for the date.
    pub tokens: u32,
    /// Tokens by source, in [`Source::ALL`] order.
    pub by_source: [u32; 5],
    /// Bookings by decision, in [`DECISIONS`] order.
    pub decisions: [u32; 4],
    /// Tokens by final status, in [`OUTCOMES`] order; tokens still active
    /// (a day in progress) are in none.
    pub outcomes: [u32; 4],
    /// From a patient's first check-in to their first call.
    pub wait_to_call: Spread,
    /// The same waits by the hour of the clinic's day (0–23, in its time
    /// zone) the patient checked in, in hour order; hours without a wait
    /// are left out.
    pub waits_by_hour: Vec<(i8, Spread)>,
    /// From the call a patient answered to the start of the consultation.
    pub wait_to_start: Spread,
    /// From the start of a consultation to its completion by the doctor
    /// (consultations the day's end completed are left out: their end is
    /// the end of the day, not of the consultation).
    pub consultation: Spread,
    /// The length of the doctor's slots of the date, added up.
    pub session_seconds: f64,
    /// The consultations' lengths, added up.
    pub consultation_seconds: f64,
    /// Time in consultation ÷ session length; `None` without sessions.
    pub utilisation: Option<f64>,
    /// Session length not spent in consultation (never below 0).
    pub idle_seconds: f64,
    pub estimate_error: EstimateError,
}

/// How a set of durations is spread: their number, median and 90th
/// percentile (nearest rank: the smallest value with at least that share
/// of the values at or below it), in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spread {
    pub count: usize,
    pub median: Option<f64>,
    pub p90: Option<f64>,
}

impl Spread {
    fn of(mut seconds: Vec<f64>) -> Spread {
        seconds.sort_by(f64::total_cmp);
        let rank = |share: f64| {
            let rank = (share * seconds.len() as f64).ceil() as usize;
            seconds.get(rank.max(1) - 1).copied()
        };
        Spread {
            count: seconds.len(),
            median: rank(0.5),
            p90: rank(0.9),
        }
    }
}

/// How far calls came from the estimate each patient's check-in answer
/// gave (`estimatedCallAt`): every call of a patient who entered the call
/// queue with an estimate (a check-in, or a return after a skip) counts
/// once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EstimateError {
    pub count: usize,
    /// The mean of |call time − estimate|, in seconds.
    pub mean_absolute_seconds: Option<f64>,
    /// The share of calls that came later than estimated: the wait was
    /// underestimated.
    pub underestimated_share: Option<f64>,
}

/// What the events tell of one token.
struct TokenFacts {
    doctor: DoctorId,
    source: Source,
    decision: Option<Decision>,
    status: Status,
    checked_in: Option<Timestamp>,
    first_called: Option<Timestamp>,
    last_called: Option<Timestamp>,
    started: Option<Timestamp>,
    completed: Option<Timestamp>,
    /// The estimate of the token's entry into the call queue, until it is
    /// called or leaves the queue.
    queued_estimate: Option<Timestamp>,
    /// Call time minus estimate, in seconds, of each call with one.
    estimate_errors: Vec<f64>,
}

/// Makes the report of `date` from its events in id order: every doctor's,
/// or with `doctor`, that doctor's only (the clinic's figures stay the
/// whole clinic's). Hours are those of the clinic's time zone, `zone`.
pub fn day_report(
    date: Date,
    zone: &TimeZone,
    events: &[Event],
    doctor: Option<&DoctorId>,
) -> DayReport {
    let mut tokens: HashMap<Uuid, TokenFacts> = HashMap::new();
    // Seconds of session per doctor.
    let mut sessions: BTreeMap<DoctorId, f64> = BTreeMap::new();
    for event in events {
        match &event.kind {
            EventKind::Slot { slot, .. } if slot.date == date => {
                let length = slot.end.duration_since(slot.start).as_secs_f64();
                *sessions.entry(slot.doctor.clone()).or_default() += length;
            }
            EventKind::Token {
                token,
                doctor,
                date: of,
                source,
                from,
                to,
                reason,
                estimate,
                ..
            } if *of == date => {
                let facts = tokens.entry(*token).or_insert_with(|| TokenFacts {
                    doctor: doctor.clone(),
                    source: *source,
                    decision: None,
                    status: *to,
                    checked_in: None,
                    first_called: None,
                    last_called: None,
                    started: None,
                    completed: None,
                    queued_estimate: None,
                    estimate_errors: Vec::new(),
                });
                fold(facts, event.at, *from, *to, *reason, *estimate);
            }
            _ => {}
        }
    }
    let mut by_doctor: BTreeMap<DoctorId, Vec<&TokenFacts>> = sessions
        .keys()
        .map(|doctor| (doctor.clone(), Vec::new()))
        .collect();
    for facts in tokens.values() {
        by_doctor
            .entry(facts.doctor.clone())
            .or_default()
            .push(facts);
    }
    let all: Vec<&TokenFacts> = tokens.values().collect();
    let clinic = figures(&all, sessions.values().sum(), zone);
    let doctors = match doctor {
        Some(doctor) => vec![(
            doctor.clone(),
            figures(
                by_doctor.get(doctor).map_or(&[][..], Vec::as_slice),
                sessions.get(doctor).copied().unwrap_or(0.0),
                zone,
            ),
        )],
        None => by_doctor
            .iter()
            .map(|(doctor, facts)| {
                let session = sessions.get(doctor).copied().unwrap_or(0.0);
                (doctor.clone(), figures(facts, session, zone))
            })
            .collect(),
    };
    DayReport {
        date,
        clinic,
        doctors,
    }
}

/// Adds one status change to what is known of its token.
fn fold(
    facts: &mut TokenFacts,
    at: Timestamp,
    from: Option<Status>,
    to: Status,
    reason: Reason,
    estimate: Option<Timestamp>,
) {
    if from.is_none() {
        facts.decision = Decision::from_reason(reason);
    }
    facts.status = to;
    if reason == Reason::CheckedIn && facts.checked_in.is_none() {
        facts.checked_in = Some(at);
    }
    match to {
        Status::Called => {
            facts.first_called.get_or_insert(at);
            facts.last_called = Some(at);
            if let Some(estimate) = facts.queued_estimate.take() {
                facts
                    .estimate_errors
                    .push(at.duration_since(estimate).as_secs_f64());
            }
        }
        Status::CheckedIn => facts.queued_estimate = estimate,
        _ => facts.queued_estimate = None,
    }
    if reason == Reason::Started {
        facts.started = Some(at);
    }
    if reason == Reason::Completed {
        facts.completed = Some(at);
    }
}

fn figures(tokens: &[&TokenFacts], session_seconds: f64, zone: &TimeZone) -> Figures {
    let mut figures = Figures {
        tokens: tokens.len() as u32,
        session_seconds,
        ..Figures::default()
    };
    let (mut to_call, mut to_start, mut consultations, mut errors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut to_call_by_hour: BTreeMap<i8, Vec<f64>> = BTreeMap::new();
    let between = |from: Option<Timestamp>, to: Option<Timestamp>| match (from, to) {
        (Some(from), Some(to)) => Some(to.duration_since(from).as_secs_f64()),
        _ => None,
    };
    for facts in tokens {
        let source = Source::ALL.iter().position(|s| *s == facts.source);
        if let Some(index) = source {
            figures.by_source[index] += 1;
        }
        if let Some(index) = DECISIONS.iter().position(|d| Some(*d) == facts.decision) {
            figures.decisions[index] += 1;
        }
        if let Some(index) = OUTCOMES.iter().position(|s| *s == facts.status) {
            figures.outcomes[index] += 1;
        }
        if let (Some(checked_in), Some(wait)) = (
            facts.checked_in,
            between(facts.checked_in, facts.first_called),
        ) {
            to_call.push(wait);
            let hour = zone.to_datetime(checked_in).hour();
            to_call_by_hour.entry(hour).or_default().push(wait);
        }
        if facts.started.is_some() {
            to_start.extend(between(facts.last_called, facts.started));
        }
        consultations.extend(between(facts.started, facts.completed));
        errors.extend(facts.estimate_errors.iter().copied());
    }
    // Folded from +0: an empty float sum is -0, which JSON would show.
    figures.consultation_seconds = consultations.iter().fold(0.0, |sum, each| sum + each);
    figures.utilisation =
        (session_seconds > 0.0).then(|| figures.consultation_seconds / session_seconds);
    figures.idle_seconds = (session_seconds - figures.consultation_seconds).max(0.0);
    figures.wait_to_call = Spread::of(to_call);
    figures.waits_by_hour = to_call_by_hour
        .into_iter()
        .map(|(hour, waits)| (hour, Spread::of(waits)))
        .collect();
    figures.wait_to_start = Spread::of(to_start);
    figures.consultation = Spread::of(consultations);
    let count = errors.len();
    figures.estimate_error = EstimateError {
        count,
        mean_absolute_seconds: (count > 0)
            .then(|| errors.iter().map(|error| error.abs()).sum::<f64>() / count as f64),
        underestimated_share: (count > 0)
            .then(|| errors.iter().filter(|error| **error > 0.0).count() as f64 / count as f64),
    };
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_take_the_nearest_rank() {
        let spread = Spread::of(vec![40.0, 10.0, 30.0, 20.0]);
        assert_eq!(spread.count, 4);
        assert_eq!(spread.median, Some(20.0));
        assert_eq!(spread.p90, Some(40.0));
        let ten = Spread::of((1..=10).map(f64::from).collect());
        assert_eq!((ten.median, ten.p90), (Some(5.0), Some(9.0)));
        assert_eq!(Spread::of(Vec::new()), Spread::default());
    }
}
