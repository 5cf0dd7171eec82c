//! Closing a slot (at once, and on time from the clock) and the day's end:
//! one rule per test, on every backend.

use jiff::SignedDuration;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, id_of, Backend, Reply, TestApp, TODAY};

const AT_0900: &str = "2030-01-15T09:00:00Z";

/// Patient `n`'s token in `slot`, booked from `source`.
async fn token(app: &TestApp, n: usize, slot: &str, source: &str) -> String {
    id_of(&app.book(&format!("P{n}"), slot, source).await)
}

async fn try_close(app: &TestApp, slot: &str) -> Reply {
    app.send(app.request(Method::POST, &format!("/slots/{slot}/close")))
        .await
}

async fn close(app: &TestApp, slot: &str) -> Value {
    try_close(app, slot).await.expect_status(200).body
}

async fn status(app: &TestApp, token: &str) -> Value {
    app.token(token).await["status"].clone()
}

/// The newest history entry of a token: (from, to, reason, actor).
async fn last_change(app: &TestApp, token: &str) -> (Value, Value, Value, Value) {
    let detail = app.token(token).await;
    let last = detail["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    (
        last["from"].clone(),
        last["to"].clone(),
        last["reason"].clone(),
        last["actor"].clone(),
    )
}

/// The changes of a closing or capacity answer as (token, from, to, reason).
fn changes(answer: &Value) -> Vec<(String, String, String, String)> {
    answer["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| {
            let text = |field: &str| change[field].as_str().unwrap().to_owned();
            (text("tokenId"), text("from"), text("to"), text("reason"))
        })
        .collect()
}

fn change(token: &str, from: &str, to: &str, reason: &str) -> (String, String, String, String) {
    (token.into(), from.into(), to.into(), reason.into())
}

backend_tests!(
    closing_makes_absent_patients_no_shows_seats_the_hall_and_expires_the_waitlist,
    patients_in_the_hall_or_with_the_doctor_stay_when_their_slot_closes,
    a_closed_slot_refuses_bookings_capacity_changes_and_a_second_closing,
    a_slot_closes_on_time_by_the_system_after_close_after_minutes,
    a_slot_past_its_closing_time_refuses_bookings_before_the_clock_closes_it,
    without_close_after_minutes_a_slot_closes_at_the_end_of_its_date,
    the_day_ends_with_no_token_left_active,
    closing_an_unknown_slot_is_404,
);

durable_backend_tests!(what_fell_due_while_the_service_was_down_happens_at_start_up);

async fn closing_makes_absent_patients_no_shows_seats_the_hall_and_expires_the_waitlist(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let slot = app.new_slot(2).await;
    let absent = token(&app, 1, &slot.id, "ONLINE").await;
    let skipped = token(&app, 2, &slot.id, "ONLINE").await;
    // Two waitlisted: one in the hall, one not.
    let waiting_away = token(&app, 3, &slot.id, "WALK_IN").await;
    let waiting_here = token(&app, 4, &slot.id, "WALK_IN").await;
    app.act(&skipped, "check-in").await;
    app.act(&skipped, "call").await;
    app.act(&skipped, "skip").await;
    app.act(&waiting_here, "check-in").await;

    let closed = close(&app, &slot.id).await;

    assert_eq!(
        changes(&closed),
        vec![
            change(&absent, "ALLOCATED", "NO_SHOW", "NO_SHOW"),
            change(&skipped, "SKIPPED", "NO_SHOW", "NO_SHOW"),
            // Two seats were freed; only one waitlisted patient is here.
            change(&waiting_here, "WAITLISTED", "CHECKED_IN", "PROMOTED"),
            change(&waiting_away, "WAITLISTED", "EXPIRED", "SLOT_CLOSED"),
        ]
    );
    assert_eq!(closed["slot"]["closed"], true);
    assert_eq!(closed["slot"]["closesAt"], AT_0900);
    assert_eq!(closed["slot"]["allocatedCount"], 1);
    assert_eq!(closed["slot"]["waitlistCount"], 0);
    assert_eq!(status(&app, &waiting_away).await, "EXPIRED");
    assert_eq!(
        app.token(&waiting_away).await["waitlistPosition"],
        Value::Null
    );
    let queue = app.queue(&slot.doctor).await;
    assert_eq!(queue["callQueue"][0]["tokenId"], json!(waiting_here));
    assert_eq!(app.slot(&slot.id).await["closed"], true);
}

