//! The day's load: at once, booking clerks book patients, a front desk per
//! doctor checks them in (and cancels, marks no-shows, takes back skipped
//! patients), each doctor calls the next patient, starts, completes and
//! skips, a nurse per doctor calls a particular patient, and an admin
//! closes slots (sometimes twice at once), until the server is killed.
//! Each client logs what its answers acknowledged, refused or left in
//! doubt.
//!
//! Desks and doctors act on what `GET /doctors/{id}/queue` shows them, so
//! they also act on tokens whose booking answer was lost. One desk per
//! doctor checks that doctor's patients in: a token the desk saw
//! `SKIPPED` was returned by its check-in, any other was checked in for
//! the first time, since only a check-in leads to a skip.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use crate::rng::Rng;
use crate::schedule::DayDoctor;
use crate::server::Server;
use crate::wire::{answer, ActionReply, Answer, BookingReply, CloseReply, DoctorQueue, TokenDto};

/// Booking clerks, each booking up to `BOOKINGS_PER_CLERK` patients a
/// round, paced so that bookings go on until the kill.
const CLERKS: usize = 6;
const BOOKINGS_PER_CLERK: usize = 20;
const CLERK_PAUSE_MS: Range<u64> = 5..40;
/// Pauses of the desks, doctors and nurses between requests: a desk and
/// a doctor keep pace with each other, so that patients stay at every
/// stage of the day (not arrived, in the hall, with the doctor).
const DESK_PAUSE_MS: Range<u64> = 0..10;
const DOCTOR_PAUSE_MS: Range<u64> = 0..6;
const NURSE_PAUSE_MS: Range<u64> = 10..40;
/// When a client has nothing to do.
const IDLE_MS: Range<u64> = 3..8;
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
pub enum TokenAction {
    CheckIn,
    /// `POST /tokens/{id}/call`, or `call-next` for the doctor.
    Call,
    Start,
    Complete,
    Skip,
    Cancel,
    NoShow,
}

impl TokenAction {
    pub fn path(self) -> &'static str {
        match self {
            TokenAction::CheckIn => "check-in",
            TokenAction::Call => "call",
            TokenAction::Start => "start",
            TokenAction::Complete => "complete",
            TokenAction::Skip => "skip",
            TokenAction::Cancel => "cancel",
            TokenAction::NoShow => "no-show",
        }
    }

    /// The statuses an acknowledged action may answer with.
    pub fn outcomes(self) -> &'static [&'static str] {
        match self {
            // A token bumped to the waitlist, or found there, checks in
            // and stays there.
            TokenAction::CheckIn => &["CHECKED_IN", "WAITLISTED"],
            TokenAction::Call => &["CALLED"],
            TokenAction::Start => &["IN_CONSULTATION"],
            TokenAction::Complete => &["COMPLETED"],
            // The skip that reaches `--max-skips` makes a no-show.
            TokenAction::Skip => &["SKIPPED", "NO_SHOW"],
            TokenAction::Cancel => &["CANCELLED"],
            TokenAction::NoShow => &["NO_SHOW"],
        }
    }

    /// The refusals other clients' requests can cause: the token moved on
    /// meanwhile, or the doctor got busy with someone else.
    fn expected_refusals(self) -> &'static [&'static str] {
        match self {
            TokenAction::Call => &["INVALID_TRANSITION", "DOCTOR_BUSY"],
            _ => &["INVALID_TRANSITION"],
        }
    }
}

/// An acknowledged action on a token, call-next included.
pub struct Acted {
    pub token: String,
    pub slot: String,
    pub patient: String,
    pub action: TokenAction,
    /// The status the client saw before it acted.
    pub seen: String,
    /// `None` when the 2xx status line came but the body did not.
    pub reply: Option<ActionReply>,
}

/// An action on a token that got no answer: it may or may not have
/// happened.
pub struct Unanswered {
    pub token: String,
    pub slot: String,
    pub patient: String,
    pub action: TokenAction,
}

/// An acknowledged close.
pub struct Closed {
    pub slot: String,
    /// `None` when the 2xx status line came but the body did not.
    pub reply: Option<CloseReply>,
}

