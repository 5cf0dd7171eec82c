//! Weekly templates (`--schedule-templates`): sessions made into dated
//! slots from today through `--schedule-days-ahead` days ahead, at start-up
//! and at each day's first tick, never twice; ranges, exceptions, reloads,
//! invalid files and a daylight-saving change.

use std::path::PathBuf;

use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp, TestClock};

/// A templates file in a fresh temporary directory, removed when dropped.
struct TemplatesFile(PathBuf);

impl TemplatesFile {
    fn new(text: &str) -> TemplatesFile {
        let dir = std::env::temp_dir()
            .join("opd-templates-tests")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let file = TemplatesFile(dir.join("templates.toml"));
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for TemplatesFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The test clock starts on Tuesday 2030-01-15 at 08:00 UTC.
const WEEK: &str = r#"
# Dr Rao: weekday mornings. Dr Sen: Saturday evenings.
[[session]]
doctor = "RAO"
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "13:00"
capacity = 5

[[session]]
doctor = "SEN"
days = ["sat"]
start = 18:00:00
end = 20:00:00
capacity = 8
"#;

/// An application on `backend` with `file` as its templates and
/// `days_ahead`.
async fn spawn(backend: Backend, file: &TemplatesFile, days_ahead: u16) -> TestApp {
    let path = file.0.clone();
    TestApp::with(backend)
        .settings(move |config| {
            config.schedule_templates = Some(path.clone());
            config.schedule_days_ahead = days_ahead;
        })
        .spawn()
        .await
}

/// Every slot as (id, capacity, closed), in listing order.
async fn slots(app: &TestApp) -> Vec<(String, u64, bool)> {
    let listed = app.get("/slots").await.expect_status(200).body;
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|slot| {
            (
                slot["slotId"].as_str().unwrap().to_owned(),
                slot["capacity"].as_u64().unwrap(),
                slot["closed"].as_bool().unwrap(),
            )
        })
        .collect()
}

async fn ids(app: &TestApp) -> Vec<String> {
    slots(app).await.into_iter().map(|(id, _, _)| id).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|id| (*id).to_owned()).collect()
}

async fn the_templates_fill_the_days_ahead_at_start_up(backend: Backend) {
    let file = TemplatesFile::new(WEEK);
    let app = spawn(backend, &file, 6).await;
    // Tuesday 15 through Monday 21: no demo slot, one slot per session day.
    assert_eq!(
        ids(&app).await,
        strings(&[
            "RAO-2030-01-15-0900",
            "RAO-2030-01-16-0900",
            "RAO-2030-01-17-0900",
            "RAO-2030-01-18-0900",
            "SEN-2030-01-19-1800",
            "RAO-2030-01-21-0900",
        ])
    );
    let slot = app
        .get("/slots/SEN-2030-01-19-1800")
        .await
        .expect_status(200)
        .body;
    assert_eq!(
        (
            &slot["doctorId"],
            &slot["date"],
            &slot["startTime"],
            &slot["endTime"],
            &slot["capacity"]
        ),
        (
            &json!("SEN"),
            &json!("2030-01-19"),
            &json!("18:00"),
            &json!("20:00"),
            &json!(8)
        )
    );
    // The made slots take bookings like any other.
    app.book("P1", "RAO-2030-01-15-0900", "ONLINE").await;
}

async fn the_next_day_comes_into_reach_at_the_first_tick_of_the_day(backend: Backend) {
    let file = TemplatesFile::new(WEEK);
    let app = spawn(backend, &file, 6).await;
    let before = ids(&app).await;
    assert!(!before.contains(&"RAO-2030-01-22-0900".to_owned()));
    app.clock.advance(SignedDuration::from_hours(24));
    app.service.tick().await.unwrap();
    let after = ids(&app).await;
    assert!(
        after.contains(&"RAO-2030-01-22-0900".to_owned()),
        "{after:?}"
    );
    // Only the one new date: the others were filled before.
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    // Further ticks on the same day make nothing.
    app.service.tick().await.unwrap();
    assert_eq!(ids(&app).await, after);
    let made = app
        .get("/slots/RAO-2030-01-22-0900")
        .await
        .expect_status(200)
        .body;
    assert_eq!(made["capacity"], 5);
}

