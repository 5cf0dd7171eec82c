//! `Idempotency-Key` on `POST /tokens`: a retry replays the first answer
//! and changes nothing; the key with another body is refused.

use jiff::SignedDuration;
use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{
    assert_problem, assert_validation, booking, id_of, with, Backend, Reply, TestApp,
};

/// Two front-desk keys, so two callers.
const DESK_1_KEY: &str = "desk-one-0123456789abcdef";
const DESK_2_KEY: &str = "desk-two-0123456789abcdef";

/// Settings with two front-desk API keys, `desk-1` and `desk-2`.
fn two_desks(config: &mut opd::Config) {
    config.api_keys = Some(
        format!("desk-1 front-desk {DESK_1_KEY};desk-2 front-desk {DESK_2_KEY}")
            .parse()
            .unwrap(),
    );
}

/// A keyed booking sent with an API key.
async fn book_keyed_as(app: &TestApp, api_key: &str, key: &str, body: &serde_json::Value) -> Reply {
    app.send(
        app.request(Method::POST, "/tokens")
            .bearer_auth(api_key)
            .header("idempotency-key", key)
            .json(body),
    )
    .await
}

backend_tests!(
    a_retry_with_the_same_key_and_body_replays_the_first_answer,
    a_retry_replays_the_first_answer_even_after_the_token_changed,
    key_order_and_white_space_do_not_make_another_body,
    the_same_key_with_another_body_is_refused,
    invalid_keys_are_refused,
    a_failed_keyed_request_is_not_remembered,
    simultaneous_retries_with_one_key_book_exactly_once,
    keys_are_kept_for_at_least_24_hours,
    keys_apply_to_bookings_only,
    a_key_past_its_retention_books_as_a_new_key,
    keys_belong_to_the_caller_that_used_them,
    a_caller_past_its_key_limit_gets_429_and_can_still_book_without_a_key,
    the_limit_over_all_callers_refuses_new_keys_from_any_caller,
    only_a_digest_of_the_request_is_kept_so_unknown_fields_change_nothing,
);

durable_backend_tests!(a_key_reused_after_its_retention_and_a_restart_books_and_keeps_serving);

/// Checks that `replay` is `first` again: status, body and `Location`.
#[track_caller]
fn assert_replay(replay: &Reply, first: &Reply) {
    assert_eq!(replay.status, 201, "{}", replay.text);
    assert_eq!(replay.text, first.text);
    assert_eq!(replay.header("location"), first.header("location"));
    assert!(replay
        .header("content-type")
        .is_some_and(|value| value.starts_with("application/json")));
}

async fn a_retry_with_the_same_key_and_body_replays_the_first_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = booking("P1", "D1-09", "ONLINE");
    let first = app.book_keyed("key-1", &body).await.expect_status(201);
    let after_first = app.slot_text("D1-09").await;

    let second = app.book_keyed("key-1", &body).await;
    let third = app.book_keyed("key-1", &body).await;

    assert_eq!(
        first.header("location"),
        Some(format!("/tokens/{}", id_of(&first.body)).as_str())
    );
    assert_eq!(first.body["decision"], "ALLOCATED");
    assert_replay(&second, &first);
    assert_replay(&third, &first);
    assert_eq!(app.slot_text("D1-09").await, after_first);
    assert_eq!(
        app.book("P2", "D1-09", "ONLINE").await["token"]["tokenNumber"],
        2
    );
}

async fn a_retry_replays_the_first_answer_even_after_the_token_changed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = booking("P1", "D1-09", "WALK_IN");
    let first = app.book_keyed("walk-in-P1", &body).await.expect_status(201);
    app.cancel(&id_of(&first.body)).await;
    let after_cancel = app.slot_text("D1-09").await;

    let retry = app.book_keyed("walk-in-P1", &body).await;

    assert_replay(&retry, &first);
    assert_eq!(retry.body["token"]["status"], "ALLOCATED");
    assert_eq!(app.slot_text("D1-09").await, after_cancel);
    assert_eq!(app.token(&id_of(&first.body)).await["status"], "CANCELLED");
}

