//! How good is `estimatedCallAt`? Replays synthetic OPD days through the
//! engine and compares every estimate with the moment the token was
//! actually called, for the engine's method (ARCHITECTURE.md, "Call time
//! estimates") and for the naive "queue position × slot length ÷
//! capacity".
//!
//! A day has four doctors with different slot layouts. Patients book the
//! evening before (ONLINE, FOLLOW_UP, PAID; a full slot waitlists or
//! bumps), walk in on the day (WALK_IN) and arrive as emergencies
//! (EMERGENCY, checked in at once). Booked patients arrive around their
//! slot's start, some late, some never (a few of those cancel first). A
//! doctor calls the next patient whenever free, from the start of the
//! session (a run of back-to-back slots) the next patient belongs to; a
//! called patient who has stepped away is skipped after a short wait and
//! may come back to the desk. Consultations are log-normal. Fifteen
//! minutes after a slot ends the desk marks its absent patients no-show,
//! as closing would, which seats the waitlisted patients in the hall.
//!
//! At every check-in and every call, each checked-in token of that doctor
//! has its estimate recorded; later the estimate is compared with the
//! token's next call. Everything is drawn from one fixed seed, so a run
//! prints the same table every time. Run with
//! `cargo bench --bench wait_estimates`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use jiff::civil::{date, Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use opd::engine::{
    Action, BookRequest, Capacity, Context, DoctorId, Engine, Limits, Outcome, PatientId, SlotId,
    SlotSpec, Source, Status, TokenView,
};
use uuid::Uuid;

const SEED: u64 = 0x0bd_2024_5eed;
const DAYS_PER_SCENARIO: u32 = 150;
const MINUTE: i64 = 60_000;

/// One of the settings the days are replayed under. Consultation lengths
/// are log-normal with mean `pace` × (slot length ÷ capacity) × a factor
/// drawn per doctor and day (log-normal, mean 1, shape 0.2: doctors differ
/// from the slot plan and from each other), and shape `spread`.
struct Scenario {
    name: &'static str,
    pace: f64,
    spread: f64,
    /// Emergencies per doctor and day (Poisson).
    emergencies: f64,
    /// The share of booked patients who arrive 15 to 75 minutes after
    /// their slot starts.
    late: f64,
    /// The share of booked patients who never come; a quarter of them
    /// cancel on the day before their slot.
    absent: f64,
    /// The share of calls that find the patient away.
    away: f64,
}

const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "on plan (mean = slot ÷ capacity, shape 0.4)",
        pace: 1.0,
        spread: 0.4,
        emergencies: 0.5,
        late: 0.10,
        absent: 0.08,
        away: 0.05,
    },
    Scenario {
        name: "fast doctors (mean 0.7 × plan)",
        pace: 0.7,
        spread: 0.4,
        emergencies: 0.5,
        late: 0.10,
        absent: 0.08,
        away: 0.05,
    },
    Scenario {
        name: "slow doctors (mean 1.3 × plan)",
        pace: 1.3,
        spread: 0.4,
        emergencies: 0.5,
        late: 0.10,
        absent: 0.08,
        away: 0.05,
    },
    Scenario {
        name: "erratic lengths (shape 0.9)",
        pace: 1.0,
        spread: 0.9,
        emergencies: 0.5,
        late: 0.10,
        absent: 0.08,
        away: 0.05,
    },
    Scenario {
        name: "many emergencies (4 a doctor-day)",
        pace: 1.0,
        spread: 0.4,
        emergencies: 4.0,
        late: 0.10,
        absent: 0.08,
        away: 0.05,
    },
    Scenario {
        name: "late, absent, away (30 %, 20 %, 15 %)",
        pace: 1.0,
        spread: 0.4,
        emergencies: 0.5,
        late: 0.30,
        absent: 0.20,
        away: 0.15,
    },
];

/// A doctor's sessions: (start hour, start minute, slot minutes, slots,
/// capacity per slot). Slots of a session follow each other.
struct Plan {
    doctor: &'static str,
    sessions: &'static [(i8, i8, i64, u32, u32)],
}

const PLANS: [Plan; 4] = [
    // 10 minutes a seat.
    Plan {
        doctor: "D1",
        sessions: &[(9, 0, 60, 3, 6)],
    },
    // 7.5 minutes a seat, in half-hour slots.
    Plan {
        doctor: "D2",
        sessions: &[(9, 0, 30, 4, 4)],
    },
    // 12 minutes a seat, morning and afternoon.
    Plan {
        doctor: "D3",
        sessions: &[(10, 0, 60, 2, 5), (14, 0, 60, 2, 5)],
    },
    // 15 minutes a seat, in two-hour slots.
    Plan {
        doctor: "D4",
        sessions: &[(9, 0, 120, 2, 8)],
    },
];

