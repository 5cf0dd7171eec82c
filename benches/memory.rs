//! Memory per token and start-up recovery time at 1 million active tokens
//! over 10,000 slots (100 doctors × 100 days, 100 tokens a slot of
//! capacity 60, sources in a realistic mix).
//!
//! Phase 1 books everything into a bare engine and reports resident memory
//! per token. Phase 2 writes the same day through the durable journal into
//! SQLite, then times a fresh rebuild from disk, as a restart does.
//! Run with `cargo bench --bench memory`.

use std::time::Instant;

use jiff::civil::{date, time, Date};
use jiff::{Timestamp, ToSpan};
use opd::engine::{
    BookRequest, Capacity, Context, DoctorId, Engine, Limits, PatientId, SlotId, SlotSpec, Source,
};
use opd::store::{self, EventBus, Record};
use uuid::Uuid;

const DOCTORS: u32 = 100;
const DAYS: u32 = 100;
const TOKENS_PER_SLOT: u32 = 100;
const CAPACITY: u32 = 60;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn slots() -> impl Iterator<Item = SlotSpec> {
    let first: Date = date(2030, 1, 1);
    (0..DOCTORS).flat_map(move |doctor| {
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

/// Books the whole data set, handing each change to `record`.
fn book_all(engine: &mut Engine, mut record: impl FnMut(Record)) -> u64 {
    let ctx = Context {
        at: Timestamp::from_second(1_900_000_000).unwrap(),
        actor: "bench".into(),
        today: jiff::civil::Date::MIN,
    };
    for slot in slots() {
        let summary = engine.create_slot(slot).unwrap();
        record(Record::SlotCreated {
            slot: summary,
            ctx: ctx.clone(),
        });
    }
    // Most patients walk in or book online; few are emergencies.
    let mix = [
        Source::WalkIn,
        Source::Online,
        Source::WalkIn,
        Source::Online,
        Source::FollowUp,
        Source::WalkIn,
        Source::Online,
        Source::Paid,
        Source::WalkIn,
        Source::Online,
        Source::FollowUp,
        Source::WalkIn,
        Source::Online,
        Source::Paid,
        Source::WalkIn,
        Source::Online,
        Source::WalkIn,
        Source::FollowUp,
        Source::Online,
        Source::Emergency,
    ];
    let mut booked = 0u64;
    for slot in slots() {
        for index in 0..TOKENS_PER_SLOT {
            booked += 1;
            let request = BookRequest {
                token: Uuid::from_u128(u128::from(booked)),
                patient: PatientId::parse(&format!("P{booked:07}")).unwrap(),
                slot: slot.id.clone(),
                source: mix[index as usize % mix.len()],
            };
            let outcome = engine.book(request, &ctx).unwrap();
            record(Record::Booked {
                outcome,
                ctx: ctx.clone(),
                idempotency: None,
            });
        }
    }
    booked
}

#[tokio::main]
async fn main() {
    let limits = Limits::default();

    let before = resident_bytes();
    let mut engine = Engine::new(limits);
    let started = Instant::now();
    let tokens = book_all(&mut engine, |_| {});
    let booking = started.elapsed();
    let per_token = (resident_bytes() - before) as f64 / tokens as f64;
    println!(
        "memory: {tokens} active tokens in {} slots: {per_token:.0} bytes resident per token (booked in {:.2} s)",
        engine.slot_count(),
        booking.as_secs_f64()
    );
    drop(engine);

    let dir = std::env::temp_dir().join(format!("opd-memory-bench-{}", Uuid::new_v4()));
    let events = EventBus::default();
    let loaded = store::open(
        &dir,
        limits,
        None,
        Timestamp::UNIX_EPOCH,
        Date::MIN,
        &events,
        Default::default(),
    )
    .unwrap();
    let mut engine = loaded.engine;
    let journal = loaded.journal;
    let started = Instant::now();
    // Commits are in ticket order: the last ticket durable means all are.
    // The queue is bounded, so the bench waits for the writer whenever it
    // is full, as a server under load refuses changes until it has room.
    let mut next_event = 1;
    let mut last = None;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        book_all(&mut engine, |record| {
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
        })
    });
    journal
        .durable(last.expect("the bench books tokens"))
        .await
        .unwrap();
    println!(
        "durable write of the same data: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    drop(engine);
    drop(journal);

    let started = Instant::now();
    let loaded = store::open(
        &dir,
        limits,
        None,
        Timestamp::UNIX_EPOCH,
        Date::MIN,
        &events,
        Default::default(),
    )
    .unwrap();
    println!(
        "recovery: rebuilt {} tokens in {} slots from SQLite in {:.2} s",
        loaded.tokens,
        loaded.engine.slot_count(),
        started.elapsed().as_secs_f64(),
    );
    drop(loaded);
    std::fs::remove_dir_all(&dir).unwrap();
}