/// A close the admin sends `after` the load starts; `twice` sends two at
/// once, of which exactly one may close the slot.
#[derive(Debug, Clone)]
pub struct PlannedClose {
    pub after: Duration,
    pub slot: String,
    pub twice: bool,
}

#[derive(Default)]
pub struct DayLog {
    pub sent: usize,
    pub acked: usize,
    pub in_doubt: usize,
    /// Expected refusals (see [`TokenAction::expected_refusals`]).
    pub refused: usize,
    pub booked: Vec<BookingReply>,
    pub acted: Vec<Acted>,
    pub unanswered: Vec<Unanswered>,
    pub closed: Vec<Closed>,
    pub closes_unanswered: Vec<String>,
    /// Answers the contract does not allow here.
    pub anomalies: Vec<String>,
}

pub struct DayLoad {
    pub logs: Vec<DayLog>,
    pub killed_after: Duration,
}

impl DayLoad {
    fn sum(&self, count: impl Fn(&DayLog) -> usize) -> usize {
        self.logs.iter().map(count).sum()
    }
    pub fn sent(&self) -> usize {
        self.sum(|log| log.sent)
    }
    pub fn acked(&self) -> usize {
        self.sum(|log| log.acked)
    }
    pub fn in_doubt(&self) -> usize {
        self.sum(|log| log.in_doubt)
    }
    pub fn refused(&self) -> usize {
        self.sum(|log| log.refused)
    }
    pub fn bookings_acked(&self) -> usize {
        self.sum(|log| log.booked.len())
    }
    /// Acknowledged actions whose answer says the token reached `status`.
    pub fn acted(&self, status: &str) -> usize {
        self.sum(|log| {
            log.acted
                .iter()
                .filter_map(|acted| acted.reply.as_ref())
                .filter(|reply| reply.token.status == status)
                .count()
        })
    }
    pub fn closes_acked(&self) -> usize {
        self.sum(|log| log.closed.len())
    }
    pub fn closes_in_doubt(&self) -> usize {
        self.sum(|log| log.closes_unanswered.len())
    }
    /// Acknowledged changes of closings with this reason.
    pub fn closing_changes(&self, reason: &str) -> usize {
        self.sum(|log| {
            log.closed
                .iter()
                .filter_map(|closed| closed.reply.as_ref())
                .flat_map(|reply| &reply.changes)
                .filter(|change| change.reason == reason)
                .count()
        })
    }
}

/// What a round of the day's load does.
pub struct DayPlan {
    pub round: usize,
    pub doctors: Arc<Vec<DayDoctor>>,
    /// Slots known to be closed when the round starts: no booking goes
    /// there.
    pub closed: HashSet<String>,
    pub closes: Vec<PlannedClose>,
}

/// Runs the clients, kills the server `kill_after` the start (and once at
/// least `min_acks` answers and `min_closes` closes were acknowledged),
/// then collects the logs.
pub async fn run_day(
    server: &mut Server,
    plan: DayPlan,
    kill_after: Duration,
    min_acks: usize,
    min_closes: usize,
    seed: u64,
) -> DayLoad {
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(AtomicUsize::new(0));
    let base: Arc<str> = Arc::from(server.base.as_str());
    let started = Instant::now();
    let mut streams = 0u64;
    let mut client = || {
        streams += 1;
        Client {
            http: server.http.clone(),
            base: base.clone(),
            stop: stop.clone(),
            acks: acks.clone(),
            closes: closes.clone(),
            deadline: started + LOAD_LIMIT,
            rng: Rng::new(seed ^ streams.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            log: DayLog::default(),
        }
    };
    let mut clients = JoinSet::new();
    for doctor in plan.doctors.iter() {
        clients.spawn(desk(client(), doctor.id.clone()));
        clients.spawn(doctor_at_work(client(), doctor.id.clone()));
        clients.spawn(nurse(client(), doctor.id.clone()));
    }
    for index in 0..CLERKS {
        clients.spawn(clerk(
            client(),
            index,
            plan.round,
            plan.doctors.clone(),
            plan.closed.clone(),
        ));
    }
    clients.spawn(admin(client(), plan.closes, started));
    tokio::time::sleep(kill_after).await;
    while (acks.load(Ordering::SeqCst) < min_acks || closes.load(Ordering::SeqCst) < min_closes)
        && started.elapsed() < LOAD_LIMIT
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let killed_after = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    while let Some(log) = clients.join_next().await {
        logs.push(log.expect("a client task panicked"));
    }
    DayLoad { logs, killed_after }
}

struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
    deadline: Instant,
    rng: Rng,
    log: DayLog,
}

