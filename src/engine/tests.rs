//! Engine tests: one behaviour per test, through one small fixture, plus a
//! model-based property test against a deliberately naive reference.

use super::*;
use jiff::civil::{date, Date};
use jiff::Timestamp;

mod model_check;

/// A fresh engine with slots, driven by short calls. Token ids are derived
/// from a counter so runs are deterministic.
struct Fixture {
    engine: Engine,
    next_id: u128,
    clock: i64,
}

fn slot_id(raw: &str) -> SlotId {
    SlotId::parse(raw).unwrap()
}

fn patient(raw: &str) -> PatientId {
    PatientId::parse(raw).unwrap()
}

impl Fixture {
    /// One slot `S` of doctor `D` with the given capacity.
    fn with_slot(capacity: u32) -> Fixture {
        Fixture::with_limits(capacity, Limits::default())
    }

    fn with_limits(capacity: u32, limits: Limits) -> Fixture {
        let mut fixture = Fixture {
            engine: Engine::new(limits),
            next_id: 1,
            clock: 1_700_000_000,
        };
        fixture
            .add_slot("S", "D", "09:00", "10:00", capacity)
            .unwrap();
        fixture
    }

    fn add_slot(
        &mut self,
        id: &str,
        doctor: &str,
        start: &str,
        end: &str,
        capacity: u32,
    ) -> Result<SlotSummary, EngineError> {
        self.engine.create_slot(SlotSpec {
            id: slot_id(id),
            doctor: DoctorId::parse(doctor).unwrap(),
            date: date(2030, 1, 2),
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
            capacity: Capacity::new(capacity).unwrap(),
        })
    }

    fn ctx(&mut self) -> Context {
        self.clock += 60;
        Context {
            at: Timestamp::from_second(self.clock).unwrap(),
            actor: "desk".into(),
            today: date(2030, 1, 2),
        }
    }

    fn try_book_in(
        &mut self,
        slot: &str,
        who: &str,
        source: Source,
    ) -> Result<Outcome, EngineError> {
        let token = Uuid::from_u128(self.next_id);
        let request = BookRequest {
            token,
            patient: patient(who),
            slot: slot_id(slot),
            source,
        };
        let ctx = self.ctx();
        let outcome = self.engine.book(request, &ctx);
        if outcome.is_ok() {
            self.next_id += 1;
        }
        outcome
    }

    fn book(&mut self, who: &str, source: Source) -> Outcome {
        self.try_book_in("S", who, source).unwrap()
    }

    fn act(&mut self, token: Uuid, action: Action) -> Result<Outcome, EngineError> {
        let ctx = self.ctx();
        self.engine.act(token, action, &ctx)
    }

    fn set_capacity(&mut self, capacity: u32) -> Result<SlotOutcome, EngineError> {
        let ctx = self.ctx();
        self.engine
            .set_capacity(&slot_id("S"), Capacity::new(capacity).unwrap(), &ctx)
    }

    /// The ids of one page of slots, and whether more follow.
    fn list(
        &self,
        doctor: Option<&str>,
        date: Option<Date>,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<String>, bool) {
        let page = self
            .engine
            .slots(&SlotQuery {
                doctor: doctor.map(|doctor| DoctorId::parse(doctor).unwrap()),
                date,
                after: after.map(slot_id),
                limit,
            })
            .unwrap();
        let ids = page.slots.iter().map(|s| s.id.to_string()).collect();
        (ids, page.more)
    }

    /// The slot's allocated and waitlisted patients, in queue order.
    fn queues(&self) -> (Vec<String>, Vec<String>) {
        let detail = self
            .engine
            .slot(&slot_id("S"), Timestamp::UNIX_EPOCH)
            .unwrap();
        let names = |tokens: &[TokenView]| tokens.iter().map(|t| t.patient.to_string()).collect();
        (names(&detail.allocated), names(&detail.waitlist))
    }

    fn check(&self, allocated: &[&str], waitlist: &[&str]) {
        let (actual_allocated, actual_waitlist) = self.queues();
        assert_eq!(actual_allocated, allocated, "allocated, in service order");
        assert_eq!(actual_waitlist, waitlist, "waitlist, in promotion order");
        self.engine.check_invariants().unwrap();
    }
}

fn reasons(changes: &[Change]) -> Vec<(String, Reason)> {
    changes
        .iter()
        .map(|c| (c.patient.to_string(), c.reason))
        .collect()
}

use Source::*;

#[test]
fn booking_with_free_seats_allocates() {
    let mut f = Fixture::with_slot(2);
    let outcome = f.book("P1", Online);
    assert_eq!(outcome.decision(), Some(Decision::Allocated));
    assert_eq!(outcome.token.status, Status::Allocated);
    assert_eq!(outcome.token.waitlist_position, None);
    assert_eq!(outcome.slot.available(), 1);
    assert!(outcome.changes.is_empty());
    f.check(&["P1"], &[]);
}

