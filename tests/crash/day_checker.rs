//! The day rounds' checker: the token and slot checks of `checker` for
//! the whole OPD day, and then the closings, the event log and the
//! doctors.
//!
//! - A close that was acknowledged, or read back after an earlier restart,
//!   holds: the slot is closed at the same `closesAt`. No slot closes
//!   unless a close of it was sent.
//! - A closing is whole or absent, never half: read back from the
//!   histories, every token of a closed slot that was `ALLOCATED` or
//!   `SKIPPED` just before the closing became `NO_SHOW` at that very
//!   moment, every one `WAITLISTED` was promoted or expired then, and no
//!   other token changed then; nobody is `ALLOCATED` or `WAITLISTED` in a
//!   closed slot, nobody `EXPIRED` by a closing in an open one, and no
//!   patient in the hall expired while a seat was free.
//! - Every slot closes at most once: one `SLOT_CLOSED` entry per token at
//!   the most, and one `slot` event `CLOSED` per closed slot (none for an
//!   open one), with the slot's `closesAt`.
//! - The event log read after an earlier restart is a prefix of the one
//!   read now; ids strictly increase; each slot was created once; each
//!   token's `token` events are its history, entry for entry.
//! - A doctor never had two tokens `CALLED` or `IN_CONSULTATION` at once,
//!   by the histories' times, and `GET /doctors/{id}/queue` agrees with
//!   the tokens: the one with the doctor, the call queue in call order
//!   with its positions and non-decreasing estimates, the patients not yet
//!   arrived, the skipped, the waitlist and the counts.

use std::collections::{BTreeSet, HashMap};

use jiff::Timestamp;

use crate::checker::{
    check_slots, check_tokens, fetch, report_anomalies, Fetched, Report, Workload,
};
use crate::contract::{holds_seat, timestamp, with_doctor};
use crate::events::Frame;
use crate::ledger::Ledger;
use crate::schedule::SlotSpec;
use crate::server::Server;
use crate::wire::{DoctorQueue, HistoryDto, SlotDetail, TokenDto, TokenEvent};

/// Reads the restarted server and compares it with the ledger and the
/// contract; `events` is the event log as read just before.
pub async fn check_day(
    server: &Server,
    ledger: &Ledger,
    events: Result<Vec<Frame>, String>,
    slots: &[SlotSpec],
) -> Report {
    let mut report = Report::default();
    report_anomalies(&mut report, ledger);
    check_tokens(&mut report, server, ledger, Workload::Day).await;
    check_slots(&mut report, server, slots).await;
    let mut tokens: Vec<TokenDto> = report.observed.values().cloned().collect();
    tokens.sort_by(|a, b| a.token_id.cmp(&b.token_id));
    check_closings(&mut report, ledger, slots, &tokens);
    match events {
        Ok(frames) => {
            check_events(&mut report, ledger, slots, &tokens, &frames);
            report.events = frames;
        }
        Err(error) => report.violation(format!("the event log cannot be read: {error}")),
    }
    check_doctors(&mut report, server, slots, &tokens).await;
    report
}

fn at(entry: &HistoryDto) -> Option<Timestamp> {
    timestamp(&entry.at)
}

fn check_closings(report: &mut Report, ledger: &Ledger, slots: &[SlotSpec], tokens: &[TokenDto]) {
    let mut by_slot: HashMap<&str, Vec<&TokenDto>> = HashMap::new();
    for token in tokens {
        by_slot.entry(&token.slot_id).or_default().push(token);
    }
    for spec in slots {
        let Some(slot) = report.slots.get(&spec.id).cloned() else {
            continue;
        };
        let id = &spec.id;
        let known = ledger.slots.get(id);
        let tokens = by_slot.remove(id.as_str()).unwrap_or_default();
        match known.and_then(|known| known.closed_at.as_deref()) {
            Some(closed_at)
                if !slot.closed || timestamp(&slot.closes_at) != timestamp(closed_at) =>
            {
                report.lost(
                    "close",
                    format!(
                        "slot {id} was closed at {closed_at} (acknowledged, or read back after an \
                         earlier restart), now closed {} with closesAt {}",
                        slot.closed, slot.closes_at
                    ),
                )
            }
            Some(_) => {}
            None if known.is_some_and(|known| known.close_acked) && !slot.closed => report.lost(
                "close",
                format!(
                    "slot {id}'s close was acknowledged (the answer cut short), now it is open"
                ),
            ),
            None => {}
        }
        let sent = known.is_some_and(|known| {
            known.close_acked || known.close_unclear || known.closed_at.is_some()
        });
        if slot.closed && !sent {
            report.violation(format!(
                "slot {id} is closed (closesAt {}), though no close of it was sent",
                slot.closes_at
            ));
        }
        for token in &tokens {
            let closings = token
                .history
                .iter()
                .filter(|entry| entry.reason == "SLOT_CLOSED")
                .count();
            if closings > 1 {
                report.violation(format!(
                    "token {} of slot {id} was expired by {closings} closings",
                    token.token_id
                ));
            }
        }
        if slot.closed {
            check_whole_closing(report, &slot, &tokens);
        } else {
            for token in &tokens {
                if token.status == "EXPIRED"
                    || token
                        .history
                        .iter()
                        .any(|entry| entry.reason == "SLOT_CLOSED")
                {
                    report.violation(format!(
                        "slot {id} is open, but token {} is {} with history {:?}",
                        token.token_id, token.status, token.history
                    ));
                }
            }
        }
    }
}

