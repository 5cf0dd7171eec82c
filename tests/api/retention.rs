//! Live days: the engine holds today, the days ahead and `--live-days`
//! past days; older days are read from storage with the same answers, and
//! changes to them are refused as the contract refuses changes to a closed
//! slot.

use jiff::SignedDuration;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, id_of, Backend, TestApp, TODAY};

/// The slot whose day is made to leave the engine, and its doctor.
const OLD_SLOT: &str = "OLD-09";
const OLD_DOCTOR: &str = "D-OLD";

/// The value of an unlabelled series in `GET /metrics`.
async fn gauge(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics").await.expect_status(200).text;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} is not rendered:\n{text}"))
        .parse()
        .expect("a number")
}

/// Today's slot of its own doctor, with a token of each final status once
/// its day is over: seen, cancelled, a no-show, and one bumped to the
/// waitlist that expires. Returns the token ids.
async fn a_day_of_work(app: &TestApp) -> Vec<String> {
    app.create_slot(&json!({
        "slotId": OLD_SLOT,
        "doctorId": OLD_DOCTOR,
        "startTime": "09:00",
        "endTime": "10:00",
        "capacity": 2,
    }))
    .await;
    let seen = id_of(&app.book("P1", OLD_SLOT, "ONLINE").await);
    let cancelled = id_of(&app.book("P2", OLD_SLOT, "WALK_IN").await);
    let absent = id_of(&app.book("P3", OLD_SLOT, "PAID").await);
    let waiting = id_of(&app.book("P4", OLD_SLOT, "WALK_IN").await);
    for action in ["check-in", "call", "start", "complete"] {
        app.act(&seen, action).await;
    }
    app.cancel(&cancelled).await;
    vec![seen, cancelled, absent, waiting]
}

/// Everything a client reads of the old day.
async fn reads(app: &TestApp, tokens: &[String]) -> Vec<Value> {
    let mut read = Vec::new();
    for token in tokens {
        read.push(app.token(token).await);
    }
    read.push(app.slot(OLD_SLOT).await);
    read.push(app.slots(&format!("?date={TODAY}")).await);
    read.push(app.slots(&format!("?doctorId={OLD_DOCTOR}")).await);
    read.push(app.slots("?limit=2").await);
    read.push(
        app.get(&format!("/doctors/{OLD_DOCTOR}/queue?date={TODAY}"))
            .await
            .expect_status(200)
            .body,
    );
    // The queue of a doctor whose only slots are old, on a day without one: empty.
    read.push(
        app.get(&format!("/doctors/{OLD_DOCTOR}/queue?date=2030-01-16"))
            .await
            .expect_status(200)
            .body,
    );
    read.push(
        app.get(&format!("/reports/day?date={TODAY}"))
            .await
            .expect_status(200)
            .body,
    );
    for search in [
        format!("/fhir/Appointment?date={TODAY}&practitioner=Practitioner/{OLD_DOCTOR}"),
        format!("/fhir/Slot?start={TODAY}&schedule=Schedule/{OLD_DOCTOR}"),
        format!("/fhir/Appointment/{}", tokens[0]),
        format!("/fhir/Slot/{OLD_SLOT}"),
    ] {
        let found = app.get(&search).await.expect_status(200).body;
        // Links name the server's address, which a restart changes.
        let found = found.to_string().replace(&app.address, "http://server");
        read.push(serde_json::from_str(&found).unwrap());
    }
    read
}

/// Each change a client may try on the old day, with the status and code
/// of its answer.
async fn refusals(app: &TestApp, tokens: &[String]) -> Vec<(u16, String)> {
    let mut replies = vec![
        app.try_book("P9", OLD_SLOT, "EMERGENCY").await,
        app.try_set_capacity(OLD_SLOT, json!(5)).await,
        app.send(app.request(Method::POST, &format!("/slots/{OLD_SLOT}/close")))
            .await,
        app.post_json(
            "/slots",
            &json!({
                "slotId": OLD_SLOT,
                "doctorId": "D-NEW",
                "date": "2030-02-01",
                "startTime": "09:00",
                "endTime": "10:00",
                "capacity": 1,
            }),
        )
        .await,
        app.post_json(
            "/slots",
            &json!({
                "slotId": "OLD-0930",
                "doctorId": OLD_DOCTOR,
                "date": TODAY,
                "startTime": "09:30",
                "endTime": "10:30",
                "capacity": 1,
            }),
        )
        .await,
        app.try_call_next(OLD_DOCTOR).await,
    ];
    for token in tokens {
        for action in ["cancel", "no-show", "check-in", "complete"] {
            replies.push(app.try_act(token, action).await);
        }
    }
    replies
        .into_iter()
        .map(|reply| {
            let code = reply.body["code"].as_str().unwrap_or_default().to_owned();
            (reply.status, code)
        })
        .collect()
}

/// Fails naming the first read that differs.
fn assert_same_reads(now: &[Value], before: &[Value]) {
    assert_eq!(now.len(), before.len());
    for (index, (now, before)) in now.iter().zip(before).enumerate() {
        assert_eq!(now, before, "read {index} differs");
    }
}

