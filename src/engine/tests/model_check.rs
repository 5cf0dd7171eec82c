//! Model-based property test: random operation sequences run against the
//! engine and against a deliberately naive reference that keeps plain
//! vectors and sorts them on every step. After every step both must agree
//! exactly, and every invariant must hold. The reference spells out each
//! status's properties on its own, so that it does not share the engine's
//! definitions.

use super::*;
use proptest::prelude::*;

const SLOTS: [(&str, &str); 3] = [("A1", "DA"), ("A2", "DA"), ("B1", "DB")];
const WAITLIST_MAX: u32 = 4;
const OVERBOOK_MAX: u32 = 2;
const MAX_SKIPS: u8 = 2;
const DOCTORS: [&str; 2] = ["DA", "DB"];

fn day(shifted: bool) -> Date {
    if shifted {
        date(2030, 1, 3)
    } else {
        date(2030, 1, 2)
    }
}

fn seated(status: Status) -> bool {
    use Status::*;
    matches!(
        status,
        Allocated | CheckedIn | Called | InConsultation | Skipped | Completed
    )
}

fn active(status: Status) -> bool {
    use Status::*;
    !matches!(status, Completed | Cancelled | NoShow | Expired)
}

#[derive(Debug, Clone)]
enum Op {
    Book {
        patient: u8,
        slot: usize,
        source: Source,
    },
    Act {
        pick: usize,
        action: Action,
    },
    /// An action on the token acted on last, so that a token goes
    /// through long chains (check-in, call, skip, return, call, skip).
    Again {
        action: Action,
    },
    CallNext {
        doctor: usize,
    },
    /// Moves "today" to the slots' date or the day after.
    Today {
        shifted: bool,
    },
    Capacity {
        slot: usize,
        capacity: u32,
    },
    /// Closes a slot at once.
    Close {
        slot: usize,
    },
    /// The doctor is absent on the slots' date, or on the day after
    /// (which has no slot).
    Absence {
        doctor: usize,
        shifted: bool,
    },
    /// Moves the clock on to one of the day's deadlines (a slot's closing
    /// time, or the end of the day) if it is still ahead, and does what
    /// fell due.
    Tick {
        deadline: usize,
    },
}

/// How long after its end a slot closes in the model.
const CLOSE_AFTER_MINUTES: i64 = 30;