#[test]
fn full_slot_waitlists_equal_or_lower_priority() {
    let mut f = Fixture::with_slot(1);
    f.book("P1", Online);
    let equal = f.book("P2", Online);
    let lower = f.book("P3", WalkIn);
    assert_eq!(equal.decision(), Some(Decision::Waitlisted));
    assert_eq!(lower.decision(), Some(Decision::Waitlisted));
    assert_eq!(lower.token.waitlist_position, Some(2));
    f.check(&["P1"], &["P2", "P3"]);
}

#[test]
fn higher_priority_bumps_the_least_important_latest_arrival() {
    let mut f = Fixture::with_slot(3);
    f.book("P1", WalkIn);
    f.book("P2", Online);
    f.book("P3", WalkIn);
    let paid = f.book("P4", Paid);
    assert_eq!(paid.decision(), Some(Decision::BumpedLower));
    assert_eq!(reasons(&paid.changes), [("P3".to_string(), Reason::Bumped)]);
    assert_eq!(paid.changes[0].from, Status::Allocated);
    assert_eq!(paid.changes[0].to, Status::Waitlisted);
    f.check(&["P4", "P2", "P1"], &["P3"]);
}

#[test]
fn equal_priority_never_bumps() {
    let mut f = Fixture::with_slot(1);
    f.book("P1", Paid);
    assert_eq!(f.book("P2", Paid).decision(), Some(Decision::Waitlisted));
    f.check(&["P1"], &["P2"]);
}

#[test]
fn emergency_overbooks_and_never_bumps() {
    let mut f = Fixture::with_slot(1);
    f.book("P1", WalkIn);
    let emergency = f.book("E1", Emergency);
    assert_eq!(emergency.decision(), Some(Decision::Overbooked));
    assert!(emergency.changes.is_empty());
    assert!(emergency.slot.is_overbooked());
    assert_eq!(emergency.slot.overbooked_by(), 1);
    assert_eq!(emergency.slot.available(), 0);
    f.check(&["E1", "P1"], &[]);
}

#[test]
fn emergency_takes_a_free_seat_without_overbooking() {
    let mut f = Fixture::with_slot(1);
    assert_eq!(
        f.book("E1", Emergency).decision(),
        Some(Decision::Allocated)
    );
}

#[test]
fn emergencies_fill_a_slot_and_then_everyone_else_waits() {
    let mut f = Fixture::with_slot(1);
    f.book("E1", Emergency);
    assert_eq!(f.book("P1", Paid).decision(), Some(Decision::Waitlisted));
    f.check(&["E1"], &["P1"]);
}

#[test]
fn bumped_token_keeps_its_arrival_and_precedes_later_arrivals_of_its_priority() {
    let mut f = Fixture::with_slot(1);
    f.book("W1", WalkIn);
    f.book("W2", WalkIn);
    let paid = f.book("P1", Paid);
    assert_eq!(reasons(&paid.changes), [("W1".to_string(), Reason::Bumped)]);
    f.check(&["P1"], &["W1", "W2"]);
    let w1 = f
        .engine
        .token(paid.changes[0].token, Timestamp::UNIX_EPOCH)
        .unwrap();
    assert_eq!(w1.waitlist_position, Some(1));
}

#[test]
fn waitlist_orders_by_priority_then_arrival() {
    let mut f = Fixture::with_slot(1);
    f.book("E1", Emergency);
    for (who, source) in [
        ("W1", WalkIn),
        ("O1", Online),
        ("F1", FollowUp),
        ("O2", Online),
    ] {
        f.book(who, source);
    }
    f.check(&["E1"], &["F1", "O1", "O2", "W1"]);
    let detail = f.engine.slot(&slot_id("S"), Timestamp::UNIX_EPOCH).unwrap();
    let positions: Vec<_> = detail
        .waitlist
        .iter()
        .map(|t| t.waitlist_position)
        .collect();
    assert_eq!(positions, [Some(1), Some(2), Some(3), Some(4)]);
}

#[test]
fn cancelling_an_allocated_token_promotes_the_waitlist_head() {
    let mut f = Fixture::with_slot(1);
    let first = f.book("P1", Paid);
    f.book("W1", WalkIn);
    f.book("F1", FollowUp);
    let cancelled = f.act(first.token.id, Action::Cancel).unwrap();
    assert_eq!(cancelled.token.status, Status::Cancelled);
    assert_eq!(cancelled.transition.reason, Reason::Cancelled);
    assert_eq!(cancelled.decision(), None);
    assert_eq!(
        reasons(&cancelled.changes),
        [("F1".to_string(), Reason::Promoted)]
    );
    f.check(&["F1"], &["W1"]);
}

