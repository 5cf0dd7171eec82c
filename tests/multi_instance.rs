//! Several server processes share one PostgreSQL database: hundreds of
//! concurrent bookings, cancellations and no-shows spread across them on
//! the same few slots must leave every invariant intact, and every
//! acknowledged change must be visible from every instance.
//!
//! Needs PostgreSQL (`OPD_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`); each run uses its own schema.
//! Without PostgreSQL, run `cargo test --no-default-features`.
#![cfg(feature = "postgres-tests")]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

mod common;
use common::{database_url, drop_schema, get_json};

/// A server process, killed when dropped.
struct Instance {
    child: Child,
    base: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An instance on `schema`, booking in one call when `one_call` is set
/// and under each slot's lock otherwise.
async fn start(schema: &str, schedule: &std::path::Path, one_call: bool) -> Instance {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_opd-token-engine"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--database-url",
            &database_url(),
            "--database-schema",
            schema,
        ])
        .arg("--schedule")
        .arg(schedule)
        .args(["--rate-limit-per-second", "0"])
        .env("RUST_LOG", "warn")
        .env("OPD_ONE_CALL_BOOKINGS", one_call.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("the server binary starts");
    let instance = Instance {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(response) = client
            .get(format!("{}/healthz", instance.base))
            .send()
            .await
        {
            if response.status() == 200 {
                return instance;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("instance on port {port} did not become healthy");
}

const SLOTS: [(&str, u64); 3] = [("M1", 3), ("M2", 5), ("M3", 2)];
const SOURCES: [&str; 5] = ["EMERGENCY", "PAID", "FOLLOW_UP", "ONLINE", "WALK_IN"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_postgres_keep_every_invariant_under_concurrent_load() {
    keep_every_invariant_under_concurrent_load(false).await;
}

/// The same with bookings decided on each instance's copies of the slots
/// and written in one call, in groups: the copies go stale at almost every
/// booking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_booking_in_one_call_keep_every_invariant_under_concurrent_load() {
    keep_every_invariant_under_concurrent_load(true).await;
}

async fn keep_every_invariant_under_concurrent_load(one_call: bool) {
    // Arrange: a fresh schema and two instances on it.
    let schema = format!("multi_{}", uuid::Uuid::new_v4().simple());
    let dir = std::env::temp_dir().join(&schema);
    std::fs::create_dir_all(&dir).unwrap();
    let schedule = dir.join("schedule.json");
    let slots: Vec<Value> = SLOTS
        .iter()
        .enumerate()
        .map(|(index, (id, capacity))| {
            json!({"slotId": id, "doctorId": "DM", "date": "2030-03-04",
                   "startTime": format!("{:02}:00", 9 + index), "endTime": format!("{:02}:00", 10 + index),
                   "capacity": capacity})
        })
        .collect();
    std::fs::write(&schedule, json!({ "slots": slots }).to_string()).unwrap();
    let first = start(&schema, &schedule, one_call).await;
    // The second instance loads the same schedule: existing slots are kept.
    let second = start(&schema, &schedule, one_call).await;
    let bases = [first.base.clone(), second.base.clone()];

    // Act: 24 clients, alternating instances, book and then cancel or
    // no-show some of their own tokens.
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for worker in 0..24u64 {
        let client = client.clone();
        let bases = bases.clone();
        tasks.push(tokio::spawn(async move {
            let mut booked = Vec::new();
            let mut acted = Vec::new();
            for step in 0..15u64 {
                let base = &bases[((worker + step) % 2) as usize];
                let slot = SLOTS[((worker * 7 + step) % SLOTS.len() as u64) as usize].0;
                let source = SOURCES[((worker * 3 + step) % SOURCES.len() as u64) as usize];
                let patient = format!("W{worker}-{step}");
                let response = client
                    .post(format!("{base}/tokens"))
                    .json(&json!({"patientId": patient, "slotId": slot, "source": source}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    response.status(),
                    201,
                    "booking answered {}",
                    response.status()
                );
                let body: Value = response.json().await.unwrap();
                booked.push(body["token"]["tokenId"].as_str().unwrap().to_owned());
                if step % 3 == 2 {
                    let token = booked[booked.len() - 2].clone();
                    let action = if step % 2 == 0 { "cancel" } else { "no-show" };
                    let other = &bases[((worker + step + 1) % 2) as usize];
                    let response = client
                        .post(format!("{other}/tokens/{token}/{action}"))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    // A no-show of a token that is waiting is refused by
                    // the rules; anything else must succeed.
                    assert!(status == 200 || status == 409, "{action} answered {status}");
                    if status == 200 {
                        let body: Value = response.json().await.unwrap();
                        acted.push((token, body["token"]["status"].as_str().unwrap().to_owned()));
                    }
                }
            }
            (booked, acted)
        }));
    }
    let mut booked = Vec::new();
    let mut ended = HashMap::new();
    for task in tasks {
        let (tokens, acted) = task.await.unwrap();
        booked.extend(tokens);
        ended.extend(acted);
    }

    // Assert: both instances see the same, valid state.
    let mut views = Vec::new();
    for base in &bases {
        let mut view = BTreeMap::new();
        for (slot, _) in SLOTS {
            let detail = get_json(&client, &format!("{base}/slots/{slot}")).await;
            view.insert(slot, detail);
        }
        views.push(view);
    }
    assert_eq!(
        views[0], views[1],
        "every instance reflects every acknowledged change"
    );

    let mut numbers = BTreeSet::new();
    for (slot, capacity) in SLOTS {
        let detail = &views[0][slot];
        let allocated = detail["allocated"].as_array().unwrap();
        let waitlist = detail["waitlist"].as_array().unwrap();
        let non_emergency = allocated
            .iter()
            .filter(|t| t["source"] != "EMERGENCY")
            .count() as u64;
        assert!(
            non_emergency <= capacity,
            "{slot}: {non_emergency} non-emergency tokens in {capacity} seats"
        );
        assert!(
            waitlist.is_empty() || allocated.len() as u64 >= capacity,
            "{slot}: waitlist with free seats"
        );
        let keys: Vec<(u64, u64)> = waitlist
            .iter()
            .map(|t| {
                (
                    t["priority"].as_u64().unwrap(),
                    t["tokenNumber"].as_u64().unwrap(),
                )
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(
            keys, sorted,
            "{slot}: waitlist in priority then arrival order"
        );
        for (position, token) in waitlist.iter().enumerate() {
            assert_eq!(token["waitlistPosition"], json!(position + 1));
        }
        let patients: BTreeSet<String> = allocated
            .iter()
            .chain(waitlist)
            .map(|t| t["patientId"].to_string())
            .collect();
        assert_eq!(
            patients.len(),
            allocated.len() + waitlist.len(),
            "{slot}: one active token per patient"
        );
    }
    for token in &booked {
        let detail = get_json(&client, &format!("{}/tokens/{token}", bases[1])).await;
        assert!(
            numbers.insert(detail["tokenNumber"].as_u64().unwrap()),
            "token numbers are unique"
        );
        if let Some(status) = ended.get(token) {
            assert_eq!(
                &detail["status"], status,
                "acknowledged {status} of {token} is kept"
            );
        }
        assert_eq!(
            detail["history"].as_array().unwrap().last().unwrap()["to"],
            detail["status"]
        );
    }
    assert_eq!(
        numbers,
        (1..=booked.len() as u64).collect(),
        "token numbers for the doctor's day are gapless"
    );
    assert_eq!(booked.len(), 24 * 15);
    drop((first, second));
    std::fs::remove_dir_all(&dir).unwrap();
    drop_schema(&schema);
}
