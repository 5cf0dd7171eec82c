//! Booking, cancelling and no-shows: the allocation rules of API.md, one
//! rule per test, on slots the tests create themselves.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{
    allocated_patients, assert_problem, change, entry, id_of, plain_history, waitlist_patients,
    with, without_history, Backend, TestApp, T0, TODAY,
};

backend_tests!(
    booking_a_free_seat_allocates_a_token_and_names_it_in_location,
    a_full_slot_waitlists_equal_and_lower_priorities_without_bumping,
    a_higher_priority_bumps_the_largest_priority_number_then_the_latest_arrival,
    a_bumped_token_waits_ahead_of_later_arrivals_of_its_priority,
    an_emergency_overbooks_a_full_slot_without_bumping_anyone,
    an_emergency_in_a_free_seat_is_simply_allocated,
    a_zero_capacity_slot_waitlists_everyone_but_emergencies,
    freed_seats_absorb_overbooking_before_anyone_is_promoted,
    a_no_show_promotes_the_head_of_the_waitlist,
    cancelling_a_waitlisted_token_moves_later_tokens_up,
    a_no_show_is_refused_for_a_waitlisted_token,
    terminal_tokens_refuse_cancel_and_no_show,
    a_patient_cannot_hold_two_active_tokens_in_one_slot,
    a_patient_may_book_again_after_a_cancellation_or_a_no_show,
    token_ids_are_matched_case_insensitively,
    token_numbers_count_per_doctor_and_date_and_are_never_reused,
    cancel_and_no_show_ignore_the_request_body,
);

async fn booking_a_free_seat_allocates_a_token_and_names_it_in_location(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(2).await;

    let reply = app
        .try_book("P1", &slot.id, "FOLLOW_UP")
        .await
        .expect_status(201);

    let id = id_of(&reply.body);
    assert!(
        uuid::Uuid::try_parse(&id).is_ok_and(|uuid| uuid.hyphenated().to_string() == id),
        "{id} is a canonical UUID"
    );
    assert_eq!(
        reply.header("location"),
        Some(format!("/tokens/{id}").as_str())
    );
    assert!(reply
        .header("content-type")
        .is_some_and(|value| value.starts_with("application/json")));
    let token = slot.token(&id, 1, "P1", "FOLLOW_UP", ("ALLOCATED", None), T0);
    assert_eq!(
        reply.body,
        json!({"decision": "ALLOCATED", "token": token, "changes": [], "slot": slot.summary(2, 1, 0)})
    );
    let detail = app
        .get(reply.header("location").unwrap())
        .await
        .expect_status(200)
        .body;
    assert_eq!(without_history(&detail), token);
    assert_eq!(
        plain_history(&detail),
        json!([entry(T0, None, "ALLOCATED", "ALLOCATED")])
    );
}

async fn a_full_slot_waitlists_equal_and_lower_priorities_without_bumping(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(2).await;
    let paid_a = app.book("A", &slot.id, "PAID").await;
    let paid_b = app.book("B", &slot.id, "PAID").await;

    let paid_c = app.book("C", &slot.id, "PAID").await;
    let follow_up = app.book("F", &slot.id, "FOLLOW_UP").await;
    let walk_in = app.book("W", &slot.id, "WALK_IN").await;

    for (booked, position) in [(&paid_c, 1), (&follow_up, 2), (&walk_in, 3)] {
        assert_eq!(booked["decision"], "WAITLISTED");
        assert_eq!(booked["changes"], json!([]));
        assert_eq!(booked["token"]["status"], "WAITLISTED");
        assert_eq!(booked["token"]["waitlistPosition"], position);
        assert_eq!(booked["slot"], slot.summary(2, 2, position as u32));
    }
    let detail = app.slot(&slot.id).await;
    assert_eq!(allocated_patients(&detail), ["A", "B"]);
    assert_eq!(
        detail["allocated"],
        json!([paid_a["token"], paid_b["token"]])
    );
    assert_eq!(
        waitlist_patients(&detail),
        [("C".into(), 1), ("F".into(), 2), ("W".into(), 3)]
    );
}

