//! The server binary as a child process on a loopback port, killed with
//! SIGKILL, and the temporary directory that holds its data and its log.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::load::CLIENTS;
use crate::schedule::ZONE;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The running binary; killed (SIGKILL) and reaped when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts the binary on a free loopback port and waits for `/healthz`.
    pub async fn start(dir: &Path, data: &Path, schedule: &Path, in_memory: bool) -> Server {
        // The free port may be taken between probing and binding it: try
        // another one.
        for _ in 1..3 {
            if let Some(server) = Server::try_start(dir, data, schedule, in_memory).await {
                return server;
            }
        }
        match Server::try_start(dir, data, schedule, in_memory).await {
            Some(server) => server,
            None => panic!(
                "the server exited before it was ready; its log:\n{}",
                log_tail(dir)
            ),
        }
    }

    /// `None` when the server exits before it is ready.
    async fn try_start(
        dir: &Path,
        data: &Path,
        schedule: &Path,
        in_memory: bool,
    ) -> Option<Server> {
        let port = free_port();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .expect("server log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_opd-token-engine"));
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data)
            .arg("--schedule")
            .arg(schedule);
        if in_memory {
            command.arg("--in-memory");
        }
        // Nothing from the caller's environment (a DATABASE_URL, API keys)
        // may change what is tested; the load must not be rate limited,
        // and its keyed bookings (one caller, every round within one day
        // on one data directory) must not meet the bound on remembered
        // idempotency keys, which a release build's load passes.
        command
            .env_clear()
            .env("RUST_LOG", "warn")
            .env("OPD_TIMEZONE", &*ZONE)
            .env("OPD_RATE_LIMIT_PER_SECOND", "0")
            .env("OPD_IDEMPOTENCY_MAX_PER_CALLER", "1000000")
            .env("OPD_IDEMPOTENCY_MAX", "1000000")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log);
        let child = command.spawn().expect("start the server binary");
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: http_client(),
        };
        server.wait_ready(dir, in_memory).await.then_some(server)
    }

    /// `false` if the server exited first.
    async fn wait_ready(&mut self, dir: &Path, in_memory: bool) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.child.try_wait().expect("poll the server").is_some() {
                return false;
            }
            let answer = self
                .http
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if let Ok(response) = answer {
                if response.status().is_success() {
                    let body: Value = response.json().await.expect("healthz body");
                    let expected = if in_memory { "memory" } else { "sqlite" };
                    assert_eq!(body["storage"], expected, "healthz: {body}");
                    return true;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the server was not ready within {START_TIMEOUT:?}; its log:\n{}",
                log_tail(dir)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: `Child::kill` sends SIGKILL on Unix. No shutdown code runs.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9 the server");
        self.child.wait().expect("reap the server");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("http client")
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A fresh directory, removed on drop unless a panic is unwinding (then
/// it is kept for a post-mortem).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let path = std::env::temp_dir().join(format!("opd-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            println!("kept {} (data and server.log)", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
