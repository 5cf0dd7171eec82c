//! The demo schedule loaded when no schedule file is given.

use jiff::civil::{time, Date};

use crate::engine::{Capacity, DoctorId, SlotId, SlotSpec};

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
