//! `GET /events`: every acknowledged change as Server-Sent Events, with
//! filters, resumption by id and a reset past retention, on every backend.

use std::time::Duration;

use jiff::SignedDuration;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{EventStream, Frame};
use crate::helpers::{assert_validation, id_of, Backend, TestApp};

backend_tests!(
    a_stream_tells_each_change_once_durable_with_its_id_name_and_data,
    resuming_from_any_id_gives_exactly_the_events_after_it,
    filters_by_doctor_and_slot_narrow_the_stream,
    a_start_id_that_is_not_a_non_negative_integer_is_refused,
    streams_end_when_the_server_shuts_down,
    the_day_s_actions_stream_as_token_events_in_order,
    a_stream_outlives_the_request_timeout,
);

durable_backend_tests!(resuming_past_the_retention_starts_with_a_reset);

/// Opens `GET /events{query}` on `app`, sending `Last-Event-ID` when given.
async fn open(app: &TestApp, query: &str, last_event_id: Option<u64>) -> EventStream {
    EventStream::open(
        &app.client,
        &app.url(&format!("/events{query}")),
        last_event_id,
    )
    .await
}

async fn a_stream_tells_each_change_once_durable_with_its_id_name_and_data(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut stream = open(&app, "", None).await;

    let p1 = app.book("P1", "D1-09", "ONLINE").await;
    let capacity = app.set_capacity("D1-09", 4).await;
    let events = stream.events(2).await;
    let date = capacity["slot"]["date"].clone();

    let token = &events[0];
    assert_eq!(token.event.as_deref(), Some("token"));
    assert_eq!(
        token.data.as_ref().unwrap(),
        &json!({
            "at": p1["token"]["createdAt"],
            "tokenId": id_of(&p1),
            "tokenNumber": 1,
            "slotId": "D1-09",
            "doctorId": "D1",
            "date": date,
            "source": "ONLINE",
            "from": null,
            "to": "ALLOCATED",
            "reason": "ALLOCATED",
            "actor": "anonymous",
            "estimatedCallAt": null,
        })
    );
    let slot = &events[1];
    assert_eq!(slot.event.as_deref(), Some("slot"));
    assert_eq!(slot.id, Some(token.id.unwrap() + 1));
    let data = slot.data.as_ref().unwrap();
    assert_eq!(data["reason"], "CAPACITY_CHANGED");
    assert_eq!(data["actor"], "anonymous");
    assert_eq!(data["slot"], capacity["slot"]);
    // No patient id anywhere: the board is a public screen.
    for frame in &events {
        assert!(!frame.data.as_ref().unwrap().to_string().contains("P1"));
    }
}

async fn the_day_s_actions_stream_as_token_events_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = id_of(&app.book("P1", "D1-09", "ONLINE").await);
    let returning = id_of(&app.book("P2", "D1-09", "ONLINE").await);
    let mut stream = open(&app, "?slotId=D1-09", None).await;

    for action in ["check-in", "call", "start", "complete"] {
        app.act(&token, action).await;
    }
    // A skip, and the patient's return to the call queue.
    for action in ["check-in", "call", "skip", "check-in"] {
        app.act(&returning, action).await;
    }
    let frames = stream.events(8).await;

    let told: Vec<(&str, Value, Value, Value, Value)> = frames
        .iter()
        .map(|frame| {
            let data = frame.data.as_ref().unwrap();
            (
                frame.event.as_deref().unwrap(),
                data["tokenId"].clone(),
                data["from"].clone(),
                data["to"].clone(),
                data["reason"].clone(),
            )
        })
        .collect();
    let (a, b) = (json!(token), json!(returning));
    let token_event = |id: &Value, from: &str, to: &str, reason: &str| {
        ("token", id.clone(), json!(from), json!(to), json!(reason))
    };
    assert_eq!(
        told,
        vec![
            token_event(&a, "ALLOCATED", "CHECKED_IN", "CHECKED_IN"),
            token_event(&a, "CHECKED_IN", "CALLED", "CALLED"),
            token_event(&a, "CALLED", "IN_CONSULTATION", "STARTED"),
            token_event(&a, "IN_CONSULTATION", "COMPLETED", "COMPLETED"),
            token_event(&b, "ALLOCATED", "CHECKED_IN", "CHECKED_IN"),
            token_event(&b, "CHECKED_IN", "CALLED", "CALLED"),
            token_event(&b, "CALLED", "SKIPPED", "SKIPPED"),
            token_event(&b, "SKIPPED", "CHECKED_IN", "RETURNED"),
        ]
    );
    let ids: Vec<u64> = frames.iter().map(|frame| frame.id.unwrap()).collect();
    assert!(ids.windows(2).all(|pair| pair[1] == pair[0] + 1), "{ids:?}");
}

/// Books, bumps, cancels (promoting) and changes a capacity; returns the
/// whole log as one stream from the start gives it.
async fn a_recorded_day(app: &TestApp) -> Vec<Frame> {
    let mut from_start = open(app, "?after=0", None).await;
    // The demo schedule's twelve slots were created at start-up.
    let created = from_start.events(12).await;
    assert!(created
        .iter()
        .all(|frame| frame.event.as_deref() == Some("slot")));
    let mut ids = Vec::new();
    for (patient, source) in [("P1", "WALK_IN"), ("P2", "ONLINE"), ("P3", "ONLINE")] {
        ids.push(id_of(&app.book(patient, "D1-09", source).await));
    }
    app.book("P4", "D1-09", "PAID").await; // bumps P1
    app.cancel(&ids[1]).await; // promotes P1
    app.set_capacity("D1-09", 2).await; // demotes one
                                        // 3 bookings, a bump (2 events), a cancel with a promotion (2), and a
                                        // capacity cut (a slot event and a demotion).
    let mut log = created;
    log.extend(from_start.events(3 + 2 + 2 + 2).await);
    log
}

