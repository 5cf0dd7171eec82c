//! Bare-stack reference server for the HTTP load benchmark (`loadtest/http.sh`).
//!
//! Why it exists: a requests-per-second figure for the OPD Token Engine means
//! little on its own on a 2-core machine where the load generator shares the
//! CPU with the server. This binary runs the *same* stack as the project
//! (tokio multi-threaded runtime with the default worker count, hyper, axum
//! 0.8 routing, serde/serde_json), parses the *same* request body into a typed
//! struct and answers with a JSON body of the same shape and roughly the same
//! size — but does no allocation work at all: no slot lookup, no locking, no
//! storage, no idempotency, no middleware. Its throughput is therefore the
//! ceiling that this machine, this HTTP stack and this load generator allow,
//! and the benchmark reports every mode of the project as a ratio to it:
//! `project rps / baseline rps` is the share of the bare stack's capacity left
//! after the engine's own work (allocation, tracing, durability, ...).
//!
//! Usage: `opd-bench-baseline 127.0.0.1:PORT`
//!
//! Routes (shapes follow `docs/API.md`):
//! - `POST /tokens` — `{"patientId","slotId","source"}` → `201` with
//!   `{"decision","token","changes":[],"slot"}` and a `Location` header;
//!   body that is not JSON → `400`, JSON with bad/missing fields → `422`.
//! - `POST /tokens/{id}/cancel`, `POST /tokens/{id}/no-show` → `200` with
//!   `{"token","changes":[],"slot"}`.
//! - `GET /healthz` → `200 {"status":"ok"}`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::{
    body::Bytes,
    extract::Path,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};

/// Monotonic counter standing in for the arrival sequence / token number.
static SEQ: AtomicU64 = AtomicU64::new(0);

const DATE: &str = "2030-01-07";
const CAPACITY: u64 = 50;

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Source {
    Emergency,
    Paid,
    FollowUp,
    Online,
    WalkIn,
}

impl Source {
    fn priority(self) -> u8 {
        match self {
            Source::Emergency => 1,
            Source::Paid => 2,
            Source::FollowUp => 3,
            Source::Online => 4,
            Source::WalkIn => 5,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BookRequest {
    patient_id: String,
    slot_id: String,
    source: Source,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Token<'a> {
    token_id: String,
    token_number: u64,
    patient_id: &'a str,
    slot_id: &'a str,
    doctor_id: &'a str,
    source: Source,
    priority: u8,
    status: &'static str,
    waitlist_position: Option<u64>,
    created_at: &'a str,
    updated_at: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SlotSummary<'a> {
    slot_id: &'a str,
    doctor_id: &'a str,
    date: &'static str,
    start_time: &'static str,
    end_time: &'static str,
    capacity: u64,
    allocated_count: u64,
    waitlist_count: u64,
    available: u64,
    overbooked: bool,
    overbooked_by: u64,
}

/// Stand-in for a side-effect change; always empty here.
#[derive(Serialize)]
struct Change {}

#[derive(Serialize)]
struct BookResponse<'a> {
    decision: &'static str,
    token: Token<'a>,
    changes: Vec<Change>,
    slot: SlotSummary<'a>,
}

#[derive(Serialize)]
struct ActionResponse<'a> {
    token: Token<'a>,
    changes: Vec<Change>,
    slot: SlotSummary<'a>,
}

/// A canonical-looking UUID (version 4 layout) derived from the counter.
fn token_id(n: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (n.wrapping_mul(0x9E37_79B9) & 0xffff_ffff),
        (n >> 16) & 0xffff,
        n & 0xfff,
        (n >> 12) & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

/// RFC 3339 UTC timestamp with millisecond precision, from the system clock
/// (the project stamps `createdAt`/`updatedAt` on every change too).
fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// `BD07-03-13` → `BD07`: the benchmark's slot ids start with `<doctor>-`.
fn doctor_of(slot_id: &str) -> &str {
    slot_id.split_once('-').map_or(slot_id, |(d, _)| d)
}

fn slot_summary<'a>(slot_id: &'a str, doctor_id: &'a str, n: u64) -> SlotSummary<'a> {
    let allocated = (n % CAPACITY) + 1;
    SlotSummary {
        slot_id,
        doctor_id,
        date: DATE,
        start_time: "09:00",
        end_time: "10:00",
        capacity: CAPACITY,
        allocated_count: allocated,
        waitlist_count: 0,
        available: CAPACITY - allocated,
        overbooked: false,
        overbooked_by: 0,
    }
}

fn problem(status: StatusCode, code: &str, detail: String) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or(""),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn book(body: Bytes) -> Response {
    let req: BookRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST", e.to_string())
        }
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "VALIDATION_FAILED",
                e.to_string(),
            )
        }
    };
    let n = SEQ.fetch_add(1, Ordering::Relaxed) + 1;
    let now = now_rfc3339();
    let id = token_id(n);
    let doctor_id = doctor_of(&req.slot_id);
    let location = format!("/tokens/{id}");
    let resp = BookResponse {
        decision: "ALLOCATED",
        token: Token {
            token_id: id,
            token_number: n,
            patient_id: &req.patient_id,
            slot_id: &req.slot_id,
            doctor_id,
            source: req.source,
            priority: req.source.priority(),
            status: "ALLOCATED",
            waitlist_position: None,
            created_at: &now,
            updated_at: &now,
        },
        changes: Vec::new(),
        slot: slot_summary(&req.slot_id, doctor_id, n),
    };
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(resp),
    )
        .into_response()
}

fn action(id: String, status: &'static str) -> Response {
    let n = SEQ.load(Ordering::Relaxed);
    let now = now_rfc3339();
    let resp = ActionResponse {
        token: Token {
            token_id: id,
            token_number: n,
            patient_id: "P-baseline",
            slot_id: "D1-09",
            doctor_id: "D1",
            source: Source::Online,
            priority: Source::Online.priority(),
            status,
            waitlist_position: None,
            created_at: &now,
            updated_at: &now,
        },
        changes: Vec::new(),
        slot: slot_summary("D1-09", "D1", n),
    };
    (StatusCode::OK, Json(resp)).into_response()
}

async fn cancel(Path(id): Path<String>) -> Response {
    action(id, "CANCELLED")
}

async fn no_show(Path(id): Path<String>) -> Response {
    action(id, "NO_SHOW")
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

fn app() -> Router {
    Router::new()
        .route("/tokens", post(book))
        .route("/tokens/{id}/cancel", post(cancel))
        .route("/tokens/{id}/no-show", post(no_show))
        .route("/healthz", get(healthz))
}

#[tokio::main] // multi-threaded runtime, default worker count (= cores)
async fn main() {
    let addr: SocketAddr = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(a)) => a,
        _ => {
            eprintln!("usage: opd-bench-baseline LISTEN_ADDR   (e.g. 127.0.0.1:8081)");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("opd-bench-baseline: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("opd-bench-baseline listening on {addr}");
    if let Err(e) = axum::serve(listener, app()).await {
        eprintln!("opd-bench-baseline: server error: {e}");
        std::process::exit(1);
    }
}
