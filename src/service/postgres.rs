//! The PostgreSQL backend: state shared by any number of instances.
//!
//! Each write is one transaction: lock the slot's row, load its active
//! tokens into a fresh engine, apply the request with the same engine the
//! embedded backend uses, write what changed, commit, and only then answer.
//! The row lock serialises every request on one slot across instances; the
//! doctor's day row is locked after it, so token numbers stay gapless and in
//! request order. An action on a token, and call-next, decide over the
//! doctor's whole day (the call order and the one token with the doctor
//! span all of the doctor's slots of a date): they lock every slot row of
//! that doctor and date, in start time order, and then the day's row.
//! Locks are always taken in the order idempotency key, slots (by start
//! time), doctor's day, so transactions never wait on each other in a
//! cycle.
//!
//! Serialization failures, deadlocks and the race of two instances storing
//! one idempotency key are retried from the start; anything else the
//! database or network does wrong rolls the transaction back and answers
//! 503, so a change is never half applied.
//!
//! The rows themselves are read and written by [`crate::store::postgres`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use uuid::Uuid;

use super::group_commit::{self, GroupCommit, GroupFailure};
use super::slot_copies::{SlotCopies, SlotEntry};
use super::{
    Booking, Clock, IdempotencyKey, IdempotencyLimits, Rendered, ServiceError, TokenDetail,
};
use crate::engine::{
    Absence, Action, Actor, BoardEntry, BookRequest, Capacity, Context, DoctorId, DoctorQueue,
    Engine, EngineError, Limits, Outcome, SlotDetail, SlotId, SlotOutcome, SlotPage, SlotQuery,
    SlotSpec, SlotSummary, Status, TokenView, SYSTEM_ACTOR,
};
use crate::store::events::{Made, SlotReason, EVENT_RETENTION, PAGE_MAX};
use crate::store::postgres::{self as db, Database, Lock, PgError, Transaction};
use crate::store::{
    Event, EventBus, Page, StorageMetrics, StoredIdempotency, IDEMPOTENCY_RETENTION,
};

/// The SQLSTATEs of a transaction that lost a race and is tried again:
/// serialization failure, deadlock, and a unique violation (two instances
/// storing one idempotency key or slot at once; the retry then sees the
/// winner's row).
pub const RETRIED_SQLSTATES: [&str; 3] = ["40001", "40P01", "23505"];

/// How often a transaction that lost a race is tried again.
const ATTEMPTS: usize = 8;

/// The most doctors' days one tick handles; the rest wait for the next,
/// so a tick after a long outage stays short.
const DUE_DAYS_PER_TICK: usize = 100;

pub struct Postgres {
    database: Database,
    limits: Limits,
    /// The clinic's time zone, in which "today" is taken.
    zone: TimeZone,
    idempotency_limits: IdempotencyLimits,
    /// Reads the log as any instance adds to it and tells this instance's
    /// subscribers; stopped with the backend.
    follower: tokio::task::JoinHandle<()>,
    /// Commit durations and retries, for the metrics.
    metrics: StorageMetrics,
    /// The slots bookings are decided on without reading them first,
    /// shared with the event follower, which notes every change on them.
    copies: Arc<SlotCopies>,
    /// With one-call bookings, the writers that write them in groups;
    /// `None` without.
    groups: Option<GroupCommit>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// Why one attempt failed.
enum Failure {
    Refused(ServiceError),
    Store(PgError),
    /// The connection was lost while `COMMIT` was on its way: the change
    /// may or may not have been made, so it is not tried again.
    CommitUnknown(sqlx::Error),
}

impl From<PgError> for Failure {
    fn from(error: PgError) -> Failure {
        Failure::Store(error)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Failure {
        Failure::Store(PgError::Database(error))
    }
}

impl From<EngineError> for Failure {
    fn from(error: EngineError) -> Failure {
        Failure::Refused(ServiceError::Engine(error))
    }
}

type Attempt<T> = Result<T, Failure>;

/// How many times a booking is decided on a copy that turns out stale
/// before it is decided under the slot's lock instead.
const STALE_TRIES: usize = 3;

/// What a try of a booking on a copy of its slot came to.
enum OnCopy {
    Booked(Booking),
    /// The copy was stale; it is dropped, and the next try reads the slot.
    Stale,
    /// The copy refused the booking, or has no such slot: the lock-first
    /// path decides, as a copy may be stale.
    Refused,
}

/// What every try of one booking request works from.
struct BookingTries<'a> {
    request: &'a BookRequest,
    key: Option<&'a IdempotencyKey>,
    actor: &'a Actor,
    clock: &'a Clock,
    render: &'a (dyn Fn(&Outcome) -> String + Sync),
    lost: LostCall,
}

/// The parts of [`BookingTries`], as a try uses them.
type BookingParts<'b, 'a> = (
    &'a BookRequest,
    Option<&'a IdempotencyKey>,
    &'a Actor,
    &'a Clock,
    &'a (dyn Fn(&Outcome) -> String + Sync),
    &'b LostCall,
);

impl<'a> BookingTries<'a> {
    fn parts(&self) -> BookingParts<'_, 'a> {
        (
            self.request,
            self.key,
            self.actor,
            self.clock,
            self.render,
            &self.lost,
        )
    }
}

/// Whether a try of a booking lost its call with its connection, so that
/// the call may or may not have been written. Every try of a request
/// books the same token id, so the next try tells: it books as usual when
/// the token is not there (a connection that had died while idle, the
/// usual case after a database restart, costs no answer), and answers
/// 503 like a lost COMMIT when it is. A token found is not acknowledged:
/// it may be visible on a primary that will lose it (a restarted primary
/// that pg_auto_failover then demotes releases the commits that waited
/// for the standby), and the client's retry with its `Idempotency-Key`
/// gets the stored answer once it is durable. A second lost call is also
/// answered like a lost COMMIT.
#[derive(Default)]
struct LostCall(std::sync::atomic::AtomicBool);

impl LostCall {
    /// Records a call lost with `error`: the first is tried once more on
    /// a new connection.
    fn record(&self, error: sqlx::Error) -> Failure {
        if self.0.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return Failure::CommitUnknown(error);
        }
        Failure::Store(PgError::Database(error))
    }

