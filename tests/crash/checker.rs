//! The checker: reads every token the ledger knows and every slot back
//! from the restarted server, replays acknowledged idempotent bookings, and
//! reports what was lost and which invariants are broken. The day's own
//! checks (closings, events, doctors) are in `day_checker`, which builds on
//! the token and slot checks here.

use std::collections::{HashMap, HashSet};

use tokio::task::JoinSet;

use crate::contract::{self, holds_seat, is_final, queued};
use crate::ledger::{Fact, FromStatus, Known, Ledger};
use crate::schedule::SlotSpec;
use crate::server::Server;
use crate::wire::{answer, Answer, BookingReply, SlotDetail, TokenDto, BOOKED};

/// Acknowledged keyed bookings replayed after each restart at the most.
const REPLAYS_MAX: usize = 200;
/// Concurrent readers in the checker.
const CHECK_READERS: usize = 16;

/// What a scenario's load does, which bounds what a token may show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Bookings, cancels and no-shows (the kill rounds).
    Bookings,
    /// The whole OPD day: check-ins, calls, consultations, skips and
    /// closings besides (the day rounds).
    Day,
}

impl Workload {
    /// Whether the load can cause a history entry with `reason`.
    fn makes(self, reason: &str) -> bool {
        match self {
            Workload::Bookings => matches!(
                reason,
                "ALLOCATED"
                    | "OVERBOOKED"
                    | "BUMPED_LOWER"
                    | "WAITLISTED"
                    | "BUMPED"
                    | "PROMOTED"
                    | "CAPACITY_REDUCED"
                    | "CANCELLED"
                    | "NO_SHOW"
            ),
            // Every reason but the day's end: no slot's date ends while
            // the test runs (see `schedule::ZONE`).
            Workload::Day => reason != "DAY_ENDED",
        }
    }

    /// Whether a token may be in `status` though nothing acknowledged or
    /// left unanswered set it: statuses that side effects of other
    /// requests (bumps, promotions, calls of the next patient) reach.
    fn reaches_unasked(self, status: &str) -> bool {
        match self {
            Workload::Bookings => BOOKED.contains(&status),
            Workload::Day => !is_final(status),
        }
    }
}

#[derive(Default)]
pub struct Report {
    /// Everything wrong; empty for a durable server.
    pub violations: Vec<String>,
    /// How many of the violations are acknowledged changes that are gone.
    pub lost: usize,
    /// The lost ones by what was lost.
    lost_by_kind: HashMap<&'static str, usize>,
    pub tokens_checked: usize,
    pub slots_checked: usize,
    pub replays: usize,
    pub events_checked: usize,
    pub doctors_checked: usize,
    /// Ledger tokens as read back.
    pub observed: HashMap<String, TokenDto>,
    /// Tokens in the slot queues.
    pub listed: Vec<TokenDto>,
    /// The slots as read back.
    pub slots: HashMap<String, SlotDetail>,
    /// The event log as read back (the day rounds only).
    pub events: Vec<crate::events::Frame>,
}

impl Report {
    pub fn lost(&mut self, kind: &'static str, message: String) {
        self.lost += 1;
        *self.lost_by_kind.entry(kind).or_default() += 1;
        self.violations.push(format!("LOST {kind}: {message}"));
    }

    pub fn lost_of(&self, kind: &str) -> usize {
        self.lost_by_kind.get(kind).copied().unwrap_or_default()
    }

    pub fn violation(&mut self, message: String) {
        self.violations.push(message);
    }
}

pub enum Fetched<T> {
    Found(T),
    Missing,
    Failed(String),
}

pub async fn fetch<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
) -> Fetched<T> {
    match http.get(&url).send().await {
        Err(error) => Fetched::Failed(format!("GET {url}: {error}")),
        Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => Fetched::Missing,
        Ok(response) if !response.status().is_success() => {
            Fetched::Failed(format!("GET {url}: {}", response.status()))
        }
        Ok(response) => match response.json::<T>().await {
            Ok(value) => Fetched::Found(value),
            Err(error) => Fetched::Failed(format!("GET {url}: unreadable body: {error}")),
        },
    }
}

/// Reads the restarted server and compares it with the ledger. Returns
/// every violation; a durable, correct server gives none.
pub async fn check(server: &Server, ledger: &Ledger, slots: &[SlotSpec]) -> Report {
    let mut report = Report::default();
    report_anomalies(&mut report, ledger);
    check_tokens(&mut report, server, ledger, Workload::Bookings).await;
    check_slots(&mut report, server, slots).await;
    check_replays(&mut report, server, ledger).await;
    report
}

