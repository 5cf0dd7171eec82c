//! `GET /metrics`: each metric moves with the operation that should move
//! it, on every backend; keys and `--metrics-listen`.

use std::time::Duration;

use reqwest::Method;

use crate::common::EventStream;
use crate::helpers::{assert_problem, id_of, Backend, TestApp};

backend_tests!(
    bookings_and_transitions_are_counted_from_the_durable_events,
    requests_are_counted_by_route_template_method_and_status,
    commits_are_timed_and_sized_where_storage_commits,
    each_doctor_s_waiting_patients_are_read_from_the_queue,
    each_call_is_measured_against_its_check_in_estimate,
    open_streams_and_their_delivery_delay_are_measured,
    the_metrics_listener_serves_metrics_without_a_key_and_nothing_else,
);

/// The metrics as `GET /metrics` renders them.
async fn scrape(app: &TestApp) -> String {
    let reply = app.get("/metrics").await.expect_status(200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    reply.text
}

/// The value of one series (`name{labels}` exactly as rendered, labels in
/// the order the service gives them), or `None` when it is not rendered.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a number"))
        })
}

/// Scrapes until `series` has `expected` (events are counted as they are
/// told, a moment after the change is answered); fails after 5 s.
async fn eventually(app: &TestApp, series: &str, expected: f64) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(app).await;
        if value(&text, series) == Some(expected) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never became {expected}:\n{text}");
}

