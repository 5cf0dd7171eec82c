//! What a durable backend must keep across a restart: every slot and token
//! exactly as the API showed them, token numbering, and idempotency keys.

use jiff::SignedDuration;

use crate::helpers::{assert_problem, booking, id_of, slot_body, Backend, Reply, TestApp};

durable_backend_tests!(
    a_restart_restores_every_slot_and_token_exactly,
    an_idempotency_key_replays_after_a_restart_for_at_least_24_hours,
    an_unchanged_store_restarts_without_duplicating_the_demo_schedule,
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
