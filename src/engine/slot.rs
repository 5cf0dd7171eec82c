//! One slot's queues: the seat holders in service order, those of them the
//! doctor has not called yet in bump order, and the waitlist in promotion
//! order, all ordered maps keyed by packed integers, so every insert,
//! removal, head and tail lookup is O(log n).

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use jiff::civil::{Date, Time};

use super::arena::KeyIndex;
use super::fenwick::Fenwick;
use super::model::{DoctorId, PatientId, Priority, SlotId, SlotSpec, SlotSummary};
use super::Nanos;

/// Index of a token in the engine's arena.
pub(super) type TokenKey = u32;

/// A bumpable token's place: (priority, not checked in, arrival sequence)
/// packed so that the largest key is the bump victim: the least important,
/// then one not yet arrived before one in the hall, then the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct BumpKey(u128);

impl BumpKey {
    pub(super) fn new(priority: Priority, checked_in: bool, sequence: u64) -> BumpKey {
        BumpKey(
            u128::from(priority.get()) << 65 | u128::from(!checked_in) << 64 | u128::from(sequence),
        )
    }

    fn priority(self) -> Priority {
        Priority::from_rank((self.0 >> 65) as u8)
    }
}

/// A token's place in either queue: (priority, arrival sequence) packed
/// into one integer, the priority in the top byte, so that integer order is
/// queue order. Smaller keys are served and promoted first, and the largest
/// allocated key is the bump victim. Packed, the key takes 8 bytes instead
/// of a tuple's 16, which shrinks every queue node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct QueueKey(u64);

impl QueueKey {
    const SEQUENCE_BITS: u32 = 56;
    /// Arrival sequences must stay below this; at a million bookings a
    /// second that takes two thousand years.
    pub(super) const SEQUENCE_LIMIT: u64 = 1 << Self::SEQUENCE_BITS;

    pub(super) fn new(priority: Priority, sequence: u64) -> QueueKey {
        assert!(
            sequence < Self::SEQUENCE_LIMIT,
            "arrival sequence out of range"
        );
        QueueKey(u64::from(priority.get()) << Self::SEQUENCE_BITS | sequence)
    }

    pub(super) fn priority(self) -> Priority {
        Priority::from_rank((self.0 >> Self::SEQUENCE_BITS) as u8)
    }
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) id: SlotId,
    pub(super) doctor: DoctorId,
    pub(super) date: Date,
    pub(super) start: Time,
    pub(super) end: Time,
    pub(super) capacity: u32,
    /// Index of the doctor's day in the engine's day list.
    pub(super) doctor_day: u32,
    /// When the slot closes, or, once closed, when it did.
    pub(super) closes_at: Nanos,
    pub(super) closed: bool,
    /// Every token that holds a seat, in service order.
    allocated: BTreeMap<QueueKey, TokenKey>,
    /// Kept so that "only emergencies remain allocated" is O(1) to ask.
    allocated_emergencies: u32,
    /// Seat holders whose consultation is done: they hold a seat but are
    /// no longer active.
    completed: u32,
    /// Tokens that ended without a seat (cancelled, no-shows, expired), in
    /// the order they ended: out of every queue, but still the slot's.
    pub(super) ended: Vec<TokenKey>,
    /// The seat holders the doctor has not called yet, in bump order.
    bumpable: BTreeMap<BumpKey, TokenKey>,
    bumpable_emergencies: u32,
    /// Per priority, a count for every arrival of that priority: 1 while
    /// that token is checked in. Grown only when a token checks in, so
    /// bookings pay nothing for it. Gives call queue positions within the
    /// slot and priority in O(log n).
    checked_in_ranks: [Fenwick; 5],
    /// Per priority, a count for every arrival of that priority: 1 while
    /// that token is awaited (holds a seat, its patient not in the hall).
    /// Gives how many awaited tokens come before a token in call order, for
    /// call time estimates, in O(log n).
    awaited_ranks: [Fenwick; 5],
    awaited_counts: [u32; 5],
    waitlist: BTreeMap<QueueKey, TokenKey>,
    /// Per priority, a 0/1 element for every arrival of that priority: 1
    /// while that token waits. Gives waitlist positions in O(log n).
    waitlist_ranks: [Fenwick; 5],
    waitlist_counts: [u32; 5],
    /// The active token of each patient, for the one-per-slot rule, found
    /// by the patient id's hash under this slot's own random seed
    /// (patient ids come from clients).
    active_patients: KeyIndex,
    patient_hasher: RandomState,
}

impl Slot {
    pub(super) fn new(spec: SlotSpec, doctor_day: u32, closes_at: Nanos) -> Slot {
        Slot {
            closes_at,
            closed: false,
            id: spec.id,
            doctor: spec.doctor,
            date: spec.date,
            start: spec.start,
            end: spec.end,
            capacity: spec.capacity.get(),
            doctor_day,
            allocated: BTreeMap::new(),
            allocated_emergencies: 0,
            completed: 0,
            ended: Vec::new(),
            bumpable: BTreeMap::new(),
            bumpable_emergencies: 0,
            checked_in_ranks: Default::default(),
            awaited_ranks: Default::default(),
            awaited_counts: [0; 5],
            waitlist: BTreeMap::new(),
            waitlist_ranks: Default::default(),
            waitlist_counts: [0; 5],
            active_patients: KeyIndex::default(),
            patient_hasher: RandomState::default(),
        }
    }

