//! Spawns the real application on a free loopback port and talks to it over
//! HTTP, the way front-desk scripts do.
//!
//! Every scenario is an `async fn name(backend: Backend)`; `backend_tests!`
//! turns it into one `#[tokio::test]` per storage backend and
//! `durable_backend_tests!` into one per backend that survives a restart.
//! Adding a backend means adding a [`Backend`] variant, one arm to
//! [`Backend::configure`] and one line to each macro below.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One `#[tokio::test]` per backend for each scenario `async fn name(Backend)`.
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(crate::helpers::Backend::Memory).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::helpers::Backend::Sqlite).await
            }

            #[cfg(feature = "postgres-tests")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(crate::helpers::Backend::Postgres).await
            }
        }
    )+};
}

/// Like `backend_tests!`, for scenarios that restart the application and
/// so only make sense on backends that keep data.
macro_rules! durable_backend_tests {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::helpers::Backend::Sqlite).await
            }

            #[cfg(feature = "postgres-tests")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(crate::helpers::Backend::Postgres).await
            }
        }
    )+};
}

/// Where the application under test keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `--in-memory`: nothing survives a restart.
    Memory,
    /// The embedded SQLite store in a fresh temporary data directory.
    Sqlite,
    /// PostgreSQL at `OPD_TEST_DATABASE_URL` (default: the local server's
    /// `test` database), in a fresh schema named after the data directory.
    #[cfg_attr(not(feature = "postgres-tests"), allow(dead_code))]
    Postgres,
}

impl Backend {
    /// Points `config` at this backend's storage, creating it if `data_dir`
    /// is `None` (a fresh store) and reusing it otherwise (a restart).
    /// Settings from the environment (such as `DATABASE_URL`) must not
    /// pick another backend than the one asked for.
    fn configure(self, config: &mut opd::Config, data_dir: Option<DataDir>) -> Option<DataDir> {
        config.database_url = None;
        match self {
            Backend::Memory => {
                config.in_memory = true;
                None
            }
            Backend::Sqlite => {
                let dir = data_dir.unwrap_or_else(DataDir::new);
                config.in_memory = false;
                config.data_dir = dir.path().to_path_buf();
                Some(dir)
            }
            Backend::Postgres => {
                let dir = data_dir.unwrap_or_else(DataDir::new);
                config.in_memory = false;
                config.database_url = Some(crate::common::database_url());
                config.database_schema = Some(dir.schema());
                Some(dir)
            }
        }
    }
}

/// A unique directory under the system temporary directory, removed when
/// dropped.
#[derive(Debug)]
pub struct DataDir(PathBuf);

impl DataDir {
    pub fn new() -> DataDir {
        let path = std::env::temp_dir()
            .join("opd-api-tests")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&path).expect("cannot create a temporary data directory");
        DataDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The PostgreSQL schema that stands for this directory.
    pub fn schema(&self) -> String {
        let name = self
            .0
            .file_name()
            .expect("a named directory")
            .to_string_lossy();
        format!("api_{name}")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        if cfg!(feature = "postgres-tests") {
            crate::common::drop_schema(&self.schema());
        }
    }
}

/// The instant the test clock starts at; "today" is [`TODAY`] in UTC.
pub const T0: &str = "2030-01-15T08:00:00Z";
pub const TODAY: &str = "2030-01-15";

/// A clock the test sets by hand, shared with the application.
#[derive(Clone)]
pub struct TestClock(Arc<Mutex<Timestamp>>);

impl TestClock {
    pub fn at(instant: &str) -> TestClock {
        TestClock(Arc::new(Mutex::new(
            instant.parse().expect("an RFC 3339 instant"),
        )))
    }

    pub fn set(&self, instant: &str) {
        *self.0.lock().unwrap() = instant.parse().expect("an RFC 3339 instant");
    }

    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.0.lock().unwrap();
        *now = now.checked_add(by).expect("a representable instant");
    }

    fn as_clock(&self) -> opd::service::Clock {
        let now = self.0.clone();
        Arc::new(move || *now.lock().unwrap())
    }
}

/// Changes a test makes to the settings, applied again on every restart.
type Settings = Arc<dyn Fn(&mut opd::Config) + Send + Sync>;