/// The day's deadlines: each slot's closing time (its end, 10:00 + slot
/// index hours, plus 30 minutes), then the end of the day.
fn deadlines() -> [Timestamp; 4] {
    let at = |text: &str| text.parse::<Timestamp>().unwrap();
    [
        at("2030-01-02T10:30:00Z"),
        at("2030-01-02T11:30:00Z"),
        at("2030-01-02T12:30:00Z"),
        at("2030-01-03T00:00:00Z"),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let source = proptest::sample::select(Source::ALL.to_vec());
    let action = proptest::sample::select(Action::ALL.to_vec());
    prop_oneof![
        6 => (0u8..10, 0..SLOTS.len(), source).prop_map(|(patient, slot, source)| Op::Book { patient, slot, source }),
        5 => (any::<usize>(), action.clone()).prop_map(|(pick, action)| Op::Act { pick, action }),
        5 => action.prop_map(|action| Op::Again { action }),
        2 => (0..DOCTORS.len()).prop_map(|doctor| Op::CallNext { doctor }),
        1 => (0..SLOTS.len(), 0u32..6).prop_map(|(slot, capacity)| Op::Capacity { slot, capacity }),
        1 => proptest::bool::weighted(0.3).prop_map(|shifted| Op::Today { shifted }),
        1 => (0..SLOTS.len()).prop_map(|slot| Op::Close { slot }),
        1 => (0..DOCTORS.len(), proptest::bool::weighted(0.1))
            .prop_map(|(doctor, shifted)| Op::Absence { doctor, shifted }),
        1 => (0..4usize).prop_map(|deadline| Op::Tick { deadline }),
    ]
}

#[derive(Debug, Clone)]
struct RefToken {
    id: Uuid,
    sequence: u64,
    number: u32,
    patient: u8,
    slot: usize,
    source: Source,
    status: Status,
    checked_in: bool,
    skips: u8,
}

impl RefToken {
    fn key(&self) -> (u8, u64) {
        (self.source.priority().get(), self.sequence)
    }

    /// Not called yet, so a booking or a cut may move it.
    fn bumpable(&self) -> bool {
        matches!(self.status, Status::Allocated | Status::CheckedIn) && self.skips == 0
    }

    /// Bump order: the largest is the victim.
    fn bump_key(&self) -> (u8, bool, u64) {
        (
            self.source.priority().get(),
            self.status == Status::Allocated,
            self.sequence,
        )
    }

    /// Call order: emergencies, slot start (slots start in index order
    /// within a doctor), priority, arrival.
    fn call_key(&self) -> (bool, usize, u8, u64) {
        (
            self.source != Source::Emergency,
            self.slot,
            self.source.priority().get(),
            self.sequence,
        )
    }
}

/// The reference: every query is a filter and a sort over all tokens.
#[derive(Debug)]
struct Reference {
    capacity: Vec<u32>,
    tokens: Vec<RefToken>,
    numbers: HashMap<&'static str, u32>,
    today: Date,
    closed: Vec<bool>,
    day_ended: bool,
    now: Timestamp,
}

/// A token change as both sides report it: (token, from, to, reason).
type Changes = Vec<(Uuid, Status, Status, Reason)>;

/// What one step produced, in a form both sides can be compared in.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Refused(String),
    Acted {
        token: Uuid,
        status: Status,
        position: Option<u32>,
        number: u32,
        queue_position: Option<u32>,
        decision: Option<Decision>,
        changes: Vec<(Uuid, Status, Status, Reason)>,
    },
    Resized(Vec<(Uuid, Status, Status, Reason)>),
    /// What a tick did: per slot changed, whether it was a closing, the
    /// slot and its token changes.
    Ticked(Vec<(bool, usize, Changes)>),
    /// What an absence did: per slot of the doctor, whether it closed
    /// it, the slot and its token changes.
    Absent(Vec<(bool, usize, Changes)>),
}

impl Reference {
    fn seats(&self, slot: usize) -> u32 {
        self.tokens
            .iter()
            .filter(|t| t.slot == slot && seated(t.status))
            .count() as u32
    }

    /// The doctor's checked-in tokens in call order.
    fn call_queue(&self, doctor: &str) -> Vec<usize> {
        let mut queue: Vec<usize> = (0..self.tokens.len())
            .filter(|&i| {
                SLOTS[self.tokens[i].slot].1 == doctor && self.tokens[i].status == Status::CheckedIn
            })
            .collect();
        queue.sort_by_key(|&i| self.tokens[i].call_key());
        queue
    }

    fn queue_position(&self, index: usize) -> Option<u32> {
        let token = &self.tokens[index];
        (token.status == Status::CheckedIn).then(|| {
            let queue = self.call_queue(SLOTS[token.slot].1);
            queue.iter().position(|&i| i == index).unwrap() as u32 + 1
        })
    }

    fn with_doctor(&self, doctor: &str) -> Option<usize> {
        (0..self.tokens.len()).find(|&i| {
            SLOTS[self.tokens[i].slot].1 == doctor
                && matches!(
                    self.tokens[i].status,
                    Status::Called | Status::InConsultation
                )
        })
    }

    fn queue(&self, slot: usize, status: Status) -> Vec<usize> {
        let mut queue: Vec<usize> = (0..self.tokens.len())
            .filter(|&i| self.tokens[i].slot == slot && self.tokens[i].status == status)
            .collect();
        queue.sort_by_key(|&i| self.tokens[i].key());
        queue
    }

    fn position(&self, index: usize) -> Option<u32> {
        let token = &self.tokens[index];
        (token.status == Status::Waitlisted).then(|| {
            let queue = self.queue(token.slot, Status::Waitlisted);
            queue.iter().position(|&i| i == index).unwrap() as u32 + 1
        })
    }

    fn set(
        &mut self,
        index: usize,
        to: Status,
        reason: Reason,
        changes: &mut Vec<(Uuid, Status, Status, Reason)>,
    ) {
        let token = &mut self.tokens[index];
        changes.push((token.id, token.status, to, reason));
        token.status = to;
    }

