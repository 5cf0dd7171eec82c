//! Crash test of the durable write path: `kill -9` under load.
//!
//! Starts the server binary as a child process on a fresh data directory,
//! drives concurrent bookings, cancellations and no-shows from many clients,
//! sends SIGKILL to the server at a random moment while requests are in
//! flight, restarts it on the same data directory and checks that
//!
//! 1. every token named in an acknowledged (2xx) answer exists;
//! 2. its status is consistent with what was acknowledged: a token
//!    acknowledged CANCELLED or NO_SHOW is exactly that; any other token is
//!    active (ALLOCATED or WAITLISTED: bumps and promotions by later or lost
//!    requests may move it between the two), or terminal only if a cancel or
//!    no-show of it was sent and its answer was lost;
//! 3. every acknowledged transition (creation, bumps and promotions listed
//!    in `changes`, cancels, no-shows) is in the token's history, the history
//!    is well formed and ends in the current status, and the history seen
//!    after the previous restart is a prefix of it;
//! 4. every slot's invariants hold (non-emergency allocated <= capacity; a
//!    waitlist only when full; queues in priority then arrival order; one
//!    active token per patient; token numbers unique per doctor and date)
//!    and the slot queues agree with the tokens;
//! 5. an acknowledged booking with an `Idempotency-Key` replays the same
//!    token after the restart.
//!
//! The rounds share one data directory, so the state accumulates. A negative
//! control runs the same workload and the same checker against a server
//! started with `--in-memory`, which acknowledges without making anything
//! durable, and requires the checker to report lost acknowledged changes.
//!
//! The binary is `env!("CARGO_BIN_EXE_opd-token-engine")`, which cargo
//! builds in the test's profile: CI runs `cargo test --release --test crash`,
//! so there it is the release binary; a plain `cargo test` uses the debug
//! build.
//!
//! The random choices (kill delays, requests) come from a seed printed at the
//! start; `CRASH_SEED=<n>` reuses it. Thread interleaving still differs
//! between runs, so a failure is reproduced by the seed only approximately;
//! a failed run keeps its directory (the path is printed) with the SQLite
//! files and `server.log`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// Crash rounds of the real test, all on one data directory.
const ROUNDS: usize = 8;
/// Concurrent clients, each one task with its own requests.
const CLIENTS: usize = 32;
/// Requests per client and round at the most.
const OPS_PER_CLIENT: usize = 400;
/// A round's load stops after this even if the kill has not come.
const LOAD_LIMIT: Duration = Duration::from_secs(5);
/// The kill comes this long after the load starts (uniform).
const KILL_AFTER_MS: std::ops::Range<u64> = 50..400;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Acknowledged keyed bookings replayed after each restart at the most.
const REPLAYS_MAX: usize = 200;
/// Concurrent readers in the checker.
const CHECK_READERS: usize = 16;

const SOURCES: [(&str, u64); 5] = [
    ("EMERGENCY", 5),
    ("PAID", 15),
    ("FOLLOW_UP", 20),
    ("ONLINE", 30),
    ("WALK_IN", 30),
];
const ACTIVE: [&str; 2] = ["ALLOCATED", "WAITLISTED"];
const CREATION_REASONS: [&str; 4] = ["ALLOCATED", "OVERBOOKED", "BUMPED_LOWER", "WAITLISTED"];

/// The two tests each load the machine; they run one after the other.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn acknowledged_changes_survive_kill_9() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    runtime().block_on(crash_rounds());
}

#[test]
fn negative_control_in_memory_server_loses_acknowledged_changes() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    runtime().block_on(negative_control());
}

#[test]
fn negative_control_rolled_back_data_dir_loses_acknowledged_changes() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    runtime().block_on(rollback_control());
}

/// One server owns a data directory: a second one on the same directory
/// refuses to start, even when the first has written nothing since it
/// started, and the first keeps serving.
#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    runtime().block_on(second_server());
}

