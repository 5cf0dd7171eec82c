//! The event log survives `kill -9`: every acknowledged change is in the
//! database as events, in the order the changes were made, with ids that
//! run 1, 2, 3, … without a gap, and a restarted server goes on from the
//! last id.
//!
//! The server is the real binary in its own process, killed with SIGKILL so
//! that no shutdown code runs; the log is then read straight from its
//! SQLite file or PostgreSQL schema. On PostgreSQL, two instances writing
//! at once share one sequence of ids, without gaps.

#[path = "common/mod.rs"]
mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::EventStream;
use serde_json::{json, Value};

/// One row of the `events` table, in the columns the assertions compare.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    id: i64,
    kind: String,
    actor: String,
    slot: String,
    reason: String,
    token: Option<String>,
    from: Option<String>,
    to: Option<String>,
    capacity: Option<i64>,
}

fn slot_row(id: i64, actor: &str, slot: &str, reason: &str, capacity: i64) -> Row {
    Row {
        id,
        kind: "SLOT".into(),
        actor: actor.into(),
        slot: slot.into(),
        reason: reason.into(),
        token: None,
        from: None,
        to: None,
        capacity: Some(capacity),
    }
}

fn token_row(id: i64, token: &str, from: Option<&str>, to: &str, reason: &str) -> Row {
    Row {
        id,
        kind: "TOKEN".into(),
        actor: "anonymous".into(),
        slot: "EV-1".into(),
        reason: reason.into(),
        token: Some(token.into()),
        from: from.map(Into::into),
        to: Some(to.into()),
        capacity: None,
    }
}

/// Where a server keeps its state.
#[derive(Debug, Clone)]
enum Store {
    Sqlite(PathBuf),
    /// A schema of the test database.
    Postgres(String),
}

impl Store {
    fn sqlite(dir: &TempDir) -> Store {
        Store::Sqlite(dir.path().join("data"))
    }

    fn postgres(dir: &TempDir) -> Store {
        let name = dir.path().file_name().expect("a named directory");
        Store::Postgres(format!(
            "event_log_{}",
            name.to_string_lossy().replace('-', "_")
        ))
    }

    /// The log as the server left it, oldest first.
    async fn read_log(&self) -> Vec<Row> {
        match self {
            Store::Sqlite(data) => read_sqlite_log(data),
            Store::Postgres(schema) => read_postgres_log(schema).await,
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Store::Postgres(schema) = self {
            common::drop_schema(schema);
        }
    }
}

async fn read_postgres_log(schema: &str) -> Vec<Row> {
    use sqlx::Row as _;
    let mut connection: sqlx::PgConnection = sqlx::Connection::connect(&common::database_url())
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(&format!(
        "SELECT id, kind, actor, slot_id, reason, token_id, from_status, to_status, capacity
         FROM \"{schema}\".events ORDER BY id"
    ))
    .fetch_all(&mut connection)
    .await
    .expect("read the log")
    .into_iter()
    .map(|row| Row {
        id: row.get(0),
        kind: row.get(1),
        actor: row.get(2),
        slot: row.get(3),
        reason: row.get(4),
        token: row.get::<Option<uuid::Uuid>, _>(5).map(|id| id.to_string()),
        from: row.get(6),
        to: row.get(7),
        capacity: row.get::<Option<i32>, _>(8).map(i64::from),
    })
    .collect()
}

fn read_sqlite_log(data: &Path) -> Vec<Row> {
    let connection = rusqlite::Connection::open(data.join("opd.sqlite3")).expect("open the log");
    let mut statement = connection
        .prepare(
            "SELECT id, kind, actor, slot_id, reason, token_id, from_status, to_status, capacity
             FROM events ORDER BY id",
        )
        .expect("query the log");
    statement
        .query_map([], |row| {
            let token: Option<Vec<u8>> = row.get(5)?;
            Ok(Row {
                id: row.get(0)?,
                kind: row.get(1)?,
                actor: row.get(2)?,
                slot: row.get(3)?,
                reason: row.get(4)?,
                token: token.map(|bytes| {
                    uuid::Uuid::from_slice(&bytes)
                        .expect("a 16-byte token id")
                        .to_string()
                }),
                from: row.get(6)?,
                to: row.get(7)?,
                capacity: row.get(8)?,
            })
        })
        .expect("read the log")
        .collect::<Result<_, _>>()
        .expect("rows of the log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_change_in_order_across_kill_9() {
    let dir = TempDir::new();
    the_log_keeps_every_acknowledged_change_in_order_across_kill_9(&dir, Store::sqlite(&dir)).await
}

#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_acknowledged_change_in_order_across_kill_9() {
    let dir = TempDir::new();
    the_log_keeps_every_acknowledged_change_in_order_across_kill_9(&dir, Store::postgres(&dir))
        .await
}

async fn the_log_keeps_every_acknowledged_change_in_order_across_kill_9(
    dir: &TempDir,
    store: Store,
) {
    let mut server = Server::start(dir, &store).await;
    server.create_slot(1).await;
    let p1 = server.book("P1", "ONLINE").await;
    let p2 = server.book("P2", "PAID").await;
    server
        .send("POST", &format!("/tokens/{p2}/cancel"), Value::Null, 200)
        .await;
    server
        .send("PATCH", "/slots/EV-1", json!({"capacity": 2}), 200)
        .await;
    server.kill();
    let log = store.read_log().await;

    // The demo schedule's twelve slots were created at start-up, by the
    // service itself.
    let demo: Vec<Row> = (1..=12)
        .map(|id| Row {
            slot: log[id - 1].slot.clone(),
            capacity: log[id - 1].capacity,
            ..slot_row(id as i64, "system", "", "CREATED", 0)
        })
        .collect();
    let ours = vec![
        slot_row(13, "anonymous", "EV-1", "CREATED", 1),
        token_row(14, &p1, None, "ALLOCATED", "ALLOCATED"),
        token_row(15, &p2, None, "ALLOCATED", "BUMPED_LOWER"),
        token_row(16, &p1, Some("ALLOCATED"), "WAITLISTED", "BUMPED"),
        token_row(17, &p2, Some("ALLOCATED"), "CANCELLED", "CANCELLED"),
        token_row(18, &p1, Some("WAITLISTED"), "ALLOCATED", "PROMOTED"),
        slot_row(19, "anonymous", "EV-1", "CAPACITY_CHANGED", 2),
    ];
    assert_eq!(log, [demo, ours.clone()].concat());

    // A restarted server numbers on from the last durable id.
    let mut server = Server::start(dir, &store).await;
    let p3 = server.book("P3", "WALK_IN").await;
    server.kill();
    let log = store.read_log().await;

    assert_eq!(log.len(), 20);
    assert_eq!(log[12..19], ours[..]);
    assert_eq!(log[19], token_row(20, &p3, None, "ALLOCATED", "ALLOCATED"));
}

/// Two instances on one database book at once into one small slot, so
/// that bookings bump each other; the log holds exactly the events their
/// answers imply, under ids 1, 2, 3, … with no gap.
#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_instances_share_one_log_without_gaps() {
    let dir = TempDir::new();
    let store = Store::postgres(&dir);
    let first = Server::start(&dir, &store).await;
    let second = Server::start(&dir, &store).await;
    first.create_slot(3).await;
    let sources = ["WALK_IN", "ONLINE", "FOLLOW_UP", "PAID"];
    let bookings = (0..40).map(|n| {
        let server = if n % 2 == 0 { &first } else { &second };
        server.send(
            "POST",
            "/tokens",
            json!({"patientId": format!("P{n}"), "slotId": "EV-1", "source": sources[n % 4]}),
            201,
        )
    });
    let answers = futures_util::future::join_all(bookings).await;
    let log = store.read_log().await;

