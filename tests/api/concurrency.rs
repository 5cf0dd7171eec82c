//! Hundreds of simultaneous requests on one slot, then every invariant of
//! API.md checked on what the API reports.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::helpers::{assert_problem, booking, id_of, priority, Backend, Reply, TestApp};

backend_tests!(
    simultaneous_bookings_cancellations_and_capacity_changes_keep_every_invariant,
    simultaneous_bookings_by_one_patient_create_one_token,
    simultaneous_bookings_across_a_doctor_slots_number_tokens_without_gaps,
);

const SOURCES: [&str; 5] = ["EMERGENCY", "PAID", "FOLLOW_UP", "ONLINE", "WALK_IN"];

/// Runs `count` tasks that all start at once; each gets its index and a
/// handle on the app's address and client.
async fn simultaneously<T, F, Fut>(app: &TestApp, count: usize, task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize, Client) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(count));
    let handles: Vec<_> = (0..count)
        .map(|index| {
            let barrier = barrier.clone();
            let work = task(
                index,
                Client {
                    address: app.address.clone(),
                    client: app.client.clone(),
                },
            );
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(count);
    for handle in handles {
        results.push(handle.await.expect("a task does not panic"));
    }
    results
}

/// What a task needs to send requests.
#[derive(Clone)]
struct Client {
    address: String,
    client: reqwest::Client,
}

impl Client {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::read(request.send().await.expect("the server answers")).await
    }
}

/// Reads the slot and every token created in it, and checks the invariants
/// of API.md against each other. Returns the tokens by id.
async fn check_invariants(
    app: &TestApp,
    slot_id: &str,
    created: &[String],
) -> HashMap<String, Value> {
    let detail = app.slot(slot_id).await;
    let mut tokens = HashMap::new();
    for id in created {
        tokens.insert(id.clone(), app.token(id).await);
    }
    let allocated = detail["allocated"].as_array().unwrap();
    let waitlist = detail["waitlist"].as_array().unwrap();
    let capacity = detail["capacity"].as_u64().unwrap();
    let count = allocated.len() as u64;

    // The summary agrees with the queues.
    assert_eq!(detail["allocatedCount"], count);
    assert_eq!(detail["waitlistCount"], waitlist.len() as u64);
    assert_eq!(detail["available"], capacity.saturating_sub(count));
    assert_eq!(detail["overbooked"], count > capacity);
    assert_eq!(detail["overbookedBy"], count.saturating_sub(capacity));

    // Non-emergency tokens fit; a waitlist only while the slot is full.
    let non_emergency = allocated
        .iter()
        .filter(|token| token["source"] != "EMERGENCY")
        .count() as u64;
    assert!(
        non_emergency <= capacity,
        "{non_emergency} non-emergency tokens in {capacity} seats"
    );
    assert!(
        waitlist.is_empty() || count >= capacity,
        "a waitlist with free seats: {detail}"
    );

    // Every queued token reads the same on its own, and is in exactly the
    // queue its status names; the rest are terminal.
    let order_key = |token: &Value| {
        (
            priority(token["source"].as_str().unwrap()),
            token["tokenNumber"].as_u64().unwrap(),
        )
    };
    let mut queued = HashSet::new();
    for (list, status) in [(allocated, "ALLOCATED"), (waitlist, "WAITLISTED")] {
        for (index, token) in list.iter().enumerate() {
            let id = id_of(token);
            assert!(queued.insert(id.clone()), "{id} is queued twice");
            let own = tokens
                .get(&id)
                .unwrap_or_else(|| panic!("queued token {id} was never created"));
            let mut own = own.clone();
            own.as_object_mut().unwrap().remove("history");
            assert_eq!(&own, token);
            assert_eq!(token["status"], status);
            let position = (status == "WAITLISTED").then_some(index as u64 + 1);
            assert_eq!(token["waitlistPosition"], json!(position));
        }
        // Service and promotion order: priority, then arrival (token
        // numbers are in arrival order within one doctor's day).
        let keys: Vec<_> = list.iter().map(order_key).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "{status} tokens are out of order");
    }
    let mut active_patients = HashSet::new();
    for (id, token) in &tokens {
        let status = token["status"].as_str().unwrap();
        match status {
            "ALLOCATED" | "WAITLISTED" => {
                assert!(queued.contains(id), "{status} token {id} is in no queue");
                let patient = token["patientId"].as_str().unwrap();
                assert!(
                    active_patients.insert(patient.to_owned()),
                    "patient {patient} holds two active tokens"
                );
            }
            "CANCELLED" | "NO_SHOW" => {
                assert!(!queued.contains(id), "{status} token {id} is queued");
                assert_eq!(token["waitlistPosition"], Value::Null);
            }
            other => panic!("unknown status {other}"),
        }
        // The history is a chain from creation to the current status.
        let history = token["history"].as_array().unwrap();
        assert_eq!(history[0]["from"], Value::Null);
        for pair in history.windows(2) {
            assert_eq!(pair[1]["from"], pair[0]["to"], "history of {id}");
        }
        assert_eq!(history.last().unwrap()["to"], status, "history of {id}");
    }

    // Token numbers: unique and gapless, 1..n.
    let mut numbers: Vec<u64> = tokens
        .values()
        .map(|token| token["tokenNumber"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=created.len() as u64).collect::<Vec<_>>());
    tokens
}

