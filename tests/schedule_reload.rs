//! The weekly templates against the real binary: SIGHUP reads the file
//! again and makes the new sessions' slots at once; a file with a mistake
//! is refused with its reason in the log while the server keeps serving;
//! and a bad file at start-up stops the binary with the reason.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use jiff::ToSpan;
use serde_json::Value;

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

/// Polls `check` every 50 ms for up to 30 s; true once it holds.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Every slot id the server lists.
async fn slot_ids(http: &reqwest::Client, base: &str) -> Vec<String> {
    let listed: Value = common::get_json(http, &format!("{base}/slots")).await;
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|slot| slot["slotId"].as_str().unwrap().to_owned())
        .collect()
}

/// A session every day from `from` on, so that none has ended today
/// whatever the time the test runs at.
fn session(doctor: &str, from: jiff::civil::Date) -> String {
    format!(
        "[[session]]\ndoctor = \"{doctor}\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n\
         start = \"10:00\"\nend = \"11:00\"\ncapacity = 3\nfrom = \"{from}\"\n\n"
    )
}

fn hang_up(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn binary(dir: &Path, templates: &Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_opd-token-engine"));
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--schedule-templates")
        .arg(templates)
        .args(["--schedule-days-ahead", "2", "--timezone", "UTC"])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info");
    command
}

#[tokio::test]
async fn sighup_reloads_the_templates_and_a_bad_file_is_refused() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("opd-schedule-reload-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let tomorrow = jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(1.day())
        .unwrap();
    let after = tomorrow.checked_add(1.day()).unwrap();
    let templates = dir.join("templates.toml");
    std::fs::write(&templates, session("RAO", tomorrow)).unwrap();
    let log = dir.join("server.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = Server(
        binary(&dir, &templates, port)
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the server binary starts"),
    );
    let http = reqwest::Client::new();
    let started = eventually(async || {
        let health = http.get(format!("{base}/healthz")).send().await;
        health.is_ok_and(|reply| reply.status().is_success())
    })
    .await;
    assert!(started, "the server did not start");
    assert_eq!(
        slot_ids(&http, &base).await,
        [format!("RAO-{tomorrow}-1000"), format!("RAO-{after}-1000")]
    );

    // Dr Das joins: after SIGHUP, his days in reach are there at once.
    std::fs::write(
        &templates,
        format!("{}{}", session("RAO", tomorrow), session("DAS", tomorrow)),
    )
    .unwrap();
    hang_up(&server);
    let das = format!("DAS-{tomorrow}-1000");
    let reloaded = eventually(async || slot_ids(&http, &base).await.contains(&das)).await;
    assert!(reloaded, "SIGHUP did not make the new session's slots");
    assert_eq!(slot_ids(&http, &base).await.len(), 4);

    // A mistake: refused with its reason in the log, and still serving.
    std::fs::write(
        &templates,
        session("RAO", tomorrow).replace("end = \"11:00\"", "end = \"09:00\""),
    )
    .unwrap();
    hang_up(&server);
    let refused = eventually(async || {
        std::fs::read_to_string(&log).is_ok_and(|text| {
            text.contains("reloading the weekly templates failed")
                && text.contains("session 1 (line 1): end 09:00 is not after start 10:00")
                && text.contains("the templates in force stay")
        })
    })
    .await;
    assert!(
        refused,
        "no refusal logged: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(slot_ids(&http, &base).await.len(), 4);
    // Without a keys file, SIGHUP leaves the keys alone and says nothing
    // of them.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("API keys"), "{logged}");
    drop(server);

    // The same file stops a start-up, saying why.
    let output = binary(&dir, &templates, free_port())
        .output()
        .expect("the server binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot use the weekly templates")
            && stderr.contains("session 1 (line 1): end 09:00 is not after start 10:00"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