    pub(super) fn summary(&self) -> SlotSummary {
        SlotSummary {
            id: self.id.clone(),
            doctor: self.doctor.clone(),
            date: self.date,
            start: self.start,
            end: self.end,
            capacity: self.capacity,
            allocated: self.allocated_count(),
            waitlisted: self.waitlist_count(),
            closes_at: self.closes_at.timestamp(),
            closed: self.closed,
        }
    }

    pub(super) fn allocated_count(&self) -> u32 {
        len_u32(self.allocated.len())
    }

    pub(super) fn waitlist_count(&self) -> u32 {
        len_u32(self.waitlist.len())
    }

    pub(super) fn has_free_seat(&self) -> bool {
        self.allocated_count() < self.capacity
    }

    /// How many allocated tokens exceed the capacity.
    pub(super) fn overbooked_by(&self) -> u32 {
        self.allocated_count().saturating_sub(self.capacity)
    }

    pub(super) fn non_emergency_allocated(&self) -> u32 {
        self.allocated_count() - self.allocated_emergencies
    }

    /// Seat holders that are not emergencies and that the doctor has not
    /// called: what a capacity cut may move to the waitlist.
    pub(super) fn non_emergency_bumpable(&self) -> u32 {
        len_u32(self.bumpable.len()) - self.bumpable_emergencies
    }

    /// Reserves an arrival index in the waitlist rank of `priority`; every
    /// token gets one at creation, in arrival order.
    pub(super) fn next_arrival(&mut self, priority: Priority) -> u32 {
        self.waitlist_ranks[priority.bucket()].push()
    }

    /// Gives back the arrival index reserved last for `priority`, once
    /// its token waits no more; false, giving nothing back, if `arrival`
    /// is not that one.
    pub(super) fn give_back_arrival(&mut self, priority: Priority, arrival: u32) -> bool {
        self.waitlist_ranks[priority.bucket()].pop_zero(arrival)
    }

