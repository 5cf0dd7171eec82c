//! `GET /events`: the event log as Server-Sent Events, for the waiting-hall
//! board, the consoles and any system that follows the day.
//!
//! A stream subscribes to the service's live events first and only then
//! reads the log after the client's last id, page by page, so that between
//! them nothing is missed; live events the log already gave are skipped by
//! id. A stream ends when its client falls so far behind that the live
//! channel drops events for it (the client resumes by id), when the server
//! shuts down, or when the log cannot be read.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io::Write as _;
use std::pin::Pin;
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
use tokio::time::{Instant, Sleep};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::{Access, DoctorScope};
use super::dto::{self, SlotSummaryDto};
use super::error::{ApiError, FieldError, Result};
use super::metrics::{EventCounts, Metrics};
use super::routes::Routes;
use super::AppState;
use crate::engine::{DoctorId, SlotId};
use crate::service::Service;
use crate::store::events::{Event, EventKind, Published, PAGE_MAX, PUBLISHED_BACKLOG};

/// How long a stream may stay silent before a comment line is sent, so
/// that proxies and clients know it is alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The shortest time between two hand-ons of the fan-out, which bounds how
/// often a busy day wakes each open stream (a thousand screens woken at
/// every one of thousands of changes a second would take the server's
/// CPU from the bookings) and is the most an event waits for it. An event
/// after a quiet spell is handed on at once.
pub const COALESCE: Duration = Duration::from_millis(25);

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
/// are written as text by [`write_frame`].
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
    fn matches(&self, event: &Framed) -> bool {
        (self.doctors.is_empty() || self.doctors.contains(&event.doctor))
            && self
                .slot
                .as_ref()
                .is_none_or(|wanted| *wanted == event.slot)
    }

    /// Whether the stream carries every event of the channel it reads
    /// (the all-doctors channel, or its one doctor's), so that it can send
    /// a batch's shared bytes as they are.
    fn takes_whole_channel(&self) -> bool {
        self.slot.is_none() && self.doctors.len() <= 1
    }
}

/// One stream's state between the chunks it sends.
struct Streaming {
    app: AppState,
    filter: Filter,
    whole_channel: bool,
    live: broadcast::Receiver<Batch>,
    shutdown: watch::Receiver<bool>,
    /// Chunks ready to send, in order. A batch the stream carries whole is
    /// one shared chunk; frames picked one by one are first gathered in
    /// `picked`.
    ready: VecDeque<Bytes>,
    picked: Vec<u8>,
    /// The newest id passed on (sent, or filtered out), or before the
    /// first one the id the stream starts after.
    cursor: Option<u64>,
    /// Whether the log still has events the live channel did not carry.
    catching_up: bool,
    /// When the stream last sent something, and the timer that checks
    /// for silence. The timer is armed once per [`KEEP_ALIVE`], not once
    /// per wake: a thousand streams woken many times a second would
    /// otherwise spend much of their time arming and cancelling timers.
    last_sent: Instant,
    keep_alive: Pin<Box<Sleep>>,
}

impl Streaming {
    fn new(app: AppState, filter: Filter, live: broadcast::Receiver<Batch>) -> Streaming {
        let shutdown = app.shutdown.clone();
        let now = Instant::now();
        Streaming {
            app,
            whole_channel: filter.takes_whole_channel(),
            filter,
            live,
            shutdown,
            ready: VecDeque::new(),
            picked: Vec::new(),
            cursor: None,
            catching_up: false,
            last_sent: now,
            keep_alive: Box::pin(tokio::time::sleep_until(now + KEEP_ALIVE)),
        }
    }