#[test]
fn cancelling_a_waitlisted_token_promotes_nobody_and_closes_the_gap() {
    let mut f = Fixture::with_slot(1);
    f.book("P1", Online);
    let waiting = f.book("W1", WalkIn);
    let last = f.book("W2", WalkIn);
    assert_eq!(last.token.waitlist_position, Some(2));
    let cancelled = f.act(waiting.token.id, Action::Cancel).unwrap();
    assert!(cancelled.changes.is_empty());
    assert_eq!(
        f.engine
            .token(last.token.id, Timestamp::UNIX_EPOCH)
            .unwrap()
            .waitlist_position,
        Some(1)
    );
    f.check(&["P1"], &["W2"]);
}

#[test]
fn freed_seats_absorb_overbooking_before_anyone_is_promoted() {
    let mut f = Fixture::with_slot(2);
    let p1 = f.book("P1", Online);
    let p2 = f.book("P2", Online);
    f.book("W1", WalkIn);
    f.book("E1", Emergency);
    let absorbed = f.act(p1.token.id, Action::Cancel).unwrap();
    assert!(absorbed.changes.is_empty());
    assert!(!absorbed.slot.is_overbooked());
    f.check(&["E1", "P2"], &["W1"]);
    let promoted = f.act(p2.token.id, Action::NoShow).unwrap();
    assert_eq!(
        reasons(&promoted.changes),
        [("W1".to_string(), Reason::Promoted)]
    );
    f.check(&["E1", "W1"], &[]);
}

#[test]
fn no_show_is_only_for_allocated_tokens() {
    let mut f = Fixture::with_slot(1);
    f.book("P1", Online);
    let waiting = f.book("W1", WalkIn);
    assert_eq!(
        f.act(waiting.token.id, Action::NoShow),
        Err(EngineError::InvalidTransition {
            from: Status::Waitlisted,
            action: Action::NoShow
        })
    );
    f.check(&["P1"], &["W1"]);
}

#[test]
fn terminal_tokens_never_change() {
    let mut f = Fixture::with_slot(1);
    let token = f.book("P1", Online).token.id;
    f.act(token, Action::NoShow).unwrap();
    for action in [Action::Cancel, Action::NoShow] {
        assert_eq!(
            f.act(token, action),
            Err(EngineError::InvalidTransition {
                from: Status::NoShow,
                action
            })
        );
    }
    assert_eq!(f.engine.history(token).unwrap().len(), 2);
}

#[test]
fn unknown_tokens_and_slots_are_refused() {
    let mut f = Fixture::with_slot(1);
    let missing = Uuid::from_u128(999);
    assert_eq!(
        f.act(missing, Action::Cancel),
        Err(EngineError::TokenNotFound(missing))
    );
    assert_eq!(
        f.try_book_in("NOPE", "P1", Online).map(|o| o.token),
        Err(EngineError::SlotNotFound(slot_id("NOPE")))
    );
}

#[test]
fn a_patient_holds_one_active_token_per_slot() {
    let mut f = Fixture::with_slot(1);
    let first = f.book("P1", Online).token.id;
    assert_eq!(
        f.try_book_in("S", "P1", Paid).map(|o| o.token),
        Err(EngineError::DuplicateBooking { existing: first })
    );
    f.act(first, Action::Cancel).unwrap();
    assert_eq!(f.book("P1", Paid).decision(), Some(Decision::Allocated));
}

#[test]
fn token_numbers_count_per_doctor_and_date_and_failures_consume_none() {
    let mut f = Fixture::with_slot(1);
    f.add_slot("S2", "D", "10:00", "11:00", 1).unwrap();
    f.add_slot("X", "OTHER", "09:00", "10:00", 1).unwrap();
    let first = f.book("P1", Online);
    assert!(f.try_book_in("S", "P1", Online).is_err());
    let waiting = f.book("P2", WalkIn);
    let other_slot = f.try_book_in("S2", "P3", Online).unwrap();
    let other_doctor = f.try_book_in("X", "P4", Online).unwrap();
    assert_eq!(first.token.number, 1);
    assert_eq!(waiting.token.number, 2);
    assert_eq!(other_slot.token.number, 3);
    assert_eq!(other_doctor.token.number, 1);
    assert!(first.token.sequence < waiting.token.sequence);
    assert_eq!(waiting.token.sequence + 1, other_slot.token.sequence);
}

