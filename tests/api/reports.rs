//! Day reports: every figure of a day scripted on the test clock, where
//! each wait is known in advance, on every backend; the same report after
//! the day's events left the log; CSV; ranges; refusals.

use std::time::Duration;

use jiff::SignedDuration;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_validation, id_of, Backend, TestApp, TODAY};

backend_tests!(
    a_scripted_day_gives_every_figure,
    the_report_is_the_same_after_the_day_left_the_event_log,
    a_range_gives_one_report_per_date,
    waits_by_hour_are_hours_of_the_clinic_s_zone,
    reports_come_as_csv_when_asked,
    invalid_dates_ranges_and_doctors_are_refused,
);

const DOCTOR: &str = "DR";

fn at(time: &str) -> String {
    match time.len() {
        5 => format!("{TODAY}T{time}:00Z"),
        _ => format!("{TODAY}T{time}Z"),
    }
}

/// Patient `n`'s token in `slot`, booked from `source`.
async fn book(app: &TestApp, n: u32, slot: &str, source: &str) -> String {
    id_of(&app.book(&format!("P{n}"), slot, source).await)
}

/// Runs this day for doctor DR, two slots of 09:00–10:00 and 10:00–11:00
/// with two seats each (30 minutes per seat), every step at a set time:
///
/// | patient | source | booked | then |
/// |---|---|---|---|
/// | P1 | ONLINE | allocated | in 09:00 (expected 09:45), called 09:25, skipped 09:30, back 09:40 (expected 09:46:20), called 09:45, started 09:46, completed 10:06 |
/// | P2 | WALK_IN | allocated, bumped by P3 | expired when R-09 closes at 10:10 |
/// | P3 | PAID | bumped P2 | in 09:00 (expected 09:15), called 09:10, started 09:12, completed 09:22 |
/// | P4 | EMERGENCY | overbooked | no-show when R-09 closes |
/// | P5 | WALK_IN | waitlisted | cancelled |
/// | P6 | FOLLOW_UP (R-10) | allocated | in 10:10 (expected 10:10), called 10:20, started 10:30, completed at the day's end |
async fn scripted_day(app: &TestApp) {
    app.clock.set(&at("08:00"));
    for (slot, start, end) in [("R-09", "09:00", "10:00"), ("R-10", "10:00", "11:00")] {
        app.create_slot(&json!({
            "slotId": slot, "doctorId": DOCTOR, "startTime": start, "endTime": end, "capacity": 2,
        }))
        .await;
    }
    let p1 = book(app, 1, "R-09", "ONLINE").await;
    book(app, 2, "R-09", "WALK_IN").await;
    let p3 = book(app, 3, "R-09", "PAID").await;
    book(app, 4, "R-09", "EMERGENCY").await;
    let p5 = book(app, 5, "R-09", "WALK_IN").await;
    let p6 = book(app, 6, "R-10", "FOLLOW_UP").await;
    app.cancel(&p5).await;

    let step = |time: &str, token: &str, action: &str, estimate: Option<&str>| {
        let (time, token, action) = (at(time), token.to_owned(), action.to_owned());
        let estimate = estimate.map(at);
        async move {
            app.clock.set(&time);
            let answer = app.act(&token, &action).await;
            if let Some(estimate) = estimate {
                assert_eq!(answer["token"]["estimatedCallAt"], estimate.as_str());
            }
        }
    };
    // P3 (PAID) goes before P1 (ONLINE): P1 waits one consultation. The
    // emergency P4, booked and not in the hall, would be called first if
    // they came: while their slot runs the estimates allow half a
    // consultation for them (15 minutes, then 6 min 20 s once the doctor's
    // pace and one skip are known).
    step("09:00", &p3, "check-in", Some("09:15")).await;
    step("09:00", &p1, "check-in", Some("09:45")).await;
    step("09:10", &p3, "call", None).await;
    step("09:12", &p3, "start", None).await;
    step("09:22", &p3, "complete", None).await;
    step("09:25", &p1, "call", None).await;
    step("09:30", &p1, "skip", None).await;
    step("09:40", &p1, "check-in", Some("09:46:20")).await;
    step("09:45", &p1, "call", None).await;
    step("09:46", &p1, "start", None).await;
    step("10:06", &p1, "complete", None).await;
    app.clock.set(&at("10:10"));
    app.send(app.request(Method::POST, "/slots/R-09/close"))
        .await
        .expect_status(200);
    step("10:10", &p6, "check-in", Some("10:10")).await;
    step("10:20", &p6, "call", None).await;
    step("10:30", &p6, "start", None).await;
    app.clock.set("2030-01-16T00:00:00Z");
    app.service.tick().await.unwrap();
    assert_eq!(app.token(&p6).await["status"], "COMPLETED");
}

