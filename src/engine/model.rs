//! The engine's vocabulary: sources, statuses, reasons, identifiers and the
//! views it hands out. These are plain values; turning them into JSON or SQL
//! is the job of the layers around the engine.

use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;

use jiff::civil::{Date, Time};
use jiff::Timestamp;
use uuid::Uuid;

/// Where a token request comes from. The source fixes the priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Emergency,
    Paid,
    FollowUp,
    Online,
    WalkIn,
}

impl Source {
    /// Every source, most important first.
    pub const ALL: [Source; 5] = [
        Source::Emergency,
        Source::Paid,
        Source::FollowUp,
        Source::Online,
        Source::WalkIn,
    ];

    /// Lower number means more important; emergencies are 1.
    pub fn priority(self) -> Priority {
        Priority(self as u8 + 1)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Emergency => "EMERGENCY",
            Source::Paid => "PAID",
            Source::FollowUp => "FOLLOW_UP",
            Source::Online => "ONLINE",
            Source::WalkIn => "WALK_IN",
        }
    }

    /// Parses the exact upper-case name used on the wire and on disk.
    pub fn parse(name: &str) -> Option<Source> {
        Source::ALL
            .into_iter()
            .find(|source| source.as_str() == name)
    }
}

/// A source's rank: 1 (emergency) to 5 (walk-in). Ordering follows the
/// number, so the smallest priority is the most important one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Priority(u8);

impl Priority {
    pub const EMERGENCY: Priority = Priority(1);

    pub fn get(self) -> u8 {
        self.0
    }

    /// The priority of a rank read back from a queue key.
    pub(super) fn from_rank(rank: u8) -> Priority {
        debug_assert!((1..=5).contains(&rank), "a rank from 1 to 5");
        Priority(rank)
    }

    /// Zero-based bucket index, used for the per-priority waitlist ranks.
    pub(super) fn bucket(self) -> usize {
        usize::from(self.0 - 1)
    }
}

