//! What a durable backend must keep across a restart: every slot and token
//! exactly as the API showed them, token numbering, and idempotency keys.

use jiff::SignedDuration;

use crate::helpers::{assert_problem, booking, id_of, slot_body, Backend, Reply, TestApp};

durable_backend_tests!(
    a_restart_restores_every_slot_and_token_exactly,
    an_idempotency_key_replays_after_a_restart_for_at_least_24_hours,
    an_unchanged_store_restarts_without_duplicating_the_demo_schedule,
    a_store_with_real_slots_starts_without_the_demo_even_where_it_would_overlap,
    a_store_without_slots_gets_the_demo_schedule_at_a_restart,
);

/// The exact text of `GET /slots`, of `GET /slots/{id}` for every listed
/// slot, and of `GET /tokens/{id}` for every token in `tokens`.
async fn everything(app: &TestApp, tokens: &[String]) -> Vec<(String, String)> {
    let list = app.get("/slots").await.expect_status(200);
    let mut paths: Vec<String> = list
        .body
        .as_array()
        .expect("a list of slots")
        .iter()
        .map(|slot| format!("/slots/{}", slot["slotId"].as_str().unwrap()))
        .collect();
    paths.extend(tokens.iter().map(|id| format!("/tokens/{id}")));
    let mut texts = vec![("/slots".to_owned(), list.text)];
    for path in paths {
        let text = app.get(&path).await.expect_status(200).text;
        texts.push((path, text));
    }
    texts
}

#[track_caller]
fn assert_same(after: &[(String, String)], before: &[(String, String)]) {
    assert_eq!(
        after.len(),
        before.len(),
        "as many slots and tokens after the restart"
    );
    for ((path, text), (path_before, text_before)) in after.iter().zip(before) {
        assert_eq!(path, path_before);
        assert_eq!(text, text_before, "{path} changed across the restart");
    }
}

async fn a_restart_restores_every_slot_and_token_exactly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut tokens = Vec::new();
    app.create_slot(&slot_body("DUR-A", "DA", None, ("14:00", "15:00"), 2))
        .await;
    app.create_slot(&slot_body("DUR-B", "DA", None, ("15:00", "16:00"), 1))
        .await;
    app.create_slot(&slot_body(
        "DUR-C",
        "DB",
        Some("2030-01-16"),
        ("08:30", "09:15"),
        3,
    ))
    .await;
    // The demo slot's day: fill, wait, bump, overbook, cancel.
    for (minute, patient, source) in [
        ("09:00", "P1", "ONLINE"),
        ("09:01", "P2", "ONLINE"),
        ("09:02", "P3", "ONLINE"),
        ("09:10", "W", "WALK_IN"),
        ("09:20", "PAID", "PAID"),
        ("09:30", "E", "EMERGENCY"),
    ] {
        app.clock.set(&format!("2030-01-15T{minute}:00Z"));
        tokens.push(id_of(&app.book(patient, "D1-09", source).await));
    }
    app.clock.set("2030-01-15T09:40:00Z");
    app.cancel(&tokens[0]).await;
    // A second slot: bump, no-show with promotion, capacity cut.
    for (patient, source) in [
        ("A1", "ONLINE"),
        ("A2", "WALK_IN"),
        ("A3", "FOLLOW_UP"),
        ("A4", "WALK_IN"),
    ] {
        tokens.push(id_of(&app.book(patient, "DUR-A", source).await));
    }
    app.clock.set("2030-01-15T09:50:00Z");
    assert_eq!(
        app.no_show(&tokens[6]).await["changes"][0]["reason"],
        "PROMOTED"
    );
    assert_eq!(
        app.set_capacity("DUR-A", 1).await["changes"][0]["reason"],
        "CAPACITY_REDUCED"
    );
    assert_eq!(
        app.set_capacity("D1-09", 5).await["changes"][0]["reason"],
        "PROMOTED"
    );
    let keyed = app
        .book_keyed("durable-key", &booking("K1", "DUR-B", "ONLINE"))
        .await
        .expect_status(201);
    tokens.push(id_of(&keyed.body));
    tokens.push(id_of(&app.book("C1", "DUR-C", "EMERGENCY").await));
    assert_problem(
        &app.try_book("K1", "DUR-B", "PAID").await,
        409,
        "DUPLICATE_BOOKING",
    );
    let before = everything(&app, &tokens).await;

    let app = app.restart().await;

    assert_same(&everything(&app, &tokens).await, &before);
    let replay = app
        .book_keyed("durable-key", &booking("K1", "DUR-B", "ONLINE"))
        .await;
    assert_eq!(
        (replay.status, &replay.text, replay.header("location")),
        (201, &keyed.text, keyed.header("location"))
    );
    assert_same(&everything(&app, &tokens).await, &before);

    // The restored state keeps working: numbering continues without
    // reuse, promotions follow the restored queues, and all of it survives
    // the next restart too.
    app.clock.set("2030-01-15T10:30:00Z");
    let next_da = app.book("A5", "DUR-B", "PAID").await;
    assert_eq!(next_da["token"]["tokenNumber"], 6);
    assert_eq!(next_da["changes"][0]["patientId"], "K1");
    tokens.push(id_of(&next_da));
    let next_d1 = app.book("P7", "D1-10", "ONLINE").await;
    assert_eq!(next_d1["token"]["tokenNumber"], 7);
    tokens.push(id_of(&next_d1));
    let allocated_a = app.slot("DUR-A").await["allocated"][0]["tokenId"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled = app.cancel(&allocated_a).await;
    assert_eq!(cancelled["changes"][0]["reason"], "PROMOTED");
    assert_eq!(cancelled["changes"][0]["patientId"], "A2");
    app.create_slot(&slot_body("DUR-D", "DA", None, ("16:00", "17:00"), 0))
        .await;
    tokens.push(id_of(&app.book("D1", "DUR-D", "WALK_IN").await));
    let before = everything(&app, &tokens).await;

    let app = app.restart().await;

    assert_same(&everything(&app, &tokens).await, &before);
    assert_eq!(
        app.book("A6", "DUR-D", "ONLINE").await["token"]["tokenNumber"],
        8
    );
}

