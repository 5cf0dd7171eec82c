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

use jiff::tz::TimeZone;
use jiff::Timestamp;
use uuid::Uuid;

use super::{
    Booking, Clock, IdempotencyKey, IdempotencyLimits, LocalStart, Rendered, ServiceError,
};
use crate::engine::{
    Action, Actor, BookRequest, Capacity, Context, DoctorId, Engine, EngineError, Outcome, SlotId,
    SlotOutcome, SlotSpec, SlotSummary, SYSTEM_ACTOR,
};
use crate::store::events::MemoryLog;
use crate::store::{
    EventBus, Journal, Page, Record, Reservation, StoredIdempotency, Ticket, IDEMPOTENCY_RETENTION,
};

pub(super) struct Local {
    state: RwLock<State>,
    /// `None` when the service runs in memory only.
    journal: Option<Journal>,
    events: EventBus,
    /// The newest events, for readers catching up, when there is no
    /// journal to read them from.
    memory_log: MemoryLog,
    clock: Clock,
    /// The clinic's time zone, in which "today" is taken.
    zone: TimeZone,
}

struct State {
    engine: Engine,
    idempotency: Idempotency,
    /// The id of the newest event handed out.
    last_event: u64,
}

/// The write lock, and a place in the journal's queue taken with it.
struct Writer<'a> {
    state: RwLockWriteGuard<'a, State>,
    /// `None` in memory, where there is no journal.
    reservation: Option<Reservation<'a>>,
    local: &'a Local,
}

impl Writer<'_> {
    /// Queues a record in engine order, its events numbered on from the
    /// newest; the lock is released after. In memory nothing is kept: the
    /// events are told at once, still in order.
    fn append(mut self, record: Record) -> Option<Ticket> {
        let first_event = self.state.last_event + 1;
        self.state.last_event += record.event_count();
        match self.reservation {
            Some(reservation) => Some(reservation.append(record, first_event)),
            None => {
                let events = record.events(first_event);
                self.local.memory_log.append(&events);
                if self.local.events.has_subscribers() {
                    self.local.events.publish(events);
                }
                None
            }
        }
    }
}

/// A booking's answer as the write lock is released: rendered already, or
/// still to be rendered from the outcome. It lives on the stack for one
/// booking, so its size does not matter, and boxing the outcome would cost
/// every unkeyed booking an allocation.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Rendered(Booking),
    ToRender(Outcome),
}

/// Remembered first answers to idempotent bookings, per caller.
struct Idempotency {
    callers: HashMap<Actor, CallerKeys>,
    /// Keys remembered over all callers.
    total: usize,
    limits: IdempotencyLimits,
}

/// One caller's remembered keys, oldest first for pruning.
#[derive(Default)]
struct CallerKeys {
    records: HashMap<String, StoredIdempotency>,
    by_age: VecDeque<(Timestamp, String)>,
}

impl CallerKeys {
    /// Forgets the keys stored before `cutoff`; returns how many.
    fn prune(&mut self, cutoff: Timestamp) -> usize {
        let mut pruned = 0;
        while let Some((stored_at, _)) = self.by_age.front() {
            if *stored_at >= cutoff {
                break;
            }
            let (stored_at, key) = self.by_age.pop_front().expect("front exists");
            // A key used again after it expired has a newer record under
            // the same name, which stays.
            if self
                .records
                .get(&key)
                .is_some_and(|record| record.stored_at == stored_at)
            {
                self.records.remove(&key);
                pruned += 1;
            }
        }
        pruned
    }

    fn oldest(&self) -> Option<Timestamp> {
        self.by_age.front().map(|(stored_at, _)| *stored_at)
    }
}

impl Idempotency {
    fn new(limits: IdempotencyLimits) -> Idempotency {
        Idempotency {
            callers: HashMap::new(),
            total: 0,
            limits,
        }
    }

    /// Forgets every key past its retention at `now`. Callers are few
    /// (one per API key), so this visits each of them.
    fn prune(&mut self, now: Timestamp) {
        let cutoff = now - IDEMPOTENCY_RETENTION;
        for keys in self.callers.values_mut() {
            self.total -= keys.prune(cutoff);
        }
    }

    /// The caller's remembered answer for `key`, if it is still within its
    /// retention at `now`.
    fn get(&self, caller: &str, key: &str, now: Timestamp) -> Option<&StoredIdempotency> {
        let record = self.callers.get(caller)?.records.get(key)?;
        (record.stored_at >= now - IDEMPOTENCY_RETENTION).then_some(record)
    }