async fn patients_in_the_hall_or_with_the_doctor_stay_when_their_slot_closes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let slot = app.new_slot(3).await;
    let seen = token(&app, 1, &slot.id, "ONLINE").await;
    let called = token(&app, 2, &slot.id, "ONLINE").await;
    let waiting = token(&app, 3, &slot.id, "ONLINE").await;
    for id in [&seen, &called, &waiting] {
        app.act(id, "check-in").await;
    }
    app.act(&seen, "call").await;
    app.act(&seen, "start").await;

    let closed = close(&app, &slot.id).await;

    assert_eq!(changes(&closed), vec![]);
    assert_eq!(status(&app, &seen).await, "IN_CONSULTATION");
    assert_eq!(status(&app, &waiting).await, "CHECKED_IN");
    // The doctor still sees them: the day goes on in a closed slot.
    app.act(&seen, "complete").await;
    app.act(&called, "call").await;
    assert_eq!(app.act(&called, "skip").await["token"]["status"], "SKIPPED");
    assert_eq!(
        app.act(&called, "check-in").await["token"]["status"],
        "CHECKED_IN"
    );
}

async fn a_closed_slot_refuses_bookings_capacity_changes_and_a_second_closing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let slot = app.new_slot(1).await;
    token(&app, 1, &slot.id, "ONLINE").await;
    app.clock.advance(SignedDuration::from_mins(5));
    let closed = close(&app, &slot.id).await;
    let before = app.slot_text(&slot.id).await;

    // SLOT_CLOSED comes before DUPLICATE_BOOKING.
    let again = app.try_book("P1", &slot.id, "ONLINE").await;
    let emergency = app.try_book("P9", &slot.id, "EMERGENCY").await;
    let capacity = app.try_set_capacity(&slot.id, json!(5)).await;
    let second = try_close(&app, &slot.id).await;

    assert_problem(&again, 409, "SLOT_CLOSED");
    assert_problem(&emergency, 409, "SLOT_CLOSED");
    assert_problem(&capacity, 409, "SLOT_CLOSED");
    assert_problem(&second, 409, "SLOT_CLOSED");
    assert_eq!(app.slot_text(&slot.id).await, before);
    assert_eq!(closed["slot"]["closesAt"], "2030-01-15T09:05:00Z");
}

async fn a_slot_closes_on_time_by_the_system_after_close_after_minutes(backend: Backend) {
    let app = TestApp::with(backend)
        .settings(|config| config.close_after_minutes = Some(30))
        .spawn()
        .await;
    app.clock.set(AT_0900);
    let slot = app.new_slot(1).await;
    assert_eq!(app.slot(&slot.id).await["closesAt"], "2030-01-15T10:30:00Z");
    let absent = token(&app, 1, &slot.id, "ONLINE").await;
    let waiting = token(&app, 2, &slot.id, "ONLINE").await;
    let events = app.url(&format!("/events?slotId={}", slot.id));
    let mut stream = crate::common::EventStream::open(&app.client, &events, None).await;

    app.clock.set("2030-01-15T10:29:59Z");
    app.service.tick().await.unwrap();
    let open = app.slot(&slot.id).await;
    let absent_before = status(&app, &absent).await;
    app.clock.set("2030-01-15T10:30:00Z");
    app.service.tick().await.unwrap();

    assert_eq!(open["closed"], false);
    assert_eq!(absent_before, "ALLOCATED");
    let slot_now = app.slot(&slot.id).await;
    assert_eq!(slot_now["closed"], true);
    assert_eq!(slot_now["closesAt"], "2030-01-15T10:30:00Z");
    assert_eq!(
        last_change(&app, &absent).await,
        (
            json!("ALLOCATED"),
            json!("NO_SHOW"),
            json!("NO_SHOW"),
            json!("system")
        )
    );
    assert_eq!(
        last_change(&app, &waiting).await,
        (
            json!("WAITLISTED"),
            json!("EXPIRED"),
            json!("SLOT_CLOSED"),
            json!("system")
        )
    );
    // One change: the slot event first, then the token events it caused.
    let frames = stream.events(3).await;
    let data: Vec<Value> = frames.iter().map(|f| f.data.clone().unwrap()).collect();
    assert_eq!(frames[0].event.as_deref(), Some("slot"));
    assert_eq!(data[0]["reason"], "CLOSED");
    assert_eq!(data[0]["actor"], "system");
    assert_eq!(data[0]["slot"]["closed"], true);
    assert_eq!(data[1]["to"], "NO_SHOW");
    assert_eq!(data[2]["to"], "EXPIRED");
    assert_eq!(data[2]["reason"], "SLOT_CLOSED");
    // A second tick finds nothing to do.
    assert_eq!(app.service.tick().await.unwrap(), 0);
}

