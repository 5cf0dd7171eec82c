//! A second server on a data directory in use: the start-up lock keeps it
//! out, and the first server keeps serving.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::schedule::{round_slot_ids, write_schedule, ZONE};
use crate::server::{free_port, Server, TempDir, START_TIMEOUT};

pub async fn run() {
    let dir = TempDir::new("second");
    let data = dir.path().join("data");
    let schedule = dir.path().join("schedule.json");
    write_schedule(&schedule, 0);
    // The first start creates the schedule's slots; the restart writes
    // nothing, so only the start-up lock can keep the second server out.
    drop(Server::start(dir.path(), &data, &schedule, false).await);
    let first = Server::start(dir.path(), &data, &schedule, false).await;

    let said_path = dir.path().join("second.log");
    let said_file = std::fs::File::create(&said_path).expect("second server's log");
    let mut second = Command::new(env!("CARGO_BIN_EXE_opd-token-engine"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data)
        .arg("--schedule")
        .arg(&schedule)
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("OPD_TIMEZONE", &*ZONE)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(said_file)
        .spawn()
        .expect("run a second server");
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = second.try_wait().expect("poll the second server") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let said = std::fs::read_to_string(&said_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("the second server kept running: {said}"));
    assert!(!status.success(), "the second server started: {said}");
    assert!(
        said.contains("is in use by another server"),
        "the second server gave another reason: {said}"
    );

    let slot = first
        .http
        .get(format!("{}/slots/{}", first.base, round_slot_ids(0)[0]))
        .send()
        .await
        .expect("the first server answers");
    assert_eq!(slot.status(), reqwest::StatusCode::OK);
}
