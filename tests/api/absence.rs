//! A doctor's absence: the doctor's day closed in one call, every active
//! token cancelled with reason DOCTOR_ABSENT, told as events and listed for
//! the desk; on every backend.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, assert_validation, id_of, Backend, Reply, TestApp, TODAY};

const AT_0900: &str = "2030-01-15T09:00:00Z";

/// A doctor of its own with two slots today: 09:00–10:00 and 10:00–11:00.
struct Day {
    doctor: String,
    morning: String,
    late: String,
}

async fn day(app: &TestApp, morning_seats: u32, late_seats: u32) -> Day {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let day = Day {
        doctor: format!("DR-{suffix}"),
        morning: format!("AM-{suffix}"),
        late: format!("LT-{suffix}"),
    };
    for (slot, start, end, seats) in [
        (&day.morning, "09:00", "10:00", morning_seats),
        (&day.late, "10:00", "11:00", late_seats),
    ] {
        app.create_slot(&json!({
            "slotId": slot, "doctorId": day.doctor, "date": TODAY,
            "startTime": start, "endTime": end, "capacity": seats,
        }))
        .await;
    }
    day
}

async fn try_absence(app: &TestApp, doctor: &str, body: &Value) -> Reply {
    app.post_json(&format!("/doctors/{doctor}/absences"), body)
        .await
}

async fn absence(app: &TestApp, doctor: &str) -> Value {
    try_absence(app, doctor, &json!({"date": TODAY}))
        .await
        .expect_status(200)
        .body
}

/// Patient `patient`'s token in `slot`, taken through `steps`.
async fn token(app: &TestApp, patient: &str, slot: &str, source: &str, steps: &[&str]) -> Value {
    let booked = app.book(patient, slot, source).await;
    for step in steps {
        app.act(&id_of(&booked), step).await;
    }
    app.token(&id_of(&booked)).await
}

/// The desk's line for a cancelled token.
fn line(token: &Value, from: &str) -> Value {
    json!({
        "tokenId": token["tokenId"],
        "tokenNumber": token["tokenNumber"],
        "patientId": token["patientId"],
        "slotId": token["slotId"],
        "source": token["source"],
        "from": from,
    })
}