    let implied: usize = answers
        .iter()
        .map(|answer| 1 + answer["changes"].as_array().expect("changes").len())
        .sum();
    // The demo's twelve slots (the second instance found them made) and EV-1.
    assert_eq!(log.len(), 12 + 1 + implied);
    let ids: Vec<i64> = log.iter().map(|row| row.id).collect();
    assert_eq!(ids, (1..=log.len() as i64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_resuming_after_kill_9_tells_every_acknowledged_change_once() {
    let dir = TempDir::new();
    resuming_after_kill_9_tells_every_acknowledged_change_once(&dir, Store::sqlite(&dir)).await
}

#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_resuming_after_kill_9_tells_every_acknowledged_change_once() {
    let dir = TempDir::new();
    resuming_after_kill_9_tells_every_acknowledged_change_once(&dir, Store::postgres(&dir)).await
}

/// A board follows the stream; the server is killed right after answering
/// a burst of bookings, before it could tell them all. After a restart the
/// board resumes from the last id it saw and gets every booking it missed,
/// exactly once.
async fn resuming_after_kill_9_tells_every_acknowledged_change_once(dir: &TempDir, store: Store) {
    let mut server = Server::start(dir, &store).await;
    server.create_slot(50).await;
    let mut board = EventStream::open(
        &server.http,
        &format!("{}/events?after=0", server.base),
        None,
    )
    .await;
    let mut seen = board.events(13).await;
    let bookings = (0..30).map(|n| server.book_as(format!("P{n}"), "WALK_IN"));
    let acknowledged = futures_util::future::join_all(bookings).await;
    server.kill();
    // Whatever the stream carried before the kill.
    while let Some(frame) = board.next().await {
        if frame.event.is_some() {
            seen.push(frame);
        }
    }

    let server = Server::start(dir, &store).await;
    let last = seen.last().and_then(|frame| frame.id).expect("ids");
    let missing = 13 + acknowledged.len() - seen.len();
    let mut resumed =
        EventStream::open(&server.http, &format!("{}/events", server.base), Some(last)).await;
    seen.extend(resumed.events(missing).await);

    let ids: Vec<u64> = seen.iter().map(|frame| frame.id.unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    let mut told: Vec<String> = seen[13..]
        .iter()
        .map(|frame| {
            frame.data.as_ref().unwrap()["tokenId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut booked = acknowledged.clone();
    told.sort();
    booked.sort();
    assert_eq!(told, booked);
}

/// Two instances on one database take bookings at once while a board
/// keeps reconnecting, to one instance and then the other, resuming each
/// time from the last id it saw: it sees every event exactly once, in id
/// order, whichever instance made the change.
#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_reconnecting_to_either_postgres_instance_sees_every_event_once() {
    let dir = TempDir::new();
    let store = Store::postgres(&dir);
    let first = Server::start(&dir, &store).await;
    let second = Server::start(&dir, &store).await;
    first.create_slot(3).await;
    let sources = ["WALK_IN", "ONLINE", "FOLLOW_UP", "PAID"];
    let written = std::sync::atomic::AtomicBool::new(false);
    let writes = async {
        let bookings = (0..60).map(|n| {
            let server = if n % 2 == 0 { &first } else { &second };
            server.send(
                "POST",
                "/tokens",
                json!({"patientId": format!("P{n}"), "slotId": "EV-1", "source": sources[n % 4]}),
                201,
            )
        });
        let answers = futures_util::future::join_all(bookings).await;
        written.store(true, std::sync::atomic::Ordering::SeqCst);
        answers
    };
    let board = async {
        let mut seen: Vec<u64> = Vec::new();
        let mut round = 0usize;
        // Stops once every write was answered and the log has been quiet
        // for two seconds since: everything was told by then.
        loop {
            round += 1;
            let server = if round.is_multiple_of(2) {
                &first
            } else {
                &second
            };
            let mut stream = EventStream::open(
                &server.http,
                &format!("{}/events", server.base),
                Some(seen.last().copied().unwrap_or(0)),
            )
            .await;
            let mut quiet = false;
            // A few events from this instance, then the other one.
            for _ in 0..1 + round % 4 {
                match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
                    Ok(Some(frame)) => seen.extend(frame.id),
                    Ok(None) => break,
                    Err(_) => {
                        quiet = written.load(std::sync::atomic::Ordering::SeqCst);
                        break;
                    }
                }
            }
            if quiet {
                return seen;
            }
        }
    };
    let (answers, seen) = tokio::join!(writes, board);

    let implied: usize = answers
        .iter()
        .map(|answer| 1 + answer["changes"].as_array().expect("changes").len())
        .sum();
    let total = 12 + 1 + implied;
    assert_eq!(seen, (1..=total as u64).collect::<Vec<_>>());
}

/// The server binary in its own process.
struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Server {
    /// Starts the binary on a free loopback port with the demo schedule and
    /// waits until it answers.
    async fn start(dir: &TempDir, store: &Store) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.path().join(format!("server-{port}.log")))
            .expect("a server log");
        // Nothing from the caller's environment (a DATABASE_URL, API keys)
        // may change what is tested.
        let mut command = Command::new(env!("CARGO_BIN_EXE_opd-token-engine"));
        command.arg("--listen").arg(format!("127.0.0.1:{port}"));
        match store {
            Store::Sqlite(data) => command.arg("--data-dir").arg(data),
            Store::Postgres(schema) => command
                .arg("--database-url")
                .arg(common::database_url())
                .arg("--database-schema")
                .arg(schema),
        };
        let child = command
            .env_clear()
            .env("RUST_LOG", "warn")
            .env("OPD_RATE_LIMIT_PER_SECOND", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a server log"))
            .stderr(log)
            .spawn()
            .expect("start the server binary");
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                server.child.try_wait().expect("poll the server").is_none(),
                "the server exited at start-up"
            );
            let ready = server
                .http
                .get(format!("{}/healthz", server.base))
                .send()
                .await;
            if ready.is_ok_and(|response| response.status().is_success()) {
                return server;
            }
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a request and checks its status; returns the answer's body.
    async fn send(&self, method: &str, path: &str, body: Value, status: u16) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let actual = response.status().as_u16();
        let text = response.text().await.expect("an answer body");
        assert_eq!(actual, status, "{path}: {text}");
        serde_json::from_str(&text).expect("a JSON answer")
    }

    /// Creates slot `EV-1` (doctor `DE`, 14:00–15:00, today).
    async fn create_slot(&self, capacity: u32) {
        self.send(
            "POST",
            "/slots",
            json!({"slotId": "EV-1", "doctorId": "DE", "startTime": "14:00", "endTime": "15:00", "capacity": capacity}),
            201,
        )
        .await;
    }

    /// Books a token in slot `EV-1`; returns its id.
    async fn book(&self, patient: &str, source: &str) -> String {
        self.book_as(patient.to_owned(), source).await
    }

    /// As [`Server::book`], for a patient id made on the spot.
    async fn book_as(&self, patient: String, source: &str) -> String {
        let answer = self
            .send(
                "POST",
                "/tokens",
                json!({"patientId": patient, "slotId": "EV-1", "source": source}),
                201,
            )
            .await;
        answer["token"]["tokenId"]
            .as_str()
            .expect("a token id")
            .to_owned()
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(&mut self) {
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

/// A unique directory under the system temporary directory, removed when
/// dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("opd-event-log-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
