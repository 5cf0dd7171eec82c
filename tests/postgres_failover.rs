//! Following PostgreSQL's primary across a failover: a pg_auto_failover
//! formation (a monitor, a primary and a synchronous standby, on this
//! machine), bookings under load through one instance given the
//! formation's multi-host URL, the primary's postmaster killed with
//! `kill -9`. Every answer meanwhile is a booking or a 503; the same
//! instance books again once the standby is promoted; every acknowledged
//! booking is on the new primary with the slots' invariants holding; a
//! booking whose answer was a 503 and is retried with its
//! `Idempotency-Key` exists once; the live event stream goes on.
//!
//! Needs `pg_autoctl` (Debian: `apt-get install postgresql-15-auto-failover
//! pg-auto-failover-cli`); fails, saying so, without it. Run as root, it
//! runs PostgreSQL as the `postgres` user.
#![cfg(feature = "postgres-tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{get_json, EventStream};

const SLOTS: [&str; 4] = ["F1", "F2", "F3", "F4"];
const CAPACITY: usize = 40;
const WORKERS: usize = 8;

/// A monitor and two nodes, each a `pg_autoctl … --run` process, in a
/// directory of their own; stopped and removed when dropped.
struct Formation {
    dir: PathBuf,
    bin: PathBuf,
    ports: [u16; 3],
    children: Vec<Child>,
}