    pub(super) fn active_token_of<'a>(
        &self,
        patient: &PatientId,
        patient_of: impl Fn(TokenKey) -> &'a PatientId,
    ) -> Option<TokenKey> {
        let hash = self.patient_hasher.hash_one(patient.as_str());
        self.active_patients.find(hash, patient, patient_of)
    }

    pub(super) fn activate<'a>(
        &mut self,
        token: TokenKey,
        patient_of: impl Fn(TokenKey) -> &'a PatientId,
    ) {
        let hash = self.patient_hasher.hash_one(patient_of(token).as_str());
        let added = self.active_patients.insert(hash, token, patient_of);
        assert!(
            added.is_ok(),
            "a patient holds two active tokens in one slot"
        );
    }

    pub(super) fn deactivate(&mut self, patient: &PatientId, token: TokenKey) {
        let hash = self.patient_hasher.hash_one(patient.as_str());
        assert!(
            self.active_patients.remove(hash, token),
            "deactivating a patient with no active token"
        );
    }

    pub(super) fn insert_allocated(&mut self, key: QueueKey, token: TokenKey, completed: bool) {
        assert!(
            self.allocated.insert(key, token).is_none(),
            "token allocated twice"
        );
        if key.priority() == Priority::EMERGENCY {
            self.allocated_emergencies += 1;
        }
        self.completed += u32::from(completed);
    }

    pub(super) fn remove_allocated(&mut self, key: QueueKey) {
        assert!(
            self.allocated.remove(&key).is_some(),
            "token was not allocated"
        );
        if key.priority() == Priority::EMERGENCY {
            self.allocated_emergencies -= 1;
        }
    }

    pub(super) fn insert_bumpable(&mut self, key: BumpKey, token: TokenKey) {
        assert!(
            self.bumpable.insert(key, token).is_none(),
            "token bumpable twice"
        );
        if key.priority() == Priority::EMERGENCY {
            self.bumpable_emergencies += 1;
        }
    }

    pub(super) fn remove_bumpable(&mut self, key: BumpKey) {
        assert!(
            self.bumpable.remove(&key).is_some(),
            "token was not bumpable"
        );
        if key.priority() == Priority::EMERGENCY {
            self.bumpable_emergencies -= 1;
        }
    }

    /// Marks an arrival as checked in or not, for call queue positions.
    pub(super) fn set_checked_in(&mut self, priority: Priority, arrival: u32, checked_in: bool) {
        self.checked_in_ranks[priority.bucket()].set(arrival, checked_in);
    }

    /// Checked-in tokens of `priority` in this slot that arrived up to and
    /// including `arrival`, in O(log n).
    pub(super) fn checked_in_up_to(&self, priority: Priority, arrival: u32) -> u32 {
        self.checked_in_ranks[priority.bucket()].prefix(arrival as usize + 1)
    }

    /// Marks an arrival as awaited or not, for call time estimates.
    pub(super) fn set_awaited(&mut self, priority: Priority, arrival: u32, awaited: bool) {
        self.awaited_ranks[priority.bucket()].set(arrival, awaited);
        let count = &mut self.awaited_counts[priority.bucket()];
        if awaited {
            *count += 1;
        } else {
            *count -= 1;
        }
    }

    /// Awaited tokens of `priority` in this slot.
    pub(super) fn awaited(&self, priority: Priority) -> u32 {
        self.awaited_counts[priority.bucket()]
    }

    /// Awaited tokens of `priority` in this slot that arrived before
    /// `arrival`, in O(log n).
    pub(super) fn awaited_before(&self, priority: Priority, arrival: u32) -> u32 {
        self.awaited_ranks[priority.bucket()].prefix(arrival as usize)
    }

    pub(super) fn insert_waitlisted(&mut self, key: QueueKey, arrival: u32, token: TokenKey) {
        assert!(
            self.waitlist.insert(key, token).is_none(),
            "token waitlisted twice"
        );
        self.waitlist_ranks[key.priority().bucket()].set(arrival, true);
        self.waitlist_counts[key.priority().bucket()] += 1;
    }

    pub(super) fn remove_waitlisted(&mut self, key: QueueKey, arrival: u32) {
        assert!(
            self.waitlist.remove(&key).is_some(),
            "token was not waitlisted"
        );
        self.waitlist_ranks[key.priority().bucket()].set(arrival, false);
        self.waitlist_counts[key.priority().bucket()] -= 1;
    }

    /// The token a request of `priority` would bump: among those the
    /// doctor has not called, the least important, then one not checked
    /// in, then the latest arrival; and only if strictly less important.
    pub(super) fn bump_victim(&self, priority: Priority) -> Option<TokenKey> {
        self.bumpable
            .last_key_value()
            .filter(|(victim, _)| victim.priority() > priority)
            .map(|(_, token)| *token)
    }

    /// The token a capacity cut demotes first, if any that the doctor has
    /// not called is not an emergency.
    pub(super) fn demotion_candidate(&self) -> Option<TokenKey> {
        self.bumpable
            .last_key_value()
            .filter(|(key, _)| key.priority() != Priority::EMERGENCY)
            .map(|(_, token)| *token)
    }

    pub(super) fn waitlist_head(&self) -> Option<TokenKey> {
        self.waitlist.first_key_value().map(|(_, token)| *token)
    }

    /// The 1-based waitlist position of a waiting token, in O(log n).
    pub(super) fn waitlist_position(&self, priority: Priority, arrival: u32) -> u32 {
        let ahead_by_priority: u32 = self.waitlist_counts[..priority.bucket()].iter().sum();
        let ahead_or_same = self.waitlist_ranks[priority.bucket()].prefix(arrival as usize + 1);
        ahead_by_priority + ahead_or_same
    }

    pub(super) fn active_patient_count(&self) -> usize {
        self.active_patients.len()
    }

    /// The O(1) invariants, checked after every mutation in every build.
    pub(super) fn check_counts(&self) -> Result<(), String> {
        // Seats beyond the capacity are held by non-emergencies only after
        // a capacity cut, and then only by tokens the doctor had called:
        // the cut demoted every other one.
        if self.non_emergency_allocated() > self.capacity && self.non_emergency_bumpable() > 0 {
            return Err("more non-emergency tokens than seats".into());
        }
        if !self.waitlist.is_empty() && self.has_free_seat() {
            return Err("a waitlist while seats are free".into());
        }
        let active = self.allocated.len() - self.completed as usize + self.waitlist.len();
        if self.active_patients.len() != active {
            return Err("active patients and queued tokens disagree".into());
        }
        if self.waitlist_counts.iter().sum::<u32>() != self.waitlist_count() {
            return Err("waitlist counts drifted".into());
        }
        if self.bumpable.len() > self.allocated.len() {
            return Err("more bumpable tokens than seat holders".into());
        }
        if self.awaited_counts.iter().sum::<u32>() > self.allocated_count() {
            return Err("more awaited tokens than seat holders".into());
        }
        Ok(())
    }

    pub(super) fn allocated_entries(&self) -> impl Iterator<Item = (&QueueKey, &TokenKey)> {
        self.allocated.iter()
    }

    pub(super) fn waitlist_entries(&self) -> impl Iterator<Item = (&QueueKey, &TokenKey)> {
        self.waitlist.iter()
    }

    pub(super) fn allocated_emergencies(&self) -> u32 {
        self.allocated_emergencies
    }

    pub(super) fn bumpable_entries(&self) -> impl Iterator<Item = (&BumpKey, &TokenKey)> {
        self.bumpable.iter()
    }

    pub(super) fn bumpable_emergencies(&self) -> u32 {
        self.bumpable_emergencies
    }

    pub(super) fn completed(&self) -> u32 {
        self.completed
    }
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("queue lengths are bounded far below u32::MAX")
}