/// The `code` of a problem+json body.
fn problem_code(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|problem| problem["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Client {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst) && Instant::now() < self.deadline
    }

    async fn pause(&mut self, range: Range<u64>) {
        let millis = self.rng.range(range);
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }

    /// Sends a change and counts its answer.
    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        self.log.sent += 1;
        let answer = answer(request).await;
        self.count(&answer);
        answer
    }

    fn count(&mut self, answer: &Answer) {
        match answer {
            Answer::Ack(_) => {
                self.log.acked += 1;
                self.acks.fetch_add(1, Ordering::SeqCst);
            }
            Answer::InDoubt => self.log.in_doubt += 1,
            Answer::Refused(..) => {}
        }
    }

    /// The doctor's day as the desks and doctors see it; `None` when it
    /// cannot be read (the server is being killed).
    async fn queue(&mut self, doctor: &str) -> Option<DoctorQueue> {
        let url = format!("{}/doctors/{doctor}/queue", self.base);
        let response = self.http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            if !response.status().is_server_error() {
                self.log
                    .anomalies
                    .push(format!("queue of {doctor}: {}", response.status()));
            }
            return None;
        }
        response.json().await.ok()
    }

    async fn act(&mut self, token: &TokenDto, action: TokenAction) {
        let url = format!("{}/tokens/{}/{}", self.base, token.token_id, action.path());
        let request = self.http.post(url);
        let answer = self.send(request).await;
        self.log_action(
            Some(token),
            action,
            answer,
            &format!("{} of", action.path()),
        );
    }

    async fn call_next(&mut self, doctor: &str) {
        let url = format!("{}/doctors/{doctor}/call-next", self.base);
        let request = self.http.post(url);
        let answer = self.send(request).await;
        match answer {
            Answer::Refused(409, text)
                if ["DOCTOR_BUSY", "QUEUE_EMPTY"].contains(&problem_code(&text).as_str()) =>
            {
                self.log.refused += 1
            }
            answer => self.log_action(
                None,
                TokenAction::Call,
                answer,
                &format!("call-next of {doctor}:"),
            ),
        }
    }

    /// Logs an action's answer; `token` is the token acted on as the
    /// client saw it, `None` for call-next, whose answer names it.
    fn log_action(
        &mut self,
        token: Option<&TokenDto>,
        action: TokenAction,
        answer: Answer,
        what: &str,
    ) {
        let name = token.map_or("", |token| token.token_id.as_str());
        match answer {
            Answer::Ack(body) => {
                let reply = body.and_then(|body| serde_json::from_slice::<ActionReply>(&body).ok());
                if let Some(reply) = &reply {
                    let other_token =
                        token.is_some_and(|token| reply.token.token_id != token.token_id);
                    if other_token || !action.outcomes().contains(&reply.token.status.as_str()) {
                        self.log.anomalies.push(format!(
                            "{what} {name} answered token {} with status {}",
                            reply.token.token_id, reply.token.status
                        ));
                    }
                }
                // Call-next without its body names no token: nothing to
                // hold the server to.
                let Some(seen) = token.or(reply.as_ref().map(|reply| &reply.token)) else {
                    return;
                };
                self.log.acted.push(Acted {
                    token: seen.token_id.clone(),
                    slot: seen.slot_id.clone(),
                    patient: seen.patient_id.clone(),
                    action,
                    // Call-next calls a checked-in token.
                    seen: token.map_or("CHECKED_IN", |token| &token.status).to_owned(),
                    reply,
                });
            }
            Answer::Refused(409, text)
                if action
                    .expected_refusals()
                    .contains(&problem_code(&text).as_str()) =>
            {
                self.log.refused += 1
            }
            Answer::Refused(status, text) => self
                .log
                .anomalies
                .push(format!("{what} {name}: {status} {text}")),
            Answer::InDoubt => {
                if let Some(token) = token {
                    self.log.unanswered.push(Unanswered {
                        token: token.token_id.clone(),
                        slot: token.slot_id.clone(),
                        patient: token.patient_id.clone(),
                        action,
                    });
                }
            }
        }
    }

    fn log_close(&mut self, slot: &str, answer: Answer) {
        self.count(&answer);
        match answer {
            Answer::Ack(body) => {
                self.closes.fetch_add(1, Ordering::SeqCst);
                let reply = body.and_then(|body| serde_json::from_slice::<CloseReply>(&body).ok());
                if let Some(reply) = &reply {
                    if reply.slot.slot_id != slot || !reply.slot.closed {
                        self.log.anomalies.push(format!(
                            "close of {slot} answered slot {} closed {}",
                            reply.slot.slot_id, reply.slot.closed
                        ));
                    }
                }
                self.log.closed.push(Closed {
                    slot: slot.to_owned(),
                    reply,
                });
            }
            Answer::Refused(409, text) if problem_code(&text) == "SLOT_CLOSED" => {
                self.log.refused += 1
            }
            Answer::Refused(status, text) => self
                .log
                .anomalies
                .push(format!("close of {slot}: {status} {text}")),
            Answer::InDoubt => self.log.closes_unanswered.push(slot.to_owned()),
        }
    }
}