    /// Refuses to go on when a lost call wrote the booking: `engine`
    /// holds the slot as stored now (`None` when the caller's call found
    /// the token).
    fn check(&self, engine: Option<&Engine>, request: &BookRequest, clock: &Clock) -> Attempt<()> {
        if !self.0.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        if engine.is_some_and(|engine| engine.token(request.token, clock()).is_none()) {
            return Ok(());
        }
        tracing::error!(
            token = %request.token,
            "a booking whose call was lost with its connection was written; answering 503, as for a lost COMMIT"
        );
        Err(Failure::Refused(ServiceError::Unavailable))
    }
}

impl Postgres {
    /// The backend on `database`; its events, every instance's, are told on
    /// `events`. Commits, retries and copies are recorded in `metrics`.
    /// Must be called within the runtime, which runs the log's follower.
    pub fn new(
        database: Database,
        limits: Limits,
        idempotency_limits: IdempotencyLimits,
        events: EventBus,
        clock: Clock,
        metrics: StorageMetrics,
    ) -> Postgres {
        let copies = Arc::new(SlotCopies::new());
        let follower = tokio::spawn(follow_events(
            database.clone(),
            events,
            Arc::clone(&copies),
            clock,
            metrics.clone(),
        ));
        Postgres {
            database,
            limits,
            zone: TimeZone::UTC,
            idempotency_limits,
            follower,
            metrics,
            copies,
            groups: None,
        }
    }

    /// Decides bookings on copies of their slots and writes them in one
    /// call, concurrent ones in groups.
    pub fn with_one_call_bookings(mut self, on: bool) -> Postgres {
        self.groups = on.then(|| GroupCommit::start(&self.database, &self.metrics));
        self
    }

    /// Sets the clinic's time zone, in which "today" is taken and slot
    /// times are read.
    pub fn with_zone(mut self, zone: TimeZone) -> Postgres {
        self.zone = zone;
        self
    }

    /// A fresh engine to load rows into.
    fn engine(&self) -> Engine {
        Engine::new(self.limits).with_zone(self.zone.clone())
    }

    fn context(&self, actor: &Actor, clock: &Clock) -> Context {
        let at = clock();
        Context {
            at,
            actor: actor.clone(),
            today: at.to_zoned(self.zone.clone()).date(),
        }
    }

    /// Locks the doctor's day for a decision over it (see the module's
    /// lock order) and loads it into an engine with its pace.
    async fn lock_doctor_day(
        &self,
        tx: &mut Transaction,
        doctor: &DoctorId,
        date: Date,
    ) -> Attempt<Engine> {
        let mut engine =
            db::load_doctor_day(tx, doctor, date, Lock::ForUpdate, self.engine()).await?;
        let pace = db::doctor_day_pace(tx, doctor, date, Lock::ForUpdate).await?;
        engine.resume_pace(doctor, date, pace);
        Ok(engine)
    }

    /// Loads a doctor's day from a snapshot, for reads.
    async fn read_doctor_day(
        &self,
        tx: &mut Transaction,
        doctor: &DoctorId,
        date: Date,
    ) -> Attempt<Engine> {
        let mut engine = db::load_doctor_day(tx, doctor, date, Lock::None, self.engine()).await?;
        let pace = db::doctor_day_pace(tx, doctor, date, Lock::None).await?;
        engine.resume_pace(doctor, date, pace);
        Ok(engine)
    }

    /// Writes what an action on a doctor's day changed, then commits.
    async fn write_action(
        &self,
        mut tx: Transaction,
        engine: &Engine,
        outcome: &Outcome,
        ctx: &Context,
    ) -> Attempt<()> {
        let (doctor, date) = (&outcome.slot.doctor, outcome.slot.date);
        db::write_token_changes(&mut tx, &outcome.slot, outcome.token_changes(), ctx).await?;
        db::write_counts(&mut tx, &outcome.slot).await?;
        db::write_pace(&mut tx, doctor, date, engine.pace(doctor, date)).await?;
        self.log_and_commit(tx, Made::Token(outcome), ctx).await
    }

    /// Writes a change to slots part by part as [`Made::slot_parts`] lists
    /// it (token changes, counters, and the new capacity or closing), and
    /// the pace of the doctor's day when the change was decided over it,
    /// then logs and commits.
    async fn write_slot_change_and_commit(
        &self,
        mut tx: Transaction,
        day: Option<(&Engine, &DoctorId, Date)>,
        made: Made<'_>,
        ctx: &Context,
    ) -> Attempt<()> {
        for (reason, outcome) in made.slot_parts() {
            let slot = &outcome.slot;
            db::write_token_changes(&mut tx, slot, outcome.token_changes(), ctx).await?;
            db::write_counts(&mut tx, slot).await?;
            match reason {
                Some(SlotReason::CapacityChanged) => db::write_capacity(&mut tx, slot).await?,
                Some(SlotReason::Closed) => db::write_closed(&mut tx, slot).await?,
                Some(SlotReason::Created) | None => {}
            }
        }
        if let Some((engine, doctor, date)) = day {
            db::write_pace(&mut tx, doctor, date, engine.pace(doctor, date)).await?;
        }
        self.log_and_commit(tx, made, ctx).await
    }

    /// Logs a change's events as the transaction's last write and commits.
    /// The event ids are taken last because taking them locks the log's
    /// head until the commit. The events are told by the follower, which
    /// reads them back in id order with every other instance's.
    async fn log_and_commit(
        &self,
        mut tx: Transaction,
        made: Made<'_>,
        ctx: &Context,
    ) -> Attempt<()> {
        let first = db::take_event_ids(&mut tx, made.event_count()).await?;
        db::insert_events(&mut tx, &made.events(ctx, first)).await?;
        db::notify_events(&mut tx).await?;
        let started = std::time::Instant::now();
        tx.commit().await.map_err(|error| {
            if db::is_connection_lost(&error) {
                Failure::CommitUnknown(error)
            } else {
                Failure::from(error)
            }
        })?;
        // One change per transaction.
        self.metrics.commit(1, started.elapsed());
        Ok(())
    }

