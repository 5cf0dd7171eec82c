//! The embedded backend: one engine behind one lock, the idempotency
//! records, and (when durable) the journal that must accept a change before
//! it is acknowledged.
//!
//! Every write follows one path: take the lock, decide and apply in the
//! engine, append the change to the journal in engine order, release the
//! lock, then wait for the journal's group commit. The lock is never held
//! across a disk flush.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use jiff::Timestamp;
use uuid::Uuid;

use super::{Booking, Clock, IdempotencyKey, Rendered, ServiceError, IDEMPOTENCY_RETENTION};
use crate::engine::{
    Action, Actor, BookRequest, Capacity, CapacityOutcome, Context, Engine, Outcome, SlotId,
    SlotSpec, SlotSummary,
};
use crate::store::{Journal, Record, StoredIdempotency, Ticket};

pub(super) struct Local {
    state: RwLock<State>,
    /// `None` when the service runs in memory only.
    journal: Option<Journal>,
    clock: Clock,
}

struct State {
    engine: Engine,
    idempotency: Idempotency,
}

/// Remembered first answers to idempotent bookings, oldest first for
/// pruning.
#[derive(Default)]
struct Idempotency {
    records: HashMap<String, StoredIdempotency>,
    by_age: VecDeque<(Timestamp, String)>,
}

impl Idempotency {
    fn insert(&mut self, record: StoredIdempotency) {
        let cutoff = record.stored_at - IDEMPOTENCY_RETENTION;
        while let Some((stored_at, _)) = self.by_age.front() {
            if *stored_at >= cutoff {
                break;
            }
            let (_, key) = self.by_age.pop_front().expect("front exists");
            self.records.remove(&key);
        }
        self.by_age
            .push_back((record.stored_at, record.key.clone()));
        self.records.insert(record.key.clone(), record);
    }
}

impl Local {
    pub(super) fn new(
        engine: Engine,
        idempotency: Vec<StoredIdempotency>,
        journal: Option<Journal>,
        clock: Clock,
    ) -> Local {
        let mut remembered = Idempotency::default();
        for record in idempotency {
            remembered.insert(record);
        }
        Local {
            state: RwLock::new(State {
                engine,
                idempotency: remembered,
            }),
            journal,
            clock,
        }
    }

    pub(super) fn storage_name(&self) -> &'static str {
        if self.journal.is_some() {
            "sqlite"
        } else {
            "memory"
        }
    }

    /// `false` once storage has failed or an invariant check panicked.
    pub(super) fn is_healthy(&self) -> bool {
        self.journal.as_ref().is_none_or(Journal::is_healthy) && !self.state.is_poisoned()
    }

    fn context(&self, actor: Actor) -> Context {
        Context {
            at: (self.clock)(),
            actor,
        }
    }

    /// Books a token; with a key, a retry replays the first answer.
    /// `render` turns the outcome into the response body, under the lock,
    /// so that the remembered answer is exactly the one sent.
    pub(super) async fn book(
        &self,
        request: BookRequest,
        key: Option<IdempotencyKey>,
        actor: Actor,
        render: impl Fn(&Outcome) -> String,
    ) -> Result<Booking, ServiceError> {
        let (booking, ticket) = {
            let mut state = self.write()?;
            let stored = key.as_ref().and_then(|key| {
                state
                    .idempotency
                    .records
                    .get(&key.key)
                    .map(|stored| (key, stored))
            });
            if let Some((key, stored)) = stored {
                if stored.fingerprint != key.fingerprint {
                    return Err(ServiceError::IdempotencyKeyReused);
                }
                let replay = Booking::Replayed(Rendered {
                    token: stored.token,
                    body: stored.response.clone(),
                });
                // A replay must not be seen before the original is durable.
                (replay, self.journal.as_ref().map(Journal::barrier))
            } else {
                let ctx = self.context(actor);
                let outcome = state.engine.book(request, &ctx)?;
                let rendered = Rendered {
                    token: outcome.token.id,
                    body: Arc::from(render(&outcome)),
                };
                let idempotency = key.map(|key| StoredIdempotency {
                    key: key.key,
                    fingerprint: key.fingerprint,
                    token: rendered.token,
                    response: rendered.body.clone(),
                    stored_at: ctx.at,
                });
                if let Some(record) = &idempotency {
                    state.idempotency.insert(record.clone());
                }
                let ticket = self.append(Record::Booked {
                    outcome,
                    ctx,
                    idempotency,
                });
                (Booking::Created(rendered), ticket)
            }
        };
        self.wait(ticket).await?;
        Ok(booking)
    }

    /// Cancels a token or marks it a no-show.
    pub(super) async fn act(
        &self,
        id: Uuid,
        action: Action,
        actor: Actor,
    ) -> Result<Outcome, ServiceError> {
        let (outcome, ticket) = {
            let mut state = self.write()?;
            let ctx = self.context(actor);
            let outcome = state.engine.act(id, action, &ctx)?;
            let ticket = self.append(Record::Acted {
                outcome: outcome.clone(),
                ctx,
            });
            (outcome, ticket)
        };
        self.wait(ticket).await?;
        Ok(outcome)
    }

    pub(super) async fn set_capacity(
        &self,
        slot: &SlotId,
        capacity: Capacity,
        actor: Actor,
    ) -> Result<CapacityOutcome, ServiceError> {
        let (outcome, ticket) = {
            let mut state = self.write()?;
            let ctx = self.context(actor);
            let outcome = state.engine.set_capacity(slot, capacity, &ctx)?;
            let ticket = self.append(Record::CapacityChanged {
                outcome: outcome.clone(),
                ctx,
            });
            (outcome, ticket)
        };
        self.wait(ticket).await?;
        Ok(outcome)
    }

    pub(super) async fn create_slot(&self, spec: SlotSpec) -> Result<SlotSummary, ServiceError> {
        let (summary, ticket) = {
            let mut state = self.write()?;
            let summary = state.engine.create_slot(spec)?;
            let ticket = self.append(Record::SlotCreated {
                slot: summary.clone(),
                at: (self.clock)(),
            });
            (summary, ticket)
        };
        self.wait(ticket).await?;
        Ok(summary)
    }

    /// Reads the engine. When durable, the answer waits until every change
    /// it could reflect is on disk, so no reader sees what a crash could
    /// undo.
    pub(super) async fn read<T>(&self, read: impl FnOnce(&Engine) -> T) -> Result<T, ServiceError> {
        let (value, ticket) = {
            let state = self.read_lock()?;
            (
                read(&state.engine),
                self.journal.as_ref().map(Journal::barrier),
            )
        };
        self.wait(ticket).await?;
        Ok(value)
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, State>, ServiceError> {
        if !self.is_healthy() {
            return Err(ServiceError::Unavailable);
        }
        // A poisoned lock means an invariant check panicked mid-mutation:
        // the state is suspect, so the service stops serving it.
        self.state.write().map_err(|_| ServiceError::Unavailable)
    }

    fn read_lock(&self) -> Result<RwLockReadGuard<'_, State>, ServiceError> {
        self.state.read().map_err(|_| ServiceError::Unavailable)
    }

    /// Queues a record in engine order; called with the write lock held.
    fn append(&self, record: Record) -> Option<Ticket> {
        self.journal.as_ref().map(|journal| journal.append(record))
    }

    async fn wait(&self, ticket: Option<Ticket>) -> Result<(), ServiceError> {
        match (&self.journal, ticket) {
            (Some(journal), Some(ticket)) => journal
                .durable(ticket)
                .await
                .map_err(|_| ServiceError::Unavailable),
            _ => Ok(()),
        }
    }
}
