//! The event log: every change, once it is durable, as a sequence of
//! events with strictly increasing ids.
//!
//! A change is one [`Record`]; [`Record::events`] is the one mapping from a
//! record to its events, in the order of the change's answer (a slot event
//! first, then the token acted on, then the other tokens it moved). Ids are
//! handed out in the order records are made, which is the order they
//! become durable: the embedded store appends records in engine order and
//! commits them in that order. The board, the consoles, metrics, reports
//! and the live stream read changes from here, never from a second path.

use std::sync::Arc;

use jiff::civil::Date;
use jiff::Timestamp;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::Record;
use crate::engine::{
    Absence, Actor, Context, DoctorId, Outcome, Reason, SlotId, SlotOutcome, SlotSummary, Source,
    Status, Timed, TokenChange, SYSTEM_ACTOR,
};

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Positive, strictly increasing, never reused.
    pub id: u64,
    pub at: Timestamp,
    pub actor: Actor,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// One status change of one token, its creation included. It carries
    /// no patient id: events are shown on public screens.
    Token {
        token: Uuid,
        number: u32,
        slot: SlotId,
        doctor: DoctorId,
        date: Date,
        source: Source,
        /// `None` on creation.
        from: Option<Status>,
        to: Status,
        reason: Reason,
        /// The call estimate the change's answer gave, when the change put
        /// the token into its doctor's call queue (a check-in, or a return
        /// after a skip); `None` otherwise.
        estimate: Option<Timestamp>,
    },
    /// A slot was created or changed; `slot` is as it stood after.
    Slot {
        reason: SlotReason,
        slot: SlotSummary,
    },
}

/// Why a slot event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotReason {
    Created,
    CapacityChanged,
    Closed,
}

impl SlotReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotReason::Created => "CREATED",
            SlotReason::CapacityChanged => "CAPACITY_CHANGED",
            SlotReason::Closed => "CLOSED",
        }
    }

    pub fn parse(name: &str) -> Option<SlotReason> {
        match name {
            "CREATED" => Some(SlotReason::Created),
            "CAPACITY_CHANGED" => Some(SlotReason::CapacityChanged),
            "CLOSED" => Some(SlotReason::Closed),
            _ => None,
        }
    }
}

/// Durable events as they are published: one message per change (or per
/// commit), so a busy log costs one channel send per change, not one per
/// event.
pub type Published = Arc<[Event]>;

/// Events are kept at least this long; older ones may be pruned.
pub const EVENT_RETENTION: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// The most events one read of the log returns.
pub const PAGE_MAX: usize = 1_000;

/// A read of the log: the events after an id, in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub events: Vec<Event>,
    /// The oldest id the log still keeps; `None` while it is empty. A
    /// reader that asked for the events after an id older than this one's
    /// predecessor has missed pruned events.
    pub oldest: Option<u64>,
    /// The newest id in the log when it was read; `None` while it is empty.
    pub newest: Option<u64>,
}

/// The log kept in memory when nothing is kept on disk: the newest events,
/// up to a fixed count, so a reconnecting reader can catch up; and, as the
/// stores keep them in `report_events`, the events day reports are made of
/// once they leave it.
#[derive(Debug, Default)]
pub struct MemoryLog {
    inner: std::sync::Mutex<MemoryEvents>,
}

#[derive(Debug, Default)]
struct MemoryEvents {
    log: std::collections::VecDeque<Event>,
    /// Reported events that left the log, by their slot's date, in id
    /// order, in chunks of [`KEPT_CHUNK`]: a date's events never move once
    /// kept, so keeping one never copies a date's whole list (which would
    /// stall the writer holding the engine's lock).
    kept: std::collections::BTreeMap<Date, Vec<Vec<Event>>>,
}

/// How many events the in-memory log keeps.
pub const MEMORY_LOG_MAX: usize = 100_000;

/// How many kept events one chunk holds.
const KEPT_CHUNK: usize = 4_096;

