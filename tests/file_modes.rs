//! The embedded store's files hold patient ids and their history, so no
//! other local user may read them: the server binary, started under the
//! most permissive umask, must create its data directory 0700 and its
//! database files 0600, and must warn about an existing directory that is
//! open to others.
//!
//! The server runs as a child process whose umask is set between fork and
//! exec, so the umask of this test process, shared by its test threads,
//! never changes.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

/// How long the server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let path = std::env::temp_dir()
            .join("opd-file-modes")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&path).expect("a scratch directory");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server binary on a loopback port, and what it logged before it
/// started serving.
struct Server {
    child: Child,
    base: String,
    startup_log: Vec<String>,
}

impl Server {
    /// Starts the binary on `data_dir` with umask 000 and waits for its
    /// "serving" line, which names the address it bound.
    fn start(data_dir: &Path) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_opd-token-engine"));
        command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_clear()
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: umask is async-signal-safe and touches only the child's
        // own process state between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        // Held by the guard from here on, so a failed start is killed too.
        let mut server = Server {
            child: command.spawn().expect("start the server binary"),
            base: String::new(),
            startup_log: Vec::new(),
        };
        let stdout = server.child.stdout.take().expect("piped stdout");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            let line = received.recv_timeout(START_TIMEOUT).unwrap_or_else(|_| {
                panic!(
                    "the server did not start; it logged {:#?}",
                    server.startup_log
                )
            });
            if line.contains("serving") {
                let address = line
                    .split_whitespace()
                    .find_map(|field| field.strip_prefix("address="))
                    .unwrap_or_else(|| panic!("the serving line names the address: {line}"));
                server.base = format!("http://{address}");
                return server;
            }
            server.startup_log.push(line);
        }
    }

    /// Books a token in the demo schedule's slot `D1-09`.
    async fn book(&self, patient: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/tokens", self.base))
            .json(&json!({"patientId": patient, "slotId": "D1-09", "source": "ONLINE"}))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status().as_u16(), 201);
        let body: Value = response.json().await.expect("a JSON answer");
        assert_eq!(body["token"]["status"], "ALLOCATED");
    }

    fn warned_about_the_data_directory(&self) -> bool {
        self.startup_log
            .iter()
            .any(|line| line.contains("WARN") && line.contains("data directory is open"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The modes of the database and its log files that exist, by file name.
fn database_modes(data_dir: &Path) -> Vec<(String, u32)> {
    ["opd.sqlite3", "opd.sqlite3-wal", "opd.sqlite3-shm"]
        .into_iter()
        .map(|name| (name, data_dir.join(name)))
        .filter(|(_, path)| path.exists())
        .map(|(name, path)| (name.to_owned(), mode(&path)))
        .collect()
}

#[tokio::test]
async fn a_new_data_directory_and_its_database_are_private_whatever_the_umask() {
    let scratch = Scratch::new();
    let data_dir = scratch.0.join("data");
    let server = Server::start(&data_dir);
    server.book("P1").await;

    assert!(
        data_dir.join("opd.sqlite3-wal").exists(),
        "a booking is in the write-ahead log"
    );
    assert_eq!(mode(&data_dir), 0o700, "the data directory");
    for (file, mode) in database_modes(&data_dir) {
        assert_eq!(mode, 0o600, "{file}: {mode:o}");
    }
    assert!(
        !server.warned_about_the_data_directory(),
        "a directory the server made is private: {:#?}",
        server.startup_log
    );
}

#[tokio::test]
async fn an_existing_open_data_directory_is_kept_but_warned_about() {
    let scratch = Scratch::new();
    let data_dir = scratch.0.join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A database left by an earlier version, readable by everyone (an
    // empty file is an empty SQLite database).
    let database = data_dir.join("opd.sqlite3");
    std::fs::write(&database, b"").unwrap();
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();

    let server = Server::start(&data_dir);
    server.book("P1").await;

    assert!(
        server.warned_about_the_data_directory(),
        "a warning at start-up: {:#?}",
        server.startup_log
    );
    assert_eq!(
        mode(&data_dir),
        0o755,
        "a directory the server did not make keeps its mode"
    );
    let modes = database_modes(&data_dir);
    assert!(modes.len() >= 2, "the database and its log: {modes:?}");
    for (file, mode) in modes {
        assert_eq!(mode, 0o600, "{file}: {mode:o}");
    }
}
