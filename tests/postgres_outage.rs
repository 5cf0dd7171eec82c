//! Losing PostgreSQL: while the database cannot be reached, writes answer
//! 503 and `/healthz` says so; nothing is half applied; once it is back the
//! same instance serves again without a restart.
//!
//! The outage is real: the instance talks to PostgreSQL through a TCP
//! relay in this test, and the test cuts every relayed connection.
#![cfg(feature = "postgres-tests")]

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

mod common;
use common::{database_address, database_url_via, drop_schema, fields, get_json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Relays 127.0.0.1:<port> to the local PostgreSQL until cut.
struct Relay {
    port: u16,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(port: u16) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the relay binds");
        let port = listener.local_addr().unwrap().port();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let connections = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(database_address()).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                connections.lock().unwrap().push(relay);
            }
        });
        tasks.lock().unwrap().push(accept);
        Relay { port, tasks }
    }

    /// Drops the listener and every relayed connection.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_answers_503_changes_nothing_and_recovers() {
    // Arrange: an instance whose only way to PostgreSQL is the relay.
    let relay = Relay::start(0).await;
    let schema = format!("outage_{}", uuid::Uuid::new_v4().simple());
    let mut config = opd::Config::for_tests();
    config.in_memory = false;
    config.database_url = Some(database_url_via(relay.port));
    config.database_schema = Some(schema.clone());
    config.database_connections = 2;
    let application = opd::Application::build(config)
        .await
        .expect("the app starts");
    let base = format!("http://{}", application.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.serve(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let book = |patient: &'static str| {
        client
            .post(format!("{base}/tokens"))
            .json(&json!({"patientId": patient, "slotId": "D1-09", "source": "ONLINE"}))
            .send()
    };
    assert_eq!(book("BEFORE").await.unwrap().status(), 201);

    // Act: the database goes away.
    relay.cut();
    let during = book("DURING").await.unwrap();
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();

    // Assert: refused cleanly while it is gone.
    assert_eq!(during.status(), 503);
    let problem: Value = during.json().await.unwrap();
    assert_eq!(problem["code"], "UNAVAILABLE");
    assert_eq!(health.status(), 503);
    let scrape = || async {
        let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200, "the metrics answer even so");
        metrics.text().await.unwrap()
    };
    let text = scrape().await;
    assert!(
        text.lines().any(|line| line == "opd_storage_failed 1"),
        "{text}"
    );

    // The database comes back on the same address: the instance serves
    // again, and the refused booking left no trace.
    let _relay = Relay::start(relay.port).await;
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let text = scrape().await;
    assert!(
        text.lines().any(|line| line == "opd_storage_failed 0"),
        "{text}"
    );
    assert_eq!(book("AFTER").await.unwrap().status(), 201);
    let slot = get_json(&client, &format!("{base}/slots/D1-09")).await;
    let patients = fields(&slot["allocated"], "patientId");
    assert_eq!(patients, [&json!("BEFORE"), &json!("AFTER")]);
    let numbers = fields(&slot["allocated"], "tokenNumber");
    assert_eq!(
        numbers,
        [1, 2],
        "the refused booking consumed no token number"
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    drop_schema(&schema);
}