/// Pre-booked patients per seat, and walk-ins per seat: together more than
/// the seats, so that slots fill and waitlists form.
const BOOKED_PER_SEAT: f64 = 0.95;
const WALK_INS_PER_SEAT: f64 = 0.25;
/// Minutes after a slot's end at which its absent patients are marked
/// no-show.
const NO_SHOW_AFTER_MINUTES: i64 = 15;
/// The share of skipped patients who come back to the desk.
const RETURNS: f64 = 0.7;

fn main() {
    let started = Instant::now();
    let mut rng = Rng(SEED);
    let mut rows = Vec::new();
    let mut overall = Tally::default();
    for scenario in &SCENARIOS {
        let mut tally = Tally::default();
        for day in 0..DAYS_PER_SCENARIO {
            let mut seed = Rng(rng.next());
            Day::run(scenario, day, &mut seed, &mut tally);
        }
        overall.merge(&tally);
        rows.push((scenario.name, tally));
    }
    rows.push(("overall", overall));
    println!(
        "Wait estimates: {} days per scenario, 4 doctors a day, seed {SEED:#x}.\n",
        DAYS_PER_SCENARIO
    );
    println!("Each patient's estimate at check-in (arrival or return), minutes:\n");
    print_table(&rows, |tally| &tally.at_check_in);
    println!("\nEvery estimate shown at each check-in and call, minutes:\n");
    print_table(&rows, |tally| &tally.every);
    println!(
        "\n(engine / naive; naive = now + queue position × slot length ÷ capacity; \
         under = share called later than estimated)"
    );
    println!("Ran in {:.1} s.", started.elapsed().as_secs_f64());
}

fn print_table(rows: &[(&str, Tally)], pick: impl Fn(&Tally) -> &Errors) {
    println!("| scenario | estimates | mean abs. error | p90 abs. error | bias | underestimates |");
    println!("|---|---|---|---|---|---|");
    for (name, tally) in rows {
        let errors = pick(tally);
        let (engine, naive) = (Summary::of(&errors.engine), Summary::of(&errors.naive));
        println!(
            "| {name} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:+.1} / {:+.1} | {:.0} % / {:.0} % |",
            errors.engine.len(),
            engine.mean_absolute,
            naive.mean_absolute,
            engine.p90_absolute,
            naive.p90_absolute,
            engine.bias,
            naive.bias,
            engine.under * 100.0,
            naive.under * 100.0,
        );
    }
}

/// Signed errors in minutes (estimate − actual call: negative is an
/// underestimate, the patient is called later than told).
#[derive(Default)]
struct Errors {
    engine: Vec<f64>,
    naive: Vec<f64>,
}

#[derive(Default)]
struct Tally {
    at_check_in: Errors,
    every: Errors,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        for (into, from) in [
            (&mut self.at_check_in, &other.at_check_in),
            (&mut self.every, &other.every),
        ] {
            into.engine.extend_from_slice(&from.engine);
            into.naive.extend_from_slice(&from.naive);
        }
    }
}

struct Summary {
    mean_absolute: f64,
    p90_absolute: f64,
    bias: f64,
    under: f64,
}

impl Summary {
    fn of(errors: &[f64]) -> Summary {
        let count = errors.len().max(1) as f64;
        let mut absolute: Vec<f64> = errors.iter().map(|error| error.abs()).collect();
        absolute.sort_by(f64::total_cmp);
        Summary {
            mean_absolute: absolute.iter().sum::<f64>() / count,
            p90_absolute: absolute
                .get((absolute.len() * 9 / 10).min(absolute.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0),
            bias: errors.iter().sum::<f64>() / count,
            under: errors.iter().filter(|error| **error < 0.0).count() as f64 / count,
        }
    }
}

/// SplitMix64: small, fast and good enough for a simulation; a fixed seed
/// makes every run draw the same numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    /// Standard normal, by Box–Muller.
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Log-normal with the given mean and shape σ.
    fn log_normal(&mut self, mean: f64, shape: f64) -> f64 {
        (mean.ln() - shape * shape / 2.0 + shape * self.normal()).exp()
    }