async fn key_order_and_white_space_do_not_make_another_body(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app
        .book_keyed("reordered", &booking("P1", "D1-09", "PAID"))
        .await
        .expect_status(201);
    let after_first = app.slot_text("D1-09").await;

    let reordered = app
        .send(
            app.request(Method::POST, "/tokens")
                .header("idempotency-key", "reordered")
                .header("content-type", "application/json; charset=utf-8")
                .body("{\n  \"source\" : \"PAID\",\t\"slotId\":\"D1-09\" ,\r\n\"patientId\": \"P1\"\n}\n"),
        )
        .await;

    assert_replay(&reordered, &first);
    assert_eq!(app.slot_text("D1-09").await, after_first);
}

async fn the_same_key_with_another_body_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.book_keyed("shared", &booking("P1", "D1-09", "ONLINE"))
        .await
        .expect_status(201);
    let before = app.slot_text("D1-09").await;
    let mut with_extra_field = booking("P1", "D1-09", "ONLINE");
    with_extra_field["note"] = json!("first visit");

    for body in [
        booking("P2", "D1-09", "ONLINE"),
        booking("P1", "D1-09", "PAID"),
        booking("P1", "D1-10", "ONLINE"),
        booking("P1", "NO-SUCH-SLOT", "ONLINE"),
        with_extra_field,
    ] {
        let reply = app.book_keyed("shared", &body).await;
        assert_problem(&reply, 422, "IDEMPOTENCY_KEY_REUSED");
    }
    assert_eq!(app.slot_text("D1-09").await, before);
    assert_eq!(app.slot("D1-10").await["allocatedCount"], 0);
    assert_eq!(
        app.book("P2", "D1-09", "ONLINE").await["token"]["tokenNumber"],
        2
    );
}

async fn invalid_keys_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bad_keys: [&[u8]; 5] = [
        b"",
        &[b'k'; 129],
        b"has space",
        b"tab\there",
        "cl\u{e9}".as_bytes(),
    ];

    for (index, key) in bad_keys.iter().enumerate() {
        let request = app
            .request(Method::POST, "/tokens")
            .header("idempotency-key", HeaderValue::from_bytes(key).unwrap())
            .json(&booking(&format!("P{index}"), "D1-09", "ONLINE"));
        let reply = app.send(request).await;
        assert_validation(&reply, &["Idempotency-Key"]);
    }
    assert_eq!(app.slot("D1-09").await["allocatedCount"], 0);

    let longest = "!".repeat(64) + &"~".repeat(64);
    let accepted = app
        .book_keyed(&longest, &booking("P1", "D1-09", "ONLINE"))
        .await
        .expect_status(201);
    assert_eq!(accepted.body["token"]["tokenNumber"], 1);
    assert_replay(
        &app.book_keyed(&longest, &booking("P1", "D1-09", "ONLINE"))
            .await,
        &accepted,
    );
}

async fn a_failed_keyed_request_is_not_remembered(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.book("P1", "D1-09", "ONLINE").await;

    let unknown_slot = app
        .book_keyed("retry-me", &booking("P2", "NO-SUCH-SLOT", "ONLINE"))
        .await;
    let duplicate = app
        .book_keyed("retry-me", &booking("P1", "D1-09", "PAID"))
        .await;
    let invalid = app
        .book_keyed("retry-me", &booking("P2", "D1-09", "VIP"))
        .await;
    let not_json = app
        .send(
            app.request(Method::POST, "/tokens")
                .header("idempotency-key", "retry-me")
                .header("content-type", "application/json")
                .body("{"),
        )
        .await;
    let accepted = app
        .book_keyed("retry-me", &booking("P2", "D1-09", "ONLINE"))
        .await;
    let retried = app
        .book_keyed("retry-me", &booking("P2", "D1-09", "ONLINE"))
        .await;

    assert_problem(&unknown_slot, 404, "SLOT_NOT_FOUND");
    assert_problem(&duplicate, 409, "DUPLICATE_BOOKING");
    assert_validation(&invalid, &["source"]);
    assert_problem(&not_json, 400, "MALFORMED_REQUEST");
    let accepted = accepted.expect_status(201);
    assert_eq!(accepted.body["token"]["tokenNumber"], 2);
    assert_replay(&retried, &accepted);
}