async fn a_higher_priority_bumps_the_largest_priority_number_then_the_latest_arrival(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(3).await;
    let walk_in = app.book("W1", &slot.id, "WALK_IN").await;
    let _online_1 = app.book("O1", &slot.id, "ONLINE").await;
    let online_2 = app.book("O2", &slot.id, "ONLINE").await;

    // The walk-in has the largest priority number, though it came first.
    let paid = app.book("P", &slot.id, "PAID").await;
    assert_eq!(paid["decision"], "BUMPED_LOWER");
    assert_eq!(paid["token"]["status"], "ALLOCATED");
    assert_eq!(
        paid["changes"],
        json!([change(&walk_in, "ALLOCATED", "WAITLISTED", "BUMPED")])
    );
    assert_eq!(paid["slot"], slot.summary(3, 3, 1));

    // Among the online bookings, the latest arrival goes.
    let follow_up = app.book("F", &slot.id, "FOLLOW_UP").await;
    assert_eq!(follow_up["decision"], "BUMPED_LOWER");
    assert_eq!(
        follow_up["changes"],
        json!([change(&online_2, "ALLOCATED", "WAITLISTED", "BUMPED")])
    );

    // Equal priority never bumps.
    let online_3 = app.book("O3", &slot.id, "ONLINE").await;
    assert_eq!(online_3["decision"], "WAITLISTED");
    assert_eq!(online_3["changes"], json!([]));

    let detail = app.slot(&slot.id).await;
    assert_eq!(allocated_patients(&detail), ["P", "F", "O1"]);
    assert_eq!(
        waitlist_patients(&detail),
        [("O2".into(), 1), ("O3".into(), 2), ("W1".into(), 3)]
    );
    let bumped = app.token(&id_of(&walk_in)).await;
    assert_eq!(
        plain_history(&bumped),
        json!([
            entry(T0, None, "ALLOCATED", "ALLOCATED"),
            entry(T0, Some("ALLOCATED"), "WAITLISTED", "BUMPED")
        ])
    );
    assert_eq!(
        without_history(&bumped),
        with(
            &walk_in["token"],
            json!({"status": "WAITLISTED", "waitlistPosition": 3})
        )
    );
}

async fn a_bumped_token_waits_ahead_of_later_arrivals_of_its_priority(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(2).await;
    app.book("O1", &slot.id, "ONLINE").await;
    let online_2 = app.book("O2", &slot.id, "ONLINE").await;
    let online_3 = app.book("O3", &slot.id, "ONLINE").await;
    app.book("W", &slot.id, "WALK_IN").await;
    assert_eq!(online_3["token"]["waitlistPosition"], 1);

    let paid = app.book("P", &slot.id, "PAID").await;

    assert_eq!(
        paid["changes"],
        json!([change(&online_2, "ALLOCATED", "WAITLISTED", "BUMPED")])
    );
    let detail = app.slot(&slot.id).await;
    assert_eq!(
        waitlist_patients(&detail),
        [("O2".into(), 1), ("O3".into(), 2), ("W".into(), 3)]
    );
    assert_eq!(app.token(&id_of(&online_3)).await["waitlistPosition"], 2);
    // The bumped token is the first promoted.
    let cancelled = app.cancel(&id_of(&paid)).await;
    assert_eq!(
        cancelled["changes"],
        json!([change(&online_2, "WAITLISTED", "ALLOCATED", "PROMOTED")])
    );
    assert_eq!(
        waitlist_patients(&app.slot(&slot.id).await),
        [("O3".into(), 1), ("W".into(), 2)]
    );
}

