//! The copies of slots an instance on PostgreSQL decides bookings on (see
//! `postgres.rs`, "Bookings in one call").
//!
//! A copy is only ever a guess: the database writes a decision made on it
//! only when the slot's row is still at the version the copy was read at,
//! so a copy that another instance, or another kind of change, has made
//! stale costs a reload and never a wrong answer. Copies are bounded in
//! number (the least recently used goes) and all dropped when a connection
//! is lost, as the database behind it may be another one after a failover.

use std::sync::{Arc, Mutex};

use hashlink::LruCache;
use jiff::civil::Date;
use tokio::sync::Mutex as AsyncMutex;

use crate::engine::{DoctorId, SlotId};
use crate::store::postgres::SlotCopy;

/// How many slots, and doctors' days, an instance keeps copies of: a large
/// hospital's day (500 doctors' 8 slots) without dropping one that is
/// booked again. A copy holds its slot's active and seated tokens, some
/// 240 bytes each, so at 50 a slot the copies take about 50 MB.
pub const COPIES: usize = 4096;

/// One slot's copy, `None` until it is read and after it is dropped. Held
/// for the whole of a booking, so an instance's bookings on one slot take
/// turns instead of making each other's copies stale.
pub type SlotEntry = Arc<AsyncMutex<Option<SlotCopy>>>;

/// The token numbers a doctor's day has issued, as far as this instance
/// knows. Held while a booking's call runs, so the instance's bookings in
/// the doctor's slots take numbers in turn.
pub type DayEntry = Arc<AsyncMutex<u32>>;

pub struct SlotCopies {
    slots: Mutex<LruCache<SlotId, SlotEntry>>,
    days: Mutex<LruCache<(DoctorId, Date), DayEntry>>,
}

impl SlotCopies {
    pub fn new() -> SlotCopies {
        SlotCopies {
            slots: Mutex::new(LruCache::new(COPIES)),
            days: Mutex::new(LruCache::new(COPIES)),
        }
    }

    /// The entry of slot `id`, made empty if there is none.
    pub fn slot(&self, id: &SlotId) -> SlotEntry {
        let mut slots = self.slots.lock().expect("never poisoned");
        if let Some(entry) = slots.get(id) {
            return entry.clone();
        }
        let entry = SlotEntry::default();
        slots.insert(id.clone(), entry.clone());
        entry
    }

    /// The entry of a doctor's day, starting from `issued` if there is
    /// none.
    pub fn day(&self, doctor: &DoctorId, date: Date, issued: u32) -> DayEntry {
        let mut days = self.days.lock().expect("never poisoned");
        let key = (doctor.clone(), date);
        if let Some(entry) = days.get(&key) {
            return entry.clone();
        }
        let entry = Arc::new(AsyncMutex::new(issued));
        days.insert(key, entry.clone());
        entry
    }

    /// Drops every copy. Bookings holding an entry finish on it, and their
    /// calls find it stale if it is.
    pub fn clear(&self) {
        self.slots.lock().expect("never poisoned").clear();
        self.days.lock().expect("never poisoned").clear();
    }
}
