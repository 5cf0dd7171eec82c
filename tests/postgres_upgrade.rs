//! Upgrading a PostgreSQL database: tokens written before a migration are
//! served as they were. The database is built with the earlier migrations
//! only and filled with rows in their shape, then a server starts on it,
//! applies the rest, and is asked over HTTP.
#![cfg(feature = "postgres-tests")]

use std::borrow::Cow;
use std::path::Path;

use serde_json::{json, Value};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

mod common;
use common::{database_url, drop_schema, fields, get_json};

/// A slot of capacity 1 as the schema before `0003_active_tokens` kept it:
/// P1 holds the seat, P2 and P4 wait, P3's token was cancelled. Tokens are
/// numbered 1-4 in arrival order, all booked ONLINE (priority 4).
const BEFORE_ACTIVE_COLUMN: &str = "
    INSERT INTO slots (slot_id, doctor_id, date, start_time, end_time, capacity,
                       allocated_count, waitlist_count, created_at)
        VALUES ('OLD-1', 'DOC', '2030-01-02', '09:00', '10:00', 1, 1, 2, 0);
    INSERT INTO doctor_days (doctor_id, date, numbers_issued) VALUES ('DOC', '2030-01-02', 4);
    SELECT setval('token_sequence', 4);
    INSERT INTO tokens (token_id, sequence, token_number, patient_id, slot_id, doctor_id,
                        source, priority, status, created_at, updated_at) VALUES
        ('00000000-0000-0000-0000-000000000001', 1, 1, 'P1', 'OLD-1', 'DOC', 'ONLINE', 4, 'ALLOCATED', 100, 100),
        ('00000000-0000-0000-0000-000000000002', 2, 2, 'P2', 'OLD-1', 'DOC', 'ONLINE', 4, 'WAITLISTED', 200, 200),
        ('00000000-0000-0000-0000-000000000003', 3, 3, 'P3', 'OLD-1', 'DOC', 'ONLINE', 4, 'CANCELLED', 300, 350),
        ('00000000-0000-0000-0000-000000000004', 4, 4, 'P4', 'OLD-1', 'DOC', 'ONLINE', 4, 'WAITLISTED', 400, 400);
    INSERT INTO token_history (token_id, doctor_id, at, from_status, to_status, reason, actor) VALUES
        ('00000000-0000-0000-0000-000000000001', 'DOC', 100, NULL, 'ALLOCATED', 'ALLOCATED', 'desk'),
        ('00000000-0000-0000-0000-000000000002', 'DOC', 200, NULL, 'WAITLISTED', 'WAITLISTED', 'desk'),
        ('00000000-0000-0000-0000-000000000003', 'DOC', 300, NULL, 'WAITLISTED', 'WAITLISTED', 'desk'),
        ('00000000-0000-0000-0000-000000000003', 'DOC', 350, 'WAITLISTED', 'CANCELLED', 'CANCELLED', 'desk'),
        ('00000000-0000-0000-0000-000000000004', 'DOC', 400, NULL, 'WAITLISTED', 'WAITLISTED', 'desk');
";

/// Applies the migrations numbered up to `last` to `schema`, as a server
/// of that version would have, and runs `sql` there.
async fn database_at_version(schema: &str, last: i64, sql: &str) {
    let options: PgConnectOptions = database_url().parse().expect("a valid database URL");
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .expect("PostgreSQL is reachable");
    sqlx::raw_sql(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.options([("search_path", schema)]))
        .await
        .unwrap();
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut migrator = Migrator::new(directory).await.unwrap();
    let earlier: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|migration| migration.version <= last)
        .cloned()
        .collect();
    assert_eq!(earlier.len() as i64, last, "migrations 1 to {last} exist");
    migrator.migrations = Cow::Owned(earlier);
    migrator.run(&pool).await.unwrap();
    sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stored_before_the_active_column_keep_their_status() {
    // Arrange: a database as the version before `active` left it, and a
    // server started on it.
    let schema = format!("upgrade_{}", uuid::Uuid::new_v4().simple());
    database_at_version(&schema, 2, BEFORE_ACTIVE_COLUMN).await;
    let mut config = opd::Config::for_tests();
    config.in_memory = false;
    config.database_url = Some(database_url());
    config.database_schema = Some(schema.clone());
    config.database_connections = 2;
    let application = opd::Application::build(config)
        .await
        .expect("the app starts and migrates");
    let base = format!("http://{}", application.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.serve(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let token = |n: u8| format!("{base}/tokens/00000000-0000-0000-0000-00000000000{n}");

    // Assert: the slot shows its active tokens, and only those.
    let slot = get_json(&client, &format!("{base}/slots/OLD-1")).await;
    assert_eq!(fields(&slot["allocated"], "patientId"), [&json!("P1")]);
    assert_eq!(
        fields(&slot["waitlist"], "patientId"),
        [&json!("P2"), &json!("P4")]
    );
    let fourth = get_json(&client, &token(4)).await;
    assert_eq!(
        (&fourth["status"], &fourth["waitlistPosition"]),
        (&json!("WAITLISTED"), &json!(2)),
        "the cancelled token ahead of it does not count: {fourth}"
    );

    // The cancelled token has ended: it cannot be cancelled again, and its
    // patient may book the slot anew.
    let again = client
        .post(format!("{}/cancel", token(3)))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["code"], "INVALID_TRANSITION");
    let rebooked = client
        .post(format!("{base}/tokens"))
        .json(&json!({"patientId": "P3", "slotId": "OLD-1", "source": "ONLINE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rebooked.status(), 201);
    let rebooked: Value = rebooked.json().await.unwrap();
    assert_eq!(
        (
            &rebooked["token"]["status"],
            &rebooked["token"]["waitlistPosition"],
            &rebooked["token"]["tokenNumber"]
        ),
        (&json!("WAITLISTED"), &json!(3), &json!(5)),
        "{rebooked}"
    );

    // An active token written before the upgrade still moves: cancelling
    // the seat holder promotes the head of the waitlist.
    let cancelled = client
        .post(format!("{}/cancel", token(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let slot = get_json(&client, &format!("{base}/slots/OLD-1")).await;
    assert_eq!(fields(&slot["allocated"], "patientId"), [&json!("P2")]);
    assert_eq!(
        fields(&slot["waitlist"], "patientId"),
        [&json!("P4"), &json!("P3")]
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    drop_schema(&schema);
}

/// A downgrade is refused: a database that a newer release migrated
/// (here, one more migration than this release has) does not start, and
/// the message says what happened and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_a_newer_release_does_not_start() {
    let schema = format!("upgrade_{}", uuid::Uuid::new_v4().simple());
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let known = Migrator::new(directory).await.unwrap().migrations.len() as i64;
    database_at_version(
        &schema,
        known,
        &format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES ({}, 'from a newer release', true, '\\x00', 1);",
            known + 1
        ),
    )
    .await;
    let mut config = opd::Config::for_tests();
    config.in_memory = false;
    config.database_url = Some(database_url());
    config.database_schema = Some(schema.clone());
    config.database_connections = 2;

    let refused = opd::Application::build(config)
        .await
        .err()
        .map(|error| error.to_string());

    let message = refused.expect("a database from a newer release is refused");
    assert!(
        message.contains(&format!("schema version {}", known + 1))
            && message.contains("newer than this release's")
            && message.contains("restore the backup"),
        "{message}"
    );
    drop_schema(&schema);
}