/// A closed slot was closed whole, by the histories of its tokens.
fn check_whole_closing(report: &mut Report, slot: &SlotDetail, tokens: &[&TokenDto]) {
    let id = &slot.slot_id;
    let Some(closed_at) = timestamp(&slot.closes_at) else {
        report.violation(format!("slot {id} has closesAt {:?}", slot.closes_at));
        return;
    };
    let mut seats_after = 0;
    let mut expired_in_hall = Vec::new();
    for token in tokens {
        let token_id = &token.token_id;
        if matches!(token.status.as_str(), "ALLOCATED" | "WAITLISTED") {
            report.violation(format!(
                "slot {id} is closed, but token {token_id} is {}",
                token.status
            ));
        }
        let history = &token.history;
        let before = history
            .iter()
            .rfind(|entry| at(entry).is_some_and(|at| at < closed_at));
        let Some(before) = before.map(|entry| entry.to.as_str()) else {
            report.violation(format!(
                "token {token_id} of slot {id} was created when or after the slot closed at {}: {history:?}",
                slot.closes_at
            ));
            continue;
        };
        let at_closing: Vec<&HistoryDto> = history
            .iter()
            .filter(|entry| at(entry) == Some(closed_at))
            .collect();
        let expected: &[(&str, &str)] = match before {
            "ALLOCATED" | "SKIPPED" => &[("NO_SHOW", "NO_SHOW")],
            "WAITLISTED" => &[("PROMOTED", "CHECKED_IN"), ("SLOT_CLOSED", "EXPIRED")],
            _ => &[],
        };
        let whole = match at_closing.as_slice() {
            [] => expected.is_empty(),
            [entry] => expected.contains(&(entry.reason.as_str(), entry.to.as_str())),
            _ => false,
        };
        if !whole {
            report.violation(format!(
                "slot {id} closed at {} half: token {token_id}, {before} just before, changed then by \
                 {at_closing:?}; its history {history:?}",
                slot.closes_at
            ));
        }
        let after = history
            .iter()
            .rfind(|entry| at(entry).is_some_and(|at| at <= closed_at))
            .map_or(before, |entry| entry.to.as_str());
        if holds_seat(after) {
            seats_after += 1;
        }
        let in_hall = token
            .checked_in_at
            .as_deref()
            .and_then(timestamp)
            .is_some_and(|checked_in| checked_in <= closed_at);
        if in_hall && at_closing.iter().any(|entry| entry.reason == "SLOT_CLOSED") {
            expired_in_hall.push(token_id.clone());
        }
    }
    if !expired_in_hall.is_empty() && seats_after < slot.capacity {
        report.violation(format!(
            "closing slot {id} expired patients in the hall ({}) while only {seats_after} of {} seats \
             were taken",
            expired_in_hall.join(", "),
            slot.capacity
        ));
    }
}