async fn an_emergency_overbooks_a_full_slot_without_bumping_anyone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    let walk_in = app.book("W", &slot.id, "WALK_IN").await;

    let first = app.book("E1", &slot.id, "EMERGENCY").await;
    let second = app.book("E2", &slot.id, "EMERGENCY").await;

    assert_eq!(first["decision"], "OVERBOOKED");
    assert_eq!(first["changes"], json!([]));
    assert_eq!(first["token"]["status"], "ALLOCATED");
    assert_eq!(first["token"]["priority"], 1);
    assert_eq!(first["slot"], slot.summary(1, 2, 0));
    assert_eq!(second["decision"], "OVERBOOKED");
    assert_eq!(second["slot"], slot.summary(1, 3, 0));
    assert_eq!(second["slot"]["overbookedBy"], 2);
    let detail = app.slot(&slot.id).await;
    assert_eq!(allocated_patients(&detail), ["E1", "E2", "W"]);
    assert_eq!(app.token(&id_of(&walk_in)).await["status"], "ALLOCATED");
}

async fn an_emergency_in_a_free_seat_is_simply_allocated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(2).await;

    let emergency = app.book("E", &slot.id, "EMERGENCY").await;

    let token = slot.token(
        &id_of(&emergency),
        1,
        "E",
        "EMERGENCY",
        ("ALLOCATED", None),
        T0,
    );
    assert_eq!(
        emergency,
        json!({"decision": "ALLOCATED", "token": token, "changes": [], "slot": slot.summary(2, 1, 0)})
    );
}

async fn a_zero_capacity_slot_waitlists_everyone_but_emergencies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(0).await;

    let paid = app.book("P", &slot.id, "PAID").await;
    let emergency = app.book("E", &slot.id, "EMERGENCY").await;

    assert_eq!(paid["decision"], "WAITLISTED");
    assert_eq!(paid["token"]["waitlistPosition"], 1);
    assert_eq!(paid["slot"], slot.summary(0, 0, 1));
    assert_eq!(emergency["decision"], "OVERBOOKED");
    assert_eq!(emergency["changes"], json!([]));
    assert_eq!(emergency["slot"], slot.summary(0, 1, 1));
}

async fn freed_seats_absorb_overbooking_before_anyone_is_promoted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    let online = app.book("O", &slot.id, "ONLINE").await;
    let emergency = app.book("E", &slot.id, "EMERGENCY").await;
    let walk_in = app.book("W", &slot.id, "WALK_IN").await;
    assert_eq!(walk_in["decision"], "WAITLISTED");

    let first = app.cancel(&id_of(&online)).await;
    assert_eq!(first["token"]["status"], "CANCELLED");
    assert_eq!(first["changes"], json!([]));
    assert_eq!(first["slot"], slot.summary(1, 1, 1));

    let second = app.no_show(&id_of(&emergency)).await;
    assert_eq!(second["token"]["status"], "NO_SHOW");
    assert_eq!(
        second["changes"],
        json!([change(&walk_in, "WAITLISTED", "ALLOCATED", "PROMOTED")])
    );
    assert_eq!(second["slot"], slot.summary(1, 1, 0));
}

async fn a_no_show_promotes_the_head_of_the_waitlist(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    let online = app.book("O", &slot.id, "ONLINE").await;
    let walk_in = app.book("W", &slot.id, "WALK_IN").await;
    let follow_up = app.book("F", &slot.id, "FOLLOW_UP").await;
    // The follow-up bumped the online booking, which now waits first.
    assert_eq!(
        follow_up["changes"],
        json!([change(&online, "ALLOCATED", "WAITLISTED", "BUMPED")])
    );

    let no_show = app.no_show(&id_of(&follow_up)).await;

    assert_eq!(
        no_show,
        json!({
            "token": with(&follow_up["token"], json!({"status": "NO_SHOW"})),
            "changes": [change(&online, "WAITLISTED", "ALLOCATED", "PROMOTED")],
            "slot": slot.summary(1, 1, 1),
        })
    );
    assert_eq!(app.token(&id_of(&walk_in)).await["waitlistPosition"], 1);
}

