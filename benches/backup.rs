//! How long bookings wait while an online backup runs, on a database of
//! 1 million tokens (10,000 slots of 100 tokens, as `benches/memory.rs`
//! writes them), and how long the backup takes.
//!
//! The database is written through the durable journal, reopened as a
//! server opens it, and served by the embedded service. Four tasks then
//! book one token after another (each waits for its booking to be durable)
//! for a few seconds without a backup, then again while a backup runs;
//! the bench prints each phase's longest and 99th-percentile booking
//! latency and the backup's duration and size. Run with
//! `cargo bench --bench backup`; `OPD_BENCH_TOKENS` sets the token count
//! (a multiple of 100).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::civil::{date, time, Date};
use jiff::{Timestamp, ToSpan};
use opd::engine::{
    BookRequest, Capacity, Context, DoctorId, Engine, Limits, PatientId, SlotId, SlotSpec, Source,
};
use opd::service::{BackupPlan, IdempotencyLimits, LocalStart, Service};
use opd::store::{self, EventBus, Record};
use uuid::Uuid;

const DAYS: u32 = 100;
const TOKENS_PER_SLOT: u32 = 100;
const CAPACITY: u32 = 60;
const PROBERS: usize = 4;
const BASELINE: Duration = Duration::from_secs(3);

/// The service's time: within the last days of the data set, whose slots
/// still take bookings.
fn now() -> Timestamp {
    Timestamp::from_second(1_900_000_000).unwrap()
}

fn slots(doctors: u32) -> impl Iterator<Item = SlotSpec> {
    let first: Date = date(2030, 1, 1);
    (0..doctors).flat_map(move |doctor| {
        (0..DAYS).map(move |day| SlotSpec {
            id: SlotId::parse(&format!("D{doctor}-{day}")).unwrap(),
            doctor: DoctorId::parse(&format!("D{doctor}")).unwrap(),
            date: first.checked_add((day as i64).days()).unwrap(),
            start: time(9, 0, 0, 0),
            end: time(10, 0, 0, 0),
            capacity: Capacity::new(CAPACITY).unwrap(),
        })
    })
}

/// Writes the data set through the journal into `dir`.
async fn write_data_set(dir: &std::path::Path, doctors: u32) {
    let loaded = store::open(
        dir,
        Limits::default(),
        None,
        now(),
        // Every day live: the benchmark's days are all in the engine.
        Date::MIN,
        &EventBus::default(),
        Default::default(),
    )
    .unwrap();
    let mut engine: Engine = loaded.engine;
    let journal = loaded.journal;
    let ctx = Context {
        at: Timestamp::from_second(1_890_000_000).unwrap(),
        actor: "bench".into(),
        today: Date::MIN,
    };
    let mix = [
        Source::WalkIn,
        Source::Online,
        Source::FollowUp,
        Source::Paid,
    ];
    let mut next_event = 1;
    let mut last = None;
    let runtime = tokio::runtime::Handle::current();
    let mut booked = 0u64;
    tokio::task::block_in_place(|| {
        let mut append = |record: Record| {
            let reservation = loop {
                match journal.reserve() {
                    Ok(reservation) => break reservation,
                    Err(_) => {
                        let full = last.take().expect("a full queue holds a record");
                        runtime.block_on(journal.durable(full)).unwrap();
                        last = Some(journal.barrier());
                    }
                }
            };
            let count = record.event_count();
            last = Some(reservation.append(record, next_event));
            next_event += count;
        };
        for slot in slots(doctors) {
            let summary = engine.create_slot(slot.clone()).unwrap();
            append(Record::SlotCreated {
                slot: summary,
                ctx: ctx.clone(),
            });
            for index in 0..TOKENS_PER_SLOT {
                booked += 1;
                let request = BookRequest {
                    token: Uuid::from_u128(u128::from(booked)),
                    patient: PatientId::parse(&format!("P{booked:08}")).unwrap(),
                    slot: slot.id.clone(),
                    source: mix[index as usize % mix.len()],
                };
                let outcome = engine.book(request, &ctx).unwrap();
                append(Record::Booked {
                    outcome,
                    ctx: ctx.clone(),
                    idempotency: None,
                });
            }
        }
    });
    journal.durable(last.unwrap()).await.unwrap();
}