durable_backend_tests!(
    a_day_that_left_the_engine_reads_and_refuses_changes_as_before,
    a_day_not_over_when_the_server_stopped_ends_before_it_leaves,
);
/// The gauges count what this process's engine holds, which an instance
/// on PostgreSQL does not keep between requests.
mod the_engine_keeps_todays_tokens_when_days_leave {
    use super::the_engine_keeps_todays_tokens_when_days_leave as keeps;
    use crate::helpers::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory() {
        keeps(Backend::Memory, 0).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        keeps(Backend::Sqlite, 0).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_keeping_yesterday() {
        keeps(Backend::Sqlite, 1).await
    }
}

async fn a_day_that_left_the_engine_reads_and_refuses_changes_as_before(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = a_day_of_work(&app).await;
    // The day ends: the slot closes and its absent patients are no-shows.
    app.clock.set("2030-01-16T08:00:00Z");
    app.service.tick().await.unwrap();
    let before = reads(&app, &tokens).await;
    let refused_before = refusals(&app, &tokens).await;
    assert_eq!(before[3]["status"], "EXPIRED");
    assert_eq!(before[2]["status"], "NO_SHOW");
    let codes: Vec<&str> = refused_before
        .iter()
        .map(|(_, code)| code.as_str())
        .collect();
    assert_eq!(
        codes[..7],
        [
            "SLOT_CLOSED",
            "SLOT_CLOSED",
            "SLOT_CLOSED",
            "SLOT_EXISTS",
            "SLOT_OVERLAP",
            "QUEUE_EMPTY",
            "INVALID_TRANSITION"
        ]
    );
    assert!(refused_before.iter().all(|(status, _)| *status == 409));

    // Two days on, the day is older than yesterday.
    app.clock.set("2030-01-17T08:00:00Z");
    app.service.tick().await.unwrap();
    assert_same_reads(&reads(&app, &tokens).await, &before);
    assert_eq!(refusals(&app, &tokens).await, refused_before);

    let app = app.restart().await;
    assert_same_reads(&reads(&app, &tokens).await, &before);
    assert_eq!(refusals(&app, &tokens).await, refused_before);
    let refused = app.try_book("P9", OLD_SLOT, "ONLINE").await;
    assert_problem(&refused, 409, "SLOT_CLOSED");
}

/// On SQLite the engine lets the old day's slots and tokens go and keeps
/// today's, the day after by default and a day later with `--live-days 1`;
/// in memory, where there is nowhere else to read them from, it keeps
/// every day.
async fn the_engine_keeps_todays_tokens_when_days_leave(backend: Backend, live_days: u16) {
    let app = TestApp::with(backend)
        .settings(move |config| config.live_days = live_days)
        .spawn()
        .await;
    a_day_of_work(&app).await;
    let old_slots = app.slots(&format!("?date={TODAY}")).await;
    let old_slots = old_slots.as_array().unwrap().len() as f64;
    let later = app.slot_days_ahead().await;
    app.book("P1", &later, "ONLINE").await;
    let (slots, tokens) = (
        gauge(&app, "opd_engine_slots").await,
        gauge(&app, "opd_engine_tokens").await,
    );
    assert!(tokens >= 5.0, "{tokens} tokens");

    for _ in 0..live_days {
        app.clock.advance(SignedDuration::from_hours(24));
        app.service.tick().await.unwrap();
        // Still within the live window.
        assert_eq!(gauge(&app, "opd_engine_tokens").await, tokens);
    }
    app.clock.advance(SignedDuration::from_hours(24));
    app.service.tick().await.unwrap();
    let (slots_now, tokens_now) = (
        gauge(&app, "opd_engine_slots").await,
        gauge(&app, "opd_engine_tokens").await,
    );
    match backend {
        Backend::Memory => assert_eq!((slots_now, tokens_now), (slots, tokens)),
        _ => assert_eq!((slots_now, tokens_now), (slots - old_slots, tokens - 4.0)),
    }
    // The later slot's token is still served from the engine.
    assert_eq!(app.slot(&later).await["allocatedCount"], 1);
}

/// A day that was still open when the server stopped, and is past the
/// live window when it starts again, is closed and ended at start-up
/// before it leaves the engine, as the contract promises for what fell due
/// while the service was down.
async fn a_day_not_over_when_the_server_stopped_ends_before_it_leaves(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = a_day_of_work(&app).await;
    let dir = app.stop().await;
    let clock = crate::helpers::TestClock::at("2030-01-20T08:00:00Z");
    let app = TestApp::with(backend)
        .clock(clock)
        .data_dir(dir)
        .spawn()
        .await;
    let statuses: Vec<Value> = {
        let mut statuses = Vec::new();
        for token in &tokens {
            statuses.push(app.token(token).await["status"].clone());
        }
        statuses
    };
    assert_eq!(
        statuses,
        [
            json!("COMPLETED"),
            json!("CANCELLED"),
            json!("NO_SHOW"),
            json!("EXPIRED")
        ]
    );
    assert_eq!(app.slot(OLD_SLOT).await["closed"], true);
    if backend == Backend::Sqlite {
        assert_eq!(gauge(&app, "opd_engine_tokens").await, 0.0);
    }
}