/// How to start an application; see [`TestApp::with`].
pub struct Spawn {
    backend: Backend,
    /// `None` runs on the real clock through [`opd::Application::build`].
    clock: Option<TestClock>,
    timezone: String,
    data_dir: Option<DataDir>,
    settings: Option<Settings>,
    /// Another instance's PostgreSQL schema to share instead of a store of
    /// this application's own.
    shared_schema: Option<String>,
}

impl Spawn {
    pub fn clock(mut self, clock: TestClock) -> Spawn {
        self.clock = Some(clock);
        self
    }

    pub fn real_clock(mut self) -> Spawn {
        self.clock = None;
        self
    }

    pub fn timezone(mut self, zone: &str) -> Spawn {
        zone.clone_into(&mut self.timezone);
        self
    }

    /// Changes settings beyond the test defaults (limits, keys); a restart
    /// keeps them.
    pub fn settings(
        mut self,
        settings: impl Fn(&mut opd::Config) + Send + Sync + 'static,
    ) -> Spawn {
        self.settings = Some(Arc::new(settings));
        self
    }

    /// Reuses the storage of an application that was stopped.
    pub fn data_dir(mut self, data_dir: Option<DataDir>) -> Spawn {
        self.data_dir = data_dir;
        self
    }

    pub async fn spawn(self) -> TestApp {
        let mut config = opd::Config::for_tests();
        config.listen = "127.0.0.1:0".parse().expect("a socket address");
        config.timezone.clone_from(&self.timezone);
        // The demo schedule, whatever OPD_SCHEDULE and
        // OPD_SCHEDULE_TEMPLATES say.
        config.schedule = None;
        config.schedule_templates = None;
        if let Some(settings) = &self.settings {
            settings(&mut config);
        }
        let mut data_dir = self.backend.configure(&mut config, self.data_dir);
        if let Some(schema) = self.shared_schema {
            config.database_schema = Some(schema);
            // The schema belongs to the instance that made it.
            data_dir = None;
        }
        let application = match &self.clock {
            Some(clock) => opd::Application::build_with_clock(config, clock.as_clock()).await,
            None => opd::Application::build(config).await,
        }
        .expect("the application builds");
        let address = format!("http://{}", application.local_addr());
        let metrics_address = application
            .metrics_addr()
            .map(|address| format!("http://{address}"));
        let service = application.service();
        let reload = application.reload();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(application.serve(async move {
            let _ = stopped.await;
        }));
        TestApp {
            address,
            metrics_address,
            service,
            reload,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
            backend: self.backend,
            real_clock: self.clock.is_none(),
            clock: self.clock.unwrap_or_else(|| TestClock::at(T0)),
            timezone: self.timezone,
            settings: self.settings,
            data_dir,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }
}

/// A running application and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// `--metrics-listen`'s address, when the settings gave one.
    pub metrics_address: Option<String>,
    /// The application's service, for what HTTP does not show yet (the
    /// event log's subscribers).
    pub service: Arc<opd::service::Service>,
    /// What SIGHUP would read again, to reload without a signal.
    pub reload: opd::Reload,
    pub client: reqwest::Client,
    pub backend: Backend,
    /// The application's clock (unused when spawned with the real clock).
    pub clock: TestClock,
    real_clock: bool,
    timezone: String,
    settings: Option<Settings>,
    /// The SQLite data directory, removed when dropped: [`TestApp::stop`]
    /// hands it back to keep it for another application.
    pub data_dir: Option<DataDir>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// A fresh application on `backend`, with the demo schedule, whose
    /// clock stands at [`T0`].
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::with(backend).spawn().await
    }

    pub fn with(backend: Backend) -> Spawn {
        Spawn {
            backend,
            clock: Some(TestClock::at(T0)),
            timezone: "UTC".into(),
            data_dir: None,
            settings: None,
            shared_schema: None,
        }
    }

    /// A second instance on this application's PostgreSQL database, clock
    /// and settings; the database stays this application's.
    #[cfg_attr(not(feature = "postgres-tests"), allow(dead_code))]
    pub async fn another_instance(&self) -> TestApp {
        let dir = self.data_dir.as_ref().expect("an application with a store");
        let mut spawn = TestApp::with(Backend::Postgres)
            .clock(self.clock.clone())
            .timezone(&self.timezone);
        spawn.settings = self.settings.clone();
        spawn.shared_schema = Some(dir.schema());
        spawn.spawn().await
    }

    /// Shuts down gracefully, waits for the server to finish, and hands
    /// back the storage so another application can open it.
    pub async fn stop(mut self) -> Option<DataDir> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let server = self.server.take().expect("the server runs until stopped");
        tokio::time::timeout(Duration::from_secs(60), server)
            .await
            .expect("the server stops once asked to")
            .expect("the server task does not panic")
            .expect("the server stops without an error");
        self.data_dir.take()
    }

    /// Stops this application and starts a new one on the same storage,
    /// clock and settings.
    pub async fn restart(self) -> TestApp {
        let mut spawn = TestApp::with(self.backend)
            .clock(self.clock.clone())
            .timezone(&self.timezone);
        if self.real_clock {
            spawn = spawn.real_clock();
        }
        spawn.settings = self.settings.clone();
        spawn.data_dir(self.stop().await).spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn send(&self, request: RequestBuilder) -> Reply {
        Reply::read(request.send().await.expect("the server answers")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::PATCH, path).json(body))
            .await
    }

    /// A request with a raw body and, if given, a `Content-Type`.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut request = self.request(method, path).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.send(request).await
    }

    pub async fn try_book(&self, patient: &str, slot: &str, source: &str) -> Reply {
        self.post_json("/tokens", &booking(patient, slot, source))
            .await
    }

    /// Books and checks the 201 and its `Location`; returns the body.
    pub async fn book(&self, patient: &str, slot: &str, source: &str) -> Value {
        let reply = self
            .try_book(patient, slot, source)
            .await
            .expect_status(201);
        let id = reply.body["token"]["tokenId"]
            .as_str()
            .expect("a booking answer has token.tokenId");
        assert_eq!(
            reply.header("location"),
            Some(format!("/tokens/{id}").as_str())
        );
        reply.body
    }

    pub async fn book_keyed(&self, key: &str, body: &Value) -> Reply {
        self.send(
            self.request(Method::POST, "/tokens")
                .header("idempotency-key", key)
                .json(body),
        )
        .await
    }

    pub async fn try_cancel(&self, token_id: &str) -> Reply {
        self.send(self.request(Method::POST, &format!("/tokens/{token_id}/cancel")))
            .await
    }

    pub async fn cancel(&self, token_id: &str) -> Value {
        self.try_cancel(token_id).await.expect_status(200).body
    }

    pub async fn try_no_show(&self, token_id: &str) -> Reply {
        self.send(self.request(Method::POST, &format!("/tokens/{token_id}/no-show")))
            .await
    }

    pub async fn no_show(&self, token_id: &str) -> Value {
        self.try_no_show(token_id).await.expect_status(200).body
    }

    /// `POST /tokens/{id}/{action}` for any action of the OPD day.
    pub async fn try_act(&self, token_id: &str, action: &str) -> Reply {
        self.send(self.request(Method::POST, &format!("/tokens/{token_id}/{action}")))
            .await
    }

    pub async fn act(&self, token_id: &str, action: &str) -> Value {
        self.try_act(token_id, action).await.expect_status(200).body
    }

    pub async fn try_call_next(&self, doctor: &str) -> Reply {
        self.send(self.request(Method::POST, &format!("/doctors/{doctor}/call-next")))
            .await
    }

    /// `GET /doctors/{id}/queue` (today).
    pub async fn queue(&self, doctor: &str) -> Value {
        self.get(&format!("/doctors/{doctor}/queue"))
            .await
            .expect_status(200)
            .body
    }

    /// `GET /tokens/{id}`: the token with its history.
    pub async fn token(&self, token_id: &str) -> Value {
        self.get(&format!("/tokens/{token_id}"))
            .await
            .expect_status(200)
            .body
    }

    /// `GET /slots/{id}`: the summary with both queues.
    pub async fn slot(&self, slot_id: &str) -> Value {
        self.get(&format!("/slots/{slot_id}"))
            .await
            .expect_status(200)
            .body
    }

    /// The exact text of `GET /slots/{id}`, to show that nothing changed.
    pub async fn slot_text(&self, slot_id: &str) -> String {
        self.get(&format!("/slots/{slot_id}"))
            .await
            .expect_status(200)
            .text
    }

    /// `GET /slots` with a query string such as `?doctorId=D1`.
    pub async fn slots(&self, query: &str) -> Value {
        self.get(&format!("/slots{query}"))
            .await
            .expect_status(200)
            .body
    }

    /// `POST /slots`, checking the 201 and its `Location`.
    pub async fn create_slot(&self, body: &Value) -> Value {
        let reply = self.post_json("/slots", body).await.expect_status(201);
        let id = reply.body["slotId"].as_str().expect("a slot has slotId");
        assert_eq!(
            reply.header("location"),
            Some(format!("/slots/{id}").as_str())
        );
        reply.body
    }

    /// A slot three days after today, 09:00–10:00 with ten seats, for
    /// tests that move the clock a day or more on: the demo slot closes at
    /// the end of today.
    pub async fn slot_days_ahead(&self) -> String {
        let today: jiff::civil::Date = self.slot("D1-09").await["date"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let id = "LATER-09";
        self.create_slot(&json!({
            "slotId": id,
            "doctorId": "D-LATER",
            "date": (today + jiff::ToSpan::days(3)).to_string(),
            "startTime": "09:00",
            "endTime": "10:00",
            "capacity": 10,
        }))
        .await;
        id.to_owned()
    }

    /// A new slot today, 09:00–10:00, for a doctor of its own, so that its
    /// token numbers start at 1 and ids never clash with other tests.
    pub async fn new_slot(&self, capacity: u32) -> SlotRef {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let slot = SlotRef {
            id: format!("S-{suffix}"),
            doctor: format!("DR-{suffix}"),
            date: self.slot("D1-09").await["date"]
                .as_str()
                .unwrap()
                .to_owned(),
            start: "09:00".into(),
            end: "10:00".into(),
        };
        let created = self
            .create_slot(&json!({
                "slotId": slot.id,
                "doctorId": slot.doctor,
                "startTime": slot.start,
                "endTime": slot.end,
                "capacity": capacity,
            }))
            .await;
        // The closing time depends on the settings; tests of closing
        // check it.
        let mut expected = slot.summary(capacity, 0, 0);
        expected["closesAt"] = created["closesAt"].clone();
        assert_eq!(created, expected);
        slot
    }

    pub async fn try_set_capacity(&self, slot_id: &str, capacity: Value) -> Reply {
        self.patch_json(
            &format!("/slots/{slot_id}"),
            &json!({ "capacity": capacity }),
        )
        .await
    }

    pub async fn set_capacity(&self, slot_id: &str, capacity: u32) -> Value {
        self.try_set_capacity(slot_id, json!(capacity))
            .await
            .expect_status(200)
            .body
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as sent.
    pub text: String,
    /// The body parsed as JSON, or `null` if it is not JSON.
    pub body: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a readable body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("a text header"))
    }

    #[track_caller]
    pub fn expect_status(self, status: u16) -> Reply {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }
}

