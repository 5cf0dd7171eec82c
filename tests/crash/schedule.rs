//! The slots of each round and the schedule file the server loads: every
//! kill round adds six slots for doctors of its own, and a restart keeps
//! the old ones; the day rounds' slots are all there from the start. Every
//! slot is dated today in the clinic's zone, because no-shows, check-ins
//! and calls are taken only on a slot's date, and that zone is chosen so
//! that no slot's date ends while the test runs.

use std::path::Path;
use std::sync::LazyLock;

use jiff::tz::TimeZone;
use serde_json::{json, Value};

pub struct SlotSpec {
    pub id: String,
    pub doctor: String,
    pub date: String,
    /// `HH:MM`: the call order goes by it.
    pub start: String,
}

/// Six small slots per round, for the round's own three doctors, two slots
/// each, so token numbers interleave between slots.
const LAYOUT: [(&str, &str, &str, &str, u32); 6] = [
    ("A", "DA", "09:00", "10:00", 3),
    ("B", "DA", "10:00", "11:00", 5),
    ("C", "DB", "09:00", "09:30", 2),
    ("D", "DB", "09:30", "10:30", 4),
    ("E", "DC", "14:00", "15:00", 3),
    ("F", "DC", "15:00", "16:00", 1),
];

/// The clinic's time zone of every server the test starts: a whole-hour
/// offset from UTC (the IANA zones `Etc/GMT±N`) in which it is now between
/// noon and one o'clock, chosen once per run. Today's slots then stay
/// today for more than eleven hours, whenever the test runs: their date
/// does not end under the load (no-shows, check-ins and calls would turn
/// into `NOT_TODAY`), and no slot closes by the clock, which closes a slot
/// at the end of its date.
pub static ZONE: LazyLock<String> = LazyLock::new(|| {
    let hour = i32::from(jiff::Timestamp::now().to_zoned(TimeZone::UTC).hour());
    // From +12 (at 00:xx UTC) to -11 (at 23:xx UTC), all of them zones.
    let offset = 12 - hour;
    // `Etc/GMT` zones carry the POSIX sign, the opposite of ISO 8601's:
    // `Etc/GMT-5` is five hours ahead of UTC.
    match offset {
        0 => "Etc/GMT".to_owned(),
        ahead if ahead > 0 => format!("Etc/GMT-{ahead}"),
        behind => format!("Etc/GMT+{}", -behind),
    }
});

/// Today in the clinic's zone, taken once so that every round and every
/// check agree on it.
static TODAY: LazyLock<String> = LazyLock::new(|| {
    let zone = TimeZone::get(&ZONE).expect("an Etc/GMT zone");
    jiff::Timestamp::now().to_zoned(zone).date().to_string()
});

/// A round's doctor: the same doctor may not have overlapping slots on
/// one date, and each round's slots take the same hours.
fn round_doctor(round: usize, doctor: &str) -> String {
    format!("R{round}-{doctor}")
}

pub fn round_slot_ids(round: usize) -> Vec<String> {
    LAYOUT
        .iter()
        .map(|(suffix, ..)| format!("R{round}-{suffix}"))
        .collect()
}

pub fn slots_up_to(round: usize) -> Vec<SlotSpec> {
    (0..=round)
        .flat_map(|round| {
            LAYOUT
                .iter()
                .map(move |(suffix, doctor, start, ..)| SlotSpec {
                    id: format!("R{round}-{suffix}"),
                    doctor: round_doctor(round, doctor),
                    date: TODAY.clone(),
                    start: (*start).to_owned(),
                })
        })
        .collect()
}

pub fn write_schedule(path: &Path, up_to: usize) {
    let slots: Vec<Value> = (0..=up_to)
        .flat_map(|round| {
            LAYOUT
                .iter()
                .map(move |(suffix, doctor, start, end, capacity)| {
                    json!({
                        "slotId": format!("R{round}-{suffix}"),
                        "doctorId": round_doctor(round, doctor),
                        "date": *TODAY,
                        "startTime": start,
                        "endTime": end,
                        "capacity": capacity,
                    })
                })
        })
        .collect();
    let text = serde_json::to_string_pretty(&json!({ "slots": slots })).expect("schedule JSON");
    std::fs::write(path, text).expect("write the schedule");
}

/// The day rounds' doctors, each with hourly slots from 08:00, all of
/// them created at the first start.
const DAY_DOCTORS: usize = 4;
const DAY_SLOTS_PER_DOCTOR: usize = 6;
const DAY_FIRST_HOUR: usize = 8;
/// Small, so that bookings soon fill slots and waitlists form: then
/// bookings bump, cancels and no-shows promote, and closings expire.
const DAY_CAPACITY: u32 = 5;

/// A doctor of the day rounds and their slots, earliest first.
pub struct DayDoctor {
    pub id: String,
    pub slots: Vec<String>,
}

pub fn day_doctors() -> Vec<DayDoctor> {
    (1..=DAY_DOCTORS)
        .map(|doctor| DayDoctor {
            id: format!("Y-D{doctor}"),
            slots: (0..DAY_SLOTS_PER_DOCTOR)
                .map(|slot| format!("Y-D{doctor}-{:02}", DAY_FIRST_HOUR + slot))
                .collect(),
        })
        .collect()
}

pub fn day_slots() -> Vec<SlotSpec> {
    day_doctors()
        .into_iter()
        .flat_map(|doctor| {
            (0..DAY_SLOTS_PER_DOCTOR).map(move |slot| SlotSpec {
                id: doctor.slots[slot].clone(),
                doctor: doctor.id.clone(),
                date: TODAY.clone(),
                start: format!("{:02}:00", DAY_FIRST_HOUR + slot),
            })
        })
        .collect()
}

/// The day's slots last an hour each. No `--close-after-minutes` is given,
/// so they close only when the admin closes them (or at the end of their
/// date, which the zone keeps far away).
pub fn write_day_schedule(path: &Path) {
    let slots: Vec<Value> = day_slots()
        .iter()
        .map(|spec| {
            let hour: usize = spec.start[..2].parse().expect("an HH:MM start");
            json!({
                "slotId": spec.id,
                "doctorId": spec.doctor,
                "date": spec.date,
                "startTime": spec.start,
                "endTime": format!("{:02}:00", hour + 1),
                "capacity": DAY_CAPACITY,
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&json!({ "slots": slots })).expect("schedule JSON");
    std::fs::write(path, text).expect("write the schedule");
}