/// Whether a token's patient comes to the hospital at all: three in four
/// do. The others stay booked until the desk marks them no-shows, or the
/// closing of their slot does, which then frees seats for the waitlisted
/// patients in the hall.
fn arrives(token: &TokenDto) -> bool {
    let hash = token.token_id.bytes().fold(0u32, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(u32::from(byte))
    });
    hash % 4 != 0
}

/// A patient the desk may attend to: the token, how likely the desk picks
/// it, and what it may do, how likely.
type DeskChoice = (TokenDto, u64, &'static [(TokenAction, u64)]);

/// A doctor's front desk: checks in the patients who arrive, takes back
/// the skipped ones, cancels now and then, and marks no-shows.
async fn desk(mut client: Client, doctor: String) -> DayLog {
    use TokenAction::*;
    while client.running() {
        let Some(queue) = client.queue(&doctor).await else {
            client.pause(IDLE_MS).await;
            continue;
        };
        let mut choices: Vec<DeskChoice> = Vec::new();
        for token in queue.not_arrived {
            if arrives(&token) {
                choices.push((token, 10, &[(CheckIn, 90), (NoShow, 5), (Cancel, 5)]));
            } else {
                choices.push((token, 1, &[(NoShow, 1)]));
            }
        }
        for token in queue.waitlist {
            if token.checked_in_at.is_some() {
                choices.push((token, 1, &[(Cancel, 1)]));
            } else if arrives(&token) {
                choices.push((token, 10, &[(CheckIn, 90), (Cancel, 10)]));
            }
        }
        for token in queue.skipped {
            choices.push((token, 10, &[(CheckIn, 60), (NoShow, 30), (Cancel, 10)]));
        }
        for token in queue.call_queue {
            choices.push((token, 1, &[(Cancel, 1)]));
        }
        // The patient called did not come to the room.
        if let Some(token) = queue.current.filter(|token| token.status == "CALLED") {
            choices.push((token, 2, &[(NoShow, 1)]));
        }
        if choices.is_empty() {
            client.pause(IDLE_MS).await;
            continue;
        }
        let weights: Vec<(usize, u64)> = choices
            .iter()
            .enumerate()
            .map(|(index, choice)| (index, choice.1))
            .collect();
        let (token, _, actions) = &choices[client.rng.weighted(&weights)];
        let action = client.rng.weighted(actions);
        client.act(token, action).await;
        client.pause(DESK_PAUSE_MS).await;
    }
    client.log
}

/// A doctor: starts with the patient called, completes the consultation
/// or skips a patient who did not come, and calls the next one.
async fn doctor_at_work(mut client: Client, doctor: String) -> DayLog {
    use TokenAction::*;
    while client.running() {
        let Some(queue) = client.queue(&doctor).await else {
            client.pause(IDLE_MS).await;
            continue;
        };
        match queue.current {
            Some(token) if token.status == "CALLED" => {
                let action = client.rng.weighted(&[(Start, 75), (Skip, 25)]);
                client.act(&token, action).await;
            }
            Some(token) => client.act(&token, Complete).await,
            None if !queue.call_queue.is_empty() => client.call_next(&doctor).await,
            None => {
                client.pause(IDLE_MS).await;
                continue;
            }
        }
        client.pause(DOCTOR_PAUSE_MS).await;
    }
    client.log
}

/// A nurse who now and then calls a particular patient among the first in
/// line, racing the doctor's own calls: one of them is refused.
async fn nurse(mut client: Client, doctor: String) -> DayLog {
    while client.running() {
        client.pause(NURSE_PAUSE_MS).await;
        let Some(queue) = client.queue(&doctor).await else {
            continue;
        };
        if queue.current.is_none() && !queue.call_queue.is_empty() {
            let among = queue.call_queue.len().min(3) as u64;
            let token = &queue.call_queue[client.rng.below(among) as usize];
            client.act(token, TokenAction::Call).await;
        }
    }
    client.log
}

/// A booking clerk: books new patients into one of the two earliest open
/// slots of a doctor, where closings come first.
async fn clerk(
    mut client: Client,
    index: usize,
    round: usize,
    doctors: Arc<Vec<DayDoctor>>,
    mut closed: HashSet<String>,
) -> DayLog {
    for booking in 0..BOOKINGS_PER_CLERK {
        if !client.running() {
            break;
        }
        let doctor = &doctors[client.rng.below(doctors.len() as u64) as usize];
        let open: Vec<&String> = doctor
            .slots
            .iter()
            .filter(|slot| !closed.contains(*slot))
            .take(2)
            .collect();
        if open.is_empty() {
            continue;
        }
        let slot = open[client.rng.below(open.len() as u64) as usize].clone();
        let source = client.rng.weighted(&SOURCES);
        let patient = format!("Y{round}-C{index}-{booking}");
        let body = json!({"patientId": patient, "slotId": slot, "source": source});
        let request = client
            .http
            .post(format!("{}/tokens", client.base))
            .json(&body);
        match client.send(request).await {
            Answer::Ack(Some(bytes)) => match serde_json::from_slice::<BookingReply>(&bytes) {
                Ok(reply) => {
                    if reply.token.patient_id != patient || reply.token.slot_id != slot {
                        client
                            .log
                            .anomalies
                            .push(format!("booking {body} answered {:?}", reply.token));
                    }
                    client.log.booked.push(reply);
                }
                Err(error) => client.log.anomalies.push(format!(
                    "booking {body}: unreadable 2xx body ({error}): {}",
                    String::from_utf8_lossy(&bytes)
                )),
            },
            // Acknowledged, but the token is unknown: the check finds it
            // in the event log.
            Answer::Ack(None) => {}
            Answer::Refused(409, text) => match problem_code(&text).as_str() {
                "SLOT_CLOSED" => {
                    client.log.refused += 1;
                    closed.insert(slot);
                }
                "WAITLIST_FULL" => client.log.refused += 1,
                _ => client
                    .log
                    .anomalies
                    .push(format!("booking {body}: 409 {text}")),
            },
            Answer::Refused(status, text) => client
                .log
                .anomalies
                .push(format!("booking {body}: {status} {text}")),
            Answer::InDoubt => {}
        }
        client.pause(CLERK_PAUSE_MS).await;
    }
    client.log
}

/// The admin: closes the planned slots on time.
async fn admin(mut client: Client, mut closes: Vec<PlannedClose>, started: Instant) -> DayLog {
    closes.sort_by_key(|close| close.after);
    for close in closes {
        tokio::time::sleep_until((started + close.after).into()).await;
        if !client.running() {
            break;
        }
        let url = format!("{}/slots/{}/close", client.base, close.slot);
        if close.twice {
            client.log.sent += 2;
            let (first, second) = tokio::join!(
                answer(client.http.post(&url)),
                answer(client.http.post(&url))
            );
            client.log_close(&close.slot, first);
            client.log_close(&close.slot, second);
        } else {
            client.log.sent += 1;
            let answer = answer(client.http.post(&url)).await;
            client.log_close(&close.slot, answer);
        }
    }
    client.log
}
