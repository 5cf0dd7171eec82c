//! When storage cannot commit, requests get 503, nothing unacknowledged is
//! kept, the service refuses further writes and reports it on `/healthz`,
//! and a restart recovers exactly what was acknowledged.
//!
//! The failure is a full disk, made real by capping the database's size
//! (`--storage-limit-mib`), which makes SQLite fail the commit with
//! SQLITE_FULL exactly as a full file system would.

use std::collections::BTreeSet;
use std::path::Path;

use opd::{Application, Config};
use serde_json::{json, Value};
use tokio::sync::oneshot;

mod common;
use common::{fields, get_json};

struct Server {
    address: String,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(data_dir: &Path, storage_limit_mib: Option<u64>) -> Server {
    let mut config = Config::for_tests();
    config.in_memory = false;
    config.data_dir = data_dir.to_path_buf();
    config.storage_limit_mib = storage_limit_mib;
    let application = Application::build(config).await.expect("the app starts");
    let address = format!("http://{}", application.local_addr());
    let (shutdown, signal) = oneshot::channel();
    let task = tokio::spawn(application.serve(async {
        let _ = signal.await;
    }));
    Server {
        address,
        shutdown,
        task,
    }
}

impl Server {
    async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task
            .await
            .expect("server task")
            .expect("server stops cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_keeps_only_acknowledged_changes_and_recovers_on_restart() {
    let data_dir =
        std::env::temp_dir().join(format!("opd-storage-failure-{}", uuid::Uuid::new_v4()));
    let client = reqwest::Client::new();

    // Arrange: a 1 MiB database with room for a few thousand bookings.
    let server = start(&data_dir, Some(1)).await;
    let created = client
        .post(format!("{}/slots", server.address))
        .json(&json!({"slotId": "BIG", "doctorId": "DF", "date": "2030-01-02", "startTime": "09:00", "endTime": "10:00", "capacity": 10000}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // Act: book concurrently until storage fails.
    let mut acknowledged = BTreeSet::new();
    let mut refused = 0;
    let mut next_patient = 0;
    'filling: for _round in 0..400 {
        let mut requests = Vec::new();
        for _ in 0..32 {
            next_patient += 1;
            let patient = format!("{:0>60}", next_patient);
            let request = client
                .post(format!("{}/tokens", server.address))
                // A long key stores a long replay body: the disk fills sooner.
                .header("Idempotency-Key", format!("fill-{patient}"))
                .json(&json!({"patientId": patient, "slotId": "BIG", "source": "WALK_IN"}))
                .send();
            requests.push(async move { (patient, request.await) });
        }
        for (patient, response) in futures_join_all(requests).await {
            let response = response.expect("the server answers");
            match response.status().as_u16() {
                201 => {
                    acknowledged.insert(patient);
                }
                503 => {
                    let problem: Value = response.json().await.unwrap();
                    assert_eq!(problem["code"], "UNAVAILABLE");
                    refused += 1;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        if refused > 0 {
            break 'filling;
        }
    }

    // Assert: the failure is visible and sticky.
    assert!(refused > 0, "storage never filled up");
    assert!(
        acknowledged.len() > 100,
        "only {} bookings fit",
        acknowledged.len()
    );
    let health = client
        .get(format!("{}/healthz", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let after_failure = client
        .post(format!("{}/tokens", server.address))
        .json(&json!({"patientId": "LATE", "slotId": "BIG", "source": "PAID"}))
        .send()
        .await
        .unwrap();
    assert_eq!(after_failure.status(), 503);
    let read = client
        .get(format!("{}/slots/BIG", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        read.status(),
        503,
        "nothing is served that storage did not confirm"
    );
    // The metrics still answer, and say that storage failed.
    let metrics = client
        .get(format!("{}/metrics", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.lines().any(|line| line == "opd_storage_failed 1"),
        "{text}"
    );
    server.stop().await;

    // A restart with room again holds exactly what was acknowledged.
    let server = start(&data_dir, None).await;
    let slot = get_json(&client, &format!("{}/slots/BIG", server.address)).await;
    let stored: BTreeSet<String> = fields(&slot["allocated"], "patientId")
        .into_iter()
        .chain(fields(&slot["waitlist"], "patientId"))
        .map(|patient| patient.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        stored, acknowledged,
        "no acknowledged booking lost, no phantom kept"
    );
    let numbers: BTreeSet<u64> = fields(&slot["allocated"], "tokenNumber")
        .into_iter()
        .map(|number| number.as_u64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (1..=acknowledged.len() as u64).collect(),
        "token numbers stay gapless"
    );
    let health = client
        .get(format!("{}/healthz", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let booked = client
        .post(format!("{}/tokens", server.address))
        .json(&json!({"patientId": "LATE", "slotId": "BIG", "source": "PAID"}))
        .send()
        .await
        .unwrap();
    assert_eq!(booked.status(), 201);
    server.stop().await;
    std::fs::remove_dir_all(&data_dir).unwrap();
}

/// Awaits every future; the requests run concurrently on the runtime.
async fn futures_join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("request task"));
    }
    outputs
}
