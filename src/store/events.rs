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
    Actor, Context, DoctorId, Reason, SlotId, SlotSummary, Source, Status, TokenChange,
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
}

impl SlotReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotReason::Created => "CREATED",
            SlotReason::CapacityChanged => "CAPACITY_CHANGED",
        }
    }

    pub fn parse(name: &str) -> Option<SlotReason> {
        match name {
            "CREATED" => Some(SlotReason::Created),
            "CAPACITY_CHANGED" => Some(SlotReason::CapacityChanged),
            _ => None,
        }
    }
}

/// Durable events as they are published: one message per record, so a
/// busy log costs one channel send per change, not one per event.
pub type Published = Arc<[Event]>;

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

impl Record {
    /// How many events this record makes: the ids it takes.
    pub fn event_count(&self) -> u64 {
        let count = match self {
            Record::SlotCreated { .. } => 1,
            Record::Booked { outcome, .. } | Record::Acted { outcome, .. } => {
                1 + outcome.changes.len()
            }
            Record::CapacityChanged { outcome, .. } => 1 + outcome.changes.len(),
        };
        count as u64
    }

    /// The record's events, numbered from `first_id`, in the order of the
    /// change's answer.
    pub fn events(&self, first_id: u64) -> Vec<Event> {
        let mut events = Vec::with_capacity(self.event_count() as usize);
        let mut next_id = first_id;
        let mut push = |ctx: &Context, kind: EventKind| {
            events.push(Event {
                id: next_id,
                at: ctx.at,
                actor: ctx.actor.clone(),
                kind,
            });
            next_id += 1;
        };
        match self {
            Record::SlotCreated { slot, ctx } => push(
                ctx,
                EventKind::Slot {
                    reason: SlotReason::Created,
                    slot: slot.clone(),
                },
            ),
            Record::Booked { outcome, ctx, .. } | Record::Acted { outcome, ctx } => {
                for change in outcome.token_changes() {
                    push(ctx, token_event(&outcome.slot, change));
                }
            }
            Record::CapacityChanged { outcome, ctx } => {
                push(
                    ctx,
                    EventKind::Slot {
                        reason: SlotReason::CapacityChanged,
                        slot: outcome.slot.clone(),
                    },
                );
                for change in outcome.token_changes() {
                    push(ctx, token_event(&outcome.slot, change));
                }
            }
        }
        events
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
    }
}