#[test]
fn slots_of_one_doctor_may_not_overlap() {
    let mut f = Fixture::with_slot(1);
    assert_eq!(
        f.add_slot("A", "D", "09:30", "10:30", 1),
        Err(EngineError::SlotOverlap {
            existing: slot_id("S")
        })
    );
    assert_eq!(
        f.add_slot("B", "D", "08:00", "09:01", 1),
        Err(EngineError::SlotOverlap {
            existing: slot_id("S")
        })
    );
    assert!(f.add_slot("C", "D", "10:00", "11:00", 1).is_ok());
    assert!(f.add_slot("E", "D", "08:00", "09:00", 1).is_ok());
    assert!(f.add_slot("F", "OTHER", "09:00", "10:00", 1).is_ok());
    assert_eq!(
        f.add_slot("S", "Z", "12:00", "13:00", 1),
        Err(EngineError::SlotExists(slot_id("S")))
    );
    assert_eq!(
        f.add_slot("G", "Z", "12:00", "12:00", 1),
        Err(EngineError::EndNotAfterStart)
    );
}

#[test]
fn slots_list_by_date_start_and_id_with_filters() {
    let mut f = Fixture::with_slot(1);
    f.add_slot("B", "D2", "08:00", "09:00", 1).unwrap();
    f.add_slot("A", "D3", "08:00", "09:00", 1).unwrap();
    let ids = |doctor: Option<&str>, date: Option<Date>| f.list(doctor, date, None, 10).0;
    assert_eq!(ids(None, None), ["A", "B", "S"]);
    assert_eq!(ids(Some("D2"), None), ["B"]);
    assert!(ids(None, Some(date(2031, 1, 1))).is_empty());
}

/// A page as [`Fixture::list`] gives it.
fn page(ids: &[&str], more: bool) -> (Vec<String>, bool) {
    (ids.iter().map(|id| id.to_string()).collect(), more)
}

#[test]
fn slots_list_in_pages_after_a_cursor_slot() {
    let mut f = Fixture::with_slot(1);
    f.add_slot("B", "D", "08:00", "09:00", 1).unwrap();
    f.add_slot("A", "E", "08:00", "09:00", 1).unwrap();
    f.add_slot("C", "E", "09:00", "10:00", 1).unwrap();
    f.engine
        .create_slot(SlotSpec {
            id: slot_id("N"),
            doctor: DoctorId::parse("D").unwrap(),
            date: date(2030, 1, 3),
            start: "07:00".parse().unwrap(),
            end: "08:00".parse().unwrap(),
            capacity: Capacity::new(1).unwrap(),
        })
        .unwrap();
    // Every slot: A, B (08:00), C, S (09:00), then N the next day.
    assert_eq!(f.list(None, None, None, 2), page(&["A", "B"], true));
    assert_eq!(f.list(None, None, Some("B"), 2), page(&["C", "S"], true));
    assert_eq!(f.list(None, None, Some("S"), 2), page(&["N"], false));
    assert_eq!(f.list(None, None, Some("N"), 2), page(&[], false));
    assert!(
        !f.list(None, None, None, 5).1,
        "five slots fill a page of five"
    );
    // Filters page the same way; the cursor need not match them.
    assert_eq!(f.list(Some("D"), None, None, 1), page(&["B"], true));
    assert_eq!(f.list(Some("D"), None, Some("B"), 1), page(&["S"], true));
    assert_eq!(
        f.list(Some("D"), None, Some("C"), 5),
        page(&["S", "N"], false)
    );
    let second = Some(date(2030, 1, 2));
    assert_eq!(
        f.list(None, second, Some("A"), 5),
        page(&["B", "C", "S"], false)
    );
    assert_eq!(f.list(None, second, Some("N"), 5), page(&[], false));
    assert_eq!(
        f.list(None, Some(date(2030, 1, 3)), Some("A"), 5),
        page(&["N"], false)
    );
    assert_eq!(f.list(Some("E"), second, Some("A"), 5), page(&["C"], false));
    assert_eq!(
        f.engine.slots(&SlotQuery {
            doctor: None,
            date: None,
            after: Some(slot_id("X")),
            limit: 5,
        }),
        Err(EngineError::SlotNotFound(slot_id("X")))
    );
}

#[test]
fn growing_capacity_promotes_in_waitlist_order() {
    let mut f = Fixture::with_slot(1);
    f.book("P1", Online);
    f.book("W1", WalkIn);
    f.book("F1", FollowUp);
    f.book("O1", Online);
    // F1 bumped P1, so P1 waits ahead of O1 by its earlier arrival.
    let grown = f.set_capacity(3).unwrap();
    assert_eq!(
        reasons(&grown.changes),
        [
            ("P1".to_string(), Reason::Promoted),
            ("O1".to_string(), Reason::Promoted)
        ]
    );
    f.check(&["F1", "P1", "O1"], &["W1"]);
}

#[test]
fn growing_an_overbooked_slot_absorbs_the_overbooking_first() {
    let mut f = Fixture::with_slot(1);
    f.book("P1", Online);
    f.book("W1", WalkIn);
    f.book("E1", Emergency);
    let grown = f.set_capacity(2).unwrap();
    assert!(grown.changes.is_empty());
    assert!(!grown.slot.is_overbooked());
    f.check(&["E1", "P1"], &["W1"]);
}

