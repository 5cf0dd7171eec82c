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

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use uuid::Uuid;

use super::{
    Booking, Clock, IdempotencyKey, IdempotencyLimits, LocalStart, Rendered, ServiceError,
};
use crate::engine::{
    Absence, Action, Actor, BookRequest, Capacity, Context, DoctorId, Engine, EngineError, Outcome,
    SlotId, SlotOutcome, SlotPage, SlotQuery, SlotSpec, SlotSummary, SYSTEM_ACTOR,
};
use crate::store::events::MemoryLog;
use crate::store::{
    EventBus, Journal, Page, Record, Reservation, Scope, StoredIdempotency, Ticket,
    IDEMPOTENCY_RETENTION,
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
    /// How many past days the engine holds besides today and the days
    /// ahead; `None` holds every day (in memory, where nothing else does).
    live_days: Option<u16>,
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
    /// newest; the lock is released when the writer is dropped. In memory
    /// nothing is kept: the events are told at once, still in order.
    fn append(&mut self, record: Record) -> Option<Ticket> {
        let first_event = self.state.last_event + 1;
        self.state.last_event += record.event_count();
        match self.reservation.take() {
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
            live_days: start.live_days,
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
        match self.book_live(request, key, actor, render).await {
            Err(error) => Err(self.refusal(error, None).await),
            booked => booked,
        }
    }

    /// Books a token into a slot the engine holds.
    async fn book_live(
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
        let called = self
            .change(actor, |engine, ctx| {
                let outcome = engine.call_next(doctor, ctx)?;
                Ok((outcome.clone(), |ctx| Record::Acted { outcome, ctx }))
            })
            .await;
        match called {
            Err(error) => Err(self.refusal(error, None).await),
            called => called,
        }
    }

    /// Takes an action on a token.
    pub(super) async fn act(
        &self,
        id: Uuid,
        action: Action,
        actor: Actor,
    ) -> Result<Outcome, ServiceError> {
        let acted = self
            .change(actor, |engine, ctx| {
                let outcome = engine.act(id, action, ctx)?;
                Ok((outcome.clone(), |ctx| Record::Acted { outcome, ctx }))
            })
            .await;
        match acted {
            Err(error) => Err(self.refusal(error, Some(action)).await),
            acted => acted,
        }
    }

    pub(super) async fn set_capacity(
        &self,
        slot: &SlotId,
        capacity: Capacity,
        actor: Actor,
    ) -> Result<SlotOutcome, ServiceError> {
        let changed = self
            .change(actor, |engine, ctx| {
                let outcome = engine.set_capacity(slot, capacity, ctx)?;
                Ok((outcome.clone(), |ctx| Record::CapacityChanged {
                    outcome,
                    ctx,
                }))
            })
            .await;
        match changed {
            Err(error) => Err(self.refusal(error, None).await),
            changed => changed,
        }
    }

    /// Creates a slot; one created after its closing time is closed at
    /// once.
    pub(super) async fn create_slot(
        &self,
        spec: SlotSpec,
        actor: Actor,
    ) -> Result<SlotSummary, ServiceError> {
        self.refuse_over_stored(&spec).await?;
        self.change(actor, |engine, ctx| {
            let slot = engine.create_slot_at(spec, ctx.at)?;
            Ok((slot.clone(), |ctx| Record::SlotCreated { slot, ctx }))
        })
        .await
    }

    /// Refuses a new slot that clashes with one of a day that left the
    /// engine: the same id (storage would refuse to keep it twice, and a
    /// failed commit stops every write), or, on such a day, an overlap
    /// with the doctor's slot. A slot the engine holds is refused by the
    /// engine; an id that is in neither place cannot come to be in
    /// storage alone while this runs, since only slots the engine held
    /// leave it.
    async fn refuse_over_stored(&self, spec: &SlotSpec) -> Result<(), ServiceError> {
        if self.journal.is_none()
            || self
                .read(|engine| engine.slot_summary(&spec.id))
                .await?
                .is_some()
        {
            return Ok(());
        }
        if self.stored(Scope::Slot(spec.id.clone())).await?.is_some() {
            return Err(EngineError::SlotExists(spec.id.clone()).into());
        }
        let today = self.context(SYSTEM_ACTOR.into()).today;
        if self.live_from(today).is_some_and(|from| spec.date < from) {
            let day = Scope::Date(spec.date, Some(spec.doctor.clone()));
            if let Some(mut engine) = self.stored(day).await? {
                engine.create_slot(spec.clone())?;
            }
        }
        Ok(())
    }

    /// Closes a slot at once.
    pub(super) async fn close_slot(
        &self,
        slot: &SlotId,
        actor: Actor,
    ) -> Result<SlotOutcome, ServiceError> {
        let closed = self
            .change(actor, |engine, ctx| {
                let outcome = engine.close_slot(slot, ctx)?;
                Ok((outcome.clone(), |ctx| Record::SlotClosed { outcome, ctx }))
            })
            .await;
        match closed {
            Err(error) => Err(self.refusal(error, None).await),
            closed => closed,
        }
    }

    /// Records a doctor's absence; one that changes nothing (a repeat)
    /// is not journalled.
    pub(super) async fn declare_absence(
        &self,
        doctor: &DoctorId,
        date: jiff::civil::Date,
        actor: Actor,
    ) -> Result<Absence, ServiceError> {
        let (absence, ticket) = {
            let mut writer = self.write()?;
            let ctx = self.context(actor);
            let absence = writer.state.engine.declare_absence(doctor, date, &ctx)?;
            let ticket = if absence.changed() {
                writer.append(Record::Absence {
                    absence: absence.clone(),
                    ctx,
                })
            } else {
                // A repeat reflects earlier changes: it waits until they
                // are durable, as a read does.
                self.journal.as_ref().map(Journal::barrier)
            };
            (absence, ticket)
        };
        self.wait(ticket).await?;
        Ok(absence)
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
    /// makes it durable; then lets the days that fell out of the live
    /// window leave the engine. Returns how many slot changes that was.
    pub(super) async fn tick(&self) -> Result<usize, ServiceError> {
        let (count, ticket) = {
            let mut writer = self.write()?;
            let ctx = self.context(SYSTEM_ACTOR.into());
            let done = writer.state.engine.tick(&ctx);
            let count = done.len();
            let ticket = if count == 0 {
                None
            } else {
                writer.append(Record::Timed {
                    done,
                    ctx: ctx.clone(),
                })
            };
            // Under the same lock, after the day's last changes are
            // queued: storage records the eviction after they are durable,
            // and every read that finds the days gone queues after it.
            self.evict(&mut writer.state.engine, ctx.today);
            (count, ticket)
        };
        self.wait(ticket).await?;
        Ok(count)
    }

    /// The first date the engine is meant to hold, when it does not hold
    /// every day.
    pub(super) fn live_from(&self, today: Date) -> Option<Date> {
        let days = self.live_days?;
        self.journal.as_ref()?;
        Some(
            today
                .checked_sub(i64::from(days).days())
                .unwrap_or(Date::MIN),
        )
    }

    /// Lets the days before the live window leave the engine once they
    /// are over, and has storage index their tokens for reads by id.
    fn evict(&self, engine: &mut Engine, today: Date) {
        let (Some(journal), Some(before)) = (&self.journal, self.live_from(today)) else {
            return;
        };
        if engine.first_date().is_none_or(|first| first >= before) {
            return;
        }
        // A place in the queue first: days leave only when storage can be
        // told, or their tokens could not be found by id.
        let Ok(eviction) = journal.reserve_eviction() else {
            return;
        };
        let started = std::time::Instant::now();
        match engine.evict_before(before) {
            Ok(0) => {}
            Ok(slots) => {
                eviction.send(before);
                tracing::info!(
                    slots,
                    before = %before,
                    tokens_kept = engine.token_count(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "days before the live window left the engine; storage keeps them"
                );
            }
            Err(error) => {
                tracing::error!(%error, "the engine could not let old days go; it keeps them");
            }
        }
    }

    /// An engine of its own holding the slots of `scope` as storage has
    /// them, in the clinic's zone; `None` in memory or when no slot
    /// matches.
    pub(super) async fn stored(&self, scope: Scope) -> Result<Option<Engine>, ServiceError> {
        let Some(journal) = &self.journal else {
            return Ok(None);
        };
        let limits = self.read_lock()?.engine.limits();
        let engine = journal
            .read_slots(scope, limits)
            .await
            .map_err(|_| ServiceError::Unavailable)?;
        Ok(engine.map(|engine| engine.with_zone(self.zone.clone())))
    }

    /// Reads the engine; when it does not hold the answer, reads it the
    /// same way from the slots of `scope` in storage (days that left the
    /// engine).
    pub(super) async fn read_or_stored<T>(
        &self,
        read: impl Fn(&Engine) -> Option<T>,
        scope: impl FnOnce() -> Scope,
    ) -> Result<Option<T>, ServiceError> {
        if let Some(value) = self.read(&read).await? {
            return Ok(Some(value));
        }
        if self.journal.is_none() {
            return Ok(None);
        }
        Ok(self.stored(scope()).await?.and_then(|engine| read(&engine)))
    }

    /// What a change refused as `error` (an unknown slot or token) is
    /// refused with when its slot is of a day that left the engine: a
    /// slot's change with its closing (every such slot is closed), a
    /// token's `action` with the answer of an engine holding that day,
    /// where every token is final. A token's action that engine would
    /// take is refused as its slot's closing, which it is too late for.
    async fn refusal(&self, error: ServiceError, action: Option<Action>) -> ServiceError {
        let closed = |slot: SlotSummary| {
            ServiceError::Engine(EngineError::SlotClosed {
                slot: slot.id,
                closed_at: slot.closes_at,
            })
        };
        let stored = match &error {
            // A doctor whose slots all left the engine has nobody to call.
            ServiceError::Engine(EngineError::DoctorNotFound(doctor)) => {
                return match self.has_stored_doctor(doctor).await {
                    Ok(true) => ServiceError::Engine(EngineError::QueueEmpty),
                    Ok(false) => error,
                    Err(unavailable) => unavailable,
                };
            }
            ServiceError::Engine(EngineError::SlotNotFound(slot)) => {
                self.stored(Scope::Slot(slot.clone())).await
            }
            ServiceError::Engine(EngineError::TokenNotFound(token)) if action.is_some() => {
                self.stored(Scope::OldToken(*token)).await
            }
            _ => return error,
        };
        let mut engine = match stored {
            Ok(Some(engine)) => engine,
            Ok(None) => return error,
            Err(unavailable) => return unavailable,
        };
        match (&error, action) {
            (ServiceError::Engine(EngineError::TokenNotFound(token)), Some(action)) => {
                let ctx = self.context(SYSTEM_ACTOR.into());
                match engine.act(*token, action, &ctx) {
                    Err(refused) => ServiceError::Engine(refused),
                    Ok(outcome) => closed(outcome.slot),
                }
            }
            (ServiceError::Engine(EngineError::SlotNotFound(slot)), _) => {
                engine.slot_summary(slot).map_or(error, closed)
            }
            _ => error,
        }
    }

    /// Whether storage has a slot of the doctor on a day that left the
    /// engine.
    pub(super) async fn has_stored_doctor(&self, doctor: &DoctorId) -> Result<bool, ServiceError> {
        let any = Scope::Listing {
            before: Date::MAX,
            after: None,
            doctor: Some(doctor.clone()),
            limit: 1,
        };
        Ok(self.stored(any).await?.is_some())
    }

    /// One page of slots: days the engine holds from the engine, older
    /// ones from storage, in one listing order.
    pub(super) async fn slots(&self, query: &SlotQuery) -> Result<SlotPage, ServiceError> {
        let today = self.context(SYSTEM_ACTOR.into()).today;
        let Some(live_from) = self.live_from(today) else {
            return Ok(self.read(|engine| engine.slots(query)).await??);
        };
        let after = match &query.after {
            None => None,
            Some(id) => {
                let summary = self
                    .read_or_stored(|engine| engine.slot_summary(id), || Scope::Slot(id.clone()))
                    .await?
                    .ok_or_else(|| EngineError::SlotNotFound(id.clone()))?;
                Some((summary.date, summary.start, summary.id))
            }
        };
        let live = |limit: usize| SlotQuery {
            doctor: query.doctor.clone(),
            date: query.date,
            after: None,
            limit,
        };
        let old_dates = query.date.is_none_or(|date| date < live_from)
            && after.as_ref().is_none_or(|(date, _, _)| *date < live_from);
        if !old_dates {
            let query = SlotQuery {
                after: query.after.clone(),
                ..live(query.limit)
            };
            return Ok(self
                .read(|engine| engine.slots_since(&query, live_from))
                .await??);
        }
        let scope = match query.date {
            Some(date) => Scope::Date(date, query.doctor.clone()),
            None => Scope::Listing {
                before: live_from,
                after: after.clone(),
                doctor: query.doctor.clone(),
                limit: query.limit.saturating_add(1),
            },
        };
        let mut old: Vec<SlotSummary> = match self.stored(scope).await? {
            None => Vec::new(),
            Some(engine) => engine.slots(&live(usize::MAX))?.slots,
        };
        old.retain(|slot| {
            after.as_ref().is_none_or(|after| {
                (slot.date, slot.start, &slot.id) > (after.0, after.1, &after.2)
            })
        });
        if old.len() > query.limit || query.date.is_some() {
            let more = old.len() > query.limit;
            old.truncate(query.limit);
            return Ok(SlotPage { slots: old, more });
        }
        let rest = query.limit - old.len();
        let page = self
            .read(|engine| engine.slots_since(&live(rest), live_from))
            .await??;
        old.extend(page.slots);
        Ok(SlotPage {
            slots: old,
            more: page.more,
        })
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