    fn promote(&mut self, slot: usize, changes: &mut Vec<(Uuid, Status, Status, Reason)>) {
        while self.seats(slot) < self.capacity[slot] {
            let Some(&head) = self.queue(slot, Status::Waitlisted).first() else {
                break;
            };
            let to = if self.tokens[head].checked_in {
                Status::CheckedIn
            } else {
                Status::Allocated
            };
            self.set(head, to, Reason::Promoted, changes);
        }
    }

    /// The bump victim or demotion candidate: the largest bump key among
    /// the slot's bumpable tokens that pass `eligible`.
    fn victim(&self, slot: usize, eligible: impl Fn(&RefToken) -> bool) -> Option<usize> {
        (0..self.tokens.len())
            .filter(|&i| {
                let t = &self.tokens[i];
                t.slot == slot && t.bumpable() && eligible(t)
            })
            .max_by_key(|&i| self.tokens[i].bump_key())
    }

    /// Whether the slot takes no bookings or capacity changes: closed, or
    /// past its closing time.
    fn is_closed(&self, slot: usize) -> bool {
        self.closed[slot] || self.now >= deadlines()[slot]
    }

    fn close(&mut self, slot: usize) -> Vec<(Uuid, Status, Status, Reason)> {
        let mut changes = Vec::new();
        let mut seated: Vec<usize> = (0..self.tokens.len())
            .filter(|&i| self.tokens[i].slot == slot && seated(self.tokens[i].status))
            .collect();
        seated.sort_by_key(|&i| self.tokens[i].key());
        for i in seated {
            if matches!(self.tokens[i].status, Status::Allocated | Status::Skipped) {
                self.set(i, Status::NoShow, Reason::NoShow, &mut changes);
            }
        }
        while self.seats(slot) < self.capacity[slot] {
            let here = self
                .queue(slot, Status::Waitlisted)
                .into_iter()
                .find(|&i| self.tokens[i].checked_in);
            let Some(here) = here else {
                break;
            };
            self.set(here, Status::CheckedIn, Reason::Promoted, &mut changes);
        }
        for i in self.queue(slot, Status::Waitlisted) {
            self.set(i, Status::Expired, Reason::SlotClosed, &mut changes);
        }
        self.closed[slot] = true;
        changes
    }

    fn close_now(&mut self, slot: usize) -> Step {
        if self.closed[slot] {
            return Step::Refused("slot closed".into());
        }
        Step::Resized(self.close(slot))
    }

    /// The doctor's absence: each of the doctor's slots closes, and every
    /// active token but the one in consultation is cancelled, seat
    /// holders in service order, then the waitlist; nobody is promoted.
    fn absence(&mut self, doctor: usize, shifted: bool) -> Step {
        if shifted {
            return Step::Refused("no slot on the date".into());
        }
        let mut done = Vec::new();
        for (slot, (_, of)) in SLOTS.iter().enumerate() {
            if *of != DOCTORS[doctor] {
                continue;
            }
            let closed = !self.closed[slot];
            self.closed[slot] = true;
            let mut cancelled: Vec<usize> = (0..self.tokens.len())
                .filter(|&i| {
                    let t = &self.tokens[i];
                    t.slot == slot && active(t.status) && t.status != Status::InConsultation
                })
                .collect();
            cancelled.sort_by_key(|&i| {
                (
                    self.tokens[i].status == Status::Waitlisted,
                    self.tokens[i].key(),
                )
            });
            let mut changes = Vec::new();
            for i in cancelled {
                self.set(i, Status::Cancelled, Reason::DoctorAbsent, &mut changes);
            }
            done.push((closed, slot, changes));
        }
        Step::Absent(done)
    }