    /// Refuses a new key when the caller or the service remembers as many
    /// as it may, telling how long until the oldest one that counts is
    /// forgotten. Call after [`Idempotency::prune`].
    fn check_room(&self, caller: &str, now: Timestamp) -> Result<(), ServiceError> {
        let expires = |oldest: Timestamp| ServiceError::IdempotencyLimit {
            retry_after: (oldest + IDEMPOTENCY_RETENTION).duration_since(now),
        };
        if let Some(keys) = self.callers.get(caller) {
            if keys.records.len() >= self.limits.per_caller {
                return Err(expires(keys.oldest().unwrap_or(now)));
            }
        }
        if self.total >= self.limits.total {
            let oldest = self.callers.values().filter_map(CallerKeys::oldest).min();
            return Err(expires(oldest.unwrap_or(now)));
        }
        Ok(())
    }

    /// Remembers a record. Loading from storage calls this without a
    /// room check: what was stored stays until it expires.
    fn insert(&mut self, record: StoredIdempotency) {
        let keys = self.callers.entry(record.caller.clone()).or_default();
        keys.by_age
            .push_back((record.stored_at, record.key.clone()));
        if keys.records.insert(record.key.clone(), record).is_none() {
            self.total += 1;
        }
    }
}

impl Local {
    pub(super) fn new(
        start: LocalStart,
        idempotency_limits: IdempotencyLimits,
        events: EventBus,
        clock: Clock,
        zone: TimeZone,
    ) -> Local {
        let mut remembered = Idempotency::new(idempotency_limits);
        for record in start.idempotency {
            remembered.insert(record);
        }
        Local {
            state: RwLock::new(State {
                engine: start.engine,
                idempotency: remembered,
                last_event: start.last_event,
            }),
            journal: start.journal,
            events,
            memory_log: MemoryLog::default(),
            clock,
            zone,
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
    /// The journal, when changes are kept on disk.
    pub(super) fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.journal.as_ref().is_none_or(Journal::is_healthy) && !self.state.is_poisoned()
    }

    fn context(&self, actor: Actor) -> Context {
        let at = (self.clock)();
        Context {
            at,
            actor,
            today: at.to_zoned(self.zone.clone()).date(),
        }
    }

    /// Books a token; with a key, a retry by the same caller replays the
    /// first answer. A key past its retention is a new key.
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
            let mut writer = self.write()?;
            let state = &mut *writer.state;
            let ctx = self.context(actor);
            if key.is_some() {
                state.idempotency.prune(ctx.at);
            }
            let stored = key.as_ref().and_then(|key| {
                state
                    .idempotency
                    .get(&ctx.actor, &key.key, ctx.at)
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
                (
                    Answer::Rendered(replay),
                    self.journal.as_ref().map(Journal::barrier),
                )
            } else {
                if key.is_some() {
                    state.idempotency.check_room(&ctx.actor, ctx.at)?;
                }
                let outcome = state.engine.book(request, &ctx)?;
                match key {
                    // A remembered answer is rendered here, under the lock,
                    // because it is stored with the change.
                    Some(key) => {
                        let rendered = Rendered {
                            token: outcome.token.id,
                            body: Arc::from(render(&outcome)),
                        };
                        let record = StoredIdempotency {
                            caller: ctx.actor.clone(),
                            key: key.key,
                            fingerprint: key.fingerprint,
                            token: rendered.token,
                            response: rendered.body.clone(),
                            stored_at: ctx.at,
                        };
                        state.idempotency.insert(record.clone());
                        let ticket = writer.append(Record::Booked {
                            outcome,
                            ctx,
                            idempotency: Some(record),
                        });
                        (Answer::Rendered(Booking::Created(rendered)), ticket)
                    }
                    // Any other answer is rendered after the lock is
                    // released, so bookings do not wait on each other's
                    // rendering.
                    None => {
                        let answer = Answer::ToRender(outcome.clone());
                        let ticket = writer.append(Record::Booked {
                            outcome,
                            ctx,
                            idempotency: None,
                        });
                        (answer, ticket)
                    }
                }
            }
        };
        let booking = match booking {
            Answer::Rendered(booking) => booking,
            Answer::ToRender(outcome) => Booking::Created(Rendered {
                token: outcome.token.id,
                body: Arc::from(render(&outcome)),
            }),
        };
        self.wait(ticket).await?;
        Ok(booking)
    }

    /// Calls the doctor's first checked-in token of today.
    pub(super) async fn call_next(
        &self,
        doctor: &DoctorId,
        actor: Actor,
    ) -> Result<Outcome, ServiceError> {
        self.change(actor, |engine, ctx| {
            let outcome = engine.call_next(doctor, ctx)?;
            Ok((outcome.clone(), |ctx| Record::Acted { outcome, ctx }))
        })
        .await
    }

