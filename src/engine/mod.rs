//! The allocation engine: a pure, synchronous state machine.
//!
//! It owns every slot and token and applies the rules of the HTTP contract
//! (bumping, overbooking, waitlisting, promotion, capacity changes, and the
//! OPD day: check-in, the doctor's call order, consultations, skips). It does
//! no I/O, never awaits and never reads a clock: the caller passes the time
//! and the new token's id in, so the same calls always give the same result.
//! Each mutation returns everything it changed, which is what the store
//! persists and the HTTP layer reports.
//!
//! Expected refusals are [`EngineError`]s. A broken invariant is a bug: O(1)
//! checks run after every mutation in every build, and a full check of the
//! touched slot runs after every mutation in debug builds and tests.

mod arena;
mod fenwick;
mod model;
mod slot;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use arena::{Arena, IdIndex};
use fenwick::Fenwick;
pub use model::*;
use slot::{BumpKey, Slot, TokenKey};

/// The engine's hash maps. foldhash, seeded per process, hashes a token id
/// or a short id in a few instructions where the standard SipHash takes
/// several times longer; every map here is either keyed by server-made
/// ids or bounded in size (a slot's patients), which limits what crafted
/// keys could do.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Bounds that keep one slot's memory finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most tokens one slot's waitlist may hold. Emergencies never wait,
    /// so they are never refused by this limit.
    pub waitlist_max: u32,
    /// The most emergencies a full slot may take beyond its capacity. With
    /// the capacity cap, it bounds a slot's allocated tokens: a seat is
    /// taken only below capacity and an emergency overbooks only below
    /// capacity plus this.
    pub overbook_max: u32,
    /// The skip that reaches this count (at least 1) makes the token a
    /// no-show.
    pub max_skips: u8,
    /// How long after its end time a slot closes; `None` closes it at the
    /// end of its date. A slot always closes by the end of its date.
    pub close_after: Option<SignedDuration>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            waitlist_max: 1_000,
            overbook_max: 200,
            max_skips: 2,
            close_after: None,
        }
    }
}

/// A request the rules refuse. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("slot {0} does not exist")]
    SlotNotFound(SlotId),
    #[error("token {0} does not exist")]
    TokenNotFound(Uuid),
    #[error("slot {0} already exists")]
    SlotExists(SlotId),
    #[error("the slot overlaps slot {existing} of the same doctor on the same date")]
    SlotOverlap { existing: SlotId },
    #[error("the slot must end after it starts")]
    EndNotAfterStart,
    #[error("patient already holds active token {existing} in this slot")]
    DuplicateBooking { existing: Uuid },
    #[error("a {} token cannot be marked {}", from.as_str(), action.as_str())]
    InvalidTransition { from: Status, action: Action },
    #[error("the waitlist of slot {slot} would exceed its limit of {limit} tokens")]
    WaitlistFull { slot: SlotId, limit: u32 },
    #[error(
        "slot {slot} already holds its maximum of {limit} emergencies beyond its capacity; \
         book the emergency into another slot"
    )]
    OverbookFull { slot: SlotId, limit: u32 },
    #[error("token id {0} is already in use")]
    TokenIdInUse(Uuid),
    #[error("doctor {0} has no slot")]
    DoctorNotFound(DoctorId),
    #[error("doctor {doctor} has no slot on {date}")]
    NoSlotOnDate { doctor: DoctorId, date: Date },
    #[error("a {} is taken only on the slot's date, {date}", action.as_str())]
    NotToday { action: Action, date: Date },
    #[error("the doctor is busy with token {current}")]
    DoctorBusy { current: Uuid },
    #[error("nobody is checked in for this doctor today")]
    QueueEmpty,
    #[error("slot {slot} closed at {closed_at}")]
    SlotClosed { slot: SlotId, closed_at: Timestamp },
}

/// Stored data that cannot be the result of any sequence of operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent stored state: {0}")]
pub struct RestoreError(String);

/// A token in the arena. Its queue key is (priority, sequence).
#[derive(Debug)]
struct Token {
    id: Uuid,
    sequence: u64,
    number: u32,
    patient: PatientId,
    slot: u32,
    source: Source,
    status: Status,
    /// Index among the slot's arrivals of the same priority, for the
    /// waitlist position tree.
    arrival: u32,
    created_at: Nanos,
    /// Kept apart from `history` because a partially loaded engine (one
    /// slot's active tokens) has no history to derive it from.
    updated_at: Nanos,
    /// The first history line, at `created_at`. Kept inline rather than in
    /// `history` because most tokens never change again, and a history
    /// vector would cost every booking an allocation. `None` in a partially
    /// loaded engine, which holds no history.
    creation: Option<Creation>,
    /// History after the creation, oldest first.
    history: Vec<HistoryEntry>,
    /// The first check-in; kept for life.
    checked_in_at: Option<Nanos>,
    /// Calls the patient did not answer.
    skips: u8,
}

/// A moment in nanoseconds since the Unix epoch: half the size of a
/// `Timestamp`, which matters in a struct kept for every token. It covers
/// 1678 to 2261, as the stores do (they keep times in the same form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Nanos(i64);

impl Nanos {
    fn try_of(at: jiff::Timestamp) -> Option<Nanos> {
        i64::try_from(at.as_nanosecond()).ok().map(Nanos)
    }

    /// The time of a mutation, which comes from the service's clock.
    fn of(at: jiff::Timestamp) -> Nanos {
        Nanos::try_of(at).expect("the clock reads a time before 2262")
    }

    fn timestamp(self) -> jiff::Timestamp {
        jiff::Timestamp::from_nanosecond(i128::from(self.0))
            .expect("every i64 nanosecond count is a valid timestamp")
    }
}

#[derive(Debug)]
struct Creation {
    status: Status,
    reason: Reason,
    actor: Actor,
}

impl Token {
    fn creation_entry(&self) -> Option<HistoryEntry> {
        self.creation.as_ref().map(|creation| HistoryEntry {
            at: self.created_at.timestamp(),
            from: None,
            to: creation.status,
            reason: creation.reason,
            actor: creation.actor.clone(),
        })
    }

    /// The whole history, oldest first.
    fn full_history(&self) -> Vec<HistoryEntry> {
        self.creation_entry()
            .into_iter()
            .chain(self.history.iter().cloned())
            .collect()
    }

    fn queue_key(&self) -> slot::QueueKey {
        slot::QueueKey::new(self.source.priority(), self.sequence)
    }

    fn bump_key(&self) -> BumpKey {
        BumpKey::new(
            self.source.priority(),
            self.status.is_callable(),
            self.sequence,
        )
    }

    /// Whether a booking or a capacity cut may move the token to the
    /// waitlist: only tokens the doctor has never called. A token back
    /// from a skip was called, so it keeps its seat.
    fn is_bumpable(&self) -> bool {
        self.status.may_be_bumped() && self.skips == 0
    }
}

/// The allowance for a called patient who does not come: the doctor waits
/// this long before skipping them.
const SKIP_ALLOWANCE_NANOS: i128 = 2 * 60 * 1_000_000_000;

/// How many consultations of the slot's own length ÷ capacity the mean
/// starts from: completed consultations move it away from that guess as
/// they accumulate.
const PRIOR_CONSULTATIONS: i128 = 2;

/// Minutes in a day: the bound of a slot's start minute.
const DAY_MINUTES: u32 = 24 * 60;

/// A checked-in token's place in its doctor's call order: emergencies
/// first, then slot start time, then priority, then arrival sequence,
/// packed into one integer so that integer order is call order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct CallKey(u128);

/// What a call key is made of, and the call position bucket it falls in:
/// the doctor's day counts checked-in tokens per bucket (emergencies per
/// slot, then per slot and priority), and a slot counts them per arrival
/// within a priority, which together give a position in O(log n).
struct CallPlace {
    key: CallKey,
    bucket: u32,
    emergency: bool,
    start: Time,
}

impl CallPlace {
    fn of(token: &Token, slot: &Slot) -> CallPlace {
        let priority = token.source.priority();
        let emergency = priority == Priority::EMERGENCY;
        let minute = CallPlace::minute(slot);
        let key = u128::from(!emergency) << 78
            | u128::from(minute) << 67
            | u128::from(priority.get()) << 64
            | u128::from(token.sequence);
        CallPlace {
            key: CallKey(key),
            bucket: CallPlace::bucket(priority, minute),
            emergency,
            start: slot.start,
        }
    }

    /// The slot's start minute of the day.
    fn minute(slot: &Slot) -> u32 {
        u32::from(slot.start.hour() as u8) * 60 + u32::from(slot.start.minute() as u8)
    }

    /// The bucket of the tokens of `priority` in the slot starting at
    /// `minute`: buckets are numbered in call order.
    fn bucket(priority: Priority, minute: u32) -> u32 {
        if priority == Priority::EMERGENCY {
            minute
        } else {
            DAY_MINUTES + minute * 5 + (u32::from(priority.get()) - 1)
        }
    }
}