#[test]
fn shrinking_capacity_demotes_the_least_important_latest_non_emergencies() {
    let mut f = Fixture::with_slot(4);
    f.book("W1", WalkIn);
    f.book("P1", Paid);
    f.book("W2", WalkIn);
    f.book("E1", Emergency);
    let shrunk = f.set_capacity(2).unwrap();
    assert_eq!(
        reasons(&shrunk.changes),
        [
            ("W2".to_string(), Reason::CapacityReduced),
            ("W1".to_string(), Reason::CapacityReduced)
        ]
    );
    f.check(&["E1", "P1"], &["W1", "W2"]);
}

#[test]
fn shrinking_capacity_keeps_emergencies_allocated() {
    let mut f = Fixture::with_slot(3);
    f.book("E1", Emergency);
    f.book("E2", Emergency);
    f.book("P1", Paid);
    let shrunk = f.set_capacity(0).unwrap();
    assert_eq!(
        reasons(&shrunk.changes),
        [("P1".to_string(), Reason::CapacityReduced)]
    );
    assert_eq!(shrunk.slot.overbooked_by(), 2);
    f.check(&["E1", "E2"], &["P1"]);
}

#[test]
fn the_waitlist_limit_refuses_waiting_and_bumping_but_never_emergencies() {
    let mut f = Fixture::with_limits(
        1,
        Limits {
            waitlist_max: 1,
            ..Limits::default()
        },
    );
    f.book("W1", WalkIn);
    f.book("W2", WalkIn);
    let full = EngineError::WaitlistFull {
        slot: slot_id("S"),
        limit: 1,
    };
    assert_eq!(
        f.try_book_in("S", "W3", WalkIn).map(|o| o.token),
        Err(full.clone())
    );
    assert_eq!(
        f.try_book_in("S", "P1", Paid).map(|o| o.token),
        Err(full.clone())
    );
    assert_eq!(
        f.book("E1", Emergency).decision(),
        Some(Decision::Overbooked)
    );
    f.check(&["E1", "W1"], &["W2"]);
    assert_eq!(f.set_capacity(0).map(|o| o.changes), Err(full));
    f.check(&["E1", "W1"], &["W2"]);
}

#[test]
fn the_overbooking_limit_refuses_only_emergencies_past_it() {
    let mut f = Fixture::with_limits(
        1,
        Limits {
            overbook_max: 2,
            ..Limits::default()
        },
    );
    f.book("E1", Emergency);
    f.book("E2", Emergency);
    f.book("E3", Emergency);
    let full = EngineError::OverbookFull {
        slot: slot_id("S"),
        limit: 2,
    };
    assert_eq!(
        f.try_book_in("S", "E4", Emergency).map(|o| o.token),
        Err(full.clone())
    );
    // A duplicate is reported as such, ahead of the limit.
    let e1 = f
        .engine
        .slot(&slot_id("S"), Timestamp::UNIX_EPOCH)
        .unwrap()
        .allocated[0]
        .id;
    assert_eq!(
        f.try_book_in("S", "E1", Emergency).map(|o| o.token),
        Err(EngineError::DuplicateBooking { existing: e1 })
    );
    // Others still wait; the refusal consumed no token number.
    let waiting = f.book("W1", WalkIn);
    assert_eq!(waiting.decision(), Some(Decision::Waitlisted));
    assert_eq!(waiting.token.number, 4);
    f.check(&["E1", "E2", "E3"], &["W1"]);
    // A freed seat absorbs overbooking, which makes room for one more.
    f.act(e1, Action::Cancel).unwrap();
    assert_eq!(
        f.book("E4", Emergency).decision(),
        Some(Decision::Overbooked)
    );
    assert_eq!(
        f.try_book_in("S", "E5", Emergency).map(|o| o.token),
        Err(full)
    );
    f.check(&["E2", "E3", "E4"], &["W1"]);
}

#[test]
fn history_records_every_transition_with_actor_and_time() {
    let mut f = Fixture::with_slot(1);
    let walk_in = f.book("W1", WalkIn).token.id;
    let paid = f.book("P1", Paid).token.id;
    f.act(paid, Action::Cancel).unwrap();
    let history = f.engine.history(walk_in).unwrap();
    let steps: Vec<_> = history.iter().map(|h| (h.from, h.to, h.reason)).collect();
    assert_eq!(
        steps,
        [
            (None, Status::Allocated, Reason::Allocated),
            (Some(Status::Allocated), Status::Waitlisted, Reason::Bumped),
            (
                Some(Status::Waitlisted),
                Status::Allocated,
                Reason::Promoted
            ),
        ]
    );
    assert!(history.windows(2).all(|w| w[0].at < w[1].at));
    assert!(history.iter().all(|h| &*h.actor == "desk"));
    let token = f.engine.token(walk_in, Timestamp::UNIX_EPOCH).unwrap();
    assert_eq!(token.updated_at, history.last().unwrap().at);
    assert_eq!(token.created_at, history[0].at);
}