    /// The events the report of `date` is made of, in id order, from one
    /// snapshot.
    pub async fn report_events(&self, date: Date) -> Result<Vec<Event>, ServiceError> {
        self.retry(|| async {
            let mut tx = self.database.snapshot().await?;
            Ok(db::report_events(&mut tx, date).await?)
        })
        .await
    }

    /// The log's events after `after`, at most `limit`.
    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Page, ServiceError> {
        self.retry(|| async {
            let mut connection = self.database.connection().await?;
            Ok(db::read_events(&mut connection, after, limit).await?.0)
        })
        .await
    }

    /// Whether the database answers a trivial query.
    pub async fn check(&self) -> bool {
        self.database.check().await
    }

    /// Runs `attempt` until it succeeds, is refused, or fails in a way a
    /// retry cannot fix.
    async fn retry<T, F, Fut>(&self, mut attempt: F) -> Result<T, ServiceError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let mut reconnected = false;
        for remaining in (0..ATTEMPTS).rev() {
            let began = std::time::Instant::now();
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Refused(error)) => return Err(error),
                Err(Failure::CommitUnknown(error)) => {
                    self.copies.clear();
                    self.database.lost(began, &error);
                    tracing::error!(
                        %error,
                        "the database connection was lost during COMMIT; the change may or may not have been made"
                    );
                    return Err(ServiceError::Unavailable);
                }
                // The connection or its server was lost before anything was
                // committed, so nothing was changed (the server rolls back
                // a transaction whose connection is gone). Connections as
                // old are retired, and the attempt is made once more on a
                // new connection: a pooled connection that died while idle
                // (a restarted server) costs no answer.
                Err(Failure::Store(PgError::Database(error))) if db::is_connection_lost(&error) => {
                    self.copies.clear();
                    self.database.lost(began, &error);
                    if reconnected || !db::may_reconnect(&error) || remaining == 0 {
                        tracing::error!(%error, "the database is unreachable; nothing was changed");
                        return Err(ServiceError::Unavailable);
                    }
                    reconnected = true;
                    tracing::warn!(%error, "a database connection was lost; trying again on a new one");
                }
                Err(Failure::Store(PgError::Database(error)))
                    if remaining > 0 && is_retryable(&error) =>
                {
                    if let sqlx::Error::Database(database) = &error {
                        self.metrics
                            .retried(database.code().as_deref().unwrap_or(""));
                    }
                    tracing::debug!(%error, "retrying a transaction that lost a race");
                }
                Err(Failure::Store(PgError::Database(error))) => {
                    tracing::error!(%error, "database error; nothing was changed");
                    return Err(ServiceError::Unavailable);
                }
                Err(Failure::Store(PgError::Corrupt(what))) => {
                    tracing::error!(what, "stored data is inconsistent");
                    return Err(ServiceError::Unavailable);
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    pub async fn book(
        &self,
        request: BookRequest,
        key: Option<IdempotencyKey>,
        actor: Actor,
        clock: &Clock,
        render: &(dyn Fn(&Outcome) -> String + Sync),
    ) -> Result<Booking, ServiceError> {
        let booking = BookingTries {
            request: &request,
            key: key.as_ref(),
            actor: &actor,
            clock,
            render,
            lost: LostCall::default(),
        };
        let tries = if self.groups.is_some() {
            STALE_TRIES
        } else {
            0
        };
        for tried_before in 0..tries {
            // A booking whose copy was stale twice is written alone, so
            // that it does not wait for a group again. Its first retry
            // joins the next group: with two instances booking into the
            // same slots, retrying alone at once gave 846 bookings/s and
            // this 1,153 (`loadtest/pg-slot-size.py`).
            let alone = tried_before > 1;
            let tried = self
                .retry(|| self.try_book_on_copy(&booking, alone))
                .await?;
            match tried {
                OnCopy::Booked(booking) => return Ok(booking),
                OnCopy::Stale => {}
                OnCopy::Refused => break,
            }
        }
        self.retry(|| self.try_book(&booking)).await
    }

    /// Decides a booking on this instance's copy of the slot (read first
    /// if it has none) and writes it in one call, which writes only if the
    /// copy is current. A refusal is not given from a copy, which may be
    /// stale: the lock-first path gives it. The call is written in the next
    /// group, or `alone`.
    async fn try_book_on_copy(&self, booking: &BookingTries<'_>, alone: bool) -> Attempt<OnCopy> {
        let (request, key, actor, clock, render, lost) = booking.parts();
        let entry = self.copies.slot(&request.slot);
        let mut held = entry.copy.lock().await;
        if let Some(copy) = held
            .as_mut()
            .filter(|copy| entry.lacks_noted(&request.slot, copy))
        {
            let refreshed = self.refresh_copy(&request.slot, copy, &[]).await;
            if !matches!(refreshed, Ok(true)) {
                // Dropped whatever went wrong: it may be half brought up.
                *held = None;
                refreshed?;
            }
        }
        if held.is_none() {
            self.metrics.copy_reads.increment(1);
            let mut connection = self.database.connection().await?;
            let copy = db::read_slot_copy(&mut connection, &request.slot, self.engine()).await?;
            drop(connection);
            let Some(copy) = copy else {
                return Ok(OnCopy::Refused);
            };
            *held = Some(copy);
        }
        let copy = held.as_mut().expect("read above");
        lost.check(Some(&copy.engine), request, clock)?;
        let summary = copy
            .engine
            .slot_summary(&request.slot)
            .expect("the copy holds its slot");
        let day = self
            .copies
            .day(&summary.doctor, summary.date, copy.numbers_issued);
        let mut issued = day.issued.lock().await;
        *issued = (*issued).max(copy.numbers_issued).max(day.seen());
        copy.engine.resume_counters(&request.slot, 0, *issued)?;
        let ctx = self.context(actor, clock);
        let Ok(outcome) = copy.engine.book(request.clone(), &ctx) else {
            return Ok(OnCopy::Refused);
        };
        let body: Arc<str> = Arc::from(render(&outcome));
        let call = Arc::new(db::OneCall::new(
            &outcome.slot,
            copy.version,
            outcome.token.number,
            outcome.token_changes(),
            &ctx,
            key.map(|key| db::KeyedCall {
                key: key.key.clone(),
                fingerprint: key.fingerprint,
                response: body.clone(),
                since: ctx.at - IDEMPOTENCY_RETENTION,
                per_caller: self.idempotency_limits.per_caller,
                total: self.idempotency_limits.total,
            }),
        ));
        // From here the copy holds the decision, written or not: it is
        // dropped unless the call answers that it was written.
        let copy = held.take().expect("read above");
        let answer = match self.groups.as_ref().filter(|_| !alone) {
            Some(groups) => match groups.write(Arc::clone(&call)).await {
                Ok(answer) => Ok(answer),
                Err(GroupFailure::Lost { may_reconnect }) => {
                    return Err(lost.record(if may_reconnect {
                        sqlx::Error::Io(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the connection of the booking's group was lost",
                        ))
                    } else {
                        sqlx::Error::PoolTimedOut
                    }));
                }
                Err(GroupFailure::Failed) => self.write_alone(&call).await,
            },
            None => self.write_alone(&call).await,
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(PgError::Database(error)) if db::is_connection_lost(&error) => {
                return Err(lost.record(error));
            }
            Err(error) => return Err(error.into()),
        };
        let created = |body| {
            Ok(OnCopy::Booked(Booking::Created(Rendered {
                token: outcome.token.id,
                body,
            })))
        };
        match answer {
            db::CallAnswer::Booked { version } => {
                *issued = outcome.token.number;
                *held = Some(db::SlotCopy {
                    version,
                    numbers_issued: outcome.token.number,
                    ..copy
                });
                created(body)
            }
            db::CallAnswer::Written => {
                lost.check(None, request, clock)?;
                // Only a lost call writes the token before its request's
                // call does.
                Err(Failure::Store(PgError::Corrupt(
                    "a new token's id is stored already".into(),
                )))
            }
            db::CallAnswer::Stale { numbers_issued } => {
                self.metrics.stale_copies.increment(1);
                if let Some(numbers_issued) = numbers_issued {
                    *issued = numbers_issued;
                }
                // The copy is kept, without the decision and brought up
                // to the slot as stored: reading a large slot whole at
                // each stale copy is what made two instances slow.
                let mut copy = copy;
                if copy.engine.take_back(outcome.token.id).is_ok() {
                    let moved: Vec<Uuid> = outcome.changes.iter().map(|c| c.token).collect();
                    if self.refresh_copy(&request.slot, &mut copy, &moved).await? {
                        *held = Some(copy);
                    }
                }
                Ok(OnCopy::Stale)
            }
            db::CallAnswer::Stored {
                fingerprint,
                token,
                response,
            } => {
                let key = key.expect("only a keyed call finds a stored key");
                if fingerprint != key.fingerprint {
                    return Err(Failure::Refused(ServiceError::IdempotencyKeyReused));
                }
                Ok(OnCopy::Booked(Booking::Replayed(Rendered {
                    token,
                    body: response,
                })))
            }
            db::CallAnswer::KeysFull(counts) => Err(self.keys_full(counts, ctx.at)),
        }
    }