    /// Takes an action on a token.
    pub(super) async fn act(
        &self,
        id: Uuid,
        action: Action,
        actor: Actor,
    ) -> Result<Outcome, ServiceError> {
        self.change(actor, |engine, ctx| {
            let outcome = engine.act(id, action, ctx)?;
            Ok((outcome.clone(), |ctx| Record::Acted { outcome, ctx }))
        })
        .await
    }

    pub(super) async fn set_capacity(
        &self,
        slot: &SlotId,
        capacity: Capacity,
        actor: Actor,
    ) -> Result<SlotOutcome, ServiceError> {
        self.change(actor, |engine, ctx| {
            let outcome = engine.set_capacity(slot, capacity, ctx)?;
            Ok((outcome.clone(), |ctx| Record::CapacityChanged {
                outcome,
                ctx,
            }))
        })
        .await
    }

    /// Creates a slot; one created after its closing time is closed at
    /// once.
    pub(super) async fn create_slot(
        &self,
        spec: SlotSpec,
        actor: Actor,
    ) -> Result<SlotSummary, ServiceError> {
        self.change(actor, |engine, ctx| {
            let slot = engine.create_slot_at(spec, ctx.at)?;
            Ok((slot.clone(), |ctx| Record::SlotCreated { slot, ctx }))
        })
        .await
    }

    /// Closes a slot at once.
    pub(super) async fn close_slot(
        &self,
        slot: &SlotId,
        actor: Actor,
    ) -> Result<SlotOutcome, ServiceError> {
        self.change(actor, |engine, ctx| {
            let outcome = engine.close_slot(slot, ctx)?;
            Ok((outcome.clone(), |ctx| Record::SlotClosed { outcome, ctx }))
        })
        .await
    }

    /// The write path of every change but a booking: under the write lock,
    /// `decide` changes the engine and returns the answer and how to make
    /// the record of the change from its context; the record is queued in
    /// engine order, and the answer waits until it is durable.
    async fn change<T, R>(
        &self,
        actor: Actor,
        decide: impl FnOnce(&mut Engine, &Context) -> Result<(T, R), EngineError>,
    ) -> Result<T, ServiceError>
    where
        R: FnOnce(Context) -> Record,
    {
        let (answer, ticket) = {
            let mut writer = self.write()?;
            let ctx = self.context(actor);
            let (answer, record) = decide(&mut writer.state.engine, &ctx)?;
            (answer, writer.append(record(ctx)))
        };
        self.wait(ticket).await?;
        Ok(answer)
    }

    /// Does the work the clock has made due (closings, days' ends) and
    /// makes it durable; returns how many slot changes that was.
    pub(super) async fn tick(&self) -> Result<usize, ServiceError> {
        let (count, ticket) = {
            let mut writer = self.write()?;
            let ctx = self.context(SYSTEM_ACTOR.into());
            let done = writer.state.engine.tick(&ctx);
            let count = done.len();
            let ticket = if count == 0 {
                None
            } else {
                writer.append(Record::Timed { done, ctx })
            };
            (count, ticket)
        };
        self.wait(ticket).await?;
        Ok(count)
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

    /// Takes the write lock and a place in the journal's queue. A full
    /// queue (storage far behind) refuses the change before it is made.
    fn write(&self) -> Result<Writer<'_>, ServiceError> {
        if !self.is_healthy() {
            return Err(ServiceError::Unavailable);
        }
        // A poisoned lock means an invariant check panicked mid-mutation:
        // the state is suspect, so the service stops serving it.
        let state = self.state.write().map_err(|_| ServiceError::Unavailable)?;
        let reservation = match &self.journal {
            Some(journal) => Some(journal.reserve().map_err(|_| ServiceError::Unavailable)?),
            None => None,
        };
        Ok(Writer {
            state,
            reservation,
            local: self,
        })
    }

    /// The log's events after `after`, at most `limit`: from the journal's
    /// database, or from memory when nothing is kept on disk.
    pub(super) async fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Page, ServiceError> {
        match &self.journal {
            Some(journal) => journal
                .read_events(after, limit)
                .await
                .map_err(|_| ServiceError::Unavailable),
            None => Ok(self.memory_log.after(after, limit)),
        }
    }

    /// The events the report of `date` is made of, in id order.
    pub(super) async fn report_events(
        &self,
        date: jiff::civil::Date,
    ) -> Result<Vec<crate::store::Event>, ServiceError> {
        match &self.journal {
            Some(journal) => journal
                .read_report_events(date)
                .await
                .map_err(|_| ServiceError::Unavailable),
            None => Ok(self.memory_log.report_events(date)),
        }
    }

    fn read_lock(&self) -> Result<RwLockReadGuard<'_, State>, ServiceError> {
        self.state.read().map_err(|_| ServiceError::Unavailable)
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