#[test]
fn restoring_stored_tokens_rebuilds_identical_queues() {
    let mut f = Fixture::with_slot(2);
    let mut ids = Vec::new();
    for (who, source) in [
        ("W1", WalkIn),
        ("O1", Online),
        ("P1", Paid),
        ("E1", Emergency),
        ("W2", WalkIn),
    ] {
        ids.push(f.book(who, source).token.id);
    }
    f.act(ids[2], Action::NoShow).unwrap();
    let mut restored = Engine::new(Limits::default());
    let spec = f
        .engine
        .slot(&slot_id("S"), Timestamp::UNIX_EPOCH)
        .unwrap()
        .summary;
    restored
        .create_slot(SlotSpec {
            id: spec.id.clone(),
            doctor: spec.doctor.clone(),
            date: spec.date,
            start: spec.start,
            end: spec.end,
            capacity: Capacity::new(spec.capacity).unwrap(),
        })
        .unwrap();
    for id in &ids {
        let view = f.engine.token(*id, Timestamp::UNIX_EPOCH).unwrap();
        restored
            .restore_token(TokenRecord {
                id: view.id,
                sequence: view.sequence,
                number: view.number,
                patient: view.patient,
                slot: view.slot,
                source: view.source,
                status: view.status,
                created_at: view.created_at,
                updated_at: view.updated_at,
                checked_in_at: None,
                skips: 0,
                history: f.engine.history(*id).unwrap(),
            })
            .unwrap();
    }
    restored.check_invariants().unwrap();
    assert_eq!(
        restored.slot(&slot_id("S"), Timestamp::UNIX_EPOCH),
        f.engine.slot(&slot_id("S"), Timestamp::UNIX_EPOCH)
    );
    for id in &ids {
        assert_eq!(restored.history(*id), f.engine.history(*id));
    }
    // Counters continue where the original left off.
    let next = Context {
        at: Timestamp::from_second(1_800_000_000).unwrap(),
        actor: "desk".into(),
        today: date(2030, 1, 2),
    };
    let request = |n: u128, who: &str| BookRequest {
        token: Uuid::from_u128(n),
        patient: patient(who),
        slot: slot_id("S"),
        source: Online,
    };
    let a = f.engine.book(request(100, "N1"), &next).unwrap();
    let b = restored.book(request(100, "N1"), &next).unwrap();
    assert_eq!(a, b);
}

#[test]
fn restoring_out_of_order_or_inconsistent_data_is_refused() {
    let mut f = Fixture::with_slot(1);
    let id = f.book("P1", Online).token.id;
    let view = f.engine.token(id, Timestamp::UNIX_EPOCH).unwrap();
    let record = TokenRecord {
        id: view.id,
        sequence: view.sequence,
        number: view.number,
        patient: view.patient,
        slot: view.slot,
        source: view.source,
        status: view.status,
        created_at: view.created_at,
        updated_at: view.updated_at,
        checked_in_at: None,
        skips: 0,
        history: Vec::new(),
    };
    let mut restored = Engine::new(Limits::default());
    restored.add_test_slot();
    restored.restore_token(record.clone()).unwrap();
    assert!(
        restored.restore_token(record.clone()).is_err(),
        "same id twice"
    );
    let twin = TokenRecord {
        id: Uuid::from_u128(77),
        sequence: record.sequence + 1,
        ..record.clone()
    };
    assert!(
        restored.restore_token(twin).is_err(),
        "two active tokens of one patient"
    );
    let mut unknown_slot = record.clone();
    unknown_slot.slot = slot_id("ELSEWHERE");
    assert!(Engine::new(Limits::default())
        .restore_token(unknown_slot)
        .is_err());
    let mut late_creation = record.clone();
    late_creation.history = f.engine.history(id).unwrap();
    late_creation.history[0].at = record.created_at + jiff::SignedDuration::from_secs(1);
    let mut fresh = Engine::new(Limits::default());
    fresh.add_test_slot();
    assert!(
        fresh.restore_token(late_creation).is_err(),
        "a creation line at another time than created_at"
    );
    let mut far_future = record.clone();
    far_future.created_at = Timestamp::MAX;
    let mut fresh = Engine::new(Limits::default());
    fresh.add_test_slot();
    assert!(
        fresh.restore_token(far_future).is_err(),
        "a time past what the engine keeps"
    );
    let mut far_sequence = record;
    far_sequence.sequence = 1 << 56;
    let mut fresh = Engine::new(Limits::default());
    fresh.add_test_slot();
    assert!(
        fresh.restore_token(far_sequence).is_err(),
        "a sequence past what a queue key holds"
    );
}

