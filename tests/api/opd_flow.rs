//! The OPD day's actions, call order, the doctor's queue and the board:
//! one rule per test, on every backend.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, id_of, Backend, TestApp, TODAY};

const AT_0900: &str = "2030-01-15T09:00:00Z";

/// Books patients into a new slot of a fresh doctor, returning the slot's
/// doctor, the slot id and the token ids.
async fn booked(app: &TestApp, capacity: u32, sources: &[&str]) -> (String, String, Vec<String>) {
    let slot = app.new_slot(capacity).await;
    let mut ids = Vec::new();
    for (n, source) in sources.iter().enumerate() {
        ids.push(id_of(&app.book(&format!("P{n}"), &slot.id, source).await));
    }
    (slot.doctor, slot.id, ids)
}

fn reasons(detail: &Value) -> Vec<(Value, Value, String)> {
    detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["from"].clone(),
                entry["to"].clone(),
                entry["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

backend_tests!(
    a_patient_goes_through_check_in_call_start_and_complete,
    a_checked_in_patient_has_a_queue_position_and_an_estimate,
    a_patient_booked_ahead_and_not_arrived_counts_in_estimates_until_the_slot_ends,
    call_next_calls_in_call_order_emergencies_first,
    a_doctor_calls_one_patient_at_a_time_over_all_slots,
    call_next_on_an_empty_queue_or_unknown_doctor_is_refused,
    a_skipped_patient_returns_and_the_last_skip_is_a_no_show,
    a_bump_takes_a_patient_not_arrived_before_one_in_the_hall,
    a_waitlisted_patient_checks_in_and_is_promoted_into_the_call_queue,
    a_completed_consultation_keeps_its_seat,
    check_in_call_and_no_show_only_on_the_slots_date,
    the_board_shows_numbers_and_no_patient_ids,
    a_transition_not_in_the_table_is_refused,
);

async fn a_patient_goes_through_check_in_call_start_and_complete(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let (_, _, ids) = booked(&app, 2, &["ONLINE"]).await;
    let token = &ids[0];
    let checked = app.act(token, "check-in").await;
    assert_eq!(checked["token"]["status"], "CHECKED_IN");
    assert_eq!(checked["token"]["checkedInAt"], AT_0900);
    assert_eq!(checked["changes"], json!([]));
    assert_eq!(app.act(token, "call").await["token"]["status"], "CALLED");
    assert_eq!(
        app.act(token, "start").await["token"]["status"],
        "IN_CONSULTATION"
    );
    let done = app.act(token, "complete").await;
    assert_eq!(done["token"]["status"], "COMPLETED");
    assert_eq!(done["token"]["queuePosition"], Value::Null);
    assert_eq!(done["token"]["estimatedCallAt"], Value::Null);
    let detail = app.token(token).await;
    assert_eq!(detail["checkedInAt"], AT_0900);
    assert_eq!(
        reasons(&detail),
        vec![
            (Value::Null, json!("ALLOCATED"), "ALLOCATED".into()),
            (json!("ALLOCATED"), json!("CHECKED_IN"), "CHECKED_IN".into()),
            (json!("CHECKED_IN"), json!("CALLED"), "CALLED".into()),
            (json!("CALLED"), json!("IN_CONSULTATION"), "STARTED".into()),
            (
                json!("IN_CONSULTATION"),
                json!("COMPLETED"),
                "COMPLETED".into()
            ),
        ]
    );
}

async fn a_checked_in_patient_has_a_queue_position_and_an_estimate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set("2030-01-15T08:00:00Z");
    // Capacity 4 over an hour: 15 minutes a patient before any is seen.
    let (doctor, _, ids) = booked(&app, 4, &["ONLINE", "ONLINE", "ONLINE"]).await;
    for id in &ids {
        app.act(id, "check-in").await;
    }
    let queue = app.queue(&doctor).await;
    let listed: Vec<(Value, Value)> = queue["callQueue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["queuePosition"].clone(), t["estimatedCallAt"].clone()))
        .collect();
    // Nobody is called before the slot starts at 09:00; after that, one
    // mean consultation per patient ahead.
    assert_eq!(
        listed,
        vec![
            (json!(1), json!("2030-01-15T09:00:00Z")),
            (json!(2), json!("2030-01-15T09:00:00Z")),
            (json!(3), json!("2030-01-15T09:00:00Z")),
        ]
    );
    app.clock.set("2030-01-15T09:00:00Z");
    let second = app.token(&ids[1]).await;
    assert_eq!(second["queuePosition"], 2);
    assert_eq!(second["estimatedCallAt"], "2030-01-15T09:15:00Z");
    // With the first patient in consultation for 5 minutes, 10 remain.
    app.act(&ids[0], "call").await;
    app.act(&ids[0], "start").await;
    app.clock.set("2030-01-15T09:05:00Z");
    let second = app.token(&ids[1]).await;
    assert_eq!(second["queuePosition"], 1);
    assert_eq!(second["estimatedCallAt"], "2030-01-15T09:15:00Z");
    let third = app.token(&ids[2]).await;
    assert_eq!(third["queuePosition"], 2);
    assert_eq!(third["estimatedCallAt"], "2030-01-15T09:30:00Z");
    // A 25-minute consultation moves the mean: (2 × 15 + 25) ÷ 3.
    app.clock.set("2030-01-15T09:25:00Z");
    app.act(&ids[0], "complete").await;
    let third = app.token(&ids[2]).await;
    assert_eq!(third["estimatedCallAt"], "2030-01-15T09:43:20Z");
    // The others have no position.
    assert_eq!(app.token(&ids[0]).await["queuePosition"], Value::Null);
}

async fn a_patient_booked_ahead_and_not_arrived_counts_in_estimates_until_the_slot_ends(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.clock.set("2030-01-15T08:50:00Z");
    // Capacity 4 over 09:00-10:00: 15 minutes a patient. P0 booked first
    // and has not come; P3 booked last and has not come either.
    let (doctor, _, ids) = booked(&app, 4, &["ONLINE", "ONLINE", "ONLINE", "ONLINE"]).await;
    app.act(&ids[1], "check-in").await;
    app.act(&ids[2], "check-in").await;
    let estimates = |queue: Value| -> Vec<Value> {
        queue["callQueue"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["estimatedCallAt"].clone())
            .collect()
    };
    // Before the slot starts P0 is expected: a whole consultation ahead of
    // both; P3, behind them, counts for neither.
    assert_eq!(
        estimates(app.queue(&doctor).await),
        vec![json!("2030-01-15T09:05:00Z"), json!("2030-01-15T09:20:00Z")]
    );
    // Once the slot runs, P0 may still come late, or not at all: half.
    app.clock.set("2030-01-15T09:00:00Z");
    assert_eq!(
        estimates(app.queue(&doctor).await),
        vec![json!("2030-01-15T09:07:30Z"), json!("2030-01-15T09:22:30Z")]
    );
    // Once it has ended, P0 is not expected any more.
    app.clock.set("2030-01-15T10:00:00Z");
    assert_eq!(
        estimates(app.queue(&doctor).await),
        vec![json!("2030-01-15T10:00:00Z"), json!("2030-01-15T10:15:00Z")]
    );
}

async fn call_next_calls_in_call_order_emergencies_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let doctor = format!("DR-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    for (slot, start, end) in [("A", "09:00", "10:00"), ("B", "10:00", "11:00")] {
        app.create_slot(&json!({
            "slotId": format!("{doctor}-{slot}"), "doctorId": doctor,
            "startTime": start, "endTime": end, "capacity": 5
        }))
        .await;
    }
    let slot_a = format!("{doctor}-A");
    let slot_b = format!("{doctor}-B");
    let walk_in_a = id_of(&app.book("W", &slot_a, "WALK_IN").await);
    let paid_a = id_of(&app.book("P", &slot_a, "PAID").await);
    let emergency_b = id_of(&app.book("E", &slot_b, "EMERGENCY").await);
    let online_b = id_of(&app.book("O", &slot_b, "ONLINE").await);
    let late_paid_a = id_of(&app.book("Q", &slot_a, "PAID").await);
    // Arrival at the desk does not change the order: booking order does.
    for id in [&online_b, &late_paid_a, &walk_in_a, &emergency_b, &paid_a] {
        app.act(id, "check-in").await;
    }
    let mut called = Vec::new();
    for _ in 0..5 {
        let reply = app.try_call_next(&doctor).await.expect_status(200);
        let id = id_of(&reply.body);
        assert_eq!(reply.body["token"]["status"], "CALLED");
        app.act(&id, "start").await;
        app.act(&id, "complete").await;
        called.push(id);
    }
    assert_eq!(
        called,
        vec![emergency_b, paid_a, late_paid_a, walk_in_a, online_b]
    );
}

async fn a_doctor_calls_one_patient_at_a_time_over_all_slots(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let doctor = format!("DR-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    for (slot, start, end) in [("A", "09:00", "10:00"), ("B", "10:00", "11:00")] {
        app.create_slot(&json!({
            "slotId": format!("{doctor}-{slot}"), "doctorId": doctor,
            "startTime": start, "endTime": end, "capacity": 5
        }))
        .await;
    }
    let first = id_of(&app.book("P1", &format!("{doctor}-A"), "ONLINE").await);
    let second = id_of(&app.book("P2", &format!("{doctor}-B"), "ONLINE").await);
    app.act(&first, "check-in").await;
    app.act(&second, "check-in").await;
    app.act(&first, "call").await;
    for reply in [
        app.try_act(&second, "call").await,
        app.try_call_next(&doctor).await,
    ] {
        assert_problem(&reply, 409, "DOCTOR_BUSY");
        assert_eq!(reply.body["currentTokenId"], json!(first));
    }
    // Still busy in consultation; free once it is completed.
    app.act(&first, "start").await;
    assert_problem(&app.try_act(&second, "call").await, 409, "DOCTOR_BUSY");
    app.act(&first, "complete").await;
    assert_eq!(app.act(&second, "call").await["token"]["status"], "CALLED");
    // Skipping frees the doctor too.
    app.act(&second, "skip").await;
    assert_eq!(app.queue(&doctor).await["current"], Value::Null);
}

async fn call_next_on_an_empty_queue_or_unknown_doctor_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (doctor, _, ids) = booked(&app, 2, &["ONLINE"]).await;
    assert_problem(&app.try_call_next(&doctor).await, 409, "QUEUE_EMPTY");
    assert_problem(&app.try_call_next("NOBODY").await, 404, "DOCTOR_NOT_FOUND");
    assert_problem(
        &app.get("/doctors/NOBODY/queue").await,
        404,
        "DOCTOR_NOT_FOUND",
    );
    // DOCTOR_BUSY comes before QUEUE_EMPTY.
    app.act(&ids[0], "check-in").await;
    app.act(&ids[0], "call").await;
    assert_problem(&app.try_call_next(&doctor).await, 409, "DOCTOR_BUSY");
}

