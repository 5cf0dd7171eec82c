//! The slots of each round and the schedule file the server loads: every
//! round adds six slots for doctors of its own, and a restart keeps the old
//! ones. Every slot is dated today, because the load marks no-shows, which
//! are taken only on a slot's date.

use std::path::Path;
use std::sync::LazyLock;

use serde_json::{json, Value};

pub struct SlotSpec {
    pub id: String,
    pub doctor: String,
    pub date: String,
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

/// Today in UTC, the zone of the server the test starts, taken once so
/// that every round and every check agree on it.
static TODAY: LazyLock<String> = LazyLock::new(|| {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .to_string()
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
            LAYOUT.iter().map(move |(suffix, doctor, ..)| SlotSpec {
                id: format!("R{round}-{suffix}"),
                doctor: round_doctor(round, doctor),
                date: TODAY.clone(),
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