    /// Poisson, by Knuth's method (the means here are small).
    fn poisson(&mut self, mean: f64) -> u32 {
        let limit = (-mean).exp();
        let (mut count, mut product) = (0, self.unit());
        while product > limit {
            count += 1;
            product *= self.unit();
        }
        count
    }

    fn pick<T: Copy>(&mut self, items: &[(T, f64)]) -> T {
        let mut draw = self.unit() * items.iter().map(|(_, weight)| weight).sum::<f64>();
        for (item, weight) in items {
            if draw < *weight {
                return *item;
            }
            draw -= weight;
        }
        items[items.len() - 1].0
    }
}

/// What happens next, at a time in milliseconds since the day's midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A booked patient reaches the desk.
    Arrive(usize),
    /// A booked patient cancels.
    Cancel(usize),
    WalkIn(usize),
    Emergency(usize),
    /// The doctor looks for the next patient.
    Wake(usize),
    /// The called patient enters the room.
    Start(usize),
    Complete(usize),
    /// The doctor gives up on a called patient who is away.
    Skip(usize),
    /// A skipped patient comes back to the desk.
    Return(usize),
    /// The desk marks the slot's absent patients no-show.
    Sweep(usize),
}

struct SimSlot {
    id: SlotId,
    doctor: usize,
    start: i64,
    end: i64,
    /// The start of the session the slot belongs to: the doctor calls none
    /// of its patients before then.
    session_start: i64,
    /// Slot length ÷ capacity, the naive estimate's time per position.
    per_seat: f64,
}

struct SimDoctor {
    id: DoctorId,
    slots: Vec<usize>,
    /// This day's mean consultation length.
    mean: f64,
    busy: bool,
}

struct SimToken {
    id: Uuid,
    slot: usize,
    emergency: bool,
    /// The times the doctor called it.
    calls: Vec<i64>,
}

struct Observation {
    token: usize,
    at: i64,
    engine: i64,
    naive: i64,
    at_check_in: bool,
}

struct Day<'a> {
    scenario: &'a Scenario,
    rng: &'a mut Rng,
    engine: Engine,
    date: Date,
    midnight: Timestamp,
    now: i64,
    queue: BinaryHeap<Reverse<(i64, u64, Event)>>,
    scheduled: u64,
    slots: Vec<SimSlot>,
    doctors: Vec<SimDoctor>,
    tokens: Vec<SimToken>,
    token_keys: HashMap<Uuid, usize>,
    observations: Vec<Observation>,
}

impl<'a> Day<'a> {
    fn run(scenario: &'a Scenario, index: u32, rng: &'a mut Rng, tally: &mut Tally) {
        let date = date(2030, 1, 1)
            .checked_add(jiff::Span::new().days(i64::from(index)))
            .expect("a date in range");
        let midnight = date
            .to_zoned(TimeZone::UTC)
            .expect("a UTC midnight")
            .timestamp();
        let mut day = Day {
            scenario,
            rng,
            engine: Engine::new(Limits::default()),
            date,
            midnight,
            // Bookings are made the evening before.
            now: -6 * 60 * MINUTE,
            queue: BinaryHeap::new(),
            scheduled: 0,
            slots: Vec::new(),
            doctors: Vec::new(),
            tokens: Vec::new(),
            token_keys: HashMap::new(),
            observations: Vec::new(),
        };
        day.open();
        day.book_ahead();
        day.plan_the_day();
        while let Some(Reverse((at, _, event))) = day.queue.pop() {
            day.now = at;
            day.handle(event);
        }
        day.tally(tally);
    }

    fn context(&self) -> Context {
        Context {
            at: self.timestamp(self.now),
            actor: "desk".into(),
            today: self.date,
        }
    }

    fn timestamp(&self, at: i64) -> Timestamp {
        self.midnight + SignedDuration::from_millis(at)
    }

    fn millis(&self, at: Timestamp) -> i64 {
        at.duration_since(self.midnight).as_millis() as i64
    }

    fn schedule(&mut self, at: i64, event: Event) {
        self.scheduled += 1;
        self.queue.push(Reverse((at, self.scheduled, event)));
    }