/// The newest history entry of a token: (from, to, reason, actor).
async fn last_change(app: &TestApp, token: &Value) -> Value {
    let detail = app.token(&id_of(token)).await;
    let last = detail["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    json!([last["from"], last["to"], last["reason"], last["actor"]])
}

backend_tests!(
    an_absence_cancels_every_active_token_of_the_day_and_lists_them_for_the_desk,
    a_consultation_in_progress_is_left_to_finish,
    a_second_absence_changes_nothing_and_says_so,
    a_slot_closed_before_is_not_closed_again_but_its_patients_are_cancelled,
    reports_fhir_and_metrics_count_the_cancellations,
    bad_input_unknown_doctors_and_dates_without_slots_change_nothing,
);

durable_backend_tests!(an_absence_survives_a_restart);

async fn an_absence_cancels_every_active_token_of_the_day_and_lists_them_for_the_desk(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let day = day(&app, 4, 2).await;
    // Seen before the absence: stays COMPLETED and is not listed.
    let seen = token(
        &app,
        "P7",
        &day.late,
        "ONLINE",
        &["check-in", "call", "start", "complete"],
    )
    .await;
    let allocated = token(&app, "P1", &day.morning, "ONLINE", &[]).await;
    let checked_in = token(&app, "P2", &day.morning, "ONLINE", &["check-in"]).await;
    let skipped = token(
        &app,
        "P3",
        &day.morning,
        "ONLINE",
        &["check-in", "call", "skip"],
    )
    .await;
    let called = token(&app, "P4", &day.morning, "PAID", &["check-in", "call"]).await;
    let waitlisted = token(&app, "P5", &day.morning, "WALK_IN", &[]).await;
    let late = token(&app, "P6", &day.late, "FOLLOW_UP", &[]).await;
    assert_eq!(waitlisted["status"], "WAITLISTED");
    let events = app.url(&format!("/events?doctorId={}", day.doctor));
    let mut stream = crate::common::EventStream::open(&app.client, &events, None).await;

    let answer = absence(&app, &day.doctor).await;

    assert_eq!(answer["doctorId"], json!(day.doctor));
    assert_eq!(answer["date"], TODAY);
    assert_eq!(answer["changed"], true);
    assert_eq!(answer["inConsultation"], Value::Null);
    // Slot by slot; seat holders in service order (priority, then
    // arrival), then the waitlist.
    assert_eq!(
        answer["cancelled"],
        json!([
            line(&called, "CALLED"),
            line(&allocated, "ALLOCATED"),
            line(&checked_in, "CHECKED_IN"),
            line(&skipped, "SKIPPED"),
            line(&waitlisted, "WAITLISTED"),
            line(&late, "ALLOCATED"),
        ])
    );
    let slots = answer["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2);
    assert_eq!(slots[0]["slotId"], json!(day.morning));
    assert_eq!(slots[1]["slotId"], json!(day.late));
    for slot in slots {
        assert_eq!(slot["closed"], true);
        assert_eq!(slot["closesAt"], AT_0900);
        assert_eq!(slot["waitlistCount"], 0);
    }
    // Only the completed consultation still holds its seat.
    assert_eq!(slots[0]["allocatedCount"], 0);
    assert_eq!(slots[1]["allocatedCount"], 1);
    for token in [
        &allocated,
        &checked_in,
        &skipped,
        &called,
        &waitlisted,
        &late,
    ] {
        assert_eq!(
            last_change(&app, token).await,
            json!([token["status"], "CANCELLED", "DOCTOR_ABSENT", "anonymous"]),
            "{token}"
        );
    }
    assert_eq!(app.token(&id_of(&seen)).await["status"], "COMPLETED");
    // One change: each slot's CLOSED event before its token events.
    let frames = stream.events(8).await;
    let told: Vec<(String, Value, Value)> = frames
        .iter()
        .map(|frame| {
            let data = frame.data.clone().unwrap();
            let what = if frame.event.as_deref() == Some("slot") {
                data["slot"]["slotId"].clone()
            } else {
                data["tokenId"].clone()
            };
            (frame.event.clone().unwrap(), what, data["reason"].clone())
        })
        .collect();
    let token_event = |token: &Value| {
        (
            "token".to_owned(),
            token["tokenId"].clone(),
            json!("DOCTOR_ABSENT"),
        )
    };
    assert_eq!(
        told,
        vec![
            ("slot".to_owned(), json!(day.morning), json!("CLOSED")),
            token_event(&called),
            token_event(&allocated),
            token_event(&checked_in),
            token_event(&skipped),
            token_event(&waitlisted),
            ("slot".to_owned(), json!(day.late), json!("CLOSED")),
            token_event(&late),
        ]
    );
    let data = frames[1].data.clone().unwrap();
    assert_eq!(
        (data["from"].clone(), data["to"].clone()),
        (json!("CALLED"), json!("CANCELLED"))
    );
    // Nothing more can be booked, and the doctor has nobody left to call.
    for slot in [&day.morning, &day.late] {
        assert_problem(
            &app.try_book("P9", slot, "EMERGENCY").await,
            409,
            "SLOT_CLOSED",
        );
    }
    assert_problem(&app.try_call_next(&day.doctor).await, 409, "QUEUE_EMPTY");
    let queue = app.queue(&day.doctor).await;
    assert_eq!(queue["current"], Value::Null);
    assert_eq!(queue["callQueue"], json!([]));
    assert_eq!(queue["notArrived"], json!([]));
    assert_eq!(queue["waitlist"], json!([]));
    assert_eq!(queue["cancelledCount"], 6);
    assert_eq!(queue["completedCount"], 1);
}

async fn a_consultation_in_progress_is_left_to_finish(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let day = day(&app, 3, 1).await;
    let with_doctor = token(
        &app,
        "P1",
        &day.morning,
        "ONLINE",
        &["check-in", "call", "start"],
    )
    .await;
    let waiting = token(&app, "P2", &day.morning, "ONLINE", &["check-in"]).await;

    let answer = absence(&app, &day.doctor).await;

    assert_eq!(answer["cancelled"], json!([line(&waiting, "CHECKED_IN")]));
    assert_eq!(answer["inConsultation"]["tokenId"], with_doctor["tokenId"]);
    assert_eq!(answer["inConsultation"]["status"], "IN_CONSULTATION");
    assert_eq!(answer["slots"][0]["closed"], true);
    let done = app.act(&id_of(&with_doctor), "complete").await;
    assert_eq!(done["token"]["status"], "COMPLETED");
    // The doctor is free, and nobody is left to call.
    assert_problem(&app.try_call_next(&day.doctor).await, 409, "QUEUE_EMPTY");
}

async fn a_second_absence_changes_nothing_and_says_so(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let day = day(&app, 2, 2).await;
    token(&app, "P1", &day.morning, "ONLINE", &[]).await;
    let first = absence(&app, &day.doctor).await;
    let newest = app.service.events_after(0, 1_000).await.unwrap().newest;
    let slot_before = app.slot_text(&day.morning).await;

    let second = absence(&app, &day.doctor).await;

    assert_eq!(first["changed"], true);
    assert_eq!(second["changed"], false);
    assert_eq!(second["cancelled"], json!([]));
    assert_eq!(second["inConsultation"], Value::Null);
    assert_eq!(second["slots"], first["slots"]);
    assert_eq!(
        app.service.events_after(0, 1_000).await.unwrap().newest,
        newest
    );
    assert_eq!(app.slot_text(&day.morning).await, slot_before);
}

async fn a_slot_closed_before_is_not_closed_again_but_its_patients_are_cancelled(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let day = day(&app, 2, 2).await;
    // Closing keeps the patients in the hall: the doctor would see them.
    let in_the_hall = token(&app, "P1", &day.morning, "ONLINE", &["check-in"]).await;
    app.send(app.request(Method::POST, &format!("/slots/{}/close", day.morning)))
        .await
        .expect_status(200);
    let closed_at = app.slot(&day.morning).await["closesAt"].clone();
    let events = app.url(&format!("/events?slotId={}", day.morning));
    let mut stream = crate::common::EventStream::open(&app.client, &events, None).await;
    app.clock.advance(jiff::SignedDuration::from_mins(10));

    let answer = absence(&app, &day.doctor).await;

    assert_eq!(answer["changed"], true);
    assert_eq!(
        answer["cancelled"],
        json!([line(&in_the_hall, "CHECKED_IN")])
    );
    // It keeps the moment it closed, and tells no second closing.
    assert_eq!(answer["slots"][0]["closesAt"], closed_at);
    let frame = stream.events(1).await.remove(0);
    assert_eq!(frame.event.as_deref(), Some("token"));
    assert_eq!(frame.data.unwrap()["reason"], "DOCTOR_ABSENT");
    assert_eq!(answer["slots"][1]["closesAt"], "2030-01-15T09:10:00Z");
}

async fn reports_fhir_and_metrics_count_the_cancellations(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let day = day(&app, 2, 2).await;
    let booked = token(&app, "P1", &day.morning, "ONLINE", &[]).await;
    token(&app, "P2", &day.late, "ONLINE", &["check-in"]).await;

    absence(&app, &day.doctor).await;

    let report = app
        .get(&format!(
            "/reports/day?date={TODAY}&doctorId={}",
            day.doctor
        ))
        .await
        .expect_status(200)
        .body;
    assert_eq!(
        report["doctors"][0]["figures"]["outcomes"],
        json!({"COMPLETED": 0, "NO_SHOW": 0, "CANCELLED": 2, "EXPIRED": 0})
    );
    let appointment = app
        .get(&format!("/fhir/Appointment/{}", id_of(&booked)))
        .await
        .expect_status(200)
        .body;
    assert_eq!(appointment["status"], "cancelled");
    assert_eq!(appointment["cancelationReason"]["text"], "DOCTOR_ABSENT");
    assert_eq!(
        appointment["cancelationReason"]["coding"][0]["code"],
        "DOCTOR_ABSENT"
    );
    // Counted from the events, a moment after the answer.
    let series = "opd_token_transitions_total{to=\"CANCELLED\",reason=\"DOCTOR_ABSENT\"}";
    let mut text = String::new();
    for _ in 0..100 {
        text = app.get("/metrics").await.text;
        let count = text
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok());
        if count == Some(2.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never came:\n{text}");
}

async fn bad_input_unknown_doctors_and_dates_without_slots_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let day = day(&app, 2, 2).await;
    token(&app, "P1", &day.morning, "ONLINE", &[]).await;
    let before = app.slot_text(&day.morning).await;
    let path = format!("/doctors/{}/absences", day.doctor);

    assert_validation(&try_absence(&app, &day.doctor, &json!({})).await, &["date"]);
    assert_validation(
        &try_absence(&app, &day.doctor, &json!({"date": "2030-02-30"})).await,
        &["date"],
    );
    assert_validation(
        &try_absence(&app, &day.doctor, &json!({"date": 20300115})).await,
        &["date"],
    );
    let not_json = app
        .raw(Method::POST, &path, Some("application/json"), "{not json")
        .await;
    assert_problem(&not_json, 400, "MALFORMED_REQUEST");
    let plain = app
        .raw(
            Method::POST,
            &path,
            Some("text/plain"),
            "{\"date\": \"2030-01-15\"}",
        )
        .await;
    assert_problem(&plain, 415, "UNSUPPORTED_MEDIA_TYPE");
    assert_problem(
        &try_absence(&app, "NOBODY", &json!({"date": TODAY})).await,
        404,
        "DOCTOR_NOT_FOUND",
    );
    assert_problem(
        &try_absence(&app, "not%20an%20id", &json!({"date": TODAY})).await,
        404,
        "DOCTOR_NOT_FOUND",
    );
    let no_slot = try_absence(&app, &day.doctor, &json!({"date": "2030-01-16"})).await;
    assert_problem(&no_slot, 404, "SLOT_NOT_FOUND");

    assert_eq!(app.slot_text(&day.morning).await, before);
    assert_eq!(app.slot(&day.late).await["closed"], false);
}

async fn an_absence_survives_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let day = day(&app, 2, 2).await;
    let booked = token(&app, "P1", &day.morning, "ONLINE", &["check-in"]).await;
    absence(&app, &day.doctor).await;

    let app = app.restart().await;

    assert_eq!(app.token(&id_of(&booked)).await["status"], "CANCELLED");
    assert_eq!(
        last_change(&app, &booked).await,
        json!(["CHECKED_IN", "CANCELLED", "DOCTOR_ABSENT", "anonymous"])
    );
    assert_eq!(app.slot(&day.morning).await["closed"], true);
    assert_eq!(app.slot(&day.late).await["closed"], true);
    assert_problem(
        &app.try_book("P2", &day.late, "ONLINE").await,
        409,
        "SLOT_CLOSED",
    );
    assert_eq!(absence(&app, &day.doctor).await["changed"], false);
}

/// Only an admin records an absence: the desk, a doctor and a viewer get
/// 403 and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_records_an_absence() {
    const ADMIN: &str = "admin-key-0123456789abcdef";
    let app = TestApp::with(Backend::Memory)
        .settings(|config| {
            config.api_keys = Some(
                "root admin admin-key-0123456789abcdef; desk front-desk desk-key-0123456789abcdef; \
                 dr-one doctor:D1 doctor-d1-key-0123456789; watcher viewer viewer-key-0123456789abcdef"
                    .parse()
                    .unwrap(),
            );
        })
        .spawn()
        .await;
    let absence_as = |key: Option<&'static str>| {
        let app = &app;
        async move {
            let mut request = app
                .request(Method::POST, "/doctors/D1/absences")
                .json(&json!({"date": TODAY}));
            if let Some(key) = key {
                request = request.header("authorization", format!("Bearer {key}"));
            }
            app.send(request).await
        }
    };

    assert_problem(&absence_as(None).await, 401, "UNAUTHORIZED");
    for key in [
        "desk-key-0123456789abcdef",
        "doctor-d1-key-0123456789",
        "viewer-key-0123456789abcdef",
    ] {
        assert_problem(&absence_as(Some(key)).await, 403, "FORBIDDEN");
    }
    let slot = app
        .send(
            app.request(Method::GET, "/slots/D1-09")
                .header("authorization", format!("Bearer {ADMIN}")),
        )
        .await
        .body;
    assert_eq!(slot["closed"], false);
    let recorded = absence_as(Some(ADMIN)).await.expect_status(200).body;
    assert_eq!(recorded["changed"], true);
    assert!(recorded["slots"]
        .as_array()
        .unwrap()
        .iter()
        .all(|slot| slot["closed"] == true));
}