    /// Brings `copy` of `slot` up to the slot as stored (see
    /// [`db::refresh_slot_copy`]); false when it is to be read whole.
    async fn refresh_copy(
        &self,
        slot: &SlotId,
        copy: &mut db::SlotCopy,
        also: &[Uuid],
    ) -> Result<bool, PgError> {
        self.metrics.copy_refreshes.increment(1);
        let mut connection = self.database.connection().await?;
        db::refresh_slot_copy(&mut connection, slot, copy, also).await
    }

    /// Writes one call as a group of its own, on a connection of its own.
    async fn write_alone(&self, call: &db::OneCall) -> Result<db::CallAnswer, PgError> {
        group_commit::write(&self.database, &self.metrics, &[call])
            .await?
            .pop()
            .ok_or_else(|| PgError::Corrupt("a call of one was not answered".into()))
    }

    /// Decides a booking over the slot as it is stored, under its lock.
    async fn try_book(&self, booking: &BookingTries<'_>) -> Attempt<Booking> {
        let (request, key, actor, clock, render, lost) = booking.parts();
        let mut tx = self.database.begin().await?;
        if let Some(key) = key {
            let now = clock();
            // Requests with one caller's key queue here, so only the first
            // books.
            db::lock_idempotency_key(&mut tx, actor, &key.key).await?;
            // A key past its retention is a new key, even while its row
            // waits to be pruned.
            let stored =
                db::find_idempotency(&mut tx, actor, &key.key, now - IDEMPOTENCY_RETENTION).await?;
            if let Some(stored) = stored {
                if stored.fingerprint != key.fingerprint {
                    return Err(Failure::Refused(ServiceError::IdempotencyKeyReused));
                }
                // The stored answer is given once its commit is durable.
                db::wait_for_durable_reads(&mut tx).await?;
                tx.commit().await?;
                return Ok(Booking::Replayed(Rendered {
                    token: stored.token,
                    body: stored.response,
                }));
            }
            self.check_idempotency_room(&mut tx, actor, now).await?;
        }
        let mut engine = db::load_slot(&mut tx, &request.slot, Lock::ForUpdate, self.engine())
            .await?
            .ok_or_else(|| EngineError::SlotNotFound(request.slot.clone()))?;
        lost.check(Some(&engine), request, clock)?;
        let summary = engine
            .slot_summary(&request.slot)
            .expect("the loaded slot is in the engine");
        let issued = db::lock_doctor_day(&mut tx, &summary.doctor, summary.date).await?;
        // Drawn after the slot's lock, so within a slot arrival order is
        // commit order.
        let next_sequence = db::next_sequence(&mut tx).await?;
        engine.resume_counters(&request.slot, next_sequence, issued)?;
        let ctx = self.context(actor, clock);
        let outcome = engine.book(request.clone(), &ctx)?;
        let token = &outcome.token;
        db::write_token_changes(&mut tx, &outcome.slot, outcome.token_changes(), &ctx).await?;
        db::write_counts(&mut tx, &outcome.slot).await?;
        db::write_numbers_issued(&mut tx, &token.doctor, token.date, token.number).await?;
        let body: Arc<str> = Arc::from(render(&outcome));
        if let Some(key) = key {
            let record = StoredIdempotency {
                caller: actor.clone(),
                key: key.key.clone(),
                fingerprint: key.fingerprint,
                token: token.id,
                response: body.clone(),
                stored_at: ctx.at,
            };
            db::store_idempotency(&mut tx, &record).await?;
            db::prune_idempotency(&mut tx, ctx.at - IDEMPOTENCY_RETENTION).await?;
        }
        self.log_and_commit(tx, Made::Token(&outcome), &ctx).await?;
        Ok(Booking::Created(Rendered {
            token: token.id,
            body,
        }))
    }

