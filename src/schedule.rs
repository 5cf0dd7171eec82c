//! The slots created at start-up: the demo schedule, or a schedule file.
//!
//! Reading a schedule file is a start-up step, so it lives here in the
//! application layer rather than in a route module. A file is a list of
//! `POST /slots` bodies, read by the same [`http::slots::slot_spec`] that
//! reads the route's body, so the two never disagree on what a slot is;
//! the application sits above the HTTP layer and may use it.

use jiff::civil::{time, Date};
use serde_json::Value;

use crate::engine::{Capacity, DoctorId, SlotId, SlotSpec};
use crate::http;
use crate::http::error::ApiError;

/// Three doctors with hourly slots from 09:00 to 13:00 on `today`; slot ids
/// are `<doctor>-<hour>`, so `D1-09` is doctor D1 at 09:00 (capacity 3).
pub fn demo(today: Date) -> Vec<SlotSpec> {
    let doctors = [("D1", 3), ("D2", 4), ("D3", 5)];
    let mut slots = Vec::new();
    for (doctor, capacity) in doctors {
        for hour in 9..13 {
            slots.push(SlotSpec {
                id: SlotId::parse(&format!("{doctor}-{hour:02}")).expect("a valid id"),
                doctor: DoctorId::parse(doctor).expect("a valid id"),
                date: today,
                start: time(hour, 0, 0, 0),
                end: time(hour + 1, 0, 0, 0),
                capacity: Capacity::new(capacity).expect("a valid capacity"),
            });
        }
    }
    slots
}

/// Parses a schedule file: `{"slots": [ <POST /slots body>, ... ]}`.
pub fn parse_file(text: &str, today: Date) -> Result<Vec<SlotSpec>, String> {
    let document: Value =
        serde_json::from_str(text).map_err(|error| format!("not valid JSON: {error}"))?;
    let slots = document
        .get("slots")
        .and_then(Value::as_array)
        .ok_or("expected an object with a \"slots\" array")?;
    slots
        .iter()
        .enumerate()
        .map(|(index, slot)| {
            let object = slot
                .as_object()
                .ok_or(format!("slots[{index}] is not an object"))?;
            http::slots::slot_spec(object, today).map_err(|error| match error {
                ApiError::Validation(errors) => {
                    let fields: Vec<_> = errors
                        .iter()
                        .map(|e| format!("{} {}", e.field, e.message))
                        .collect();
                    format!("slots[{index}]: {}", fields.join("; "))
                }
                other => format!("slots[{index}]: {other}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_file_is_a_list_of_slot_bodies() {
        let today = jiff::civil::date(2030, 1, 2);
        let slots = parse_file(
            r#"{"slots": [{"slotId": "A-09", "doctorId": "A", "startTime": "09:00",
                           "endTime": "10:00", "capacity": 2}]}"#,
            today,
        )
        .unwrap();
        assert_eq!(slots.len(), 1);
        assert_eq!((slots[0].id.as_str(), slots[0].date), ("A-09", today));
    }

    #[test]
    fn a_bad_slot_is_named_by_its_place_and_field() {
        let error = parse_file(
            r#"{"slots": [{"slotId": "A-09", "doctorId": "A", "startTime": "09:00",
                           "endTime": "10:00", "capacity": -1}]}"#,
            jiff::civil::date(2030, 1, 2),
        )
        .unwrap_err();
        assert!(error.starts_with("slots[0]: capacity "), "{error}");
        assert!(parse_file("[]", jiff::civil::date(2030, 1, 2))
            .unwrap_err()
            .contains("\"slots\" array"));
    }
}