/// A slot a test created, for building the SlotSummary it expects.
#[derive(Debug, Clone)]
pub struct SlotRef {
    pub id: String,
    pub doctor: String,
    pub date: String,
    pub start: String,
    pub end: String,
}

impl SlotRef {
    /// The demo schedule's `D1-09` on [`TODAY`].
    pub fn d1_09() -> SlotRef {
        SlotRef {
            id: "D1-09".into(),
            doctor: "D1".into(),
            date: TODAY.into(),
            start: "09:00".into(),
            end: "10:00".into(),
        }
    }

    /// The exact Token of a new booking in this slot made at `at`;
    /// `state` is its status and waitlist position.
    pub fn token(
        &self,
        id: &str,
        number: u64,
        patient: &str,
        source: &str,
        state: (&str, Option<u64>),
        at: &str,
    ) -> Value {
        json!({
            "tokenId": id,
            "tokenNumber": number,
            "patientId": patient,
            "slotId": self.id,
            "doctorId": self.doctor,
            "source": source,
            "priority": priority(source),
            "status": state.0,
            "waitlistPosition": state.1,
            "checkedInAt": null,
            "queuePosition": null,
            "estimatedCallAt": null,
            "createdAt": at,
            "updatedAt": at,
        })
    }

    /// The exact SlotSummary for these counts, derived fields included.
    pub fn summary(&self, capacity: u32, allocated: u32, waitlisted: u32) -> Value {
        summary(
            &self.id,
            &self.doctor,
            &self.date,
            (&self.start, &self.end),
            (capacity, allocated, waitlisted),
        )
    }
}

