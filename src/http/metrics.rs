//! `GET /metrics`: the service's metrics in the Prometheus text format, for
//! the operators who keep it up.
//!
//! Every application has a registry of its own (a
//! `metrics-exporter-prometheus` recorder, never installed as the process's
//! global one), so several applications in one process (the tests) keep
//! their counts apart. Nothing is counted under a lock the request path
//! takes: a handle is an atomic counter or a lock-free sample bucket,
//! registered once and kept.
//!
//! What is counted where:
//! - requests, by route template, method and status, and their durations:
//!   the edge ([`RequestMetrics`]), with handles found in a table indexed by
//!   the route the access check matched;
//! - bookings by decision, token transitions, and how far the call
//!   estimate was off: from the durable events, counted by the event
//!   fan-out as it receives them ([`EventCounts`]), so they count what was
//!   made durable and nothing else;
//! - commits (their duration and size) and PostgreSQL retries: by the store
//!   and the service, through handles handed to them at start-up;
//! - health, open event streams and each doctor's waiting patients: read
//!   from the state when the metrics are scraped.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Access;
use super::error::ApiError;
use super::routes::Routes;
use super::AppState;
use crate::engine::{Decision, DoctorId, Reason, Status};
use crate::store::events::{Event, EventKind, Published};
use crate::store::{BackupMetrics, StorageMetrics};

/// The media type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The route label of requests whose path no route matches: one label for
/// all of them, so that scanners cannot grow the number of series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// How often histogram samples are folded into their buckets when nobody
/// scrapes: samples wait in a lock-free list until then, so this bounds
/// the memory they take.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Request durations, in seconds: from a quick in-memory answer to the
/// request timeout.
const REQUEST_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Commit durations, in seconds: an fsync on a fast disk to a slow one.
const COMMIT_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Records per commit: one per PostgreSQL transaction, up to the journal's
/// batch bound.
const BATCH_SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];
/// From a durable change to the moment the fan-out hands it to the open
/// streams, in seconds; the fan-out gathers for up to 25 ms.
const DELIVERY_SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Actual minus estimated call time, in seconds: negative when a patient
/// was called early.
const ESTIMATE_ERROR_SECONDS: &[f64] = &[
    -3600.0, -1800.0, -900.0, -600.0, -300.0, -120.0, -60.0, 0.0, 60.0, 120.0, 300.0, 600.0, 900.0,
    1800.0, 3600.0,
];

const REQUESTS: &str = "opd_http_requests_total";
const REQUEST_DURATION: &str = "opd_http_request_duration_seconds";
const BOOKINGS: &str = "opd_bookings_total";
const TRANSITIONS: &str = "opd_token_transitions_total";
const COMMIT_DURATION: &str = "opd_storage_commit_duration_seconds";
const COMMIT_BATCH: &str = "opd_storage_commit_batch_size";
const STORAGE_FAILED: &str = "opd_storage_failed";
const POSTGRES_RETRIES: &str = "opd_postgres_retries_total";
const STALE_COPIES: &str = "opd_postgres_stale_copies_total";
const COPY_READS: &str = "opd_postgres_copy_reads_total";
const COPY_REFRESHES: &str = "opd_postgres_copy_refreshes_total";
const FOLLOWER_COPY_REFRESHES: &str = "opd_postgres_follower_copy_refreshes_total";
const SUBSCRIBERS: &str = "opd_event_subscribers";
const DELIVERY_DELAY: &str = "opd_event_delivery_delay_seconds";
const ENGINE_SLOTS: &str = "opd_engine_slots";
const ENGINE_TOKENS: &str = "opd_engine_tokens";
const QUEUE_WAITING: &str = "opd_queue_waiting";
const ESTIMATE_ERROR: &str = "opd_wait_estimate_error_seconds";
const BACKUP_LAST_SUCCESS: &str = "opd_backup_last_success_timestamp_seconds";
const BACKUP_LAST_DURATION: &str = "opd_backup_last_duration_seconds";
const BACKUP_LAST_SIZE: &str = "opd_backup_last_size_bytes";
const BACKUP_FAILURES: &str = "opd_backup_failures_total";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The application's metrics: its registry and the handles kept for the
/// values read when scraped.
pub struct Metrics {
    /// False with `--metrics off`: nothing is recorded and `GET /metrics`
    /// answers 404.
    on: bool,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    storage_failed: Gauge,
    subscribers: Gauge,
    /// What the process's engine holds (embedded backend only).
    engine_slots: Gauge,
    engine_tokens: Gauge,
    /// Each doctor's waiting patients, registered as doctors appear on the
    /// board; a doctor no longer on today's board is set to 0.
    waiting: Mutex<HashMap<DoctorId, Gauge>>,
    delivery_delay: Histogram,
}

