//! Bookings in one call (`--one-call-bookings`) on PostgreSQL: two
//! instances booking into one hot slot make each other's copies stale at
//! almost every booking (found stale by the call, or brought up by their
//! changes before it), and every answer must still be what the engine's
//! rules give for the changes in the order they were made.
#![cfg(feature = "postgres-tests")]

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Barrier;

use crate::helpers::{Backend, TestApp, T0};
use opd::engine::{
    Action, BookRequest, Capacity, Context, DoctorId, Engine, Limits, PatientId, Reason, SlotId,
    SlotSpec, Source,
};
use opd::store::EventKind;

const SOURCES: [&str; 5] = ["EMERGENCY", "PAID", "FOLLOW_UP", "ONLINE", "WALK_IN"];
const WORKERS: usize = 8;
const BOOKINGS_EACH: usize = 8;

/// One series' value in `GET /metrics`.
async fn counted(app: &TestApp, series: &str) -> f64 {
    let text = app.get("/metrics").await.expect_status(200).text;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The copies `app` brought up by what changed, by its bookings or by its
/// event follower.
async fn brought_up(app: &TestApp) -> f64 {
    counted(app, "opd_postgres_copy_refreshes_total").await
        + counted(app, "opd_postgres_follower_copy_refreshes_total").await
}

/// The changes an answer lists: (token, from, to, reason).
fn changes(answer: &Value) -> Vec<(String, String, String, String)> {
    answer["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|change| {
            let text = |field: &str| change[field].as_str().unwrap_or("").to_owned();
            (text("tokenId"), text("from"), text("to"), text("reason"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_hot_slot_answer_every_booking_by_the_rules() {
    // Arrange: two instances booking in one call, one slot of 3 seats.
    let first = TestApp::with(Backend::Postgres)
        .settings(|config| config.one_call_bookings = true)
        .spawn()
        .await;
    let slot = first.new_slot(3).await;
    let second = first.another_instance().await;
    let instances = Arc::new([first, second]);

    // Act: 8 clients at once, each alternating between the instances,
    // every source in turn; every third step cancels the client's token
    // before, through the other instance (a change to the slot that issues
    // no number).
    let start = Arc::new(Barrier::new(WORKERS));
    let mut clients = Vec::new();
    for worker in 0..WORKERS {
        let (instances, start, slot) = (instances.clone(), start.clone(), slot.id.clone());
        clients.push(tokio::spawn(async move {
            start.wait().await;
            let mut answers = Vec::new();
            let mut booked: Vec<String> = Vec::new();
            for step in 0..BOOKINGS_EACH {
                let app = &instances[(worker + step) % 2];
                let source = SOURCES[(worker * 3 + step) % SOURCES.len()];
                let patient = format!("H{worker}-{step}");
                let reply = app.try_book(&patient, &slot, source).await;
                assert_eq!(reply.status, 201, "{}", reply.text);
                let token = reply.body["token"]["tokenId"].as_str().unwrap().to_owned();
                answers.push((token.clone(), Some((patient, source)), reply.body));
                booked.push(token);
                if step % 3 == 2 {
                    let token = booked[booked.len() - 2].clone();
                    let other = &instances[(worker + step + 1) % 2];
                    // Allocated or waitlisted, the token may be cancelled:
                    // only its own client acts on it.
                    let reply = other.try_cancel(&token).await;
                    assert_eq!(reply.status, 200, "{}", reply.text);
                    answers.push((token, None, reply.body));
                }
            }
            answers
        }));
    }
    let mut answers: HashMap<(String, bool), Value> = HashMap::new();
    let mut booked: HashMap<String, (String, &str)> = HashMap::new();
    for client in clients {
        for (token, booking, answer) in client.await.unwrap() {
            let is_booking = booking.is_some();
            if let Some(booking) = booking {
                booked.insert(token.clone(), booking);
            }
            answers.insert((token, is_booking), answer);
        }
    }

    // Assert: the instances did decide on stale copies...
    let [first, second] = &*instances;
    let stale = counted(first, "opd_postgres_stale_copies_total").await
        + counted(second, "opd_postgres_stale_copies_total").await;
    assert!(stale > 0.0, "no booking was decided on a stale copy");
    // ...and brought their copies up by reading what changed, after the
    // event log showed them a change they lacked...
    let refreshed = brought_up(first).await + brought_up(second).await;
    assert!(refreshed > 0.0, "no copy was brought up by its changes");
    // ...and each answer is the engine's, replayed in the order the
    // changes were made: the order of the event log.
    let mut engine = Engine::new(Limits::default());
    let slot_id = SlotId::parse(&slot.id).unwrap();
    engine
        .create_slot(SlotSpec {
            id: slot_id.clone(),
            doctor: DoctorId::parse(&slot.doctor).unwrap(),
            date: slot.date.parse().unwrap(),
            start: slot.start.parse().unwrap(),
            end: slot.end.parse().unwrap(),
            capacity: Capacity::new(3).unwrap(),
        })
        .unwrap();
    let ctx = Context {
        at: T0.parse().unwrap(),
        actor: "anonymous".into(),
        today: slot.date.parse().unwrap(),
    };
    let log = second.service.events_after(0, 10_000).await.unwrap();
    let mut replayed = 0;
    for event in &log.events {
        let EventKind::Token {
            token,
            slot: of,
            from,
            reason,
            ..
        } = &event.kind
        else {
            continue;
        };
        if *of != slot_id {
            continue;
        }
        let id = token.to_string();
        let (outcome, answer) = match (from, reason) {
            (None, _) => {
                let (patient, source) = &booked[&id];
                let request = BookRequest {
                    token: *token,
                    patient: PatientId::parse(patient).unwrap(),
                    slot: slot_id.clone(),
                    source: Source::parse(source).unwrap(),
                };
                let answer = &answers[&(id, true)];
                let outcome = engine.book(request, &ctx).unwrap();
                assert_eq!(
                    answer["decision"],
                    outcome.transition.reason.as_str(),
                    "{answer}"
                );
                (outcome, answer)
            }
            (Some(_), Reason::Cancelled) => {
                let outcome = engine.act(*token, Action::Cancel, &ctx).unwrap();
                (outcome, &answers[&(id, false)])
            }
            // The other tokens' changes that a booking or cancel made.
            _ => continue,
        };
        replayed += 1;
        assert_eq!(
            answer["token"]["status"],
            outcome.token.status.as_str(),
            "{answer}"
        );
        let expected: Vec<_> = outcome
            .changes
            .iter()
            .map(|change| {
                (
                    change.token.to_string(),
                    change.from.as_str().to_owned(),
                    change.to.as_str().to_owned(),
                    change.reason.as_str().to_owned(),
                )
            })
            .collect();
        assert_eq!(changes(answer), expected, "{answer}");
        assert_eq!(answer["slot"]["allocatedCount"], outcome.slot.allocated);
        assert_eq!(answer["slot"]["waitlistCount"], outcome.slot.waitlisted);
    }
    assert_eq!(replayed, answers.len(), "every answer was replayed");
    // Both instances read the slot as the replay left it.
    let mut seen = Vec::new();
    for app in [first, second] {
        let detail = app.slot(&slot.id).await;
        let allocated: Vec<Value> = detail["allocated"].as_array().unwrap().to_vec();
        let waitlist: Vec<Value> = detail["waitlist"].as_array().unwrap().to_vec();
        seen.push((allocated.len(), waitlist.len()));
    }
    let replayed = engine.slot_summary(&slot_id).unwrap();
    for (allocated, waitlisted) in seen {
        assert_eq!(allocated as u32, replayed.allocated);
        assert_eq!(waitlisted as u32, replayed.waitlisted);
    }
    let [first, second] = Arc::into_inner(instances).expect("the clients are done");
    second.stop().await;
    first.stop().await;
}

/// The sum of a metric's series over their labels, in `GET /metrics`.
async fn summed(app: &TestApp, metric: &str) -> f64 {
    let text = app.get("/metrics").await.expect_status(200).text;
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_is_brought_up_by_the_changes_another_instance_made() {
    // Arrange: two instances booking in one call; the first holds a copy
    // of a 2-seat slot with one walk-in in it.
    let first = TestApp::with(Backend::Postgres)
        .settings(|config| config.one_call_bookings = true)
        .spawn()
        .await;
    let slot = first.new_slot(2).await;
    let second = first.another_instance().await;
    let reply = first.try_book("UP-1", &slot.id, "WALK_IN").await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let walk_in = reply.body["token"]["tokenId"].as_str().unwrap().to_owned();

    // The second instance fills the slot, an online patient bumps its
    // walk-in, and it cancels the first walk-in, which promotes its own
    // walk-in again.
    let reply = second.try_book("UP-2", &slot.id, "WALK_IN").await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let bumped = reply.body["token"]["tokenId"].as_str().unwrap().to_owned();
    let reply = second.try_book("UP-3", &slot.id, "ONLINE").await;
    assert_eq!(reply.body["decision"], "BUMPED_LOWER", "{}", reply.text);
    let reply = second.try_cancel(&walk_in).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(changes(&reply.body)[0].3, "PROMOTED", "{}", reply.text);
    // The first instance counts every instance's changes once its event
    // follower has passed them on, after noting them on its copies: three
    // creations, the bump, the cancel and the promotion.
    let mut waited = 0;
    while summed(&first, "opd_token_transitions_total").await < 6.0 {
        waited += 1;
        assert!(waited < 500, "the first instance never saw the changes");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Its follower brings the copy, which nothing else holds, up by them
    // as it reads them.
    let mut waited = 0;
    while counted(&first, "opd_postgres_follower_copy_refreshes_total").await < 1.0 {
        waited += 1;
        assert!(waited < 500, "the follower never brought the copy up");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let reads = counted(&first, "opd_postgres_copy_reads_total").await;

    // Act: a paid patient books through the first instance.
    let reply = first.try_book("UP-4", &slot.id, "PAID").await;

    // Assert: the slot as stored holds the online patient and the second
    // walk-in, so the paid patient takes the walk-in's seat; a copy that
    // still held only the first walk-in would have found a seat free.
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.body["token"]["status"], "ALLOCATED", "{}", reply.text);
    let bumps: Vec<_> = changes(&reply.body)
        .into_iter()
        .filter(|(_, _, _, reason)| reason == "BUMPED")
        .collect();
    assert_eq!(
        bumps,
        [(
            bumped,
            "ALLOCATED".into(),
            "WAITLISTED".into(),
            "BUMPED".into()
        )],
        "{}",
        reply.text
    );
    // The copy was brought up by the changes, neither read whole again nor
    // found stale by the call.
    assert_eq!(
        counted(&first, "opd_postgres_copy_reads_total").await,
        reads
    );
    assert_eq!(
        counted(&first, "opd_postgres_stale_copies_total").await,
        0.0
    );
    second.stop().await;
    first.stop().await;
}