pub fn report_anomalies(report: &mut Report, ledger: &Ledger) {
    for anomaly in &ledger.anomalies {
        report.violation(format!("unexpected answer during the load: {anomaly}"));
    }
}

/// 1-3: reads every token the ledger knows and checks each against it.
pub async fn check_tokens(
    report: &mut Report,
    server: &Server,
    ledger: &Ledger,
    workload: Workload,
) {
    let mut ids: Vec<String> = ledger.tokens.keys().cloned().collect();
    ids.sort();
    let chunk = ids.len().div_ceil(CHECK_READERS).max(1);
    let mut readers = JoinSet::new();
    for part in ids.chunks(chunk) {
        let part = part.to_vec();
        let http = server.http.clone();
        let base = server.base.clone();
        readers.spawn(async move {
            let mut read = Vec::with_capacity(part.len());
            for id in part {
                let fetched = fetch::<TokenDto>(&http, format!("{base}/tokens/{id}")).await;
                read.push((id, fetched));
            }
            read
        });
    }
    let mut fetched = Vec::with_capacity(ids.len());
    while let Some(part) = readers.join_next().await {
        fetched.extend(part.expect("a checker task panicked"));
    }
    fetched.sort_by(|a, b| a.0.cmp(&b.0));
    report.tokens_checked = fetched.len();
    for (id, result) in fetched {
        let known = &ledger.tokens[&id];
        match result {
            Fetched::Missing => report.lost(
                "token",
                format!(
                    "token {id} (patient {}, slot {}) is gone; acknowledged: {}",
                    known.patient,
                    known.slot,
                    describe(known)
                ),
            ),
            Fetched::Failed(error) => report.violation(format!("token {id}: {error}")),
            Fetched::Found(token) => {
                check_token(report, &id, known, &token, ledger, workload);
                report.observed.insert(id, token);
            }
        }
    }
}

/// 4: reads every slot and checks its invariants, and that its queues and
/// the tokens read before are one state. Token numbers are unique per
/// doctor and date.
pub async fn check_slots(report: &mut Report, server: &Server, slots: &[SlotSpec]) {
    let dates: HashMap<&str, &str> = slots
        .iter()
        .map(|slot| (slot.id.as_str(), slot.date.as_str()))
        .collect();
    let mut listed: HashMap<String, (String, String)> = HashMap::new();
    for spec in slots {
        match fetch::<SlotDetail>(&server.http, format!("{}/slots/{}", server.base, spec.id)).await
        {
            Fetched::Missing => report.lost("slot", format!("slot {} is gone", spec.id)),
            Fetched::Failed(error) => report.violation(format!("slot {}: {error}", spec.id)),
            Fetched::Found(slot) => {
                report.slots_checked += 1;
                check_slot(report, spec, &slot);
                for token in slot.allocated.iter().chain(&slot.waitlist) {
                    listed.insert(
                        token.token_id.clone(),
                        (slot.slot_id.clone(), token.status.clone()),
                    );
                    report.listed.push(token.clone());
                }
                report.slots.insert(spec.id.clone(), slot);
            }
        }
    }

    // The queues and the tokens are one state.
    let mut cross = Vec::new();
    for (id, token) in &report.observed {
        let in_queue = queued(&token.status);
        match listed.get(id) {
            Some((slot, status))
                if in_queue && (slot != &token.slot_id || status != &token.status) =>
            {
                cross.push(format!(
                    "token {id} is {} in slot {} but listed as {status} in slot {slot}",
                    token.status, token.slot_id
                ))
            }
            None if in_queue && dates.contains_key(token.slot_id.as_str()) => cross.push(format!(
                "token {id} is {} but not in the queues of slot {}",
                token.status, token.slot_id
            )),
            Some(_) if !in_queue => {
                cross.push(format!("token {id} is {} but still queued", token.status))
            }
            _ => {}
        }
    }
    // Token numbers are unique per doctor and date.
    let mut numbers: HashMap<(String, String, u32), String> = HashMap::new();
    for token in report.observed.values().chain(&report.listed) {
        let Some(date) = dates.get(token.slot_id.as_str()) else {
            continue;
        };
        let key = (
            token.doctor_id.clone(),
            (*date).to_owned(),
            token.token_number,
        );
        if let Some(other) = numbers.insert(key, token.token_id.clone()) {
            if other != token.token_id {
                cross.push(format!(
                    "tokens {other} and {} share number {} of doctor {} on {date}",
                    token.token_id, token.token_number, token.doctor_id
                ));
            }
        }
    }
    for message in cross {
        report.violation(message);
    }
}