/// The exact SlotSummary of an open slot with `capacity`, `allocated` and
/// `waitlisted` counts, in a clinic on UTC without `--close-after-minutes`:
/// it closes at the end of its date.
pub fn summary(
    id: &str,
    doctor: &str,
    date: &str,
    (start, end): (&str, &str),
    counts: (u32, u32, u32),
) -> Value {
    let (capacity, allocated, waitlisted) = counts;
    json!({
        "slotId": id,
        "doctorId": doctor,
        "date": date,
        "startTime": start,
        "endTime": end,
        "capacity": capacity,
        "allocatedCount": allocated,
        "waitlistCount": waitlisted,
        "available": capacity.saturating_sub(allocated),
        "overbooked": allocated > capacity,
        "overbookedBy": allocated.saturating_sub(capacity),
        "closed": false,
        "closesAt": format!("{}T00:00:00Z", date.parse::<jiff::civil::Date>().unwrap().tomorrow().unwrap()),
    })
}

/// A `POST /slots` body; without `date` when `date` is `None`.
pub fn slot_body(
    id: &str,
    doctor: &str,
    date: Option<&str>,
    (start, end): (&str, &str),
    capacity: u32,
) -> Value {
    let mut body = json!({
        "slotId": id,
        "doctorId": doctor,
        "startTime": start,
        "endTime": end,
        "capacity": capacity,
    });
    if let Some(date) = date {
        body["date"] = json!(date);
    }
    body
}