async fn simultaneous_bookings_cancellations_and_capacity_changes_keep_every_invariant(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(20).await;
    let slot_id = slot.id.clone();

    // Every tenth task books for the patient of the task before it, so
    // duplicate bookings race; every fourth cancels what it booked, every
    // fourth marks it a no-show; every fiftieth changes the capacity.
    let outcomes = simultaneously(&app, 300, |index, client| {
        let slot_id = slot_id.clone();
        async move {
            let patient = if index % 10 == 9 {
                format!("P{}", index - 1)
            } else {
                format!("P{index}")
            };
            let source = SOURCES[[0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 3, 4][index % 13]];
            let reply = client
                .send(
                    Method::POST,
                    "/tokens",
                    Some(booking(&patient, &slot_id, source)),
                )
                .await;
            let mut created = None;
            match reply.status {
                201 => created = Some(id_of(&reply.body)),
                409 => assert_problem(&reply, 409, "DUPLICATE_BOOKING"),
                other => panic!("booking answered {other}: {}", reply.text),
            }
            if let Some(id) = &created {
                match index % 4 {
                    0 => {
                        let cancelled = client
                            .send(Method::POST, &format!("/tokens/{id}/cancel"), None)
                            .await;
                        assert_eq!(
                            cancelled.expect_status(200).body["token"]["status"],
                            "CANCELLED"
                        );
                    }
                    1 => {
                        let missed = client
                            .send(Method::POST, &format!("/tokens/{id}/no-show"), None)
                            .await;
                        match missed.status {
                            200 => assert_eq!(missed.body["token"]["status"], "NO_SHOW"),
                            // A token that was waitlisted when marked.
                            _ => assert_problem(&missed, 409, "INVALID_TRANSITION"),
                        }
                    }
                    _ => {}
                }
            }
            if index % 50 == 0 {
                let capacity = 10 + (index / 50) * 4;
                let changed = client
                    .send(
                        Method::PATCH,
                        &format!("/slots/{slot_id}"),
                        Some(json!({"capacity": capacity})),
                    )
                    .await;
                changed.expect_status(200);
            }
            (index, patient, reply, created)
        }
    })
    .await;

    let created: Vec<String> = outcomes
        .iter()
        .filter_map(|outcome| outcome.3.clone())
        .collect();
    let tokens = check_invariants(&app, &slot.id, &created).await;
    for (index, patient, reply, created) in &outcomes {
        if let Some(id) = created {
            // Each 201 answer described its own new token.
            let token = &tokens[id];
            assert_eq!(reply.body["token"]["tokenNumber"], token["tokenNumber"]);
            assert_eq!(token["patientId"], json!(patient));
            if index % 4 == 0 {
                assert_eq!(token["status"], "CANCELLED");
            }
        } else {
            // A refused duplicate named a token of the same patient.
            let existing = reply.body["existingTokenId"]
                .as_str()
                .expect("existingTokenId");
            let existing = tokens
                .get(existing)
                .unwrap_or_else(|| panic!("{existing} was never created"));
            assert_eq!(existing["patientId"], json!(patient));
        }
    }
    assert!(
        created.len() >= 270,
        "only {} of 300 bookings succeeded",
        created.len()
    );
    let capacity = app.slot(&slot.id).await["capacity"].as_u64().unwrap();
    assert!(
        [10, 14, 18, 22, 26, 30].contains(&capacity),
        "capacity {capacity} was never set"
    );
}

async fn simultaneous_bookings_by_one_patient_create_one_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let slot = app.new_slot(3).await;
    let slot_id = slot.id.clone();

    let replies = simultaneously(&app, 60, |index, client| {
        let slot_id = slot_id.clone();
        async move {
            client
                .send(
                    Method::POST,
                    "/tokens",
                    Some(booking("SAME", &slot_id, SOURCES[index % 5])),
                )
                .await
        }
    })
    .await;

    let winners: Vec<&Reply> = replies.iter().filter(|reply| reply.status == 201).collect();
    assert_eq!(winners.len(), 1, "exactly one booking wins");
    let winner = id_of(&winners[0].body);
    for reply in replies.iter().filter(|reply| reply.status != 201) {
        assert_problem(reply, 409, "DUPLICATE_BOOKING");
        assert_eq!(reply.body["existingTokenId"], json!(winner));
    }
    check_invariants(&app, &slot.id, &[winner]).await;
}

async fn simultaneous_bookings_across_a_doctor_slots_number_tokens_without_gaps(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let morning = app.new_slot(5).await;
    let afternoon = app
        .create_slot(&json!({
            "slotId": format!("{}-PM", morning.id),
            "doctorId": morning.doctor,
            "startTime": "14:00",
            "endTime": "15:00",
            "capacity": 5,
        }))
        .await;
    let slots = [
        morning.id.clone(),
        afternoon["slotId"].as_str().unwrap().to_owned(),
    ];

    let replies = simultaneously(&app, 120, |index, client| {
        let slot_id = slots[index % 2].clone();
        async move {
            client
                .send(
                    Method::POST,
                    "/tokens",
                    Some(booking(&format!("P{index}"), &slot_id, SOURCES[index % 5])),
                )
                .await
        }
    })
    .await;

    let mut numbers: Vec<u64> = replies
        .iter()
        .map(|reply| {
            assert_eq!(reply.status, 201, "{}", reply.text);
            reply.body["token"]["tokenNumber"].as_u64().unwrap()
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=120).collect::<Vec<u64>>());
    for slot_id in &slots {
        let detail = app.slot(slot_id).await;
        assert_eq!(
            detail["allocatedCount"].as_u64().unwrap() + detail["waitlistCount"].as_u64().unwrap(),
            60
        );
    }
}