/// Two instances on one PostgreSQL database record the same absence at
/// the same moment: the day's slots close once and every token is
/// cancelled once; one answer says it changed, the other that it did not.
#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_instances_record_an_absence_exactly_once() {
    use opd::store::events::SlotReason;
    use opd::store::EventKind;
    let first = TestApp::spawn(Backend::Postgres).await;
    first.clock.set(AT_0900);
    let day = day(&first, 2, 2).await;
    let booked = [
        token(&first, "P1", &day.morning, "ONLINE", &[]).await,
        token(&first, "P2", &day.morning, "ONLINE", &["check-in"]).await,
        token(&first, "P3", &day.late, "WALK_IN", &[]).await,
    ];
    let second = first.another_instance().await;

    let (one, two) = tokio::join!(absence(&first, &day.doctor), absence(&second, &day.doctor));

    let mut changed = [one["changed"].clone(), two["changed"].clone()];
    changed.sort_by_key(|value| value == &json!(true));
    assert_eq!(changed, [json!(false), json!(true)]);
    let cancelled =
        one["cancelled"].as_array().unwrap().len() + two["cancelled"].as_array().unwrap().len();
    assert_eq!(cancelled, 3);
    let log = second.service.events_after(0, 1_000).await.unwrap();
    let closings = log
        .events
        .iter()
        .filter(|event| {
            matches!(&event.kind, EventKind::Slot { reason: SlotReason::Closed, slot }
                if slot.doctor.as_str() == day.doctor)
        })
        .count();
    assert_eq!(closings, 2);
    for token in &booked {
        let detail = second.token(&id_of(token)).await;
        let history = detail["history"].as_array().unwrap();
        let absent = history
            .iter()
            .filter(|entry| entry["reason"] == "DOCTOR_ABSENT")
            .count();
        assert_eq!(absent, 1, "{detail}");
        assert_eq!(detail["status"], "CANCELLED");
    }
    // Both servers stop before the first one's schema is dropped, so no
    // transaction of theirs is left holding a lock that the drop waits on.
    second.stop().await;
    first.stop().await;
}