/// A `POST /tokens` body.
pub fn booking(patient: &str, slot: &str, source: &str) -> Value {
    json!({ "patientId": patient, "slotId": slot, "source": source })
}

/// The priority the contract gives a source.
pub fn priority(source: &str) -> u64 {
    match source {
        "EMERGENCY" => 1,
        "PAID" => 2,
        "FOLLOW_UP" => 3,
        "ONLINE" => 4,
        "WALK_IN" => 5,
        other => panic!("unknown source {other}"),
    }
}

/// The token id of a booking or action answer (`{"token": …}`) or of a
/// Token itself.
pub fn id_of(value: &Value) -> String {
    let token = if value.get("token").is_some() {
        &value["token"]
    } else {
        value
    };
    token["tokenId"].as_str().expect("a tokenId").to_owned()
}

/// A `changes` entry for `token` (a Token or an answer holding one).
pub fn change(token: &Value, from: &str, to: &str, reason: &str) -> Value {
    let token = if token.get("token").is_some() {
        &token["token"]
    } else {
        token
    };
    json!({
        "tokenId": token["tokenId"],
        "patientId": token["patientId"],
        "from": from,
        "to": to,
        "reason": reason,
    })
}

/// `base` with the fields of `overrides` replaced, for stating how a token
/// that was checked exactly before looks after a change.
pub fn with(base: &Value, overrides: Value) -> Value {
    let mut merged = base.clone();
    let fields = merged.as_object_mut().expect("an object");
    for (key, value) in overrides.as_object().expect("an object of overrides") {
        fields.insert(key.clone(), value.clone());
    }
    merged
}

/// The Token as a booking answer showed it, without the history that
/// `GET /tokens/{id}` adds.
pub fn without_history(detail: &Value) -> Value {
    let mut token = detail.clone();
    token.as_object_mut().expect("an object").remove("history");
    token
}

/// The patient ids of a slot detail's `allocated` list, in order.
pub fn allocated_patients(detail: &Value) -> Vec<String> {
    patients(&detail["allocated"])
}

