//! The instance's connections to PostgreSQL, seen on the wire: a relay
//! between the instance and the database reads the protocol's messages,
//! so the round trips a booking costs are counted, and a restart of the
//! database (every connection dropped at once) is made at will.
#![cfg(feature = "postgres-tests")]

use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

mod common;
use common::{database_address, database_url_via, drop_schema, get_json};

/// One round trip: what the client sent, up to the server's
/// ReadyForQuery. A bare Sync (sqlx's ping) sends no statement.
#[derive(Debug, Clone, PartialEq)]
enum Trip {
    Sync,
    Statements(Vec<String>),
}

/// What one relayed connection carried.
#[derive(Default)]
struct Wire {
    /// Statements sent since the last ReadyForQuery.
    pending: Vec<String>,
    /// Prepared statements by name, from their Parse messages.
    prepared: std::collections::HashMap<String, String>,
    trips: Vec<Trip>,
}

/// Relays 127.0.0.1:<port> to the local PostgreSQL, recording each
/// connection's round trips.
struct Relay {
    port: u16,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    wires: Arc<Mutex<Vec<Arc<Mutex<Wire>>>>>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let wires: Arc<Mutex<Vec<Arc<Mutex<Wire>>>>> = Arc::default();
        let (tasks, all) = (connections.clone(), wires.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let wire = Arc::new(Mutex::new(Wire::default()));
                all.lock().unwrap().push(wire.clone());
                tasks
                    .lock()
                    .unwrap()
                    .push(tokio::spawn(relay(client, wire)));
            }
        });
        Relay {
            port,
            accept,
            connections,
            wires,
        }
    }

    /// Drops every relayed connection, as a restarted database would, and
    /// goes on accepting new ones.
    fn drop_connections(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn trips(&self) -> Vec<Vec<Trip>> {
        self.wires
            .lock()
            .unwrap()
            .iter()
            .map(|wire| wire.lock().unwrap().trips.clone())
            .collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}

async fn relay(client: TcpStream, wire: Arc<Mutex<Wire>>) {
    let Ok(server) = TcpStream::connect(database_address()).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = {
        let wire = wire.clone();
        async move {
            // The startup message is the only one without a type byte.
            let mut startup = true;
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                let read = client_read.read(&mut chunk).await?;
                if read == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                buffer.extend_from_slice(&chunk[..read]);
                while let Some((kind, body, length)) = message(&buffer, startup) {
                    if !startup {
                        record_client(&mut wire.lock().unwrap(), kind, body);
                    }
                    startup = false;
                    buffer.drain(..length);
                }
                server_write.write_all(&chunk[..read]).await?;
            }
        }
    };
    let downstream = async move {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let read = server_read.read(&mut chunk).await?;
            if read == 0 {
                return Ok::<_, std::io::Error>(());
            }
            buffer.extend_from_slice(&chunk[..read]);
            while let Some((kind, _, length)) = message(&buffer, false) {
                if kind == b'Z' {
                    // Recorded before the client can see it, so the next
                    // round trip's messages are never counted in this one.
                    let mut wire = wire.lock().unwrap();
                    let pending = std::mem::take(&mut wire.pending);
                    let trip = if pending.is_empty() {
                        Trip::Sync
                    } else {
                        Trip::Statements(pending)
                    };
                    wire.trips.push(trip);
                }
                buffer.drain(..length);
            }
            client_write.write_all(&chunk[..read]).await?;
        }
    };
    let _ = tokio::join!(upstream, downstream);
}

/// The first whole message in `buffer`: its type, its body and its length
/// on the wire.
fn message(buffer: &[u8], untyped: bool) -> Option<(u8, &[u8], usize)> {
    let offset = usize::from(!untyped);
    let header = buffer.get(offset..offset + 4)?;
    let length = u32::from_be_bytes(header.try_into().unwrap()) as usize + offset;
    let body = buffer.get(offset + 4..length)?;
    Some((if untyped { 0 } else { buffer[0] }, body, length))
}

