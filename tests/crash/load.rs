//! The load generator: concurrent clients book, cancel and mark no-shows
//! until the server is killed, each logging what its answers acknowledged,
//! refused or left in doubt.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::rng::Rng;
use crate::schedule::round_slot_ids;
use crate::server::Server;
use crate::wire::{answer, ActionReply, Answer, BookingReply};

/// Concurrent clients, each one task with its own requests.
pub const CLIENTS: usize = 32;
/// Requests per client and round at the most.
const OPS_PER_CLIENT: usize = 400;
/// A round's load stops after this even if the kill has not come.
const LOAD_LIMIT: Duration = Duration::from_secs(5);

const SOURCES: [(&str, u64); 5] = [
    ("EMERGENCY", 5),
    ("PAID", 15),
    ("FOLLOW_UP", 20),
    ("ONLINE", 30),
    ("WALK_IN", 30),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cancel,
    NoShow,
}

impl Action {
    pub fn path(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::NoShow => "no-show",
        }
    }

    /// The status (and history reason) the action sets.
    pub fn terminal(self) -> &'static str {
        match self {
            Action::Cancel => "CANCELLED",
            Action::NoShow => "NO_SHOW",
        }
    }
}

pub struct Booked {
    pub key: Option<String>,
    pub body: Value,
    pub reply: BookingReply,
}

pub struct Acted {
    pub token: String,
    pub action: Action,
    /// `None` when the 2xx status line came but the body did not.
    pub reply: Option<ActionReply>,
}

#[derive(Default)]
pub struct ClientLog {
    pub bookings_sent: usize,
    pub booked: Vec<Booked>,
    /// 2xx whose body was lost: acknowledged, but the token is unknown.
    pub booked_unread: usize,
    pub bookings_in_doubt: usize,
    pub actions_sent: usize,
    pub acted: Vec<Acted>,
    pub actions_in_doubt: Vec<(String, Action)>,
    /// Expected refusals: no-show of a waitlisted token, a full waitlist.
    pub refused: usize,
    /// Answers the contract does not allow here.
    pub anomalies: Vec<String>,
}

pub struct Load {
    pub logs: Vec<ClientLog>,
    pub killed_after: Duration,
}

impl Load {
    fn sum(&self, count: impl Fn(&ClientLog) -> usize) -> usize {
        self.logs.iter().map(count).sum()
    }
    pub fn bookings_sent(&self) -> usize {
        self.sum(|log| log.bookings_sent)
    }
    pub fn bookings_acked(&self) -> usize {
        self.sum(|log| log.booked.len() + log.booked_unread)
    }
    pub fn bookings_in_doubt(&self) -> usize {
        self.sum(|log| log.bookings_in_doubt)
    }
    pub fn actions_sent(&self) -> usize {
        self.sum(|log| log.actions_sent)
    }
    pub fn actions_acked(&self) -> usize {
        self.sum(|log| log.acted.len())
    }
    pub fn actions_in_doubt(&self) -> usize {
        self.sum(|log| log.actions_in_doubt.len())
    }
    pub fn refused(&self) -> usize {
        self.sum(|log| log.refused)
    }
    /// Acknowledged side effects on other tokens with this reason.
    pub fn changes(&self, reason: &str) -> usize {
        self.sum(|log| {
            let booked = log.booked.iter().flat_map(|booked| &booked.reply.changes);
            let acted = log
                .acted
                .iter()
                .flat_map(|acted| acted.reply.iter().flat_map(|reply| &reply.changes));
            booked
                .chain(acted)
                .filter(|change| change.reason == reason)
                .count()
        })
    }
}

struct ClientPlan {
    index: usize,
    round: usize,
    label: &'static str,
    http: reqwest::Client,
    base: Arc<str>,
    current_slots: Arc<Vec<String>>,
    all_slots: Arc<Vec<String>>,
    own: Vec<String>,
    rng: Rng,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
    deadline: Instant,
}