async fn a_slot_past_its_closing_time_refuses_bookings_before_the_clock_closes_it(
    backend: Backend,
) {
    let app = TestApp::with(backend)
        .settings(|config| config.close_after_minutes = Some(0))
        .spawn()
        .await;
    app.clock.set(AT_0900);
    let slot = app.new_slot(1).await;
    app.clock.set("2030-01-15T10:00:00Z");

    // The refusal does not wait for the clock's work to be done.
    let refused = app.try_book("P1", &slot.id, "EMERGENCY").await;

    assert_problem(&refused, 409, "SLOT_CLOSED");
}

async fn without_close_after_minutes_a_slot_closes_at_the_end_of_its_date(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set(AT_0900);
    let slot = app.new_slot(1).await;
    assert_eq!(app.slot(&slot.id).await["closesAt"], "2030-01-16T00:00:00Z");

    app.clock.set("2030-01-15T23:59:59Z");
    app.service.tick().await.unwrap();
    let before_midnight = app.slot(&slot.id).await["closed"].clone();
    app.clock.set("2030-01-16T00:00:00Z");
    app.service.tick().await.unwrap();

    assert_eq!(before_midnight, false);
    assert_eq!(app.slot(&slot.id).await["closed"], true);
    assert_eq!(app.slot(TODAY_SLOT).await["closed"], true);
}

/// A demo slot of today, which closes with the rest of today.
const TODAY_SLOT: &str = "D1-09";

async fn the_day_ends_with_no_token_left_active(backend: Backend) {
    let app = TestApp::with(backend)
        .settings(|config| config.close_after_minutes = Some(30))
        .spawn()
        .await;
    app.clock.set(AT_0900);
    let slot = app.new_slot(4).await;
    let with_doctor = token(&app, 1, &slot.id, "ONLINE").await;
    let called_late = token(&app, 2, &slot.id, "ONLINE").await;
    let skipped = token(&app, 3, &slot.id, "ONLINE").await;
    let waiting = token(&app, 4, &slot.id, "ONLINE").await;
    for id in [&skipped, &with_doctor, &called_late, &waiting] {
        app.act(id, "check-in").await;
    }
    // After the slot closes at 10:30 the doctor goes on seeing patients.
    app.clock.set("2030-01-15T11:00:00Z");
    app.service.tick().await.unwrap();
    app.act(&skipped, "call").await;
    app.act(&skipped, "skip").await;
    app.act(&called_late, "call").await;
    app.act(&called_late, "skip").await;
    app.act(&called_late, "check-in").await;
    app.act(&with_doctor, "call").await;
    app.act(&with_doctor, "start").await;

    app.clock.set("2030-01-16T00:00:00Z");
    app.service.tick().await.unwrap();

    for (id, to) in [
        (&with_doctor, "COMPLETED"),
        (&skipped, "NO_SHOW"),
        (&called_late, "EXPIRED"),
        (&waiting, "EXPIRED"),
    ] {
        let (_, got, reason, actor) = last_change(&app, id).await;
        assert_eq!(
            (got, reason, actor),
            (json!(to), json!("DAY_ENDED"), json!("system")),
            "{id}"
        );
    }
    let queue = app
        .get(&format!("/doctors/{}/queue?date={TODAY}", slot.doctor))
        .await
        .expect_status(200)
        .body;
    assert_eq!(queue["current"], Value::Null);
    assert_eq!(queue["callQueue"], json!([]));
    assert_eq!(queue["skipped"], json!([]));
    assert_eq!(queue["expiredCount"], 2);
    assert_eq!(queue["completedCount"], 1);
    // The day is over: nothing is left to act on.
    assert_problem(
        &app.try_act(&waiting, "call").await,
        409,
        "INVALID_TRANSITION",
    );
}