    fn tick(&mut self) -> Step {
        let mut done = Vec::new();
        for slot in 0..SLOTS.len() {
            if !self.closed[slot] && self.now >= deadlines()[slot] {
                done.push((true, slot, self.close(slot)));
            }
        }
        if !self.day_ended && self.now >= deadlines()[3] {
            self.day_ended = true;
            for slot in 0..SLOTS.len() {
                let mut active: Vec<usize> = (0..self.tokens.len())
                    .filter(|&i| self.tokens[i].slot == slot && active(self.tokens[i].status))
                    .collect();
                // Seat holders in service order, then the waitlist.
                active.sort_by_key(|&i| {
                    (
                        self.tokens[i].status == Status::Waitlisted,
                        self.tokens[i].key(),
                    )
                });
                let mut changes = Vec::new();
                for i in active {
                    use Status::*;
                    let to = match self.tokens[i].status {
                        InConsultation => Completed,
                        Allocated | Skipped => NoShow,
                        _ => Expired,
                    };
                    self.set(i, to, Reason::DayEnded, &mut changes);
                }
                if !changes.is_empty() {
                    done.push((false, slot, changes));
                }
            }
        }
        Step::Ticked(done)
    }

    fn book(&mut self, id: Uuid, sequence: u64, patient: u8, slot: usize, source: Source) -> Step {
        if self.is_closed(slot) {
            return Step::Refused("slot closed".into());
        }
        let holder = self
            .tokens
            .iter()
            .find(|t| t.slot == slot && t.patient == patient && active(t.status));
        if let Some(holder) = holder {
            return Step::Refused(format!("duplicate {}", holder.id));
        }
        let seats = self.seats(slot);
        let waiting = self.queue(slot, Status::Waitlisted).len() as u32;
        let priority = source.priority().get();
        let victim = self.victim(slot, |t| t.source.priority().get() > priority);
        let decision = if seats < self.capacity[slot] {
            Decision::Allocated
        } else if source == Source::Emergency {
            Decision::Overbooked
        } else if victim.is_some() {
            Decision::BumpedLower
        } else {
            Decision::Waitlisted
        };
        if matches!(decision, Decision::BumpedLower | Decision::Waitlisted)
            && waiting >= WAITLIST_MAX
        {
            return Step::Refused("waitlist full".into());
        }
        if decision == Decision::Overbooked && seats >= self.capacity[slot] + OVERBOOK_MAX {
            return Step::Refused("overbooking full".into());
        }
        let mut changes = Vec::new();
        if decision == Decision::BumpedLower {
            self.set(
                victim.unwrap(),
                Status::Waitlisted,
                Reason::Bumped,
                &mut changes,
            );
        }
        let number = self.numbers.entry(SLOTS[slot].1).or_default();
        *number += 1;
        self.tokens.push(RefToken {
            id,
            sequence,
            number: *number,
            patient,
            slot,
            source,
            status: decision.status(),
            checked_in: false,
            skips: 0,
        });
        self.acted(self.tokens.len() - 1, Some(decision), changes)
    }

    fn act(&mut self, index: usize, action: Action) -> Step {
        use Status::*;
        let token = &self.tokens[index];
        let (to, reason) = match (action, token.status) {
            (Action::CheckIn, Allocated) => (CheckedIn, Reason::CheckedIn),
            (Action::CheckIn, Waitlisted) if !token.checked_in => (Waitlisted, Reason::CheckedIn),
            (Action::CheckIn, Skipped) => (CheckedIn, Reason::Returned),
            (Action::Call, CheckedIn) => (Called, Reason::Called),
            (Action::Start, Called) => (InConsultation, Reason::Started),
            (Action::Complete, InConsultation) => (Completed, Reason::Completed),
            (Action::Skip, Called) if token.skips + 1 >= MAX_SKIPS => (NoShow, Reason::NoShow),
            (Action::Skip, Called) => (Skipped, Reason::Skipped),
            (Action::Cancel, Allocated | Waitlisted | CheckedIn | Called | Skipped) => {
                (Cancelled, Reason::Cancelled)
            }
            (Action::NoShow, Allocated | Called | Skipped) => (NoShow, Reason::NoShow),
            (_, from) => return Step::Refused(format!("invalid {from:?} {action:?}")),
        };
        if matches!(action, Action::CheckIn | Action::Call | Action::NoShow)
            && self.today != day(false)
        {
            return Step::Refused("not today".into());
        }
        if to == Called {
            if let Some(busy) = self.with_doctor(SLOTS[token.slot].1) {
                return Step::Refused(format!("busy {}", self.tokens[busy].id));
            }
        }
        let slot = token.slot;
        let token = &mut self.tokens[index];
        if reason == Reason::CheckedIn {
            token.checked_in = true;
        }
        if action == Action::Skip {
            token.skips += 1;
        }
        token.status = to;
        let mut changes = Vec::new();
        self.promote(slot, &mut changes);
        self.acted(index, None, changes)
    }