async fn simultaneous_retries_with_one_key_book_exactly_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(1).await;
    let body = booking("P1", &slot.id, "ONLINE");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(40));

    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let request = app
                .request(Method::POST, "/tokens")
                .header("idempotency-key", "burst")
                .json(&body);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let response = request.send().await.expect("the server answers");
                let status = response.status().as_u16();
                let location = response
                    .headers()
                    .get("location")
                    .map(|value| value.to_str().unwrap().to_owned());
                (status, location, response.text().await.unwrap())
            })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }

    let (status, location, text) = replies[0].clone();
    assert_eq!(status, 201, "{text}");
    for reply in &replies {
        assert_eq!(reply, &(status, location.clone(), text.clone()));
    }
    let detail = app.slot(&slot.id).await;
    assert_eq!(detail["allocatedCount"], 1);
    assert_eq!(detail["waitlistCount"], 0);
    assert_eq!(detail["allocated"][0]["tokenNumber"], 1);
    assert_eq!(
        app.book("P2", &slot.id, "ONLINE").await["token"]["tokenNumber"],
        2
    );
}

async fn keys_are_kept_for_at_least_24_hours(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let later = app.slot_days_ahead().await;
    let body = booking("P1", &later, "ONLINE");
    let first = app.book_keyed("day-old", &body).await.expect_status(201);

    app.clock.advance(SignedDuration::from_hours(24));
    // Storing a newer key is when old keys may be dropped.
    app.book_keyed("newer", &booking("P2", &later, "ONLINE"))
        .await
        .expect_status(201);
    let retry = app.book_keyed("day-old", &body).await;

    assert_replay(&retry, &first);
    assert_eq!(app.slot(&later).await["allocatedCount"], 2);
}

async fn keys_apply_to_bookings_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = json!({"slotId": "K-1", "doctorId": "DK", "startTime": "09:00", "endTime": "10:00", "capacity": 1});
    let create = || {
        app.request(Method::POST, "/slots")
            .header("idempotency-key", "slot-key")
            .json(&slot)
    };
    let token = id_of(&app.book("P1", "D1-09", "ONLINE").await);
    let cancel = || {
        app.request(Method::POST, &format!("/tokens/{token}/cancel"))
            .header("idempotency-key", "cancel-key")
    };

    let created = app.send(create()).await;
    let created_again = app.send(create()).await;
    let cancelled = app.send(cancel()).await;
    let cancelled_again = app.send(cancel()).await;

    assert_eq!(created.status, 201, "{}", created.text);
    assert_problem(&created_again, 409, "SLOT_EXISTS");
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_problem(&cancelled_again, 409, "INVALID_TRANSITION");
}

async fn a_key_past_its_retention_books_as_a_new_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let later = app.slot_days_ahead().await;
    let first = app
        .book_keyed("counter-1", &booking("P1", &later, "ONLINE"))
        .await
        .expect_status(201);

    // A desk whose counter restarts every day sends yesterday's key again.
    app.clock
        .advance(SignedDuration::from_hours(24) + SignedDuration::from_secs(1));
    let next_day = app
        .book_keyed("counter-1", &booking("P2", &later, "ONLINE"))
        .await
        .expect_status(201);
    let retry = app
        .book_keyed("counter-1", &booking("P2", &later, "ONLINE"))
        .await;

    assert_ne!(id_of(&next_day.body), id_of(&first.body));
    assert_eq!(next_day.body["token"]["patientId"], "P2");
    assert_replay(&retry, &next_day);
    assert_eq!(app.slot(&later).await["allocatedCount"], 2);
}

async fn a_key_reused_after_its_retention_and_a_restart_books_and_keeps_serving(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let later = app.slot_days_ahead().await;
    app.book_keyed("counter-1", &booking("P1", &later, "ONLINE"))
        .await
        .expect_status(201);
    app.clock.advance(SignedDuration::from_hours(25));
    let app = app.restart().await;

    // The restarted server no longer remembers the key, but its row is
    // still stored: the new use must replace it, not fail the commit.
    let next_day = app
        .book_keyed("counter-1", &booking("P2", &later, "ONLINE"))
        .await
        .expect_status(201);
    let other = app.book("P3", &later, "ONLINE").await;
    let health = app.get("/healthz").await;
    let app = app.restart().await;
    let retry = app
        .book_keyed("counter-1", &booking("P2", &later, "ONLINE"))
        .await;

    assert_eq!(next_day.body["token"]["patientId"], "P2");
    assert_eq!(other["decision"], "ALLOCATED");
    assert_eq!(health.status, 200, "{}", health.text);
    assert_replay(&retry, &next_day);
    assert_eq!(app.slot(&later).await["allocatedCount"], 3);
}