impl MemoryLog {
    /// Keeps a change's events, dropping the oldest past the bound; those
    /// of them day reports are made of are kept apart.
    pub fn append(&self, events: &[Event]) {
        let mut inner = self.lock();
        let MemoryEvents { log, kept } = &mut *inner;
        log.extend(events.iter().cloned());
        let excess = log.len().saturating_sub(MEMORY_LOG_MAX);
        for event in log.drain(..excess) {
            if !event.is_reported() {
                continue;
            }
            let chunks = kept.entry(event.date()).or_default();
            match chunks.last_mut() {
                Some(chunk) if chunk.len() < KEPT_CHUNK => chunk.push(event),
                _ => {
                    let mut chunk = Vec::with_capacity(KEPT_CHUNK);
                    chunk.push(event);
                    chunks.push(chunk);
                }
            }
        }
    }

    /// The events after `after`, at most `limit` of them.
    pub fn after(&self, after: u64, limit: usize) -> Page {
        let inner = self.lock();
        let log = &inner.log;
        let start = log.partition_point(|event| event.id <= after);
        Page {
            events: log.range(start..).take(limit).cloned().collect(),
            oldest: log.front().map(|event| event.id),
            newest: log.back().map(|event| event.id),
        }
    }

    /// The events the report of `date` is made of, kept and still in the
    /// log, in id order.
    pub fn report_events(&self, date: Date) -> Vec<Event> {
        let inner = self.lock();
        let kept = inner.kept.get(&date).into_iter().flatten().flatten();
        let logged = inner
            .log
            .iter()
            .filter(|event| event.is_reported() && event.date() == date);
        kept.chain(logged).cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryEvents> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Event {
    /// The date of the event's slot.
    pub fn date(&self) -> Date {
        match &self.kind {
            EventKind::Token { date, .. } => *date,
            EventKind::Slot { slot, .. } => slot.date,
        }
    }

    /// Whether day reports are made of it: token events and slot
    /// creations (which give the sessions' lengths).
    pub fn is_reported(&self) -> bool {
        match &self.kind {
            EventKind::Token { .. } => true,
            EventKind::Slot { reason, .. } => *reason == SlotReason::Created,
        }
    }
}

/// How many changes a subscriber may fall behind before it is told it
/// lagged (and resumes from the log by id). Bounded, so a slow subscriber
/// never holds the writer or the others back.
pub const PUBLISHED_BACKLOG: usize = 4_096;

/// Where durable events are told. Cheap to clone; sending with nobody
/// subscribed costs nothing but the check.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Published>,
}

impl Default for EventBus {
    fn default() -> EventBus {
        EventBus {
            sender: broadcast::channel(PUBLISHED_BACKLOG).0,
        }
    }
}

impl EventBus {
    /// Every event published from now on, in id order.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.sender.subscribe()
    }

    /// Whether anyone listens: events need not be built for nobody.
    pub fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Tells subscribers a record's events, which must be durable.
    pub fn publish(&self, events: Vec<Event>) {
        // An error only means nobody subscribed since the check.
        let _ = self.sender.send(Arc::from(events));
    }
}

