//! The allocation engine: a pure, synchronous state machine.
//!
//! It owns every slot and token and applies the rules of the HTTP contract
//! (bumping, overbooking, waitlisting, promotion, capacity changes). It does
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

use std::collections::BTreeMap;
use std::ops::Bound;

use jiff::civil::{Date, Time};
use uuid::Uuid;

use arena::{Arena, IdIndex};
pub use model::*;
use slot::{Slot, TokenKey};

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
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            waitlist_max: 1_000,
            overbook_max: 200,
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
}

/// A doctor's working day: the token number counter and the slots, by start
/// time, for the overlap check.
#[derive(Debug, Default)]
struct DoctorDay {
    numbers_issued: u32,
    slots_by_start: BTreeMap<Time, (Time, u32)>,
}

#[derive(Debug, Default)]
pub struct Engine {
    limits: Limits,
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
}

impl Engine {
    pub fn new(limits: Limits) -> Engine {
        Engine {
            limits,
            next_sequence: 1,
            ..Engine::default()
        }
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
        self.slot_keys.insert(spec.id.clone(), key);
        self.schedule
            .insert((spec.date, spec.start, spec.id.clone()), key);
        self.doctor_schedule.insert(
            (spec.doctor.clone(), spec.date, spec.start, spec.id.clone()),
            key,
        );
        self.slots.push(Slot::new(spec, day_key));
        Ok(self.slots[key as usize].summary())
    }

    /// Books a token. See the allocation rules in the HTTP contract.
    pub fn book(&mut self, request: BookRequest, ctx: &Context) -> Result<Outcome, EngineError> {
        let slot_key = self.slot_key(&request.slot)?;
        if self.find_token(&request.token).is_some() {
            return Err(EngineError::TokenIdInUse(request.token));
        }
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
        Ok(self.finish(token, changes))
    }

    /// Cancels a token or marks it a no-show; a freed seat promotes the head
    /// of the waitlist unless it absorbs overbooking.
    pub fn act(&mut self, id: Uuid, action: Action, ctx: &Context) -> Result<Outcome, EngineError> {
        let key = self.token_key(id)?;
        let token = &self.tokens[key];
        let from = token.status;
        let (to, reason) = action
            .transition(from)
            .ok_or(EngineError::InvalidTransition { from, action })?;
        let slot_key = token.slot;
        self.transition(key, to, reason, ctx);
        let mut changes = Vec::new();
        self.promote_while_seats_free(slot_key, ctx, &mut changes);
        Ok(self.finish(key, changes))
    }

    /// Changes a slot's capacity. Growing promotes from the waitlist;
    /// shrinking demotes the least important, latest non-emergency tokens.
    pub fn set_capacity(
        &mut self,
        slot: &SlotId,
        capacity: Capacity,
        ctx: &Context,
    ) -> Result<CapacityOutcome, EngineError> {
        let slot_key = self.slot_key(slot)?;
        let slot = &self.slots[slot_key as usize];
        let demotions = slot
            .allocated_count()
            .saturating_sub(capacity.get())
            .min(slot.non_emergency_allocated());
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
        Ok(CapacityOutcome {
            slot: self.slots[slot_key as usize].summary(),
            changes,
        })
    }

    pub fn token(&self, id: Uuid) -> Option<TokenView> {
        let key = self.find_token(&id)?;
        Some(self.view(key))
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

    pub fn slot(&self, id: &SlotId) -> Option<SlotDetail> {
        let key = *self.slot_keys.get(id)?;
        let slot = &self.slots[key as usize];
        Some(SlotDetail {
            summary: slot.summary(),
            allocated: slot
                .allocated_entries()
                .map(|(_, t)| self.view(*t))
                .collect(),
            waitlist: slot
                .waitlist_entries()
                .map(|(_, t)| self.view(*t))
                .collect(),
        })
    }

    /// One page of slots by date, start time and id, optionally for one
    /// doctor or date, in O(log n + page): each filter and the cursor are
    /// a range of an ordered index. An `after` slot that does not exist is
    /// refused.
    pub fn slots(&self, query: &SlotQuery) -> Result<SlotPage, EngineError> {
        // Pages start after `from`. An id sorts after the lowest one, so a
        // date's own slots all follow (date, 00:00, lowest).
        let mut from = (query.date.unwrap_or(Date::MIN), Time::MIN, SlotId::lowest());
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
        let (Some(created_at), Some(updated_at)) = (
            Nanos::try_of(record.created_at),
            Nanos::try_of(record.updated_at),
        ) else {
            return fail("a time outside 1678-2261".into());
        };
        let day = &mut self.days[slot.doctor_day as usize];
        let mut history = record.history;
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
        };
        let key = self.push_token(token);
        self.enter_status(key);
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
        };
        self.next_sequence += 1;
        let key = self.push_token(token);
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