async fn an_idempotency_key_replays_after_a_restart_for_at_least_24_hours(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let later = app.slot_days_ahead().await;
    let body = booking("P1", &later, "ONLINE");
    let first = app.book_keyed("kept", &body).await.expect_status(201);
    app.cancel(&id_of(&first.body)).await;
    let before = app.slot_text(&later).await;
    app.clock.advance(SignedDuration::from_hours(24));

    let app = app.restart().await;
    let replay: Reply = app.book_keyed("kept", &body).await;
    let reused = app
        .book_keyed("kept", &booking("P2", &later, "ONLINE"))
        .await;

    assert_eq!(replay.status, 201, "{}", replay.text);
    assert_eq!(replay.text, first.text);
    assert_eq!(replay.header("location"), first.header("location"));
    assert_problem(&reused, 422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.slot_text(&later).await, before);
    assert_eq!(
        app.book("P2", &later, "ONLINE").await["token"]["tokenNumber"],
        2
    );
}

async fn an_unchanged_store_restarts_without_duplicating_the_demo_schedule(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = everything(&app, &[]).await;

    let app = app.restart().await;
    let app = app.restart().await;

    assert_same(&everything(&app, &[]).await, &before);
    assert_eq!(app.slots("").await.as_array().unwrap().len(), 12);
}

/// A schedule file in the store's directory holding `slots`.
fn schedule_file(app: &TestApp, slots: serde_json::Value) -> std::path::PathBuf {
    let dir = app.data_dir.as_ref().expect("a durable store").path();
    let path = dir.join(format!("schedule-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, serde_json::json!({ "slots": slots }).to_string())
        .expect("cannot write a schedule file");
    path
}

/// Stops `app` and starts the same store again with the clock where it
/// was, with no schedule file (so the demo may load) or with `schedule`.
async fn start_again(app: TestApp, schedule: Option<std::path::PathBuf>) -> TestApp {
    let (backend, clock) = (app.backend, app.clock.clone());
    let store = app.stop().await;
    TestApp::with(backend)
        .clock(clock)
        .settings(move |config| config.schedule.clone_from(&schedule))
        .data_dir(store)
        .spawn()
        .await
}

/// A clinic that went live with a schedule file and is later started
/// without one keeps its own slots only. Its doctor D1 has a real slot at
/// 09:00 today, where the demo's `D1-09` would go: loading the demo beside
/// it used to stop the start-up with an overlap error.
async fn a_store_with_real_slots_starts_without_the_demo_even_where_it_would_overlap(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let real = schedule_file(
        &app,
        serde_json::json!([{"slotId": "D1-2030-01-15-09", "doctorId": "D1",
                            "startTime": "09:00", "endTime": "10:00", "capacity": 6}]),
    );
    // A fresh store for the clinic: the first one got the demo.
    let clinic = TestApp::with(backend)
        .settings(move |config| config.schedule = Some(real.clone()))
        .spawn()
        .await;
    let slots = clinic.slots("").await;
    assert_eq!(slots.as_array().unwrap().len(), 1, "{slots}");

    let clinic = start_again(clinic, None).await;

    let slots = clinic.slots("").await;
    let ids: Vec<_> = slots
        .as_array()
        .unwrap()
        .iter()
        .map(|slot| slot["slotId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["D1-2030-01-15-09"]);
    clinic.get("/slots/D1-09").await.expect_status(404);
    drop(app);
}

/// A store that holds no slot (its schedule file was empty) gets the demo
/// when it is started without a schedule file.
async fn a_store_without_slots_gets_the_demo_schedule_at_a_restart(backend: Backend) {
    let first = TestApp::spawn(backend).await;
    let empty = schedule_file(&first, serde_json::json!([]));
    let app = TestApp::with(backend)
        .settings(move |config| config.schedule = Some(empty.clone()))
        .spawn()
        .await;
    assert_eq!(app.slots("").await, serde_json::json!([]));

    let app = start_again(app, None).await;

    assert_eq!(app.slots("").await.as_array().unwrap().len(), 12);
    let demo = app.get("/slots/D1-09").await.expect_status(200);
    assert_eq!(demo.body["capacity"], 3);
    assert_eq!(demo.body["date"], crate::helpers::TODAY);
    drop(first);
}