/// DR's figures of the scripted day.
fn dr_figures() -> Value {
    json!({
        "tokens": 6,
        "bySource": {"EMERGENCY": 1, "PAID": 1, "FOLLOW_UP": 1, "ONLINE": 1, "WALK_IN": 2},
        "decisions": {"ALLOCATED": 3, "BUMPED_LOWER": 1, "OVERBOOKED": 1, "WAITLISTED": 1},
        // P6's consultation was completed by the day's end.
        "outcomes": {"COMPLETED": 3, "NO_SHOW": 1, "CANCELLED": 1, "EXPIRED": 1},
        // P3 10 min, P1 25 min (to the first call), P6 10 min.
        "waitToCall": {"count": 3, "medianSeconds": 600.0, "p90Seconds": 1500.0},
        // P3 and P1 checked in at 09:00, P6 at 10:10.
        "waitsByHour": [
            {"hour": 9, "count": 2, "medianSeconds": 600.0, "p90Seconds": 1500.0},
            {"hour": 10, "count": 1, "medianSeconds": 600.0, "p90Seconds": 600.0},
        ],
        // P3 2 min, P1 1 min (from the call answered), P6 10 min.
        "waitToStart": {"count": 3, "medianSeconds": 120.0, "p90Seconds": 600.0},
        // P3 10 min, P1 20 min; P6's end was the day's, not the doctor's.
        "consultation": {"count": 2, "medianSeconds": 600.0, "p90Seconds": 1200.0},
        "sessionSeconds": 7200.0,
        "consultationSeconds": 1800.0,
        "utilisation": 0.25,
        "idleSeconds": 5400.0,
        // P3 +10 min, P1 −5 min and +5 min, P6 +10 min.
        "estimateError": {"count": 4, "meanAbsoluteSeconds": 545.0, "underestimatedShare": 0.25},
    })
}

async fn day_report(app: &TestApp, query: &str) -> Value {
    app.get(&format!("/reports/day{query}"))
        .await
        .expect_status(200)
        .body
}