    /// Creates every doctor's slots and draws each doctor's pace.
    fn open(&mut self) {
        for plan in &PLANS {
            let doctor = self.doctors.len();
            let mut slots = Vec::new();
            for &(hour, minute, length, count, capacity) in plan.sessions {
                let session_start = (i64::from(hour) * 60 + i64::from(minute)) * MINUTE;
                for index in 0..count {
                    let start = session_start + i64::from(index) * length * MINUTE;
                    let end = start + length * MINUTE;
                    let id = SlotId::parse(&format!("{}-{}", plan.doctor, start / MINUTE))
                        .expect("a valid slot id");
                    self.engine
                        .create_slot(SlotSpec {
                            id: id.clone(),
                            doctor: DoctorId::parse(plan.doctor).expect("a valid doctor id"),
                            date: self.date,
                            start: time_of(start),
                            end: time_of(end),
                            capacity: Capacity::new(capacity).expect("a valid capacity"),
                        })
                        .expect("the slots of a plan do not overlap");
                    slots.push(self.slots.len());
                    self.slots.push(SimSlot {
                        id,
                        doctor,
                        start,
                        end,
                        session_start,
                        per_seat: (length * MINUTE) as f64 / f64::from(capacity),
                    });
                }
            }
            let per_seat = self.slots[slots[0]].per_seat;
            let mean = per_seat * self.scenario.pace * self.rng.log_normal(1.0, 0.2);
            self.doctors.push(SimDoctor {
                id: DoctorId::parse(plan.doctor).expect("a valid doctor id"),
                slots,
                mean,
                busy: false,
            });
        }
    }

    /// The evening before: booked patients, in random order across slots,
    /// and when (or whether) each of them turns up.
    fn book_ahead(&mut self) {
        let mut wanted = Vec::new();
        for slot in 0..self.slots.len() {
            let capacity = self
                .engine
                .slot_summary(&self.slots[slot].id)
                .expect("the slot exists")
                .capacity;
            let count =
                (f64::from(capacity) * BOOKED_PER_SEAT * self.rng.between(0.8, 1.2)).round() as u32;
            wanted.extend((0..count).map(|_| slot));
        }
        // Fisher–Yates, so that no slot's bookings all come first.
        for index in (1..wanted.len()).rev() {
            let other = (self.rng.next() % (index as u64 + 1)) as usize;
            wanted.swap(index, other);
        }
        for slot in wanted {
            let source = self.rng.pick(&[
                (Source::Online, 0.55),
                (Source::FollowUp, 0.25),
                (Source::Paid, 0.20),
            ]);
            let token = self.book(slot, source);
            let start = self.slots[slot].start;
            if self.rng.chance(self.scenario.absent) {
                if self.rng.chance(0.25) {
                    let at = start - (self.rng.between(0.0, 120.0) * MINUTE as f64) as i64;
                    self.schedule(at.max(self.now + MINUTE), Event::Cancel(token));
                }
                continue;
            }
            let offset = if self.rng.chance(self.scenario.late) {
                self.rng.between(15.0, 75.0)
            } else {
                -10.0 + 10.0 * self.rng.normal()
            };
            let earliest = self.slots[slot].session_start - 60 * MINUTE;
            let at = (start + (offset * MINUTE as f64) as i64).max(earliest);
            self.schedule(at, Event::Arrive(token));
        }
    }