async fn no_slot_is_made_twice_across_restarts_and_admin_changes_stay(backend: Backend) {
    let file = TemplatesFile::new(WEEK);
    let app = spawn(backend, &file, 6).await;
    app.patch_json("/slots/RAO-2030-01-16-0900", &json!({"capacity": 2}))
        .await
        .expect_status(200);
    app.send(app.request(Method::POST, "/slots/RAO-2030-01-17-0900/close"))
        .await
        .expect_status(200);
    let before = slots(&app).await;
    let app = app.restart().await;
    assert_eq!(slots(&app).await, before);
    let changed = before
        .iter()
        .find(|(id, _, _)| id == "RAO-2030-01-16-0900")
        .unwrap();
    assert_eq!(changed.1, 2);
    let closed = before
        .iter()
        .find(|(id, _, _)| id == "RAO-2030-01-17-0900")
        .unwrap();
    assert!(closed.2);
    // A day later and restarted again: one new date, nothing else.
    app.clock.advance(SignedDuration::from_hours(24));
    let app = app.restart().await;
    let after = slots(&app).await;
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert!(after.iter().any(|(id, _, _)| id == "RAO-2030-01-22-0900"));
}

async fn ranges_skips_holidays_and_capacities_shape_the_dates(backend: Backend) {
    let file = TemplatesFile::new(
        r#"
holidays = ["2030-01-24"]

[[session]]
doctor = "RAO"
days = ["tue", "thu"]
start = "09:00"
end = "12:00"
capacity = 10
from = "2030-01-17"
until = 2030-01-31
skip = ["2030-01-22"]
capacity_on = { "2030-01-29" = 3 }
"#,
    );
    let app = spawn(backend, &file, 20).await;
    let made: Vec<(String, u64)> = slots(&app)
        .await
        .into_iter()
        .map(|(id, capacity, _)| (id, capacity))
        .collect();
    assert_eq!(
        made,
        [
            ("RAO-2030-01-17-0900".to_owned(), 10),
            ("RAO-2030-01-29-0900".to_owned(), 3),
            ("RAO-2030-01-31-0900".to_owned(), 10),
        ]
    );
}

async fn a_session_that_has_ended_today_is_not_made(backend: Backend) {
    let file = TemplatesFile::new(WEEK);
    let app = TestApp::with(backend)
        .clock(TestClock::at("2030-01-15T13:00:00Z"))
        .settings({
            let path = file.0.clone();
            move |config| {
                config.schedule_templates = Some(path.clone());
                config.schedule_days_ahead = 1;
            }
        })
        .spawn()
        .await;
    assert_eq!(ids(&app).await, strings(&["RAO-2030-01-16-0900"]));
}

async fn a_changed_session_applies_to_the_dates_not_filled_yet(backend: Backend) {
    let file = TemplatesFile::new(WEEK);
    let app = spawn(backend, &file, 7).await;
    // Dr Rao moves to afternoons; Dr Das joins on Tuesdays.
    file.write(
        r#"
[[session]]
doctor = "RAO"
days = ["mon", "tue", "wed", "thu", "fri"]
start = "14:00"
end = "17:00"
capacity = 6

[[session]]
doctor = "DAS"
days = ["tue"]
start = "09:00"
end = "12:00"
capacity = 4
"#,
    );
    let made = app.reload.templates().await.unwrap();
    // Dr Das's two Tuesdays in reach; Dr Rao's filled dates are left alone.
    assert_eq!(made, Some(2));
    let listed = ids(&app).await;
    assert!(listed.contains(&"DAS-2030-01-15-0900".to_owned()));
    assert!(listed.contains(&"DAS-2030-01-22-0900".to_owned()));
    assert!(listed.contains(&"RAO-2030-01-22-0900".to_owned()));
    assert!(!listed.iter().any(|id| id.ends_with("-1400")), "{listed:?}");
    // The next date to come into reach follows the new session.
    app.clock.advance(SignedDuration::from_hours(24));
    app.service.tick().await.unwrap();
    let listed = ids(&app).await;
    assert!(
        listed.contains(&"RAO-2030-01-23-1400".to_owned()),
        "{listed:?}"
    );
    assert!(!listed.contains(&"RAO-2030-01-23-0900".to_owned()));
}