    /// Queues the first page of the log, read after `after`, with a reset
    /// first when events after `after` were pruned.
    fn take_page(&mut self, after: u64, page: crate::store::Page) {
        if let Some(oldest) = page.oldest {
            if oldest > after + 1 {
                let reset = ResetDto { oldest_id: oldest };
                let data = serde_json::to_string(&reset).expect("a reset serializes");
                self.picked
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
            let (doctor, slot) = event_place(event);
            let wanted = (self.filter.doctors.is_empty() || self.filter.doctors.contains(doctor))
                && self
                    .filter
                    .slot
                    .as_ref()
                    .is_none_or(|wanted| wanted == slot);
            if wanted {
                write_frame(&mut self.picked, event);
            }
        }
    }

    /// Queues live events past the cursor that the filter lets through.
    fn take_live(&mut self, batch: &BatchData) {
        let skip = match self.cursor {
            Some(cursor) => batch.events.partition_point(|event| event.id <= cursor),
            None => 0,
        };
        let Some(last) = batch.events.last() else {
            return;
        };
        if skip == batch.events.len() {
            return;
        }
        self.cursor = Some(last.id);
        if self.whole_channel {
            // The common case: the batch's bytes, shared with every other
            // stream on the channel, with no copy.
            self.seal_picked();
            let from = batch.events[skip].start;
            self.ready.push_back(batch.frames.slice(from..));
            return;
        }
        for event in &batch.events[skip..] {
            if self.filter.matches(event) {
                self.picked
                    .extend_from_slice(&batch.frames[event.start..event.end]);
            }
        }
    }

    /// Moves the frames picked so far to the end of `ready`, so that
    /// what is queued after them goes out after them.
    fn seal_picked(&mut self) {
        if !self.picked.is_empty() {
            let picked = std::mem::take(&mut self.picked);
            self.ready.push_back(Bytes::from(picked));
        }
    }

    /// The next chunk to send, or `None` to end the stream.
    async fn next(mut self) -> Option<(Bytes, Streaming)> {
        loop {
            self.seal_picked();
            if let Some(chunk) = self.ready.pop_front() {
                self.last_sent = Instant::now();
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
                received = self.live.recv() => match received {
                    Ok(batch) => {
                        self.take_live(&batch);
                        // Whatever else is waiting goes out in the same write.
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
                    Err(_) => return None,
                },
                () = self.keep_alive.as_mut() => {
                    let now = Instant::now();
                    let due = self.last_sent + KEEP_ALIVE;
                    if now >= due {
                        self.picked.extend_from_slice(b":\n\n");
                        self.keep_alive.as_mut().reset(now + KEEP_ALIVE);
                    } else {
                        self.keep_alive.as_mut().reset(due);
                    }
                }
            }
        }
    }
}

/// What filters look at in an event, and where its frame lies in its
/// batch's bytes.
#[derive(Debug, Clone)]
pub struct Framed {
    id: u64,
    doctor: DoctorId,
    slot: SlotId,
    start: usize,
    end: usize,
}

/// Events as the fan-out hands them on to one channel, rendered once: the
/// frames of all of them as one run of bytes that every stream on the
/// channel shares.
#[derive(Debug, Default)]
pub struct BatchData {
    events: Vec<Framed>,
    frames: Bytes,
}

pub type Batch = Arc<BatchData>;

/// A batch being put together.
#[derive(Default)]
struct BatchBuilder {
    events: Vec<Framed>,
    frames: Vec<u8>,
}

impl BatchBuilder {
    /// Appends a frame already rendered for another batch.
    fn push(&mut self, event: &Framed, frame: &[u8]) {
        let start = self.frames.len();
        self.frames.extend_from_slice(frame);
        self.events.push(Framed {
            start,
            end: self.frames.len(),
            ..event.clone()
        });
    }

    fn render(&mut self, event: &Event) {
        let start = self.frames.len();
        write_frame(&mut self.frames, event);
        let (doctor, slot) = event_place(event);
        self.events.push(Framed {
            id: event.id,
            doctor: doctor.clone(),
            slot: slot.clone(),
            start,
            end: self.frames.len(),
        });
    }

    fn finish(self) -> Batch {
        Arc::new(BatchData {
            events: self.events,
            frames: Bytes::from(self.frames),
        })
    }
}

/// The doctor and slot an event belongs to.
fn event_place(event: &Event) -> (&DoctorId, &SlotId) {
    match &event.kind {
        EventKind::Token { doctor, slot, .. } => (doctor, slot),
        EventKind::Slot { slot, .. } => (&slot.doctor, &slot.id),
    }
}

/// Appends an event's `id`/`event`/`data` frame.
fn write_frame(out: &mut Vec<u8>, event: &Event) {
    let (name, data) = event_data(event);
    // Writing into a `Vec` cannot fail.
    let _ = write!(out, "id: {}\nevent: {name}\ndata: {data}\n\n", event.id);
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
    /// Starts handing on `service`'s events, counting them in `metrics`
    /// and recording there how long each took to reach the streams; runs
    /// until the runtime ends. When `shutdown` turns true every stream is
    /// woken, so that it sees the signal and ends.
    pub fn start(
        service: &Service,
        metrics: &Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Fanout> {
        let fanout = Arc::new(Fanout {
            all: std::sync::Mutex::new(broadcast::channel(PUBLISHED_BACKLOG).0),
            by_doctor: std::sync::Mutex::new(HashMap::new()),
            delivery_delay: metrics.delivery_delay(),
            clock: service.clock(),
        });
        let events = service.subscribe();
        let counts = EventCounts::new(Arc::clone(metrics));
        tokio::spawn(Arc::clone(&fanout).run(events, counts, shutdown));
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

    /// Hands on what the service tells, at most once per [`COALESCE`]:
    /// an event that comes after a quiet spell is handed on at once, and
    /// while events keep coming they are gathered until one interval after
    /// the last hand-on. A busy day thus wakes each stream at most once per
    /// interval instead of once per change, and a quiet one adds no delay.
    /// Every event received is counted in `counts` (`None` with metrics
    /// off) at once, whether or not a stream is open.
    async fn run(
        self: Arc<Fanout>,
        mut events: broadcast::Receiver<Published>,
        mut counts: Option<EventCounts>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut count = |published: &Published| {
            if let Some(counts) = counts.as_mut() {
                counts.count(published);
            }
        };
        let mut pending: Vec<Published> = Vec::new();
        let mut due: Option<Instant> = None;
        let mut last_hand_on: Option<Instant> = None;
        let mut watching_shutdown = true;
        loop {
            tokio::select! {
                received = events.recv() => match received {
                    Ok(published) => {
                        count(&published);
                        pending.push(published);
                        if due.is_none() {
                            let now = Instant::now();
                            let next = last_hand_on.map_or(now, |last| last + COALESCE);
                            if next <= now {
                                // Quiet until now: at once, with whatever
                                // else has come meanwhile.
                                while let Ok(more) = events.try_recv() {
                                    count(&more);
                                    pending.push(more);
                                }
                                self.hand_on(&pending);
                                pending.clear();
                                last_hand_on = Some(now);
                            } else {
                                due = Some(next);
                            }
                        }
                    }
                    // This task fell behind and lost events: every stream
                    // ends (its channel is replaced), and clients resume
                    // from the log.
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "event streams and metrics fell behind; streams reconnect and resume, counts go on from here");
                        pending.clear();
                        due = None;
                        self.doctors().clear();
                        // Streams hold receivers of the old channels, which close.
                        *self.all_sender() = broadcast::channel(PUBLISHED_BACKLOG).0;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.hand_on(&pending);
                    pending.clear();
                    due = None;
                    last_hand_on = Some(Instant::now());
                }
                stopping = shutdown.wait_for(|stopping| *stopping), if watching_shutdown => {
                    watching_shutdown = false;
                    if stopping.is_ok() {
                        self.wake_all();
                    }
                }
            }
        }
    }

    /// Sends every channel an empty batch: a stream woken by it finds the
    /// shutdown signal set and ends. (A stream that opens later sees the
    /// signal before it first waits.)
    fn wake_all(&self) {
        let empty: Batch = Arc::default();
        let _ = self.all_sender().send(Arc::clone(&empty));
        for sender in self.doctors().values() {
            let _ = sender.send(Arc::clone(&empty));
        }
    }

    fn hand_on(&self, published: &[Published]) {
        let mut doctors = self.doctors();
        // A doctor whose screens have all gone is forgotten.
        doctors.retain(|_, sender| sender.receiver_count() > 0);
        let all = self.all_sender();
        if doctors.is_empty() && all.receiver_count() == 0 {
            // No stream is open: nothing to render.
            return;
        }
        let now = (self.clock)();
        let mut everything = BatchBuilder::default();
        for event in published.iter().flat_map(|published| published.iter()) {
            let delay = now.duration_since(event.at).as_secs_f64().max(0.0);
            self.delivery_delay.record(delay);
            everything.render(event);
        }
        // Each doctor's share, in one pass over the batch.
        let mut theirs: HashMap<DoctorId, BatchBuilder> = HashMap::new();
        if !doctors.is_empty() {
            for event in &everything.events {
                if doctors.contains_key(&event.doctor) {
                    theirs
                        .entry(event.doctor.clone())
                        .or_default()
                        .push(event, &everything.frames[event.start..event.end]);
                }
            }
        }
        if all.receiver_count() > 0 {
            let _ = all.send(everything.finish());
        }
        drop(all);
        for (doctor, batch) in theirs {
            if let Some(sender) = doctors.get(&doctor) {
                let _ = sender.send(batch.finish());
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
