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

/// A token's place in its life cycle. `Allocated` and `Waitlisted` are
/// active; the rest are terminal and never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Allocated,
    Waitlisted,
    Cancelled,
    NoShow,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Allocated,
        Status::Waitlisted,
        Status::Cancelled,
        Status::NoShow,
    ];

    pub fn is_active(self) -> bool {
        matches!(self, Status::Allocated | Status::Waitlisted)
    }

    /// Whether a token in this status holds a place in its slot's
    /// waitlist, and so has a waitlist position.
    pub fn is_waiting(self) -> bool {
        self == Status::Waitlisted
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Allocated => "ALLOCATED",
            Status::Waitlisted => "WAITLISTED",
            Status::Cancelled => "CANCELLED",
            Status::NoShow => "NO_SHOW",
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
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Allocated,
        Reason::Overbooked,
        Reason::BumpedLower,
        Reason::Waitlisted,
        Reason::Bumped,
        Reason::Promoted,
        Reason::CapacityReduced,
        Reason::Cancelled,
        Reason::NoShow,
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
        }
    }

    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == name)
    }
}

/// A front-desk action on an existing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cancel,
    NoShow,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::NoShow => "no-show",
        }
    }

    fn target(self) -> (Status, Reason) {
        match self {
            Action::Cancel => (Status::Cancelled, Reason::Cancelled),
            Action::NoShow => (Status::NoShow, Reason::NoShow),
        }
    }

    /// The status and history reason the action leads to, if it may be
    /// taken from `from`.
    pub fn transition(self, from: Status) -> Option<(Status, Reason)> {
        let allowed = match self {
            Action::Cancel => from.is_active(),
            Action::NoShow => from == Status::Allocated,
        };
        allowed.then(|| self.target())
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

/// What a capacity change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityOutcome {
    pub slot: SlotSummary,
    pub changes: Vec<Change>,
}

impl CapacityOutcome {
    /// Every token change the capacity change made, in order.
    pub fn token_changes(&self) -> impl Iterator<Item = TokenChange<'_>> {
        self.changes.iter().map(Change::as_token_change)
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
    pub history: Vec<HistoryEntry>,
}