async fn bookings_and_transitions_are_counted_from_the_durable_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(2).await;
    let before = scrape(&app).await;
    for decision in ["ALLOCATED", "BUMPED_LOWER", "OVERBOOKED", "WAITLISTED"] {
        let series = format!("opd_bookings_total{{decision=\"{decision}\"}}");
        assert_eq!(value(&before, &series), Some(0.0), "{series}");
    }

    app.book("P1", &slot.id, "ONLINE").await;
    let walk_in = app.book("P2", &slot.id, "WALK_IN").await;
    app.book("P3", &slot.id, "PAID").await; // bumps P2
    app.book("P4", &slot.id, "EMERGENCY").await; // overbooks
    app.book("P5", &slot.id, "WALK_IN").await; // waits
    app.cancel(&id_of(&walk_in)).await;
    // A refused booking changes nothing, so counts nothing.
    app.try_book("P1", &slot.id, "ONLINE")
        .await
        .expect_status(409);

    // Events are counted in order: once the cancellation is, every
    // booking before it is.
    let text = eventually(
        &app,
        "opd_token_transitions_total{to=\"CANCELLED\",reason=\"CANCELLED\"}",
        1.0,
    )
    .await;
    assert_eq!(
        value(&text, "opd_bookings_total{decision=\"WAITLISTED\"}"),
        Some(1.0)
    );
    let count = |series: &str| value(&text, series);
    assert_eq!(
        count("opd_bookings_total{decision=\"ALLOCATED\"}"),
        Some(2.0)
    );
    assert_eq!(
        count("opd_bookings_total{decision=\"BUMPED_LOWER\"}"),
        Some(1.0)
    );
    assert_eq!(
        count("opd_bookings_total{decision=\"OVERBOOKED\"}"),
        Some(1.0)
    );
    let transitions = |to: &str, reason: &str| {
        count(&format!(
            "opd_token_transitions_total{{to=\"{to}\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(transitions("ALLOCATED", "ALLOCATED"), Some(2.0));
    assert_eq!(transitions("ALLOCATED", "BUMPED_LOWER"), Some(1.0));
    assert_eq!(transitions("WAITLISTED", "BUMPED"), Some(1.0));
    assert_eq!(transitions("ALLOCATED", "OVERBOOKED"), Some(1.0));
    assert_eq!(transitions("WAITLISTED", "WAITLISTED"), Some(1.0));
    assert_eq!(transitions("CANCELLED", "CANCELLED"), Some(1.0));
}

async fn requests_are_counted_by_route_template_method_and_status(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(2).await;
    app.get(&format!("/slots/{}", slot.id))
        .await
        .expect_status(200);
    app.get("/slots/NO-SUCH-SLOT").await.expect_status(404);
    app.get("/no/such/path").await.expect_status(404);
    app.get("/another/unknown").await.expect_status(404);
    app.send(app.request(Method::DELETE, "/board"))
        .await
        .expect_status(405);
    app.book("P1", &slot.id, "ONLINE").await;

    let text = scrape(&app).await;
    let requests = |route: &str, method: &str, status: u16| {
        value(
            &text,
            &format!(
                "opd_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
            ),
        )
    };
    // new_slot reads the demo slot once, then this test reads its own.
    assert_eq!(requests("/slots/{slotId}", "GET", 200), Some(2.0));
    assert_eq!(requests("/slots/{slotId}", "GET", 404), Some(1.0));
    assert_eq!(requests("/slots", "POST", 201), Some(1.0));
    assert_eq!(requests("/tokens", "POST", 201), Some(1.0));
    assert_eq!(requests("/board", "DELETE", 405), Some(1.0));
    // Unknown paths share one label; no raw path becomes a label.
    assert_eq!(requests("unmatched", "GET", 404), Some(2.0));
    assert!(
        !text.contains("no/such") && !text.contains(&slot.id),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "opd_http_request_duration_seconds_count{route=\"/tokens\",method=\"POST\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "opd_http_request_duration_seconds_bucket{route=\"/tokens\",method=\"POST\",le=\"+Inf\"}"
        ),
        Some(1.0)
    );
    // The scrape itself is counted once it is answered.
    let again = scrape(&app).await;
    assert_eq!(
        value(
            &again,
            "opd_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"200\"}"
        ),
        Some(1.0)
    );
}

async fn commits_are_timed_and_sized_where_storage_commits(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = scrape(&app).await;
    let commits = |text: &str| value(text, "opd_storage_commit_duration_seconds_count");
    let changes = |text: &str| value(text, "opd_storage_commit_batch_size_sum");
    assert_eq!(value(&before, "opd_storage_failed"), Some(0.0));

    app.book("P1", "D1-09", "ONLINE").await;
    app.book("P2", "D1-09", "ONLINE").await;

    let after = scrape(&app).await;
    match backend {
        // Nothing is committed in memory.
        Backend::Memory => {
            assert_eq!(commits(&after), None);
            assert!(!after.contains("opd_postgres_retries_total"));
        }
        Backend::Sqlite | Backend::Postgres => {
            // Samples are folded into buckets when scraped, so a commit
            // that happened is in the scrape after it.
            let (before_commits, after_commits) =
                (commits(&before).unwrap_or(0.0), commits(&after).unwrap());
            assert!(after_commits >= before_commits + 1.0, "{after}");
            assert!(changes(&after).unwrap() >= changes(&before).unwrap_or(0.0) + 2.0);
            assert!(value(&after, "opd_storage_commit_duration_seconds_sum").unwrap() > 0.0);
        }
    }
    if backend == Backend::Postgres {
        for sqlstate in ["40001", "40P01", "23505"] {
            let series = format!("opd_postgres_retries_total{{sqlstate=\"{sqlstate}\"}}");
            assert_eq!(value(&after, &series), Some(0.0), "{series}");
        }
    }
}

async fn each_doctor_s_waiting_patients_are_read_from_the_queue(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set("2030-01-15T09:00:00Z");
    let slot = app.new_slot(3).await;
    let series = format!("opd_queue_waiting{{doctor=\"{}\"}}", slot.doctor);
    let first = id_of(&app.book("P1", &slot.id, "ONLINE").await);
    let second = id_of(&app.book("P2", &slot.id, "ONLINE").await);
    assert_eq!(value(&scrape(&app).await, &series), Some(0.0));

    app.act(&first, "check-in").await;
    app.act(&second, "check-in").await;
    assert_eq!(value(&scrape(&app).await, &series), Some(2.0));

    app.act(&first, "call").await;
    assert_eq!(value(&scrape(&app).await, &series), Some(1.0));
    assert_eq!(
        value(&scrape(&app).await, "opd_queue_waiting{doctor=\"D1\"}"),
        Some(0.0)
    );
}

async fn each_call_is_measured_against_its_check_in_estimate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.clock.set("2030-01-15T09:00:00Z");
    let slot = app.new_slot(4).await;
    let first = id_of(&app.book("P1", &slot.id, "ONLINE").await);
    let second = id_of(&app.book("P2", &slot.id, "ONLINE").await);
    // The doctor is free: the first is expected at once, the second one
    // consultation (60 min ÷ 4 seats) later.
    let checked_in = app.act(&first, "check-in").await;
    assert_eq!(
        checked_in["token"]["estimatedCallAt"],
        "2030-01-15T09:00:00Z"
    );
    let checked_in = app.act(&second, "check-in").await;
    assert_eq!(
        checked_in["token"]["estimatedCallAt"],
        "2030-01-15T09:15:00Z"
    );

    // Called 5 minutes late, then 10 minutes early.
    app.clock.set("2030-01-15T09:05:00Z");
    app.act(&first, "call").await;
    app.act(&first, "skip").await;
    app.act(&second, "call").await;

    let text = eventually(&app, "opd_wait_estimate_error_seconds_count", 2.0).await;
    assert_eq!(
        value(&text, "opd_wait_estimate_error_seconds_sum"),
        Some(-300.0)
    );
    let bucket = |le: &str| {
        value(
            &text,
            &format!("opd_wait_estimate_error_seconds_bucket{{le=\"{le}\"}}"),
        )
    };
    assert_eq!(bucket("-900"), Some(0.0));
    assert_eq!(bucket("-600"), Some(1.0));
    assert_eq!(bucket("0"), Some(1.0));
    assert_eq!(bucket("300"), Some(2.0));
}

async fn open_streams_and_their_delivery_delay_are_measured(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(
        value(&scrape(&app).await, "opd_event_subscribers"),
        Some(0.0)
    );
    let mut everything = EventStream::open(&app.client, &app.url("/events"), None).await;
    let one_doctor = EventStream::open(&app.client, &app.url("/events?doctorId=D1"), None).await;
    assert_eq!(
        value(&scrape(&app).await, "opd_event_subscribers"),
        Some(2.0)
    );

    app.book("P1", "D1-09", "ONLINE").await;
    everything.events(1).await;

    // On PostgreSQL the follower may also hand on the demo schedule's
    // slot creations, when it started before they were committed: at
    // least the booking is timed. The test clock stands still, so every
    // delay it measures is 0.
    let mut text = scrape(&app).await;
    for _ in 0..100 {
        if value(&text, "opd_event_delivery_delay_seconds_count").unwrap_or(0.0) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = scrape(&app).await;
    }
    let count = value(&text, "opd_event_delivery_delay_seconds_count").unwrap();
    assert!(count >= 1.0, "{text}");
    assert_eq!(
        value(
            &text,
            "opd_event_delivery_delay_seconds_bucket{le=\"0.001\"}"
        ),
        Some(count)
    );
    drop(one_doctor);
    drop(everything);
    eventually(&app, "opd_event_subscribers", 0.0).await;
}

async fn the_metrics_listener_serves_metrics_without_a_key_and_nothing_else(backend: Backend) {
    let app = TestApp::with(backend)
        .settings(|config| {
            config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
            config.api_keys = Some(
                "boss admin EXAMPLE-admin-key-0001;wall viewer EXAMPLE-viewer-key-0002;desk front-desk EXAMPLE-desk-key-00003"
                    .parse()
                    .unwrap(),
            );
        })
        .spawn()
        .await;
    let scraper = app.metrics_address.clone().expect("a metrics address");
    let get = |url: String, key: Option<&'static str>| {
        let mut request = app.client.get(url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move { request.send().await.expect("an answer") }
    };

    let scraped = get(format!("{scraper}/metrics"), None).await;
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    assert!(text.contains("# TYPE opd_bookings_total counter"), "{text}");
    assert_eq!(get(format!("{scraper}/slots"), None).await.status(), 404);
    // On the main address, only admin and viewer keys read them.
    assert_eq!(get(app.url("/metrics"), None).await.status(), 401);
    let desk = get(app.url("/metrics"), Some("EXAMPLE-desk-key-00003")).await;
    assert_eq!(desk.status(), 403);
    for key in ["EXAMPLE-admin-key-0001", "EXAMPLE-viewer-key-0002"] {
        assert_eq!(get(app.url("/metrics"), Some(key)).await.status(), 200);
    }
}

/// `--metrics off`: `/metrics` answers 404 and the service works as ever;
/// a metrics listener cannot be asked for as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_turned_off() {
    let app = TestApp::with(Backend::Memory)
        .settings(|config| config.metrics = opd::config::Switch::Off)
        .spawn()
        .await;
    let slot = app.new_slot(1).await;
    app.book("P1", &slot.id, "ONLINE").await;

    assert_problem(&app.get("/metrics").await, 404, "NOT_FOUND");

    let mut config = opd::Config::for_tests();
    config.metrics = opd::config::Switch::Off;
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let refused = opd::Application::build(config).await.err();
    assert!(
        matches!(refused, Some(opd::StartError::MetricsOffButListened)),
        "{refused:?}"
    );
}

