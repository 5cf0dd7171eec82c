//! The service: what the HTTP layer calls. It hides where state lives:
//! in this process (memory, or memory plus the SQLite journal) or in a
//! PostgreSQL database shared by several instances. Both backends decide
//! with the same engine and make a change durable before acknowledging it.

mod backups;
mod group_commit;
mod local;
mod postgres;
pub mod report;
mod slot_copies;
pub mod weekly;

use std::sync::Arc;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::engine::{
    Absence, Action, Actor, BoardEntry, BookRequest, Capacity, DoctorId, DoctorQueue, Engine,
    EngineError, HistoryEntry, Outcome, SlotDetail, SlotId, SlotOutcome, SlotPage, SlotQuery,
    SlotSpec, SlotSummary, TokenView,
};
pub use crate::store::backup::BackupInfo;
use crate::store::events::Published;
use crate::store::BackupMetrics;
pub use crate::store::Fingerprint;
use crate::store::{Event, EventBus, Journal, Page, Scope, StoredIdempotency};
use backups::Backups;
pub use backups::{BackupError, BackupPlan};
use local::Local;
pub use postgres::{Postgres, RETRIED_SQLSTATES};
use weekly::Templates;

/// Where the service reads the time. Tests inject a fixed clock.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// How many idempotency keys are remembered at once. Each remembered key
/// keeps its booking's answer for the retention period, so without a
/// bound one caller could grow memory and disk at will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyLimits {
    /// Keys one caller (one API key) may have remembered at once.
    pub per_caller: usize,
    /// Keys remembered at once over all callers.
    pub total: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("idempotency key reused with another request")]
    IdempotencyKeyReused,
    /// The caller, or the service, remembers as many idempotency keys as
    /// it may; the oldest is forgotten after `retry_after`.
    #[error("too many idempotency keys are remembered")]
    IdempotencyLimit { retry_after: SignedDuration },
    #[error("storage cannot make changes durable")]
    Unavailable,
}

/// An idempotency key with the digest of the request it guards.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: Fingerprint,
}

/// A booking's answer as sent: the new token and the rendered body.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub token: Uuid,
    pub body: Arc<str>,
}

#[derive(Debug, Clone)]
pub enum Booking {
    Created(Rendered),
    /// An earlier request with the same key and body; nothing changed.
    Replayed(Rendered),
}

/// A token with its history, oldest first.
#[derive(Debug, Clone)]
pub struct TokenDetail {
    pub token: TokenView,
    pub history: Vec<HistoryEntry>,
}

pub struct Service {
    backend: Backend,
    events: EventBus,
    clock: Clock,
    zone: TimeZone,
    /// The weekly templates, when the clinic gave some.
    templates: Option<Expansion>,
    /// Where and when the embedded store is backed up; `None` without one.
    backups: Option<Backups>,
}

/// The weekly templates in force and how far their expansion has come.
struct Expansion {
    /// Swapped whole when the templates are read again.
    templates: std::sync::RwLock<Arc<Templates>>,
    days_ahead: u16,
    /// The "today" of the last complete expansion. Held while expanding,
    /// so one expansion runs at a time and a tick that comes during one
    /// waits for it instead of repeating its work.
    done_for: tokio::sync::Mutex<Option<Date>>,
}

/// What the embedded backend starts from: an engine and what storage
/// remembered of the changes before.
pub struct LocalStart {
    pub engine: Engine,
    pub idempotency: Vec<StoredIdempotency>,
    /// `None` in memory: nothing is kept.
    pub journal: Option<Journal>,
    /// The id of the newest event; 0 when there is none.
    pub last_event: u64,
    /// How many past days the engine holds besides today and the days
    /// ahead, when storage keeps the older ones; `None` holds them all.
    pub live_days: Option<u16>,
}

impl LocalStart {
    /// A fresh engine kept in memory only. It holds every day: there is
    /// nowhere else to read an old one from.
    pub fn in_memory(engine: Engine) -> LocalStart {
        LocalStart {
            engine,
            idempotency: Vec::new(),
            journal: None,
            last_event: 0,
            live_days: None,
        }
    }
}