/// 5: acknowledged idempotent bookings replay the same token.
async fn check_replays(report: &mut Report, server: &Server, ledger: &Ledger) {
    for (key, body, token) in ledger.keyed.iter().take(REPLAYS_MAX) {
        report.replays += 1;
        let request = server
            .http
            .post(format!("{}/tokens", server.base))
            .header("Idempotency-Key", key)
            .json(body);
        match answer(request).await {
            Answer::Ack(Some(bytes)) => match serde_json::from_slice::<BookingReply>(&bytes) {
                Ok(reply) if reply.token.token_id == *token => {}
                Ok(reply) => report.lost(
                    "idempotency key",
                    format!(
                        "idempotency key {key} of acknowledged token {token} now books {}",
                        reply.token.token_id
                    ),
                ),
                Err(error) => {
                    report.violation(format!("replay of key {key}: unreadable body: {error}"))
                }
            },
            Answer::Ack(None) => report.violation(format!("replay of key {key}: body lost")),
            Answer::Refused(status, text) => report.lost(
                "idempotency key",
                format!("replay of key {key} (token {token}) refused: {status} {text}"),
            ),
            Answer::InDoubt => report.violation(format!("replay of key {key}: no answer")),
        }
    }
}

pub fn describe(known: &Known) -> String {
    let facts: Vec<String> = known
        .facts
        .iter()
        .map(|fact| {
            format!(
                "{:?} -> {} ({}) by {}",
                fact.from, fact.to, fact.reason, fact.source
            )
        })
        .collect();
    if facts.is_empty() {
        "read back after an earlier restart".to_owned()
    } else {
        facts.join("; ")
    }
}

fn check_token(
    report: &mut Report,
    id: &str,
    known: &Known,
    token: &TokenDto,
    ledger: &Ledger,
    workload: Workload,
) {
    // A token first seen in the event log has no patient on record: events
    // carry no patient ids.
    let patient_differs = !known.patient.is_empty() && token.patient_id != known.patient;
    if token.slot_id != known.slot || patient_differs {
        report.violation(format!(
            "token {id} is for patient {} in slot {}, acknowledged for patient {} in slot {}",
            token.patient_id, token.slot_id, known.patient, known.slot
        ));
    }

    // The status.
    let status = token.status.as_str();
    match &known.terminal {
        Some(terminal) if status != terminal => report.lost(
            "status",
            format!(
                "token {id} is {status}, acknowledged {terminal}: {}",
                describe(known)
            ),
        ),
        Some(_) => {}
        None if workload.reaches_unasked(status) || ledger.unanswered_may_set(known, status) => {}
        None => report.violation(format!(
            "token {id} is {status} though no unanswered request could have made it so: {}",
            describe(known)
        )),
    }

    // The history: well formed by the contract, ending in the status.
    let history = &token.history;
    let mut problems = contract::history_problems(history, |reason| workload.makes(reason));
    if let Some(last) = history.last() {
        if last.to != token.status {
            problems.push(format!(
                "ends in {} but the token is {}",
                last.to, token.status
            ));
        }
    }
    if !problems.is_empty() {
        report.violation(format!("history of token {id} {}", problems.join("; ")));
    }

    // The fields the day adds: the first check-in's time, kept for life,
    // and a place in the call order only while checked in.
    let first_check_in = history
        .iter()
        .find(|entry| entry.reason == "CHECKED_IN")
        .map(|entry| contract::timestamp(&entry.at));
    let checked_in_at = token.checked_in_at.as_deref().map(contract::timestamp);
    if checked_in_at != first_check_in {
        report.violation(format!(
            "token {id} has checkedInAt {:?}, but its first check-in is {:?}",
            token.checked_in_at,
            history.iter().find(|entry| entry.reason == "CHECKED_IN")
        ));
    }
    let waiting = status == "CHECKED_IN";
    if token.queue_position.is_some() != waiting || token.estimated_call_at.is_some() != waiting {
        report.violation(format!(
            "token {id} is {status} with queuePosition {:?} and estimatedCallAt {:?}",
            token.queue_position, token.estimated_call_at
        ));
    }

    // What was read after the previous restart is still there.
    if !history.starts_with(&known.durable_history) {
        report.lost(
            "history",
            format!(
                "history of token {id} was {:?} after the previous restart, now {:?}",
                known.durable_history, history
            ),
        );
    }

    // Every acknowledged transition is in the history (as a multiset:
    // answers to concurrent requests arrive in any order).
    let mut used = vec![false; history.len()];
    let mut facts: Vec<&Fact> = known.facts.iter().collect();
    facts.sort_by_key(|fact| fact.from == FromStatus::Any);
    for fact in facts {
        let found = (0..history.len()).find(|&index| !used[index] && fact.matches(&history[index]));
        match found {
            Some(index) => used[index] = true,
            None => report.lost(
                "transition",
                format!(
                    "token {id}: acknowledged {:?} -> {} ({}) by {} is not in its history {:?}",
                    fact.from, fact.to, fact.reason, fact.source, history
                ),
            ),
        }
    }
}

