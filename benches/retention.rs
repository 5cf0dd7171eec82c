//! Start-up time and resident memory with years of history against a
//! directory with only today's work: the engine holds live days only, so
//! the two should be close.
//!
//! Builds two data directories straight through SQLite, in large
//! transactions (booking millions of tokens over HTTP would take hours):
//!
//! - `history`: 3,000,000 tokens over the 250 days before today (40
//!   doctors, 4 slots a day of 75 tokens each, all closed: 80 % seen,
//!   8 % cancelled, 12 % no-shows, with their history rows), plus today's;
//! - `today`: today's 20,000 tokens alone (40 doctors, 4 slots of 125
//!   tokens, 100 seats, so 25 waitlisted a slot; a third checked in).
//!
//! The history directory is as a server that ran every day leaves it: the
//! days before yesterday have left the engine (their token ids are in
//! `old_tokens`). Then it starts the release binary on each directory,
//! alternately, `RUNS` times: the time from spawning the process to the
//! first 200 from `/healthz`, and `VmRSS` once ready and after a light
//! load (reads of old and today's tokens and slots, and bookings).
//! Run with `cargo bench --bench retention`; `RETENTION_PREVIOUS_BIN=path`
//! runs another build of the server in the same rounds, side by side.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use rusqlite::{params, Connection};
use uuid::Uuid;

const DOCTORS: u32 = 40;
const SLOTS_A_DAY: u32 = 4;
const PAST_DAYS: u32 = 250;
const PAST_TOKENS_A_SLOT: u32 = 75;
const TODAY_TOKENS_A_SLOT: u32 = 125;
const TODAY_CAPACITY: u32 = 100;
const RUNS: usize = 5;

/// A fresh data directory with the schema of the current version.
fn new_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("opd-retention-bench-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let loaded = opd::store::open(
        &dir,
        opd::engine::Limits::default(),
        None,
        Timestamp::now(),
        Date::MIN,
        &opd::store::EventBus::default(),
        Default::default(),
    )
    .expect("a fresh store");
    drop(loaded);
    dir
}

/// The store's connection, once the writer thread of `new_dir` has let go
/// of its lock.
fn connect(dir: &Path) -> Connection {
    for _ in 0..100 {
        let connection = Connection::open(dir.join("opd.sqlite3")).expect("the database");
        if connection.execute_batch("BEGIN EXCLUSIVE; COMMIT;").is_ok() {
            connection
                .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
                .expect("pragmas");
            return connection;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the store stays locked");
}

struct Writer<'c> {
    connection: &'c Connection,
    sequence: i64,
    at: i64,
}

impl Writer<'_> {
    fn slot(&self, id: &str, doctor: u32, date: Date, start: u32, capacity: u32, closed: bool) {
        let closed_at = closed.then(|| nanos(date.tomorrow().unwrap()));
        self.connection
            .prepare_cached(
                "INSERT INTO slots (slot_id, doctor_id, date, start_time, end_time, capacity, created_at, closed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .unwrap()
            .execute(params![
                id,
                format!("D{doctor}"),
                date.to_string(),
                format!("{:02}:00", 8 + 2 * start),
                format!("{:02}:00", 10 + 2 * start),
                capacity,
                self.at,
                closed_at,
            ])
            .unwrap();
    }

    /// Books a token and gives it `changes` (to status, reason) after its
    /// creation; returns its id.
    fn token(
        &mut self,
        slot: &str,
        number: u32,
        source: &str,
        created: &str,
        changes: &[(&str, &str)],
        old: bool,
    ) -> Uuid {
        self.sequence += 1;
        let id = Uuid::new_v4();
        self.connection
            .prepare_cached(
                "INSERT INTO tokens (sequence, token_id, token_number, patient_id, slot_id, source, created_at,
                                     created_reason, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'desk')",
            )
            .unwrap()
            .execute(params![
                self.sequence,
                id.as_bytes(),
                number,
                format!("P{}", self.sequence),
                slot,
                source,
                self.at,
                created,
            ])
            .unwrap();
        let mut from = created;
        for (to, reason) in changes {
            self.connection
                .prepare_cached(
                    "INSERT INTO token_history (token_sequence, at, from_status, to_status, reason, actor)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'desk')",
                )
                .unwrap()
                .execute(params![self.sequence, self.at, from, to, reason])
                .unwrap();
            from = to;
        }
        if old {
            self.connection
                .prepare_cached("INSERT INTO old_tokens (token_id, sequence) VALUES (?1, ?2)")
                .unwrap()
                .execute(params![id.as_bytes(), self.sequence])
                .unwrap();
        }
        id
    }
}