/// Runs the clients, kills the server `kill_after` the start (and once at
/// least `min_acks` answers were acknowledged), then collects the logs.
pub async fn run_load(
    server: &mut Server,
    round: usize,
    label: &'static str,
    owned: Vec<String>,
    kill_after: Duration,
    min_acks: usize,
    seed: u64,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let base: Arc<str> = Arc::from(server.base.as_str());
    let current_slots = Arc::new(round_slot_ids(round));
    let all_slots = Arc::new((0..=round).flat_map(round_slot_ids).collect::<Vec<_>>());
    let mut own: Vec<Vec<String>> = vec![Vec::new(); CLIENTS];
    for (index, token) in owned.into_iter().enumerate() {
        own[index % CLIENTS].push(token);
    }
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for (index, own) in own.into_iter().enumerate() {
        clients.spawn(client(ClientPlan {
            index,
            round,
            label,
            http: server.http.clone(),
            base: base.clone(),
            current_slots: current_slots.clone(),
            all_slots: all_slots.clone(),
            own,
            rng: Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            stop: stop.clone(),
            acks: acks.clone(),
            deadline: started + LOAD_LIMIT,
        }));
    }
    tokio::time::sleep(kill_after).await;
    while acks.load(Ordering::SeqCst) < min_acks && started.elapsed() < LOAD_LIMIT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let killed_after = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::with_capacity(CLIENTS);
    while let Some(log) = clients.join_next().await {
        logs.push(log.expect("a client task panicked"));
    }
    Load { logs, killed_after }
}

async fn client(mut plan: ClientPlan) -> ClientLog {
    let mut log = ClientLog::default();
    let mut patients = 0;
    for _ in 0..OPS_PER_CLIENT {
        if plan.stop.load(Ordering::SeqCst) || Instant::now() >= plan.deadline {
            break;
        }
        if !plan.own.is_empty() && plan.rng.below(100) < 35 {
            let index = plan.rng.below(plan.own.len() as u64) as usize;
            let token = plan.own.swap_remove(index);
            let action = if plan.rng.below(100) < 70 {
                Action::Cancel
            } else {
                Action::NoShow
            };
            log.actions_sent += 1;
            let url = format!("{}/tokens/{token}/{}", plan.base, action.path());
            match answer(plan.http.post(url)).await {
                Answer::Ack(body) => {
                    plan.acks.fetch_add(1, Ordering::SeqCst);
                    let reply =
                        body.and_then(|body| serde_json::from_slice::<ActionReply>(&body).ok());
                    if let Some(reply) = &reply {
                        if reply.token.token_id != token || reply.token.status != action.terminal()
                        {
                            log.anomalies.push(format!(
                                "{} of {token} answered token {} with status {}",
                                action.path(),
                                reply.token.token_id,
                                reply.token.status
                            ));
                        }
                    }
                    log.acted.push(Acted {
                        token,
                        action,
                        reply,
                    });
                }
                // Only ALLOCATED tokens can be no-shows; it may be waitlisted.
                Answer::Refused(409, text)
                    if action == Action::NoShow && text.contains("INVALID_TRANSITION") =>
                {
                    log.refused += 1;
                    plan.own.push(token);
                }
                Answer::Refused(status, text) => {
                    log.anomalies
                        .push(format!("{} of {token}: {status} {text}", action.path()));
                }
                Answer::InDoubt => log.actions_in_doubt.push((token, action)),
            }
        } else {
            let slots = if plan.rng.below(100) < 75 {
                &plan.current_slots
            } else {
                &plan.all_slots
            };
            let slot = slots[plan.rng.below(slots.len() as u64) as usize].clone();
            let source = plan.rng.weighted(&SOURCES);
            let patient = format!("{}{}-C{}-{patients}", plan.label, plan.round, plan.index);
            patients += 1;
            let body = json!({"patientId": patient, "slotId": slot, "source": source});
            let key = (plan.rng.below(2) == 0).then(|| format!("key-{patient}"));
            let mut request = plan.http.post(format!("{}/tokens", plan.base)).json(&body);
            if let Some(key) = &key {
                request = request.header("Idempotency-Key", key);
            }
            log.bookings_sent += 1;
            match answer(request).await {
                Answer::Ack(Some(bytes)) => {
                    plan.acks.fetch_add(1, Ordering::SeqCst);
                    match serde_json::from_slice::<BookingReply>(&bytes) {
                        Ok(reply) => {
                            if reply.token.patient_id != patient || reply.token.slot_id != slot {
                                log.anomalies
                                    .push(format!("booking {body} answered {:?}", reply.token));
                            }
                            plan.own.push(reply.token.token_id.clone());
                            log.booked.push(Booked { key, body, reply });
                        }
                        Err(error) => log.anomalies.push(format!(
                            "booking {body}: unreadable 2xx body ({error}): {}",
                            String::from_utf8_lossy(&bytes)
                        )),
                    }
                }
                Answer::Ack(None) => {
                    plan.acks.fetch_add(1, Ordering::SeqCst);
                    log.booked_unread += 1;
                }
                Answer::Refused(409, text) if text.contains("WAITLIST_FULL") => log.refused += 1,
                Answer::Refused(status, text) => log
                    .anomalies
                    .push(format!("booking {body}: {status} {text}")),
                Answer::InDoubt => log.bookings_in_doubt += 1,
            }
        }
    }
    log
}