impl Metrics {
    /// The application's metrics; `on` is false with `--metrics off`.
    pub fn new(on: bool) -> Metrics {
        let buckets = [
            (REQUEST_DURATION, REQUEST_SECONDS),
            (COMMIT_DURATION, COMMIT_SECONDS),
            (COMMIT_BATCH, BATCH_SIZES),
            (DELIVERY_DELAY, DELIVERY_SECONDS),
            (ESTIMATE_ERROR, ESTIMATE_ERROR_SECONDS),
        ];
        let mut builder = PrometheusBuilder::new();
        for (name, bounds) in buckets {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.into()), bounds)
                .expect("bucket bounds are given");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let describe = [
            (REQUESTS, None, "HTTP requests answered, by route template, method and status"),
            (REQUEST_DURATION, Some(Unit::Seconds), "Time from a request's arrival to its answer, by route template and method"),
            (BOOKINGS, None, "Bookings made durable, by the engine's decision"),
            (TRANSITIONS, None, "Token status changes made durable (creations included), by new status and reason; on PostgreSQL every instance counts every instance's"),
            (COMMIT_DURATION, Some(Unit::Seconds), "Time one storage commit took (SQLite: the journal writer's transaction with its fsync; PostgreSQL: COMMIT)"),
            (COMMIT_BATCH, None, "Changes made durable by one commit"),
            (STORAGE_FAILED, None, "1 when storage cannot make changes durable (a failed SQLite commit, or PostgreSQL unreachable), else 0"),
            (POSTGRES_RETRIES, None, "PostgreSQL transactions tried again after losing a race, by SQLSTATE"),
            (STALE_COPIES, None, "Bookings in one call decided on a copy of their slot that another change had made stale: nothing was written and the booking was decided again"),
            (COPY_READS, None, "Slots read whole for an instance's copy to decide bookings in one call on: read first, or again when the copy could not be brought up by its changes"),
            (COPY_REFRESHES, None, "Copies of slots brought up to date by a booking, reading the tokens changed since, after the event log showed a change the copy lacked or the call found it stale"),
            (FOLLOWER_COPY_REFRESHES, None, "Copies of slots brought up to date by the event follower, in one read for all the slots a read of the log showed changed"),
            (SUBSCRIBERS, None, "Open event streams (GET /events)"),
            (DELIVERY_DELAY, Some(Unit::Seconds), "Time from a change to the moment its event is handed to the open event streams"),
            (QUEUE_WAITING, None, "Patients checked in and waiting to be called today, by doctor"),
            (ENGINE_SLOTS, None, "Slots the engine holds in memory: the live days (embedded SQLite: yesterday on, by default) or every day (in memory); older ones are read from storage"),
            (ENGINE_TOKENS, None, "Tokens the engine holds in memory, those of the slots in opd_engine_slots"),
            (ESTIMATE_ERROR, Some(Unit::Seconds), "Actual call time minus the estimatedCallAt the patient's check-in answer gave"),
            (BACKUP_LAST_SUCCESS, Some(Unit::Seconds), "When the newest successful backup was taken, in seconds since the Unix epoch; 0 until one is"),
            (BACKUP_LAST_DURATION, Some(Unit::Seconds), "How long the newest successful backup took"),
            (BACKUP_LAST_SIZE, Some(Unit::Bytes), "The newest successful backup's size"),
            (BACKUP_FAILURES, None, "Backups that failed (on demand or scheduled)"),
        ];
        for (name, unit, text) in describe {
            let key = metrics::KeyName::from_const_str(name);
            match name {
                REQUEST_DURATION | COMMIT_DURATION | COMMIT_BATCH | DELIVERY_DELAY
                | ESTIMATE_ERROR => recorder.describe_histogram(key, unit, text.into()),
                STORAGE_FAILED | SUBSCRIBERS | QUEUE_WAITING | ENGINE_SLOTS | ENGINE_TOKENS
                | BACKUP_LAST_SUCCESS | BACKUP_LAST_DURATION | BACKUP_LAST_SIZE => {
                    recorder.describe_gauge(key, unit, text.into())
                }
                _ => recorder.describe_counter(key, unit, text.into()),
            }
        }
        let storage_failed =
            recorder.register_gauge(&Key::from_static_name(STORAGE_FAILED), &METADATA);
        let subscribers = recorder.register_gauge(&Key::from_static_name(SUBSCRIBERS), &METADATA);
        let engine_slots = recorder.register_gauge(&Key::from_static_name(ENGINE_SLOTS), &METADATA);
        let engine_tokens =
            recorder.register_gauge(&Key::from_static_name(ENGINE_TOKENS), &METADATA);
        let delivery_delay =
            recorder.register_histogram(&Key::from_static_name(DELIVERY_DELAY), &METADATA);
        Metrics {
            on,
            recorder,
            handle,
            storage_failed,
            subscribers,
            engine_slots,
            engine_tokens,
            waiting: Mutex::new(HashMap::new()),
            delivery_delay,
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.recorder
            .register_histogram(&Key::from_parts(name, labels), &METADATA)
    }