    fn call_next(&mut self, doctor: usize) -> Step {
        let doctor = DOCTORS[doctor];
        if self.today != day(false) {
            return Step::Refused("queue empty".into());
        }
        if let Some(busy) = self.with_doctor(doctor) {
            return Step::Refused(format!("busy {}", self.tokens[busy].id));
        }
        match self.call_queue(doctor).first() {
            Some(&first) => self.act(first, Action::Call),
            None => Step::Refused("queue empty".into()),
        }
    }

    fn resize(&mut self, slot: usize, capacity: u32) -> Step {
        if self.is_closed(slot) {
            return Step::Refused("slot closed".into());
        }
        let non_emergency = self
            .tokens
            .iter()
            .filter(|t| t.slot == slot && t.bumpable() && t.source != Source::Emergency)
            .count() as u32;
        let demotions = self.seats(slot).saturating_sub(capacity).min(non_emergency);
        if self.queue(slot, Status::Waitlisted).len() as u32 + demotions > WAITLIST_MAX {
            return Step::Refused("waitlist full".into());
        }
        self.capacity[slot] = capacity;
        let mut changes = Vec::new();
        for _ in 0..demotions {
            let index = self
                .victim(slot, |t| t.source != Source::Emergency)
                .unwrap();
            self.set(
                index,
                Status::Waitlisted,
                Reason::CapacityReduced,
                &mut changes,
            );
        }
        self.promote(slot, &mut changes);
        Step::Resized(changes)
    }

    fn acted(
        &self,
        index: usize,
        decision: Option<Decision>,
        changes: Vec<(Uuid, Status, Status, Reason)>,
    ) -> Step {
        let token = &self.tokens[index];
        Step::Acted {
            token: token.id,
            status: token.status,
            position: self.position(index),
            number: token.number,
            queue_position: self.queue_position(index),
            decision,
            changes,
        }
    }
}

fn engine_step(outcome: Result<Outcome, EngineError>) -> Step {
    match outcome {
        Ok(outcome) => Step::Acted {
            token: outcome.token.id,
            status: outcome.token.status,
            position: outcome.token.waitlist_position,
            number: outcome.token.number,
            queue_position: outcome.token.queue_position,
            decision: outcome.decision(),
            changes: changes_of(&outcome.changes),
        },
        Err(error) => Step::Refused(refusal(&error)),
    }
}

fn changes_of(changes: &[Change]) -> Vec<(Uuid, Status, Status, Reason)> {
    changes
        .iter()
        .map(|c| (c.token, c.from, c.to, c.reason))
        .collect()
}

/// The reference's wording for a refusal, so the two sides compare.
fn refusal(error: &EngineError) -> String {
    match error {
        EngineError::DuplicateBooking { existing } => format!("duplicate {existing}"),
        EngineError::WaitlistFull { .. } => "waitlist full".into(),
        EngineError::OverbookFull { .. } => "overbooking full".into(),
        EngineError::InvalidTransition { from, action } => format!("invalid {from:?} {action:?}"),
        EngineError::NotToday { .. } => "not today".into(),
        EngineError::DoctorBusy { current } => format!("busy {current}"),
        EngineError::QueueEmpty => "queue empty".into(),
        EngineError::SlotClosed { .. } => "slot closed".into(),
        EngineError::NoSlotOnDate { .. } => "no slot on the date".into(),
        other => panic!("unexpected refusal {other:?}"),
    }
}