async fn a_scripted_day_gives_every_figure(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    scripted_day(&app).await;

    let report = day_report(&app, &format!("?date={TODAY}")).await;

    assert_eq!(report["date"], TODAY);
    let doctors: Vec<&Value> = report["doctors"].as_array().unwrap().iter().collect();
    let ids: Vec<&Value> = doctors.iter().map(|doctor| &doctor["doctorId"]).collect();
    // The demo schedule's doctors have slots that day too, but no tokens.
    assert_eq!(
        ids,
        [&json!("D1"), &json!("D2"), &json!("D3"), &json!(DOCTOR)]
    );
    assert_eq!(doctors[3]["figures"], dr_figures());
    let d1 = &doctors[0]["figures"];
    assert_eq!(d1["tokens"], 0);
    assert_eq!(d1["sessionSeconds"], 4.0 * 3600.0);
    assert_eq!(d1["utilisation"], 0.0);
    assert_eq!(d1["waitsByHour"], json!([]));
    assert_eq!(
        d1["waitToCall"],
        json!({"count": 0, "medianSeconds": null, "p90Seconds": null})
    );
    // The clinic's figures are DR's and the demo doctors' sessions.
    let mut clinic = dr_figures();
    clinic["sessionSeconds"] = json!(7200.0 + 3.0 * 4.0 * 3600.0);
    clinic["idleSeconds"] = json!(7200.0 + 3.0 * 4.0 * 3600.0 - 1800.0);
    clinic["utilisation"] = json!(1800.0 / (7200.0 + 3.0 * 4.0 * 3600.0));
    assert_eq!(report["clinic"], clinic);

    // One doctor: only that doctor, the clinic still whole.
    let one = day_report(&app, &format!("?date={TODAY}&doctorId={DOCTOR}")).await;
    assert_eq!(
        one["doctors"],
        json!([{"doctorId": DOCTOR, "figures": dr_figures()}])
    );
    assert_eq!(one["clinic"], report["clinic"]);
    // Without a date, today (the clock now stands on the next day).
    let today = day_report(&app, "").await;
    assert_eq!(today["date"], "2030-01-16");
    assert_eq!(today["doctors"], json!([]));
}