/// A token's place in the OPD day. Its properties (whether it holds a
/// seat, is active, may be called, may be bumped, is final) are given here
/// and nowhere else: every other part of the program asks these methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Booked into a seat; the patient has not arrived.
    Allocated,
    /// Waiting for a seat (the patient may have arrived).
    Waitlisted,
    /// Arrived, in the doctor's call queue.
    CheckedIn,
    /// Called to the doctor's room.
    Called,
    /// With the doctor.
    InConsultation,
    /// Called and did not come; may come back to the desk.
    Skipped,
    /// Seen.
    Completed,
    Cancelled,
    NoShow,
    /// Not seen: waitlisted when the slot closed, or waiting when the day
    /// ended.
    Expired,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Allocated,
        Status::Waitlisted,
        Status::CheckedIn,
        Status::Called,
        Status::InConsultation,
        Status::Skipped,
        Status::Completed,
        Status::Cancelled,
        Status::NoShow,
        Status::Expired,
    ];

    /// Whether a token in this status counts towards its slot's allocated
    /// seats ("A"). A finished consultation still used its seat.
    pub fn holds_seat(self) -> bool {
        match self {
            Status::Allocated
            | Status::CheckedIn
            | Status::Called
            | Status::InConsultation
            | Status::Skipped
            | Status::Completed => true,
            Status::Waitlisted | Status::Cancelled | Status::NoShow | Status::Expired => false,
        }
    }

    /// Whether the token still takes part in the day: a patient holds at
    /// most one active token per slot.
    pub fn is_active(self) -> bool {
        !self.is_final()
    }

    /// Whether the status never changes again.
    pub fn is_final(self) -> bool {
        match self {
            Status::Completed | Status::Cancelled | Status::NoShow | Status::Expired => true,
            Status::Allocated
            | Status::Waitlisted
            | Status::CheckedIn
            | Status::Called
            | Status::InConsultation
            | Status::Skipped => false,
        }
    }

    /// Whether a token in this status holds a place in its slot's
    /// waitlist, and so has a waitlist position.
    pub fn is_waiting(self) -> bool {
        match self {
            Status::Waitlisted => true,
            Status::Allocated
            | Status::CheckedIn
            | Status::Called
            | Status::InConsultation
            | Status::Skipped
            | Status::Completed
            | Status::Cancelled
            | Status::NoShow
            | Status::Expired => false,
        }
    }

    /// Whether the token is in its doctor's call queue, and so has a queue
    /// position and an estimated call time.
    pub fn is_callable(self) -> bool {
        match self {
            Status::CheckedIn => true,
            Status::Allocated
            | Status::Waitlisted
            | Status::Called
            | Status::InConsultation
            | Status::Skipped
            | Status::Completed
            | Status::Cancelled
            | Status::NoShow
            | Status::Expired => false,
        }
    }

    /// Whether the doctor has not called the token yet, so that a more
    /// important booking or a capacity cut may move it to the waitlist.
    /// (A token back from a skip has been called: see the engine.)
    pub fn may_be_bumped(self) -> bool {
        match self {
            Status::Allocated | Status::CheckedIn => true,
            Status::Waitlisted
            | Status::Called
            | Status::InConsultation
            | Status::Skipped
            | Status::Completed
            | Status::Cancelled
            | Status::NoShow
            | Status::Expired => false,
        }
    }

    /// Whether the token holds a seat while its patient is not in the
    /// hall: booked and not arrived, or called and away. Such a patient may
    /// still come and then takes their place in call order, ahead of
    /// tokens already waiting, so call time estimates allow for them.
    pub fn is_awaited(self) -> bool {
        match self {
            Status::Allocated | Status::Skipped => true,
            Status::Waitlisted
            | Status::CheckedIn
            | Status::Called
            | Status::InConsultation
            | Status::Completed
            | Status::Cancelled
            | Status::NoShow
            | Status::Expired => false,
        }
    }

    /// Whether the token occupies its doctor: at most one per doctor and
    /// date is in such a status.
    pub fn is_with_doctor(self) -> bool {
        match self {
            Status::Called | Status::InConsultation => true,
            Status::Allocated
            | Status::Waitlisted
            | Status::CheckedIn
            | Status::Skipped
            | Status::Completed
            | Status::Cancelled
            | Status::NoShow
            | Status::Expired => false,
        }
    }

    /// What a token still active when its day ends becomes: a patient
    /// with the doctor has been seen, one who did not answer a call did
    /// not come, and one still waiting was not seen. `None` for final
    /// statuses, which never change.
    pub fn at_day_end(self) -> Option<Status> {
        match self {
            Status::InConsultation => Some(Status::Completed),
            Status::Allocated | Status::Skipped => Some(Status::NoShow),
            Status::Waitlisted | Status::CheckedIn | Status::Called => Some(Status::Expired),
            Status::Completed | Status::Cancelled | Status::NoShow | Status::Expired => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Allocated => "ALLOCATED",
            Status::Waitlisted => "WAITLISTED",
            Status::CheckedIn => "CHECKED_IN",
            Status::Called => "CALLED",
            Status::InConsultation => "IN_CONSULTATION",
            Status::Skipped => "SKIPPED",
            Status::Completed => "COMPLETED",
            Status::Cancelled => "CANCELLED",
            Status::NoShow => "NO_SHOW",
            Status::Expired => "EXPIRED",
        }
    }

    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
    }
}

/// How a booking request was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// A free seat was taken.
    Allocated,
    /// The slot was full and the request was an emergency.
    Overbooked,
    /// The slot was full and a less important token was moved to the waitlist.
    BumpedLower,
    /// The slot was full and nobody could be bumped.
    Waitlisted,
}

impl Decision {
    /// The decision a booking recorded as its creation's reason; `None`
    /// for reasons of later changes, which no booking gives.
    pub fn from_reason(reason: Reason) -> Option<Decision> {
        match reason {
            Reason::Allocated => Some(Decision::Allocated),
            Reason::Overbooked => Some(Decision::Overbooked),
            Reason::BumpedLower => Some(Decision::BumpedLower),
            Reason::Waitlisted => Some(Decision::Waitlisted),
            _ => None,
        }
    }

    pub fn reason(self) -> Reason {
        match self {
            Decision::Allocated => Reason::Allocated,
            Decision::Overbooked => Reason::Overbooked,
            Decision::BumpedLower => Reason::BumpedLower,
            Decision::Waitlisted => Reason::Waitlisted,
        }
    }