/// The patient ids and positions of a slot detail's `waitlist`, in order.
pub fn waitlist_patients(detail: &Value) -> Vec<(String, u64)> {
    detail["waitlist"]
        .as_array()
        .expect("a waitlist array")
        .iter()
        .map(|token| {
            (
                token["patientId"].as_str().unwrap().to_owned(),
                token["waitlistPosition"]
                    .as_u64()
                    .expect("a waitlisted token has a position"),
            )
        })
        .collect()
}

fn patients(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("an array of tokens")
        .iter()
        .map(|token| token["patientId"].as_str().unwrap().to_owned())
        .collect()
}

/// The `history` of a `GET /tokens/{id}` answer without the `actor` of
/// each entry, after checking that every entry names one and that every
/// `at` is RFC 3339 in UTC.
#[track_caller]
pub fn plain_history(detail: &Value) -> Value {
    let entries = detail["history"].as_array().expect("a history array");
    let plain = entries
        .iter()
        .map(|entry| {
            assert!(
                entry["actor"]
                    .as_str()
                    .is_some_and(|actor| !actor.is_empty()),
                "every history entry names its actor: {entry}"
            );
            assert_rfc3339_utc(&entry["at"]);
            let mut entry = entry.clone();
            entry.as_object_mut().unwrap().remove("actor");
            entry
        })
        .collect();
    Value::Array(plain)
}

/// One history entry as [`plain_history`] shows it.
pub fn entry(at: &str, from: Option<&str>, to: &str, reason: &str) -> Value {
    json!({ "at": at, "from": from, "to": to, "reason": reason })
}

/// Checks the problem+json shape every error shares: status, media type,
/// `type`, `title`, `status`, `detail` and `code`.
#[track_caller]
pub fn assert_problem(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "status of {}", reply.text);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert_eq!(
        content_type.split(';').next().map(str::trim),
        Some("application/problem+json"),
        "content type of {}",
        reply.text
    );
    let body = &reply.body;
    assert_eq!(body["code"], code, "code of {}", reply.text);
    assert_eq!(body["status"], status, "status field of {}", reply.text);
    let kind = body["type"].as_str().expect("type is a string");
    let normalized = |text: &str| text.to_ascii_lowercase().replace(['_', '-'], "");
    assert!(
        kind == "about:blank"
            || (kind.contains(':') && normalized(kind).contains(&normalized(code))),
        "type {kind:?} is neither about:blank nor a URI naming {code}"
    );
    for field in ["title", "detail"] {
        assert!(
            body[field].as_str().is_some_and(|text| !text.is_empty()),
            "{field} must be a non-empty string in {}",
            reply.text
        );
    }
}

/// Checks a 422 `VALIDATION_FAILED` naming exactly `fields` (in any order),
/// each with a message.
#[track_caller]
pub fn assert_validation(reply: &Reply, fields: &[&str]) {
    assert_problem(reply, 422, "VALIDATION_FAILED");
    let errors = reply.body["errors"].as_array().expect("errors is an array");
    let mut named: Vec<&str> = errors
        .iter()
        .map(|error| {
            assert!(
                error["message"]
                    .as_str()
                    .is_some_and(|message| !message.is_empty()),
                "every error has a message: {error}"
            );
            error["field"]
                .as_str()
                .expect("every error names its field")
        })
        .collect();
    named.sort_unstable();
    let mut expected = fields.to_vec();
    expected.sort_unstable();
    assert_eq!(named, expected, "fields of {}", reply.text);
}

/// Checks that `text` is an RFC 3339 timestamp in UTC.
#[track_caller]
pub fn assert_rfc3339_utc(text: &Value) {
    let text = text.as_str().expect("a timestamp string");
    let bytes = text.as_bytes();
    let shaped = bytes.len() >= 20
        && [4, 7].iter().all(|&i| bytes[i] == b'-')
        && bytes[10] == b'T'
        && [13, 16].iter().all(|&i| bytes[i] == b':')
        && text.ends_with('Z');
    assert!(shaped, "{text} is not an RFC 3339 timestamp in UTC");
    text.parse::<Timestamp>()
        .unwrap_or_else(|error| panic!("{text} is not RFC 3339: {error}"));
}