async fn a_skipped_patient_returns_and_the_last_skip_is_a_no_show(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    // Capacity 1: the walk-in waits for the seat.
    let (doctor, slot, ids) = booked(&app, 1, &["ONLINE", "WALK_IN"]).await;
    let (token, waiting) = (&ids[0], &ids[1]);
    app.act(token, "check-in").await;
    app.act(token, "call").await;
    let skipped = app.act(token, "skip").await;
    assert_eq!(skipped["token"]["status"], "SKIPPED");
    assert_eq!(skipped["changes"], json!([]));
    assert_eq!(
        app.queue(&doctor).await["skipped"][0]["tokenId"],
        json!(token)
    );
    app.clock.set("2030-01-15T09:10:00Z");
    let back = app.act(token, "check-in").await;
    assert_eq!(back["token"]["status"], "CHECKED_IN");
    // The first check-in's time is kept.
    assert_eq!(back["token"]["checkedInAt"], AT_0900);
    app.act(token, "call").await;
    // The second skip (--max-skips 2) is a no-show, and frees the seat.
    let last = app.act(token, "skip").await;
    assert_eq!(last["token"]["status"], "NO_SHOW");
    assert_eq!(last["changes"][0]["tokenId"], json!(waiting));
    assert_eq!(last["changes"][0]["reason"], "PROMOTED");
    let detail = app.token(token).await;
    let reasons: Vec<String> = reasons(&detail).into_iter().map(|(_, _, r)| r).collect();
    assert_eq!(
        reasons,
        [
            "ALLOCATED",
            "CHECKED_IN",
            "CALLED",
            "SKIPPED",
            "RETURNED",
            "CALLED",
            "NO_SHOW"
        ]
    );
    assert_eq!(app.slot(&slot).await["allocatedCount"], 1);
}