/// Both boxed: each is much larger than the pointer the other would need.
enum Backend {
    Local(Box<Local>),
    Postgres(Box<Postgres>),
}

impl Service {
    /// A service on this process's engine; durable when `start` has a
    /// journal. Durable changes are told on `events`.
    pub fn local(
        mut start: LocalStart,
        idempotency_limits: IdempotencyLimits,
        events: EventBus,
        clock: Clock,
        zone: TimeZone,
    ) -> Service {
        start.engine = std::mem::take(&mut start.engine).with_zone(zone.clone());
        Service {
            backend: Backend::Local(Box::new(Local::new(
                start,
                idempotency_limits,
                events.clone(),
                clock.clone(),
                zone.clone(),
            ))),
            events,
            clock,
            zone,
            templates: None,
            backups: None,
        }
    }

    /// A service on a shared PostgreSQL database. The instance tells the
    /// events of its own changes on `events`, the bus `postgres` was made
    /// with.
    pub fn postgres(postgres: Postgres, events: EventBus, clock: Clock, zone: TimeZone) -> Service {
        Service {
            backend: Backend::Postgres(Box::new(postgres)),
            events,
            clock,
            zone,
            templates: None,
            backups: None,
        }
    }

    /// Backs the embedded store up as `plan` says (on demand always, on
    /// a schedule when it has one), counting backups in `metrics`.
    pub fn with_backups(mut self, plan: BackupPlan, metrics: BackupMetrics) -> Service {
        self.backups = Some(Backups::new(plan, metrics));
        self
    }

    /// Takes a backup of the embedded store now: refused while another
    /// runs, and on backends that keep no file of their own.
    pub async fn backup(&self) -> Result<BackupInfo, BackupError> {
        let journal = match &self.backend {
            Backend::Local(local) => local.journal(),
            Backend::Postgres(_) => None,
        };
        match (journal, &self.backups) {
            (Some(journal), Some(backups)) => backups.on_demand(journal, self.now()).await,
            _ => Err(BackupError::Unsupported(match self.storage_name() {
                "memory" => "in memory only",
                "postgres" => "in PostgreSQL",
                _ => "without a backup directory",
            })),
        }
    }

    /// Makes slots from `templates` for today and the `days_ahead` dates
    /// after it, at [`Service::expand_templates`] and at the first tick of
    /// each day.
    pub fn with_templates(mut self, templates: Templates, days_ahead: u16) -> Service {
        self.templates = Some(Expansion {
            templates: std::sync::RwLock::new(Arc::new(templates)),
            days_ahead: days_ahead.min(weekly::DAYS_AHEAD_MAX),
            done_for: tokio::sync::Mutex::new(None),
        });
        self
    }

    /// Puts `templates` in place of the ones in force; expansions from now
    /// on follow them. False, and nothing changes, for a service built
    /// without templates.
    pub fn replace_templates(&self, templates: Templates) -> bool {
        let Some(expansion) = &self.templates else {
            return false;
        };
        *expansion
            .templates
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(templates);
        true
    }

    /// Makes the slots the weekly templates ask for from today through the
    /// configured days ahead, now; returns how many were made. See
    /// [`Service::expand`].
    pub async fn expand_templates(&self) -> Result<usize, ServiceError> {
        self.expand(true).await
    }