    /// Refuses a new idempotency key when the caller, or the database,
    /// remembers as many as it may. Only keys within their retention
    /// count; keys stored by bookings running at the same moment are not
    /// seen, so the bound can be passed by at most the number of bookings
    /// in flight.
    async fn check_idempotency_room(
        &self,
        tx: &mut sqlx::PgConnection,
        actor: &Actor,
        now: Timestamp,
    ) -> Attempt<()> {
        let counts = db::count_idempotency(tx, actor, now - IDEMPOTENCY_RETENTION).await?;
        if counts.caller >= self.idempotency_limits.per_caller
            || counts.total >= self.idempotency_limits.total
        {
            return Err(self.keys_full(counts, now));
        }
        Ok(())
    }

    /// The refusal of a new key when the caller, or the database, has as
    /// many stored as it may: retry once the oldest that counts expires.
    fn keys_full(&self, counts: db::KeyCounts, now: Timestamp) -> Failure {
        let oldest = if counts.caller >= self.idempotency_limits.per_caller {
            counts.caller_oldest
        } else {
            counts.total_oldest
        };
        let oldest = oldest.unwrap_or(now);
        Failure::Refused(ServiceError::IdempotencyLimit {
            retry_after: (oldest + IDEMPOTENCY_RETENTION).duration_since(now),
        })
    }

    pub async fn act(
        &self,
        id: Uuid,
        action: Action,
        actor: Actor,
        clock: &Clock,
    ) -> Result<Outcome, ServiceError> {
        self.retry(|| self.try_act(id, action, &actor, clock)).await
    }

    async fn try_act(
        &self,
        id: Uuid,
        action: Action,
        actor: &Actor,
        clock: &Clock,
    ) -> Attempt<Outcome> {
        let mut tx = self.database.begin().await?;
        let (doctor, date) = db::token_day(&mut tx, id)
            .await?
            .ok_or(EngineError::TokenNotFound(id))?;
        let mut engine = self.lock_doctor_day(&mut tx, &doctor, date).await?;
        if engine.token(id, clock()).is_none() {
            // Only active and seated tokens are loaded: this one has ended.
            let from = db::token_status(&mut tx, id).await?;
            return Err(EngineError::InvalidTransition { from, action }.into());
        }
        let ctx = self.context(actor, clock);
        let outcome = engine.act(id, action, &ctx)?;
        self.write_action(tx, &engine, &outcome, &ctx).await?;
        Ok(outcome)
    }

    pub async fn call_next(
        &self,
        doctor: &DoctorId,
        actor: Actor,
        clock: &Clock,
    ) -> Result<Outcome, ServiceError> {
        self.retry(|| self.try_call_next(doctor, &actor, clock))
            .await
    }

    async fn try_call_next(
        &self,
        doctor: &DoctorId,
        actor: &Actor,
        clock: &Clock,
    ) -> Attempt<Outcome> {
        let mut tx = self.database.begin().await?;
        if !db::doctor_exists(&mut tx, doctor).await? {
            return Err(EngineError::DoctorNotFound(doctor.clone()).into());
        }
        let ctx = self.context(actor, clock);
        let mut engine = self.lock_doctor_day(&mut tx, doctor, ctx.today).await?;
        if !engine.has_doctor(doctor) {
            // The doctor has slots, but none today.
            return Err(EngineError::QueueEmpty.into());
        }
        let outcome = engine.call_next(doctor, &ctx)?;
        self.write_action(tx, &engine, &outcome, &ctx).await?;
        Ok(outcome)
    }

    /// The doctor's day on `date`, from one snapshot.
    pub async fn doctor_queue(
        &self,
        doctor: &DoctorId,
        date: Date,
        at: Timestamp,
    ) -> Result<Option<DoctorQueue>, ServiceError> {
        self.retry(|| async {
            let mut tx = self.database.snapshot().await?;
            if !db::doctor_exists(&mut tx, doctor).await? {
                return Ok(None);
            }
            let engine = self.read_doctor_day(&mut tx, doctor, date).await?;
            let ended = db::ended_counts(&mut tx, doctor, date).await?;
            let mut queue = DoctorQueue::empty(doctor.clone(), date);
            if let Some(loaded) = engine.doctor_queue(doctor, date, at) {
                queue = loaded;
            }
            // Only seated ended tokens are loaded; the others are counted.
            let count = |status| {
                ended
                    .iter()
                    .find(|(of, _)| *of == status)
                    .map_or(0, |(_, count)| *count)
            };
            queue.no_show = count(Status::NoShow);
            queue.cancelled = count(Status::Cancelled);
            queue.expired = count(Status::Expired);
            Ok(Some(queue))
        })
        .await
    }