    /// Walk-ins and emergencies during each session, the no-show sweeps,
    /// and each doctor's first look at the queue.
    fn plan_the_day(&mut self) {
        for doctor in 0..self.doctors.len() {
            let slots = self.doctors[doctor].slots.clone();
            let first = self.slots[slots[0]].session_start;
            self.schedule(first, Event::Wake(doctor));
            let mut seats = 0.0;
            let mut windows = Vec::new();
            for &slot in &slots {
                let summary = self.engine.slot_summary(&self.slots[slot].id).unwrap();
                seats += f64::from(summary.capacity);
                let SimSlot { start, end, .. } = self.slots[slot];
                windows.push((start, end));
                self.schedule(end + NO_SHOW_AFTER_MINUTES * MINUTE, Event::Sweep(slot));
            }
            let walk_ins = self.rng.poisson(seats * WALK_INS_PER_SEAT);
            let emergencies = self.rng.poisson(self.scenario.emergencies);
            for (count, event) in [
                (walk_ins, Event::WalkIn(doctor)),
                (emergencies, Event::Emergency(doctor)),
            ] {
                for _ in 0..count {
                    let (start, end) = windows[(self.rng.next() % windows.len() as u64) as usize];
                    let at = self.rng.between(start as f64, end as f64) as i64;
                    self.schedule(at, event);
                }
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Arrive(token) => {
                let status = self.status(token);
                if matches!(status, Status::Allocated | Status::Waitlisted) {
                    self.act(token, Action::CheckIn);
                    self.checked_in(token);
                }
            }
            Event::Return(token) => {
                if self.status(token) == Status::Skipped {
                    self.act(token, Action::CheckIn);
                    self.checked_in(token);
                }
            }
            Event::Cancel(token) => {
                let outcome = self.act(token, Action::Cancel);
                self.after_promotions(self.slots[self.tokens[token].slot].doctor, &outcome);
            }
            Event::WalkIn(doctor) | Event::Emergency(doctor) => {
                let emergency = matches!(event, Event::Emergency(_));
                let slot = self.walk_in_slot(doctor, emergency);
                let source = if emergency {
                    Source::Emergency
                } else {
                    Source::WalkIn
                };
                let token = self.book(slot, source);
                self.act(token, Action::CheckIn);
                self.checked_in(token);
            }
            Event::Wake(doctor) => self.try_call(doctor),
            Event::Start(token) => {
                self.act(token, Action::Start);
                let doctor = self.slots[self.tokens[token].slot].doctor;
                let mut mean = self.doctors[doctor].mean;
                if self.tokens[token].emergency {
                    mean *= 1.5;
                }
                let length = self.rng.log_normal(mean, self.scenario.spread);
                self.schedule(self.now + length as i64, Event::Complete(token));
            }
            Event::Complete(token) => {
                self.act(token, Action::Complete);
                let doctor = self.slots[self.tokens[token].slot].doctor;
                self.doctors[doctor].busy = false;
                // A minute or less of notes before the next call.
                let gap = self.rng.between(0.0, 1.0);
                self.schedule(self.now + (gap * MINUTE as f64) as i64, Event::Wake(doctor));
            }
            Event::Skip(token) => {
                let outcome = self.act(token, Action::Skip);
                let doctor = self.slots[self.tokens[token].slot].doctor;
                self.doctors[doctor].busy = false;
                if outcome.token.status == Status::Skipped && self.rng.chance(RETURNS) {
                    let back = self.rng.between(5.0, 30.0);
                    self.schedule(
                        self.now + (back * MINUTE as f64) as i64,
                        Event::Return(token),
                    );
                }
                self.after_promotions(doctor, &outcome);
                self.try_call(doctor);
            }
            Event::Sweep(slot) => {
                let absent: Vec<Uuid> = self
                    .engine
                    .slot(&self.slots[slot].id, self.timestamp(self.now))
                    .expect("the slot exists")
                    .allocated
                    .iter()
                    .filter(|token| matches!(token.status, Status::Allocated | Status::Skipped))
                    .map(|token| token.id)
                    .collect();
                for id in absent {
                    let token = self.token_keys[&id];
                    let outcome = self.act(token, Action::NoShow);
                    self.after_promotions(self.slots[slot].doctor, &outcome);
                }
            }
        }
    }

    /// The slot a walk-in or an emergency is booked into: the earliest
    /// slot not yet ended with a free seat, else (the patient waits, or
    /// an emergency overbooks) the slot under way.
    fn walk_in_slot(&self, doctor: usize, emergency: bool) -> usize {
        let slots = &self.doctors[doctor].slots;
        let open: Vec<usize> = slots
            .iter()
            .copied()
            .filter(|slot| self.slots[*slot].end > self.now)
            .collect();
        let current = open.first().copied().unwrap_or(slots[slots.len() - 1]);
        if emergency {
            return current;
        }
        open.into_iter()
            .find(|slot| {
                self.engine
                    .slot_summary(&self.slots[*slot].id)
                    .expect("the slot exists")
                    .available()
                    > 0
            })
            .unwrap_or(current)
    }

    fn book(&mut self, slot: usize, source: Source) -> usize {
        let index = self.tokens.len();
        let id = Uuid::from_u128(index as u128 + 1);
        let ctx = self.context();
        self.engine
            .book(
                BookRequest {
                    token: id,
                    patient: PatientId::parse(&format!("P{index}")).expect("a valid patient id"),
                    slot: self.slots[slot].id.clone(),
                    source,
                },
                &ctx,
            )
            .expect("the limits leave room for every booking");
        self.tokens.push(SimToken {
            id,
            slot,
            emergency: source == Source::Emergency,
            calls: Vec::new(),
        });
        self.token_keys.insert(id, index);
        index
    }

    fn act(&mut self, token: usize, action: Action) -> Outcome {
        let ctx = self.context();
        self.engine
            .act(self.tokens[token].id, action, &ctx)
            .unwrap_or_else(|error| panic!("{} refused: {error}", action.as_str()))
    }

    fn status(&self, token: usize) -> Status {
        self.engine
            .token(self.tokens[token].id, self.timestamp(self.now))
            .expect("the token exists")
            .status
    }

    /// After a check-in: the patient reads the estimate, and the doctor,
    /// if free, calls.
    fn checked_in(&mut self, token: usize) {
        let doctor = self.slots[self.tokens[token].slot].doctor;
        if self.status(token) == Status::CheckedIn {
            self.observe(doctor, Some(token));
        }
        self.try_call(doctor);
    }

    /// A freed seat may have put a waiting patient in the hall into the
    /// call queue.
    fn after_promotions(&mut self, doctor: usize, outcome: &Outcome) {
        if outcome
            .changes
            .iter()
            .any(|change| change.to == Status::CheckedIn)
        {
            self.observe(doctor, None);
            self.try_call(doctor);
        }
    }

    /// Calls the next patient if the doctor is free and that patient's
    /// session has begun.
    fn try_call(&mut self, doctor: usize) {
        if self.doctors[doctor].busy {
            return;
        }
        let at = self.timestamp(self.now);
        let queue = self
            .engine
            .doctor_queue(&self.doctors[doctor].id, self.date, at)
            .expect("the doctor has slots");
        let Some(head) = queue.call_queue.first() else {
            return;
        };
        let session_start = self.slots[self.tokens[self.token_keys[&head.id]].slot].session_start;
        if self.now < session_start {
            self.schedule(session_start, Event::Wake(doctor));
            return;
        }
        let ctx = self.context();
        let outcome = self
            .engine
            .call_next(&self.doctors[doctor].id, &ctx)
            .expect("a free doctor with a queue calls");
        let token = self.token_keys[&outcome.token.id];
        self.tokens[token].calls.push(self.now);
        self.doctors[doctor].busy = true;
        self.observe(doctor, None);
        if !self.tokens[token].emergency && self.rng.chance(self.scenario.away) {
            let wait = self.rng.between(2.0, 4.0);
            self.schedule(self.now + (wait * MINUTE as f64) as i64, Event::Skip(token));
        } else {
            let walk = self.rng.between(0.5, 1.5);
            self.schedule(
                self.now + (walk * MINUTE as f64) as i64,
                Event::Start(token),
            );
        }
    }

    /// Records the estimate of every checked-in token of the doctor.
    fn observe(&mut self, doctor: usize, checked_in: Option<usize>) {
        let at = self.timestamp(self.now);
        let queue = self
            .engine
            .doctor_queue(&self.doctors[doctor].id, self.date, at)
            .expect("the doctor has slots");
        for view in &queue.call_queue {
            let token = self.token_keys[&view.id];
            let observation = self.observation(token, view);
            self.observations.push(Observation {
                at_check_in: checked_in == Some(token),
                ..observation
            });
        }
    }

    fn observation(&self, token: usize, view: &TokenView) -> Observation {
        let position = view.queue_position.expect("a checked-in token has a place");
        let estimate = view
            .estimated_call_at
            .expect("a checked-in token has an estimate");
        let per_seat = self.slots[self.tokens[token].slot].per_seat;
        Observation {
            token,
            at: self.now,
            engine: self.millis(estimate),
            naive: self.now + (f64::from(position) * per_seat) as i64,
            at_check_in: false,
        }
    }

    /// Compares each estimate with the token's next call after it.
    /// Estimates of tokens never called again (a patient who left) have
    /// nothing to be compared with.
    fn tally(&self, tally: &mut Tally) {
        for observation in &self.observations {
            let calls = &self.tokens[observation.token].calls;
            let Some(&called) = calls.iter().find(|at| **at >= observation.at) else {
                continue;
            };
            let minutes = |estimate: i64| (estimate - called) as f64 / MINUTE as f64;
            let (engine, naive) = (minutes(observation.engine), minutes(observation.naive));
            tally.every.engine.push(engine);
            tally.every.naive.push(naive);
            if observation.at_check_in {
                tally.at_check_in.engine.push(engine);
                tally.at_check_in.naive.push(naive);
            }
        }
    }
}

fn time_of(at: i64) -> Time {
    let minutes = at / MINUTE;
    Time::new((minutes / 60) as i8, (minutes % 60) as i8, 0, 0).expect("a time of day")
}