/// A doctor's working day: the token number counter, the slots by start
/// time (for the overlap check), and the doctor's call order over all of
/// them.
#[derive(Debug, Default)]
struct DoctorDay {
    numbers_issued: u32,
    slots_by_start: BTreeMap<Time, (Time, u32)>,
    /// Checked-in tokens in call order.
    call_queue: BTreeMap<CallKey, TokenKey>,
    /// Checked-in tokens per call position bucket (see [`CallPlace`]).
    call_buckets: Fenwick,
    /// Start times of the slots whose checked-in emergencies go first,
    /// with how many each has: no token after them is called before the
    /// latest of those slots starts.
    emergency_starts: BTreeMap<Time, u32>,
    /// The token called or in consultation.
    current: Option<TokenKey>,
    pace: Pace,
    /// Tokens that ended, per final status (indexed as `Status::ALL`).
    finals: [u32; Status::ALL.len()],
}

fn status_index(status: Status) -> usize {
    Status::ALL
        .iter()
        .position(|each| *each == status)
        .expect("every status is listed")
}

/// Adds one change to the day's pace: a call, a call not answered, a
/// consultation completed after running since `since`.
fn record_pace(pace: &mut Pace, from: Status, to: Status, at: Nanos, since: Nanos) {
    if to == Status::Called {
        pace.calls += 1;
    }
    if from == Status::Called && matches!(to, Status::Skipped | Status::NoShow) {
        pace.skips += 1;
    }
    if from == Status::InConsultation && to == Status::Completed {
        pace.consultations += 1;
        pace.consultation_nanos += (at.0 - since.0).max(0);
    }
}

/// How many awaited tokens of `slot` (patients not in the hall) come
/// before `token`, whose call place is `own`, in call order: all of those
/// in earlier buckets and those of its own bucket that arrived before it,
/// in O(log n).
fn awaited_ahead(slot: &Slot, own: &CallPlace, token: &Token) -> u32 {
    let minute = CallPlace::minute(slot);
    Source::ALL
        .into_iter()
        .map(|source| {
            let priority = source.priority();
            match CallPlace::bucket(priority, minute).cmp(&own.bucket) {
                Ordering::Less => slot.awaited(priority),
                Ordering::Equal => slot.awaited_before(priority, token.arrival),
                Ordering::Greater => 0,
            }
        })
        .sum()
}

/// How many halves of a token an awaited token of `slot` counts for in an
/// estimate made at the clinic's local time `local`: a whole one before
/// the slot starts (most booked patients come), half while it runs (a
/// patient not there by the start may still come late, or not at all),
/// none once it has ended.
fn awaited_weight(slot: &Slot, local: jiff::civil::DateTime) -> u8 {
    if local < slot.date.to_datetime(slot.start) {
        2
    } else if local < slot.date.to_datetime(slot.end) {
        1
    } else {
        0
    }
}

/// The clinic's time zone, UTC unless set.
#[derive(Debug, Clone)]
struct Zone(TimeZone);

impl Default for Zone {
    fn default() -> Zone {
        Zone(TimeZone::UTC)
    }
}

#[derive(Debug, Default)]
pub struct Engine {
    limits: Limits,
    /// The clinic's time zone: slot times are local, estimates instants.
    zone: Zone,
    slots: Vec<Slot>,
    slot_keys: HashMap<SlotId, u32>,
    /// Every slot in listing order: date, start time, slot id.
    schedule: BTreeMap<(Date, Time, SlotId), u32>,
    /// Every slot by doctor, then in listing order, so that a doctor's
    /// page is a range too instead of a scan past every other doctor.
    doctor_schedule: BTreeMap<(DoctorId, Date, Time, SlotId), u32>,
    /// Each doctor's working day, found by doctor and date when a slot is
    /// created; a slot keeps its day's index so that a booking reaches
    /// the counter without hashing.
    doctor_days: HashMap<(DoctorId, Date), u32>,
    days: Vec<DoctorDay>,
    tokens: Arena<Token>,
    token_keys: IdIndex,
    next_sequence: u64,
    /// Open slots by closing time, then key: the next to close is first.
    closings: BTreeSet<(i64, u32)>,
    /// Slots by the end of their date, then key, until their day's end is
    /// handled.
    day_ends: BTreeSet<(i64, u32)>,
}

impl Engine {
    pub fn new(limits: Limits) -> Engine {
        Engine {
            limits,
            next_sequence: 1,
            ..Engine::default()
        }
    }

    /// Sets the clinic's time zone, in which slot times are read; the
    /// closing times of open slots and the ends of their days are taken
    /// in it from now on.
    pub fn with_zone(mut self, zone: TimeZone) -> Engine {
        self.zone = Zone(zone);
        self.closings.clear();
        self.day_ends.clear();
        for key in 0..self.slots.len() {
            let key = key as u32;
            let (date, end) = (self.slots[key as usize].date, self.slots[key as usize].end);
            let closes_at = self.closing_time(date, end);
            let slot = &mut self.slots[key as usize];
            if !slot.closed {
                slot.closes_at = closes_at;
                self.closings.insert((closes_at.0, key));
            }
            self.day_ends.insert((self.day_end(date).0, key));
        }
        self
    }

    /// When `date` ends in the clinic's zone.
    pub fn day_ends_at(&self, date: Date) -> Timestamp {
        self.day_end(date).timestamp()
    }

    /// When `date` ends in the clinic's zone: the start of the next date.
    fn day_end(&self, date: Date) -> Nanos {
        date.tomorrow()
            .and_then(|next| next.to_zoned(self.zone.0.clone()))
            .ok()
            .and_then(|start| Nanos::try_of(start.timestamp()))
            .unwrap_or(Nanos(i64::MAX))
    }