async fn closing_an_unknown_slot_is_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_problem(
        &try_close(&app, "NO-SUCH-SLOT").await,
        404,
        "SLOT_NOT_FOUND",
    );
}

async fn what_fell_due_while_the_service_was_down_happens_at_start_up(backend: Backend) {
    let app = TestApp::with(backend)
        .settings(|config| config.close_after_minutes = Some(15))
        .spawn()
        .await;
    app.clock.set(AT_0900);
    let slot = app.new_slot(1).await;
    let absent = token(&app, 1, &slot.id, "ONLINE").await;
    let clock = app.clock.clone();
    let data_dir = app.stop().await;

    clock.set("2030-01-15T12:00:00Z");
    let app = TestApp::with(backend)
        .settings(|config| config.close_after_minutes = Some(15))
        .clock(clock)
        .data_dir(data_dir)
        .spawn()
        .await;

    // Closed before the first request was answered, at start-up.
    let closed = app.slot(&slot.id).await;
    assert_eq!(closed["closed"], true);
    assert_eq!(closed["closesAt"], "2030-01-15T12:00:00Z");
    assert_eq!(
        last_change(&app, &absent).await,
        (
            json!("ALLOCATED"),
            json!("NO_SHOW"),
            json!("NO_SHOW"),
            json!("system")
        )
    );
}

/// Two instances on one PostgreSQL database tick at the same moment (and
/// their clock tasks run too): the slot closes once, whole.
#[cfg(feature = "postgres-tests")]
#[tokio::test]
async fn two_postgres_instances_close_a_slot_exactly_once() {
    use opd::store::events::SlotReason;
    use opd::store::EventKind;
    let first = TestApp::with(Backend::Postgres)
        .settings(|config| config.close_after_minutes = Some(30))
        .spawn()
        .await;
    first.clock.set(AT_0900);
    let slot = first.new_slot(1).await;
    let absent = token(&first, 1, &slot.id, "ONLINE").await;
    let waiting = token(&first, 2, &slot.id, "ONLINE").await;
    let second = first.another_instance().await;

    first.clock.set("2030-01-15T10:30:00Z");
    let (one, two) = tokio::join!(first.service.tick(), second.service.tick());
    one.unwrap();
    two.unwrap();

    let log = second.service.events_after(0, 1_000).await.unwrap();
    let closings = log
        .events
        .iter()
        .filter(|event| {
            matches!(&event.kind, EventKind::Slot { reason: SlotReason::Closed, slot: closed }
                if closed.id.as_str() == slot.id)
        })
        .count();
    assert_eq!(closings, 1);
    for (id, to) in [(&absent, "NO_SHOW"), (&waiting, "EXPIRED")] {
        let detail = second.token(id).await;
        let history = detail["history"].as_array().unwrap();
        assert_eq!(history.len(), 2, "{detail}");
        assert_eq!(history[1]["to"], to);
    }
    assert_eq!(first.slot(&slot.id).await["closed"], true);
}
