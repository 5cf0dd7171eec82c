//! Online backups and restore (README "Backups"): a backup taken while
//! bookings go on restores into a fresh data directory with everything
//! acknowledged before it began, its invariants and its event ids; the
//! schedule follows the service's clock and keeps the newest backups; the
//! route is for admin keys; `restore` refuses a data directory in use and
//! a file that is not a sound backup. On PostgreSQL, a restored `pg_dump`
//! serves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use jiff::SignedDuration;
use opd::store::{Event, EventKind};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{Backend, DataDir, TestApp, TestClock, T0};

/// The server binary, for the operator's subcommands.
const BINARY: &str = env!("CARGO_BIN_EXE_opd-token-engine");

const KEYS: &str = "boss admin EXAMPLE-admin-key-0001;desk front-desk EXAMPLE-desk-key-00003";
const ADMIN_KEY: &str = "EXAMPLE-admin-key-0001";
const DESK_KEY: &str = "EXAMPLE-desk-key-00003";

/// Slots the booking load spreads over, and their seats: small enough
/// that the load bumps and waitlists.
const SLOTS: usize = 8;
const CAPACITY: u32 = 40;
const SOURCES: [&str; 4] = ["WALK_IN", "ONLINE", "FOLLOW_UP", "EMERGENCY"];

/// A temporary directory of the test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir()
            .join("opd-backup-tests")
            .join(Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates the load's slots today.
async fn create_slots(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    for index in 0..SLOTS {
        let id = format!("B-{index}");
        app.create_slot(&json!({
            "slotId": id,
            "doctorId": format!("DB-{index}"),
            "startTime": "09:00",
            "endTime": "10:00",
            "capacity": CAPACITY,
        }))
        .await;
        ids.push(id);
    }
    ids
}

/// Books `count` tokens from `tasks` tasks at once, or until `stop`;
/// returns the ids of the bookings answered 201, in the order answered.
async fn book_many(
    app: &TestApp,
    slots: &[String],
    tasks: usize,
    count: Option<usize>,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<String>>>,
) {
    let mut running = Vec::new();
    for task in 0..tasks {
        let (client, url) = (app.client.clone(), app.url("/tokens"));
        let slots = slots.to_vec();
        let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
        running.push(tokio::spawn(async move {
            let mut sent = 0usize;
            while !stop.load(Ordering::SeqCst) && count.is_none_or(|count| sent < count) {
                let n = task + tasks * sent;
                let body = json!({
                    "patientId": format!("P-{}", Uuid::new_v4().simple()),
                    "slotId": slots[n % slots.len()],
                    // Emergencies are rare, so the slots do not overbook
                    // past the cap.
                    "source": SOURCES[if n.is_multiple_of(37) { 3 } else { n % 3 }],
                });
                sent += 1;
                let response = client.post(&url).json(&body).send().await.unwrap();
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap();
                if status == 201 {
                    let id = answer["token"]["tokenId"].as_str().unwrap().to_owned();
                    acknowledged.lock().unwrap().push(id);
                } else {
                    // A full waitlist refuses: the load goes on.
                    assert_eq!(status, 409, "{answer}");
                }
            }
        }));
    }
    for task in running {
        task.await.unwrap();
    }
}

/// Every event of the service's log, in id order.
async fn all_events(app: &TestApp) -> Vec<Event> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = app.service.events_after(after, 1_000).await.unwrap();
        let Some(last) = page.events.last() else {
            return events;
        };
        after = last.id;
        events.extend(page.events);
    }
}

/// Each token's status and slot after the events up to `last` (ids).
fn tokens_as_of(events: &[Event], last: u64) -> HashMap<Uuid, (String, String)> {
    let mut tokens = HashMap::new();
    for event in events.iter().filter(|event| event.id <= last) {
        if let EventKind::Token {
            token, slot, to, ..
        } = &event.kind
        {
            tokens.insert(*token, (to.as_str().to_owned(), slot.to_string()));
        }
    }
    tokens
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .args(args)
        .env_remove("OPD_DATA_DIR")
        .env_remove("OPD_URL")
        .env_remove("OPD_ADMIN_KEY")
        .output()
        .expect("the binary runs")
}

