//! What the clients were told, and so what a restarted server must show:
//! per token, the acknowledged transitions, an acknowledged final status,
//! the unanswered actions that may have happened, and the history read back
//! after the previous restart; per slot of the day, an acknowledged close
//! and its closing time; and the event log read back after the previous
//! restart.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::checker::Report;
use crate::contract::is_final;
use crate::day_load::{DayLoad, TokenAction};
use crate::events::Frame;
use crate::load::Load;
use crate::wire::{ChangeDto, HistoryDto, BOOKED};

/// Where a transition must start, as far as the answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromStatus {
    Creation,
    Status(String),
    /// The answer to a cancel or no-show does not name the old status.
    Any,
}

/// One acknowledged transition of a token, to be found in its history.
#[derive(Debug, Clone)]
pub struct Fact {
    pub from: FromStatus,
    pub to: String,
    pub reason: String,
    pub source: String,
}

impl Fact {
    pub fn matches(&self, entry: &HistoryDto) -> bool {
        let from = match &self.from {
            FromStatus::Creation => entry.from.is_none(),
            FromStatus::Status(status) => entry.from.as_deref() == Some(status.as_str()),
            FromStatus::Any => true,
        };
        from && entry.to == self.to && entry.reason == self.reason
    }
}

#[derive(Debug, Default)]
pub struct Known {
    pub slot: String,
    /// Empty for a token first seen in the event log (its booking answer
    /// was lost), until it is read back: events carry no patient ids.
    pub patient: String,
    /// A final status that was acknowledged (or read back after an
    /// earlier restart, which makes it durable too).
    pub terminal: Option<String>,
    /// Final statuses an action without an answer may have set.
    pub in_doubt: BTreeSet<&'static str>,
    pub facts: Vec<Fact>,
    /// The history read after the previous restart: it must stay a prefix.
    pub durable_history: Vec<HistoryDto>,
}

#[derive(Default)]
pub struct Ledger {
    pub tokens: HashMap<String, Known>,
    /// Acknowledged bookings with an idempotency key, this round.
    pub keyed: Vec<(String, Value, String)>,
    /// Answers the contract does not allow, reported by the next check.
    pub anomalies: Vec<String>,
    /// The day's slots, by id.
    pub slots: HashMap<String, SlotKnown>,
    /// The event log read after the previous restart: it must stay a
    /// prefix (the day rounds only).
    pub durable_events: Vec<Frame>,
}

/// What is known of the closing of one of the day's slots.
#[derive(Debug, Default)]
pub struct SlotKnown {
    /// The slot's `closesAt` as an acknowledged close answered it, or as
    /// read back after an earlier restart: the slot stays closed at that
    /// moment.
    pub closed_at: Option<String>,
    /// A close was acknowledged (its answer may have been cut short).
    pub close_acked: bool,
    /// A close went unanswered, or its answer was cut short, since the
    /// last restart: the slot may be closed, and its tokens may have
    /// changed as its closing changes them.
    pub close_unclear: bool,
}

impl Ledger {
    fn known(&mut self, token: &str, slot: &str, patient: &str) -> &mut Known {
        let known = self.tokens.entry(token.to_owned()).or_default();
        if known.slot.is_empty() {
            known.slot = slot.to_owned();
            known.patient = patient.to_owned();
        }
        known
    }

    fn record_changes(&mut self, changes: &[ChangeDto], slot: &str, cause: &str) {
        for change in changes {
            self.known(&change.token_id, slot, &change.patient_id);
            self.record_fact(
                &change.token_id,
                Fact {
                    from: FromStatus::Status(change.from.clone()),
                    to: change.to.clone(),
                    reason: change.reason.clone(),
                    source: cause.to_owned(),
                },
            );
        }
    }

    /// Records an acknowledged transition of a known token; one to a final
    /// status makes that status the token's for good.
    fn record_fact(&mut self, token: &str, fact: Fact) {
        let known = self.tokens.get_mut(token).expect("a known token");
        if is_final(&fact.to) {
            if let Some(earlier) = known
                .terminal
                .as_deref()
                .filter(|earlier| *earlier != fact.to)
            {
                self.anomalies.push(format!(
                    "{}: acknowledged {} after {earlier}",
                    fact.source, fact.to
                ));
            }
            known.terminal = Some(fact.to.clone());
        }
        known.facts.push(fact);
    }

    /// Whether a request without an answer may have put a token in
    /// `status`: an action on it, or a close of its slot.
    pub fn unanswered_may_set(&self, known: &Known, status: &str) -> bool {
        let closing = matches!(status, "NO_SHOW" | "EXPIRED")
            && self
                .slots
                .get(&known.slot)
                .is_some_and(|slot| slot.close_unclear);
        known.in_doubt.contains(status) || closing
    }