    pub fn status(self) -> Status {
        match self {
            Decision::Waitlisted => Status::Waitlisted,
            _ => Status::Allocated,
        }
    }
}

/// Why a token changed status; recorded in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Allocated,
    Overbooked,
    BumpedLower,
    Waitlisted,
    Bumped,
    Promoted,
    CapacityReduced,
    Cancelled,
    NoShow,
    CheckedIn,
    Returned,
    Called,
    Started,
    Completed,
    Skipped,
    /// Waitlisted when the slot closed.
    SlotClosed,
    /// Still active when the day ended.
    DayEnded,
    /// Cancelled because the doctor is absent that day.
    DoctorAbsent,
}

impl Reason {
    pub const ALL: [Reason; 18] = [
        Reason::Allocated,
        Reason::Overbooked,
        Reason::BumpedLower,
        Reason::Waitlisted,
        Reason::Bumped,
        Reason::Promoted,
        Reason::CapacityReduced,
        Reason::Cancelled,
        Reason::NoShow,
        Reason::CheckedIn,
        Reason::Returned,
        Reason::Called,
        Reason::Started,
        Reason::Completed,
        Reason::Skipped,
        Reason::SlotClosed,
        Reason::DayEnded,
        Reason::DoctorAbsent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allocated => "ALLOCATED",
            Reason::Overbooked => "OVERBOOKED",
            Reason::BumpedLower => "BUMPED_LOWER",
            Reason::Waitlisted => "WAITLISTED",
            Reason::Bumped => "BUMPED",
            Reason::Promoted => "PROMOTED",
            Reason::CapacityReduced => "CAPACITY_REDUCED",
            Reason::Cancelled => "CANCELLED",
            Reason::NoShow => "NO_SHOW",
            Reason::CheckedIn => "CHECKED_IN",
            Reason::Returned => "RETURNED",
            Reason::Called => "CALLED",
            Reason::Started => "STARTED",
            Reason::Completed => "COMPLETED",
            Reason::Skipped => "SKIPPED",
            Reason::SlotClosed => "SLOT_CLOSED",
            Reason::DayEnded => "DAY_ENDED",
            Reason::DoctorAbsent => "DOCTOR_ABSENT",
        }
    }

    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == name)
    }
}

/// An action on an existing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CheckIn,
    Call,
    Start,
    Complete,
    Skip,
    Cancel,
    NoShow,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::CheckIn,
        Action::Call,
        Action::Start,
        Action::Complete,
        Action::Skip,
        Action::Cancel,
        Action::NoShow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::CheckIn => "check-in",
            Action::Call => "call",
            Action::Start => "start",
            Action::Complete => "complete",
            Action::Skip => "skip",
            Action::Cancel => "cancel",
            Action::NoShow => "no-show",
        }
    }

    /// Whether the action may be taken only on the slot's own date.
    pub fn only_on_the_day(self) -> bool {
        matches!(self, Action::CheckIn | Action::Call | Action::NoShow)
    }

    /// The status and history reason the action leads to from `from`, if
    /// it may be taken from there. `checked_in` tells whether the token
    /// has checked in before; a skip that reaches the limit is decided by
    /// the engine, which counts skips.
    pub fn transition(self, from: Status, checked_in: bool) -> Option<(Status, Reason)> {
        use Status::*;
        match (self, from) {
            (Action::CheckIn, Allocated) => Some((CheckedIn, Reason::CheckedIn)),
            (Action::CheckIn, Waitlisted) if !checked_in => Some((Waitlisted, Reason::CheckedIn)),
            (Action::CheckIn, Skipped) => Some((CheckedIn, Reason::Returned)),
            (Action::Call, CheckedIn) => Some((Called, Reason::Called)),
            (Action::Start, Called) => Some((InConsultation, Reason::Started)),
            (Action::Complete, InConsultation) => Some((Completed, Reason::Completed)),
            (Action::Skip, Called) => Some((Skipped, Reason::Skipped)),
            (Action::Cancel, Allocated | Waitlisted | CheckedIn | Called | Skipped) => {
                Some((Cancelled, Reason::Cancelled))
            }
            (Action::NoShow, Allocated | Called | Skipped) => Some((NoShow, Reason::NoShow)),
            _ => None,
        }
    }
}

