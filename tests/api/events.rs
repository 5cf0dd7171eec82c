//! The event log's subscribers are told every change once it is durable,
//! as events numbered 1, 2, 3, … in the order of the changes and, within
//! one change, in the order of its answer. A refused request tells nothing.

use std::time::Duration;

use opd::store::events::{Event, EventKind, SlotReason};
use tokio::sync::broadcast;

use crate::helpers::{id_of, Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    subscribers_are_told_each_change_in_order(Backend::Memory).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    subscribers_are_told_each_change_in_order(Backend::Sqlite).await
}

/// The events of the next message told. Requests here are sent one after
/// another, so each message holds one change.
async fn next_change(events: &mut broadcast::Receiver<std::sync::Arc<[Event]>>) -> Vec<Event> {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a change is told within 5 s")
        .expect("the subscriber keeps up")
        .to_vec()
}

/// A token event as (token id, from, to, reason).
fn token_change(event: &Event) -> (String, Option<&str>, &str, &str) {
    match &event.kind {
        EventKind::Token {
            token,
            from,
            to,
            reason,
            ..
        } => (
            token.to_string(),
            from.map(|status| status.as_str()),
            to.as_str(),
            reason.as_str(),
        ),
        EventKind::Slot { .. } => {
            panic!("a slot event where a token event was expected: {event:?}")
        }
    }
}

async fn subscribers_are_told_each_change_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut events = app.service.subscribe();
    // D1-09 holds three seats.
    let p1 = id_of(&app.book("P1", "D1-09", "WALK_IN").await);
    let first = next_change(&mut events).await;
    app.book("P2", "D1-09", "ONLINE").await;
    app.book("P3", "D1-09", "ONLINE").await;
    next_change(&mut events).await;
    next_change(&mut events).await;

    // A refused booking (P1 already holds a token) tells nothing.
    app.try_book("P1", "D1-09", "PAID").await.expect_status(409);
    let p4 = id_of(&app.book("P4", "D1-09", "PAID").await);
    let bump = next_change(&mut events).await;
    app.set_capacity("D1-09", 4).await;
    let capacity = next_change(&mut events).await;

    let first_id = first[0].id;
    assert_eq!(first.len(), 1);
    assert_eq!(
        token_change(&first[0]),
        (p1.clone(), None, "ALLOCATED", "ALLOCATED")
    );
    assert_eq!(first[0].actor.as_ref(), "anonymous");
    let bump_ids: Vec<u64> = bump.iter().map(|event| event.id).collect();
    assert_eq!(bump_ids, [first_id + 3, first_id + 4]);
    assert_eq!(
        bump.iter().map(token_change).collect::<Vec<_>>(),
        [
            (p4, None, "ALLOCATED", "BUMPED_LOWER"),
            (p1.clone(), Some("ALLOCATED"), "WAITLISTED", "BUMPED"),
        ]
    );
    assert_eq!(capacity[0].id, first_id + 5);
    match &capacity[0].kind {
        EventKind::Slot { reason, slot } => {
            assert_eq!(*reason, SlotReason::CapacityChanged);
            assert_eq!(
                (slot.id.as_str(), slot.capacity, slot.allocated),
                ("D1-09", 4, 4)
            );
        }
        other => panic!("expected the slot event first, got {other:?}"),
    }
    assert_eq!(
        capacity[1..].iter().map(token_change).collect::<Vec<_>>(),
        [(p1, Some("WAITLISTED"), "ALLOCATED", "PROMOTED")]
    );
}