    pub fn record(&mut self, load: &Load) {
        self.keyed.clear();
        for log in &load.logs {
            self.anomalies.extend(log.anomalies.iter().cloned());
            for booked in &log.booked {
                let token = &booked.reply.token;
                let cause = format!("booking of {}", token.token_id);
                self.known(&token.token_id, &token.slot_id, &token.patient_id)
                    .facts
                    .push(Fact {
                        from: FromStatus::Creation,
                        to: token.status.clone(),
                        reason: booked.reply.decision.clone(),
                        source: cause.clone(),
                    });
                self.record_changes(&booked.reply.changes, &token.slot_id, &cause);
                if let Some(key) = &booked.key {
                    self.keyed
                        .push((key.clone(), booked.body.clone(), token.token_id.clone()));
                }
            }
            for acted in &log.acted {
                let terminal = acted.action.terminal();
                let cause = format!("{} of {}", acted.action.path(), acted.token);
                let Some(known) = self.tokens.get_mut(&acted.token) else {
                    self.anomalies
                        .push(format!("{cause}: acted on a token never acknowledged"));
                    continue;
                };
                if known
                    .terminal
                    .as_deref()
                    .is_some_and(|earlier| earlier != terminal)
                {
                    self.anomalies
                        .push(format!("{cause}: acknowledged after {:?}", known.terminal));
                }
                known.terminal = Some(terminal.to_owned());
                known.facts.push(Fact {
                    from: FromStatus::Any,
                    to: terminal.to_owned(),
                    reason: terminal.to_owned(),
                    source: cause.clone(),
                });
                if let Some(reply) = &acted.reply {
                    let slot = known.slot.clone();
                    self.record_changes(&reply.changes, &slot, &cause);
                }
            }
            for (token, action) in &log.actions_in_doubt {
                if let Some(known) = self.tokens.get_mut(token) {
                    known.in_doubt.insert(action.terminal());
                }
            }
        }
    }

    /// Records what the day's clients were told.
    pub fn record_day(&mut self, load: &DayLoad) {
        for log in &load.logs {
            self.anomalies.extend(log.anomalies.iter().cloned());
            for reply in &log.booked {
                let token = &reply.token;
                let cause = format!("booking of {}", token.token_id);
                self.known(&token.token_id, &token.slot_id, &token.patient_id);
                self.record_fact(
                    &token.token_id,
                    Fact {
                        from: FromStatus::Creation,
                        to: token.status.clone(),
                        reason: reply.decision.clone(),
                        source: cause.clone(),
                    },
                );
                self.record_changes(&reply.changes, &token.slot_id, &cause);
            }
        }
        for log in &load.logs {
            for acted in &log.acted {
                let cause = format!("{} of {}", acted.action.path(), acted.token);
                self.known(&acted.token, &acted.slot, &acted.patient);
                // Without the body, an action with one possible outcome
                // still says what it did.
                let answered = match (&acted.reply, acted.action.outcomes()) {
                    (Some(reply), _) => Some(reply.token.status.as_str()),
                    (None, [only]) => Some(*only),
                    (None, _) => None,
                };
                match answered
                    .and_then(|to| Some((to, action_transition(acted.action, &acted.seen, to)?)))
                {
                    Some((to, (from, reason))) => self.record_fact(
                        &acted.token,
                        Fact {
                            from,
                            to: to.to_owned(),
                            reason: reason.to_owned(),
                            source: cause.clone(),
                        },
                    ),
                    // A skip whose answer was cut short may have reached
                    // the limit.
                    None => {
                        if let Some(status) = final_outcome(acted.action) {
                            self.known(&acted.token, &acted.slot, &acted.patient)
                                .in_doubt
                                .insert(status);
                        }
                    }
                }
                if let Some(reply) = &acted.reply {
                    self.record_changes(&reply.changes, &acted.slot, &cause);
                }
            }
            for unanswered in &log.unanswered {
                let known = self.known(&unanswered.token, &unanswered.slot, &unanswered.patient);
                if let Some(status) = final_outcome(unanswered.action) {
                    known.in_doubt.insert(status);
                }
            }
            for closed in &log.closed {
                let slot = self.slots.entry(closed.slot.clone()).or_default();
                if slot.close_acked || slot.closed_at.is_some() {
                    let earlier = slot.closed_at.clone();
                    self.anomalies.push(format!(
                        "slot {} was closed again; it was closed at {earlier:?}",
                        closed.slot
                    ));
                }
                let slot = self.slots.entry(closed.slot.clone()).or_default();
                slot.close_acked = true;
                match &closed.reply {
                    Some(reply) => {
                        slot.closed_at = Some(reply.slot.closes_at.clone());
                        let cause = format!("close of {}", closed.slot);
                        self.record_changes(&reply.changes, &closed.slot, &cause);
                    }
                    None => slot.close_unclear = true,
                }
            }
            for slot in &log.closes_unanswered {
                self.slots.entry(slot.clone()).or_default().close_unclear = true;
            }
        }
    }