impl Engine {
    fn add_test_slot(&mut self) {
        self.create_slot(SlotSpec {
            id: slot_id("S"),
            doctor: DoctorId::parse("D").unwrap(),
            date: date(2030, 1, 2),
            start: "09:00".parse().unwrap(),
            end: "10:00".parse().unwrap(),
            capacity: Capacity::new(0).unwrap(),
        })
        .unwrap();
    }
}

#[test]
fn a_creation_reason_names_its_decision_and_no_other_reason_does() {
    for decision in [
        Decision::Allocated,
        Decision::Overbooked,
        Decision::BumpedLower,
        Decision::Waitlisted,
    ] {
        assert_eq!(Decision::from_reason(decision.reason()), Some(decision));
    }
    let creations = Reason::ALL
        .into_iter()
        .filter(|reason| Decision::from_reason(*reason).is_some())
        .count();
    assert_eq!(
        creations, 4,
        "only the four booking decisions create tokens"
    );
}

use std::collections::HashMap;

use proptest::prelude::*;

/// A copy of slot `S` as storage loads one into an engine of its own: the
/// slot's active and seated tokens, without history, in sequence order.
fn copy_of(engine: &Engine) -> Engine {
    let summary = engine.slot_summary(&slot_id("S")).unwrap();
    let mut copy = Engine::new(Limits::default());
    copy.create_slot(SlotSpec {
        id: summary.id,
        doctor: summary.doctor,
        date: summary.date,
        start: summary.start,
        end: summary.end,
        capacity: Capacity::new(summary.capacity).unwrap(),
    })
    .unwrap();
    for (_, token) in engine.tokens.iter() {
        if token.status.is_active() || token.status.holds_seat() {
            copy.restore_token(stored(engine, token)).unwrap();
        }
    }
    copy.check_invariants().unwrap();
    copy
}

/// A token as storage holds it: its row, without history.
fn stored(engine: &Engine, token: &Token) -> TokenRecord {
    engine.record_of(token, Vec::new())
}

/// Patients and their statuses, in queue order.
type Queue = Vec<(String, Status)>;

/// What a copy decides on, token by token: the allocated and the
/// waitlisted.
fn decided_on(engine: &Engine) -> (Queue, Queue) {
    let detail = engine.slot(&slot_id("S"), Timestamp::UNIX_EPOCH).unwrap();
    let of = |tokens: &[TokenView]| {
        tokens
            .iter()
            .map(|t| (t.patient.to_string(), t.status))
            .collect()
    };
    (of(&detail.allocated), of(&detail.waitlist))
}

#[derive(Debug, Clone)]
enum Step {
    Book {
        patient: u8,
        source: usize,
    },
    Act {
        pick: usize,
        action: usize,
    },
    CallNext,
    /// A patient checked in, called, seen and done, one action after
    /// another: a visit the random actions alone seldom complete.
    SeeThrough {
        pick: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..10, 0usize..5).prop_map(|(patient, source)| Step::Book { patient, source }),
        3 => (any::<usize>(), 0usize..Action::ALL.len())
            .prop_map(|(pick, action)| Step::Act { pick, action }),
        1 => Just(Step::CallNext),
        1 => any::<usize>().prop_map(|pick| Step::SeeThrough { pick }),
    ]
}

/// The actions of one whole visit, in order.
const VISIT: [Action; 4] = [
    Action::CheckIn,
    Action::Call,
    Action::Start,
    Action::Complete,
];

/// The token `pick` chooses among the engine's, if it holds any.
fn picked(f: &Fixture, pick: usize) -> Option<Uuid> {
    let ids: Vec<Uuid> = f.engine.tokens.iter().map(|(_, t)| t.id).collect();
    (!ids.is_empty()).then(|| ids[pick % ids.len()])
}

fn take(f: &mut Fixture, step: &Step) {
    match step {
        Step::Book { patient, source } => {
            let _ = f.try_book_in("S", &format!("P{patient}"), Source::ALL[*source]);
        }
        Step::Act { pick, action } => {
            if let Some(id) = picked(f, *pick) {
                let _ = f.act(id, Action::ALL[*action]);
            }
        }
        Step::CallNext => {
            let ctx = f.ctx();
            let _ = f.engine.call_next(&DoctorId::parse("D").unwrap(), &ctx);
        }
        Step::SeeThrough { pick } => {
            if let Some(id) = picked(f, *pick) {
                for action in VISIT {
                    let _ = f.act(id, action);
                }
            }
        }
    }
}

