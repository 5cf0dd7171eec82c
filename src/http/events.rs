//! `GET /events`: the event log as Server-Sent Events, for the waiting-hall
//! board, the consoles and any system that follows the day.
//!
//! A stream subscribes to the service's live events first and only then
//! reads the log after the client's last id, page by page, so that between
//! them nothing is missed; live events the log already gave are skipped by
//! id. A stream ends when its client falls so far behind that the live
//! channel drops events for it (the client resumes by id), when the server
//! shuts down, or when the log cannot be read.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::{Access, DoctorScope};
use super::dto::{self, SlotSummaryDto};
use super::error::{ApiError, FieldError, Result};
use super::routes::Routes;
use super::AppState;
use crate::engine::{DoctorId, SlotId};
use crate::service::Service;
use crate::store::events::{Event, EventKind, Published, PAGE_MAX, PUBLISHED_BACKLOG};

/// How long a stream may stay silent before a comment line is sent, so
/// that proxies and clients know it is alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long the fan-out gathers events before it hands them on. It bounds
/// how often a busy day wakes each open stream (a thousand screens at
/// thousands of changes a second would otherwise take the server's CPU),
/// at the price of at most this much delay.
pub const COALESCE: Duration = Duration::from_millis(10);

pub fn router() -> Routes {
    Routes::new().route(routes!(events), Access::Read(DoctorScope::EventFilters))
}

/// `data` of `event: token`: one status change of one token, its creation
/// included. No patient id: the board is a public screen.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenEventDto {
    pub at: String,
    pub token_id: uuid::Uuid,
    pub token_number: u32,
    pub slot_id: String,
    pub doctor_id: String,
    pub date: String,
    pub source: &'static str,
    /// `null` on creation.
    pub from: Option<&'static str>,
    pub to: &'static str,
    pub reason: &'static str,
    pub actor: String,
    /// When the token is expected to be called, as the answer to this
    /// change gave it: set when the change put the token into the call
    /// queue (a check-in, or a return after a skip), else `null`.
    pub estimated_call_at: Option<String>,
}

/// `data` of `event: slot`: a slot was created or changed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotEventDto {
    pub at: String,
    /// `CREATED` or `CAPACITY_CHANGED`.
    pub reason: &'static str,
    pub actor: String,
    pub slot: SlotSummaryDto,
}

/// One event of the stream as `text/event-stream` carries it: the schema of
/// each event, not of the whole body. Only the API document uses it; frames
/// are written as text by [`Rendered`].
#[derive(Debug, ToSchema)]
pub struct StreamEvent {
    /// The event's id; absent on `reset`.
    #[schema(pattern = r"^[0-9]+$")]
    pub id: Option<String>,
    /// `token`, `slot` or `reset`.
    pub event: String,
    /// One line of JSON: TokenEventDto, SlotEventDto or ResetDto.
    pub data: String,
}

/// `data` of `event: reset`: the events after the client's last id were
/// pruned; the stream goes on with the oldest one kept.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetDto {
    pub oldest_id: u64,
}