    /// The waiting-hall board for `date`, from one snapshot.
    pub async fn board(
        &self,
        doctors: Option<&[DoctorId]>,
        date: Date,
    ) -> Result<Vec<BoardEntry>, ServiceError> {
        self.retry(|| async {
            let mut tx = self.database.snapshot().await?;
            let doctors = match doctors {
                Some(doctors) => {
                    let mut doctors = doctors.to_vec();
                    doctors.sort();
                    doctors.dedup();
                    doctors
                }
                None => db::doctors_on(&mut tx, date).await?,
            };
            let mut board = Vec::with_capacity(doctors.len());
            for doctor in doctors {
                let engine = self.read_doctor_day(&mut tx, &doctor, date).await?;
                board.extend(engine.board(Some(std::slice::from_ref(&doctor)), date));
            }
            Ok(board)
        })
        .await
    }

    pub async fn set_capacity(
        &self,
        slot: &SlotId,
        capacity: Capacity,
        actor: Actor,
        clock: &Clock,
    ) -> Result<SlotOutcome, ServiceError> {
        self.retry(|| self.try_set_capacity(slot, capacity, &actor, clock))
            .await
    }

    async fn try_set_capacity(
        &self,
        slot: &SlotId,
        capacity: Capacity,
        actor: &Actor,
        clock: &Clock,
    ) -> Attempt<SlotOutcome> {
        let mut tx = self.database.begin().await?;
        let mut engine = db::load_slot(&mut tx, slot, Lock::ForUpdate, self.engine())
            .await?
            .ok_or_else(|| EngineError::SlotNotFound(slot.clone()))?;
        let ctx = self.context(actor, clock);
        let outcome = engine.set_capacity(slot, capacity, &ctx)?;
        self.write_slot_change_and_commit(tx, None, Made::CapacityChanged(&outcome), &ctx)
            .await?;
        Ok(outcome)
    }

    pub async fn create_slot(
        &self,
        spec: SlotSpec,
        actor: Actor,
        clock: &Clock,
    ) -> Result<SlotSummary, ServiceError> {
        self.retry(|| self.try_create_slot(&spec, &actor, clock))
            .await
    }

    async fn try_create_slot(
        &self,
        spec: &SlotSpec,
        actor: &Actor,
        clock: &Clock,
    ) -> Attempt<SlotSummary> {
        let ctx = self.context(actor, clock);
        // The engine checks the slot on its own first, so refusals come in
        // the same order as with the embedded backend.
        let engine = &mut self.engine();
        let summary = engine.create_slot_at(spec.clone(), ctx.at)?;
        let day_ends_at = engine.day_ends_at(spec.date);
        let mut tx = self.database.begin().await?;
        db::add_doctor_day(&mut tx, &spec.doctor, spec.date).await?;
        // Slot creation for one doctor's day is serialised by this lock, so
        // two instances cannot both pass the overlap check.
        db::lock_doctor_day(&mut tx, &spec.doctor, spec.date).await?;
        if db::slot_exists(&mut tx, &spec.id).await? {
            return Err(EngineError::SlotExists(spec.id.clone()).into());
        }
        if let Some(existing) = db::overlapping_slot(&mut tx, spec).await? {
            return Err(EngineError::SlotOverlap { existing }.into());
        }
        if !db::insert_slot(&mut tx, spec, ctx.at, summary.closes_at, day_ends_at).await? {
            // Another doctor's slot took this id meanwhile.
            return Err(EngineError::SlotExists(spec.id.clone()).into());
        }
        if summary.closed {
            db::write_closed(&mut tx, &summary).await?;
        }
        self.log_and_commit(tx, Made::SlotCreated(&summary), &ctx)
            .await?;
        Ok(summary)
    }

    /// Closes a slot at once. The doctor's whole day is locked and loaded:
    /// a patient promoted into the hall joins the doctor's call order.
    pub async fn close_slot(
        &self,
        slot: &SlotId,
        actor: Actor,
        clock: &Clock,
    ) -> Result<SlotOutcome, ServiceError> {
        self.retry(|| self.try_close_slot(slot, &actor, clock))
            .await
    }

    async fn try_close_slot(
        &self,
        slot: &SlotId,
        actor: &Actor,
        clock: &Clock,
    ) -> Attempt<SlotOutcome> {
        let mut tx = self.database.begin().await?;
        let summary = db::slot_summary(&mut tx, slot)
            .await?
            .ok_or_else(|| EngineError::SlotNotFound(slot.clone()))?;
        let (doctor, date) = (&summary.doctor, summary.date);
        let mut engine = self.lock_doctor_day(&mut tx, doctor, date).await?;
        let ctx = self.context(actor, clock);
        let outcome = engine.close_slot(slot, &ctx)?;
        let day = Some((&engine, doctor, date));
        self.write_slot_change_and_commit(tx, day, Made::SlotClosed(&outcome), &ctx)
            .await?;
        Ok(outcome)
    }

    /// Records a doctor's absence under the day's locks (every slot row
    /// of the doctor and date, then the day's row), so that of two
    /// instances at once the second finds the slots closed and nothing
    /// to cancel, and writes nothing.
    pub async fn declare_absence(
        &self,
        doctor: &DoctorId,
        date: Date,
        actor: Actor,
        clock: &Clock,
    ) -> Result<Absence, ServiceError> {
        self.retry(|| self.try_declare_absence(doctor, date, &actor, clock))
            .await
    }

    async fn try_declare_absence(
        &self,
        doctor: &DoctorId,
        date: Date,
        actor: &Actor,
        clock: &Clock,
    ) -> Attempt<Absence> {
        let mut tx = self.database.begin().await?;
        if !db::doctor_exists(&mut tx, doctor).await? {
            return Err(EngineError::DoctorNotFound(doctor.clone()).into());
        }
        let mut engine = self.lock_doctor_day(&mut tx, doctor, date).await?;
        if !engine.has_doctor(doctor) {
            // The doctor has slots, but none on this date.
            return Err(EngineError::NoSlotOnDate {
                doctor: doctor.clone(),
                date,
            }
            .into());
        }
        let ctx = self.context(actor, clock);
        let absence = engine.declare_absence(doctor, date, &ctx)?;
        if !absence.changed() {
            // Nothing to write: the transaction ends with its locks.
            tx.rollback().await?;
            return Ok(absence);
        }
        let day = Some((&engine, doctor, date));
        self.write_slot_change_and_commit(tx, day, Made::Absence(&absence), &ctx)
            .await?;
        Ok(absence)
    }

