//! What the clients were told, and so what a restarted server must show:
//! per token, the acknowledged transitions, an acknowledged terminal status,
//! the unanswered actions that may have happened, and the history read back
//! after the previous restart.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::checker::Report;
use crate::load::Load;
use crate::wire::{ChangeDto, HistoryDto, ACTIVE};

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
    pub patient: String,
    /// A terminal status that was acknowledged (or read back after an
    /// earlier restart, which makes it durable too).
    pub terminal: Option<String>,
    /// Terminal statuses a cancel or no-show without an answer may have set.
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
            self.known(&change.token_id, slot, &change.patient_id)
                .facts
                .push(Fact {
                    from: FromStatus::Status(change.from.clone()),
                    to: change.to.clone(),
                    reason: change.reason.clone(),
                    source: cause.to_owned(),
                });
        }
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

    /// Takes what a restarted server showed as the new durable baseline
    /// (only after a clean check) and returns the active tokens for the
    /// next round's clients to act on.
    pub fn observe(&mut self, report: &Report) -> Vec<String> {
        for (id, token) in &report.observed {
            let known = self
                .tokens
                .get_mut(id)
                .expect("observed tokens come from the ledger");
            known.durable_history = token.history.clone();
            // The server that received the unanswered actions is gone:
            // what they did is now visible or will never be.
            known.in_doubt.clear();
            if !ACTIVE.contains(&token.status.as_str()) {
                known.terminal = Some(token.status.clone());
            }
        }
        // Tokens whose booking answer was lost but that were committed.
        for token in &report.listed {
            if !self.tokens.contains_key(&token.token_id) {
                self.known(&token.token_id, &token.slot_id, &token.patient_id);
            }
        }
        let mut active: Vec<String> = report
            .observed
            .iter()
            .filter(|(_, token)| ACTIVE.contains(&token.status.as_str()))
            .map(|(id, _)| id.clone())
            .chain(
                report
                    .listed
                    .iter()
                    .filter(|token| !report.observed.contains_key(&token.token_id))
                    .map(|token| token.token_id.clone()),
            )
            .collect();
        active.sort();
        active
    }
}