    /// Learns the tokens the event log names that no answer named (their
    /// booking answers were lost), so that the check reads them too.
    pub fn discover(&mut self, events: &[Frame]) {
        for frame in events {
            if let Some(event) = frame.token() {
                if !self.tokens.contains_key(&event.token_id) {
                    self.known(&event.token_id, &event.slot_id, "");
                }
            }
        }
    }

    /// Takes what a restarted server showed as the new durable baseline
    /// and returns the tokens still open to cancels and no-shows, for the
    /// next kill round's clients to act on.
    pub fn observe(&mut self, report: &Report) -> Vec<String> {
        for (id, token) in &report.observed {
            let known = self
                .tokens
                .get_mut(id)
                .expect("observed tokens come from the ledger");
            known.durable_history = token.history.clone();
            if known.patient.is_empty() {
                known.patient = token.patient_id.clone();
            }
            // The server that received the unanswered actions is gone:
            // what they did is now visible or will never be.
            known.in_doubt.clear();
            if is_final(&token.status) {
                known.terminal = Some(token.status.clone());
            }
        }
        // Tokens whose booking answer was lost but that were committed.
        for token in &report.listed {
            if !self.tokens.contains_key(&token.token_id) {
                self.known(&token.token_id, &token.slot_id, &token.patient_id);
            }
        }
        // A slot read back closed stays closed at that moment; unanswered
        // closes have done what they did.
        for (id, slot) in &report.slots {
            if slot.closed {
                self.slots.entry(id.clone()).or_default().closed_at = Some(slot.closes_at.clone());
            }
            if let Some(known) = self.slots.get_mut(id) {
                known.close_unclear = false;
            }
        }
        self.durable_events = report.events.clone();
        let mut open: Vec<String> = report
            .observed
            .iter()
            .filter(|(_, token)| BOOKED.contains(&token.status.as_str()))
            .map(|(id, _)| id.clone())
            .chain(
                report
                    .listed
                    .iter()
                    .filter(|token| !report.observed.contains_key(&token.token_id))
                    .map(|token| token.token_id.clone()),
            )
            .collect();
        open.sort();
        open
    }
}

/// The transition an acknowledged action made, from the status the client
/// saw and the one the answer gave: where it started and its reason.
/// `None` when the answer's status is not one the action leads to.
fn action_transition(
    action: TokenAction,
    seen: &str,
    to: &str,
) -> Option<(FromStatus, &'static str)> {
    let from = |status: &str| FromStatus::Status(status.to_owned());
    Some(match (action, to) {
        (TokenAction::CheckIn, "WAITLISTED") => (from("WAITLISTED"), "CHECKED_IN"),
        // Only a check-in leads to a skip, and only one desk checks a
        // doctor's patients in: a token it saw skipped came back.
        (TokenAction::CheckIn, "CHECKED_IN") if seen == "SKIPPED" => (from("SKIPPED"), "RETURNED"),
        (TokenAction::CheckIn, "CHECKED_IN") => (from("ALLOCATED"), "CHECKED_IN"),
        (TokenAction::Call, "CALLED") => (from("CHECKED_IN"), "CALLED"),
        (TokenAction::Start, "IN_CONSULTATION") => (from("CALLED"), "STARTED"),
        (TokenAction::Complete, "COMPLETED") => (from("IN_CONSULTATION"), "COMPLETED"),
        (TokenAction::Skip, "SKIPPED") => (from("CALLED"), "SKIPPED"),
        (TokenAction::Skip, "NO_SHOW") => (from("CALLED"), "NO_SHOW"),
        (TokenAction::Cancel, "CANCELLED") => (FromStatus::Any, "CANCELLED"),
        (TokenAction::NoShow, "NO_SHOW") => (FromStatus::Any, "NO_SHOW"),
        _ => return None,
    })
}

/// The final status an action may set, for one without an answer.
fn final_outcome(action: TokenAction) -> Option<&'static str> {
    match action {
        TokenAction::Complete => Some("COMPLETED"),
        TokenAction::Skip | TokenAction::NoShow => Some("NO_SHOW"),
        TokenAction::Cancel => Some("CANCELLED"),
        TokenAction::CheckIn | TokenAction::Call | TokenAction::Start => None,
    }
}