    /// Whether metrics are recorded and served (`--metrics on`).
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// The handles storage records its commits with; with PostgreSQL, also
    /// a retry counter for each SQLSTATE the service retries. With metrics
    /// off, handles that record nothing.
    pub fn storage(&self, retried_sqlstates: &[&'static str]) -> StorageMetrics {
        if !self.on {
            return StorageMetrics::default();
        }
        StorageMetrics {
            commit_duration: self.histogram(COMMIT_DURATION, Vec::new()),
            batch_size: self.histogram(COMMIT_BATCH, Vec::new()),
            retries: retried_sqlstates
                .iter()
                .map(|sqlstate| {
                    let counter =
                        self.counter(POSTGRES_RETRIES, vec![Label::new("sqlstate", *sqlstate)]);
                    (*sqlstate, counter)
                })
                .collect(),
            stale_copies: self.counter(STALE_COPIES, Vec::new()),
            copy_reads: self.counter(COPY_READS, Vec::new()),
            copy_refreshes: self.counter(COPY_REFRESHES, Vec::new()),
            follower_copy_refreshes: self.counter(FOLLOWER_COPY_REFRESHES, Vec::new()),
        }
    }

    /// The handles backups are counted with.
    pub fn backups(&self) -> BackupMetrics {
        let gauge = |name| {
            self.recorder
                .register_gauge(&Key::from_static_name(name), &METADATA)
        };
        BackupMetrics {
            last_success: gauge(BACKUP_LAST_SUCCESS),
            last_duration: gauge(BACKUP_LAST_DURATION),
            last_bytes: gauge(BACKUP_LAST_SIZE),
            failures: self.counter(BACKUP_FAILURES, Vec::new()),
        }
    }

    /// The delay between a change and its hand-over to the event streams
    /// (a handle that records nothing with metrics off).
    pub fn delivery_delay(&self) -> Histogram {
        if !self.on {
            return Histogram::noop();
        }
        self.delivery_delay.clone()
    }

    /// Folds waiting histogram samples into their buckets.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Reads what is counted from the state (health, open streams, each
    /// doctor's waiting patients) and renders everything.
    pub async fn render(&self, app: &AppState) -> String {
        let healthy = app.service.is_healthy().await;
        self.storage_failed.set(if healthy { 0.0 } else { 1.0 });
        self.subscribers.set(app.fanout.subscriber_count() as f64);
        if let Some((slots, tokens)) = app.service.engine_size().await {
            self.engine_slots.set(slots as f64);
            self.engine_tokens.set(tokens as f64);
        }
        // The board is read only when storage is healthy: after a failed
        // commit nothing is served from memory, and a database that does
        // not answer would hold the scrape up to the request timeout. The
        // queues' gauges then keep their last values.
        let board = if healthy {
            app.service.board(None).await.ok()
        } else {
            None
        };
        if let Some((_, board)) = board {
            let mut waiting = self
                .waiting
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let today: HashSet<&DoctorId> = board.iter().map(|entry| &entry.doctor).collect();
            for (doctor, gauge) in waiting.iter() {
                if !today.contains(doctor) {
                    gauge.set(0.0);
                }
            }
            for entry in &board {
                waiting
                    .entry(entry.doctor.clone())
                    .or_insert_with(|| {
                        self.recorder.register_gauge(
                            &Key::from_parts(
                                QUEUE_WAITING,
                                vec![Label::new("doctor", entry.doctor.to_string())],
                            ),
                            &METADATA,
                        )
                    })
                    .set(f64::from(entry.waiting));
            }
        }
        self.handle.render()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(true)
    }
}

pub fn router() -> Routes {
    Routes::new().route(routes!(metrics), Access::Monitoring)
}

/// What `--metrics-listen` serves: `GET /metrics` without a key, and
/// nothing else (404). A scraper on the hospital's internal network reads
/// it; the main address serves the same to admin and viewer keys.
pub fn scrape_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(state)
}