/// The longest identifier accepted for patients, slots and doctors.
pub const ID_MAX_LEN: usize = 64;

/// Checks the identifier rule shared by patients, slots and doctors:
/// 1–64 characters of `A–Z a–z 0–9 . _ -`.
pub fn is_valid_id(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= ID_MAX_LEN
        && raw
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident($storage:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name($storage);

        impl $name {
            /// Accepts only identifiers that pass [`is_valid_id`].
            pub fn parse(raw: &str) -> Option<Self> {
                is_valid_id(raw).then(|| Self(<$storage>::from(raw)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// Identifies a patient; the engine never interprets it.
    ///
    /// Every token holds its own, so ids of up to 24 bytes (any realistic
    /// record number) are kept inline, without an allocation per booking.
    PatientId(CompactString)
);
identifier!(
    /// Identifies a slot, e.g. `D1-09`.
    ///
    /// Shared behind an `Arc` because every token view of a slot refers to
    /// it.
    SlotId(Arc<str>)
);
identifier!(
    /// Identifies a doctor; token numbers are counted per doctor and date.
    ///
    /// Shared behind an `Arc` like [`SlotId`].
    DoctorId(Arc<str>)
);

impl SlotId {
    /// Sorts before every valid slot id (ids are never empty): the lower
    /// end of a range over slots in listing order.
    pub(super) fn lowest() -> SlotId {
        SlotId(Arc::from(""))
    }
}

/// Who performed an action, as recorded in token history.
pub type Actor = Arc<str>;

/// The actor of what the service does on its own: the schedule loaded at
/// start-up, and the closings and days' ends the clock brings.
pub const SYSTEM_ACTOR: &str = "system";

/// The largest capacity a slot may have.
pub const CAPACITY_MAX: u32 = 10_000;

/// A slot's seat count, 0 to [`CAPACITY_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Capacity(u32);

impl Capacity {
    pub fn new(seats: u32) -> Option<Capacity> {
        (seats <= CAPACITY_MAX).then_some(Capacity(seats))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// What a new slot looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSpec {
    pub id: SlotId,
    pub doctor: DoctorId,
    pub date: Date,
    pub start: Time,
    pub end: Time,
    pub capacity: Capacity,
}

/// When and by whom a mutation happens. The engine never reads a clock:
/// the caller passes the time in.
#[derive(Debug, Clone)]
pub struct Context {
    pub at: Timestamp,
    pub actor: Actor,
    /// Today's date in the clinic's time zone: `check-in`, `call` and
    /// `no-show` are taken only on a slot's own date.
    pub today: Date,
}

/// One line of a token's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub at: Timestamp,
    pub from: Option<Status>,
    pub to: Status,
    pub reason: Reason,
    pub actor: Actor,
}

/// A token as the outside world sees it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenView {
    pub id: Uuid,
    /// The global arrival order; not shown to clients but needed to rebuild
    /// queues from storage.
    pub sequence: u64,
    pub number: u32,
    pub patient: PatientId,
    pub slot: SlotId,
    pub doctor: DoctorId,
    pub date: Date,
    pub source: Source,
    pub status: Status,
    /// 1-based place in the waitlist while waitlisted.
    pub waitlist_position: Option<u32>,
    /// When the patient first checked in; kept for life.
    pub checked_in_at: Option<Timestamp>,
    /// How often the doctor called the patient and the patient did not come.
    pub skips: u8,
    /// 1-based place in the doctor's call order while checked in.
    pub queue_position: Option<u32>,
    /// When the token is expected to be called, while checked in.
    pub estimated_call_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A status change of a token other than the one acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub token: Uuid,
    /// The token's arrival sequence: the key storage finds it by.
    pub sequence: u64,
    pub number: u32,
    pub patient: PatientId,
    pub source: Source,
    pub from: Status,
    pub to: Status,
    pub reason: Reason,
    /// The token's first check-in, after the change.
    pub checked_in_at: Option<Timestamp>,
    /// The token's skips, after the change.
    pub skips: u8,
}

impl Change {
    fn as_token_change(&self) -> TokenChange<'_> {
        TokenChange {
            token: self.token,
            sequence: self.sequence,
            number: self.number,
            patient: &self.patient,
            source: self.source,
            from: Some(self.from),
            to: self.to,
            reason: self.reason,
            checked_in_at: self.checked_in_at,
            skips: self.skips,
            estimated_call_at: None,
        }
    }
}

/// One status change of one token, its creation included (`from` is
/// `None`): the one record of a token change that every store persists and
/// the event log tells. Outcomes list theirs with `token_changes`, so no
/// store rebuilds the acted-on token's change on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenChange<'a> {
    pub token: Uuid,
    pub sequence: u64,
    pub number: u32,
    pub patient: &'a PatientId,
    pub source: Source,
    pub from: Option<Status>,
    pub to: Status,
    pub reason: Reason,
    /// The token's first check-in, after the change.
    pub checked_in_at: Option<Timestamp>,
    /// The token's skips, after the change.
    pub skips: u8,
    /// When the token is expected to be called, as the answer to the
    /// change that put it into the call queue (a check-in, or a return
    /// after a skip) tells it; `None` for every other change.
    pub estimated_call_at: Option<Timestamp>,
}

/// A slot's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSummary {
    pub id: SlotId,
    pub doctor: DoctorId,
    pub date: Date,
    pub start: Time,
    pub end: Time,
    pub capacity: u32,
    pub allocated: u32,
    pub waitlisted: u32,
    /// When the slot closes, or, once closed, when it did.
    pub closes_at: Timestamp,
    pub closed: bool,
}

impl SlotSummary {
    pub fn available(&self) -> u32 {
        self.capacity.saturating_sub(self.allocated)
    }

    pub fn overbooked_by(&self) -> u32 {
        self.allocated.saturating_sub(self.capacity)
    }

    pub fn is_overbooked(&self) -> bool {
        self.allocated > self.capacity
    }
}

/// Which slots to list, and where the page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotQuery {
    /// Only this doctor's slots.
    pub doctor: Option<DoctorId>,
    /// Only slots on this date.
    pub date: Option<Date>,
    /// Only slots after this one in listing order (date, start time, id);
    /// it need not match the filters.
    pub after: Option<SlotId>,
    /// The most slots the page holds.
    pub limit: usize,
}