async fn an_invalid_file_on_reload_is_refused_and_the_old_sessions_stay(backend: Backend) {
    let file = TemplatesFile::new(WEEK);
    let app = spawn(backend, &file, 6).await;
    file.write(&WEEK.replace("end = \"13:00\"", "end = \"08:00\""));
    let error = app.reload.templates().await.unwrap_err();
    assert!(
        error.contains("session 1 (line 3): end 08:00 is not after start 09:00"),
        "{error}"
    );
    assert!(error.contains("the templates in force stay"), "{error}");
    std::fs::remove_file(&file.0).unwrap();
    let error = app.reload.templates().await.unwrap_err();
    assert!(error.contains("templates.toml"), "{error}");
    // The next day still follows the sessions read at start-up.
    app.clock.advance(SignedDuration::from_hours(24));
    app.service.tick().await.unwrap();
    assert!(ids(&app).await.contains(&"RAO-2030-01-22-0900".to_owned()));
}

async fn a_slot_an_admin_made_first_keeps_its_place(backend: Backend) {
    let file = TemplatesFile::new(WEEK);
    let app = spawn(backend, &file, 6).await;
    // Beyond the days ahead, an admin gives Dr Rao a morning of his own.
    app.post_json(
        "/slots",
        &json!({"slotId": "RAO-CAMP", "doctorId": "RAO", "date": "2030-01-22",
                "startTime": "10:00", "endTime": "11:00", "capacity": 30}),
    )
    .await
    .expect_status(201);
    app.clock.advance(SignedDuration::from_hours(24));
    app.service.tick().await.unwrap();
    let on_the_day = app
        .get("/slots?doctorId=RAO&date=2030-01-22")
        .await
        .expect_status(200)
        .body;
    let listed: Vec<&str> = on_the_day
        .as_array()
        .unwrap()
        .iter()
        .map(|slot| slot["slotId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["RAO-CAMP"]);
}

/// The file is read before storage is opened, so the backend plays no part.
#[tokio::test]
async fn an_invalid_file_stops_the_start_up_with_its_reason() {
    let file = TemplatesFile::new(&WEEK.replace("\"fri\"", "\"fry\""));
    let mut config = opd::Config::for_tests();
    config.schedule = None;
    config.schedule_templates = Some(file.0.clone());
    let Err(error) = opd::Application::build(config.clone()).await else {
        panic!("a bad templates file must stop the start-up");
    };
    let message = error.to_string();
    assert!(
        message.contains("session 1 (line 3): days: \"fry\" is not a weekday"),
        "{message}"
    );
    assert!(message.contains("templates.toml"), "{message}");
    config.schedule_templates = Some(file.0.with_file_name("missing.toml"));
    let Err(error) = opd::Application::build(config).await else {
        panic!("a missing templates file must stop the start-up");
    };
    assert!(error.to_string().contains("missing.toml"), "{error}");
}

/// Two instances on one database reach a new date at the same tick: each
/// slot is made once and neither fails.
#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_fill_each_date_once() {
    let file = TemplatesFile::new(WEEK);
    let first = spawn(Backend::Postgres, &file, 6).await;
    let second = first.another_instance().await;
    let before = ids(&first).await;
    assert_eq!(ids(&second).await, before);
    for _ in 0..7 {
        first.clock.advance(SignedDuration::from_hours(24));
        let (a, b) = tokio::join!(first.service.tick(), second.service.tick());
        a.unwrap();
        b.unwrap();
    }
    let after = ids(&first).await;
    // A week later: the same sessions again, each once.
    assert_eq!(after.len(), 2 * before.len(), "{after:?}");
}

/// New York moves its clocks from 02:00 to 03:00 on Sunday 2030-03-10.
async fn slots_across_a_daylight_saving_change_keep_their_civil_times(backend: Backend) {
    let file = TemplatesFile::new(
        r#"
[[session]]
doctor = "RAO"
days = ["mon", "wed", "fri", "sat", "sun"]
start = "09:00"
end = "10:00"
capacity = 5

# 02:00 to 02:30 does not exist on 2030-03-10.
[[session]]
doctor = "NIGHT"
days = ["sun"]
start = "02:00"
end = "02:30"
capacity = 2

# 01:30 happens twice on 2030-11-03.
[[session]]
doctor = "EARLY"
days = ["sun"]
start = "00:30"
end = "01:30"
capacity = 2
from = "2030-11-01"
"#,
    );
    let path = file.0.clone();
    let app = TestApp::with(backend)
        // Friday 2030-03-08, 08:00 in New York (EST, UTC−5).
        .clock(TestClock::at("2030-03-08T13:00:00Z"))
        .timezone("America/New_York")
        .settings(move |config| {
            config.schedule_templates = Some(path.clone());
            config.schedule_days_ahead = 3;
            config.close_after_minutes = Some(30);
        })
        .spawn()
        .await;
    let closes_at = |slot: Value| -> (Value, Value, Timestamp) {
        (
            slot["startTime"].clone(),
            slot["endTime"].clone(),
            slot["closesAt"].as_str().unwrap().parse().unwrap(),
        )
    };
    let slot = |id: &str| {
        let path = format!("/slots/{id}");
        let app = &app;
        async move { app.get(&path).await.expect_status(200).body }
    };
    let instant = |text: &str| text.parse::<Timestamp>().unwrap();
    // 10:30 local each day: 15:30Z before the change, 14:30Z after it.
    for (id, expected) in [
        ("RAO-2030-03-08-0900", "2030-03-08T15:30:00Z"),
        ("RAO-2030-03-09-0900", "2030-03-09T15:30:00Z"),
        ("RAO-2030-03-10-0900", "2030-03-10T14:30:00Z"),
        ("RAO-2030-03-11-0900", "2030-03-11T14:30:00Z"),
    ] {
        assert_eq!(
            closes_at(slot(id).await),
            (json!("09:00"), json!("10:00"), instant(expected)),
            "{id}"
        );
    }
    // In the skipped hour the slot keeps its civil times; its end, 02:30,
    // is taken as 03:30 EDT (jiff's compatible disambiguation moves a time
    // in a gap forward by the gap), so it closes at 04:00 EDT.
    assert_eq!(
        closes_at(slot("NIGHT-2030-03-10-0200").await),
        (
            json!("02:00"),
            json!("02:30"),
            instant("2030-03-10T08:00:00Z")
        )
    );
    // Two days on, the Wednesday that comes into reach closes at 14:30Z,
    // and the night slot has closed.
    app.clock.set("2030-03-10T13:00:00Z");
    app.service.tick().await.unwrap();
    assert_eq!(
        closes_at(slot("RAO-2030-03-13-0900").await).2,
        instant("2030-03-13T14:30:00Z")
    );
    assert_eq!(slot("NIGHT-2030-03-10-0200").await["closed"], true);
    // Clocks go back from 02:00 EDT to 01:00 EST on Sunday 2030-11-03, so
    // 01:30 happens twice: compatible disambiguation takes the first (EDT),
    // and the slot ending then closes at 02:00 EDT, 06:00Z.
    app.clock.set("2030-11-01T12:00:00Z");
    app.service.tick().await.unwrap();
    assert_eq!(
        closes_at(slot("EARLY-2030-11-03-0030").await),
        (
            json!("00:30"),
            json!("01:30"),
            instant("2030-11-03T06:00:00Z")
        )
    );
    assert_eq!(
        closes_at(slot("RAO-2030-11-03-0900").await).2,
        instant("2030-11-03T15:30:00Z")
    );
}

backend_tests!(
    the_templates_fill_the_days_ahead_at_start_up,
    the_next_day_comes_into_reach_at_the_first_tick_of_the_day,
    ranges_skips_holidays_and_capacities_shape_the_dates,
    a_session_that_has_ended_today_is_not_made,
    a_changed_session_applies_to_the_dates_not_filled_yet,
    an_invalid_file_on_reload_is_refused_and_the_old_sessions_stay,
    a_slot_an_admin_made_first_keeps_its_place,
    slots_across_a_daylight_saving_change_keep_their_civil_times,
);
durable_backend_tests!(no_slot_is_made_twice_across_restarts_and_admin_changes_stay);
