//! The slots of each round and the schedule file the server loads: every
//! round adds six slots on its own date, and a restart keeps the old ones.

use std::path::Path;

use serde_json::{json, Value};

pub struct SlotSpec {
    pub id: String,
    pub doctor: &'static str,
    pub date: String,
}

/// Six small slots per round, on the round's own date: three doctors, two
/// slots each, so token numbers interleave between slots.
const LAYOUT: [(&str, &str, &str, &str, u32); 6] = [
    ("A", "DA", "09:00", "10:00", 3),
    ("B", "DA", "10:00", "11:00", 5),
    ("C", "DB", "09:00", "09:30", 2),
    ("D", "DB", "09:30", "10:30", 4),
    ("E", "DC", "14:00", "15:00", 3),
    ("F", "DC", "15:00", "16:00", 1),
];

fn round_date(round: usize) -> String {
    let day = jiff::civil::date(2030, 1, 2)
        .checked_add(jiff::Span::new().days(i64::try_from(round).expect("small round")))
        .expect("a date in range");
    day.to_string()
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
                doctor,
                date: round_date(round),
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
                        "doctorId": doctor,
                        "date": round_date(round),
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
