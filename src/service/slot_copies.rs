//! The copies of slots an instance on PostgreSQL decides bookings on (see
//! `postgres.rs`, "Bookings in one call").
//!
//! A copy is only ever a guess: the database writes a decision made on it
//! only when the slot's row is still at the version the copy was read at,
//! so a copy that another instance, or another kind of change, has made
//! stale costs a reload and never a wrong answer. Copies are bounded in
//! number (the least recently used goes) and all dropped when a connection
//! is lost, as the database behind it may be another one after a failover.
//!
//! The event log keeps copies from going stale unseen: every change any
//! instance commits reaches this instance's follower, which notes it on
//! the entry of its slot and of its doctor's day, and then brings the
//! copies that lack a noted change up by reading their slots' tokens
//! changed since, one read for all. A booking compares what was noted
//! with its copy before deciding and, when the copy still lacks a change
//! (the follower skips a copy in use), reads them itself, so that a change
//! another instance made costs a small read instead of a call written in
//! vain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use hashlink::LruCache;
use jiff::civil::Date;
use jiff::Timestamp;
use tokio::sync::Mutex as AsyncMutex;
use uuid::Uuid;

use crate::engine::{DoctorId, SlotId, SlotSummary, Status};
use crate::store::events::{Event, EventKind};
use crate::store::postgres::SlotCopy;

/// How many slots, and doctors' days, an instance keeps copies of: a large
/// hospital's day (500 doctors' 8 slots) without dropping one that is
/// booked again. A copy holds its slot's active and seated tokens, some
/// 240 bytes each, so at 50 a slot the copies take about 50 MB.
pub const COPIES: usize = 4096;

/// How many token changes are noted on a slot between two bookings of it
/// before the slot is taken as changed without looking at each: a slot
/// that only other instances book changes on and on.
const NOTED_MAX: usize = 64;

/// One slot's entry.
#[derive(Default)]
pub struct SlotEntry {
    /// The copy, `None` until it is read and after it is dropped. Held for
    /// the whole of a booking, so an instance's bookings on one slot take
    /// turns instead of making each other's copies stale.
    pub copy: AsyncMutex<Option<SlotCopy>>,
    noted: Mutex<Noted>,
}

/// The changes of a slot the event log showed since a booking last looked.
#[derive(Default)]
struct Noted {
    /// Each token's newest status.
    tokens: HashMap<Uuid, Status>,
    /// The slot's own newest state (capacity, closing), when it changed.
    slot: Option<SlotState>,
    /// Too many tokens changed to note each.
    overflowed: bool,
}

/// What a slot event says of the slot itself: capacity, when it closes
/// (or closed), and whether it has.
type SlotState = (u32, Timestamp, bool);

fn slot_state(slot: &SlotSummary) -> SlotState {
    (slot.capacity, slot.closes_at, slot.closed)
}

impl SlotEntry {
    /// Whether `copy` of `slot` lacks a change the event log showed since
    /// this was last asked, which forgets them. The slot lacks a change of
    /// its own when its capacity or closing differs from the newest noted.
    /// A token the copy does not hold counts as a change it lacks, unless
    /// its status is one a copy does not hold (an ended token without a
    /// seat): such a token was either ended before the copy was read or
    /// created and ended since, and in the second case the slot's counters
    /// moved too.
    pub fn lacks_noted(&self, slot: &SlotId, copy: &SlotCopy) -> bool {
        let noted = std::mem::take(&mut *self.noted.lock().expect("never poisoned"));
        noted.overflowed
            || noted.slot.is_some_and(|state| {
                copy.engine
                    .slot_summary(slot)
                    .is_none_or(|held| slot_state(&held) != state)
            })
            || noted
                .tokens
                .iter()
                .any(|(token, status)| match copy.engine.token_status(*token) {
                    Some(held) => held != *status,
                    None => status.is_active() || status.holds_seat(),
                })
    }