/// Flushes a generated database to the disk. It is written without
/// syncing, for speed; left so, the server's first commit would wait for
/// the kernel to write back the whole file (a gigabyte for the history),
/// and the first start would measure the generator, not the server.
fn settle(dir: &Path) {
    std::fs::File::open(dir.join("opd.sqlite3"))
        .and_then(|file| file.sync_all())
        .expect("the generated database is flushed");
}

fn nanos(date: Date) -> i64 {
    let at = date.to_zoned(jiff::tz::TimeZone::UTC).unwrap().timestamp();
    i64::try_from(at.as_nanosecond()).unwrap()
}

const SEEN: &[(&str, &str)] = &[
    ("CHECKED_IN", "CHECKED_IN"),
    ("CALLED", "CALLED"),
    ("IN_CONSULTATION", "STARTED"),
    ("COMPLETED", "COMPLETED"),
];

/// Sources in a realistic mix: mostly online and walk-ins.
fn source(n: u32) -> &'static str {
    [
        "ONLINE",
        "WALK_IN",
        "ONLINE",
        "FOLLOW_UP",
        "WALK_IN",
        "PAID",
        "ONLINE",
        "WALK_IN",
        "FOLLOW_UP",
        "ONLINE",
    ][(n % 10) as usize]
}

/// Writes the past days; returns some of their token ids.
fn write_history(writer: &mut Writer<'_>, today: Date) -> Vec<Uuid> {
    let mut samples = Vec::new();
    for day in (1..=PAST_DAYS).rev() {
        let date = today.checked_sub((day as i64).days()).unwrap();
        writer.at = nanos(date);
        // Days before yesterday have left the engine; yesterday is live.
        let old = day > 1;
        writer.connection.execute_batch("BEGIN").unwrap();
        for doctor in 0..DOCTORS {
            let mut number = 0;
            for start in 0..SLOTS_A_DAY {
                let slot = format!("D{doctor}-{date}-{start}");
                writer.slot(&slot, doctor, date, start, PAST_TOKENS_A_SLOT, true);
                for n in 0..PAST_TOKENS_A_SLOT {
                    number += 1;
                    let changes: &[(&str, &str)] = match n % 25 {
                        0 | 1 => &[("CANCELLED", "CANCELLED")],
                        2..=4 => &[("NO_SHOW", "NO_SHOW")],
                        _ => SEEN,
                    };
                    let id = writer.token(&slot, number, source(n), "ALLOCATED", changes, old);
                    if n == 7 && doctor % 8 == 0 {
                        samples.push(id);
                    }
                }
            }
        }
        writer.connection.execute_batch("COMMIT").unwrap();
    }
    writer
        .connection
        .execute(
            "UPDATE retention SET evicted_before = ?1",
            params![today.yesterday().unwrap().to_string()],
        )
        .unwrap();
    samples
}

/// Writes today's work; returns some of its token ids and the slot ids.
fn write_today(writer: &mut Writer<'_>, today: Date) -> (Vec<Uuid>, Vec<String>) {
    writer.at = nanos(today);
    let (mut samples, mut slots) = (Vec::new(), Vec::new());
    writer.connection.execute_batch("BEGIN").unwrap();
    for doctor in 0..DOCTORS {
        let mut number = 0;
        for start in 0..SLOTS_A_DAY {
            let slot = format!("D{doctor}-{today}-{start}");
            writer.slot(&slot, doctor, today, start, TODAY_CAPACITY, false);
            for n in 0..TODAY_TOKENS_A_SLOT {
                number += 1;
                let seated = n < TODAY_CAPACITY;
                let created = if seated { "ALLOCATED" } else { "WAITLISTED" };
                let changes: &[(&str, &str)] = if seated && n % 3 == 0 {
                    &[("CHECKED_IN", "CHECKED_IN")]
                } else {
                    &[]
                };
                let id = writer.token(&slot, number, source(n), created, changes, false);
                if n == 11 {
                    samples.push(id);
                }
            }
            slots.push(slot);
        }
    }
    writer.connection.execute_batch("COMMIT").unwrap();
    (samples, slots)
}

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One HTTP/1.1 request on its own connection; the status code, or `None`
/// when nothing answers.
fn request(address: SocketAddr, method: &str, path: &str, body: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(address).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.get(9..12)?.parse().ok()
}

fn resident_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
        .expect("VmRSS in /proc")
}