async fn the_report_is_the_same_after_the_day_left_the_event_log(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    scripted_day(&app).await;
    let before = day_report(&app, &format!("?date={TODAY}")).await;

    // Three days on, the day's events are past the log's retention: the
    // next change prunes them (the PostgreSQL follower on its own
    // schedule), keeping what reports need.
    app.clock.advance(SignedDuration::from_hours(72));
    app.service.tick().await.unwrap();
    app.create_slot(&json!({
        "slotId": "LATER", "doctorId": "DL", "date": "2030-01-20",
        "startTime": "09:00", "endTime": "10:00", "capacity": 1,
    }))
    .await;
    // In memory the log is bounded by count, not time: it still holds
    // the day, and a unit test covers what it keeps past its bound.
    if backend != Backend::Memory {
        let mut page = app.service.events_after(0, 1).await.unwrap();
        for _ in 0..100 {
            if page.oldest == page.newest {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            page = app.service.events_after(0, 1).await.unwrap();
        }
        assert_eq!(
            page.oldest, page.newest,
            "only the new slot's creation is left in the log"
        );
    }

    let after = day_report(&app, &format!("?date={TODAY}")).await;
    assert_eq!(after, before);
}

async fn a_range_gives_one_report_per_date(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    scripted_day(&app).await;

    let range = app
        .get(&format!(
            "/reports/days?from=2030-01-14&to=2030-01-16&doctorId={DOCTOR}"
        ))
        .await
        .expect_status(200)
        .body;

    assert_eq!(range["from"], "2030-01-14");
    assert_eq!(range["to"], "2030-01-16");
    let days = range["days"].as_array().unwrap();
    let dates: Vec<&Value> = days.iter().map(|day| &day["date"]).collect();
    assert_eq!(dates, ["2030-01-14", "2030-01-15", "2030-01-16"]);
    assert_eq!(days[1]["doctors"][0]["figures"], dr_figures());
    assert_eq!(days[0]["doctors"][0]["figures"]["tokens"], 0);
    assert_eq!(days[0]["clinic"]["sessionSeconds"], 0.0);
    assert_eq!(days[0]["clinic"]["utilisation"], Value::Null);
    // 92 days, both ends included, is the most.
    app.get("/reports/days?from=2030-01-01&to=2030-04-02")
        .await
        .expect_status(200);
}

async fn waits_by_hour_are_hours_of_the_clinic_s_zone(backend: Backend) {
    // India is 5 h 30 min ahead of UTC: 03:40Z is 09:10 at the clinic.
    let app = TestApp::with(backend)
        .timezone("Asia/Kolkata")
        .spawn()
        .await;
    app.clock.set(&at("02:00"));
    app.create_slot(&json!({
        "slotId": "K-09", "doctorId": "DK", "date": TODAY,
        "startTime": "09:00", "endTime": "11:00", "capacity": 4,
    }))
    .await;
    let first = book(&app, 1, "K-09", "ONLINE").await;
    let second = book(&app, 2, "K-09", "ONLINE").await;
    for (time, token, action) in [
        ("03:40", &first, "check-in"),
        ("04:25", &second, "check-in"),
        ("04:31", &first, "call"),
        ("04:32", &first, "start"),
        ("04:40", &first, "complete"),
        ("04:55", &second, "call"),
    ] {
        app.clock.set(&at(time));
        app.act(token, action).await;
    }

    let report = day_report(&app, &format!("?date={TODAY}&doctorId=DK")).await;

    // The first waited 51 minutes from 09:10, the second 30 from 09:55.
    assert_eq!(
        report["doctors"][0]["figures"]["waitsByHour"],
        json!([{"hour": 9, "count": 2, "medianSeconds": 1800.0, "p90Seconds": 3060.0}])
    );
    assert_eq!(report["clinic"]["waitsByHour"][0]["hour"], 9);
}

async fn reports_come_as_csv_when_asked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    scripted_day(&app).await;

    let reply = app
        .send(
            app.request(
                Method::GET,
                &format!("/reports/day?date={TODAY}&doctorId={DOCTOR}"),
            )
            .header("accept", "text/csv"),
        )
        .await
        .expect_status(200);

    assert_eq!(
        reply.header("content-type"),
        Some("text/csv; charset=utf-8")
    );
    let lines: Vec<&str> = reply.text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", reply.text);
    let header: Vec<&str> = lines[0].split(',').collect();
    let row: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(header.len(), row.len());
    let field = |name: &str| row[header.iter().position(|each| *each == name).unwrap()];
    assert_eq!(lines[1].split(',').nth(1), Some("clinic"));
    assert_eq!(field("date"), TODAY);
    assert_eq!(field("scope"), "doctor");
    assert_eq!(field("doctorId"), DOCTOR);
    assert_eq!(field("tokens"), "6");
    assert_eq!(field("source_WALK_IN"), "2");
    assert_eq!(field("decision_BUMPED_LOWER"), "1");
    assert_eq!(field("outcome_EXPIRED"), "1");
    assert_eq!(field("waitToCallMedianSeconds"), "600");
    assert_eq!(field("waitToCallP90Seconds"), "1500");
    assert_eq!(field("consultationCount"), "2");
    assert_eq!(field("utilisation"), "0.25");
    assert_eq!(field("estimateMeanAbsoluteSeconds"), "545");
    assert_eq!(field("estimateUnderestimatedShare"), "0.25");
    // A doctor without calls has empty fields where JSON has null.
    let range = app
        .send(
            app.request(
                Method::GET,
                "/reports/days?from=2030-01-14&to=2030-01-14&doctorId=D9",
            )
            .header("accept", "text/csv"),
        )
        .await
        .expect_status(200);
    let lines: Vec<&str> = range.text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[2].starts_with("2030-01-14,doctor,D9,0,"),
        "{}",
        lines[2]
    );
    assert!(lines[2].contains(",0,,,"), "{}", lines[2]);
}

async fn invalid_dates_ranges_and_doctors_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (query, fields) in [
        ("/reports/day?date=2030-02-30", &["date"][..]),
        (
            "/reports/day?date=15-01-2030&doctorId=a/b",
            &["date", "doctorId"][..],
        ),
        ("/reports/days?to=2030-01-02", &["from"][..]),
        ("/reports/days", &["from", "to"][..]),
        ("/reports/days?from=2030-01-03&to=2030-01-02", &["to"][..]),
        ("/reports/days?from=2030-01-01&to=2030-04-03", &["to"][..]),
        (
            "/reports/days?from=2030-01-01&to=2030-01-01&doctorId=",
            &["doctorId"][..],
        ),
    ] {
        assert_validation(&app.get(query).await, fields);
    }
}