async fn a_bump_takes_a_patient_not_arrived_before_one_in_the_hall(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, slot, ids) = booked(&app, 2, &["WALK_IN", "WALK_IN"]).await;
    // The earlier walk-in has not arrived; the later one is in the hall.
    app.act(&ids[1], "check-in").await;
    let paid = app.book("PX", &slot, "PAID").await;
    assert_eq!(paid["decision"], "BUMPED_LOWER");
    assert_eq!(paid["changes"][0]["tokenId"], json!(ids[0]));
    // Now the one in the hall is the only walk-in seated: bumped next,
    // keeping its check-in.
    let second = app.book("PY", &slot, "PAID").await;
    assert_eq!(second["changes"][0]["tokenId"], json!(ids[1]));
    assert_eq!(second["changes"][0]["from"], "CHECKED_IN");
    let bumped = app.token(&ids[1]).await;
    assert_eq!(bumped["status"], "WAITLISTED");
    assert_ne!(bumped["checkedInAt"], Value::Null);
    // Called patients are never bumped.
    let called = id_of(&paid);
    app.act(&called, "check-in").await;
    app.act(&called, "call").await;
    let third = app.book("PZ", &slot, "FOLLOW_UP").await;
    assert_eq!(third["decision"], "WAITLISTED");
}