/// Latencies of the bookings made until `stop`, by `PROBERS` tasks.
async fn probe(service: Arc<Service>, doctors: u32, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for prober in 0..PROBERS {
        let (service, stop, latencies) = (service.clone(), stop.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = prober as u32;
            while !stop.load(Ordering::Relaxed) {
                // The data set's last 20 days: their slots are open at
                // `now`, and their waitlists hold what the probers book.
                let day = DAYS - 20 + (n / doctors) % 20;
                let slot = SlotId::parse(&format!("D{}-{day}", n % doctors)).unwrap();
                let request = BookRequest {
                    token: Uuid::new_v4(),
                    patient: PatientId::parse(&format!("Q{}", Uuid::new_v4().simple())).unwrap(),
                    slot,
                    source: Source::Online,
                };
                let started = Instant::now();
                service
                    .book(request, None, "bench".into(), |_| String::new())
                    .await
                    .unwrap();
                latencies.lock().unwrap().push(started.elapsed());
                n += PROBERS as u32;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort();
    latencies
}

fn summary(name: &str, latencies: &[Duration], over: Duration) {
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "{name}: {} bookings in {:.2} s ({:.0}/s), p99 {:.2} ms, longest {:.2} ms",
        latencies.len(),
        over.as_secs_f64(),
        latencies.len() as f64 / over.as_secs_f64(),
        p99.as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let tokens: u32 = std::env::var("OPD_BENCH_TOKENS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000_000);
    let doctors = (tokens / TOKENS_PER_SLOT / DAYS).max(1);
    let dir = std::env::temp_dir().join(format!("opd-backup-bench-{}", Uuid::new_v4()));
    let started = Instant::now();
    write_data_set(&dir, doctors).await;
    println!(
        "wrote {} tokens in {:.1} s",
        doctors * DAYS * TOKENS_PER_SLOT,
        started.elapsed().as_secs_f64()
    );

    let events = EventBus::default();
    let loaded = store::open(
        &dir,
        Limits::default(),
        None,
        now(),
        Date::MIN,
        &events,
        Default::default(),
    )
    .unwrap();
    let service = Arc::new(
        Service::local(
            LocalStart {
                engine: loaded.engine,
                idempotency: loaded.idempotency,
                journal: Some(loaded.journal),
                last_event: loaded.last_event,
                live_days: None,
            },
            IdempotencyLimits {
                per_caller: 1,
                total: 1,
            },
            events,
            Arc::new(now),
            jiff::tz::TimeZone::UTC,
        )
        .with_backups(
            BackupPlan {
                dir: dir.join("backups"),
                every: None,
                keep: None,
            },
            Default::default(),
        ),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let probing = tokio::spawn(probe(service.clone(), doctors, stop.clone()));
    tokio::time::sleep(BASELINE).await;
    stop.store(true, Ordering::Relaxed);
    summary("without a backup", &probing.await.unwrap(), BASELINE);

    let stop = Arc::new(AtomicBool::new(false));
    let probing = tokio::spawn(probe(service.clone(), doctors, stop.clone()));
    // Let the probers get going first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let backup = service.backup().await.unwrap();
    let during = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    summary(
        "during the backup (and 200 ms before)",
        &probing.await.unwrap(),
        during + Duration::from_millis(200),
    );
    println!(
        "backup: {} MiB, events up to {}, taken in {:.2} s",
        backup.bytes / (1024 * 1024),
        backup.last_event,
        backup.duration.as_secs_f64()
    );
    drop(service);
    std::fs::remove_dir_all(&dir).unwrap();
}