fn check_events(
    report: &mut Report,
    ledger: &Ledger,
    slots: &[SlotSpec],
    tokens: &[TokenDto],
    frames: &[Frame],
) {
    report.events_checked = frames.len();
    for pair in frames.windows(2) {
        if pair[1].id <= pair[0].id {
            report.violation(format!(
                "event {} comes after event {}",
                pair[1].id, pair[0].id
            ));
        }
    }
    let earlier = &ledger.durable_events;
    if !frames.starts_with(earlier) {
        let differs = earlier
            .iter()
            .zip(frames)
            .position(|(was, is)| was != is)
            .unwrap_or(frames.len());
        report.lost(
            "event",
            format!(
                "the event log held {} events after the previous restart and holds {} now; \
                 event {differs} was {:?}, is {:?}",
                earlier.len(),
                frames.len(),
                earlier.get(differs),
                frames.get(differs)
            ),
        );
    }

    let mut created: HashMap<String, usize> = HashMap::new();
    let mut closed: HashMap<String, Vec<(u64, String, bool)>> = HashMap::new();
    let mut by_token: HashMap<String, Vec<(u64, TokenEvent)>> = HashMap::new();
    for frame in frames {
        if let Some(event) = frame.slot() {
            match event.reason.as_str() {
                "CREATED" => *created.entry(event.slot.slot_id).or_default() += 1,
                "CLOSED" => closed.entry(event.slot.slot_id).or_default().push((
                    frame.id,
                    event.slot.closes_at,
                    event.slot.closed,
                )),
                _ => {}
            }
        } else if let Some(event) = frame.token() {
            by_token
                .entry(event.token_id.clone())
                .or_default()
                .push((frame.id, event));
        } else {
            report.violation(format!("unreadable event {frame:?}"));
        }
    }

    let mut closing_events: HashMap<&str, (u64, Timestamp)> = HashMap::new();
    for spec in slots {
        let id = &spec.id;
        let count = created.get(id).copied().unwrap_or_default();
        if count != 1 {
            report.violation(format!("slot {id} has {count} CREATED events"));
        }
        let Some(slot) = report.slots.get(id).cloned() else {
            continue;
        };
        let closes = closed.remove(id).unwrap_or_default();
        match (slot.closed, closes.as_slice()) {
            (false, []) => {}
            (true, [(event, closes_at, true)])
                if timestamp(closes_at) == timestamp(&slot.closes_at) =>
            {
                if let Some(closed_at) = timestamp(closes_at) {
                    closing_events.insert(&spec.id, (*event, closed_at));
                }
            }
            (closed, events) => report.violation(format!(
                "slot {id} is closed {closed} (closesAt {}), but its CLOSED events are \
                 (id, closesAt, closed) {events:?}",
                slot.closes_at
            )),
        }
    }

    for token in tokens {
        let events = by_token.remove(&token.token_id).unwrap_or_default();
        let told: Vec<(Option<Timestamp>, Option<&str>, &str, &str)> = events
            .iter()
            .map(|(_, event)| {
                (
                    timestamp(&event.at),
                    event.from.as_deref(),
                    event.to.as_str(),
                    event.reason.as_str(),
                )
            })
            .collect();
        let history: Vec<(Option<Timestamp>, Option<&str>, &str, &str)> = token
            .history
            .iter()
            .map(|entry| {
                (
                    at(entry),
                    entry.from.as_deref(),
                    entry.to.as_str(),
                    entry.reason.as_str(),
                )
            })
            .collect();
        if told != history {
            report.violation(format!(
                "token {}'s events {told:?} are not its history {history:?}",
                token.token_id
            ));
        }
        // A closing's slot event comes before the token events it caused.
        if let Some((closing, closed_at)) = closing_events.get(token.slot_id.as_str()) {
            for (id, event) in &events {
                if timestamp(&event.at) == Some(*closed_at) && id < closing {
                    report.violation(format!(
                        "event {id} of token {} at the closing of {} comes before the closing's \
                         event {closing}",
                        token.token_id, token.slot_id
                    ));
                }
            }
        }
    }
    let unread: BTreeSet<&String> = by_token.keys().collect();
    if !unread.is_empty() {
        report.violation(format!(
            "the event log names tokens that were not read back: {unread:?}"
        ));
    }
}

/// The key of the call order: emergencies first (any slot), then by the
/// slot's start, then priority, then arrival (token numbers follow
/// arrival within a doctor's day).
fn call_order(token: &TokenDto, starts: &HashMap<&str, &str>) -> (bool, String, u8, u32) {
    (
        token.priority != 1,
        starts
            .get(token.slot_id.as_str())
            .copied()
            .unwrap_or_default()
            .to_owned(),
        token.priority,
        token.token_number,
    )
}