async fn cancelling_a_waitlisted_token_moves_later_tokens_up(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    app.book("O", &slot.id, "ONLINE").await;
    let first = app.book("W1", &slot.id, "WALK_IN").await;
    let second = app.book("W2", &slot.id, "WALK_IN").await;
    let third = app.book("W3", &slot.id, "WALK_IN").await;

    let cancelled = app.cancel(&id_of(&first)).await;

    assert_eq!(
        cancelled,
        json!({
            "token": with(&first["token"], json!({"status": "CANCELLED", "waitlistPosition": null})),
            "changes": [],
            "slot": slot.summary(1, 1, 2),
        })
    );
    assert_eq!(app.token(&id_of(&second)).await["waitlistPosition"], 1);
    assert_eq!(app.token(&id_of(&third)).await["waitlistPosition"], 2);
    assert_eq!(
        plain_history(&app.token(&id_of(&first)).await),
        json!([
            entry(T0, None, "WAITLISTED", "WAITLISTED"),
            entry(T0, Some("WAITLISTED"), "CANCELLED", "CANCELLED")
        ])
    );
}

async fn a_no_show_is_refused_for_a_waitlisted_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    app.book("O", &slot.id, "ONLINE").await;
    let waiting = app.book("W", &slot.id, "WALK_IN").await;
    let before_slot = app.slot_text(&slot.id).await;
    let before_token = app.token(&id_of(&waiting)).await;

    let reply = app.try_no_show(&id_of(&waiting)).await;

    assert_problem(&reply, 409, "INVALID_TRANSITION");
    assert_eq!(app.slot_text(&slot.id).await, before_slot);
    assert_eq!(app.token(&id_of(&waiting)).await, before_token);
}

async fn terminal_tokens_refuse_cancel_and_no_show(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(2).await;
    let cancelled = id_of(&app.book("C", &slot.id, "ONLINE").await);
    let missed = id_of(&app.book("N", &slot.id, "ONLINE").await);
    app.cancel(&cancelled).await;
    app.no_show(&missed).await;
    let before_slot = app.slot_text(&slot.id).await;

    for (id, status) in [(&cancelled, "CANCELLED"), (&missed, "NO_SHOW")] {
        let before = app.token(id).await;
        assert_eq!(before["status"], status);

        assert_problem(&app.try_cancel(id).await, 409, "INVALID_TRANSITION");
        assert_problem(&app.try_no_show(id).await, 409, "INVALID_TRANSITION");

        assert_eq!(app.token(id).await, before);
    }
    assert_eq!(app.slot_text(&slot.id).await, before_slot);
}

async fn a_patient_cannot_hold_two_active_tokens_in_one_slot(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    let allocated = app.book("P1", &slot.id, "ONLINE").await;
    let waiting = app.book("P2", &slot.id, "WALK_IN").await;
    let before = app.slot_text(&slot.id).await;

    for (patient, existing, source) in [
        ("P1", &allocated, "EMERGENCY"),
        ("P2", &waiting, "PAID"),
        ("P2", &waiting, "WALK_IN"),
    ] {
        let reply = app.try_book(patient, &slot.id, source).await;

        assert_problem(&reply, 409, "DUPLICATE_BOOKING");
        assert_eq!(reply.body["existingTokenId"], json!(id_of(existing)));
    }
    assert_eq!(app.slot_text(&slot.id).await, before);
    // Another slot is another matter.
    assert_eq!(
        app.book("P1", "D1-09", "ONLINE").await["decision"],
        "ALLOCATED"
    );
}

async fn a_patient_may_book_again_after_a_cancellation_or_a_no_show(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(2).await;
    let first = app.book("P1", &slot.id, "ONLINE").await;
    let missed = app.book("P2", &slot.id, "ONLINE").await;
    app.cancel(&id_of(&first)).await;
    app.no_show(&id_of(&missed)).await;

    let again = app.book("P1", &slot.id, "ONLINE").await;
    let again_missed = app.book("P2", &slot.id, "PAID").await;

    assert_ne!(id_of(&again), id_of(&first));
    assert_eq!(again["decision"], "ALLOCATED");
    assert_eq!(again["token"]["tokenNumber"], 3);
    assert_eq!(again_missed["decision"], "ALLOCATED");
    assert_eq!(again_missed["token"]["tokenNumber"], 4);
    assert_eq!(app.token(&id_of(&first)).await["status"], "CANCELLED");
    assert_eq!(app.token(&id_of(&missed)).await["status"], "NO_SHOW");
}

