//! A whole OPD day on the demo slot D1-09 (doctor D1, 09:00–10:00,
//! capacity 3), step by step, with every answer checked field by field.

use serde_json::json;

use crate::helpers::{
    change, entry, id_of, plain_history, with, without_history, Backend, SlotRef, TestApp, TODAY,
};

const AT_0900: &str = "2030-01-15T09:00:00Z";
const AT_0910: &str = "2030-01-15T09:10:00Z";
const AT_0920: &str = "2030-01-15T09:20:00Z";
const AT_0930: &str = "2030-01-15T09:30:00Z";
const AT_0940: &str = "2030-01-15T09:40:00Z";
const AT_0945: &str = "2030-01-15T09:45:00Z";

backend_tests!(an_opd_day_on_the_demo_slot_follows_the_allocation_rules);

async fn an_opd_day_on_the_demo_slot_follows_the_allocation_rules(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let d1 = SlotRef::d1_09();

    // 09:00 – online bookings fill the slot.
    app.clock.set(AT_0900);
    let mut online = Vec::new();
    for (number, patient) in [(1, "P1"), (2, "P2"), (3, "P3")] {
        let booked = app.book(patient, "D1-09", "ONLINE").await;
        let token = d1.token(
            &id_of(&booked),
            number,
            patient,
            "ONLINE",
            ("ALLOCATED", None),
            AT_0900,
        );
        assert_eq!(
            booked,
            json!({
                "decision": "ALLOCATED",
                "token": token,
                "changes": [],
                "slot": d1.summary(3, number as u32, 0),
            })
        );
        online.push(token);
    }
    let [p1, p2, p3] = <[_; 3]>::try_from(online).unwrap();

    // 09:10 – a walk-in finds the slot full and waits.
    app.clock.set(AT_0910);
    let booked = app.book("P4", "D1-09", "WALK_IN").await;
    let walk_in = d1.token(
        &id_of(&booked),
        4,
        "P4",
        "WALK_IN",
        ("WAITLISTED", Some(1)),
        AT_0910,
    );
    assert_eq!(
        booked,
        json!({"decision": "WAITLISTED", "token": walk_in, "changes": [], "slot": d1.summary(3, 3, 1)})
    );

    // 09:20 – a paid patient bumps the latest online booking.
    app.clock.set(AT_0920);
    let booked = app.book("P5", "D1-09", "PAID").await;
    let paid = d1.token(
        &id_of(&booked),
        5,
        "P5",
        "PAID",
        ("ALLOCATED", None),
        AT_0920,
    );
    assert_eq!(
        booked,
        json!({
            "decision": "BUMPED_LOWER",
            "token": paid,
            "changes": [{
                "tokenId": p3["tokenId"],
                "patientId": "P3",
                "from": "ALLOCATED",
                "to": "WAITLISTED",
                "reason": "BUMPED",
            }],
            "slot": d1.summary(3, 3, 2),
        })
    );

    // 09:30 – an emergency is seated beyond capacity; nobody is bumped.
    app.clock.set(AT_0930);
    let booked = app.book("P6", "D1-09", "EMERGENCY").await;
    let emergency = d1.token(
        &id_of(&booked),
        6,
        "P6",
        "EMERGENCY",
        ("ALLOCATED", None),
        AT_0930,
    );
    assert_eq!(
        booked,
        json!({"decision": "OVERBOOKED", "token": emergency, "changes": [], "slot": d1.summary(3, 4, 2)})
    );
    assert_eq!(booked["slot"]["overbooked"], true);
    assert_eq!(booked["slot"]["overbookedBy"], 1);

    // The slot in service order, and its waitlist in promotion order: the
    // bumped online booking waits ahead of the walk-in.
    let bumped = with(
        &p3,
        json!({"status": "WAITLISTED", "waitlistPosition": 1, "updatedAt": AT_0920}),
    );
    let waiting_walk_in = with(&walk_in, json!({"waitlistPosition": 2}));
    let mut expected = d1.summary(3, 4, 2);
    expected["allocated"] = json!([emergency, paid, p1, p2]);
    expected["waitlist"] = json!([bumped, waiting_walk_in]);
    assert_eq!(app.slot("D1-09").await, expected);

    // 09:40 – a cancellation in the overbooked slot absorbs the
    // overbooking and promotes nobody.
    app.clock.set(AT_0940);
    let cancelled_p1 = with(&p1, json!({"status": "CANCELLED", "updatedAt": AT_0940}));
    assert_eq!(
        app.cancel(&id_of(&p1)).await,
        json!({"token": cancelled_p1, "changes": [], "slot": d1.summary(3, 3, 2)})
    );

    // A second cancellation frees a seat: the bumped booking is promoted.
    let cancelled_p2 = with(&p2, json!({"status": "CANCELLED", "updatedAt": AT_0940}));
    assert_eq!(
        app.cancel(&id_of(&p2)).await,
        json!({
            "token": cancelled_p2,
            "changes": [change(&p3, "WAITLISTED", "ALLOCATED", "PROMOTED")],
            "slot": d1.summary(3, 3, 1),
        })
    );

    // 09:45 – the paid patient does not show up: the walk-in is promoted.
    app.clock.set(AT_0945);
    let no_show_paid = with(&paid, json!({"status": "NO_SHOW", "updatedAt": AT_0945}));
    assert_eq!(
        app.no_show(&id_of(&paid)).await,
        json!({
            "token": no_show_paid,
            "changes": [change(&walk_in, "WAITLISTED", "ALLOCATED", "PROMOTED")],
            "slot": d1.summary(3, 3, 0),
        })
    );

    let promoted_p3 = with(&p3, json!({"updatedAt": AT_0940}));
    let promoted_walk_in = with(
        &walk_in,
        json!({"status": "ALLOCATED", "waitlistPosition": null, "updatedAt": AT_0945}),
    );
    let mut expected = d1.summary(3, 3, 0);
    expected["allocated"] = json!([emergency, promoted_p3, promoted_walk_in]);
    expected["waitlist"] = json!([]);
    assert_eq!(app.slot("D1-09").await, expected);

    // Every token's history, oldest first, `from` null on creation.
    let histories = [
        (
            &cancelled_p1,
            json!([
                entry(AT_0900, None, "ALLOCATED", "ALLOCATED"),
                entry(AT_0940, Some("ALLOCATED"), "CANCELLED", "CANCELLED")
            ]),
        ),
        (
            &cancelled_p2,
            json!([
                entry(AT_0900, None, "ALLOCATED", "ALLOCATED"),
                entry(AT_0940, Some("ALLOCATED"), "CANCELLED", "CANCELLED")
            ]),
        ),
        (
            &promoted_p3,
            json!([
                entry(AT_0900, None, "ALLOCATED", "ALLOCATED"),
                entry(AT_0920, Some("ALLOCATED"), "WAITLISTED", "BUMPED"),
                entry(AT_0940, Some("WAITLISTED"), "ALLOCATED", "PROMOTED"),
            ]),
        ),
        (
            &promoted_walk_in,
            json!([
                entry(AT_0910, None, "WAITLISTED", "WAITLISTED"),
                entry(AT_0945, Some("WAITLISTED"), "ALLOCATED", "PROMOTED")
            ]),
        ),
        (
            &no_show_paid,
            json!([
                entry(AT_0920, None, "ALLOCATED", "BUMPED_LOWER"),
                entry(AT_0945, Some("ALLOCATED"), "NO_SHOW", "NO_SHOW")
            ]),
        ),
        (
            &emergency,
            json!([entry(AT_0930, None, "ALLOCATED", "OVERBOOKED")]),
        ),
    ];
    for (token, history) in histories {
        let detail = app.token(&id_of(token)).await;
        assert_eq!(&without_history(&detail), token);
        assert_eq!(
            plain_history(&detail),
            history,
            "history of {}",
            token["patientId"]
        );
    }

    // The day's tokens for D1 are numbered 1..6; D1's next slot continues
    // the count, another doctor starts at 1.
    assert_eq!(
        app.book("P7", "D1-10", "ONLINE").await["token"]["tokenNumber"],
        7
    );
    assert_eq!(
        app.book("P1", "D2-09", "ONLINE").await["token"]["tokenNumber"],
        1
    );
    assert_eq!(
        app.slots(&format!("?doctorId=D1&date={TODAY}")).await[0],
        d1.summary(3, 3, 0)
    );
}