async fn check_doctors(
    report: &mut Report,
    server: &Server,
    slots: &[SlotSpec],
    tokens: &[TokenDto],
) {
    let starts: HashMap<&str, &str> = slots
        .iter()
        .map(|spec| (spec.id.as_str(), spec.start.as_str()))
        .collect();
    let doctors: BTreeSet<&str> = slots.iter().map(|spec| spec.doctor.as_str()).collect();
    for doctor in doctors {
        let mut mine: Vec<&TokenDto> = tokens
            .iter()
            .filter(|token| token.doctor_id == doctor)
            .collect();
        mine.sort_by_key(|token| call_order(token, &starts));

        // The doctor's busy spans, from the histories: at most one at a time.
        let mut spans: Vec<(Timestamp, Option<Timestamp>, u32)> = Vec::new();
        for token in &mine {
            let mut open: Option<Timestamp> = None;
            for entry in &token.history {
                let Some(at) = at(entry) else { continue };
                let was = entry.from.as_deref().is_some_and(with_doctor);
                let is = with_doctor(&entry.to);
                if is && !was {
                    open = Some(at);
                } else if was && !is {
                    if let Some(start) = open.take() {
                        spans.push((start, Some(at), token.token_number));
                    }
                }
            }
            if let Some(start) = open {
                spans.push((start, None, token.token_number));
            }
        }
        spans.sort();
        for pair in spans.windows(2) {
            let ((start, end, first), (next, _, second)) = (pair[0], pair[1]);
            if end.is_none_or(|end| end > next) {
                report.violation(format!(
                    "doctor {doctor} had #{first} (from {start} to {end:?}) and #{second} (from \
                     {next}) with them at once"
                ));
            }
        }
        let busy: Vec<&&TokenDto> = mine
            .iter()
            .filter(|token| with_doctor(&token.status))
            .collect();
        if busy.len() > 1 {
            report.violation(format!(
                "doctor {doctor} has {} tokens called or in consultation",
                busy.len()
            ));
        }

        let url = format!("{}/doctors/{doctor}/queue", server.base);
        let queue = match fetch::<DoctorQueue>(&server.http, url).await {
            Fetched::Found(queue) => queue,
            Fetched::Missing => {
                report.violation(format!("doctor {doctor}'s queue is not found"));
                continue;
            }
            Fetched::Failed(error) => {
                report.violation(format!("doctor {doctor}'s queue: {error}"));
                continue;
            }
        };
        report.doctors_checked += 1;
        let mut problems = Vec::new();
        let ids = |tokens: &[TokenDto]| -> Vec<String> {
            tokens.iter().map(|token| token.token_id.clone()).collect()
        };
        let with_status = |status: &str| -> Vec<String> {
            mine.iter()
                .filter(|token| token.status == status)
                .map(|token| token.token_id.clone())
                .collect()
        };
        let current = queue.current.as_ref().map(|token| token.token_id.clone());
        let expected_current = busy.first().map(|token| token.token_id.clone());
        if current != expected_current {
            problems.push(format!(
                "current is {current:?}, the token with the doctor {expected_current:?}"
            ));
        }
        for (list, shown, status) in [
            ("callQueue", &queue.call_queue, "CHECKED_IN"),
            ("notArrived", &queue.not_arrived, "ALLOCATED"),
            ("skipped", &queue.skipped, "SKIPPED"),
        ] {
            if ids(shown) != with_status(status) {
                problems.push(format!(
                    "{list} is {:?}, the {status} tokens in call order {:?}",
                    ids(shown),
                    with_status(status)
                ));
            }
        }
        let mut waitlisted = with_status("WAITLISTED");
        waitlisted.sort();
        let mut shown = ids(&queue.waitlist);
        shown.sort();
        if shown != waitlisted {
            problems.push(format!(
                "waitlist is {shown:?}, the WAITLISTED tokens {waitlisted:?}"
            ));
        }
        let mut estimate = None;
        for (index, token) in queue.call_queue.iter().enumerate() {
            if token.queue_position != Some(index as u32 + 1) {
                problems.push(format!(
                    "callQueue[{index}] has queuePosition {:?}",
                    token.queue_position
                ));
            }
            let this = token.estimated_call_at.as_deref().and_then(timestamp);
            if this.is_none() || this < estimate {
                problems.push(format!(
                    "callQueue[{index}] is estimated at {:?}, before the one ahead of it",
                    token.estimated_call_at
                ));
            }
            estimate = estimate.max(this);
        }
        let counts = [
            ("completedCount", queue.completed_count, "COMPLETED"),
            ("noShowCount", queue.no_show_count, "NO_SHOW"),
            ("cancelledCount", queue.cancelled_count, "CANCELLED"),
            ("expiredCount", queue.expired_count, "EXPIRED"),
        ];
        for (name, count, status) in counts {
            let expected = with_status(status).len();
            if count != expected {
                problems.push(format!("{name} is {count}, {expected} tokens are {status}"));
            }
        }
        if queue.doctor_id != doctor {
            problems.push(format!("is the queue of {}", queue.doctor_id));
        }
        if !problems.is_empty() {
            report.violation(format!("doctor {doctor}'s queue: {}", problems.join("; ")));
        }
    }
}