impl Formation {
    async fn start() -> Formation {
        let found = Command::new("pg_autoctl")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            found.is_ok_and(|status| status.success()),
            "pg_autoctl is missing: install it with \
             `apt-get install postgresql-15-auto-failover pg-auto-failover-cli`"
        );
        let bin = postgres_bin();
        let dir = std::env::temp_dir().join(format!("opd-failover-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let owned = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()
                .expect("chown runs");
            assert!(owned.success(), "the postgres user owns {}", dir.display());
        }
        let ports = free_ports::<3>();
        let mut formation = Formation {
            dir,
            bin,
            ports,
            children: Vec::new(),
        };
        let monitor = formation.path("monitor");
        let port = ports[0].to_string();
        formation.spawn(
            "monitor",
            &[
                "create",
                "monitor",
                "--pgdata",
                &monitor,
                "--pgport",
                &port,
                "--hostname",
                "127.0.0.1",
                "--auth",
                "trust",
                "--no-ssl",
                "--run",
            ],
        );
        formation.wait_for_port(ports[0], "the monitor").await;
        let monitor_url =
            format!("postgres://autoctl_node@127.0.0.1:{port}/pg_auto_failover?sslmode=disable");
        for (name, port) in [("node1", ports[1]), ("node2", ports[2])] {
            let pgdata = formation.path(name);
            let port = port.to_string();
            formation.spawn(
                name,
                &[
                    "create",
                    "postgres",
                    "--pgdata",
                    &pgdata,
                    "--pgport",
                    &port,
                    "--hostname",
                    "127.0.0.1",
                    "--name",
                    name,
                    "--auth",
                    "trust",
                    "--no-ssl",
                    "--dbname",
                    "test",
                    "--monitor",
                    &monitor_url,
                    "--run",
                ],
            );
        }
        // A standby's base backup waits for the primary's next checkpoint,
        // which by default is spread over minutes: ask for one while a
        // standby catches up.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let nodes = formation.state();
            let states: Vec<(&str, &str)> = nodes
                .iter()
                .map(|node| {
                    (
                        node["current_group_state"].as_str().unwrap_or(""),
                        node["assigned_group_state"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            let settled = |state: &str| states.iter().any(|&(now, to)| now == state && to == state);
            if states.len() == 2 && settled("primary") && settled("secondary") {
                break;
            }
            if let Some(primary) = formation.port_in_state(&nodes, "wait_primary") {
                formation.psql(primary, "CHECKPOINT");
            }
            assert!(
                Instant::now() < deadline,
                "the formation did not settle in 2 minutes: {nodes:?} (logs in {})",
                formation.dir.display()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        formation
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// `pg_autoctl args`, as the `postgres` user when run as root.
    fn autoctl(&self, args: &[&str]) -> Command {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args([
                "-u",
                "postgres",
                "--",
                "env",
                &format!("PATH={path}"),
                "pg_autoctl",
            ]);
            command
        } else {
            let mut command = Command::new("pg_autoctl");
            command.env("PATH", path);
            command
        };
        command.args(args).current_dir(&self.dir);
        command
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = self
            .autoctl(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pg_autoctl starts");
        self.children.push(child);
    }

    async fn wait_for_port(&self, port: u16, what: &str) {
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{what} did not listen in 30 s (logs in {})",
            self.dir.display()
        );
    }

    /// The monitor's view of the nodes (`pg_autoctl show state --json`).
    fn state(&self) -> Vec<Value> {
        let monitor = self.path("monitor");
        let output = self
            .autoctl(&["show", "state", "--pgdata", &monitor, "--json"])
            .stderr(Stdio::null())
            .output()
            .expect("pg_autoctl show state runs");
        serde_json::from_slice(&output.stdout).unwrap_or_default()
    }

    fn port_in_state(&self, nodes: &[Value], state: &str) -> Option<u16> {
        nodes
            .iter()
            .find(|node| node["current_group_state"] == state)
            .and_then(|node| node["nodeport"].as_u64())
            .map(|port| port as u16)
    }

    /// The formation's URL, as pg_auto_failover gives it to applications.
    fn uri(&self) -> String {
        let monitor = self.path("monitor");
        let output = self
            .autoctl(&[
                "show",
                "uri",
                "--pgdata",
                &monitor,
                "--formation",
                "default",
            ])
            .output()
            .expect("pg_autoctl show uri runs");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    fn psql(&self, port: u16, sql: &str) -> String {
        let output = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-d", "test", "-Atc", sql])
            .output()
            .expect("psql runs");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// Kills the postmaster of the node on `port` with SIGKILL.
    fn kill_postmaster(&self, port: u16) {
        let name = if port == self.ports[1] {
            "node1"
        } else {
            "node2"
        };
        let pidfile = std::fs::read_to_string(self.dir.join(name).join("postmaster.pid"))
            .expect("the primary's postmaster.pid");
        let pid: i32 = pidfile.lines().next().unwrap().trim().parse().unwrap();
        // SAFETY: kill(2) with a pid read from the node's own pid file.
        let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(killed, 0, "kill -9 {pid}");
    }
}

impl Drop for Formation {
    fn drop(&mut self) {
        for name in ["node1", "node2", "monitor"] {
            let pgdata = self.path(name);
            let _ = self
                .autoctl(&["stop", "--pgdata", &pgdata, "--immediate"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The newest PostgreSQL's binaries (pg_autoctl runs pg_ctl from PATH).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(|entry| Some(entry.ok()?.path().join("bin")))
                .filter(|bin| bin.join("pg_ctl").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(Path::file_name)
            .and_then(|version| version.to_str()?.parse::<u32>().ok())
    });
    versions
        .pop()
        .expect("PostgreSQL's binaries under /usr/lib/postgresql")
}

/// `N` ports that are free now, below Linux's range of ephemeral ports
/// (32768 and up). A port the kernel hands out for `:0` is in that range,
/// so between this check and a node's start any outgoing connection on
/// the machine could take it (a node once failed to start on "Address
/// already in use" so); below the range, only a listener could.
fn free_ports<const N: usize>() -> [u16; N] {
    let first = std::process::id() % 10_000;
    let mut held = Vec::with_capacity(N);
    for offset in 0..10_000 {
        // Steps of 7 visit every port of the range once.
        let port = 20_000 + ((first + offset * 7) % 10_000) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, listener));
            if held.len() == N {
                return std::array::from_fn(|index| held[index].0);
            }
        }
    }
    panic!("{N} free ports between 20000 and 30000");
}

/// One booking as the client saw it.
#[derive(Debug, Clone)]
struct Attempt {
    patient: String,
    slot: &'static str,
    key: String,
    /// The token of a 201; `None` for a 503.
    token: Option<String>,
    started: Instant,
}

async fn book(
    client: &reqwest::Client,
    base: &str,
    patient: &str,
    slot: &str,
    key: &str,
) -> Result<Option<String>, String> {
    let response = client
        .post(format!("{base}/tokens"))
        .header("idempotency-key", key)
        .json(&json!({"patientId": patient, "slotId": slot, "source": "ONLINE"}))
        .send()
        .await
        .map_err(|error| format!("no answer: {error}"))?;
    let status = response.status().as_u16();
    let body: Value = response
        .json()
        .await
        .map_err(|error| format!("{status} without JSON: {error}"))?;
    match status {
        201 if body["token"]["patientId"] == patient
            && body["token"]["slotId"] == slot
            && matches!(
                body["token"]["status"].as_str(),
                Some("ALLOCATED" | "WAITLISTED")
            ) =>
        {
            Ok(Some(body["token"]["tokenId"].as_str().unwrap().to_owned()))
        }
        503 if body["code"] == "UNAVAILABLE" => Ok(None),
        _ => Err(format!("{patient} in {slot}: {status} {body}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_follows_the_primary_across_a_failover_and_loses_no_acknowledged_booking() {
    // Arrange: the formation, one instance on its URL, the slots, and an
    // event stream open from the start.
    let formation = Formation::start().await;
    let url = formation
        .uri()
        .replacen("postgres://", "postgres://postgres@", 1);
    assert!(url.contains(','), "a multi-host URL: {url}");
    let nodes = formation.state();
    let primary = formation
        .port_in_state(&nodes, "primary")
        .expect("a primary");
    let standby = formation
        .port_in_state(&nodes, "secondary")
        .expect("a standby");
    let mut config = opd::Config::for_tests();
    config.in_memory = false;
    config.database_url = Some(url);
    config.database_connections = 4;
    // Bookings in one call fail this test in some runs (README, "Bookings
    // in one call"); `OPD_ONE_CALL_BOOKINGS=true` runs it with them.
    config.one_call_bookings =
        std::env::var("OPD_ONE_CALL_BOOKINGS").is_ok_and(|value| value == "true");
    let application = opd::Application::build(config)
        .await
        .expect("the app starts on the formation");
    let base = format!("http://{}", application.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.serve(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let mut stream = EventStream::open(&client, &format!("{base}/events"), Some(0)).await;
    for (index, slot) in SLOTS.iter().enumerate() {
        let created = client
            .post(format!("{base}/slots"))
            .json(
                &json!({"slotId": slot, "doctorId": "DF", "date": "2030-03-04",
                          "startTime": format!("{:02}:00", 9 + index),
                          "endTime": format!("{:02}:00", 10 + index),
                          "capacity": CAPACITY}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }

    // Act: bookings under load; the primary's postmaster is killed once a
    // few hundred are in; the load goes on until bookings begun after the
    // kill have succeeded.
    let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let wrong: Arc<Mutex<Vec<String>>> = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let after_kill = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (client, base) = (client.clone(), base.clone());
        let (attempts, wrong, running) = (attempts.clone(), wrong.clone(), running.clone());
        let (killed_at, after_kill) = (killed_at.clone(), after_kill.clone());
        workers.push(tokio::spawn(async move {
            let mut step = 0;
            while running.load(Ordering::Relaxed) {
                let patient = format!("P{worker}-{step}");
                let key = format!("key-{worker}-{step}");
                let slot = SLOTS[(worker + step) % SLOTS.len()];
                step += 1;
                let started = Instant::now();
                match book(&client, &base, &patient, slot, &key).await {
                    Ok(token) => {
                        let succeeded = token.is_some();
                        attempts.lock().unwrap().push(Attempt {
                            patient,
                            slot,
                            key,
                            token,
                            started,
                        });
                        let begun_after_kill = killed_at
                            .lock()
                            .unwrap()
                            .is_some_and(|killed| started > killed);
                        if succeeded && begun_after_kill {
                            after_kill.fetch_add(1, Ordering::Relaxed);
                        }
                        if !succeeded {
                            // A client backs off after a 503.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    Err(error) => wrong.lock().unwrap().push(error),
                }
            }
        }));
    }
    let loaded = Instant::now() + Duration::from_secs(30);
    while attempts.lock().unwrap().len() < 300 && Instant::now() < loaded {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    formation.kill_postmaster(primary);
    *killed_at.lock().unwrap() = Some(Instant::now());
    let recovered = Instant::now() + Duration::from_secs(90);
    while after_kill.load(Ordering::Relaxed) < 50 && Instant::now() < recovered {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let switch = killed_at.lock().unwrap().unwrap().elapsed();
    running.store(false, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    // Assert: only bookings and 503s were answered, and the instance books
    // again without a restart.
    let wrong = wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "{} answers other than 201 or 503, the first: {:?}",
        wrong.len(),
        wrong.first()
    );
    assert!(
        after_kill.load(Ordering::Relaxed) >= 50,
        "bookings succeed again within 90 s of the kill"
    );
    let mut attempts = attempts.lock().unwrap().clone();
    let refused = attempts.iter().filter(|a| a.token.is_none()).count();
    let killed = killed_at.lock().unwrap().unwrap();
    let before = attempts.iter().filter(|a| a.started < killed).count();
    eprintln!(
        "{} bookings ({before} before the kill), {refused} answered 503; \
         bookings again {:.1} s after the kill",
        attempts.len(),
        switch.as_secs_f64()
    );

    // A 503'd booking retried with its key exists once: the retry finds the
    // stored answer if the commit had happened, or books anew.
    for attempt in attempts.iter_mut().filter(|a| a.token.is_none()) {
        let token = book(&client, &base, &attempt.patient, attempt.slot, &attempt.key)
            .await
            .unwrap_or_else(|error| panic!("the retry: {error}"));
        attempt.token = Some(token.expect("the retry books"));
    }

    // Every acknowledged booking is on the new primary, once, and the
    // slots keep their invariants.
    assert_eq!(
        formation.psql(standby, "SELECT pg_is_in_recovery()"),
        "f",
        "the standby was promoted"
    );
    let acknowledged: BTreeMap<String, &Attempt> = attempts
        .iter()
        .map(|a| (a.token.clone().unwrap(), a))
        .collect();
    assert_eq!(acknowledged.len(), attempts.len(), "one token per booking");
    let mut seen = BTreeSet::new();
    let mut numbers = Vec::new();
    for slot in SLOTS {
        let detail = get_json(&client, &format!("{base}/slots/{slot}")).await;
        let allocated = detail["allocated"].as_array().unwrap();
        let waitlist = detail["waitlist"].as_array().unwrap();
        assert!(allocated.len() <= CAPACITY, "{slot} over capacity");
        assert!(
            waitlist.is_empty() || allocated.len() == CAPACITY,
            "{slot} waitlists with a free seat"
        );
        for (index, token) in waitlist.iter().enumerate() {
            assert_eq!(token["waitlistPosition"], index + 1, "{slot}'s positions");
        }
        for token in allocated.iter().chain(waitlist) {
            let id = token["tokenId"].as_str().unwrap().to_owned();
            let attempt = acknowledged
                .get(&id)
                .unwrap_or_else(|| panic!("{id} in {slot} was never acknowledged"));
            assert_eq!(token["patientId"], attempt.patient.as_str());
            assert_eq!(attempt.slot, slot);
            numbers.push(token["tokenNumber"].as_u64().unwrap());
            assert!(seen.insert(id), "a token listed twice");
        }
    }
    assert_eq!(
        seen.len(),
        acknowledged.len(),
        "every acknowledged booking is there"
    );
    numbers.sort_unstable();
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "token numbers are 1…n");
    assert_eq!(
        formation.psql(standby, "SELECT count(*) FROM tokens"),
        acknowledged.len().to_string(),
        "the new primary holds exactly the acknowledged bookings"
    );

    // The stream opened before the kill goes on after it: every token
    // created is told once, in increasing ids.
    let mut created = BTreeSet::new();
    let mut last_id = 0;
    while created.len() < acknowledged.len() {
        let frame = stream
            .next()
            .await
            .expect("the event stream goes on across the failover");
        let Some(id) = frame.id else { continue };
        assert!(id > last_id, "event ids increase: {id} after {last_id}");
        last_id = id;
        let data = frame.data.unwrap();
        if frame.event.as_deref() == Some("token") && data["from"].is_null() {
            let token = data["tokenId"].as_str().unwrap().to_owned();
            assert!(
                acknowledged.contains_key(&token),
                "an event of a booking never acknowledged: {data}"
            );
            assert!(created.insert(token), "a creation told twice");
        }
    }

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