/// A copy brought up by new tokens restores them in sequence order, also
/// when a later one has already been seen and completed while an earlier
/// one still waits.
#[test]
fn a_copy_takes_new_tokens_in_their_order_whatever_they_became() {
    let mut f = Fixture::with_slot(3);
    f.book("P1", Source::WalkIn);
    let mut copy = copy_of(&f.engine);
    let waiting = f.book("P2", Source::WalkIn).token.id;
    let seen = f.book("P3", Source::WalkIn).token.id;
    for action in VISIT {
        f.act(seen, action).unwrap();
    }

    let changed: Vec<TokenRecord> = [seen, waiting]
        .iter()
        .map(|id| {
            stored(
                &f.engine,
                &f.engine.tokens[f.engine.find_token(id).unwrap()],
            )
        })
        .collect();
    copy.refresh_tokens(changed).unwrap();

    copy.check_invariants().unwrap();
    assert_eq!(decided_on(&copy), decided_on(&copy_of(&f.engine)));
}

proptest! {
    /// A copy taken at any point and brought up by the tokens changed
    /// since decides as a copy read afresh does.
    #[test]
    fn a_copy_brought_up_by_its_changes_is_the_copy_read_afresh(
        capacity in 1u32..4,
        before in proptest::collection::vec(step(), 0..20),
        after in proptest::collection::vec(step(), 0..20),
    ) {
        let mut f = Fixture::with_slot(capacity);
        for step in &before {
            take(&mut f, step);
        }
        let mut copy = copy_of(&f.engine);
        // Storage gives every token written since: its stamp moved.
        let then: HashMap<Uuid, Nanos> = f
            .engine
            .tokens
            .iter()
            .map(|(_, t)| (t.id, t.updated_at))
            .collect();
        for step in &after {
            take(&mut f, step);
        }

        let changed: Vec<TokenRecord> = f
            .engine
            .tokens
            .iter()
            .filter(|(_, t)| then.get(&t.id) != Some(&t.updated_at))
            .map(|(_, t)| stored(&f.engine, t))
            .collect();
        prop_assert!(copy.refresh_tokens(changed).is_ok());

        prop_assert!(copy.check_invariants().is_ok());
        let mut afresh = copy_of(&f.engine);
        prop_assert_eq!(decided_on(&copy), decided_on(&afresh));
        prop_assert_eq!(
            copy.slot_summary(&slot_id("S")),
            afresh.slot_summary(&slot_id("S"))
        );
        // The next booking is decided alike.
        let request = BookRequest {
            token: Uuid::from_u128(u128::MAX),
            patient: patient("NEXT"),
            slot: slot_id("S"),
            source: Source::Paid,
        };
        let ctx = f.ctx();
        let decided = |engine: &mut Engine| {
            engine
                .book(request.clone(), &ctx)
                .map(|o| (o.transition.reason, o.token.status, reasons(&o.changes)))
                .ok()
        };
        prop_assert_eq!(decided(&mut copy), decided(&mut afresh));
    }
}

proptest! {
    /// A booking taken back, with the tokens it moved brought back to
    /// their stored state, leaves the slot as it was, and the same request
    /// is decided again alike.
    #[test]
    fn a_booking_taken_back_leaves_the_slot_as_it_was(
        capacity in 1u32..4,
        before in proptest::collection::vec(step(), 0..24),
        source in 0usize..5,
    ) {
        let mut f = Fixture::with_slot(capacity);
        for step in &before {
            take(&mut f, step);
        }
        let mut copy = copy_of(&f.engine);
        let then = decided_on(&copy);
        let summary = copy.slot_summary(&slot_id("S"));
        let records: HashMap<Uuid, TokenRecord> = copy
            .tokens
            .iter()
            .map(|(_, t)| (t.id, stored(&copy, t)))
            .collect();
        let request = BookRequest {
            token: Uuid::from_u128(u128::MAX),
            patient: patient("AGAIN"),
            slot: slot_id("S"),
            source: Source::ALL[source],
        };
        let ctx = f.ctx();
        let Ok(first) = copy.book(request.clone(), &ctx) else {
            return Ok(());
        };

        prop_assert!(copy.take_back(request.token).is_ok());
        let moved = first.changes.iter().map(|c| records[&c.token].clone()).collect();
        prop_assert!(copy.refresh_tokens(moved).is_ok());

        prop_assert!(copy.check_invariants().is_ok());
        prop_assert_eq!(decided_on(&copy), then);
        prop_assert_eq!(copy.slot_summary(&slot_id("S")), summary);
        let again = copy.book(request, &ctx).unwrap();
        prop_assert_eq!(
            (again.transition.reason, again.token.number, reasons(&again.changes)),
            (first.transition.reason, first.token.number, reasons(&first.changes))
        );
    }
}