fn run(ops: Vec<Op>, capacities: [u32; 3]) -> Result<(), TestCaseError> {
    let mut engine = Engine::new(Limits {
        waitlist_max: WAITLIST_MAX,
        overbook_max: OVERBOOK_MAX,
        max_skips: MAX_SKIPS,
        close_after: Some(jiff::SignedDuration::from_mins(CLOSE_AFTER_MINUTES)),
    });
    for (slot, (id, doctor)) in SLOTS.iter().enumerate() {
        let hour = 9 + slot as i8;
        engine
            .create_slot(SlotSpec {
                id: slot_id(id),
                doctor: DoctorId::parse(doctor).unwrap(),
                date: date(2030, 1, 2),
                start: jiff::civil::time(hour, 0, 0, 0),
                end: jiff::civil::time(hour + 1, 0, 0, 0),
                capacity: Capacity::new(capacities[slot]).unwrap(),
            })
            .unwrap();
    }
    let mut reference = Reference {
        capacity: capacities.to_vec(),
        tokens: Vec::new(),
        numbers: HashMap::default(),
        today: day(false),
        closed: vec![false; SLOTS.len()],
        day_ended: false,
        now: Timestamp::from_second(1_893_571_200).unwrap(),
    };
    let mut ctx = Context {
        at: reference.now,
        actor: "model".into(),
        today: day(false),
    };
    let mut next_sequence = 1;
    let mut last = None;
    let ids = |tokens: &[TokenView]| tokens.iter().map(|t| t.id).collect::<Vec<_>>();
    for op in ops {
        let (expected, actual) = match op {
            Op::Book {
                patient,
                slot,
                source,
            } => {
                let id = Uuid::from_u128(next_sequence as u128);
                let expected = reference.book(id, next_sequence, patient, slot, source);
                let request = BookRequest {
                    token: id,
                    patient: PatientId::parse(&format!("P{patient}")).unwrap(),
                    slot: slot_id(SLOTS[slot].0),
                    source,
                };
                let actual = engine_step(engine.book(request, &ctx));
                if matches!(actual, Step::Acted { .. }) {
                    next_sequence += 1;
                }
                (expected, actual)
            }
            Op::Again { action } if last.is_some() => {
                let index = last.unwrap();
                let expected = reference.act(index, action);
                let actual = engine_step(engine.act(reference.tokens[index].id, action, &ctx));
                (expected, actual)
            }
            Op::Again { .. } => continue,
            Op::Act { pick, action } if !reference.tokens.is_empty() => {
                let index = pick % reference.tokens.len();
                last = Some(index);
                let expected = reference.act(index, action);
                let actual = engine_step(engine.act(reference.tokens[index].id, action, &ctx));
                (expected, actual)
            }
            Op::Act { .. } => continue,
            Op::CallNext { doctor } => {
                let expected = reference.call_next(doctor);
                let doctor = DoctorId::parse(DOCTORS[doctor]).unwrap();
                (expected, engine_step(engine.call_next(&doctor, &ctx)))
            }
            Op::Today { shifted } => {
                reference.today = day(shifted);
                ctx.today = day(shifted);
                continue;
            }
            Op::Capacity { slot, capacity } => {
                let expected = reference.resize(slot, capacity);
                let actual = match engine.set_capacity(
                    &slot_id(SLOTS[slot].0),
                    Capacity::new(capacity).unwrap(),
                    &ctx,
                ) {
                    Ok(outcome) => Step::Resized(changes_of(&outcome.changes)),
                    Err(error) => Step::Refused(refusal(&error)),
                };
                (expected, actual)
            }
            Op::Close { slot } => {
                let expected = reference.close_now(slot);
                let actual = match engine.close_slot(&slot_id(SLOTS[slot].0), &ctx) {
                    Ok(outcome) => Step::Resized(changes_of(&outcome.changes)),
                    Err(error) => Step::Refused(refusal(&error)),
                };
                (expected, actual)
            }
            Op::Absence { doctor, shifted } => {
                let expected = reference.absence(doctor, shifted);
                let slot_index =
                    |id: &SlotId| SLOTS.iter().position(|(s, _)| *s == id.as_str()).unwrap();
                let doctor = DoctorId::parse(DOCTORS[doctor]).unwrap();
                let actual = match engine.declare_absence(&doctor, day(shifted), &ctx) {
                    Ok(absence) => {
                        let in_consultation = reference
                            .with_doctor(doctor.as_str())
                            .filter(|&i| reference.tokens[i].status == Status::InConsultation)
                            .map(|i| reference.tokens[i].id);
                        prop_assert_eq!(absence.in_consultation.map(|t| t.id), in_consultation);
                        Step::Absent(
                            absence
                                .slots
                                .iter()
                                .map(|part| {
                                    (
                                        part.closed,
                                        slot_index(&part.outcome.slot.id),
                                        changes_of(&part.outcome.changes),
                                    )
                                })
                                .collect(),
                        )
                    }
                    Err(error) => Step::Refused(refusal(&error)),
                };
                (expected, actual)
            }
            Op::Tick { deadline } => {
                ctx.at = ctx.at.max(deadlines()[deadline]);
                reference.now = ctx.at;
                let expected = reference.tick();
                let slot_index =
                    |id: &SlotId| SLOTS.iter().position(|(s, _)| *s == id.as_str()).unwrap();
                let actual = Step::Ticked(
                    engine
                        .tick(&ctx)
                        .into_iter()
                        .map(|timed| match timed {
                            Timed::Closed(o) => {
                                (true, slot_index(&o.slot.id), changes_of(&o.changes))
                            }
                            Timed::DayEnded(o) => {
                                (false, slot_index(&o.slot.id), changes_of(&o.changes))
                            }
                        })
                        .collect(),
                );
                (expected, actual)
            }
        };
        prop_assert_eq!(&actual, &expected);
        ctx.at += jiff::SignedDuration::from_secs(97);
        reference.now = ctx.at;
        engine
            .check_invariants()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (slot, (id, _)) in SLOTS.iter().enumerate() {
            let detail = engine.slot(&slot_id(id), ctx.at).unwrap();
            let reference_ids = |status| {
                reference
                    .queue(slot, status)
                    .into_iter()
                    .map(|i| reference.tokens[i].id)
                    .collect::<Vec<_>>()
            };
            let mut seated_ids: Vec<usize> = (0..reference.tokens.len())
                .filter(|&i| reference.tokens[i].slot == slot && seated(reference.tokens[i].status))
                .collect();
            seated_ids.sort_by_key(|&i| reference.tokens[i].key());
            let seated_ids: Vec<Uuid> =
                seated_ids.iter().map(|&i| reference.tokens[i].id).collect();
            prop_assert_eq!(ids(&detail.allocated), seated_ids);
            prop_assert_eq!(ids(&detail.waitlist), reference_ids(Status::Waitlisted));
            prop_assert_eq!(detail.summary.capacity, reference.capacity[slot]);
            prop_assert_eq!(detail.summary.closed, reference.closed[slot]);
            let positions: Vec<_> = detail
                .waitlist
                .iter()
                .map(|t| t.waitlist_position.unwrap())
                .collect();
            prop_assert_eq!(
                positions,
                (1..=detail.waitlist.len() as u32).collect::<Vec<_>>()
            );
        }
        for doctor in DOCTORS {
            let queue = engine
                .doctor_queue(&DoctorId::parse(doctor).unwrap(), day(false), ctx.at)
                .unwrap();
            let expected: Vec<Uuid> = reference
                .call_queue(doctor)
                .iter()
                .map(|&i| reference.tokens[i].id)
                .collect();
            prop_assert_eq!(ids(&queue.call_queue), expected);
            prop_assert_eq!(
                queue.current.map(|t| t.id),
                reference
                    .with_doctor(doctor)
                    .map(|i| reference.tokens[i].id)
            );
            let mut previous = None;
            for (position, token) in queue.call_queue.iter().enumerate() {
                prop_assert_eq!(token.queue_position, Some(position as u32 + 1));
                let estimate = token.estimated_call_at.unwrap();
                // Never earlier for a token later in call order, and never
                // before the slot starts.
                prop_assert!(previous.is_none_or(|previous| previous <= estimate));
                let slot = engine.slot_summary(&token.slot).unwrap();
                let start = slot
                    .date
                    .to_datetime(slot.start)
                    .to_zoned(jiff::tz::TimeZone::UTC)
                    .unwrap();
                prop_assert!(estimate >= start.timestamp());
                previous = Some(estimate);
            }
        }
    }
    prop_assert_eq!(engine.token_count(), reference.tokens.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_naive_reference(
        ops in proptest::collection::vec(op(), 1..120),
        capacities in [0u32..4, 0u32..4, 0u32..4],
    ) {
        run(ops, capacities)?;
    }
}