/// One page of a slot listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPage {
    pub slots: Vec<SlotSummary>,
    /// Whether slots matching the query follow the last one listed.
    pub more: bool,
}

/// A slot with its queues, in service order and promotion order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotDetail {
    pub summary: SlotSummary,
    pub allocated: Vec<TokenView>,
    pub waitlist: Vec<TokenView>,
}

/// What an action on a token did: the token after the action, how it got
/// there, the side effects on other tokens in order, and the slot after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub token: TokenView,
    /// The acted-on token's own history line for this action.
    pub transition: HistoryEntry,
    pub changes: Vec<Change>,
    pub slot: SlotSummary,
}

impl Outcome {
    /// Every token change the operation made, in the order of its answer:
    /// the token acted on, then the others.
    pub fn token_changes(&self) -> impl Iterator<Item = TokenChange<'_>> {
        let acted = TokenChange {
            token: self.token.id,
            sequence: self.token.sequence,
            number: self.token.number,
            patient: &self.token.patient,
            source: self.token.source,
            from: self.transition.from,
            to: self.transition.to,
            reason: self.transition.reason,
            checked_in_at: self.token.checked_in_at,
            skips: self.token.skips,
            estimated_call_at: self.token.estimated_call_at,
        };
        std::iter::once(acted).chain(self.changes.iter().map(Change::as_token_change))
    }

    /// The decision of a booking; `None` for later actions.
    pub fn decision(&self) -> Option<Decision> {
        match self.transition.from {
            None => Decision::from_reason(self.transition.reason),
            Some(_) => None,
        }
    }
}

/// What a change to a slot did (a capacity change, a closing, the day's
/// end): the slot after it and the token changes in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotOutcome {
    pub slot: SlotSummary,
    pub changes: Vec<Change>,
}