async fn token_ids_are_matched_case_insensitively(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    let booked = app.book("P1", &slot.id, "ONLINE").await;
    let waiting = app.book("P2", &slot.id, "ONLINE").await;
    let upper = id_of(&booked).to_uppercase();
    assert_ne!(upper, id_of(&booked));

    let read = app.token(&upper).await;
    let cancelled = app.cancel(&upper).await;

    assert_eq!(without_history(&read), booked["token"]);
    assert_eq!(read["tokenId"], json!(id_of(&booked)));
    assert_eq!(cancelled["token"]["tokenId"], json!(id_of(&booked)));
    assert_eq!(
        cancelled["changes"],
        json!([change(&waiting, "WAITLISTED", "ALLOCATED", "PROMOTED")])
    );
    let mixed: String = id_of(&waiting)
        .chars()
        .enumerate()
        .map(|(index, c)| {
            if index % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    assert_eq!(app.no_show(&mixed).await["token"]["status"], "NO_SHOW");
}

async fn token_numbers_count_per_doctor_and_date_and_are_never_reused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tomorrow = app
        .create_slot(&json!({
            "slotId": "D1-TOMORROW",
            "doctorId": "D1",
            "date": "2030-01-16",
            "startTime": "09:00",
            "endTime": "10:00",
            "capacity": 1,
        }))
        .await;
    assert_eq!(tomorrow["date"], "2030-01-16");

    let bookings = [
        ("A", "D1-09", 1),
        ("B", "D1-10", 2),
        ("C", "D2-09", 1),
        ("D", "D1-TOMORROW", 1),
        ("E", "D1-TOMORROW", 2),
        ("F", "D1-12", 3),
        ("G", "D3-11", 1),
        ("H", "D2-12", 2),
    ];
    let mut ids = Vec::new();
    for (patient, slot, number) in bookings {
        let booked = app.book(patient, slot, "WALK_IN").await;
        assert_eq!(
            booked["token"]["tokenNumber"], number,
            "number of {patient} in {slot}"
        );
        ids.push(id_of(&booked));
    }
    // A cancelled token's number is not handed out again.
    app.cancel(&ids[5]).await;
    assert_eq!(
        app.book("I", "D1-12", "ONLINE").await["token"]["tokenNumber"],
        4
    );
    assert_eq!(
        app.book("J", "D1-TOMORROW", "ONLINE").await["token"]["tokenNumber"],
        3
    );
    for (id, (patient, _, number)) in ids.iter().zip(bookings) {
        let token = app.token(id).await;
        assert_eq!(
            (token["patientId"].as_str(), token["tokenNumber"].as_u64()),
            (Some(patient), Some(number))
        );
    }
    assert_eq!(app.slot("D1-09").await["date"], TODAY);
}

async fn cancel_and_no_show_ignore_the_request_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(2).await;
    let first = id_of(&app.book("P1", &slot.id, "ONLINE").await);
    let second = id_of(&app.book("P2", &slot.id, "ONLINE").await);

    let cancelled = app
        .raw(
            Method::POST,
            &format!("/tokens/{first}/cancel"),
            Some("text/plain"),
            "not json at all",
        )
        .await
        .expect_status(200);
    let missed = app
        .raw(
            Method::POST,
            &format!("/tokens/{second}/no-show"),
            Some("application/json"),
            r#"{"status": "ALLOCATED"}"#,
        )
        .await
        .expect_status(200);

    assert_eq!(cancelled.body["token"]["status"], "CANCELLED");
    assert_eq!(missed.body["token"]["status"], "NO_SHOW");
    assert!(missed
        .header("content-type")
        .is_some_and(|value| value.starts_with("application/json")));
}