    /// Puts a token into the queue its status calls for.
    fn enter_status(&mut self, key: TokenKey) {
        let token = &self.tokens[key];
        let slot = &mut self.slots[token.slot as usize];
        match token.status {
            Status::Allocated => slot.insert_allocated(token.queue_key(), key),
            Status::Waitlisted => slot.insert_waitlisted(token.queue_key(), token.arrival, key),
            Status::Cancelled | Status::NoShow => return,
        }
        slot.activate(key, |k| &self.tokens[k].patient);
    }

    /// Moves an active token to `to` and records it in its history. This is
    /// the only place a token's status changes after creation.
    fn transition(&mut self, key: TokenKey, to: Status, reason: Reason, ctx: &Context) -> Change {
        let token = &mut self.tokens[key];
        let slot = &mut self.slots[token.slot as usize];
        let from = token.status;
        match from {
            Status::Allocated => slot.remove_allocated(token.queue_key()),
            Status::Waitlisted => slot.remove_waitlisted(token.queue_key(), token.arrival),
            Status::Cancelled | Status::NoShow => {
                panic!("terminal token {} cannot become {to:?}", token.id)
            }
        }
        match to {
            Status::Allocated => slot.insert_allocated(token.queue_key(), key),
            Status::Waitlisted => slot.insert_waitlisted(token.queue_key(), token.arrival, key),
            Status::Cancelled | Status::NoShow => slot.deactivate(&token.patient, key),
        }
        token.status = to;
        token.updated_at = Nanos::of(ctx.at);
        token.history.push(HistoryEntry {
            at: ctx.at,
            from: Some(from),
            to,
            reason,
            actor: ctx.actor.clone(),
        });
        Change {
            token: token.id,
            sequence: token.sequence,
            number: token.number,
            patient: token.patient.clone(),
            source: token.source,
            from,
            to,
            reason,
        }
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
            changes.push(self.transition(head, Status::Allocated, Reason::Promoted, ctx));
        }
    }

    fn finish(&self, key: TokenKey, changes: Vec<Change>) -> Outcome {
        let token = &self.tokens[key];
        self.check_after_mutation(token.slot);
        Outcome {
            token: self.view(key),
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

    /// Checks one slot's queues against its tokens, in O(slot size).
    fn check_slot(&self, slot_key: u32) -> Result<(), RestoreError> {
        let slot = &self.slots[slot_key as usize];
        let fail = |what: String| Err(RestoreError(format!("slot {}: {what}", slot.id)));
        self.check_counts(slot_key)?;
        let mut emergencies = 0;
        for (queue_key, key) in slot.allocated_entries() {
            let token = &self.tokens[*key];
            if token.status != Status::Allocated || token.slot != slot_key {
                return fail(format!("token {} is queued as allocated", token.id));
            }
            if token.queue_key() != *queue_key {
                return fail(format!("token {} is queued under a wrong key", token.id));
            }
            emergencies += u32::from(token.source == Source::Emergency);
        }
        if emergencies != slot.allocated_emergencies() {
            return fail("emergency count drifted".into());
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
            if slot.active_token_of(&token.patient, |k| &self.tokens[k].patient) != Some(*key) {
                return fail(format!("patient {} is not indexed", token.patient));
            }
        }
        Ok(())
    }

    fn view(&self, key: TokenKey) -> TokenView {
        let token = &self.tokens[key];
        let slot = &self.slots[token.slot as usize];
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
            created_at: token.created_at.timestamp(),
            updated_at: token.updated_at.timestamp(),
        }
    }
}