impl SlotOutcome {
    /// Every token change the slot change made, in order.
    pub fn token_changes(&self) -> impl Iterator<Item = TokenChange<'_>> {
        self.changes.iter().map(Change::as_token_change)
    }
}

/// What a doctor's absence did to one of the doctor's slots of the date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsentSlot {
    /// Whether the absence closed the slot; `false` when it was closed
    /// already.
    pub closed: bool,
    /// The slot after, and its tokens cancelled, in service order, then
    /// promotion order.
    pub outcome: SlotOutcome,
}

/// What a doctor's absence did (see "A doctor's absence" in the HTTP
/// contract): every slot of the doctor's date, in start time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absence {
    pub doctor: DoctorId,
    pub date: Date,
    pub slots: Vec<AbsentSlot>,
    /// The consultation in progress, which is left to finish.
    pub in_consultation: Option<TokenView>,
}

impl Absence {
    /// Whether anything changed: a repeated absence changes nothing.
    pub fn changed(&self) -> bool {
        self.slots
            .iter()
            .any(|slot| slot.closed || !slot.outcome.changes.is_empty())
    }
}

/// A booking request that passed input validation.
#[derive(Debug, Clone)]
pub struct BookRequest {
    /// Chosen by the caller so that the engine stays free of randomness.
    pub token: Uuid,
    pub patient: PatientId,
    pub slot: SlotId,
    pub source: Source,
}

/// A stored token handed back to the engine when it is rebuilt.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: Uuid,
    pub sequence: u64,
    pub number: u32,
    pub patient: PatientId,
    pub slot: SlotId,
    pub source: Source,
    pub status: Status,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Used when `history` is empty (a partially loaded engine); with
    /// history, the engine derives it from the first check-in.
    pub checked_in_at: Option<Timestamp>,
    /// Used when `history` is empty; with history, the engine counts the
    /// skips in it.
    pub skips: u8,
    pub history: Vec<HistoryEntry>,
}

/// How a doctor's day has gone so far, for call time estimates: the
/// consultations completed and how long they took, and the calls and how
/// many of them the patient did not answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pace {
    pub consultations: u32,
    /// The sum of the completed consultations' lengths, STARTED to
    /// COMPLETED.
    pub consultation_nanos: i64,
    pub calls: u32,
    /// Calls the patient did not answer (skips, and no-shows after a call).
    pub skips: u32,
}

/// A doctor's day as the doctor's console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorQueue {
    pub doctor: DoctorId,
    pub date: Date,
    /// The token `CALLED` or `IN_CONSULTATION`.
    pub current: Option<TokenView>,
    /// `CHECKED_IN` tokens in call order.
    pub call_queue: Vec<TokenView>,
    /// `ALLOCATED` tokens in call order.
    pub not_arrived: Vec<TokenView>,
    /// `SKIPPED` tokens in call order.
    pub skipped: Vec<TokenView>,
    /// Waitlisted tokens by slot start time, then promotion order.
    pub waitlist: Vec<TokenView>,
    pub completed: u32,
    pub no_show: u32,
    pub cancelled: u32,
    pub expired: u32,
}

impl DoctorQueue {
    /// A doctor's day with nobody in it.
    pub fn empty(doctor: DoctorId, date: Date) -> DoctorQueue {
        DoctorQueue {
            doctor,
            date,
            current: None,
            call_queue: Vec::new(),
            not_arrived: Vec::new(),
            skipped: Vec::new(),
            waitlist: Vec::new(),
            completed: 0,
            no_show: 0,
            cancelled: 0,
            expired: 0,
        }
    }
}

/// One doctor on the waiting-hall board. No patient ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardEntry {
    pub doctor: DoctorId,
    /// The token number and status of the token with the doctor.
    pub now_serving: Option<(u32, Status)>,
    /// The first token numbers of the call queue.
    pub next: Vec<u32>,
    /// How many tokens are checked in.
    pub waiting: u32,
}

/// A change the clock made due, as [`Engine::tick`](super::Engine::tick)
/// made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timed {
    /// The slot reached its closing time.
    Closed(SlotOutcome),
    /// The slot's date ended with tokens still active.
    DayEnded(SlotOutcome),
}