    /// When a slot of `date` ending at `end` closes: the end of its date,
    /// or the configured time after its end if that comes first.
    fn closing_time(&self, date: Date, end: Time) -> Nanos {
        let day_end = self.day_end(date);
        let Some(after) = self.limits.close_after else {
            return day_end;
        };
        date.to_datetime(end)
            .to_zoned(self.zone.0.clone())
            .ok()
            .and_then(|end| end.timestamp().checked_add(after).ok())
            .and_then(Nanos::try_of)
            .map_or(day_end, |closes| Nanos(closes.0.min(day_end.0)))
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn create_slot(&mut self, spec: SlotSpec) -> Result<SlotSummary, EngineError> {
        if spec.end <= spec.start {
            return Err(EngineError::EndNotAfterStart);
        }
        if self.slot_keys.contains_key(&spec.id) {
            return Err(EngineError::SlotExists(spec.id));
        }
        let day_key = *self
            .doctor_days
            .entry((spec.doctor.clone(), spec.date))
            .or_insert_with(|| {
                self.days.push(DoctorDay::default());
                u32::try_from(self.days.len() - 1).expect("fewer than 2^32 doctor days")
            });
        let day = &mut self.days[day_key as usize];
        // Slots of one doctor never overlap, so the last one starting before
        // the new end has the latest end of all those: one lookup suffices.
        if let Some((_, &(end, existing))) = day.slots_by_start.range(..spec.end).next_back() {
            if end > spec.start {
                let existing = self.slots[existing as usize].id.clone();
                return Err(EngineError::SlotOverlap { existing });
            }
        }
        let key = u32::try_from(self.slots.len()).expect("fewer than 2^32 slots");
        day.slots_by_start.insert(spec.start, (spec.end, key));
        let closes_at = self.closing_time(spec.date, spec.end);
        self.closings.insert((closes_at.0, key));
        self.day_ends.insert((self.day_end(spec.date).0, key));
        self.slot_keys.insert(spec.id.clone(), key);
        self.schedule
            .insert((spec.date, spec.start, spec.id.clone()), key);
        self.doctor_schedule.insert(
            (spec.doctor.clone(), spec.date, spec.start, spec.id.clone()),
            key,
        );
        self.slots.push(Slot::new(spec, day_key, closes_at));
        Ok(self.slots[key as usize].summary())
    }

    /// Creates a slot at `at`: one whose closing time has passed is closed
    /// at once, with nobody in it, and closed at `at`.
    pub fn create_slot_at(
        &mut self,
        spec: SlotSpec,
        at: Timestamp,
    ) -> Result<SlotSummary, EngineError> {
        let id = spec.id.clone();
        let summary = self.create_slot(spec)?;
        let key = self.slot_key(&id)?;
        if summary.closes_at > at {
            return Ok(summary);
        }
        self.mark_closed(key, Nanos::of(at));
        self.check_after_mutation(key);
        Ok(self.slots[key as usize].summary())
    }

    /// Closes a slot at once (see "Closing a slot" in the HTTP contract).
    pub fn close_slot(&mut self, id: &SlotId, ctx: &Context) -> Result<SlotOutcome, EngineError> {
        let key = self.slot_key(id)?;
        if self.slots[key as usize].closed {
            return Err(self.slot_closed(key));
        }
        Ok(self.close(key, ctx))
    }

    /// Records that the doctor is absent on `date` (see "A doctor's
    /// absence" in the HTTP contract), as one change: every slot of the
    /// doctor's date closes, and every active token of them is cancelled
    /// with reason `DOCTOR_ABSENT`, except a consultation in progress,
    /// which is left to finish. Nobody is promoted: there is no doctor to
    /// see them. A second absence finds nothing open and nothing to
    /// cancel, and changes nothing.
    ///
    /// O(s + c + k log n) for s slots, c seats already used by completed
    /// consultations and k tokens cancelled: a slot's seat holders are
    /// one ordered set, completed ones included.
    pub fn declare_absence(
        &mut self,
        doctor: &DoctorId,
        date: Date,
        ctx: &Context,
    ) -> Result<Absence, EngineError> {
        if !self.has_doctor(doctor) {
            return Err(EngineError::DoctorNotFound(doctor.clone()));
        }
        let slot_keys: Vec<u32> = self
            .doctor_days
            .get(&(doctor.clone(), date))
            .map(|day| {
                self.days[*day as usize]
                    .slots_by_start
                    .values()
                    .map(|(_, key)| *key)
                    .collect()
            })
            .unwrap_or_default();
        if slot_keys.is_empty() {
            return Err(EngineError::NoSlotOnDate {
                doctor: doctor.clone(),
                date,
            });
        }

        // Nothing below can fail: the absence is recorded.
        let mut slots = Vec::with_capacity(slot_keys.len());
        let mut in_consultation = None;
        for slot_key in slot_keys {
            let slot = &self.slots[slot_key as usize];
            let closed = !slot.closed;
            let cancelled: Vec<TokenKey> = slot
                .allocated_entries()
                .chain(slot.waitlist_entries())
                .map(|(_, key)| *key)
                .filter(|key| {
                    let status = self.tokens[*key].status;
                    if status == Status::InConsultation {
                        in_consultation = Some(*key);
                    }
                    status.is_active() && status != Status::InConsultation
                })
                .collect();
            if closed {
                self.mark_closed(slot_key, Nanos::of(ctx.at));
            }
            let changes = cancelled
                .into_iter()
                .map(|key| self.transition(key, Status::Cancelled, Reason::DoctorAbsent, ctx))
                .collect();
            self.check_after_mutation(slot_key);
            slots.push(AbsentSlot {
                closed,
                outcome: SlotOutcome {
                    slot: self.slots[slot_key as usize].summary(),
                    changes,
                },
            });
        }
        Ok(Absence {
            doctor: doctor.clone(),
            date,
            slots,
            in_consultation: in_consultation.map(|key| self.view(key, ctx.at)),
        })
    }

    /// Does what the clock has made due by `ctx.at`: closes the slots
    /// whose closing time has come, then ends the days that are over.
    /// What is due follows from the state alone, so work that fell due
    /// while nobody called this is done by the next call. A day's end
    /// that finds nothing active changes nothing and is not listed.
    pub fn tick(&mut self, ctx: &Context) -> Vec<Timed> {
        let now = Nanos::of(ctx.at).0;
        let mut done = Vec::new();
        // A slot closes by the end of its date at the latest, so every
        // slot whose day ends now is closed before its day's end is taken.
        while let Some(&(closes_at, key)) = self.closings.first() {
            if closes_at > now {
                break;
            }
            done.push(Timed::Closed(self.close(key, ctx)));
        }
        while let Some(&(ends_at, key)) = self.day_ends.first() {
            if ends_at > now {
                break;
            }
            self.day_ends.remove(&(ends_at, key));
            let outcome = self.end_day(key, ctx);
            if !outcome.changes.is_empty() {
                done.push(Timed::DayEnded(outcome));
            }
        }
        done
    }

    /// Sets a stored slot's closing as it was saved: when it closes (or
    /// closed, when `closed`). Storage that keeps no closing time for open
    /// slots leaves them as created.
    pub fn restore_closing(
        &mut self,
        id: &SlotId,
        at: Timestamp,
        closed: bool,
    ) -> Result<(), RestoreError> {
        let Some(&key) = self.slot_keys.get(id) else {
            return Err(RestoreError(format!("closing of unknown slot {id}")));
        };
        let Some(at) = Nanos::try_of(at) else {
            return Err(RestoreError(format!("slot {id}: a time outside 1678-2261")));
        };
        if closed {
            self.mark_closed(key, at);
        } else {
            let slot = &mut self.slots[key as usize];
            self.closings.remove(&(slot.closes_at.0, key));
            slot.closes_at = at;
            self.closings.insert((at.0, key));
        }
        Ok(())
    }

    /// Marks a slot closed at `at`: out of the closing schedule, its
    /// closing time now the moment it closed.
    fn mark_closed(&mut self, key: u32, at: Nanos) {
        let slot = &mut self.slots[key as usize];
        self.closings.remove(&(slot.closes_at.0, key));
        slot.closed = true;
        slot.closes_at = at;
    }

    /// The refusal of a change to a closed slot.
    fn slot_closed(&self, key: u32) -> EngineError {
        let slot = &self.slots[key as usize];
        EngineError::SlotClosed {
            slot: slot.id.clone(),
            closed_at: slot.closes_at.timestamp(),
        }
    }

    /// Refuses a change to a slot that is closed, or whose closing time
    /// has come though the clock's work has not been done yet.
    fn refuse_closed(&self, slot_key: u32, at: Timestamp) -> Result<(), EngineError> {
        let slot = &self.slots[slot_key as usize];
        if slot.closed || slot.closes_at.0 <= Nanos::of(at).0 {
            return Err(self.slot_closed(slot_key));
        }
        Ok(())
    }

    /// Closes a slot: its absent patients become no-shows, the seats so
    /// freed go to waitlisted patients who are in the hall, and everyone
    /// still waitlisted expires. Patients checked in, called or with the
    /// doctor stay: the doctor still sees them.
    fn close(&mut self, slot_key: u32, ctx: &Context) -> SlotOutcome {
        // The patients a seat is held for who are not in the hall: booked
        // and never arrived, or called and away.
        let absent: Vec<TokenKey> = self.slots[slot_key as usize]
            .allocated_entries()
            .map(|(_, key)| *key)
            .filter(|key| self.tokens[*key].status.is_awaited())
            .collect();
        let mut changes = Vec::new();
        for key in absent {
            changes.push(self.transition(key, Status::NoShow, Reason::NoShow, ctx));
        }
        while self.slots[slot_key as usize].has_free_seat() {
            let in_the_hall = self.slots[slot_key as usize]
                .waitlist_entries()
                .map(|(_, key)| *key)
                .find(|key| self.tokens[*key].checked_in_at.is_some());
            let Some(key) = in_the_hall else {
                break;
            };
            changes.push(self.transition(key, Status::CheckedIn, Reason::Promoted, ctx));
        }
        let waiting: Vec<TokenKey> = self.slots[slot_key as usize]
            .waitlist_entries()
            .map(|(_, key)| *key)
            .collect();
        for key in waiting {
            changes.push(self.transition(key, Status::Expired, Reason::SlotClosed, ctx));
        }
        self.mark_closed(slot_key, Nanos::of(ctx.at));
        self.check_after_mutation(slot_key);
        SlotOutcome {
            slot: self.slots[slot_key as usize].summary(),
            changes,
        }
    }

    /// Ends a slot's day: no token stays active after its date.
    fn end_day(&mut self, slot_key: u32, ctx: &Context) -> SlotOutcome {
        let slot = &self.slots[slot_key as usize];
        let active: Vec<TokenKey> = slot
            .allocated_entries()
            .chain(slot.waitlist_entries())
            .map(|(_, key)| *key)
            .filter(|key| self.tokens[*key].status.is_active())
            .collect();
        let mut changes = Vec::new();
        for key in active {
            let to = self.tokens[key]
                .status
                .at_day_end()
                .expect("an active status has one at the day's end");
            changes.push(self.transition(key, to, Reason::DayEnded, ctx));
        }
        self.check_after_mutation(slot_key);
        SlotOutcome {
            slot: self.slots[slot_key as usize].summary(),
            changes,
        }
    }

    /// Books a token. See the allocation rules in the HTTP contract.
    pub fn book(&mut self, request: BookRequest, ctx: &Context) -> Result<Outcome, EngineError> {
        let slot_key = self.slot_key(&request.slot)?;
        if self.find_token(&request.token).is_some() {
            return Err(EngineError::TokenIdInUse(request.token));
        }
        self.refuse_closed(slot_key, ctx.at)?;
        let slot = &self.slots[slot_key as usize];
        if let Some(existing) = slot.active_token_of(&request.patient, |k| &self.tokens[k].patient)
        {
            let existing = self.tokens[existing].id;
            return Err(EngineError::DuplicateBooking { existing });
        }
        let priority = request.source.priority();
        let (decision, victim) = if slot.has_free_seat() {
            (Decision::Allocated, None)
        } else if priority == Priority::EMERGENCY {
            (Decision::Overbooked, None)
        } else if let Some(victim) = slot.bump_victim(priority) {
            (Decision::BumpedLower, Some(victim))
        } else {
            (Decision::Waitlisted, None)
        };
        let joins_waitlist = matches!(decision, Decision::BumpedLower | Decision::Waitlisted);
        if joins_waitlist && slot.waitlist_count() >= self.limits.waitlist_max {
            return Err(self.waitlist_full(slot_key));
        }
        if decision == Decision::Overbooked && slot.overbooked_by() >= self.limits.overbook_max {
            return Err(EngineError::OverbookFull {
                slot: slot.id.clone(),
                limit: self.limits.overbook_max,
            });
        }

        // Nothing below can fail: the request is accepted.
        let mut changes = Vec::new();
        if let Some(victim) = victim {
            changes.push(self.transition(victim, Status::Waitlisted, Reason::Bumped, ctx));
        }
        let token = self.create_token(request, slot_key, decision, ctx);
        Ok(self.finish(token, changes, ctx.at))
    }

    /// Takes an action on a token (see the actions table of the HTTP
    /// contract); a freed seat promotes the head of the waitlist unless it
    /// absorbs overbooking. When several refusals apply, the first of
    /// invalid transition, not today, doctor busy wins.
    pub fn act(&mut self, id: Uuid, action: Action, ctx: &Context) -> Result<Outcome, EngineError> {
        let key = self.token_key(id)?;
        let token = &self.tokens[key];
        let from = token.status;
        let (mut to, mut reason) = action
            .transition(from, token.checked_in_at.is_some())
            .ok_or(EngineError::InvalidTransition { from, action })?;
        let slot_key = token.slot;
        let slot = &self.slots[slot_key as usize];
        if action.only_on_the_day() && slot.date != ctx.today {
            return Err(EngineError::NotToday {
                action,
                date: slot.date,
            });
        }
        if to.is_with_doctor() && !from.is_with_doctor() {
            if let Some(current) = self.days[slot.doctor_day as usize].current {
                let current = self.tokens[current].id;
                return Err(EngineError::DoctorBusy { current });
            }
        }

        // Nothing below can fail: the action is taken.
        if action == Action::Skip {
            let token = &mut self.tokens[key];
            token.skips = token.skips.saturating_add(1);
            if token.skips >= self.limits.max_skips {
                (to, reason) = (Status::NoShow, Reason::NoShow);
            }
        }
        self.transition(key, to, reason, ctx);
        let mut changes = Vec::new();
        self.promote_while_seats_free(slot_key, ctx, &mut changes);
        Ok(self.finish(key, changes, ctx.at))
    }

    /// Calls the first checked-in token of the doctor's slots dated today,
    /// in call order.
    pub fn call_next(&mut self, doctor: &DoctorId, ctx: &Context) -> Result<Outcome, EngineError> {
        if !self.has_doctor(doctor) {
            return Err(EngineError::DoctorNotFound(doctor.clone()));
        }
        let Some(&day) = self.doctor_days.get(&(doctor.clone(), ctx.today)) else {
            return Err(EngineError::QueueEmpty);
        };
        let day = &self.days[day as usize];
        if let Some(current) = day.current {
            let current = self.tokens[current].id;
            return Err(EngineError::DoctorBusy { current });
        }
        let Some((_, &first)) = day.call_queue.first_key_value() else {
            return Err(EngineError::QueueEmpty);
        };
        self.act(self.tokens[first].id, Action::Call, ctx)
    }

    /// Changes a slot's capacity. Growing promotes from the waitlist;
    /// shrinking demotes the least important, latest non-emergency tokens.
    pub fn set_capacity(
        &mut self,
        slot: &SlotId,
        capacity: Capacity,
        ctx: &Context,
    ) -> Result<SlotOutcome, EngineError> {
        let slot_key = self.slot_key(slot)?;
        self.refuse_closed(slot_key, ctx.at)?;
        let slot = &self.slots[slot_key as usize];
        let demotions = slot
            .allocated_count()
            .saturating_sub(capacity.get())
            .min(slot.non_emergency_bumpable());
        if slot.waitlist_count() + demotions > self.limits.waitlist_max {
            return Err(self.waitlist_full(slot_key));
        }

        self.slots[slot_key as usize].capacity = capacity.get();
        let mut changes = Vec::new();
        for _ in 0..demotions {
            let victim = self.slots[slot_key as usize]
                .demotion_candidate()
                .expect("a non-emergency token remains for every planned demotion");
            changes.push(self.transition(victim, Status::Waitlisted, Reason::CapacityReduced, ctx));
        }
        self.promote_while_seats_free(slot_key, ctx, &mut changes);
        self.check_after_mutation(slot_key);
        Ok(SlotOutcome {
            slot: self.slots[slot_key as usize].summary(),
            changes,
        })
    }

    /// A token as it stands at `at` (which its call estimate is made for).
    pub fn token(&self, id: Uuid, at: Timestamp) -> Option<TokenView> {
        let key = self.find_token(&id)?;
        Some(self.view(key, at))
    }

    /// A token's status, without building its view.
    pub fn token_status(&self, id: Uuid) -> Option<Status> {
        self.find_token(&id).map(|key| self.tokens[key].status)
    }

    /// A token's history, oldest first.
    pub fn history(&self, id: Uuid) -> Option<Vec<HistoryEntry>> {
        let key = self.find_token(&id)?;
        Some(self.tokens[key].full_history())
    }

    pub fn slot_summary(&self, id: &SlotId) -> Option<SlotSummary> {
        let key = *self.slot_keys.get(id)?;
        Some(self.slots[key as usize].summary())
    }

    pub fn slot(&self, id: &SlotId, at: Timestamp) -> Option<SlotDetail> {
        let key = *self.slot_keys.get(id)?;
        let slot = &self.slots[key as usize];
        Some(SlotDetail {
            summary: slot.summary(),
            allocated: slot
                .allocated_entries()
                .map(|(_, t)| self.view(*t, at))
                .collect(),
            waitlist: slot
                .waitlist_entries()
                .map(|(_, t)| self.view(*t, at))
                .collect(),
        })
    }

    /// The tokens of a slot that ended without a seat (cancelled, no-shows,
    /// expired), in the order they ended; `None` for an unknown slot.
    pub fn ended_tokens(&self, id: &SlotId, at: Timestamp) -> Option<Vec<TokenView>> {
        let key = *self.slot_keys.get(id)?;
        Some(
            self.slots[key as usize]
                .ended
                .iter()
                .map(|token| self.view(*token, at))
                .collect(),
        )
    }

    /// Whether the doctor has a slot on any date.
    pub fn has_doctor(&self, doctor: &DoctorId) -> bool {
        let from = (doctor.clone(), Date::MIN, Time::MIN, SlotId::lowest());
        self.doctor_schedule
            .range(from..)
            .next()
            .is_some_and(|((of, _, _, _), _)| of == doctor)
    }

    /// The doctor's day on `date`, over all of the doctor's slots; `None`
    /// when the doctor has no slot on any date. Listing is O(n log n) in
    /// the day's tokens, proportional to the answer.
    pub fn doctor_queue(
        &self,
        doctor: &DoctorId,
        date: Date,
        at: Timestamp,
    ) -> Option<DoctorQueue> {
        if !self.has_doctor(doctor) {
            return None;
        }
        let mut queue = DoctorQueue::empty(doctor.clone(), date);
        let Some(&day) = self.doctor_days.get(&(doctor.clone(), date)) else {
            return Some(queue);
        };
        let day = &self.days[day as usize];
        queue.current = day.current.map(|key| self.view(key, at));
        queue.call_queue = day
            .call_queue
            .values()
            .map(|key| self.view(*key, at))
            .collect();
        let mut not_arrived = Vec::new();
        let mut skipped = Vec::new();
        for &(_, slot_key) in day.slots_by_start.values() {
            let slot = &self.slots[slot_key as usize];
            for (_, &key) in slot.allocated_entries() {
                let token = &self.tokens[key];
                let place = CallPlace::of(token, slot).key;
                match token.status {
                    Status::Allocated => not_arrived.push((place, key)),
                    Status::Skipped => skipped.push((place, key)),
                    _ => {}
                }
            }
            queue
                .waitlist
                .extend(slot.waitlist_entries().map(|(_, key)| self.view(*key, at)));
        }
        not_arrived.sort_unstable();
        skipped.sort_unstable();
        queue.not_arrived = not_arrived
            .iter()
            .map(|(_, key)| self.view(*key, at))
            .collect();
        queue.skipped = skipped.iter().map(|(_, key)| self.view(*key, at)).collect();
        queue.completed = day.finals[status_index(Status::Completed)];
        queue.no_show = day.finals[status_index(Status::NoShow)];
        queue.cancelled = day.finals[status_index(Status::Cancelled)];
        queue.expired = day.finals[status_index(Status::Expired)];
        Some(queue)
    }

    /// The waiting-hall board for `date`: the given doctors, or every
    /// doctor with a slot that day, by doctor id.
    pub fn board(&self, doctors: Option<&[DoctorId]>, date: Date) -> Vec<BoardEntry> {
        let doctors: std::collections::BTreeSet<DoctorId> = match doctors {
            Some(doctors) => doctors.iter().cloned().collect(),
            None => self
                .schedule
                .range((date, Time::MIN, SlotId::lowest())..)
                .take_while(|((of, _, _), _)| *of == date)
                .map(|(_, key)| self.slots[*key as usize].doctor.clone())
                .collect(),
        };
        doctors
            .into_iter()
            .map(|doctor| {
                let day = self
                    .doctor_days
                    .get(&(doctor.clone(), date))
                    .map(|day| &self.days[*day as usize]);
                BoardEntry {
                    now_serving: day.and_then(|day| day.current).map(|key| {
                        let token = &self.tokens[key];
                        (token.number, token.status)
                    }),
                    next: day
                        .map(|day| {
                            day.call_queue
                                .values()
                                .take(5)
                                .map(|key| self.tokens[*key].number)
                                .collect()
                        })
                        .unwrap_or_default(),
                    waiting: day.map_or(0, |day| len_u32(day.call_queue.len())),
                    doctor,
                }
            })
            .collect()
    }

    /// How the doctor's day has gone, for estimates; the default for a day
    /// without slots.
    pub fn pace(&self, doctor: &DoctorId, date: Date) -> Pace {
        self.doctor_days
            .get(&(doctor.clone(), date))
            .map(|day| self.days[*day as usize].pace)
            .unwrap_or_default()
    }

    /// Continues the pace of a doctor's day in an engine that holds only
    /// part of the state (its tokens were loaded without their history).
    pub fn resume_pace(&mut self, doctor: &DoctorId, date: Date, pace: Pace) {
        if let Some(day) = self.doctor_days.get(&(doctor.clone(), date)) {
            self.days[*day as usize].pace = pace;
        }
    }

    /// One page of slots by date, start time and id, optionally for one
    /// doctor or date, in O(log n + page): each filter and the cursor are
    /// a range of an ordered index. An `after` slot that does not exist is
    /// refused.
    pub fn slots(&self, query: &SlotQuery) -> Result<SlotPage, EngineError> {
        self.slots_since(query, Date::MIN)
    }

    /// [`Engine::slots`] without the slots dated before `since`.
    pub fn slots_since(&self, query: &SlotQuery, since: Date) -> Result<SlotPage, EngineError> {
        // Pages start after `from`. An id sorts after the lowest one, so a
        // date's own slots all follow (date, 00:00, lowest).
        let mut from = (
            query.date.unwrap_or(since).max(since),
            Time::MIN,
            SlotId::lowest(),
        );
        if let Some(after) = &query.after {
            let slot = &self.slots[self.slot_key(after)? as usize];
            from = from.max((slot.date, slot.start, slot.id.clone()));
        }
        let on_date = |slot_date: &Date| query.date.is_none_or(|date| *slot_date == date);
        let keys: Vec<u32> = match &query.doctor {
            Some(doctor) => {
                let from = (doctor.clone(), from.0, from.1, from.2);
                self.doctor_schedule
                    .range((Bound::Excluded(from), Bound::Unbounded))
                    .take_while(|((of, date, _, _), _)| of == doctor && on_date(date))
                    .map(|(_, key)| *key)
                    .take(query.limit.saturating_add(1))
                    .collect()
            }
            None => self
                .schedule
                .range((Bound::Excluded(from), Bound::Unbounded))
                .take_while(|((date, _, _), _)| on_date(date))
                .map(|(_, key)| *key)
                .take(query.limit.saturating_add(1))
                .collect(),
        };
        let more = keys.len() > query.limit;
        Ok(SlotPage {
            slots: keys
                .iter()
                .take(query.limit)
                .map(|key| self.slots[*key as usize].summary())
                .collect(),
            more,
        })
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// The earliest date of a slot the engine holds.
    pub fn first_date(&self) -> Option<Date> {
        self.schedule
            .first_key_value()
            .map(|((date, _, _), _)| *date)
    }

    /// Lets go of the slots dated before `date` whose day is over (closed,
    /// their day's end handled, nobody active), with their tokens; storage
    /// keeps them. Returns how many slots went. A slot of an older date
    /// that is not over yet stays, so no active token ever leaves.
    ///
    /// The engine's indexes point into its slot and token lists by
    /// position, so rather than punch holes in them the engine is built
    /// again from the slots and tokens it keeps, as a restart would build
    /// it: O(kept tokens), once a day.
    pub fn evict_before(&mut self, date: Date) -> Result<usize, RestoreError> {
        if self.first_date().is_none_or(|first| first >= date) {
            return Ok(0);
        }
        let pending: BTreeSet<u32> = self.day_ends.iter().map(|(_, key)| *key).collect();
        let keep: Vec<bool> = (0..self.slots.len())
            .map(|key| {
                let slot = &self.slots[key];
                slot.date >= date
                    || !slot.closed
                    || pending.contains(&(key as u32))
                    || slot.active_patient_count() > 0
            })
            .collect();
        let evicted = keep.iter().filter(|kept| !**kept).count();
        if evicted == 0 {
            return Ok(0);
        }
        let mut kept = Engine::new(self.limits);
        kept.zone = self.zone.clone();
        for (key, slot) in self.slots.iter().enumerate().filter(|(key, _)| keep[*key]) {
            let spec = SlotSpec {
                id: slot.id.clone(),
                doctor: slot.doctor.clone(),
                date: slot.date,
                start: slot.start,
                end: slot.end,
                capacity: Capacity::new(slot.capacity)
                    .ok_or_else(|| RestoreError(format!("slot {}: capacity", slot.id)))?,
            };
            kept.create_slot(spec)
                .map_err(|error| RestoreError(error.to_string()))?;
            kept.restore_closing(&slot.id, slot.closes_at.timestamp(), slot.closed)?;
            if !pending.contains(&(key as u32)) {
                // Its day's end was handled: it is not due again.
                let key = kept.slots.len() as u32 - 1;
                let day_end = kept.day_end(slot.date).0;
                kept.day_ends.remove(&(day_end, key));
            }
        }
        // The arena holds tokens in the order they were made, which is
        // sequence order, as restoring needs.
        for (_, token) in self.tokens.iter() {
            if !keep[token.slot as usize] {
                continue;
            }
            kept.restore_token(self.record_of(token, token.full_history()))?;
        }
        kept.next_sequence = kept.next_sequence.max(self.next_sequence);
        // Token numbers are never reused: a kept day goes on counting from
        // where it was, whichever of its tokens were kept.
        for (day, index) in &self.doctor_days {
            if let Some(&into) = kept.doctor_days.get(day) {
                let issued = self.days[*index as usize].numbers_issued;
                let into = &mut kept.days[into as usize];
                into.numbers_issued = into.numbers_issued.max(issued);
            }
        }
        kept.check_invariants()?;
        *self = kept;
        Ok(evicted)
    }

    /// `token` as a record to restore, with `history`.
    fn record_of(&self, token: &Token, history: Vec<HistoryEntry>) -> TokenRecord {
        TokenRecord {
            id: token.id,
            sequence: token.sequence,
            number: token.number,
            patient: token.patient.clone(),
            slot: self.slots[token.slot as usize].id.clone(),
            source: token.source,
            status: token.status,
            created_at: token.created_at.timestamp(),
            updated_at: token.updated_at.timestamp(),
            checked_in_at: token.checked_in_at.map(Nanos::timestamp),
            skips: token.skips,
            history,
        }
    }

    /// Puts a stored token back. Tokens must come in ascending sequence
    /// order, which is arrival order, so queues and positions come out as
    /// they were. Call [`Engine::check_invariants`] when all are back.
    pub fn restore_token(&mut self, record: TokenRecord) -> Result<(), RestoreError> {
        let fail = |what: String| Err(RestoreError(format!("token {}: {what}", record.id)));
        let Some(&slot_key) = self.slot_keys.get(&record.slot) else {
            return fail(format!("unknown slot {}", record.slot));
        };
        if record.sequence < self.next_sequence {
            return fail("sequence numbers are not ascending".into());
        }
        if record.sequence >= slot::QueueKey::SEQUENCE_LIMIT {
            return fail("sequence number out of range".into());
        }
        if self.find_token(&record.id).is_some() {
            return fail("stored twice".into());
        }
        let slot = &mut self.slots[slot_key as usize];
        if record.status.is_active()
            && slot
                .active_token_of(&record.patient, |k| &self.tokens[k].patient)
                .is_some()
        {
            return fail("patient holds two active tokens in the slot".into());
        }
        if record.status.is_with_doctor() && self.days[slot.doctor_day as usize].current.is_some() {
            return fail("a second token with the doctor".into());
        }
        let (Some(created_at), Some(updated_at)) = (
            Nanos::try_of(record.created_at),
            Nanos::try_of(record.updated_at),
        ) else {
            return fail("a time outside 1678-2261".into());
        };
        let day = &mut self.days[slot.doctor_day as usize];
        let mut history = record.history;
        let (mut checked_in_at, mut skips) = (record.checked_in_at, record.skips);
        let creation = match history.first() {
            Some(first) if first.from.is_none() => {
                if first.at != record.created_at {
                    return fail("its creation is not at its creation time".into());
                }
                let first = history.remove(0);
                Some(Creation {
                    status: first.to,
                    reason: first.reason,
                    actor: first.actor,
                })
            }
            _ => None,
        };
        if creation.is_some() {
            // A full history says what the record's own fields would.
            (checked_in_at, skips) = (None, 0);
            let mut since = record.created_at;
            for entry in &history {
                if entry.reason == Reason::CheckedIn && checked_in_at.is_none() {
                    checked_in_at = Some(entry.at);
                }
                if entry.reason == Reason::Skipped {
                    skips = skips.saturating_add(1);
                }
                if let (Some(from), Some(at), Some(since)) =
                    (entry.from, Nanos::try_of(entry.at), Nanos::try_of(since))
                {
                    record_pace(&mut day.pace, from, entry.to, at, since);
                }
                since = entry.at;
            }
        }
        let checked_in_at = match checked_in_at.map(Nanos::try_of) {
            None => None,
            Some(Some(at)) => Some(at),
            Some(None) => return fail("a time outside 1678-2261".into()),
        };
        day.numbers_issued = day.numbers_issued.max(record.number);
        self.next_sequence = record.sequence + 1;
        let token = Token {
            id: record.id,
            sequence: record.sequence,
            number: record.number,
            arrival: slot.next_arrival(record.source.priority()),
            patient: record.patient,
            slot: slot_key,
            source: record.source,
            status: record.status,
            created_at,
            updated_at,
            creation,
            history,
            checked_in_at,
            skips,
        };
        let active = token.status.is_active();
        let key = self.push_token(token);
        if active {
            self.activate(key);
        }
        self.enter_status(key);
        Ok(())
    }

    /// Brings tokens to their stored state, in an engine that holds part
    /// of the stored state (one slot's active and seated tokens, say) and
    /// has fallen behind it: `records` are the tokens that changed, in any
    /// order. A token the engine holds takes the record's status, times,
    /// first check-in and skips, keeping its place in its queues; one it
    /// does not hold is restored as by [`Engine::restore_token`], after
    /// every token it holds, unless it has ended without a seat, as such
    /// an engine holds no such token. On an error the engine may be half
    /// brought up, and is to be dropped. Call [`Engine::check_invariants`]
    /// in tests when all are in.
    pub fn refresh_tokens(&mut self, mut records: Vec<TokenRecord>) -> Result<(), RestoreError> {
        // What a change releases (a patient's active token, the doctor's
        // current patient) goes in before what another change takes, since
        // the engine refuses two holders at any moment. A held token takes
        // only by going to the doctor (an ended token never comes back),
        // and may release the doctor while it stays active, as a skip
        // does. New tokens release nothing the engine holds and go in
        // sequence order, all after the releases, whatever they became: a
        // token completed since may come after one still waiting.
        records.sort_by_cached_key(|record| {
            let takes = match self.find_token(&record.id) {
                Some(key) => {
                    record.status.is_with_doctor() && !self.tokens[key].status.is_with_doctor()
                }
                None => true,
            };
            (takes, record.sequence)
        });
        records
            .into_iter()
            .try_for_each(|record| self.refresh_token(record))
    }

    /// One record of [`Engine::refresh_tokens`]; one the engine cannot take
    /// is refused and leaves it as it was.
    fn refresh_token(&mut self, record: TokenRecord) -> Result<(), RestoreError> {
        let Some(key) = self.find_token(&record.id) else {
            if !record.status.is_active() && !record.status.holds_seat() {
                return Ok(());
            }
            return self.restore_token(record);
        };
        let fail = |what: &str| Err(RestoreError(format!("token {}: {what}", record.id)));
        let token = &self.tokens[key];
        let Some(updated_at) = Nanos::try_of(record.updated_at) else {
            return fail("a time outside 1678-2261");
        };
        let checked_in_at = match record.checked_in_at.map(Nanos::try_of) {
            None => None,
            Some(Some(at)) => Some(at),
            Some(None) => return fail("a time outside 1678-2261"),
        };
        if token.status == record.status
            && token.skips == record.skips
            && token.checked_in_at == checked_in_at
        {
            return Ok(());
        }
        if token.status.is_final() {
            return fail("an ended token changed");
        }
        if self.slot_keys.get(&record.slot) != Some(&token.slot) {
            return fail("moved to another slot");
        }
        let slot = &self.slots[token.slot as usize];
        let (was_active, active) = (token.status.is_active(), record.status.is_active());
        if active
            && !was_active
            && slot
                .active_token_of(&token.patient, |k| &self.tokens[k].patient)
                .is_some()
        {
            return fail("patient holds two active tokens in the slot");
        }
        let current = self.days[slot.doctor_day as usize].current;
        if record.status.is_with_doctor() && current.is_some_and(|current| current != key) {
            return fail("a second token with the doctor");
        }
        self.leave_status(key);
        let token = &mut self.tokens[key];
        let slot = &mut self.slots[token.slot as usize];
        if was_active && !active {
            slot.deactivate(&token.patient, key);
        }
        token.status = record.status;
        token.updated_at = updated_at;
        token.checked_in_at = checked_in_at;
        token.skips = record.skips;
        if active && !was_active {
            self.activate(key);
        }
        self.enter_status(key);
        Ok(())
    }

    /// Takes back the booking of token `id`, which this engine made last
    /// and storage never wrote (a copy's decision that turned out stale):
    /// the token goes as if it had never been made, so that its request
    /// can be decided again with the same id. The tokens the booking moved
    /// (a bumped one) stay as it left them: the caller brings them back to
    /// their stored state with [`Engine::refresh_tokens`]. Refused, leaving
    /// the engine as it was, for any token but an unchanged latest one.
    pub fn take_back(&mut self, id: Uuid) -> Result<(), RestoreError> {
        let fail = |what: &str| Err(RestoreError(format!("token {id}: {what}")));
        let Some(key) = self.find_token(&id) else {
            return fail("unknown");
        };
        if key as usize + 1 != self.tokens.len() {
            return fail("not the latest token made");
        }
        let token = &self.tokens[key];
        if !token.history.is_empty() || !token.status.is_active() {
            return fail("changed since it was made");
        }
        let (sequence, number, priority, arrival) = (
            token.sequence,
            token.number,
            token.source.priority(),
            token.arrival,
        );
        self.leave_status(key);
        let token = &self.tokens[key];
        let slot = &mut self.slots[token.slot as usize];
        slot.deactivate(&token.patient, key);
        assert!(
            slot.give_back_arrival(priority, arrival),
            "the latest token holds the latest arrival of its priority"
        );
        let day = &mut self.days[slot.doctor_day as usize];
        if day.numbers_issued == number {
            day.numbers_issued = number - 1;
        }
        assert!(self.token_keys.remove(&id, key), "the token is indexed");
        self.tokens.pop();
        self.next_sequence = sequence;
        Ok(())
    }

    /// Continues the counters of an engine that holds only part of the
    /// state, such as one slot's active tokens loaded from a shared
    /// database: the next arrival sequence, and how many token numbers the
    /// slot's doctor has issued on its date.
    pub fn resume_counters(
        &mut self,
        slot: &SlotId,
        next_sequence: u64,
        numbers_issued: u32,
    ) -> Result<(), EngineError> {
        let slot_key = self.slot_key(slot)?;
        let slot = &self.slots[slot_key as usize];
        let day = &mut self.days[slot.doctor_day as usize];
        day.numbers_issued = day.numbers_issued.max(numbers_issued);
        self.next_sequence = self.next_sequence.max(next_sequence);
        Ok(())
    }

    /// Checks every invariant of every slot and token, in O(n). Runs after
    /// a restore and in tests; mutations check only what they touched.
    pub fn check_invariants(&self) -> Result<(), RestoreError> {
        for key in 0..self.slots.len() {
            self.check_slot(key as u32)?;
        }
        let mut active = 0;
        for (key, token) in self.tokens.iter() {
            if self.find_token(&token.id) != Some(key) {
                return Err(RestoreError(format!("token {} is not indexed", token.id)));
            }
            active += usize::from(token.status.is_active());
        }
        let queued: usize = self.slots.iter().map(Slot::active_patient_count).sum();
        if active != queued {
            return Err(RestoreError(format!(
                "{active} active tokens but {queued} queued"
            )));
        }
        Ok(())
    }

    fn slot_key(&self, id: &SlotId) -> Result<u32, EngineError> {
        self.slot_keys
            .get(id)
            .copied()
            .ok_or_else(|| EngineError::SlotNotFound(id.clone()))
    }

    fn find_token(&self, id: &Uuid) -> Option<TokenKey> {
        self.token_keys.get(id, |k| &self.tokens[k].id)
    }

    fn token_key(&self, id: Uuid) -> Result<TokenKey, EngineError> {
        self.find_token(&id).ok_or(EngineError::TokenNotFound(id))
    }

    fn waitlist_full(&self, slot_key: u32) -> EngineError {
        EngineError::WaitlistFull {
            slot: self.slots[slot_key as usize].id.clone(),
            limit: self.limits.waitlist_max,
        }
    }

    fn create_token(
        &mut self,
        request: BookRequest,
        slot_key: u32,
        decision: Decision,
        ctx: &Context,
    ) -> TokenKey {
        let slot = &mut self.slots[slot_key as usize];
        let day = &mut self.days[slot.doctor_day as usize];
        day.numbers_issued += 1;
        let status = decision.status();
        let now = Nanos::of(ctx.at);
        let token = Token {
            id: request.token,
            sequence: self.next_sequence,
            number: day.numbers_issued,
            arrival: slot.next_arrival(request.source.priority()),
            patient: request.patient,
            slot: slot_key,
            source: request.source,
            status,
            created_at: now,
            updated_at: now,
            creation: Some(Creation {
                status,
                reason: decision.reason(),
                actor: ctx.actor.clone(),
            }),
            history: Vec::new(),
            checked_in_at: None,
            skips: 0,
        };
        self.next_sequence += 1;
        let key = self.push_token(token);
        self.activate(key);
        self.enter_status(key);
        key
    }

    fn push_token(&mut self, token: Token) -> TokenKey {
        let key = self.tokens.push(token);
        let tokens = &self.tokens;
        let indexed = self.token_keys.insert(key, |k| &tokens[k].id);
        assert!(indexed.is_ok(), "a token id is indexed twice");
        key
    }

    fn activate(&mut self, key: TokenKey) {
        let slot = &mut self.slots[self.tokens[key].slot as usize];
        slot.activate(key, |k| &self.tokens[k].patient);
    }

    /// Puts a token into every queue and count its status calls for, as
    /// the status's properties say.
    fn enter_status(&mut self, key: TokenKey) {
        self.place_status(key, true);
    }

    /// Takes a token out of every queue and count its status put it in.
    fn leave_status(&mut self, key: TokenKey) {
        self.place_status(key, false);
    }

    fn place_status(&mut self, key: TokenKey, enter: bool) {
        let token = &self.tokens[key];
        let slot = &mut self.slots[token.slot as usize];
        let status = token.status;
        if status.holds_seat() {
            if enter {
                slot.insert_allocated(token.queue_key(), key, status.is_final());
            } else {
                assert!(!status.is_final(), "a final token never changes");
                slot.remove_allocated(token.queue_key());
            }
        }
        if status.is_waiting() {
            if enter {
                slot.insert_waitlisted(token.queue_key(), token.arrival, key);
            } else {
                slot.remove_waitlisted(token.queue_key(), token.arrival);
            }
        }
        if token.is_bumpable() {
            if enter {
                slot.insert_bumpable(token.bump_key(), key);
            } else {
                slot.remove_bumpable(token.bump_key());
            }
        }
        if status.is_awaited() {
            slot.set_awaited(token.source.priority(), token.arrival, enter);
        }
        let day = &mut self.days[slot.doctor_day as usize];
        if status.is_callable() {
            slot.set_checked_in(token.source.priority(), token.arrival, enter);
            let place = CallPlace::of(token, slot);
            day.call_buckets.set(place.bucket, enter);
            if enter {
                day.call_queue.insert(place.key, key);
            } else {
                day.call_queue.remove(&place.key);
            }
            if place.emergency {
                let count = day.emergency_starts.entry(place.start).or_default();
                if enter {
                    *count += 1;
                } else {
                    *count -= 1;
                    if *count == 0 {
                        day.emergency_starts.remove(&place.start);
                    }
                }
            }
        }
        if status.is_with_doctor() {
            if enter {
                assert!(day.current.is_none(), "a doctor with two patients at once");
                day.current = Some(key);
            } else {
                day.current = None;
            }
        }
        if status.is_final() {
            assert!(enter, "a final token never changes");
            day.finals[status_index(status)] += 1;
            if !status.holds_seat() {
                slot.ended.push(key);
            }
        }
    }

    /// Moves an active token to `to` and records it in its history. This is
    /// the only place a token's status changes after creation.
    fn transition(&mut self, key: TokenKey, to: Status, reason: Reason, ctx: &Context) -> Change {
        let from = self.tokens[key].status;
        assert!(
            !from.is_final(),
            "final token {} cannot become {to:?}",
            self.tokens[key].id
        );
        self.leave_status(key);
        let at = Nanos::of(ctx.at);
        let token = &mut self.tokens[key];
        let slot = &mut self.slots[token.slot as usize];
        if !to.is_active() {
            slot.deactivate(&token.patient, key);
        }
        record_pace(
            &mut self.days[slot.doctor_day as usize].pace,
            from,
            to,
            at,
            token.updated_at,
        );
        if reason == Reason::CheckedIn && token.checked_in_at.is_none() {
            token.checked_in_at = Some(at);
        }
        token.status = to;
        token.updated_at = at;
        token.history.push(HistoryEntry {
            at: ctx.at,
            from: Some(from),
            to,
            reason,
            actor: ctx.actor.clone(),
        });
        let change = Change {
            token: token.id,
            sequence: token.sequence,
            number: token.number,
            patient: token.patient.clone(),
            source: token.source,
            from,
            to,
            reason,
            checked_in_at: token.checked_in_at.map(Nanos::timestamp),
            skips: token.skips,
        };
        self.enter_status(key);
        change
    }

    /// Promotes waitlist heads while seats are free. Seats freed in an
    /// overbooked slot are not free: they absorb the overbooking first.
    fn promote_while_seats_free(
        &mut self,
        slot_key: u32,
        ctx: &Context,
        changes: &mut Vec<Change>,
    ) {
        while self.slots[slot_key as usize].has_free_seat() {
            let Some(head) = self.slots[slot_key as usize].waitlist_head() else {
                break;
            };
            // A patient who checked in while waiting goes to the hall's
            // queue; one who has not is booked into the seat.
            let to = if self.tokens[head].checked_in_at.is_some() {
                Status::CheckedIn
            } else {
                Status::Allocated
            };
            changes.push(self.transition(head, to, Reason::Promoted, ctx));
        }
    }

    fn finish(&self, key: TokenKey, changes: Vec<Change>, at: Timestamp) -> Outcome {
        let token = &self.tokens[key];
        self.check_after_mutation(token.slot);
        Outcome {
            token: self.view(key, at),
            transition: token
                .history
                .last()
                .cloned()
                .or_else(|| token.creation_entry())
                .expect("an acted-on token has history"),
            changes,
            slot: self.slots[token.slot as usize].summary(),
        }
    }

    fn check_after_mutation(&self, slot_key: u32) {
        let checked = if cfg!(debug_assertions) {
            self.check_slot(slot_key)
        } else {
            self.check_counts(slot_key)
        };
        if let Err(violation) = checked {
            panic!("{violation}");
        }
    }

    fn check_counts(&self, slot_key: u32) -> Result<(), RestoreError> {
        let slot = &self.slots[slot_key as usize];
        slot.check_counts()
            .map_err(|what| RestoreError(format!("slot {}: {what}", slot.id)))
    }

    /// Checks one slot's queues against its tokens, in O(slot size), and
    /// its doctor's day.
    fn check_slot(&self, slot_key: u32) -> Result<(), RestoreError> {
        let slot = &self.slots[slot_key as usize];
        let fail = |what: String| Err(RestoreError(format!("slot {}: {what}", slot.id)));
        self.check_counts(slot_key)?;
        let (mut emergencies, mut completed, mut bumpable) = (0, 0, 0);
        for (queue_key, key) in slot.allocated_entries() {
            let token = &self.tokens[*key];
            if !token.status.holds_seat() || token.slot != slot_key {
                return fail(format!("token {} is queued as allocated", token.id));
            }
            if token.queue_key() != *queue_key {
                return fail(format!("token {} is queued under a wrong key", token.id));
            }
            emergencies += u32::from(token.source == Source::Emergency);
            completed += u32::from(token.status.is_final());
            bumpable += usize::from(token.is_bumpable());
        }
        if emergencies != slot.allocated_emergencies() || completed != slot.completed() {
            return fail("emergency or completed count drifted".into());
        }
        if slot.closed == self.closings.contains(&(slot.closes_at.0, slot_key)) {
            return fail("the slot's closing is not scheduled as its state says".into());
        }
        let unseated = slot
            .allocated_entries()
            .any(|(_, key)| self.tokens[*key].status == Status::Allocated);
        if slot.closed && (unseated || slot.waitlist_count() > 0) {
            return fail("a closed slot keeps a booking nobody came for".into());
        }
        let mut bumpable_emergencies = 0;
        for (bump_key, key) in slot.bumpable_entries() {
            let token = &self.tokens[*key];
            if !token.is_bumpable() || token.slot != slot_key || token.bump_key() != *bump_key {
                return fail(format!("token {} is queued as bumpable", token.id));
            }
            bumpable -= 1;
            bumpable_emergencies += u32::from(token.source == Source::Emergency);
        }
        if bumpable != 0 || bumpable_emergencies != slot.bumpable_emergencies() {
            return fail("bumpable tokens drifted".into());
        }
        // Seat holders come in (priority, arrival) order, so the awaited
        // tokens counted so far of a priority are those before each one.
        let mut awaited = [0u32; 5];
        for (_, key) in slot.allocated_entries() {
            let token = &self.tokens[*key];
            let priority = token.source.priority();
            let counted = &mut awaited[priority.bucket()];
            if token.status.is_awaited() {
                if slot.awaited_before(priority, token.arrival) != *counted {
                    return fail(format!("token {} has a wrong awaited rank", token.id));
                }
                *counted += 1;
            }
        }
        if Source::ALL
            .into_iter()
            .map(Source::priority)
            .any(|priority| slot.awaited(priority) != awaited[priority.bucket()])
        {
            return fail("awaited counts drifted".into());
        }
        for (position, (queue_key, key)) in slot.waitlist_entries().enumerate() {
            let token = &self.tokens[*key];
            if token.status != Status::Waitlisted || token.slot != slot_key {
                return fail(format!("token {} is queued as waitlisted", token.id));
            }
            if token.queue_key() != *queue_key {
                return fail(format!("token {} is queued under a wrong key", token.id));
            }
            let computed = slot.waitlist_position(token.source.priority(), token.arrival);
            if computed as usize != position + 1 {
                return fail(format!("token {} has a wrong waitlist position", token.id));
            }
        }
        for (_, key) in slot.allocated_entries().chain(slot.waitlist_entries()) {
            let token = &self.tokens[*key];
            let indexed = slot.active_token_of(&token.patient, |k| &self.tokens[k].patient);
            if token.status.is_active() && indexed != Some(*key) {
                return fail(format!("patient {} is not indexed", token.patient));
            }
        }
        self.check_day(slot.doctor_day)
    }

    /// Checks a doctor's day: its call queue holds exactly its checked-in
    /// tokens, in call order, with positions 1…n; at most one token is
    /// with the doctor, and it is the one the day names.
    fn check_day(&self, day_key: u32) -> Result<(), RestoreError> {
        let day = &self.days[day_key as usize];
        let fail = |what: &str| Err(RestoreError(format!("a doctor's day: {what}")));
        let (mut checked_in, mut with_doctor) = (0, Vec::new());
        for &(_, slot_key) in day.slots_by_start.values() {
            for (_, key) in self.slots[slot_key as usize].allocated_entries() {
                let status = self.tokens[*key].status;
                checked_in += usize::from(status.is_callable());
                if status.is_with_doctor() {
                    with_doctor.push(*key);
                }
            }
        }
        if checked_in != day.call_queue.len() {
            return fail("the call queue and the checked-in tokens disagree");
        }
        if with_doctor.len() > 1 || with_doctor.first().copied() != day.current {
            return fail("the token with the doctor is not the one recorded");
        }
        for (position, (call_key, key)) in day.call_queue.iter().enumerate() {
            let token = &self.tokens[*key];
            let slot = &self.slots[token.slot as usize];
            if !token.status.is_callable() || CallPlace::of(token, slot).key != *call_key {
                return fail("a token is queued under a wrong call key");
            }
            if self.queue_position(*key) as usize != position + 1 {
                return fail("a wrong call queue position");
            }
        }
        Ok(())
    }

    /// A checked-in token's 1-based place in its doctor's call order: the
    /// checked-in tokens of earlier buckets plus those of its own slot and
    /// priority that arrived up to it, O(log n).
    fn queue_position(&self, key: TokenKey) -> u32 {
        let token = &self.tokens[key];
        let slot = &self.slots[token.slot as usize];
        let day = &self.days[slot.doctor_day as usize];
        let place = CallPlace::of(token, slot);
        day.call_buckets.prefix(place.bucket as usize)
            + slot.checked_in_up_to(token.source.priority(), token.arrival)
    }

    /// When a checked-in token at `position` is expected to be called,
    /// estimated at `at`; see ARCHITECTURE.md, "Call time estimates".
    fn estimated_call(&self, key: TokenKey, position: u32, at: Timestamp) -> Timestamp {
        let token = &self.tokens[key];
        let slot = &self.slots[token.slot as usize];
        let day = &self.days[slot.doctor_day as usize];
        let own = CallPlace::of(token, slot);
        let local = at.to_zoned(self.zone.0.clone()).datetime();
        let (mut length, mut seats, mut awaited_halves) = (0i128, 0i128, 0i128);
        for &(_, slot_key) in day.slots_by_start.values() {
            let each = &self.slots[slot_key as usize];
            length += each.end.duration_since(each.start).as_nanos();
            seats += i128::from(each.capacity);
            awaited_halves += i128::from(awaited_ahead(each, &own, token))
                * i128::from(awaited_weight(each, local));
        }
        let first_guess = length / seats.max(1);
        let pace = day.pace;
        let mean = (PRIOR_CONSULTATIONS * first_guess + i128::from(pace.consultation_nanos))
            / (PRIOR_CONSULTATIONS + i128::from(pace.consultations));
        // A token ahead is either seen (the mean) or skipped after a short
        // wait, in the proportion of today's calls that went unanswered.
        let per_token = if pace.calls == 0 {
            mean
        } else {
            let (calls, skips) = (
                i128::from(pace.calls),
                i128::from(pace.skips.min(pace.calls)),
            );
            (mean * (calls - skips) + SKIP_ALLOWANCE_NANOS * skips) / calls
        };
        let now = at.as_nanosecond();
        let in_progress = match day.current.map(|current| &self.tokens[current]) {
            None => 0,
            Some(current) if current.status == Status::InConsultation => {
                let elapsed = now - i128::from(current.updated_at.0);
                (mean - elapsed).max(mean / 4)
            }
            Some(_) => mean,
        };
        let tokens_ahead_halves = 2 * i128::from(position - 1) + awaited_halves;
        let estimate = now + in_progress + tokens_ahead_halves * per_token / 2;
        // Nobody is called before their slot starts, nor before the
        // emergencies ahead of them, whose slots may start later.
        let mut not_before = slot.start;
        if token.source.priority() != Priority::EMERGENCY {
            if let Some((&latest, _)) = day.emergency_starts.last_key_value() {
                not_before = not_before.max(latest);
            }
        }
        let not_before = slot
            .date
            .to_datetime(not_before)
            .to_zoned(self.zone.0.clone())
            .map_or(i128::MIN, |zoned| zoned.timestamp().as_nanosecond());
        Timestamp::from_nanosecond(estimate.max(not_before)).unwrap_or(Timestamp::MAX)
    }

    fn view(&self, key: TokenKey, at: Timestamp) -> TokenView {
        let token = &self.tokens[key];
        let slot = &self.slots[token.slot as usize];
        let queue_position = token.status.is_callable().then(|| self.queue_position(key));
        TokenView {
            id: token.id,
            sequence: token.sequence,
            number: token.number,
            patient: token.patient.clone(),
            slot: slot.id.clone(),
            doctor: slot.doctor.clone(),
            date: slot.date,
            source: token.source,
            status: token.status,
            waitlist_position: token
                .status
                .is_waiting()
                .then(|| slot.waitlist_position(token.source.priority(), token.arrival)),
            checked_in_at: token.checked_in_at.map(Nanos::timestamp),
            skips: token.skips,
            queue_position,
            estimated_call_at: queue_position
                .map(|position| self.estimated_call(key, position, at)),
            created_at: token.created_at.timestamp(),
            updated_at: token.updated_at.timestamp(),
        }
    }
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("queue lengths are bounded far below u32::MAX")
}