struct Run {
    ready: Duration,
    rss_ready_kib: u64,
    rss_loaded_kib: u64,
}

/// Starts the server on `dir`, waits for it to be ready, measures, loads
/// it lightly, measures again, and stops it.
fn run(
    bin: &Path,
    dir: &Path,
    old: &[Uuid],
    today: &[Uuid],
    slots: &[String],
    round: usize,
    extra: &[&str],
) -> Run {
    let address = free_address();
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(extra)
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--listen", &address.to_string()])
        .args(["--rate-limit-per-second", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server starts");
    // Nothing answers until the server listens; any answer but 200 is a
    // fault of the bench's, not a slow start.
    loop {
        match request(address, "GET", "/healthz", "") {
            Some(200) => break,
            Some(status) => panic!("/healthz answered {status}"),
            None => {}
        }
        assert!(started.elapsed() < Duration::from_secs(120), "never ready");
        std::thread::sleep(Duration::from_millis(2));
    }
    let ready = started.elapsed();
    let rss_ready_kib = resident_kib(&child);
    for token in today.iter().chain(old) {
        assert_eq!(
            request(address, "GET", &format!("/tokens/{token}"), ""),
            Some(200)
        );
    }
    for slot in slots.iter().step_by(8) {
        assert_eq!(
            request(address, "GET", &format!("/slots/{slot}"), ""),
            Some(200)
        );
    }
    for n in 0..500 {
        let slot = &slots[n % slots.len()];
        let body =
            format!(r#"{{"patientId":"B{round}-{n}","slotId":"{slot}","source":"WALK_IN"}}"#);
        let status = request(address, "POST", "/tokens", &body);
        assert!(matches!(status, Some(201 | 409)), "booking: {status:?}");
    }
    let rss_loaded_kib = resident_kib(&child);
    child.kill().expect("the server stops");
    child.wait().expect("the server is reaped");
    Run {
        ready,
        rss_ready_kib,
        rss_loaded_kib,
    }
}

/// How long the daily eviction holds the engine's lock: an engine with
/// yesterday's and today's 20,000 tokens each lets yesterday go (the
/// window set to today), medians of `RUNS`.
fn eviction_time(today: Date) -> Duration {
    use opd::engine::{
        BookRequest, Capacity, Context, DoctorId, Engine, Limits, PatientId, SlotId, SlotSpec,
        Source,
    };
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let mut engine = Engine::new(Limits::default());
        let yesterday = today.yesterday().unwrap();
        let booked_at = nanos(yesterday) + 8 * 3_600_000_000_000;
        let ctx = Context {
            at: Timestamp::from_nanosecond(i128::from(booked_at)).unwrap(),
            actor: "desk".into(),
            today: yesterday,
        };
        let mut booked = 0u128;
        for date in [yesterday, today] {
            for doctor in 0..DOCTORS {
                for start in 0..SLOTS_A_DAY {
                    let id = SlotId::parse(&format!("D{doctor}-{date}-{start}")).unwrap();
                    engine
                        .create_slot(SlotSpec {
                            id: id.clone(),
                            doctor: DoctorId::parse(&format!("D{doctor}")).unwrap(),
                            date,
                            start: jiff::civil::time(8 + 2 * start as i8, 0, 0, 0),
                            end: jiff::civil::time(10 + 2 * start as i8, 0, 0, 0),
                            capacity: Capacity::new(TODAY_CAPACITY).unwrap(),
                        })
                        .unwrap();
                    for n in 0..TODAY_TOKENS_A_SLOT {
                        booked += 1;
                        let request = BookRequest {
                            token: Uuid::from_u128(booked),
                            patient: PatientId::parse(&format!("P{booked}")).unwrap(),
                            slot: id.clone(),
                            source: Source::parse(source(n)).unwrap(),
                        };
                        engine.book(request, &ctx).unwrap();
                    }
                }
            }
        }
        // Yesterday closes and ends.
        let ctx = Context {
            at: Timestamp::from_nanosecond(i128::from(nanos(today) + 3_600_000_000_000)).unwrap(),
            actor: "system".into(),
            today,
        };
        engine.tick(&ctx);
        let started = Instant::now();
        let evicted = engine.evict_before(today).unwrap();
        times.push(started.elapsed().as_secs_f64());
        assert_eq!(evicted as u32, DOCTORS * SLOTS_A_DAY);
        assert_eq!(
            engine.token_count() as u32,
            DOCTORS * SLOTS_A_DAY * TODAY_TOKENS_A_SLOT
        );
    }
    Duration::from_secs_f64(median(times))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();

    let generating = Instant::now();
    let history = new_dir("history");
    let connection = connect(&history);
    let mut writer = Writer {
        connection: &connection,
        sequence: 0,
        at: 0,
    };
    let old = write_history(&mut writer, today);
    let (today_tokens, slots) = write_today(&mut writer, today);
    let past = writer.sequence as u64 - u64::from(DOCTORS * SLOTS_A_DAY * TODAY_TOKENS_A_SLOT);
    connection
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(connection);
    settle(&history);
    let only_today = new_dir("today");
    let connection = connect(&only_today);
    let mut writer = Writer {
        connection: &connection,
        sequence: 0,
        at: 0,
    };
    let (today_only_tokens, _) = write_today(&mut writer, today);
    connection
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(connection);
    settle(&only_today);
    let size = |dir: &Path| std::fs::metadata(dir.join("opd.sqlite3")).unwrap().len() >> 20;
    println!(
        "generated {past} past tokens and {} today's in {:.0} s ({} MiB; today only: {} MiB)",
        DOCTORS * SLOTS_A_DAY * TODAY_TOKENS_A_SLOT,
        generating.elapsed().as_secs_f64(),
        size(&history),
        size(&only_today),
    );

    // RETENTION_PREVIOUS_BIN names another build of the server, run on the
    // same directories in the same rounds, to compare two builds side by
    // side.
    let mut binaries = vec![(
        "this build",
        PathBuf::from(env!("CARGO_BIN_EXE_opd-token-engine")),
    )];
    if let Some(previous) = std::env::var_os("RETENTION_PREVIOUS_BIN") {
        binaries.push(("previous build", PathBuf::from(previous)));
    }
    let mut runs: Vec<[Vec<Run>; 3]> = binaries.iter().map(|_| Default::default()).collect();
    for round in 0..RUNS {
        for ((_, bin), runs) in binaries.iter().zip(&mut runs) {
            runs[0].push(run(bin, &history, &old, &today_tokens, &slots, round, &[]));
            // Only today live: yesterday's tokens are read from storage too.
            runs[1].push(run(
                bin,
                &history,
                &old,
                &today_tokens,
                &slots,
                round,
                &["--live-days", "0"],
            ));
            runs[2].push(run(
                bin,
                &only_today,
                &[],
                &today_only_tokens,
                &slots,
                round,
                &[],
            ));
        }
    }
    for ((build, _), runs) in binaries.iter().zip(&runs) {
        report(build, runs);
    }
    let _ = std::fs::remove_dir_all(&history);
    let _ = std::fs::remove_dir_all(&only_today);
    println!(
        "the daily eviction of 20,000 tokens, keeping 20,000: {:.1} ms under the engine's lock",
        eviction_time(today).as_secs_f64() * 1e3
    );
}

/// Prints one build's start-up times and resident memory on both
/// directories, and the ratios to today only.
fn report(build: &str, runs: &[Vec<Run>; 3]) {
    println!("\n{build}:\n");
    println!("| data directory | ready after (median of {RUNS}, ms) | VmRSS ready (MiB) | VmRSS after load (MiB) |");
    println!("|---|---|---|---|");
    for (name, runs) in [
        ("3 M past + 20 k today", &runs[0]),
        ("the same, --live-days 0", &runs[1]),
        ("20 k today only", &runs[2]),
    ] {
        let ready: Vec<f64> = runs.iter().map(|r| r.ready.as_secs_f64() * 1e3).collect();
        let mib = |kib: Vec<u64>| median(kib.into_iter().map(|k| k as f64 / 1024.0).collect());
        println!(
            "| {name} | {:.0} (runs: {}) | {:.1} | {:.1} |",
            median(ready.clone()),
            ready
                .iter()
                .map(|ms| format!("{ms:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            mib(runs.iter().map(|r| r.rss_ready_kib).collect()),
            mib(runs.iter().map(|r| r.rss_loaded_kib).collect()),
        );
    }
    let ratio = |history: &[Run], field: fn(&Run) -> u64| {
        median(history.iter().map(|r| field(r) as f64).collect())
            / median(runs[2].iter().map(|r| field(r) as f64).collect())
    };
    for (name, history) in [("history", &runs[0]), ("history, --live-days 0", &runs[1])] {
        println!(
            "{name} ÷ today only: VmRSS ready {:.2}, after load {:.2}",
            ratio(history, |r| r.rss_ready_kib),
            ratio(history, |r| r.rss_loaded_kib)
        );
    }
}