fn check_slot(report: &mut Report, spec: &SlotSpec, slot: &SlotDetail) {
    let id = &spec.id;
    let mut problems = Vec::new();
    if slot.slot_id != *id
        || slot.doctor_id != spec.doctor
        || slot.date != spec.date
        || slot.start_time != spec.start
    {
        problems.push(format!(
            "is {} of {} on {} at {}, expected {id} of {} on {} at {}",
            slot.slot_id,
            slot.doctor_id,
            slot.date,
            slot.start_time,
            spec.doctor,
            spec.date,
            spec.start
        ));
    }
    let capacity = slot.capacity;
    let allocated = u32::try_from(slot.allocated.len()).expect("small queue");
    if allocated != slot.allocated_count || slot.waitlist.len() != slot.waitlist_count as usize {
        problems.push(format!(
            "counts {}/{} but lists {}/{}",
            slot.allocated_count,
            slot.waitlist_count,
            allocated,
            slot.waitlist.len()
        ));
    }
    // Every seat holder counts, a finished consultation too.
    let regular = slot
        .allocated
        .iter()
        .filter(|token| token.priority != 1)
        .count();
    if regular > capacity as usize {
        problems.push(format!(
            "{regular} non-emergency tokens allocated, capacity {capacity}"
        ));
    }
    if !slot.waitlist.is_empty() && allocated < capacity {
        problems.push(format!(
            "{} waitlisted while only {allocated} of {capacity} allocated",
            slot.waitlist.len()
        ));
    }
    if slot.available != capacity.saturating_sub(allocated)
        || slot.overbooked != (allocated > capacity)
        || slot.overbooked_by != allocated.saturating_sub(capacity)
    {
        problems.push(format!(
            "summary available {} overbooked {} by {} does not match {allocated} of {capacity}",
            slot.available, slot.overbooked, slot.overbooked_by
        ));
    }
    let mut patients = HashSet::new();
    for (queue, waitlist, tokens) in [
        ("allocated", false, &slot.allocated),
        ("waitlist", true, &slot.waitlist),
    ] {
        for (index, token) in tokens.iter().enumerate() {
            let position = waitlist.then(|| u32::try_from(index + 1).expect("small queue"));
            let belongs = if waitlist {
                token.status == "WAITLISTED"
            } else {
                holds_seat(&token.status)
            };
            if !belongs || token.waitlist_position != position {
                problems.push(format!(
                    "{queue}[{index}] is {} at position {:?}",
                    token.status, token.waitlist_position
                ));
            }
            if token.slot_id != *id || token.doctor_id != spec.doctor {
                problems.push(format!(
                    "{queue}[{index}] belongs to {} of {}",
                    token.slot_id, token.doctor_id
                ));
            }
            // One active token per patient; a finished one no longer counts.
            if !is_final(&token.status) && !patients.insert(token.patient_id.clone()) {
                problems.push(format!(
                    "patient {} holds two active tokens",
                    token.patient_id
                ));
            }
        }
        // Priority, then arrival; token numbers follow arrival within a
        // doctor's day.
        for pair in tokens.windows(2) {
            if (pair[0].priority, pair[0].token_number) >= (pair[1].priority, pair[1].token_number)
            {
                problems.push(format!(
                    "{queue} has #{} (priority {}) before #{} (priority {})",
                    pair[0].token_number, pair[0].priority, pair[1].token_number, pair[1].priority
                ));
            }
        }
    }
    if !problems.is_empty() {
        report.violation(format!("slot {id}: {}", problems.join("; ")));
    }
}
