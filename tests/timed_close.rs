//! The timed closing against the real binary and the real clock: a slot
//! that ends a minute after start-up closes on its own, by the system, and
//! its absent patient becomes a no-show. Every other timed rule is tested
//! with the injected clock (tests/api/closing.rs); this one checks that
//! the shipped binary really runs its clock. CI also runs it against the
//! release binary (`cargo test --release --test timed_close`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp, ToSpan};
use serde_json::{json, Value};

mod common;

/// The server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the server answers its health check.
async fn wait_until_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http.get(format!("{base}/healthz")).send().await;
        if ready.is_ok_and(|reply| reply.status().is_success()) {
            return;
        }
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first whole minute at least 20 s from now that does not end a day
/// (a slot ends within its date), as an instant in UTC.
fn slot_end() -> Timestamp {
    loop {
        let soon = Timestamp::now() + SignedDuration::from_secs(20);
        let end = soon
            .round(
                jiff::TimestampRound::new()
                    .smallest(jiff::Unit::Minute)
                    .mode(jiff::RoundMode::Ceil),
            )
            .unwrap();
        if end.to_zoned(jiff::tz::TimeZone::UTC).time() != jiff::civil::time(0, 0, 0, 0) {
            return end;
        }
        std::thread::sleep(Duration::from_secs(30));
    }
}

#[tokio::test]
async fn a_slot_closes_on_time_by_the_clock_of_the_running_binary() {
    let dir = std::env::temp_dir().join(format!("opd-timed-close-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let end = slot_end().to_zoned(jiff::tz::TimeZone::UTC);
    let start = end.checked_sub(1.minute()).unwrap();
    let schedule = dir.join("schedule.json");
    let hhmm = |zoned: &jiff::Zoned| zoned.strftime("%H:%M").to_string();
    std::fs::write(
        &schedule,
        json!({"slots": [{
            "slotId": "SOON", "doctorId": "DS", "date": end.date().to_string(),
            "startTime": hhmm(&start), "endTime": hhmm(&end), "capacity": 1,
        }]})
        .to_string(),
    )
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_opd-token-engine"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--schedule")
            .arg(&schedule)
            .args(["--close-after-minutes", "0", "--timezone", "UTC"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the server binary starts"),
    );
    let http = reqwest::Client::new();
    wait_until_ready(&http, &base).await;
    let booked: Value = http
        .post(format!("{base}/tokens"))
        .json(&json!({"patientId": "P1", "slotId": "SOON", "source": "ONLINE"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = booked["token"]["tokenId"].as_str().unwrap().to_owned();
    assert_eq!(booked["slot"]["closed"], false);
    assert_eq!(booked["slot"]["closesAt"], end.timestamp().to_string());

    let deadline = Instant::now() + Duration::from_secs(150);
    let slot = loop {
        let slot = common::get_json(&http, &format!("{base}/slots/SOON")).await;
        if slot["closed"] == true || Instant::now() > deadline {
            break slot;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let detail = common::get_json(&http, &format!("{base}/tokens/{token}")).await;

    assert_eq!(slot["closed"], true, "the slot did not close: {slot}");
    let closed_at: Timestamp = slot["closesAt"].as_str().unwrap().parse().unwrap();
    let late = closed_at.duration_since(end.timestamp());
    assert!(
        late >= SignedDuration::ZERO && late < SignedDuration::from_secs(3),
        "closed {late:?} after its time"
    );
    assert_eq!(detail["status"], "NO_SHOW");
    let last = detail["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["actor"], "system");
    assert_eq!(last["reason"], "NO_SHOW");
    let _ = std::fs::remove_dir_all(&dir);
}
