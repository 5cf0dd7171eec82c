//! Model-based property test: random operation sequences run against the
//! engine and against a deliberately naive reference that keeps plain
//! vectors and sorts them on every step. After every step both must agree
//! exactly, and every invariant must hold.

use super::*;
use proptest::prelude::*;

const SLOTS: [(&str, &str); 3] = [("A1", "DA"), ("A2", "DA"), ("B1", "DB")];
const WAITLIST_MAX: u32 = 4;
const OVERBOOK_MAX: u32 = 2;

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
    Capacity {
        slot: usize,
        capacity: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let source = proptest::sample::select(Source::ALL.to_vec());
    let action = prop_oneof![Just(Action::Cancel), Just(Action::NoShow)];
    prop_oneof![
        6 => (0u8..10, 0..SLOTS.len(), source).prop_map(|(patient, slot, source)| Op::Book { patient, slot, source }),
        3 => (any::<usize>(), action).prop_map(|(pick, action)| Op::Act { pick, action }),
        1 => (0..SLOTS.len(), 0u32..6).prop_map(|(slot, capacity)| Op::Capacity { slot, capacity }),
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
}

impl RefToken {
    fn key(&self) -> (u8, u64) {
        (self.source.priority().get(), self.sequence)
    }
}

/// The reference: every query is a filter and a sort over all tokens.
#[derive(Debug)]
struct Reference {
    capacity: Vec<u32>,
    tokens: Vec<RefToken>,
    numbers: HashMap<&'static str, u32>,
}

/// What one step produced, in a form both sides can be compared in.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Refused(String),
    Acted {
        token: Uuid,
        status: Status,
        position: Option<u32>,
        number: u32,
        decision: Option<Decision>,
        changes: Vec<(Uuid, Status, Status, Reason)>,
    },
    Resized(Vec<(Uuid, Status, Status, Reason)>),
}

impl Reference {
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
        while (self.queue(slot, Status::Allocated).len() as u32) < self.capacity[slot] {
            let Some(&head) = self.queue(slot, Status::Waitlisted).first() else {
                break;
            };
            self.set(head, Status::Allocated, Reason::Promoted, changes);
        }
    }

    fn book(&mut self, id: Uuid, sequence: u64, patient: u8, slot: usize, source: Source) -> Step {
        let holder = self
            .tokens
            .iter()
            .find(|t| t.slot == slot && t.patient == patient && t.status.is_active());
        if let Some(holder) = holder {
            return Step::Refused(format!("duplicate {}", holder.id));
        }
        let allocated = self.queue(slot, Status::Allocated);
        let waiting = self.queue(slot, Status::Waitlisted).len() as u32;
        let priority = source.priority().get();
        let victim = allocated
            .iter()
            .copied()
            .filter(|&i| self.tokens[i].source.priority().get() > priority)
            .max_by_key(|&i| self.tokens[i].key());
        let decision = if (allocated.len() as u32) < self.capacity[slot] {
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
        if decision == Decision::Overbooked
            && allocated.len() as u32 >= self.capacity[slot] + OVERBOOK_MAX
        {
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
        });
        self.acted(self.tokens.len() - 1, Some(decision), changes)
    }

    fn act(&mut self, index: usize, action: Action) -> Step {
        let token = &self.tokens[index];
        let allowed = match action {
            Action::Cancel => token.status.is_active(),
            Action::NoShow => token.status == Status::Allocated,
        };
        if !allowed {
            return Step::Refused(format!("invalid {:?} {:?}", token.status, action));
        }
        let to = match action {
            Action::Cancel => Status::Cancelled,
            Action::NoShow => Status::NoShow,
        };
        let slot = token.slot;
        self.tokens[index].status = to;
        let mut changes = Vec::new();
        self.promote(slot, &mut changes);
        self.acted(index, None, changes)
    }

    fn resize(&mut self, slot: usize, capacity: u32) -> Step {
        let allocated = self.queue(slot, Status::Allocated);
        let non_emergency = allocated
            .iter()
            .filter(|&&i| self.tokens[i].source != Source::Emergency)
            .count() as u32;
        let demotions = (allocated.len() as u32)
            .saturating_sub(capacity)
            .min(non_emergency);
        if self.queue(slot, Status::Waitlisted).len() as u32 + demotions > WAITLIST_MAX {
            return Step::Refused("waitlist full".into());
        }
        self.capacity[slot] = capacity;
        let mut changes = Vec::new();
        for index in allocated.into_iter().rev().take(demotions as usize) {
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
        other => panic!("unexpected refusal {other:?}"),
    }
}

fn run(ops: Vec<Op>, capacities: [u32; 3]) -> Result<(), TestCaseError> {
    let mut engine = Engine::new(Limits {
        waitlist_max: WAITLIST_MAX,
        overbook_max: OVERBOOK_MAX,
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
    };
    let ctx = Context {
        at: Timestamp::UNIX_EPOCH,
        actor: "model".into(),
    };
    let mut next_sequence = 1;
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
            Op::Act { pick, action } if !reference.tokens.is_empty() => {
                let index = pick % reference.tokens.len();
                let expected = reference.act(index, action);
                let actual = engine_step(engine.act(reference.tokens[index].id, action, &ctx));
                (expected, actual)
            }
            Op::Act { .. } => continue,
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
        };
        prop_assert_eq!(&actual, &expected);
        engine
            .check_invariants()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (slot, (id, _)) in SLOTS.iter().enumerate() {
            let detail = engine.slot(&slot_id(id)).unwrap();
            let ids = |tokens: &[TokenView]| tokens.iter().map(|t| t.id).collect::<Vec<_>>();
            let reference_ids = |status| {
                reference
                    .queue(slot, status)
                    .into_iter()
                    .map(|i| reference.tokens[i].id)
                    .collect::<Vec<_>>()
            };
            prop_assert_eq!(ids(&detail.allocated), reference_ids(Status::Allocated));
            prop_assert_eq!(ids(&detail.waitlist), reference_ids(Status::Waitlisted));
            prop_assert_eq!(detail.summary.capacity, reference.capacity[slot]);
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