    fn note_token(&self, token: Uuid, status: Status) {
        let mut noted = self.noted.lock().expect("never poisoned");
        if noted.overflowed {
            return;
        }
        noted.tokens.insert(token, status);
        if noted.tokens.len() > NOTED_MAX {
            noted.tokens = HashMap::new();
            noted.overflowed = true;
        }
    }

    fn note_slot(&self, slot: &SlotSummary) {
        self.noted.lock().expect("never poisoned").slot = Some(slot_state(slot));
    }
}

/// A doctor's day's token numbers, as far as this instance knows.
pub struct DayEntry {
    /// The numbers this instance's bookings issued. Held while a booking's
    /// call runs, so the instance's bookings in the doctor's slots take
    /// numbers in turn.
    pub issued: AsyncMutex<u32>,
    /// The highest number the event log showed issued, by any instance.
    seen: AtomicU32,
}

impl DayEntry {
    /// The highest number the event log showed issued.
    pub fn seen(&self) -> u32 {
        self.seen.load(Ordering::Relaxed)
    }
}

pub struct SlotCopies {
    slots: Mutex<LruCache<SlotId, Arc<SlotEntry>>>,
    days: Mutex<LruCache<(DoctorId, Date), Arc<DayEntry>>>,
}

impl SlotCopies {
    pub fn new() -> SlotCopies {
        SlotCopies {
            slots: Mutex::new(LruCache::new(COPIES)),
            days: Mutex::new(LruCache::new(COPIES)),
        }
    }

    /// The entry of slot `id`, made empty if there is none.
    pub fn slot(&self, id: &SlotId) -> Arc<SlotEntry> {
        let mut slots = self.slots.lock().expect("never poisoned");
        if let Some(entry) = slots.get(id) {
            return entry.clone();
        }
        let entry = Arc::new(SlotEntry::default());
        slots.insert(id.clone(), entry.clone());
        entry
    }

    /// The entry of a doctor's day, starting from `issued` if there is
    /// none.
    pub fn day(&self, doctor: &DoctorId, date: Date, issued: u32) -> Arc<DayEntry> {
        let mut days = self.days.lock().expect("never poisoned");
        let key = (doctor.clone(), date);
        if let Some(entry) = days.get(&key) {
            return entry.clone();
        }
        let entry = Arc::new(DayEntry {
            issued: AsyncMutex::new(issued),
            seen: AtomicU32::new(issued),
        });
        days.insert(key, entry.clone());
        entry
    }

    /// Notes committed changes on the entries of their slots and days, and
    /// answers the entries of the slots noted on. Slots and days without
    /// an entry are not given one, nor moved in the order of use.
    pub fn note(&self, events: &[Event]) -> HashMap<SlotId, Arc<SlotEntry>> {
        let mut noted = HashMap::new();
        for event in events {
            match &event.kind {
                EventKind::Token {
                    token,
                    number,
                    slot,
                    doctor,
                    date,
                    from,
                    to,
                    ..
                } => {
                    if let Some(entry) = self.noted_slot(slot) {
                        entry.note_token(*token, *to);
                        noted.entry(slot.clone()).or_insert(entry);
                    }
                    if from.is_none() {
                        let days = self.days.lock().expect("never poisoned");
                        if let Some(day) = days.peek(&(doctor.clone(), *date)) {
                            day.seen.fetch_max(*number, Ordering::Relaxed);
                        }
                    }
                }
                EventKind::Slot { slot, .. } => {
                    if let Some(entry) = self.noted_slot(&slot.id) {
                        entry.note_slot(slot);
                        noted.entry(slot.id.clone()).or_insert(entry);
                    }
                }
            }
        }
        noted
    }

    /// The entry of slot `id` if there is one, without moving it in the
    /// order of use: noting a change is not a use.
    fn noted_slot(&self, id: &SlotId) -> Option<Arc<SlotEntry>> {
        self.slots.lock().expect("never poisoned").peek(id).cloned()
    }

    /// Drops every copy. Bookings holding an entry finish on it, and their
    /// calls find it stale if it is.
    pub fn clear(&self) {
        self.slots.lock().expect("never poisoned").clear();
        self.days.lock().expect("never poisoned").clear();
    }
}
