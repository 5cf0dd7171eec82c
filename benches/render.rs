//! The booking answer written by `http::render` against the same answer
//! built from the DTOs and serialized by `serde_json`, for a booking with
//! no side effect and one that bumps a token (one change). The HTTP layer
//! keeps the hand-written writer only while it is the faster of the two.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use jiff::civil::{date, time};
use jiff::Timestamp;
use opd::engine::{
    BookRequest, Capacity, Context, DoctorId, Engine, Limits, Outcome, PatientId, SlotId, SlotSpec,
    Source,
};
use opd::http::dto::BookingDto;
use uuid::Uuid;

/// Two bookings into a slot of one seat: the first takes it, the second
/// (PAID) bumps the first.
fn outcomes() -> (Outcome, Outcome) {
    let mut engine = Engine::new(Limits::default());
    let slot = SlotId::parse("D1-09").unwrap();
    engine
        .create_slot(SlotSpec {
            id: slot.clone(),
            doctor: DoctorId::parse("D1").unwrap(),
            date: date(2030, 1, 15),
            start: time(9, 0, 0, 0),
            end: time(10, 0, 0, 0),
            capacity: Capacity::new(1).unwrap(),
        })
        .unwrap();
    let ctx = Context {
        at: Timestamp::from_second(1_894_693_800).unwrap(),
        actor: "desk-1".into(),
        today: date(2030, 1, 15),
    };
    let mut book = |n: u128, source| {
        engine
            .book(
                BookRequest {
                    token: Uuid::from_u128(n),
                    patient: PatientId::parse(&format!("MRN-2030-{n:06}")).unwrap(),
                    slot: slot.clone(),
                    source,
                },
                &ctx,
            )
            .unwrap()
    };
    (book(1, Source::Online), book(2, Source::Paid))
}

fn serde_booking(outcome: &Outcome) -> String {
    serde_json::to_string(&BookingDto {
        decision: outcome.decision().unwrap().into(),
        token: (&outcome.token).into(),
        changes: outcome.changes.iter().map(Into::into).collect(),
        slot: (&outcome.slot).into(),
    })
    .unwrap()
}

fn render(c: &mut Criterion) {
    let (plain, bumping) = outcomes();
    assert_eq!(opd::http::render::booking(&plain), serde_booking(&plain));
    let mut group = c.benchmark_group("booking answer");
    for (name, outcome) in [("no change", &plain), ("one change", &bumping)] {
        group.bench_function(format!("render.rs, {name}"), |b| {
            b.iter(|| opd::http::render::booking(black_box(outcome)))
        });
        group.bench_function(format!("serde DTOs, {name}"), |b| {
            b.iter(|| serde_booking(black_box(outcome)))
        });
    }
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