/// Follows the day's changes as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    params(
        ("doctorId" = Option<Vec<String>>, Query, description = "Only these doctors' events (repeatable). A doctor key sees only its own doctor's."),
        ("slotId" = Option<String>, Query, description = "Only this slot's events; with doctorId, an event must match both."),
        ("after" = Option<u64>, Query, description = "Start with the first event after this id (ignored beside a Last-Event-ID header)."),
        ("Last-Event-ID" = Option<u64>, Header, description = "Start with the first event after this id; a client that reconnects sends the last id it saw."),
    ),
    responses(
        (status = 200, content_type = "text/event-stream",
            description = "`id:` (strictly increasing), `event: token` (data: TokenEventDto), `event: slot` (data: SlotEventDto) or `event: reset` (data: ResetDto, when the events after the requested id were pruned), each once the change is durable; a comment line after 15 s without an event.",
            body = StreamEvent),
        (status = 403, description = "FORBIDDEN: a doctor key asked for another doctor's events", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "VALIDATION_FAILED: a filter or the start id is not valid", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response> {
    let Query(pairs) = query.map_err(|error| ApiError::Malformed(error.body_text()))?;
    let request = StreamRequest::parse(&headers, &pairs)?;
    // First subscribe, then read the log: every event is in one or the
    // other, and the overlap is skipped by id.
    let live = app.fanout.subscribe(&request.filter);
    let mut phase = Streaming::new(app.clone(), request.filter, live);
    // The first page is read here, so a log that cannot be read is a 503
    // rather than a stream that ends at once.
    match request.after {
        Some(after) => {
            let page = app.service.events_after(after, PAGE_MAX).await?;
            phase.take_page(after, page);
        }
        // The next new event: whatever the log already holds is skipped,
        // even if the live channel has yet to tell it.
        None => {
            let page = app.service.events_after(0, 0).await?;
            phase.cursor = Some(page.newest.unwrap_or(0));
        }
    }
    let frames = stream::unfold(phase, Streaming::next).map(Ok::<_, Infallible>);
    let mut response = Response::new(Body::from_stream(frames));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// What a client asked for.
struct StreamRequest {
    filter: Filter,
    /// Where to start: after this id, or (`None`) with the next new event.
    after: Option<u64>,
}

impl StreamRequest {
    fn parse(headers: &HeaderMap, pairs: &[(String, String)]) -> Result<StreamRequest> {
        let mut errors = Vec::new();
        let mut doctors = Vec::new();
        let mut slot = None;
        let mut after_query = None;
        for (name, value) in pairs {
            match name.as_str() {
                "doctorId" => match DoctorId::parse(value) {
                    Some(doctor) => doctors.push(doctor),
                    None => errors.push(FieldError::new("doctorId", ID_RULE)),
                },
                "slotId" => match SlotId::parse(value) {
                    Some(id) => slot = Some(id),
                    None => errors.push(FieldError::new("slotId", ID_RULE)),
                },
                "after" => after_query = Some(value.as_str()),
                _ => {}
            }
        }
        // The header wins; an `after` beside it is ignored, even if bad.
        let after = match headers.get("last-event-id") {
            Some(value) => {
                let parsed = value.to_str().ok().and_then(parse_id);
                if parsed.is_none() {
                    errors.push(FieldError::new("Last-Event-ID", START_RULE));
                }
                parsed
            }
            None => after_query.and_then(|raw| {
                let parsed = parse_id(raw);
                if parsed.is_none() {
                    errors.push(FieldError::new("after", START_RULE));
                }
                parsed
            }),
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(StreamRequest {
            filter: Filter { doctors, slot },
            after,
        })
    }
}

const ID_RULE: &str = "must be 1–64 characters of A–Z, a–z, 0–9, '.', '_' or '-'";
const START_RULE: &str = "must be a non-negative integer: the id of the last event seen";

fn parse_id(raw: &str) -> Option<u64> {
    // `u64::from_str` takes a leading `+`; an event id is digits only.
    (!raw.is_empty() && raw.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| raw.parse().ok())
        .flatten()
}

/// Which events a stream carries.
struct Filter {
    /// Empty: every doctor.
    doctors: Vec<DoctorId>,
    slot: Option<SlotId>,
}

impl Filter {
    fn matches(&self, event: &Rendered) -> bool {
        (self.doctors.is_empty() || self.doctors.contains(&event.doctor))
            && self
                .slot
                .as_ref()
                .is_none_or(|wanted| *wanted == event.slot)
    }
}

/// One stream's state between the chunks it sends.
struct Streaming {
    app: AppState,
    filter: Filter,
    live: broadcast::Receiver<Batch>,
    shutdown: watch::Receiver<bool>,
    /// Frames ready to send, as one chunk.
    ready: Vec<u8>,
    /// The newest id passed on (sent, or filtered out), or before the
    /// first one the id the stream starts after.
    cursor: Option<u64>,
    /// Whether the log still has events the live channel did not carry.
    catching_up: bool,
}

impl Streaming {
    fn new(app: AppState, filter: Filter, live: broadcast::Receiver<Batch>) -> Streaming {
        let shutdown = app.shutdown.clone();
        Streaming {
            app,
            filter,
            live,
            shutdown,
            ready: Vec::new(),
            cursor: None,
            catching_up: false,
        }
    }

    /// Queues the first page of the log, read after `after`, with a reset
    /// first when events after `after` were pruned.
    fn take_page(&mut self, after: u64, page: crate::store::Page) {
        if let Some(oldest) = page.oldest {
            if oldest > after + 1 {
                let reset = ResetDto { oldest_id: oldest };
                let data = serde_json::to_string(&reset).expect("a reset serializes");
                self.ready
                    .extend_from_slice(format!("event: reset\ndata: {data}\n\n").as_bytes());
            }
        }
        self.cursor = Some(after);
        self.take_log(page);
    }

    /// Queues a page of the log past the cursor that the filter lets
    /// through (rendered here: catching up is rare).
    fn take_log(&mut self, page: crate::store::Page) {
        self.catching_up = page.events.len() >= PAGE_MAX;
        for event in &page.events {
            if self.cursor.is_some_and(|cursor| event.id <= cursor) {
                continue;
            }
            self.cursor = Some(event.id);
            let rendered = Rendered::of(event);
            if self.filter.matches(&rendered) {
                self.ready.extend_from_slice(&rendered.frame);
            }
        }
    }

    /// Queues live events past the cursor that the filter lets through.
    fn take_live(&mut self, batch: &[Rendered]) {
        for rendered in batch {
            if self.cursor.is_some_and(|cursor| rendered.id <= cursor) {
                continue;
            }
            self.cursor = Some(rendered.id);
            if self.filter.matches(rendered) {
                self.ready.extend_from_slice(&rendered.frame);
            }
        }
    }

    /// The next chunk to send, or `None` to end the stream.
    async fn next(mut self) -> Option<(Bytes, Streaming)> {
        loop {
            if !self.ready.is_empty() {
                let chunk = Bytes::from(std::mem::take(&mut self.ready));
                return Some((chunk, self));
            }
            if *self.shutdown.borrow() {
                return None;
            }
            if self.catching_up {
                let after = self.cursor.expect("catching up starts from an id");
                let page = self.app.service.events_after(after, PAGE_MAX).await.ok()?;
                self.take_log(page);
                continue;
            }
            tokio::select! {
                received = tokio::time::timeout(KEEP_ALIVE, self.live.recv()) => match received {
                    Ok(Ok(batch)) => {
                        self.take_live(&batch);
                        // Whatever else is waiting goes out in the same chunk.
                        loop {
                            match self.live.try_recv() {
                                Ok(more) => self.take_live(&more),
                                Err(broadcast::error::TryRecvError::Empty) => break,
                                Err(_) => return None,
                            }
                        }
                    }
                    // Too far behind (or the fan-out restarted after it fell
                    // behind itself): the client reconnects with its last id
                    // and catches up from the log.
                    Ok(Err(_)) => return None,
                    Err(_) => self.ready.extend_from_slice(b":\n\n"),
                },
                _ = self.shutdown.changed() => return None,
            }
        }
    }
}

/// An event rendered once for every stream that carries it: its frame, and
/// what filters look at.
#[derive(Debug, Clone)]
pub struct Rendered {
    id: u64,
    doctor: DoctorId,
    slot: SlotId,
    frame: Bytes,
}

/// Rendered events as the fan-out hands them on: one change's or one
/// commit's.
pub type Batch = Arc<[Rendered]>;

impl Rendered {
    fn of(event: &Event) -> Rendered {
        let (doctor, slot) = match &event.kind {
            EventKind::Token { doctor, slot, .. } => (doctor.clone(), slot.clone()),
            EventKind::Slot { slot, .. } => (slot.doctor.clone(), slot.id.clone()),
        };
        let (name, data) = event_data(event);
        let frame = format!("id: {}\nevent: {name}\ndata: {data}\n\n", event.id);
        Rendered {
            id: event.id,
            doctor,
            slot,
            frame: Bytes::from(frame),
        }
    }
}

/// Hands the service's events to the streams that want them, rendered
/// once: the streams of one doctor's screens are woken only by that
/// doctor's events, the others by every event. Every stream shares this
/// one subscription to the service.
pub struct Fanout {
    /// Replaced whole when the fan-out falls behind, which ends every
    /// stream on it.
    all: std::sync::Mutex<broadcast::Sender<Batch>>,
    by_doctor: std::sync::Mutex<HashMap<DoctorId, broadcast::Sender<Batch>>>,
    /// Seconds from each change (by the service's clock) to the moment its
    /// event is handed to the open streams.
    delivery_delay: metrics::Histogram,
    clock: crate::service::Clock,
}

impl Fanout {
    /// Starts handing on `service`'s events, recording how long each
    /// took to reach the streams in `delivery_delay`; runs until the
    /// runtime ends.
    pub fn start(service: &Service, delivery_delay: metrics::Histogram) -> Arc<Fanout> {
        let fanout = Arc::new(Fanout {
            all: std::sync::Mutex::new(broadcast::channel(PUBLISHED_BACKLOG).0),
            by_doctor: std::sync::Mutex::new(HashMap::new()),
            delivery_delay,
            clock: service.clock(),
        });
        let events = service.subscribe();
        tokio::spawn(Arc::clone(&fanout).run(events));
        fanout
    }

    /// A receiver of the events `filter` may want: one doctor's only, when
    /// it asks for exactly one doctor.
    fn subscribe(&self, filter: &Filter) -> broadcast::Receiver<Batch> {
        match filter.doctors.as_slice() {
            [doctor] => self
                .doctors()
                .entry(doctor.clone())
                .or_insert_with(|| broadcast::channel(PUBLISHED_BACKLOG).0)
                .subscribe(),
            _ => self.all_sender().subscribe(),
        }
    }

    /// How many event streams are open.
    pub fn subscriber_count(&self) -> usize {
        let doctors: usize = self
            .doctors()
            .values()
            .map(broadcast::Sender::receiver_count)
            .sum();
        doctors + self.all_sender().receiver_count()
    }

    fn all_sender(&self) -> std::sync::MutexGuard<'_, broadcast::Sender<Batch>> {
        self.all.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn doctors(&self) -> std::sync::MutexGuard<'_, HashMap<DoctorId, broadcast::Sender<Batch>>> {
        self.by_doctor
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Gathers what the service tells for [`COALESCE`] after the first
    /// event, then hands it on as one batch: a busy day wakes each stream
    /// at most once per interval instead of once per change.
    async fn run(self: Arc<Fanout>, mut events: broadcast::Receiver<Published>) {
        let mut pending: Vec<Published> = Vec::new();
        let mut due: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                received = events.recv() => match received {
                    Ok(published) => {
                        pending.push(published);
                        due.get_or_insert_with(|| tokio::time::Instant::now() + COALESCE);
                    }
                    // This task fell behind and lost events: every stream
                    // ends (its channel is replaced), and clients resume
                    // from the log.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        tracing::warn!("event streams fell behind; they reconnect and resume");
                        pending.clear();
                        due = None;
                        self.doctors().clear();
                        // Streams hold receivers of the old channels, which close.
                        *self.all_sender() = broadcast::channel(PUBLISHED_BACKLOG).0;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    self.hand_on(pending.iter().flat_map(|published| published.iter()));
                    pending.clear();
                    due = None;
                }
            }
        }
    }

    fn hand_on<'a>(&self, published: impl Iterator<Item = &'a Event>) {
        let mut doctors = self.doctors();
        // A doctor whose screens have all gone is forgotten.
        doctors.retain(|_, sender| sender.receiver_count() > 0);
        let all = self.all_sender();
        if doctors.is_empty() && all.receiver_count() == 0 {
            // No stream is open: nothing to render.
            return;
        }
        let now = (self.clock)();
        let rendered: Batch = published
            .map(|event| {
                let delay = now.duration_since(event.at).as_secs_f64().max(0.0);
                self.delivery_delay.record(delay);
                Rendered::of(event)
            })
            .collect();
        let _ = all.send(Arc::clone(&rendered));
        drop(all);
        for (doctor, sender) in doctors.iter() {
            if rendered.iter().any(|event| event.doctor == *doctor) {
                let theirs: Batch = rendered
                    .iter()
                    .filter(|event| event.doctor == *doctor)
                    .cloned()
                    .collect();
                let _ = sender.send(theirs);
            }
        }
    }
}

/// An event's SSE name and its `data` as one line of JSON.
fn event_data(event: &Event) -> (&'static str, String) {
    let at = dto::timestamp(event.at);
    let actor = event.actor.to_string();
    let (name, data) = match &event.kind {
        EventKind::Token {
            token,
            number,
            slot,
            doctor,
            date,
            source,
            from,
            to,
            reason,
            estimate,
        } => (
            "token",
            serde_json::to_string(&TokenEventDto {
                at,
                token_id: *token,
                token_number: *number,
                slot_id: slot.to_string(),
                doctor_id: doctor.to_string(),
                date: dto::date(*date),
                source: source.as_str(),
                from: from.map(|status| status.as_str()),
                to: to.as_str(),
                reason: reason.as_str(),
                actor,
                estimated_call_at: estimate.map(dto::timestamp),
            }),
        ),
        EventKind::Slot { reason, slot } => (
            "slot",
            serde_json::to_string(&SlotEventDto {
                at,
                reason: reason.as_str(),
                actor,
                slot: SlotSummaryDto::from(slot),
            }),
        ),
    };
    (name, data.expect("an event serializes"))
}