async fn a_waitlisted_patient_checks_in_and_is_promoted_into_the_call_queue(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (doctor, _, ids) = booked(&app, 1, &["ONLINE", "ONLINE"]).await;
    let waiting = &ids[1];
    let checked = app.act(waiting, "check-in").await;
    assert_eq!(checked["token"]["status"], "WAITLISTED");
    assert_ne!(checked["token"]["checkedInAt"], Value::Null);
    assert_eq!(
        reasons(&app.token(waiting).await)[1],
        (
            json!("WAITLISTED"),
            json!("WAITLISTED"),
            "CHECKED_IN".into()
        )
    );
    // A second check-in while waiting is refused.
    assert_problem(
        &app.try_act(waiting, "check-in").await,
        409,
        "INVALID_TRANSITION",
    );
    let cancelled = app.cancel(&ids[0]).await;
    assert_eq!(cancelled["changes"][0]["to"], "CHECKED_IN");
    assert_eq!(cancelled["changes"][0]["reason"], "PROMOTED");
    let queue = app.queue(&doctor).await;
    assert_eq!(queue["callQueue"][0]["tokenId"], json!(waiting));
    assert_eq!(queue["callQueue"][0]["queuePosition"], 1);
    assert_eq!(queue["cancelledCount"], 1);
}

async fn a_completed_consultation_keeps_its_seat(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (doctor, slot, ids) = booked(&app, 1, &["ONLINE"]).await;
    for action in ["check-in", "call", "start", "complete"] {
        app.act(&ids[0], action).await;
    }
    let summary = app.slot(&slot).await;
    assert_eq!(summary["allocatedCount"], 1);
    assert_eq!(summary["allocated"][0]["status"], "COMPLETED");
    // The slot is full: the next booking waits.
    assert_eq!(
        app.book("P9", &slot, "ONLINE").await["decision"],
        "WAITLISTED"
    );
    assert_eq!(app.queue(&doctor).await["completedCount"], 1);
    // A completed token is final.
    assert_problem(&app.try_cancel(&ids[0]).await, 409, "INVALID_TRANSITION");
}