    /// Makes the templates' slots, unless `force` is false and they were
    /// made for today already.
    ///
    /// A doctor's date is filled once: when that doctor already has a slot
    /// the templates made on the date (its id starts `<doctor>-<date>-`),
    /// whether open, changed or closed by an admin, the date is left
    /// alone. So no slot is made twice, across restarts and instances, and
    /// a session changed after its dates were filled applies to the dates
    /// not filled yet. A slot whose end has already passed is not made. A
    /// slot that overlaps one an admin made is left out and logged. Storage
    /// that cannot take a change stops the expansion with the error; the
    /// next tick tries again.
    async fn expand(&self, force: bool) -> Result<usize, ServiceError> {
        let Some(expansion) = &self.templates else {
            return Ok(0);
        };
        let mut done_for = expansion.done_for.lock().await;
        let today = self.today();
        if !force && *done_for == Some(today) {
            return Ok(0);
        }
        // Until this expansion completes, the next tick must try again.
        *done_for = None;
        let templates = expansion
            .templates
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let now = self.now();
        let mut made = 0;
        for date in weekly::window(today, expansion.days_ahead) {
            for (doctor, slots) in templates.slots_on(date) {
                let listed = SlotQuery {
                    doctor: Some(doctor.clone()),
                    date: Some(date),
                    after: None,
                    limit: weekly::SESSIONS_MAX,
                };
                let ids: Vec<SlotId> = self
                    .slots(&listed)
                    .await?
                    .slots
                    .into_iter()
                    .map(|slot| slot.id)
                    .collect();
                if weekly::filled(&doctor, date, &ids) {
                    continue;
                }
                for slot in slots {
                    let ends = slot.date.to_datetime(slot.end).to_zoned(self.zone.clone());
                    if ends.is_ok_and(|ends| ends.timestamp() <= now) {
                        continue;
                    }
                    let id = slot.id.clone();
                    match self
                        .create_slot(slot, crate::engine::SYSTEM_ACTOR.into())
                        .await
                    {
                        Ok(_) => made += 1,
                        // Another instance made it a moment ago.
                        Err(ServiceError::Engine(EngineError::SlotExists(_))) => {}
                        Err(ServiceError::Engine(refused)) => {
                            tracing::warn!(slot = %id, reason = %refused, "a slot of the weekly templates is left out");
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
        }
        *done_for = Some(today);
        if made > 0 {
            tracing::info!(
                slots = made,
                through = %weekly::window(today, expansion.days_ahead).last().unwrap_or(today),
                "made the weekly templates' slots"
            );
        }
        Ok(made)
    }

    /// Every change made durable from now on, as events in id order.
    /// Subscribe first, then read the log with [`Service::events_after`]
    /// up to where the subscription takes over: together they miss
    /// nothing.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Published> {
        self.events.subscribe()
    }

    /// The log's events after `after`, at most `limit` (at most
    /// [`crate::store::events::PAGE_MAX`] are read at once), with the
    /// oldest id the log keeps.
    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Page, ServiceError> {
        let limit = limit.min(crate::store::events::PAGE_MAX);
        match &self.backend {
            Backend::Local(local) => local.events_after(after, limit).await,
            Backend::Postgres(postgres) => postgres.events_after(after, limit).await,
        }
    }

    /// The events the report of `date` is made of: the token events of
    /// the date's slots and their creations, kept or still in the log, in
    /// id order.
    pub async fn report_events(&self, date: Date) -> Result<Vec<Event>, ServiceError> {
        match &self.backend {
            Backend::Local(local) => local.report_events(date).await,
            Backend::Postgres(postgres) => postgres.report_events(date).await,
        }
    }

    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// The clinic's time zone, in which slots' dates and times are given.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The clock the service reads.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Today's date in the clinic's time zone.
    pub fn today(&self) -> Date {
        self.now().to_zoned(self.zone.clone()).date()
    }

    /// Where changes are kept, for health reports.
    pub fn storage_name(&self) -> &'static str {
        match &self.backend {
            Backend::Local(local) => local.storage_name(),
            Backend::Postgres(_) => "postgres",
        }
    }

    /// `false` once storage has failed (the service then refuses writes)
    /// or, with PostgreSQL, while the database cannot be reached. The
    /// PostgreSQL check asks the database, so an instance that lost it
    /// reports healthy again as soon as it is back.
    pub async fn is_healthy(&self) -> bool {
        match &self.backend {
            Backend::Local(local) => local.is_healthy(),
            Backend::Postgres(postgres) => postgres.check().await,
        }
    }

    /// Books a token; with a key, a retry by the same caller replays the
    /// first answer. `render` turns the outcome into the response body before the change
    /// is committed, so that the remembered answer is exactly the one sent.
    pub async fn book(
        &self,
        request: BookRequest,
        key: Option<IdempotencyKey>,
        actor: Actor,
        render: impl Fn(&Outcome) -> String + Sync,
    ) -> Result<Booking, ServiceError> {
        match &self.backend {
            Backend::Local(local) => local.book(request, key, actor, render).await,
            // Boxed: the PostgreSQL future is several times the size of the
            // embedded one, and every booking's future, whatever the
            // backend, would otherwise be as large.
            Backend::Postgres(postgres) => {
                Box::pin(postgres.book(request, key, actor, &self.clock, &render)).await
            }
        }
    }

    /// Takes an action on a token: check-in, call, start, complete, skip,
    /// cancel, no-show.
    pub async fn act(
        &self,
        id: Uuid,
        action: Action,
        actor: Actor,
    ) -> Result<Outcome, ServiceError> {
        match &self.backend {
            Backend::Local(local) => local.act(id, action, actor).await,
            Backend::Postgres(postgres) => {
                Box::pin(postgres.act(id, action, actor, &self.clock)).await
            }
        }
    }

    /// Calls the doctor's first checked-in token of today.
    pub async fn call_next(
        &self,
        doctor: &DoctorId,
        actor: Actor,
    ) -> Result<Outcome, ServiceError> {
        match &self.backend {
            Backend::Local(local) => local.call_next(doctor, actor).await,
            Backend::Postgres(postgres) => {
                Box::pin(postgres.call_next(doctor, actor, &self.clock)).await
            }
        }
    }

    /// The doctor's day on `date`; `None` when the doctor has no slot on
    /// any date.
    pub async fn doctor_queue(
        &self,
        doctor: &DoctorId,
        date: Date,
    ) -> Result<Option<DoctorQueue>, ServiceError> {
        let at = self.now();
        match &self.backend {
            Backend::Local(local) => {
                let read = |engine: &Engine| engine.doctor_queue(doctor, date, at);
                // A day that left the engine is read from storage; a
                // doctor without a slot that day has an empty day, which
                // the engine answers.
                if local
                    .live_from(self.today())
                    .is_some_and(|from| date < from)
                {
                    let day = Scope::Date(date, Some(doctor.clone()));
                    if let Some(queue) = local.stored(day).await?.and_then(|engine| read(&engine)) {
                        return Ok(Some(queue));
                    }
                }
                match local.read(read).await? {
                    None if local.has_stored_doctor(doctor).await? => {
                        Ok(Some(DoctorQueue::empty(doctor.clone(), date)))
                    }
                    queue => Ok(queue),
                }
            }
            Backend::Postgres(postgres) => postgres.doctor_queue(doctor, date, at).await,
        }
    }

    /// Today's waiting-hall board for the given doctors, or for every
    /// doctor with a slot today.
    pub async fn board(
        &self,
        doctors: Option<&[DoctorId]>,
    ) -> Result<(Date, Vec<BoardEntry>), ServiceError> {
        let today = self.today();
        let board = match &self.backend {
            Backend::Local(local) => local.read(|engine| engine.board(doctors, today)).await?,
            Backend::Postgres(postgres) => postgres.board(doctors, today).await?,
        };
        Ok((today, board))
    }

    pub async fn set_capacity(
        &self,
        slot: &SlotId,
        capacity: Capacity,
        actor: Actor,
    ) -> Result<SlotOutcome, ServiceError> {
        match &self.backend {
            Backend::Local(local) => local.set_capacity(slot, capacity, actor).await,
            Backend::Postgres(postgres) => {
                postgres
                    .set_capacity(slot, capacity, actor, &self.clock)
                    .await
            }
        }
    }

    pub async fn create_slot(
        &self,
        spec: SlotSpec,
        actor: Actor,
    ) -> Result<SlotSummary, ServiceError> {
        match &self.backend {
            Backend::Local(local) => local.create_slot(spec, actor).await,
            Backend::Postgres(postgres) => postgres.create_slot(spec, actor, &self.clock).await,
        }
    }

    /// Closes a slot at once (admin).
    pub async fn close_slot(
        &self,
        slot: &SlotId,
        actor: Actor,
    ) -> Result<SlotOutcome, ServiceError> {
        match &self.backend {
            Backend::Local(local) => local.close_slot(slot, actor).await,
            Backend::Postgres(postgres) => postgres.close_slot(slot, actor, &self.clock).await,
        }
    }

    /// Records that the doctor is absent on `date` (admin): the doctor's
    /// slots of that date close and their active tokens are cancelled,
    /// as one durable change; a repeat finds nothing to do and changes
    /// nothing (see [`Engine::declare_absence`]).
    pub async fn declare_absence(
        &self,
        doctor: &DoctorId,
        date: Date,
        actor: Actor,
    ) -> Result<Absence, ServiceError> {
        match &self.backend {
            Backend::Local(local) => local.declare_absence(doctor, date, actor).await,
            Backend::Postgres(postgres) => {
                Box::pin(postgres.declare_absence(doctor, date, actor, &self.clock)).await
            }
        }
    }

    /// Does what the clock has made due by now: closes the slots whose
    /// closing time has come and ends the days that are over, as the
    /// system. What is due is read from the state, so work that fell due
    /// while the service was down is done by the first tick. The first tick
    /// of each day also makes the weekly templates' slots for the date that
    /// came into reach. Returns how many slot changes were made, slots
    /// made included.
    ///
    /// A scheduled backup that is due is taken too, after the closings,
    /// and the tick returns once it is done; it is logged and counted
    /// whatever its outcome, and never fails the tick.
    pub async fn tick(&self) -> Result<usize, ServiceError> {
        let timed = match &self.backend {
            Backend::Local(local) => local.tick().await,
            Backend::Postgres(postgres) => postgres.tick(&self.clock).await,
        };
        if let (Backend::Local(local), Some(backups)) = (&self.backend, &self.backups) {
            if let Some(journal) = local.journal() {
                backups.when_due(journal, self.now()).await;
            }
        }
        Ok(timed? + self.expand(false).await?)
    }

    pub async fn token(&self, id: Uuid) -> Result<Option<TokenDetail>, ServiceError> {
        let at = self.now();
        match &self.backend {
            Backend::Local(local) => {
                local
                    .read_or_stored(
                        |engine| {
                            Some(TokenDetail {
                                token: engine.token(id, at)?,
                                history: engine.history(id)?,
                            })
                        },
                        || Scope::OldToken(id),
                    )
                    .await
            }
            Backend::Postgres(postgres) => postgres.token(id, at).await,
        }
    }

    pub async fn slot(&self, id: &SlotId) -> Result<Option<SlotDetail>, ServiceError> {
        let at = self.now();
        match &self.backend {
            Backend::Local(local) => {
                local
                    .read_or_stored(|engine| engine.slot(id, at), || Scope::Slot(id.clone()))
                    .await
            }
            Backend::Postgres(postgres) => postgres.slot(id, at).await,
        }
    }

    /// The slot's tokens that ended without a seat (cancelled, no-shows,
    /// expired), which the slot's queues no longer list; `None` for an
    /// unknown slot.
    pub async fn ended_tokens(&self, id: &SlotId) -> Result<Option<Vec<TokenView>>, ServiceError> {
        let at = self.now();
        match &self.backend {
            Backend::Local(local) => {
                local
                    .read_or_stored(
                        |engine| engine.ended_tokens(id, at),
                        || Scope::Slot(id.clone()),
                    )
                    .await
            }
            Backend::Postgres(postgres) => postgres.ended_tokens(id).await,
        }
    }

    pub async fn slot_summary(&self, id: &SlotId) -> Result<Option<SlotSummary>, ServiceError> {
        match &self.backend {
            Backend::Local(local) => {
                local
                    .read_or_stored(|engine| engine.slot_summary(id), || Scope::Slot(id.clone()))
                    .await
            }
            Backend::Postgres(postgres) => postgres.slot_summary(id).await,
        }
    }

    /// How many slots and tokens this process's engine holds; `None` on
    /// PostgreSQL, where an instance holds none between requests.
    pub async fn engine_size(&self) -> Option<(usize, usize)> {
        match &self.backend {
            Backend::Local(local) => local
                .read(|engine| (engine.slot_count(), engine.token_count()))
                .await
                .ok(),
            Backend::Postgres(_) => None,
        }
    }

    /// One page of slots by date, start time and id, optionally for one
    /// doctor or date; see [`Engine::slots`].
    pub async fn slots(&self, query: &SlotQuery) -> Result<SlotPage, ServiceError> {
        match &self.backend {
            Backend::Local(local) => local.slots(query).await,
            Backend::Postgres(postgres) => postgres.slots(query).await,
        }
    }
}