    /// Does the work the clock has made due, one doctor's day per
    /// transaction: that day's slots are locked and loaded, and the engine
    /// decides from their stored state, so an instance that finds a slot
    /// already closed by another does nothing to it, and a closing is
    /// written whole or not at all. Returns how many changes were made.
    pub async fn tick(&self, clock: &Clock) -> Result<usize, ServiceError> {
        let due = self
            .retry(|| async {
                let mut connection = self.database.connection().await?;
                Ok(db::due_days(&mut connection, clock(), DUE_DAYS_PER_TICK).await?)
            })
            .await?;
        let mut done = 0;
        for (doctor, date) in &due {
            done += self
                .retry(|| self.try_tick_day(doctor, *date, clock))
                .await?;
        }
        Ok(done)
    }

    async fn try_tick_day(&self, doctor: &DoctorId, date: Date, clock: &Clock) -> Attempt<usize> {
        let mut tx = self.database.begin().await?;
        let mut engine = self.lock_doctor_day(&mut tx, doctor, date).await?;
        let ctx = self.context(&Actor::from(SYSTEM_ACTOR), clock);
        let done = engine.tick(&ctx);
        db::write_days_ended(&mut tx, doctor, date, ctx.at).await?;
        let day = Some((&engine, doctor, date));
        self.write_slot_change_and_commit(tx, day, Made::Timed(&done), &ctx)
            .await?;
        Ok(done.len())
    }

    /// A slot with its queues; the doctor's whole day is loaded, because a
    /// checked-in token's place is in the doctor's call order.
    pub async fn slot(
        &self,
        id: &SlotId,
        at: Timestamp,
    ) -> Result<Option<SlotDetail>, ServiceError> {
        self.retry(|| async {
            let mut tx = self.database.snapshot().await?;
            let Some(summary) = db::slot_summary(&mut tx, id).await? else {
                return Ok(None);
            };
            let engine = self
                .read_doctor_day(&mut tx, &summary.doctor, summary.date)
                .await?;
            Ok(engine.slot(id, at))
        })
        .await
    }

    /// The slot's tokens that ended without a seat; `None` for an unknown
    /// slot.
    pub async fn ended_tokens(&self, id: &SlotId) -> Result<Option<Vec<TokenView>>, ServiceError> {
        self.retry(|| async {
            let mut tx = self.database.snapshot().await?;
            if !db::slot_exists(&mut tx, id).await? {
                return Ok(None);
            }
            Ok(Some(db::ended_tokens(&mut tx, id).await?))
        })
        .await
    }

    pub async fn slot_summary(&self, id: &SlotId) -> Result<Option<SlotSummary>, ServiceError> {
        self.retry(|| async {
            let mut connection = self.database.connection().await?;
            Ok(db::slot_summary(&mut connection, id).await?)
        })
        .await
    }

    /// One page of slots, as [`crate::engine::Engine::slots`] lists them.
    pub async fn slots(&self, query: &SlotQuery) -> Result<SlotPage, ServiceError> {
        self.retry(|| async {
            let mut connection = self.database.connection().await?;
            let page = db::slot_page(&mut connection, query).await?;
            Ok(page.ok_or_else(|| {
                let after = query.after.clone();
                EngineError::SlotNotFound(after.expect("only a cursor names a missing slot"))
            })?)
        })
        .await
    }

    pub async fn token(
        &self,
        id: Uuid,
        at: Timestamp,
    ) -> Result<Option<TokenDetail>, ServiceError> {
        self.retry(|| async {
            let mut tx = self.database.snapshot().await?;
            let Some(mut token) = db::token_view(&mut tx, id).await? else {
                return Ok(None);
            };
            if token.status.is_callable() {
                // Its place and estimate come from the doctor's call order.
                let engine = self
                    .read_doctor_day(&mut tx, &token.doctor, token.date)
                    .await?;
                if let Some(view) = engine.token(id, at) {
                    token = view;
                }
            }
            let history = db::token_history(&mut tx, id).await?;
            Ok(Some(TokenDetail { token, history }))
        })
        .await
    }
}

/// How long the follower waits for a notification before it reads the log
/// anyway (a notification can be lost with its connection), and how long it
/// waits after an error before it tries again.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The least time between two reads of the log. Every instance's follower
/// reads every instance's events, and each commit wakes each follower:
/// reading at most every 5 ms, a busy follower reads many commits' events
/// at once (one instance booking in one call went from 5,400 to 6,500
/// bookings/s, `loadtest/pg-slot-size.py`), and an event reaches the
/// streams up to 5 ms later.
const FOLLOW_GAP: std::time::Duration = std::time::Duration::from_millis(5);

/// How often (in the service's time) the follower prunes events past their
/// retention, and how many at most each time.
const PRUNE_EVERY: jiff::SignedDuration = jiff::SignedDuration::from_mins(1);
const PRUNE_MAX: i64 = 5_000;