async fn resuming_from_any_id_gives_exactly_the_events_after_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let log = a_recorded_day(&app).await;
    let ids: Vec<u64> = log.iter().map(|frame| frame.id.unwrap()).collect();
    assert_eq!(ids, (1..=log.len() as u64).collect::<Vec<_>>());

    for (seen, _) in log.iter().enumerate() {
        let last = seen as u64;
        // The header, as a browser's EventSource sends it on reconnecting;
        // an `after` beside it is ignored.
        let mut resumed = open(&app, "?after=999999", Some(last)).await;
        let tail = resumed.events(log.len() - seen).await;
        assert_eq!(tail, log[seen..], "resuming after {last}");
    }
    // The query parameter alone works the same way.
    let mut resumed = open(&app, "?after=12", None).await;
    assert_eq!(resumed.events(log.len() - 12).await, log[12..]);
    // And the stream goes on with new changes, exactly once each.
    app.book("P9", "D2-09", "WALK_IN").await;
    let next = resumed.events(1).await;
    assert_eq!(next[0].id, Some(log.len() as u64 + 1));
}

async fn filters_by_doctor_and_slot_narrow_the_stream(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut d2 = open(&app, "?doctorId=D2", None).await;
    let mut d1_and_d2 = open(&app, "?doctorId=D1&doctorId=D2", None).await;
    let mut d1_10 = open(&app, "?slotId=D1-10", None).await;
    let mut both = open(&app, "?doctorId=D1&slotId=D2-09", None).await;

    let a = id_of(&app.book("P1", "D1-09", "ONLINE").await);
    let b = id_of(&app.book("P2", "D2-09", "ONLINE").await);
    let c = id_of(&app.book("P3", "D1-10", "ONLINE").await);
    app.book("P4", "D3-09", "ONLINE").await;

    let tokens = |frames: Vec<Frame>| -> Vec<String> {
        frames
            .iter()
            .filter_map(|frame| frame.data.as_ref()?["tokenId"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(tokens(d2.events(1).await), std::slice::from_ref(&b));
    assert_eq!(tokens(d1_and_d2.events(3).await), [a, b, c.clone()]);
    assert_eq!(tokens(d1_10.events(1).await), [c]);
    // D2-09 is not D1's: no event matches both filters. Every change was
    // told to the other streams by now, so this one has nothing to tell.
    let nothing = tokio::time::timeout(Duration::from_millis(500), both.next()).await;
    assert!(nothing.is_err(), "{nothing:?}");
}

async fn a_start_id_that_is_not_a_non_negative_integer_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for bad in ["-1", "1.5", "abc", "+3", ""] {
        let header = app
            .send(
                app.request(Method::GET, "/events")
                    .header("last-event-id", bad),
            )
            .await;
        assert_validation(&header, &["Last-Event-ID"]);
        let query = app.get(&format!("/events?after={bad}")).await;
        assert_validation(&query, &["after"]);
    }
    let bad_filter = app.get("/events?doctorId=no%20spaces").await;
    assert_validation(&bad_filter, &["doctorId"]);
    // Beside a valid header, a bad `after` is ignored.
    let mut stream = open(&app, "?after=abc", Some(0)).await;
    assert_eq!(stream.events(1).await[0].id, Some(1));
}

async fn streams_end_when_the_server_shuts_down(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut stream = open(&app, "?after=0", None).await;
    stream.events(12).await;

    let stopped = tokio::time::timeout(Duration::from_secs(5), app.stop()).await;

    assert!(stopped.is_ok(), "the server did not stop within 5 s");
    assert_eq!(stream.next().await, None);
}

async fn resuming_past_the_retention_starts_with_a_reset(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let later = app.slot_days_ahead().await;
    app.book("P1", &later, "ONLINE").await;
    // Two days later the old events are past their retention; the next
    // changes (today's twelve slots closing, then a booking) are when they
    // are pruned.
    app.clock.advance(SignedDuration::from_hours(48));
    app.service.tick().await.unwrap();
    app.book("P2", &later, "ONLINE").await;
    // The follower of a shared database prunes on its own schedule; wait
    // for the log to show it.
    let mut oldest = 1;
    for _ in 0..100 {
        let mut probe = open(&app, "?after=0", None).await;
        let first = probe.next().await.expect("a frame");
        if first.event.as_deref() == Some("reset") {
            oldest = first.data.unwrap()["oldestId"].as_u64().unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut resumed = open(&app, "", Some(1)).await;
    let frames = resumed.events(2).await;

    assert_eq!(
        oldest, 15,
        "the 13 slot events and P1's booking were pruned"
    );
    assert_eq!(frames[0].event.as_deref(), Some("reset"));
    assert_eq!(frames[0].data, Some(json!({"oldestId": 15})));
    assert_eq!(frames[1].id, Some(15));
    assert_eq!(frames[1].event.as_deref(), Some("slot"));
    assert_eq!(frames[1].data.as_ref().unwrap()["reason"], "CLOSED");
}

async fn a_stream_outlives_the_request_timeout(backend: Backend) {
    let app = TestApp::with(backend)
        .settings(|config| config.request_timeout_secs = 1)
        .spawn()
        .await;
    let mut stream = open(&app, "", None).await;

    // Longer than the request timeout, which bounds answering a request,
    // not how long an answer may stream.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let booked = app.book("P1", "D1-09", "ONLINE").await;
    let told = stream.events(1).await;

    assert_eq!(
        told[0].data.as_ref().unwrap()["tokenId"],
        booked["token"]["tokenId"]
    );
}