/// A change as the engine reported it, borrowed: what its events are made
/// of. The journal's records and the PostgreSQL backend's transactions both
/// name their change this way, so both log the same events for it.
#[derive(Debug, Clone, Copy)]
pub enum Made<'a> {
    SlotCreated(&'a SlotSummary),
    /// A booking or an action on a token.
    Token(&'a Outcome),
    CapacityChanged(&'a SlotOutcome),
    SlotClosed(&'a SlotOutcome),
    Absence(&'a Absence),
    Timed(&'a [Timed]),
}

impl<'a> Made<'a> {
    /// How many events the change makes: the ids it takes.
    pub fn event_count(self) -> u64 {
        let count = match self {
            Made::SlotCreated(slot) => 1 + usize::from(slot.closed),
            Made::Token(outcome) => 1 + outcome.changes.len(),
            Made::CapacityChanged(_) | Made::SlotClosed(_) | Made::Absence(_) | Made::Timed(_) => {
                self.slot_parts()
                    .iter()
                    .map(|(reason, outcome)| usize::from(reason.is_some()) + outcome.changes.len())
                    .sum()
            }
        };
        count as u64
    }

    /// A change to slots, slot by slot in the order it was made: the slot
    /// event each part is told with (none for a day's end, which changes
    /// tokens only) and what the part did. Empty for the other changes.
    /// The events and both stores' writes follow this one list.
    pub fn slot_parts(self) -> Vec<(Option<SlotReason>, &'a SlotOutcome)> {
        match self {
            Made::SlotCreated(_) | Made::Token(_) => Vec::new(),
            Made::CapacityChanged(outcome) => vec![(Some(SlotReason::CapacityChanged), outcome)],
            Made::SlotClosed(outcome) => vec![(Some(SlotReason::Closed), outcome)],
            // A slot closed already is told only by its token events.
            Made::Absence(absence) => absence
                .slots
                .iter()
                .map(|part| (part.closed.then_some(SlotReason::Closed), &part.outcome))
                .collect(),
            Made::Timed(done) => done
                .iter()
                .map(|timed| match timed {
                    Timed::Closed(outcome) => (Some(SlotReason::Closed), outcome),
                    Timed::DayEnded(outcome) => (None, outcome),
                })
                .collect(),
        }
    }

    /// The change's events, numbered from `first_id`, in the order of its
    /// answer: a slot event before the token events it caused, the token
    /// acted on before the others.
    pub fn events(self, ctx: &Context, first_id: u64) -> Vec<Event> {
        let mut events = Vec::with_capacity(self.event_count() as usize);
        let mut push = |kind: EventKind| {
            events.push(Event {
                id: first_id + events.len() as u64,
                at: ctx.at,
                actor: ctx.actor.clone(),
                kind,
            });
        };
        match self {
            Made::SlotCreated(slot) => {
                push(EventKind::Slot {
                    reason: SlotReason::Created,
                    slot: slot.clone(),
                });
                // A slot created after its closing time is closed at once
                // by the system.
                if slot.closed {
                    push(EventKind::Slot {
                        reason: SlotReason::Closed,
                        slot: slot.clone(),
                    });
                    if let Some(closed) = events.last_mut() {
                        closed.actor = Arc::from(SYSTEM_ACTOR);
                    }
                }
            }
            Made::Token(outcome) => {
                for change in outcome.token_changes() {
                    push(token_event(&outcome.slot, change));
                }
            }
            Made::CapacityChanged(_) | Made::SlotClosed(_) | Made::Absence(_) | Made::Timed(_) => {
                for (reason, outcome) in self.slot_parts() {
                    if let Some(reason) = reason {
                        push(EventKind::Slot {
                            reason,
                            slot: outcome.slot.clone(),
                        });
                    }
                    for change in outcome.token_changes() {
                        push(token_event(&outcome.slot, change));
                    }
                }
            }
        }
        events
    }
}

impl Record {
    /// The change this record makes durable, and when and by whom.
    pub fn made(&self) -> (Made<'_>, &Context) {
        match self {
            Record::SlotCreated { slot, ctx } => (Made::SlotCreated(slot), ctx),
            Record::Booked { outcome, ctx, .. } | Record::Acted { outcome, ctx } => {
                (Made::Token(outcome), ctx)
            }
            Record::CapacityChanged { outcome, ctx } => (Made::CapacityChanged(outcome), ctx),
            Record::SlotClosed { outcome, ctx } => (Made::SlotClosed(outcome), ctx),
            Record::Absence { absence, ctx } => (Made::Absence(absence), ctx),
            Record::Timed { done, ctx } => (Made::Timed(done), ctx),
        }
    }

    /// How many events this record makes.
    pub fn event_count(&self) -> u64 {
        self.made().0.event_count()
    }

    /// The record's events, numbered from `first_id`.
    pub fn events(&self, first_id: u64) -> Vec<Event> {
        let (made, ctx) = self.made();
        made.events(ctx, first_id)
    }
}

fn token_event(slot: &SlotSummary, change: TokenChange<'_>) -> EventKind {
    EventKind::Token {
        token: change.token,
        number: change.number,
        slot: slot.id.clone(),
        doctor: slot.doctor.clone(),
        date: slot.date,
        source: change.source,
        from: change.from,
        to: change.to,
        reason: change.reason,
        estimate: change.estimated_call_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_event(id: u64) -> Event {
        Event {
            id,
            at: Timestamp::UNIX_EPOCH,
            actor: Arc::from("desk"),
            kind: EventKind::Token {
                token: Uuid::from_u128(u128::from(id)),
                number: id as u32,
                slot: SlotId::parse("D1-09").unwrap(),
                doctor: DoctorId::parse("D1").unwrap(),
                date: jiff::civil::date(2030, 1, 15),
                source: Source::Online,
                from: None,
                to: Status::Allocated,
                reason: Reason::Allocated,
                estimate: None,
            },
        }
    }

    fn ids(page: &Page) -> Vec<u64> {
        page.events.iter().map(|event| event.id).collect()
    }

    #[test]
    fn the_memory_log_reads_the_events_after_an_id_a_page_at_a_time() {
        let log = MemoryLog::default();
        assert_eq!(log.after(0, 10), Page::default());
        log.append(&(1..=5).map(token_event).collect::<Vec<_>>());

        assert_eq!(ids(&log.after(0, 3)), [1, 2, 3]);
        assert_eq!(ids(&log.after(3, 10)), [4, 5]);
        assert_eq!(ids(&log.after(5, 10)), [] as [u64; 0]);
        assert_eq!(log.after(2, 10).oldest, Some(1));
    }

    #[test]
    fn the_memory_log_keeps_what_reports_need_past_its_bound() {
        let log = MemoryLog::default();
        let count = MEMORY_LOG_MAX as u64 + 10;
        let mut events: Vec<Event> = (1..=count).map(token_event).collect();
        // A capacity change among the oldest: reports do not need it.
        let summary = SlotSummary {
            id: SlotId::parse("D1-09").unwrap(),
            doctor: DoctorId::parse("D1").unwrap(),
            date: jiff::civil::date(2030, 1, 15),
            start: jiff::civil::time(9, 0, 0, 0),
            end: jiff::civil::time(10, 0, 0, 0),
            capacity: 3,
            allocated: 0,
            waitlisted: 0,
            closes_at: Timestamp::UNIX_EPOCH,
            closed: false,
        };
        events[1].kind = EventKind::Slot {
            reason: SlotReason::CapacityChanged,
            slot: summary,
        };
        for chunk in events.chunks(1_000) {
            log.append(chunk);
        }

        let reported = log.report_events(jiff::civil::date(2030, 1, 15));
        let ids: Vec<u64> = reported.iter().map(|event| event.id).collect();
        let expected: Vec<u64> = (1..=count).filter(|id| *id != 2).collect();
        assert_eq!(ids, expected);
        assert_eq!(log.after(0, 1).oldest, Some(11));
        assert!(log.report_events(jiff::civil::date(2030, 1, 16)).is_empty());
    }

    #[test]
    fn the_memory_log_keeps_only_its_newest_events() {
        let log = MemoryLog::default();
        let count = MEMORY_LOG_MAX as u64 + 10;
        log.append(&(1..=count).map(token_event).collect::<Vec<_>>());

        let page = log.after(0, 2);
        assert_eq!(page.oldest, Some(11));
        assert_eq!(ids(&page), [11, 12]);
    }
}
