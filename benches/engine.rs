//! Engine cost per operation at slot sizes 10, 1,000 and 100,000 tokens.
//!
//! Each measured operation is followed by an untimed one that restores the
//! slot's size (cancel what was booked, or book what was cancelled), so
//! every iteration sees the same size. A full slot holds `n` active tokens:
//! `min(n, 10_000) / 2` ONLINE tokens allocated (its capacity) and WALK_IN
//! tokens waitlisted behind them, so a PAID booking bumps and a WALK_IN
//! waits at the end. A free seat exists only while the waitlist is empty,
//! and a capacity is at most 10,000, so the free-seat case uses 9,999
//! tokens as its largest size.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use jiff::civil::{date, time};
use jiff::Timestamp;
use opd::engine::{
    Action, BookRequest, Capacity, Context, DoctorId, Engine, Limits, PatientId, SlotId, SlotSpec,
    Source,
};
use uuid::Uuid;

const SIZES: [u32; 3] = [10, 1_000, 100_000];

struct Bench {
    engine: Engine,
    slot: SlotId,
    ctx: Context,
    next: u128,
}

impl Bench {
    fn new(capacity: u32) -> Bench {
        let mut engine = Engine::new(Limits {
            waitlist_max: u32::MAX,
            overbook_max: u32::MAX,
            ..Limits::default()
        });
        let slot = SlotId::parse("S").unwrap();
        engine
            .create_slot(SlotSpec {
                id: slot.clone(),
                doctor: DoctorId::parse("D").unwrap(),
                date: date(2030, 1, 2),
                start: time(9, 0, 0, 0),
                end: time(10, 0, 0, 0),
                capacity: Capacity::new(capacity).unwrap(),
            })
            .unwrap();
        Bench {
            engine,
            slot,
            ctx: Context {
                at: Timestamp::UNIX_EPOCH,
                actor: "bench".into(),
                today: jiff::civil::Date::MIN,
            },
            next: 0,
        }
    }

    /// A full slot with `size` active tokens.
    fn full(size: u32) -> Bench {
        let capacity = size.min(10_000) / 2;
        let mut bench = Bench::new(capacity);
        for index in 0..size {
            bench.book(if index < capacity {
                Source::Online
            } else {
                Source::WalkIn
            });
        }
        bench
    }

    fn book(&mut self, source: Source) -> Uuid {
        self.next += 1;
        let request = BookRequest {
            token: Uuid::from_u128(self.next),
            patient: PatientId::parse(&format!("P{}", self.next)).unwrap(),
            slot: self.slot.clone(),
            source,
        };
        self.engine.book(request, &self.ctx).unwrap().token.id
    }

    fn cancel(&mut self, token: Uuid) {
        self.engine.act(token, Action::Cancel, &self.ctx).unwrap();
    }

    /// Times `measured` alone, `iters` times, with `before` and `after`
    /// run untimed around each.
    fn time<S, T>(
        &mut self,
        iters: u64,
        before: impl Fn(&mut Bench) -> S,
        measured: impl Fn(&mut Bench, S) -> T,
        after: impl Fn(&mut Bench, T),
    ) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let input = before(self);
            let started = Instant::now();
            let output = black_box(measured(self, input));
            total += started.elapsed();
            after(self, output);
        }
        total
    }
}

fn operations(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    for size in [10, 1_000, 9_999] {
        let mut bench = Bench::new(size + 1);
        for _ in 0..size {
            bench.book(Source::Online);
        }
        group.bench_with_input(BenchmarkId::new("book_free_seat", size), &size, |b, _| {
            b.iter_custom(|iters| bench.time(iters, |_| Source::Online, Bench::book, Bench::cancel))
        });
    }
    for size in SIZES {
        let mut bench = Bench::full(size);
        group.bench_with_input(BenchmarkId::new("book_bumps", size), &size, |b, _| {
            // A paid booking bumps the least important allocated token;
            // cancelling it promotes that token back.
            b.iter_custom(|iters| bench.time(iters, |_| Source::Paid, Bench::book, Bench::cancel))
        });
        group.bench_with_input(BenchmarkId::new("book_waitlists", size), &size, |b, _| {
            b.iter_custom(|iters| bench.time(iters, |_| Source::WalkIn, Bench::book, Bench::cancel))
        });
        group.bench_with_input(BenchmarkId::new("cancel_promotes", size), &size, |b, _| {
            // The paid booking (untimed) bumps the least important allocated
            // token; cancelling it promotes that token back from the head
            // of the waitlist.
            b.iter_custom(|iters| {
                bench.time(
                    iters,
                    |bench| bench.book(Source::Paid),
                    Bench::cancel,
                    |_, ()| {},
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, operations);
criterion_main!(benches);