/// The service's metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, content_type = "text/plain", description = "Prometheus text format (version 0.0.4)", body = String),
        (status = 404, description = "NOT_FOUND: the server runs with `--metrics off`", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn metrics(State(app): State<AppState>) -> Response {
    if !app.metrics.is_on() {
        return ApiError::MetricsOff.into_response();
    }
    let text = app.metrics.render(&app).await;
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// The methods requests are counted by; any other is counted as `OTHER`.
const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];
const METHOD_LABELS: usize = METHODS.len() + 1;

/// How many distinct statuses one route and method keep a handle for
/// each; a route answers far fewer. Past it, a status's counter is found
/// through the registry on every request.
const STATUSES_PER_CELL: usize = 16;

/// The handles of one route template and method.
#[derive(Default)]
struct Cell {
    duration: OnceLock<Histogram>,
    /// Claimed in order by the statuses as they first occur.
    statuses: [OnceLock<(u16, Counter)>; STATUSES_PER_CELL],
}

/// Request counts and durations, by route template, method and status.
/// The handles sit in a table indexed by route and method, each made when
/// first needed: counting a request is a few atomic loads, one atomic add
/// and one lock-free sample, with no lock and no allocation.
pub struct RequestMetrics {
    metrics: std::sync::Arc<Metrics>,
    /// A copy of [`Metrics::is_on`], read on every request.
    on: bool,
    /// Route templates by route index; the last label is for paths no
    /// route matches.
    routes: Vec<String>,
    cells: Box<[Cell]>,
}

impl RequestMetrics {
    /// Counts requests to `routes`, the route templates by the index the
    /// access check gives them.
    pub fn new(metrics: std::sync::Arc<Metrics>, mut routes: Vec<String>) -> RequestMetrics {
        routes.push(UNMATCHED_ROUTE.to_owned());
        let cells = (0..routes.len() * METHOD_LABELS)
            .map(|_| Cell::default())
            .collect();
        RequestMetrics {
            on: metrics.is_on(),
            metrics,
            routes,
            cells,
        }
    }

    /// Counts one answered request; `route` is the index of the matched
    /// route template, `None` when no route matched.
    pub fn record(&self, route: Option<usize>, method: &Method, status: u16, took: Duration) {
        if !self.on {
            return;
        }
        let route = route
            .filter(|route| *route < self.routes.len() - 1)
            .unwrap_or(self.routes.len() - 1);
        let method = METHODS
            .iter()
            .position(|each| each == method)
            .unwrap_or(METHODS.len());
        let cell = &self.cells[route * METHOD_LABELS + method];
        cell.duration
            .get_or_init(|| {
                self.metrics
                    .histogram(REQUEST_DURATION, self.labels(route, method, None))
            })
            .record(took.as_secs_f64());
        for slot in &cell.statuses {
            let (code, counter) = slot.get_or_init(|| {
                let counter = self
                    .metrics
                    .counter(REQUESTS, self.labels(route, method, Some(status)));
                (status, counter)
            });
            if *code == status {
                counter.increment(1);
                return;
            }
        }
        self.metrics
            .counter(REQUESTS, self.labels(route, method, Some(status)))
            .increment(1);
    }

    fn labels(&self, route: usize, method: usize, status: Option<u16>) -> Vec<Label> {
        let method = METHODS.get(method).map_or("OTHER", Method::as_str);
        let mut labels = vec![
            Label::new("route", self.routes[route].clone()),
            Label::new("method", method),
        ];
        if let Some(status) = status {
            labels.push(Label::new("status", status.to_string()));
        }
        labels
    }
}

/// Folds histogram samples into their buckets now and then, so that the
/// samples waiting for a scrape that does not come stay few. With metrics
/// off, returns at once.
pub async fn upkeep(metrics: std::sync::Arc<Metrics>) {
    if !metrics.is_on() {
        return;
    }
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        upkeep.tick().await;
        metrics.upkeep();
    }
}