/// What a statement prepared in a round trip is recorded with, before
/// its SQL.
const PREPARE: &str = "PREPARE ";

/// What the statement that writes bookings in one call contains.
const CALL: &str = "FROM opd_book_group(";

/// What the statement that waits for a group's flush contains.
const DURABLE: &str = "pg_logical_emit_message(true, 'opd', 'durable')";

fn record_client(wire: &mut Wire, kind: u8, body: &[u8]) {
    let strings: Vec<String> = body
        .split(|&byte| byte == 0)
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    match kind {
        // Query: the SQL.
        b'Q' => wire.pending.push(strings[0].clone()),
        // Parse: the statement's name and its SQL (sqlx prepares a
        // statement in a round trip of its own the first time a connection
        // runs it).
        b'P' => {
            wire.prepared.insert(strings[0].clone(), strings[1].clone());
            wire.pending.push(format!("{PREPARE}{}", strings[1]));
        }
        // Bind: a portal and the statement it runs.
        b'B' => {
            let sql = wire.prepared.get(&strings[1]).cloned().unwrap_or_default();
            wire.pending.push(sql);
        }
        _ => {}
    }
}

/// An instance whose only way to PostgreSQL is `relay`.
async fn start(relay: &Relay, schema: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let mut config = opd::Config::for_tests();
    config.in_memory = false;
    let url = database_url_via(relay.port);
    let separator = if url.contains('?') { '&' } else { '?' };
    // Without TLS, so that every message can be read.
    config.database_url = Some(format!("{url}{separator}sslmode=disable"));
    config.database_schema = Some(schema.to_owned());
    config.database_connections = 2;
    config.one_call_bookings = true;
    let application = opd::Application::build(config)
        .await
        .expect("the app starts");
    let base = format!("http://{}", application.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(application.serve(async {
        let _ = stopped.await;
    }));
    (base, stop)
}

/// Books `patient` into D1-09: the answer's status and body.
async fn post_booking(
    client: &reqwest::Client,
    base: &str,
    patient: &str,
) -> (u16, serde_json::Value) {
    let response = client
        .post(format!("{base}/tokens"))
        .json(&json!({"patientId": patient, "slotId": "D1-09", "source": "ONLINE"}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn book(client: &reqwest::Client, base: &str, patient: &str) -> u16 {
    post_booking(client, base, patient).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_is_one_call_and_a_wait_for_its_flush() {
    // Arrange
    let relay = Relay::start().await;
    let schema = format!("trips_{}", uuid::Uuid::new_v4().simple());
    let (base, stop) = start(&relay, &schema).await;
    let client = reqwest::Client::new();

    // Act: bookings one after another into one slot.
    for patient in 0..20 {
        assert_eq!(book(&client, &base, &format!("RT{patient}")).await, 201);
    }
    // The pings after the last calls are sent once the answers are out.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Assert: each booking is the call, outside any transaction of the
    // client's, and the wait for its flush, on the group writer's own
    // connection, which no pool pings; the slot is read once, by the first
    // booking, in one statement, and never again while this instance's
    // copy of it is current: the follower's notes of the instance's own
    // changes do not make it read the slot again.
    let mut calls = 0;
    let mut slot_reads = 0;
    for trips in relay.trips() {
        for (index, trip) in trips.iter().enumerate() {
            let Trip::Statements(statements) = trip else {
                // The first is the end of the connection's start-up.
                assert!(
                    index == 0 || trips.get(index + 1) != Some(&Trip::Sync),
                    "two pings in a row, one before a use: {trips:?}"
                );
                continue;
            };
            let is_read = |s: &String| {
                !s.starts_with(PREPARE) && s.contains("LEFT JOIN tokens t ON t.slot_id")
            };
            if statements.iter().any(is_read) {
                assert_eq!(statements, &[statements[0].clone()], "the read alone");
                assert_ne!(
                    trips.get(index.wrapping_sub(1)),
                    Some(&Trip::Statements(vec!["BEGIN".into()])),
                    "no transaction around the read"
                );
                slot_reads += 1;
            }
            let is_call = |s: &String| !s.starts_with(PREPARE) && s.contains(CALL);
            if !statements.iter().any(is_call) {
                continue;
            }
            assert_eq!(statements.len(), 1, "the call alone: {statements:?}");
            assert_ne!(
                trips.get(index.wrapping_sub(1)),
                Some(&Trip::Statements(vec!["BEGIN".into()])),
                "no transaction around the call"
            );
            let Some(Trip::Statements(next)) = trips.get(index + 1) else {
                panic!("the call is followed by the wait for its flush: {trips:?}");
            };
            assert!(
                next.len() == 1 && next[0].contains(DURABLE),
                "the call is followed by the wait for its flush, alone: {next:?}"
            );
            calls += 1;
        }
    }
    assert_eq!(calls, 20, "every booking was one call on the wire");
    assert_eq!(slot_reads, 1, "the slot was read once");

    let _ = stop.send(());
    drop_schema(&schema);
}

/// The round trips of the transaction `act` runs whose statements include
/// `marker`, from BEGIN to its end, once its connection has prepared them
/// (a statement's first use on a connection takes one round trip more,
/// which is left out): `act` runs twice and only the second run's
/// transaction is counted.
async fn round_trips_of<F, Fut>(relay: &Relay, marker: &str, mut act: F) -> usize
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    act(0).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before: Vec<usize> = relay.trips().iter().map(Vec::len).collect();
    act(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut counted = Vec::new();
    for (connection, trips) in relay.trips().iter().enumerate() {
        let mut block: Vec<&Vec<String>> = Vec::new();
        for trip in &trips[before.get(connection).copied().unwrap_or(0)..] {
            let Trip::Statements(statements) = trip else {
                continue;
            };
            if statements == &["BEGIN"] {
                block.clear();
            }
            if !statements.iter().any(|s| s.starts_with(PREPARE)) {
                block.push(statements);
            }
            if statements == &["COMMIT"] || statements == &["ROLLBACK"] {
                if block
                    .iter()
                    .flat_map(|s| s.iter())
                    .any(|s| s.contains(marker))
                {
                    counted.push(block.len());
                }
                block.clear();
            }
        }
    }
    assert_eq!(
        counted.len(),
        1,
        "one transaction with {marker}: {counted:?}"
    );
    counted[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bookings_into_different_slots_share_calls() {
    // Arrange: 16 doctors' slots, each booked once so that the instance
    // holds a copy of each.
    const SLOTS: usize = 16;
    let relay = Relay::start().await;
    let schema = format!("groups_{}", uuid::Uuid::new_v4().simple());
    let (base, stop) = start(&relay, &schema).await;
    let client = reqwest::Client::new();
    let slot = |n: usize| format!("G{n:02}-09");
    for n in 0..SLOTS {
        let response = client
            .post(format!("{base}/slots"))
            .json(&json!({"slotId": slot(n), "doctorId": format!("G{n:02}"),
                          "startTime": "09:00", "endTime": "10:00", "capacity": 50}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let booked = client
            .post(format!("{base}/tokens"))
            .json(&json!({"patientId": "FIRST", "slotId": slot(n), "source": "ONLINE"}))
            .send()
            .await
            .unwrap();
        assert_eq!(booked.status(), 201);
    }
    let calls_before = calls(&relay);

    // Act: four bookings into each slot, all at once.
    let bookings = (0..4 * SLOTS).map(|n| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .post(format!("{base}/tokens"))
                .json(&json!({"patientId": format!("P{n}"), "slotId": slot(n % SLOTS), "source": "ONLINE"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures_util::future::join_all(bookings).await;

    // Assert: every booking was made, and the instance's two connections
    // carried them in fewer calls than bookings.
    assert!(statuses.iter().all(|status| *status == 201), "{statuses:?}");
    let calls = calls(&relay) - calls_before;
    eprintln!("{} bookings in {calls} calls", 4 * SLOTS);
    assert!(
        calls < 4 * SLOTS,
        "{calls} calls for {} bookings",
        4 * SLOTS
    );
    for n in 0..SLOTS {
        let detail = get_json(&client, &format!("{base}/slots/{}", slot(n))).await;
        assert_eq!(detail["allocatedCount"], 5, "{detail}");
    }

    let _ = stop.send(());
    drop_schema(&schema);
}

/// The calls that wrote bookings, on every connection so far.
fn calls(relay: &Relay) -> usize {
    relay
        .trips()
        .iter()
        .flatten()
        .filter(|trip| {
            matches!(trip, Trip::Statements(statements)
                if statements.iter().any(|s| !s.starts_with(PREPARE) && s.contains(CALL)))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_and_reads_are_counted_on_the_wire() {
    // Arrange: an instance whose database connections are relayed; the
    // event follower's reads are counted too, so they are what a change
    // costs the instance in all.
    let relay = Relay::start().await;
    let schema = format!("reads_{}", uuid::Uuid::new_v4().simple());
    let (base, stop) = start(&relay, &schema).await;
    let client = reqwest::Client::new();
    let token = |round: usize| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let (status, body) = post_booking(&client, &base, &format!("C{round}")).await;
            assert_eq!(status, 201);
            body["token"]["tokenId"].as_str().unwrap().to_owned()
        }
    };
    let tokens = [token(0).await, token(1).await];
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Act
    let get = |path: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let response = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
        }
    };
    let cancel = round_trips_of(&relay, "INSERT INTO token_history", |round| {
        let (client, base, token) = (client.clone(), base.clone(), tokens[round].clone());
        async move {
            let response = client
                .post(format!("{base}/tokens/{token}/cancel"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    })
    .await;
    let token_read = round_trips_of(&relay, "FROM token_history", |round| {
        get(format!("/tokens/{}", tokens[round]))
    })
    .await;
    let slot_read = round_trips_of(&relay, "FROM slots", |_| get("/slots/D1-09".to_owned())).await;

    // Assert: the counts the README reports, from BEGIN to COMMIT (the
    // pool's ping on return comes after the answer).
    eprintln!(
        "round trips: a cancel {cancel}, GET /tokens/{{id}} {token_read}, GET /slots/{{id}} {slot_read}"
    );
    assert_eq!(cancel, 13, "a cancel's round trips");
    assert_eq!(token_read, 5, "a token read's round trips");
    assert_eq!(slot_read, 7, "a slot read's round trips");

    let _ = stop.send(());
    drop_schema(&schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_database_costs_no_answer() {
    // Arrange: an instance with pooled connections.
    let relay = Relay::start().await;
    let schema = format!("restart_{}", uuid::Uuid::new_v4().simple());
    let (base, stop) = start(&relay, &schema).await;
    let client = reqwest::Client::new();
    assert_eq!(book(&client, &base, "BEFORE").await, 201);

    // Act: every connection is dropped, as when the database restarts.
    relay.drop_connections();
    let after = book(&client, &base, "AFTER").await;
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();

    // Assert: the dead pooled connection was not handed out twice; the
    // booking was made on a new one.
    assert_eq!(after, 201);
    assert_eq!(health.status(), 200);
    let slot = get_json(&client, &format!("{base}/slots/D1-09")).await;
    let patients: Vec<&str> = slot["allocated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|token| token["patientId"].as_str().unwrap())
        .collect();
    assert_eq!(patients, ["BEFORE", "AFTER"]);

    let _ = stop.send(());
    drop_schema(&schema);
}