/// Tells this instance's subscribers every event any instance commits, once
/// and in id order: one reader of the log for all of them. Commits that log
/// events hold the log's head until they are visible, so reading the ids
/// after the last one told never skips one that is yet to commit.
async fn follow_events(
    database: Database,
    events: EventBus,
    copies: Arc<SlotCopies>,
    clock: Clock,
    metrics: StorageMetrics,
) {
    let mut state = Following::default();
    loop {
        match follow_until_error(&database, &events, &copies, &mut state, &clock, &metrics).await {
            Ok(never) => match never {},
            Err(error) => {
                tracing::warn!(%error, "reading the event log failed; trying again");
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    }
}

/// What the follower keeps across its reconnections.
#[derive(Default)]
struct Following {
    /// The last event id told.
    told: Option<u64>,
    /// When events were last pruned.
    pruned: Option<Timestamp>,
    /// The server the last read reached.
    server: Option<db::ServerRun>,
    /// Since when events read from a restarted server have been held.
    holding_since: Option<std::time::Instant>,
}

impl Following {
    /// Whether the events just read from `server` may be told. A primary that
    /// crashed and restarted shows the commits that were waiting for its
    /// synchronous standby when it died: never acknowledged, and lost if the
    /// standby is promoted. Events read from it are held until a synchronous
    /// standby has everything it wrote, or until it has served for
    /// [`RESTARTED_HOLD`] without being demoted.
    async fn trusts(
        &mut self,
        server: db::ServerRun,
        connection: &mut sqlx::PgConnection,
    ) -> Result<bool, PgError> {
        if let Some(before) = &self.server {
            if server.restarted_since(before) {
                tracing::warn!("the database server restarted; its events are held until a standby has them or it has served for a while");
                self.holding_since = Some(std::time::Instant::now());
            } else if !server.is_same_server(before) {
                // Another server: the standby promoted, whose log is what
                // survives.
                self.holding_since = None;
            }
        }
        self.server = Some(server);
        let Some(since) = self.holding_since else {
            return Ok(true);
        };
        if since.elapsed() < RESTARTED_HOLD && !db::standby_has_all(connection).await? {
            return Ok(false);
        }
        self.holding_since = None;
        Ok(true)
    }
}

/// How long events read from a server that restarted are held when no
/// synchronous standby confirms them: longer than a failover takes, after
/// which the restarted server is demoted and the follower reads from the
/// new primary. A server without a standby (or one that comes back without
/// a failover) is then trusted again.
const RESTARTED_HOLD: std::time::Duration = std::time::Duration::from_secs(30);

/// How long the follower waits for another wait for durability to cover
/// what it read before making its own: about the time between a group's
/// commit and the end of its wait for the flush. On an instance with
/// group writers, events read while none writes wait this long more
/// before they are told.
const RIDE_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

async fn follow_until_error(
    database: &Database,
    events: &EventBus,
    copies: &SlotCopies,
    state: &mut Following,
    clock: &Clock,
    metrics: &StorageMetrics,
) -> Result<std::convert::Infallible, PgError> {
    let mut listener = database.listen_for_events().await?;
    // The first time, the stream starts with what comes next: readers
    // catching up read the log themselves.
    let mut last = match state.told {
        Some(last) => last,
        None => db::newest_event_id(&mut *database.connection().await?).await?,
    };
    state.told = Some(last);
    loop {
        // A pooled connection only while reading: between reads the pool
        // serves requests with it.
        let mut connection = database.connection().await?;
        loop {
            let (page, read) = db::read_events(&mut connection, last, PAGE_MAX).await?;
            let Some(newest) = page.events.last().map(|event| event.id) else {
                if page.newest.is_some_and(|newest| newest < last) {
                    // The log ends before events this instance has told:
                    // a failover promoted a standby that never received
                    // them (changes that were never acknowledged, read from
                    // a crashed primary that restarted before it was
                    // demoted). Ids go on after the last one told, so that
                    // no id is ever told with two meanings.
                    tracing::error!(
                        told = last,
                        newest = page.newest,
                        "the event log lost events that were told; numbering goes on after them"
                    );
                    db::skip_event_ids_to(&mut connection, last).await?;
                }
                break;
            };
            // Only events that a failover cannot take back are told. Under
            // load a group's writer is about to wait for durability past
            // them anyway; waiting with it spares a commit and a flush of
            // the follower's own (one per read, on every instance).
            let server = if database.durable_covers(&read, RIDE_WAIT).await {
                read.server
            } else {
                let durable = db::wait_for_durable_reads(&mut connection).await?;
                database.note_durable(durable.clone());
                durable.server
            };
            if !state.trusts(server, &mut connection).await? {
                break;
            }
            last = newest;
            state.told = Some(last);
            let noted = copies.note(&page.events);
            if events.has_subscribers() {
                events.publish(page.events);
            }
            bring_up_noted(&mut connection, &noted, metrics).await?;
        }
        let now = clock();
        if state.pruned.is_none_or(|last| now - PRUNE_EVERY >= last) {
            state.pruned = Some(now);
            db::prune_events(&mut connection, now - EVENT_RETENTION, PRUNE_MAX).await?;
        }
        drop(connection);
        tokio::time::sleep(FOLLOW_GAP).await;
        tokio::select! {
            notification = listener.recv() => { notification?; }
            () = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

/// Brings up, in one read, the copies of the slots in `noted` that lack a
/// change the follower has just noted on them. With two instances booking
/// into the same slots, most bookings found their copy behind and read its
/// changes first, one round trip and one transaction each; here one read
/// serves every copy that one read of the log showed behind. A copy in use
/// is left to its booking, which brings it up itself.
async fn bring_up_noted(
    connection: &mut sqlx::PgConnection,
    noted: &HashMap<SlotId, Arc<SlotEntry>>,
    metrics: &StorageMetrics,
) -> Result<(), PgError> {
    let mut behind = Vec::new();
    for (id, entry) in noted {
        let Ok(held) = entry.copy.try_lock() else {
            continue;
        };
        if held
            .as_ref()
            .is_some_and(|copy| entry.lacks_noted(id, copy))
        {
            behind.push((id, held));
        }
    }
    if behind.is_empty() {
        return Ok(());
    }
    let mut copies: Vec<(&SlotId, &mut db::SlotCopy)> = behind
        .iter_mut()
        .map(|(id, held)| (*id, held.as_mut().expect("held a copy above")))
        .collect();
    let read = db::refresh_slot_copies(connection, &mut copies, &[]).await;
    drop(copies);
    // A copy not brought up is dropped: it may be half brought up, and the
    // changes it lacks are no longer noted.
    let brought_up = read.as_deref().unwrap_or_default();
    for (at, (_, held)) in behind.iter_mut().enumerate() {
        if brought_up.get(at) != Some(&true) {
            **held = None;
        }
    }
    let count = brought_up.iter().filter(|up| **up).count();
    metrics.follower_copy_refreshes.increment(count as u64);
    read.map(|_| ())
}

fn is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database
            .code()
            .is_some_and(|code| RETRIED_SQLSTATES.contains(&code.as_ref())),
        _ => false,
    }
}