/// What the durable events tell: bookings by decision, token transitions,
/// and how far each call came from the estimate its check-in gave. The
/// event fan-out counts each batch of events as it receives it, so that
/// counting costs no wake of a task of its own per change; owned by that
/// one task, the counts need no lock.
pub struct EventCounts {
    metrics: std::sync::Arc<Metrics>,
    bookings: Vec<(Decision, Counter)>,
    /// By status and reason (indexed as `Status::ALL` and `Reason::ALL`),
    /// each registered when it first occurs.
    transitions: Vec<Option<Counter>>,
    estimate_error: Histogram,
    /// The estimate each checked-in token's check-in answer gave, until
    /// it is called or leaves the call queue.
    estimates: HashMap<Uuid, Timestamp>,
}

impl EventCounts {
    /// The counts, or `None` with metrics off.
    pub fn new(metrics: std::sync::Arc<Metrics>) -> Option<EventCounts> {
        if !metrics.is_on() {
            return None;
        }
        let bookings = [
            Decision::Allocated,
            Decision::BumpedLower,
            Decision::Overbooked,
            Decision::Waitlisted,
        ]
        .into_iter()
        .map(|decision| {
            let label = Label::new("decision", decision.reason().as_str());
            (decision, metrics.counter(BOOKINGS, vec![label]))
        })
        .collect();
        Some(EventCounts {
            estimate_error: metrics.histogram(ESTIMATE_ERROR, Vec::new()),
            metrics,
            bookings,
            transitions: vec![None; Status::ALL.len() * Reason::ALL.len()],
            estimates: HashMap::new(),
        })
    }

    pub fn count(&mut self, published: &Published) {
        for event in published.iter() {
            self.count_one(event);
        }
    }

    fn count_one(&mut self, event: &Event) {
        let EventKind::Token {
            token,
            from,
            to,
            reason,
            estimate,
            ..
        } = &event.kind
        else {
            return;
        };
        if from.is_none() {
            if let Some(decision) = Decision::from_reason(*reason) {
                if let Some((_, counter)) = self.bookings.iter().find(|(d, _)| *d == decision) {
                    counter.increment(1);
                }
            }
        }
        let status = Status::ALL.iter().position(|each| each == to);
        let why = Reason::ALL.iter().position(|each| each == reason);
        let (Some(status), Some(why)) = (status, why) else {
            unreachable!("every status and reason is listed");
        };
        let metrics = &self.metrics;
        self.transitions[status * Reason::ALL.len() + why]
            .get_or_insert_with(|| {
                metrics.counter(
                    TRANSITIONS,
                    vec![
                        Label::new("to", to.as_str()),
                        Label::new("reason", reason.as_str()),
                    ],
                )
            })
            .increment(1);
        match (to, estimate) {
            (Status::CheckedIn, Some(estimate)) => {
                self.estimates.insert(*token, *estimate);
            }
            (Status::Called, _) => {
                if let Some(estimate) = self.estimates.remove(token) {
                    let error = event.at.duration_since(estimate);
                    self.estimate_error.record(error.as_secs_f64());
                }
            }
            // Most changes are of tokens that were never in the queue.
            _ if !self.estimates.is_empty() => {
                self.estimates.remove(token);
            }
            _ => {}
        }
    }
}