fn restore(file: &Path, data_dir: &Path) -> std::process::Output {
    run(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
}

async fn post_backup(app: &TestApp, key: Option<&str>) -> crate::helpers::Reply {
    let mut request = app.request(Method::POST, "/admin/backups");
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    app.send(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_bookings_restores_everything_acknowledged_before_it() {
    let backup_dir = TempDir::new();
    let dir = backup_dir.0.clone();
    let clock = TestClock::at(T0);
    let app = TestApp::with(Backend::Sqlite)
        .clock(clock.clone())
        .settings(move |config| config.backup_dir = Some(dir.clone()))
        .spawn()
        .await;
    let slots = create_slots(&app).await;
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    // Enough for a database of several megabytes, copied in many steps.
    let never = Arc::new(AtomicBool::new(false));
    book_many(&app, &slots, 8, Some(400), never, acknowledged.clone()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (app_slots, stop, acknowledged) = (slots.clone(), stop.clone(), acknowledged.clone());
        let app = &app;
        async move { book_many(app, &app_slots, 8, None, stop, acknowledged).await }
    };
    let backup = async {
        // Let the load get going, then take the backup in the middle of it.
        while acknowledged.lock().unwrap().len() < 3_400 {
            tokio::task::yield_now().await;
        }
        let before: Vec<String> = acknowledged.lock().unwrap().clone();
        let reply = post_backup(&app, None).await.expect_status(201);
        // And the load goes on after it.
        let after = acknowledged.lock().unwrap().len();
        while acknowledged.lock().unwrap().len() < after + 300 {
            tokio::task::yield_now().await;
        }
        stop.store(true, Ordering::SeqCst);
        (before, reply.body)
    };
    let ((), (before, answer)) = tokio::join!(load, backup);

    let path = PathBuf::from(answer["path"].as_str().unwrap());
    let last = answer["lastEventId"].as_u64().unwrap();
    assert_eq!(answer["file"], path.file_name().unwrap().to_str().unwrap());
    assert!(path.starts_with(&backup_dir.0), "{answer}");
    assert_eq!(answer["bytes"], std::fs::metadata(&path).unwrap().len());
    assert_eq!(answer["takenAt"], T0);
    assert!(
        answer["file"]
            .as_str()
            .unwrap()
            .starts_with("opd-backup-20300115T080000Z-e"),
        "{answer}"
    );

    let events = all_events(&app).await;
    let newest = events.last().unwrap().id;
    assert!(last < newest, "the load went on after the backup");
    let expected = tokens_as_of(&events, last);
    let later: Vec<Uuid> = tokens_as_of(&events, newest)
        .into_keys()
        .filter(|token| !expected.contains_key(token))
        .collect();
    assert!(!later.is_empty(), "bookings were made after the backup");
    // Every booking acknowledged before the backup began is in it.
    for token in &before {
        assert!(
            expected.contains_key(&token.parse::<Uuid>().unwrap()),
            "token {token} was acknowledged before the backup began"
        );
    }

    // Restore into a fresh data directory with the subcommand, and start.
    let fresh = DataDir::new();
    let restored = restore(&path, fresh.path());
    assert!(restored.status.success(), "{restored:?}");
    let said = String::from_utf8_lossy(&restored.stdout);
    assert!(
        said.contains(&format!(
            "{} tokens, events up to id {last}",
            expected.len()
        )),
        "{said}"
    );
    let restored = TestApp::with(Backend::Sqlite)
        .clock(clock.clone())
        .data_dir(Some(fresh))
        .spawn()
        .await;

    // Exactly the tokens of the backup, each in the status it had then.
    for (token, (status, _)) in &expected {
        let read = restored.token(&token.to_string()).await;
        assert_eq!(read["status"], status.as_str(), "{read}");
    }
    for token in &later {
        restored
            .get(&format!("/tokens/{token}"))
            .await
            .expect_status(404);
    }
    // Each slot's queues agree with its counts and with the statuses.
    for slot in &slots {
        let read = restored.slot(slot).await;
        let allocated = read["allocated"].as_array().unwrap();
        let waitlist = read["waitlist"].as_array().unwrap();
        assert_eq!(read["allocatedCount"], allocated.len(), "{read}");
        assert_eq!(read["waitlistCount"], waitlist.len(), "{read}");
        let count = |status: &str| {
            expected
                .values()
                .filter(|(to, of)| to == status && of == slot)
                .count()
        };
        assert_eq!(allocated.len(), count("ALLOCATED"), "{read}");
        assert_eq!(waitlist.len(), count("WAITLISTED"), "{read}");
        for (index, token) in waitlist.iter().enumerate() {
            assert_eq!(token["waitlistPosition"], index + 1, "{read}");
        }
        let emergencies = allocated
            .iter()
            .filter(|token| token["source"] == "EMERGENCY")
            .count();
        assert!(allocated.len() <= CAPACITY as usize + emergencies, "{read}");
    }

    // Event ids go on from the backup's newest, none reused.
    let page = restored.service.events_after(0, 1).await.unwrap();
    assert_eq!(page.newest, Some(last));
    restored.book("P-AFTER-RESTORE", &slots[0], "ONLINE").await;
    let page = restored.service.events_after(last, 10).await.unwrap();
    assert_eq!(page.events.first().unwrap().id, last + 1);
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_follow_the_clock_and_keep_the_newest() {
    let backup_dir = TempDir::new();
    let dir = backup_dir.0.clone();
    let app = TestApp::with(Backend::Sqlite)
        .settings(move |config| {
            config.backup_dir = Some(dir.clone());
            config.backup_every = Some(SignedDuration::from_hours(6));
            config.backup_keep = Some(2);
        })
        .spawn()
        .await;
    let names = || {
        let mut names: Vec<String> = std::fs::read_dir(&backup_dir.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    // None in the directory: the start-up's tick took one at once.
    let first = names();
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("opd-backup-20300115T080000Z-e"));
    app.service.tick().await.unwrap();
    assert_eq!(names(), first, "not due again before six hours");

    app.book("P-1", "D1-09", "ONLINE").await;
    app.clock.advance(SignedDuration::from_hours(6));
    app.service.tick().await.unwrap();
    let second = names();
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(second[1].starts_with("opd-backup-20300115T140000Z-e"));

    app.clock.advance(SignedDuration::from_hours(5));
    app.service.tick().await.unwrap();
    assert_eq!(names(), second);
    app.clock.advance(SignedDuration::from_hours(1));
    app.service.tick().await.unwrap();
    let third = names();
    assert_eq!(third.len(), 2, "the oldest is pruned: {third:?}");
    assert_eq!(third[0], second[1]);
    assert!(third[1].starts_with("opd-backup-20300115T200000Z-e"));

    let metrics = app.get("/metrics").await.expect_status(200).text;
    let at_20 = "2030-01-15T20:00:00Z".parse::<jiff::Timestamp>().unwrap();
    assert!(
        metrics.contains(&format!(
            "opd_backup_last_success_timestamp_seconds {}",
            at_20.as_second()
        )),
        "{metrics}"
    );
    assert!(metrics.contains("opd_backup_failures_total 0"), "{metrics}");

    // A restart goes on from the newest backup in the directory.
    let app = app.restart().await;
    assert_eq!(names(), third);
    app.clock.advance(SignedDuration::from_hours(6));
    app.service.tick().await.unwrap();
    assert_eq!(names().len(), 2);
    assert!(names()[1].starts_with("opd-backup-20300116T020000Z-e"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_scheduled_backup_is_counted_and_bookings_go_on() {
    let scratch = TempDir::new();
    // A file where the backup directory should be: no backup can be made.
    let blocked = scratch.0.join("not-a-directory");
    std::fs::write(&blocked, "in the way").unwrap();
    let dir = blocked.clone();
    let app = TestApp::with(Backend::Sqlite)
        .settings(move |config| {
            config.backup_dir = Some(dir.clone());
            config.backup_every = Some(SignedDuration::from_hours(6));
        })
        .spawn()
        .await;
    let metrics = app.get("/metrics").await.expect_status(200).text;
    assert!(metrics.contains("opd_backup_failures_total 1"), "{metrics}");
    app.book("P-1", "D1-09", "ONLINE").await;
    // Tried again five minutes on, not a whole period later.
    app.clock.advance(SignedDuration::from_mins(5));
    app.service.tick().await.unwrap();
    let metrics = app.get("/metrics").await.expect_status(200).text;
    assert!(metrics.contains("opd_backup_failures_total 2"), "{metrics}");
    app.book("P-2", "D1-09", "ONLINE").await;
    let failed = post_backup(&app, None).await.expect_status(500);
    assert_eq!(failed.body["code"], "BACKUP_FAILED");
    assert!(app.get("/healthz").await.status == 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_keys_take_backups() {
    let backup_dir = TempDir::new();
    let dir = backup_dir.0.clone();
    let app = TestApp::with(Backend::Sqlite)
        .settings(move |config| {
            config.backup_dir = Some(dir.clone());
            config.api_keys = Some(KEYS.parse().unwrap());
        })
        .spawn()
        .await;
    let refused = post_backup(&app, None).await.expect_status(401);
    assert_eq!(refused.body["code"], "UNAUTHORIZED");
    let refused = post_backup(&app, Some(DESK_KEY)).await.expect_status(403);
    assert_eq!(refused.body["code"], "FORBIDDEN");
    assert!(std::fs::read_dir(&backup_dir.0).unwrap().next().is_none());
    let taken = post_backup(&app, Some(ADMIN_KEY)).await.expect_status(201);
    let path = PathBuf::from(taken.body["path"].as_str().unwrap());
    // It holds patient ids: the server's user's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    // The subcommand asks the server the same way.
    let refused = run(&["backup", "--url", &app.address, "--api-key", DESK_KEY]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{refused:?}"
    );
    let asked = run(&["backup", "--url", &app.address, "--api-key", ADMIN_KEY]);
    assert!(asked.status.success(), "{asked:?}");
    // Stdout holds the path alone, so `file=$(opd-token-engine backup …)`
    // works and a reader that stops after one line breaks nothing.
    let said = String::from_utf8_lossy(&asked.stdout);
    assert_eq!(said.lines().count(), 1, "{said}");
    let path = PathBuf::from(said.trim_end());
    assert!(path.starts_with(&backup_dir.0), "{said}");
    assert!(path.exists(), "{said}");
    let summary = String::from_utf8_lossy(&asked.stderr);
    assert!(summary.contains("bytes, events up to id"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_refused_in_memory() {
    let app = TestApp::spawn(Backend::Memory).await;
    let refused = post_backup(&app, None).await.expect_status(409);
    assert_eq!(refused.body["code"], "BACKUP_UNSUPPORTED");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("in memory"),
        "{}",
        refused.body
    );
}

#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_refused_on_postgres_where_the_database_takes_them() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let refused = post_backup(&app, None).await.expect_status(409);
    assert_eq!(refused.body["code"], "BACKUP_UNSUPPORTED");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL"),
        "{}",
        refused.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_data_directory_in_use_and_an_unsound_file() {
    let backup_dir = TempDir::new();
    let dir = backup_dir.0.clone();
    let app = TestApp::with(Backend::Sqlite)
        .settings(move |config| config.backup_dir = Some(dir.clone()))
        .spawn()
        .await;
    let token = app.book("P-1", "D1-09", "ONLINE").await["token"]["tokenId"]
        .as_str()
        .unwrap()
        .to_owned();
    let taken = post_backup(&app, None).await.expect_status(201);
    let backup = PathBuf::from(taken.body["path"].as_str().unwrap());

    let entries = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    // The running server's directory is refused and left as it was.
    let data_dir = app.data_dir.as_ref().unwrap().path().to_path_buf();
    let in_use = entries(&data_dir);
    let refused = restore(&backup, &data_dir);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("in use by another server"), "{said}");
    assert_eq!(entries(&data_dir), in_use);
    app.book("P-2", "D1-09", "ONLINE").await;

    // Files that are no sound backup are refused, and nothing is left.
    let fresh = TempDir::new();
    let garbage = backup_dir.0.join("garbage.sqlite3");
    std::fs::write(&garbage, vec![7u8; 64 * 1024]).unwrap();
    let bytes = std::fs::read(&backup).unwrap();
    let truncated = backup_dir.0.join("truncated.sqlite3");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let newer = backup_dir.0.join("newer.sqlite3");
    std::fs::copy(&backup, &newer).unwrap();
    set_user_version(&newer, 999);
    let unsound: [(&PathBuf, &[&str]); 3] = [
        (&garbage, &["is not a sound database"]),
        (
            &truncated,
            &["is not a sound database", "fails SQLite's integrity check"],
        ),
        (
            &newer,
            &["has schema version 999; this build knows versions 1 to"],
        ),
    ];
    for (file, complaints) in unsound {
        let refused = restore(file, &fresh.0);
        assert!(!refused.status.success(), "{file:?}");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            complaints.iter().any(|complaint| said.contains(complaint)),
            "{file:?}: {said}"
        );
        assert!(entries(&fresh.0).is_empty(), "{:?}", entries(&fresh.0));
    }

    // A sound one is put in place, the previous database kept aside, and
    // the server starts from it.
    let app_dir = app.stop().await.unwrap();
    let restored = restore(&backup, app_dir.path());
    assert!(restored.status.success(), "{restored:?}");
    let names = entries(app_dir.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], "opd.sqlite3");
    assert!(
        names[1].starts_with("opd.sqlite3.before-restore-"),
        "{names:?}"
    );
    let app = TestApp::with(Backend::Sqlite)
        .data_dir(Some(app_dir))
        .spawn()
        .await;
    app.token(&token).await;
    // P-2 was booked after the backup.
    let slot = app.slot("D1-09").await;
    assert_eq!(slot["allocatedCount"], 1, "{slot}");
}

/// Sets a database file's schema version (`PRAGMA user_version`, bytes
/// 60-63 of the header, big-endian), as a later build would leave it.
fn set_user_version(file: &Path, version: u32) {
    use std::io::{Seek, SeekFrom, Write};
    let mut handle = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    handle.seek(SeekFrom::Start(60)).unwrap();
    handle.write_all(&version.to_be_bytes()).unwrap();
}

/// A PostgreSQL deployment is backed up with `pg_dump` (README "Backups"):
/// a dump of the service's schema, restored as a fresh schema, serves the
/// same tokens and takes new bookings, its event ids going on.
#[cfg(feature = "postgres-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_pg_dump_serves() {
    use std::io::Write;

    let app = TestApp::spawn(Backend::Postgres).await;
    let token = app.book("P-1", "D1-09", "ONLINE").await["token"]["tokenId"]
        .as_str()
        .unwrap()
        .to_owned();
    app.book("P-2", "D1-09", "WALK_IN").await;
    let newest = all_events(&app).await.last().unwrap().id;
    let schema = app.data_dir.as_ref().unwrap().schema();
    let url = crate::common::database_url();
    let dump = Command::new("pg_dump")
        .args([url.as_str(), "--schema", &schema, "--no-owner"])
        .output()
        .expect("pg_dump runs");
    assert!(dump.status.success(), "{dump:?}");
    let clock = app.clock.clone();
    let original = app.slot("D1-09").await;
    drop(app);

    // The dump names its schema; restored under a fresh one's name.
    let fresh = DataDir::new();
    let script = String::from_utf8(dump.stdout)
        .unwrap()
        .replace(&schema, &fresh.schema());
    let mut psql = Command::new("psql")
        .args([url.as_str(), "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql runs");
    psql.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(psql.wait().unwrap().success());

    let restored = TestApp::with(Backend::Postgres)
        .clock(clock)
        .data_dir(Some(fresh))
        .spawn()
        .await;
    assert_eq!(restored.slot("D1-09").await, original);
    assert_eq!(restored.token(&token).await["status"], "ALLOCATED");
    restored.book("P-3", "D1-09", "ONLINE").await;
    let page = restored.service.events_after(newest, 10).await.unwrap();
    assert!(page.events.first().unwrap().id > newest, "{page:?}");
    let ids: Vec<u64> = all_events(&restored)
        .await
        .iter()
        .map(|event| event.id)
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
}