async fn check_in_call_and_no_show_only_on_the_slots_date(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doctor = format!("DR-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    app.create_slot(&json!({
        "slotId": format!("{doctor}-T"), "doctorId": doctor, "date": "2030-01-16",
        "startTime": "09:00", "endTime": "10:00", "capacity": 2
    }))
    .await;
    let token = id_of(&app.book("P1", &format!("{doctor}-T"), "ONLINE").await);
    for action in ["check-in", "no-show"] {
        assert_problem(&app.try_act(&token, action).await, 409, "NOT_TODAY");
    }
    // INVALID_TRANSITION comes first.
    assert_problem(
        &app.try_act(&token, "call").await,
        409,
        "INVALID_TRANSITION",
    );
    // Tomorrow comes.
    app.clock.set("2030-01-16T09:00:00Z");
    app.act(&token, "check-in").await;
    app.clock.set("2030-01-17T09:00:00Z");
    assert_problem(&app.try_act(&token, "call").await, 409, "NOT_TODAY");
    // Cancelling is not bound to the date.
    assert_eq!(app.cancel(&token).await["token"]["status"], "CANCELLED");
}

async fn the_board_shows_numbers_and_no_patient_ids(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (doctor, _, ids) = booked(&app, 9, &["ONLINE"; 7]).await;
    for id in &ids {
        app.act(id, "check-in").await;
    }
    app.try_call_next(&doctor).await.expect_status(200);
    let reply = app
        .get(&format!("/board?doctorId={doctor}&doctorId=NOBODY"))
        .await;
    let board = reply.expect_status(200).body;
    assert!(
        !board.to_string().contains("\"P"),
        "no patient ids: {board}"
    );
    assert_eq!(
        board,
        json!({"date": TODAY, "doctors": [
            {"doctorId": doctor, "nowServing": {"tokenNumber": 1, "status": "CALLED"},
             "next": [2, 3, 4, 5, 6], "waiting": 6},
            {"doctorId": "NOBODY", "nowServing": null, "next": [], "waiting": 0},
        ]})
    );
    // Without a doctor: every doctor with a slot today, the demo's included.
    let all = app.get("/board").await.expect_status(200).body;
    let doctors: Vec<&str> = all["doctors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["doctorId"].as_str().unwrap())
        .collect();
    assert!(doctors.contains(&"D1") && doctors.contains(&doctor.as_str()));
    let mut sorted = doctors.clone();
    sorted.sort();
    assert_eq!(doctors, sorted);
}

async fn a_transition_not_in_the_table_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, _, ids) = booked(&app, 2, &["ONLINE"]).await;
    let token = &ids[0];
    for action in ["call", "start", "complete", "skip"] {
        assert_problem(&app.try_act(token, action).await, 409, "INVALID_TRANSITION");
    }
    app.act(token, "check-in").await;
    app.act(token, "call").await;
    app.act(token, "start").await;
    // A patient in consultation cannot be cancelled or marked a no-show.
    for action in ["cancel", "no-show", "check-in", "skip"] {
        assert_problem(&app.try_act(token, action).await, 409, "INVALID_TRANSITION");
    }
}

durable_backend_tests!(a_restart_keeps_check_ins_skips_and_the_doctors_pace);

async fn a_restart_keeps_check_ins_skips_and_the_doctors_pace(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let (doctor, _, ids) = booked(&app, 4, &["ONLINE", "ONLINE", "ONLINE"]).await;
    for id in &ids {
        app.act(id, "check-in").await;
    }
    for action in ["call", "start"] {
        app.act(&ids[0], action).await;
    }
    app.clock.set("2030-01-15T09:25:00Z");
    app.act(&ids[0], "complete").await;
    app.act(&ids[1], "call").await;
    app.act(&ids[1], "skip").await;
    let before = app.queue(&doctor).await;
    let app = app.restart().await;
    assert_eq!(app.queue(&doctor).await, before);
    // The skip count survived: the second skip is the last.
    app.act(&ids[1], "check-in").await;
    app.act(&ids[1], "call").await;
    assert_eq!(app.act(&ids[1], "skip").await["token"]["status"], "NO_SHOW");
    assert_eq!(app.token(&ids[1]).await["checkedInAt"], AT_0900);
}