async fn second_server() {
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn crash_rounds() {
    let started = Instant::now();
    let seed = seed();
    println!("crash test: seed {seed} (rerun with CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let dir = TempDir::new("crash");
    let data = dir.path().join("data");
    let schedule = dir.path().join("schedule.json");
    write_schedule(&schedule, 0);
    let mut server = Server::start(dir.path(), &data, &schedule, false).await;
    let mut ledger = Ledger::default();
    let mut owned: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let kill_after = Duration::from_millis(rng.range(KILL_AFTER_MS));
        let load = run_load(&mut server, round, "R", owned, kill_after, 0, rng.next()).await;
        ledger.record(&load);

        // The next round's slots join the schedule; existing ones are kept.
        write_schedule(&schedule, round + 1);
        let restart = Instant::now();
        server = Server::start(dir.path(), &data, &schedule, false).await;
        let restart = restart.elapsed();
        let check_started = Instant::now();
        let report = check(&server, &ledger, &slots_up_to(round + 1)).await;
        println!(
            "round {round}: killed after {} ms (planned {} ms); bookings sent {}, acked {}, in doubt {}; \
             actions sent {}, acked {}, in doubt {}; refused {}; acked bumps {}, promotions {}; restart {} ms; \
             checked {} tokens, {} slots, {} replays in {} ms: lost {}, other violations {}",
            load.killed_after.as_millis(),
            kill_after.as_millis(),
            load.bookings_sent(),
            load.bookings_acked(),
            load.bookings_in_doubt(),
            load.actions_sent(),
            load.actions_acked(),
            load.actions_in_doubt(),
            load.refused(),
            load.changes("BUMPED"),
            load.changes("PROMOTED"),
            restart.as_millis(),
            report.tokens_checked,
            report.slots_checked,
            report.replays,
            check_started.elapsed().as_millis(),
            report.lost,
            report.violations.len() - report.lost,
        );
        for violation in report.violations.iter().take(20) {
            println!("  round {round}: {violation}");
        }
        if !report.violations.is_empty() {
            failures.push(format!(
                "round {round}: {} violations ({} lost acknowledged changes), first: {}",
                report.violations.len(),
                report.lost,
                report.violations[0]
            ));
        }
        owned = ledger.observe(&report);
    }
    drop(server);
    println!(
        "crash test: {ROUNDS} rounds, {} tokens known, {:.1} s",
        ledger.tokens.len(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        panic!(
            "seed {seed}: acknowledged state was lost or invariants broken:\n{}",
            failures.join("\n")
        );
    }
}

async fn negative_control() {
    let seed = seed();
    println!("negative control: seed {seed}");
    let mut rng = Rng::new(seed ^ 0x6e65_6761_7469_7665);
    let dir = TempDir::new("control");
    let data = dir.path().join("data");
    let schedule = dir.path().join("schedule.json");
    write_schedule(&schedule, 0);
    let mut server = Server::start(dir.path(), &data, &schedule, true).await;
    let mut ledger = Ledger::default();
    // Killed only once something was acknowledged, so there is something
    // to lose.
    let load = run_load(
        &mut server,
        0,
        "N",
        Vec::new(),
        Duration::from_millis(200),
        50,
        rng.next(),
    )
    .await;
    ledger.record(&load);
    let server = Server::start(dir.path(), &data, &schedule, true).await;
    let report = check(&server, &ledger, &slots_up_to(0)).await;
    println!(
        "negative control: killed after {} ms; bookings acked {}, actions acked {}; lost {}, other violations {}",
        load.killed_after.as_millis(),
        load.bookings_acked(),
        load.actions_acked(),
        report.lost,
        report.violations.len() - report.lost,
    );
    for violation in report.violations.iter().take(5) {
        println!("  control: {violation}");
    }
    assert!(
        load.bookings_acked() > 0,
        "the control acknowledged nothing"
    );
    assert!(
        report.lost > 0,
        "the checker did not notice that an in-memory server lost {} acknowledged bookings",
        load.bookings_acked()
    );
}

/// A sharper control: a durable server whose data directory is put back to
/// a copy taken before a round, as if that round's commits had been
/// acknowledged but never written. Older tokens survive, so the checker
/// must notice lost cancels and no-shows of them, not only missing tokens.
async fn rollback_control() {
    let seed = seed();
    println!("rollback control: seed {seed}");
    let mut rng = Rng::new(seed ^ 0x726f_6c6c_6261_636b);
    let dir = TempDir::new("rollback");
    let data = dir.path().join("data");
    let snapshot = dir.path().join("snapshot");
    let schedule = dir.path().join("schedule.json");
    write_schedule(&schedule, 1);
    let slots = slots_up_to(1);
    let mut server = Server::start(dir.path(), &data, &schedule, false).await;
    let mut ledger = Ledger::default();
    let load = run_load(
        &mut server,
        0,
        "B",
        Vec::new(),
        Duration::from_millis(150),
        50,
        rng.next(),
    )
    .await;
    ledger.record(&load);
    let mut server = Server::start(dir.path(), &data, &schedule, false).await;
    let report = check(&server, &ledger, &slots).await;
    assert!(
        report.violations.is_empty(),
        "the first round already fails: {:?}",
        &report.violations[..report.violations.len().min(5)]
    );
    let owned = ledger.observe(&report);

    // Killed first, so the files are at rest while copied.
    server.kill();
    std::fs::create_dir_all(&snapshot).expect("snapshot directory");
    for entry in std::fs::read_dir(&data).expect("data directory") {
        let entry = entry.expect("data directory entry");
        std::fs::copy(entry.path(), snapshot.join(entry.file_name())).expect("copy the data");
    }
    let mut server = Server::start(dir.path(), &data, &schedule, false).await;
    let load = run_load(
        &mut server,
        1,
        "B",
        owned,
        Duration::from_millis(150),
        50,
        rng.next(),
    )
    .await;
    ledger.record(&load);
    std::fs::remove_dir_all(&data).expect("remove the data");
    std::fs::rename(&snapshot, &data).expect("put the old data back");
    let server = Server::start(dir.path(), &data, &schedule, false).await;
    let report = check(&server, &ledger, &slots).await;
    println!(
        "rollback control: round killed after {} ms; bookings acked {}, actions acked {}; lost {} \
         (tokens {}, statuses {}, transitions {}, idempotency keys {}), other violations {}",
        load.killed_after.as_millis(),
        load.bookings_acked(),
        load.actions_acked(),
        report.lost,
        report.lost_of("token"),
        report.lost_of("status"),
        report.lost_of("transition"),
        report.lost_of("idempotency key"),
        report.violations.len() - report.lost,
    );
    for violation in report
        .violations
        .iter()
        .filter(|v| v.starts_with("LOST status"))
        .take(3)
    {
        println!("  rollback control: {violation}");
    }
    assert!(
        report.lost_of("token") > 0,
        "the checker missed lost bookings"
    );
    assert!(
        report.lost_of("status") > 0,
        "the checker missed lost cancels and no-shows of tokens that survived"
    );
}

// ---------------------------------------------------------------------------
// The server as a child process.

/// The running binary; killed (SIGKILL) and reaped when dropped.
struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Server {
    /// Starts the binary on a free loopback port and waits for `/healthz`.
    async fn start(dir: &Path, data: &Path, schedule: &Path, in_memory: bool) -> Server {
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
        // may change what is tested; the load must not be rate limited.
        command
            .env_clear()
            .env("RUST_LOG", "warn")
            .env("OPD_RATE_LIMIT_PER_SECOND", "0")
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

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("http client")
}

fn free_port() -> u16 {
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
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let path = std::env::temp_dir().join(format!("opd-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir { path }
    }

    fn path(&self) -> &Path {
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

// ---------------------------------------------------------------------------
// Slots and the schedule file.

struct SlotSpec {
    id: String,
    doctor: &'static str,
    date: String,
}

/// Six small slots per round, on the round's own date: three doctors, two
/// slots each, so token numbers interleave between slots.
const LAYOUT: [(&str, &str, &str, &str, u32); 6] = [
    ("A", "DA", "09:00", "10:00", 3),
    ("B", "DA", "10:00", "11:00", 5),
    ("C", "DB", "09:00", "09:30", 2),
    ("D", "DB", "09:30", "10:30", 4),
    ("E", "DC", "14:00", "15:00", 3),
    ("F", "DC", "15:00", "16:00", 1),
];

fn round_date(round: usize) -> String {
    let day = jiff::civil::date(2030, 1, 2)
        .checked_add(jiff::Span::new().days(i64::try_from(round).expect("small round")))
        .expect("a date in range");
    day.to_string()
}

fn round_slot_ids(round: usize) -> Vec<String> {
    LAYOUT
        .iter()
        .map(|(suffix, ..)| format!("R{round}-{suffix}"))
        .collect()
}

fn slots_up_to(round: usize) -> Vec<SlotSpec> {
    (0..=round)
        .flat_map(|round| {
            LAYOUT.iter().map(move |(suffix, doctor, ..)| SlotSpec {
                id: format!("R{round}-{suffix}"),
                doctor,
                date: round_date(round),
            })
        })
        .collect()
}

fn write_schedule(path: &Path, up_to: usize) {
    let slots: Vec<Value> = (0..=up_to)
        .flat_map(|round| {
            LAYOUT
                .iter()
                .map(move |(suffix, doctor, start, end, capacity)| {
                    json!({
                        "slotId": format!("R{round}-{suffix}"),
                        "doctorId": doctor,
                        "date": round_date(round),
                        "startTime": start,
                        "endTime": end,
                        "capacity": capacity,
                    })
                })
        })
        .collect();
    let text = serde_json::to_string_pretty(&json!({ "slots": slots })).expect("schedule JSON");
    std::fs::write(path, text).expect("write the schedule");
}

// ---------------------------------------------------------------------------
// Wire shapes (only the fields the checks use).

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenDto {
    token_id: String,
    token_number: u32,
    patient_id: String,
    slot_id: String,
    doctor_id: String,
    priority: u8,
    status: String,
    waitlist_position: Option<u32>,
    /// Only in `GET /tokens/{id}`.
    #[serde(default)]
    history: Vec<HistoryDto>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryDto {
    at: String,
    from: Option<String>,
    to: String,
    reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangeDto {
    token_id: String,
    patient_id: String,
    from: String,
    to: String,
    reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BookingReply {
    decision: String,
    token: TokenDto,
    changes: Vec<ChangeDto>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionReply {
    token: TokenDto,
    changes: Vec<ChangeDto>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlotDetail {
    slot_id: String,
    doctor_id: String,
    date: String,
    capacity: u32,
    allocated_count: u32,
    waitlist_count: u32,
    available: u32,
    overbooked: bool,
    overbooked_by: u32,
    allocated: Vec<TokenDto>,
    waitlist: Vec<TokenDto>,
}

/// What an answer says about whether the change happened.
enum Answer {
    /// 2xx: acknowledged. The body when it arrived whole.
    Ack(Option<Vec<u8>>),
    /// An error answer; by the contract the request changed nothing.
    Refused(u16, String),
    /// No answer (the server died), a timeout or a 5xx: it may or may not
    /// have happened.
    InDoubt,
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let Ok(response) = request.send().await else {
        return Answer::InDoubt;
    };
    let status = response.status();
    let body = response.bytes().await.ok().map(|body| body.to_vec());
    if status.is_success() {
        Answer::Ack(body)
    } else if status.is_server_error() || status == reqwest::StatusCode::REQUEST_TIMEOUT {
        Answer::InDoubt
    } else {
        let text = String::from_utf8_lossy(body.as_deref().unwrap_or_default()).into_owned();
        Answer::Refused(status.as_u16(), text)
    }
}

// ---------------------------------------------------------------------------
// The load.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Cancel,
    NoShow,
}

impl Action {
    fn path(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::NoShow => "no-show",
        }
    }

    /// The status (and history reason) the action sets.
    fn terminal(self) -> &'static str {
        match self {
            Action::Cancel => "CANCELLED",
            Action::NoShow => "NO_SHOW",
        }
    }
}

struct Booked {
    key: Option<String>,
    body: Value,
    reply: BookingReply,
}

struct Acted {
    token: String,
    action: Action,
    /// `None` when the 2xx status line came but the body did not.
    reply: Option<ActionReply>,
}

#[derive(Default)]
struct ClientLog {
    bookings_sent: usize,
    booked: Vec<Booked>,
    /// 2xx whose body was lost: acknowledged, but the token is unknown.
    booked_unread: usize,
    bookings_in_doubt: usize,
    actions_sent: usize,
    acted: Vec<Acted>,
    actions_in_doubt: Vec<(String, Action)>,
    /// Expected refusals: no-show of a waitlisted token, a full waitlist.
    refused: usize,
    /// Answers the contract does not allow here.
    anomalies: Vec<String>,
}

struct Load {
    logs: Vec<ClientLog>,
    killed_after: Duration,
}

impl Load {
    fn sum(&self, count: impl Fn(&ClientLog) -> usize) -> usize {
        self.logs.iter().map(count).sum()
    }
    fn bookings_sent(&self) -> usize {
        self.sum(|log| log.bookings_sent)
    }
    fn bookings_acked(&self) -> usize {
        self.sum(|log| log.booked.len() + log.booked_unread)
    }
    fn bookings_in_doubt(&self) -> usize {
        self.sum(|log| log.bookings_in_doubt)
    }
    fn actions_sent(&self) -> usize {
        self.sum(|log| log.actions_sent)
    }
    fn actions_acked(&self) -> usize {
        self.sum(|log| log.acted.len())
    }
    fn actions_in_doubt(&self) -> usize {
        self.sum(|log| log.actions_in_doubt.len())
    }
    fn refused(&self) -> usize {
        self.sum(|log| log.refused)
    }
    /// Acknowledged side effects on other tokens with this reason.
    fn changes(&self, reason: &str) -> usize {
        self.sum(|log| {
            let booked = log.booked.iter().flat_map(|booked| &booked.reply.changes);
            let acted = log
                .acted
                .iter()
                .flat_map(|acted| acted.reply.iter().flat_map(|reply| &reply.changes));
            booked
                .chain(acted)
                .filter(|change| change.reason == reason)
                .count()
        })
    }
}

struct ClientPlan {
    index: usize,
    round: usize,
    label: &'static str,
    http: reqwest::Client,
    base: Arc<str>,
    current_slots: Arc<Vec<String>>,
    all_slots: Arc<Vec<String>>,
    own: Vec<String>,
    rng: Rng,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
    deadline: Instant,
}

/// Runs the clients, kills the server `kill_after` the start (and once at
/// least `min_acks` answers were acknowledged), then collects the logs.
async fn run_load(
    server: &mut Server,
    round: usize,
    label: &'static str,
    owned: Vec<String>,
    kill_after: Duration,
    min_acks: usize,
    seed: u64,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let base: Arc<str> = Arc::from(server.base.as_str());
    let current_slots = Arc::new(round_slot_ids(round));
    let all_slots = Arc::new((0..=round).flat_map(round_slot_ids).collect::<Vec<_>>());
    let mut own: Vec<Vec<String>> = vec![Vec::new(); CLIENTS];
    for (index, token) in owned.into_iter().enumerate() {
        own[index % CLIENTS].push(token);
    }
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for (index, own) in own.into_iter().enumerate() {
        clients.spawn(client(ClientPlan {
            index,
            round,
            label,
            http: server.http.clone(),
            base: base.clone(),
            current_slots: current_slots.clone(),
            all_slots: all_slots.clone(),
            own,
            rng: Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            stop: stop.clone(),
            acks: acks.clone(),
            deadline: started + LOAD_LIMIT,
        }));
    }
    tokio::time::sleep(kill_after).await;
    while acks.load(Ordering::SeqCst) < min_acks && started.elapsed() < LOAD_LIMIT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let killed_after = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::with_capacity(CLIENTS);
    while let Some(log) = clients.join_next().await {
        logs.push(log.expect("a client task panicked"));
    }
    Load { logs, killed_after }
}

async fn client(mut plan: ClientPlan) -> ClientLog {
    let mut log = ClientLog::default();
    let mut patients = 0;
    for _ in 0..OPS_PER_CLIENT {
        if plan.stop.load(Ordering::SeqCst) || Instant::now() >= plan.deadline {
            break;
        }
        if !plan.own.is_empty() && plan.rng.below(100) < 35 {
            let index = plan.rng.below(plan.own.len() as u64) as usize;
            let token = plan.own.swap_remove(index);
            let action = if plan.rng.below(100) < 70 {
                Action::Cancel
            } else {
                Action::NoShow
            };
            log.actions_sent += 1;
            let url = format!("{}/tokens/{token}/{}", plan.base, action.path());
            match answer(plan.http.post(url)).await {
                Answer::Ack(body) => {
                    plan.acks.fetch_add(1, Ordering::SeqCst);
                    let reply =
                        body.and_then(|body| serde_json::from_slice::<ActionReply>(&body).ok());
                    if let Some(reply) = &reply {
                        if reply.token.token_id != token || reply.token.status != action.terminal()
                        {
                            log.anomalies.push(format!(
                                "{} of {token} answered token {} with status {}",
                                action.path(),
                                reply.token.token_id,
                                reply.token.status
                            ));
                        }
                    }
                    log.acted.push(Acted {
                        token,
                        action,
                        reply,
                    });
                }
                // Only ALLOCATED tokens can be no-shows; it may be waitlisted.
                Answer::Refused(409, text)
                    if action == Action::NoShow && text.contains("INVALID_TRANSITION") =>
                {
                    log.refused += 1;
                    plan.own.push(token);
                }
                Answer::Refused(status, text) => {
                    log.anomalies
                        .push(format!("{} of {token}: {status} {text}", action.path()));
                }
                Answer::InDoubt => log.actions_in_doubt.push((token, action)),
            }
        } else {
            let slots = if plan.rng.below(100) < 75 {
                &plan.current_slots
            } else {
                &plan.all_slots
            };
            let slot = slots[plan.rng.below(slots.len() as u64) as usize].clone();
            let source = plan.rng.weighted(&SOURCES);
            let patient = format!("{}{}-C{}-{patients}", plan.label, plan.round, plan.index);
            patients += 1;
            let body = json!({"patientId": patient, "slotId": slot, "source": source});
            let key = (plan.rng.below(2) == 0).then(|| format!("key-{patient}"));
            let mut request = plan.http.post(format!("{}/tokens", plan.base)).json(&body);
            if let Some(key) = &key {
                request = request.header("Idempotency-Key", key);
            }
            log.bookings_sent += 1;
            match answer(request).await {
                Answer::Ack(Some(bytes)) => {
                    plan.acks.fetch_add(1, Ordering::SeqCst);
                    match serde_json::from_slice::<BookingReply>(&bytes) {
                        Ok(reply) => {
                            if reply.token.patient_id != patient || reply.token.slot_id != slot {
                                log.anomalies
                                    .push(format!("booking {body} answered {:?}", reply.token));
                            }
                            plan.own.push(reply.token.token_id.clone());
                            log.booked.push(Booked { key, body, reply });
                        }
                        Err(error) => log.anomalies.push(format!(
                            "booking {body}: unreadable 2xx body ({error}): {}",
                            String::from_utf8_lossy(&bytes)
                        )),
                    }
                }
                Answer::Ack(None) => {
                    plan.acks.fetch_add(1, Ordering::SeqCst);
                    log.booked_unread += 1;
                }
                Answer::Refused(409, text) if text.contains("WAITLIST_FULL") => log.refused += 1,
                Answer::Refused(status, text) => log
                    .anomalies
                    .push(format!("booking {body}: {status} {text}")),
                Answer::InDoubt => log.bookings_in_doubt += 1,
            }
        }
    }
    log
}

// ---------------------------------------------------------------------------
// What the clients were told, and what a restarted server must show.

/// Where a transition must start, as far as the answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FromStatus {
    Creation,
    Status(String),
    /// The answer to a cancel or no-show does not name the old status.
    Any,
}

/// One acknowledged transition of a token, to be found in its history.
#[derive(Debug, Clone)]
struct Fact {
    from: FromStatus,
    to: String,
    reason: String,
    source: String,
}

impl Fact {
    fn matches(&self, entry: &HistoryDto) -> bool {
        let from = match &self.from {
            FromStatus::Creation => entry.from.is_none(),
            FromStatus::Status(status) => entry.from.as_deref() == Some(status.as_str()),
            FromStatus::Any => true,
        };
        from && entry.to == self.to && entry.reason == self.reason
    }
}

#[derive(Debug, Default)]
struct Known {
    slot: String,
    patient: String,
    /// A terminal status that was acknowledged (or read back after an
    /// earlier restart, which makes it durable too).
    terminal: Option<String>,
    /// Terminal statuses a cancel or no-show without an answer may have set.
    in_doubt: BTreeSet<&'static str>,
    facts: Vec<Fact>,
    /// The history read after the previous restart: it must stay a prefix.
    durable_history: Vec<HistoryDto>,
}

#[derive(Default)]
struct Ledger {
    tokens: HashMap<String, Known>,
    /// Acknowledged bookings with an idempotency key, this round.
    keyed: Vec<(String, Value, String)>,
    /// Answers the contract does not allow, reported by the next check.
    anomalies: Vec<String>,
}

impl Ledger {
    fn known(&mut self, token: &str, slot: &str, patient: &str) -> &mut Known {
        let known = self.tokens.entry(token.to_owned()).or_default();
        if known.slot.is_empty() {
            known.slot = slot.to_owned();
            known.patient = patient.to_owned();
        }
        known
    }

    fn record_changes(&mut self, changes: &[ChangeDto], slot: &str, cause: &str) {
        for change in changes {
            self.known(&change.token_id, slot, &change.patient_id)
                .facts
                .push(Fact {
                    from: FromStatus::Status(change.from.clone()),
                    to: change.to.clone(),
                    reason: change.reason.clone(),
                    source: cause.to_owned(),
                });
        }
    }

    fn record(&mut self, load: &Load) {
        self.keyed.clear();
        for log in &load.logs {
            self.anomalies.extend(log.anomalies.iter().cloned());
            for booked in &log.booked {
                let token = &booked.reply.token;
                let cause = format!("booking of {}", token.token_id);
                self.known(&token.token_id, &token.slot_id, &token.patient_id)
                    .facts
                    .push(Fact {
                        from: FromStatus::Creation,
                        to: token.status.clone(),
                        reason: booked.reply.decision.clone(),
                        source: cause.clone(),
                    });
                self.record_changes(&booked.reply.changes, &token.slot_id, &cause);
                if let Some(key) = &booked.key {
                    self.keyed
                        .push((key.clone(), booked.body.clone(), token.token_id.clone()));
                }
            }
            for acted in &log.acted {
                let terminal = acted.action.terminal();
                let cause = format!("{} of {}", acted.action.path(), acted.token);
                let Some(known) = self.tokens.get_mut(&acted.token) else {
                    self.anomalies
                        .push(format!("{cause}: acted on a token never acknowledged"));
                    continue;
                };
                if known
                    .terminal
                    .as_deref()
                    .is_some_and(|earlier| earlier != terminal)
                {
                    self.anomalies
                        .push(format!("{cause}: acknowledged after {:?}", known.terminal));
                }
                known.terminal = Some(terminal.to_owned());
                known.facts.push(Fact {
                    from: FromStatus::Any,
                    to: terminal.to_owned(),
                    reason: terminal.to_owned(),
                    source: cause.clone(),
                });
                if let Some(reply) = &acted.reply {
                    let slot = known.slot.clone();
                    self.record_changes(&reply.changes, &slot, &cause);
                }
            }
            for (token, action) in &log.actions_in_doubt {
                if let Some(known) = self.tokens.get_mut(token) {
                    known.in_doubt.insert(action.terminal());
                }
            }
        }
    }

    /// Takes what a restarted server showed as the new durable baseline
    /// (only after a clean check) and returns the active tokens for the
    /// next round's clients to act on.
    fn observe(&mut self, report: &Report) -> Vec<String> {
        for (id, token) in &report.observed {
            let known = self
                .tokens
                .get_mut(id)
                .expect("observed tokens come from the ledger");
            known.durable_history = token.history.clone();
            // The server that received the unanswered actions is gone:
            // what they did is now visible or will never be.
            known.in_doubt.clear();
            if !ACTIVE.contains(&token.status.as_str()) {
                known.terminal = Some(token.status.clone());
            }
        }
        // Tokens whose booking answer was lost but that were committed.
        for token in &report.listed {
            if !self.tokens.contains_key(&token.token_id) {
                self.known(&token.token_id, &token.slot_id, &token.patient_id);
            }
        }
        let mut active: Vec<String> = report
            .observed
            .iter()
            .filter(|(_, token)| ACTIVE.contains(&token.status.as_str()))
            .map(|(id, _)| id.clone())
            .chain(
                report
                    .listed
                    .iter()
                    .filter(|token| !report.observed.contains_key(&token.token_id))
                    .map(|token| token.token_id.clone()),
            )
            .collect();
        active.sort();
        active
    }
}

// ---------------------------------------------------------------------------
// The checker.

#[derive(Default)]
struct Report {
    /// Everything wrong; empty for a durable server.
    violations: Vec<String>,
    /// How many of the violations are acknowledged changes that are gone.
    lost: usize,
    /// The lost ones by what was lost.
    lost_by_kind: HashMap<&'static str, usize>,
    tokens_checked: usize,
    slots_checked: usize,
    replays: usize,
    /// Ledger tokens as read back.
    observed: HashMap<String, TokenDto>,
    /// Tokens in the slot queues.
    listed: Vec<TokenDto>,
}

impl Report {
    fn lost(&mut self, kind: &'static str, message: String) {
        self.lost += 1;
        *self.lost_by_kind.entry(kind).or_default() += 1;
        self.violations.push(format!("LOST {kind}: {message}"));
    }

    fn lost_of(&self, kind: &str) -> usize {
        self.lost_by_kind.get(kind).copied().unwrap_or_default()
    }

    fn violation(&mut self, message: String) {
        self.violations.push(message);
    }
}

enum Fetched<T> {
    Found(T),
    Missing,
    Failed(String),
}

async fn fetch<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: String) -> Fetched<T> {
    match http.get(&url).send().await {
        Err(error) => Fetched::Failed(format!("GET {url}: {error}")),
        Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => Fetched::Missing,
        Ok(response) if !response.status().is_success() => {
            Fetched::Failed(format!("GET {url}: {}", response.status()))
        }
        Ok(response) => match response.json::<T>().await {
            Ok(value) => Fetched::Found(value),
            Err(error) => Fetched::Failed(format!("GET {url}: unreadable body: {error}")),
        },
    }
}

/// Reads the restarted server and compares it with the ledger. Returns
/// every violation; a durable, correct server gives none.
async fn check(server: &Server, ledger: &Ledger, slots: &[SlotSpec]) -> Report {
    let mut report = Report::default();
    for anomaly in &ledger.anomalies {
        report.violation(format!("unexpected answer during the load: {anomaly}"));
    }
    let http = &server.http;

    // 1-3: every token the ledger knows.
    let mut ids: Vec<String> = ledger.tokens.keys().cloned().collect();
    ids.sort();
    let chunk = ids.len().div_ceil(CHECK_READERS).max(1);
    let mut readers = JoinSet::new();
    for part in ids.chunks(chunk) {
        let part = part.to_vec();
        let http = http.clone();
        let base = server.base.clone();
        readers.spawn(async move {
            let mut read = Vec::with_capacity(part.len());
            for id in part {
                let fetched = fetch::<TokenDto>(&http, format!("{base}/tokens/{id}")).await;
                read.push((id, fetched));
            }
            read
        });
    }
    let mut fetched = Vec::with_capacity(ids.len());
    while let Some(part) = readers.join_next().await {
        fetched.extend(part.expect("a checker task panicked"));
    }
    fetched.sort_by(|a, b| a.0.cmp(&b.0));
    report.tokens_checked = fetched.len();
    for (id, result) in fetched {
        let known = &ledger.tokens[&id];
        match result {
            Fetched::Missing => report.lost(
                "token",
                format!(
                    "token {id} (patient {}, slot {}) is gone; acknowledged: {}",
                    known.patient,
                    known.slot,
                    describe(known)
                ),
            ),
            Fetched::Failed(error) => report.violation(format!("token {id}: {error}")),
            Fetched::Found(token) => {
                check_token(&mut report, &id, known, &token);
                report.observed.insert(id, token);
            }
        }
    }

    // 4: the slots.
    let dates: HashMap<&str, &str> = slots
        .iter()
        .map(|slot| (slot.id.as_str(), slot.date.as_str()))
        .collect();
    let mut listed: HashMap<String, (String, String)> = HashMap::new();
    for spec in slots {
        match fetch::<SlotDetail>(http, format!("{}/slots/{}", server.base, spec.id)).await {
            Fetched::Missing => report.lost("slot", format!("slot {} is gone", spec.id)),
            Fetched::Failed(error) => report.violation(format!("slot {}: {error}", spec.id)),
            Fetched::Found(slot) => {
                report.slots_checked += 1;
                check_slot(&mut report, spec, &slot);
                for token in slot.allocated.iter().chain(&slot.waitlist) {
                    listed.insert(
                        token.token_id.clone(),
                        (slot.slot_id.clone(), token.status.clone()),
                    );
                    report.listed.push(token.clone());
                }
            }
        }
    }

    // The queues and the tokens are one state.
    let mut cross = Vec::new();
    for (id, token) in &report.observed {
        let active = ACTIVE.contains(&token.status.as_str());
        match listed.get(id) {
            Some((slot, status))
                if active && (slot != &token.slot_id || status != &token.status) =>
            {
                cross.push(format!(
                    "token {id} is {} in slot {} but listed as {status} in slot {slot}",
                    token.status, token.slot_id
                ))
            }
            None if active && dates.contains_key(token.slot_id.as_str()) => cross.push(format!(
                "token {id} is {} but not in the queues of slot {}",
                token.status, token.slot_id
            )),
            Some(_) if !active => {
                cross.push(format!("token {id} is {} but still queued", token.status))
            }
            _ => {}
        }
    }
    // Token numbers are unique per doctor and date.
    let mut numbers: HashMap<(String, String, u32), String> = HashMap::new();
    for token in report.observed.values().chain(&report.listed) {
        let Some(date) = dates.get(token.slot_id.as_str()) else {
            continue;
        };
        let key = (
            token.doctor_id.clone(),
            (*date).to_owned(),
            token.token_number,
        );
        if let Some(other) = numbers.insert(key, token.token_id.clone()) {
            if other != token.token_id {
                cross.push(format!(
                    "tokens {other} and {} share number {} of doctor {} on {date}",
                    token.token_id, token.token_number, token.doctor_id
                ));
            }
        }
    }
    for message in cross {
        report.violation(message);
    }

    // 5: acknowledged idempotent bookings replay the same token.
    for (key, body, token) in ledger.keyed.iter().take(REPLAYS_MAX) {
        report.replays += 1;
        let request = http
            .post(format!("{}/tokens", server.base))
            .header("Idempotency-Key", key)
            .json(body);
        match answer(request).await {
            Answer::Ack(Some(bytes)) => match serde_json::from_slice::<BookingReply>(&bytes) {
                Ok(reply) if reply.token.token_id == *token => {}
                Ok(reply) => report.lost(
                    "idempotency key",
                    format!(
                        "idempotency key {key} of acknowledged token {token} now books {}",
                        reply.token.token_id
                    ),
                ),
                Err(error) => {
                    report.violation(format!("replay of key {key}: unreadable body: {error}"))
                }
            },
            Answer::Ack(None) => report.violation(format!("replay of key {key}: body lost")),
            Answer::Refused(status, text) => report.lost(
                "idempotency key",
                format!("replay of key {key} (token {token}) refused: {status} {text}"),
            ),
            Answer::InDoubt => report.violation(format!("replay of key {key}: no answer")),
        }
    }
    report
}

fn describe(known: &Known) -> String {
    let facts: Vec<String> = known
        .facts
        .iter()
        .map(|fact| {
            format!(
                "{:?} -> {} ({}) by {}",
                fact.from, fact.to, fact.reason, fact.source
            )
        })
        .collect();
    if facts.is_empty() {
        "read back after an earlier restart".to_owned()
    } else {
        facts.join("; ")
    }
}

fn check_token(report: &mut Report, id: &str, known: &Known, token: &TokenDto) {
    if token.slot_id != known.slot || token.patient_id != known.patient {
        report.violation(format!(
            "token {id} is for patient {} in slot {}, acknowledged for patient {} in slot {}",
            token.patient_id, token.slot_id, known.patient, known.slot
        ));
    }

    // The status.
    let status = token.status.as_str();
    match &known.terminal {
        Some(terminal) if status != terminal => report.lost(
            "status",
            format!(
                "token {id} is {status}, acknowledged {terminal}: {}",
                describe(known)
            ),
        ),
        Some(_) => {}
        None if ACTIVE.contains(&status) || known.in_doubt.contains(status) => {}
        None => report.violation(format!(
            "token {id} is {status} though no unanswered request could have made it so: {}",
            describe(known)
        )),
    }

    // The history: well formed, ending in the status.
    let history = &token.history;
    let mut problems = Vec::new();
    match history.first() {
        None => problems.push("is empty".to_owned()),
        Some(first) => {
            if first.from.is_some() || !CREATION_REASONS.contains(&first.reason.as_str()) {
                problems.push(format!("starts with {first:?}"));
            }
        }
    }
    for pair in history.windows(2) {
        if pair[1].from.as_deref() != Some(pair[0].to.as_str()) {
            problems.push(format!("jumps from {:?} to {:?}", pair[0], pair[1]));
        }
        if !ACTIVE.contains(&pair[0].to.as_str()) {
            problems.push(format!("continues after terminal {:?}", pair[0]));
        }
    }
    for entry in history {
        let expected = match entry.reason.as_str() {
            "ALLOCATED" | "OVERBOOKED" | "BUMPED_LOWER" | "PROMOTED" => "ALLOCATED",
            "WAITLISTED" | "BUMPED" | "CAPACITY_REDUCED" => "WAITLISTED",
            other => other,
        };
        if entry.to != expected {
            problems.push(format!("has {entry:?}"));
        }
    }
    if let Some(last) = history.last() {
        if last.to != token.status {
            problems.push(format!(
                "ends in {} but the token is {}",
                last.to, token.status
            ));
        }
    }
    if !problems.is_empty() {
        report.violation(format!("history of token {id} {}", problems.join("; ")));
    }

    // What was read after the previous restart is still there.
    if !history.starts_with(&known.durable_history) {
        report.lost(
            "history",
            format!(
                "history of token {id} was {:?} after the previous restart, now {:?}",
                known.durable_history, history
            ),
        );
    }

    // Every acknowledged transition is in the history (as a multiset:
    // answers to concurrent requests arrive in any order).
    let mut used = vec![false; history.len()];
    let mut facts: Vec<&Fact> = known.facts.iter().collect();
    facts.sort_by_key(|fact| fact.from == FromStatus::Any);
    for fact in facts {
        let found = (0..history.len()).find(|&index| !used[index] && fact.matches(&history[index]));
        match found {
            Some(index) => used[index] = true,
            None => report.lost(
                "transition",
                format!(
                    "token {id}: acknowledged {:?} -> {} ({}) by {} is not in its history {:?}",
                    fact.from, fact.to, fact.reason, fact.source, history
                ),
            ),
        }
    }
}

fn check_slot(report: &mut Report, spec: &SlotSpec, slot: &SlotDetail) {
    let id = &spec.id;
    let mut problems = Vec::new();
    if slot.slot_id != *id || slot.doctor_id != spec.doctor || slot.date != spec.date {
        problems.push(format!(
            "is {} of {} on {}, expected {id} of {} on {}",
            slot.slot_id, slot.doctor_id, slot.date, spec.doctor, spec.date
        ));
    }
    let capacity = slot.capacity;
    let allocated = u32::try_from(slot.allocated.len()).expect("small queue");
    if allocated != slot.allocated_count || slot.waitlist.len() != slot.waitlist_count as usize {
        problems.push(format!(
            "counts {}/{} but lists {}/{}",
            slot.allocated_count,
            slot.waitlist_count,
            allocated,
            slot.waitlist.len()
        ));
    }
    let regular = slot
        .allocated
        .iter()
        .filter(|token| token.priority != 1)
        .count();
    if regular > capacity as usize {
        problems.push(format!(
            "{regular} non-emergency tokens allocated, capacity {capacity}"
        ));
    }
    if !slot.waitlist.is_empty() && allocated < capacity {
        problems.push(format!(
            "{} waitlisted while only {allocated} of {capacity} allocated",
            slot.waitlist.len()
        ));
    }
    if slot.available != capacity.saturating_sub(allocated)
        || slot.overbooked != (allocated > capacity)
        || slot.overbooked_by != allocated.saturating_sub(capacity)
    {
        problems.push(format!(
            "summary available {} overbooked {} by {} does not match {allocated} of {capacity}",
            slot.available, slot.overbooked, slot.overbooked_by
        ));
    }
    let mut patients = HashSet::new();
    for (queue, status, tokens) in [
        ("allocated", "ALLOCATED", &slot.allocated),
        ("waitlist", "WAITLISTED", &slot.waitlist),
    ] {
        for (index, token) in tokens.iter().enumerate() {
            let position =
                (status == "WAITLISTED").then(|| u32::try_from(index + 1).expect("small queue"));
            if token.status != status || token.waitlist_position != position {
                problems.push(format!(
                    "{queue}[{index}] is {} at position {:?}",
                    token.status, token.waitlist_position
                ));
            }
            if token.slot_id != *id || token.doctor_id != spec.doctor {
                problems.push(format!(
                    "{queue}[{index}] belongs to {} of {}",
                    token.slot_id, token.doctor_id
                ));
            }
            if !patients.insert(token.patient_id.clone()) {
                problems.push(format!(
                    "patient {} holds two active tokens",
                    token.patient_id
                ));
            }
        }
        // Priority, then arrival; token numbers follow arrival within a
        // doctor's day.
        for pair in tokens.windows(2) {
            if (pair[0].priority, pair[0].token_number) >= (pair[1].priority, pair[1].token_number)
            {
                problems.push(format!(
                    "{queue} has #{} (priority {}) before #{} (priority {})",
                    pair[0].token_number, pair[0].priority, pair[1].token_number, pair[1].priority
                ));
            }
        }
    }
    if !problems.is_empty() {
        report.violation(format!("slot {id}: {}", problems.join("; ")));
    }
}

// ---------------------------------------------------------------------------
// Randomness.

fn seed() -> u64 {
    match std::env::var("CRASH_SEED") {
        Ok(seed) => seed.trim().parse().expect("CRASH_SEED is a u64"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64),
    }
}

/// xorshift64, seeded through splitmix64 so any seed (0 too) works.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.below(range.end - range.start)
    }

    fn weighted<T: Copy>(&mut self, choices: &[(T, u64)]) -> T {
        let total: u64 = choices.iter().map(|(_, weight)| weight).sum();
        let mut pick = self.below(total);
        for (choice, weight) in choices {
            if pick < *weight {
                return *choice;
            }
            pick -= weight;
        }
        unreachable!("pick < total")
    }
}