/// PostgreSQL's deadlock check ends one of two transactions waiting on
/// each other: here the booking's, which the service then tries again.
#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_that_loses_a_deadlock_is_retried_and_counted() {
    use std::str::FromStr;

    use sqlx::postgres::PgConnectOptions;
    use sqlx::{Connection, PgConnection};

    let app = TestApp::spawn(Backend::Postgres).await;
    let slot = app.new_slot(3).await;
    let schema = app.data_dir.as_ref().expect("a schema").schema();
    let options = PgConnectOptions::from_str(&crate::common::database_url())
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let mut other = PgConnection::connect_with(&options).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT 1 FROM doctor_days WHERE doctor_id = $1 AND date = $2 FOR UPDATE")
        .bind(&slot.doctor)
        .bind(&slot.date)
        .execute(&mut other)
        .await
        .unwrap();
    // The booking locks the slot's row, then waits for the doctor's day.
    let booking = tokio::spawn({
        let request = app
            .client
            .post(app.url("/tokens"))
            .json(&crate::helpers::booking("P1", &slot.id, "ONLINE"));
        async move { request.send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Now this one waits for the slot's row: a cycle. The booking has
    // waited longer, so its deadlock check comes first and ends it.
    sqlx::query("SELECT 1 FROM slots WHERE slot_id = $1 FOR UPDATE")
        .bind(&slot.id)
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();

    assert_eq!(booking.await.unwrap(), 201);
    let text = scrape(&app).await;
    assert_eq!(
        value(&text, "opd_postgres_retries_total{sqlstate=\"40P01\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "opd_postgres_retries_total{sqlstate=\"40001\"}"),
        Some(0.0)
    );
}