async fn keys_belong_to_the_caller_that_used_them(backend: Backend) {
    let app = TestApp::with(backend).settings(two_desks).spawn().await;
    let body = booking("P1", "D1-09", "ONLINE");
    let desk_1 = book_keyed_as(&app, DESK_1_KEY, "7", &body)
        .await
        .expect_status(201);

    // Another desk's key "7" neither replays desk 1's answer nor reveals
    // that desk 1 used "7": it is desk 2's own, new key.
    let same_body = book_keyed_as(&app, DESK_2_KEY, "7", &body).await;
    let other_body = book_keyed_as(&app, DESK_2_KEY, "7", &booking("P2", "D1-09", "ONLINE")).await;
    let desk_1_retry = book_keyed_as(&app, DESK_1_KEY, "7", &body).await;

    assert_problem(&same_body, 409, "DUPLICATE_BOOKING");
    assert_eq!(other_body.status, 201, "{}", other_body.text);
    assert_eq!(other_body.body["token"]["patientId"], "P2");
    assert_replay(&desk_1_retry, &desk_1);
}

async fn a_caller_past_its_key_limit_gets_429_and_can_still_book_without_a_key(backend: Backend) {
    let app = TestApp::with(backend)
        .settings(|config| config.idempotency_max_per_caller = 2)
        .spawn()
        .await;
    let later = app.slot_days_ahead().await;
    let first = app
        .book_keyed("k1", &booking("P1", &later, "ONLINE"))
        .await
        .expect_status(201);
    app.clock.advance(SignedDuration::from_hours(1));
    app.book_keyed("k2", &booking("P2", &later, "ONLINE"))
        .await
        .expect_status(201);
    let before = app.slot_text(&later).await;

    let third = app.book_keyed("k3", &booking("P3", &later, "ONLINE")).await;
    let after_refusal = app.slot_text(&later).await;
    let replay = app.book_keyed("k1", &booking("P1", &later, "ONLINE")).await;
    let unkeyed = app.try_book("P3", &later, "ONLINE").await;
    // Once the oldest key expires there is room again.
    app.clock
        .advance(SignedDuration::from_hours(23) + SignedDuration::from_secs(1));
    let after_expiry = app.book_keyed("k4", &booking("P4", &later, "ONLINE")).await;

    assert_problem(&third, 429, "IDEMPOTENCY_LIMIT");
    // The oldest key, stored 1 h before, expires 23 h from now.
    assert_eq!(third.header("retry-after"), Some("82800"));
    assert_eq!(after_refusal, before);
    assert_replay(&replay, &first);
    assert_eq!(unkeyed.status, 201, "{}", unkeyed.text);
    assert_eq!(after_expiry.status, 201, "{}", after_expiry.text);
}

async fn the_limit_over_all_callers_refuses_new_keys_from_any_caller(backend: Backend) {
    let app = TestApp::with(backend)
        .settings(|config| {
            two_desks(config);
            config.idempotency_max = 2;
        })
        .spawn()
        .await;
    book_keyed_as(&app, DESK_1_KEY, "a", &booking("P1", "D1-09", "ONLINE"))
        .await
        .expect_status(201);
    book_keyed_as(&app, DESK_1_KEY, "b", &booking("P2", "D1-09", "ONLINE"))
        .await
        .expect_status(201);

    let desk_2 = book_keyed_as(&app, DESK_2_KEY, "a", &booking("P3", "D1-09", "ONLINE")).await;

    let slot = app
        .send(
            app.request(Method::GET, "/slots/D1-09")
                .bearer_auth(DESK_2_KEY),
        )
        .await
        .expect_status(200);

    assert_problem(&desk_2, 429, "IDEMPOTENCY_LIMIT");
    assert_eq!(desk_2.header("retry-after"), Some("86400"));
    assert_eq!(slot.body["allocatedCount"], 2);
}

async fn only_a_digest_of_the_request_is_kept_so_unknown_fields_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let padded = with(
        &booking("P1", "D1-09", "ONLINE"),
        json!({"note": "x".repeat(15_000)}),
    );
    let first = app.book_keyed("padded", &padded).await.expect_status(201);
    let app = if backend == Backend::Memory {
        app
    } else {
        app.restart().await
    };

    let retry = app.book_keyed("padded", &padded).await;
    let changed = app
        .book_keyed("padded", &with(&padded, json!({"note": "y"})))
        .await;

    assert_replay(&retry, &first);
    assert_problem(&changed, 422, "IDEMPOTENCY_KEY_REUSED");
}
