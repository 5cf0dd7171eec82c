//! The PostgreSQL backend: state shared by any number of instances.
//!
//! Each write is one transaction: lock the slot's row, load its active
//! tokens into a fresh engine, apply the request with the same engine the
//! embedded backend uses, write what changed, commit, and only then answer.
//! The row lock serialises every request on one slot across instances; the
//! doctor's day row is locked after it, so token numbers stay gapless and in
//! request order. Locks are always taken in the order idempotency key, slot,
//! doctor's day, so transactions never wait on each other in a cycle.
//!
//! Serialization failures, deadlocks and the race of two instances storing
//! one idempotency key are retried from the start; anything else the
//! database or network does wrong rolls the transaction back and answers
//! 503, so a change is never half applied.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use jiff::Timestamp;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{from_nanos, nanos, StoreError, IDEMPOTENCY_RETENTION};
use crate::engine::{
    Action, Actor, BookRequest, Capacity, CapacityOutcome, Context, DoctorId, Engine, EngineError,
    HistoryEntry, Limits, Outcome, PatientId, Reason, SlotDetail, SlotId, SlotPage, SlotQuery,
    SlotSpec, SlotSummary, Source, Status, TokenChange, TokenRecord, TokenView,
};
use crate::service::{
    Booking, Clock, IdempotencyKey, IdempotencyLimits, Rendered, ServiceError, TokenDetail,
};

/// How often a transaction that lost a race is tried again.
const ATTEMPTS: usize = 8;

pub struct Postgres {
    pool: PgPool,
    limits: Limits,
    idempotency_limits: IdempotencyLimits,
}

/// Why one attempt failed.
enum Failure {
    Refused(ServiceError),
    Database(sqlx::Error),
    Corrupt(String),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Failure {
        Failure::Database(error)
    }
}

impl From<EngineError> for Failure {
    fn from(error: EngineError) -> Failure {
        Failure::Refused(ServiceError::Engine(error))
    }
}

type Attempt<T> = Result<T, Failure>;

impl Postgres {
    /// Connects, creates `schema` if one is given (and uses it for every
    /// connection), and applies the migrations.
    pub async fn connect(
        url: &str,
        schema: Option<&str>,
        limits: Limits,
        idempotency_limits: IdempotencyLimits,
        connections: u32,
    ) -> Result<Postgres, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(postgres_error)?;
        let options = match schema {
            Some(schema) => {
                let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
                let mut connection = PgConnection::connect_with(&options)
                    .await
                    .map_err(postgres_error)?;
                connection
                    .execute(format!("CREATE SCHEMA IF NOT EXISTS {quoted}").as_str())
                    .await
                    .map_err(postgres_error)?;
                connection.close().await.map_err(postgres_error)?;
                options.options([("search_path", schema)])
            }
            None => options,
        };
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(postgres_error)?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|error| StoreError::Postgres(error.to_string()))?;
        Ok(Postgres {
            pool,
            limits,
            idempotency_limits,
        })
    }

    /// Whether the database answers a trivial query.
    pub async fn check(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Runs `attempt` until it succeeds, is refused, or fails in a way a
    /// retry cannot fix.
    async fn retry<T, F, Fut>(&self, mut attempt: F) -> Result<T, ServiceError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        for remaining in (0..ATTEMPTS).rev() {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Refused(error)) => return Err(error),
                Err(Failure::Database(error)) if remaining > 0 && is_retryable(&error) => {
                    tracing::debug!(%error, "retrying a transaction that lost a race");
                }
                Err(Failure::Database(error)) => {
                    tracing::error!(%error, "database error; nothing was changed");
                    return Err(ServiceError::Unavailable);
                }
                Err(Failure::Corrupt(what)) => {
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
        self.retry(|| self.try_book(&request, key.as_ref(), &actor, clock, render))
            .await
    }

    async fn try_book(
        &self,
        request: &BookRequest,
        key: Option<&IdempotencyKey>,
        actor: &Actor,
        clock: &Clock,
        render: &(dyn Fn(&Outcome) -> String + Sync),
    ) -> Attempt<Booking> {
        let mut tx = self.pool.begin().await?;
        if let Some(key) = key {
            let now = clock();
            // Requests with one caller's key queue here, so only the first
            // books.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || E'\\n' || $2, 0))")
                .bind(&**actor)
                .bind(&key.key)
                .execute(&mut *tx)
                .await?;
            // A key past its retention is a new key, even while its row
            // waits to be pruned.
            let stored = sqlx::query(
                "SELECT fingerprint, token_id, response FROM idempotency
                 WHERE caller = $1 AND key = $2 AND stored_at >= $3",
            )
            .bind(&**actor)
            .bind(&key.key)
            .bind(retention_cutoff(now))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(stored) = stored {
                if stored.try_get::<&[u8], _>(0)? != key.fingerprint {
                    return Err(Failure::Refused(ServiceError::IdempotencyKeyReused));
                }
                return Ok(Booking::Replayed(Rendered {
                    token: stored.try_get(1)?,
                    body: Arc::from(stored.try_get::<&str, _>(2)?),
                }));
            }
            self.check_idempotency_room(&mut tx, actor, now).await?;
        }
        let mut engine = self
            .load_slot(&mut tx, &request.slot, Lock::ForUpdate)
            .await?
            .ok_or_else(|| EngineError::SlotNotFound(request.slot.clone()))?;
        let summary = engine
            .slot_summary(&request.slot)
            .expect("the loaded slot is in the engine");
        let issued: i32 = sqlx::query_scalar(
            "SELECT numbers_issued FROM doctor_days WHERE doctor_id = $1 AND date = $2 FOR UPDATE",
        )
        .bind(summary.doctor.as_str())
        .bind(summary.date.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let next_sequence: i64 = sqlx::query_scalar("SELECT nextval('token_sequence')")
            .fetch_one(&mut *tx)
            .await?;
        engine.resume_counters(&request.slot, next_sequence as u64, issued as u32)?;
        let ctx = Context {
            at: clock(),
            actor: actor.clone(),
        };
        let outcome = engine.book(request.clone(), &ctx)?;
        let token = &outcome.token;
        write_token_changes(&mut tx, &outcome.slot, outcome.token_changes(), &ctx).await?;
        write_counts(&mut tx, &outcome.slot).await?;
        sqlx::query(
            "UPDATE doctor_days SET numbers_issued = $3 WHERE doctor_id = $1 AND date = $2",
        )
        .bind(token.doctor.as_str())
        .bind(token.date.to_string())
        .bind(token.number as i32)
        .execute(&mut *tx)
        .await?;
        let body: Arc<str> = Arc::from(render(&outcome));
        if let Some(key) = key {
            // The row of an expired use of this key may not be pruned yet:
            // the new use replaces it.
            sqlx::query(
                "INSERT INTO idempotency (caller, key, fingerprint, token_id, response, stored_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (caller, key) DO UPDATE SET
                     fingerprint = excluded.fingerprint, token_id = excluded.token_id,
                     response = excluded.response, stored_at = excluded.stored_at",
            )
            .bind(&**actor)
            .bind(&key.key)
            .bind(&key.fingerprint[..])
            .bind(token.id)
            .bind(&*body)
            .bind(nanos(ctx.at))
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM idempotency WHERE stored_at < $1")
                .bind(retention_cutoff(ctx.at))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Booking::Created(Rendered {
            token: token.id,
            body,
        }))
    }

    /// Refuses a new idempotency key when the caller, or the database,
    /// remembers as many as it may. The count is of the keys within their
    /// retention, so its cost grows with the keys the limits allow; keys
    /// stored by bookings running at the same moment are not seen, so the
    /// bound can be passed by at most the number of bookings in flight.
    async fn check_idempotency_room(
        &self,
        tx: &mut PgConnection,
        actor: &Actor,
        now: Timestamp,
    ) -> Attempt<()> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE caller = $1), min(stored_at) FILTER (WHERE caller = $1),
                    count(*), min(stored_at)
               FROM idempotency WHERE stored_at >= $2",
        )
        .bind(&**actor)
        .bind(retention_cutoff(now))
        .fetch_one(&mut *tx)
        .await?;
        let full = |count: i64, limit: usize| usize::try_from(count).unwrap_or(0) >= limit;
        let oldest = if full(row.try_get(0)?, self.idempotency_limits.per_caller) {
            row.try_get::<Option<i64>, _>(1)?
        } else if full(row.try_get(2)?, self.idempotency_limits.total) {
            row.try_get::<Option<i64>, _>(3)?
        } else {
            return Ok(());
        };
        let oldest = oldest.and_then(from_nanos).unwrap_or(now);
        Err(Failure::Refused(ServiceError::IdempotencyLimit {
            retry_after: (oldest + IDEMPOTENCY_RETENTION).duration_since(now),
        }))
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
        let mut tx = self.pool.begin().await?;
        let slot: Option<String> =
            sqlx::query_scalar("SELECT slot_id FROM tokens WHERE token_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let slot = slot.ok_or(EngineError::TokenNotFound(id))?;
        let slot = parse(SlotId::parse, &slot)?;
        let mut engine = self
            .load_slot(&mut tx, &slot, Lock::ForUpdate)
            .await?
            .ok_or_else(|| Failure::Corrupt(format!("token {id} names a missing slot")))?;
        if engine.token(id).is_none() {
            // Only active tokens are loaded: this one has ended.
            let status: String =
                sqlx::query_scalar("SELECT status FROM tokens WHERE token_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            let from = parse(Status::parse, &status)?;
            return Err(EngineError::InvalidTransition { from, action }.into());
        }
        let ctx = Context {
            at: clock(),
            actor: actor.clone(),
        };
        let outcome = engine.act(id, action, &ctx)?;
        write_token_changes(&mut tx, &outcome.slot, outcome.token_changes(), &ctx).await?;
        write_counts(&mut tx, &outcome.slot).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    pub async fn set_capacity(
        &self,
        slot: &SlotId,
        capacity: Capacity,
        actor: Actor,
        clock: &Clock,
    ) -> Result<CapacityOutcome, ServiceError> {
        self.retry(|| self.try_set_capacity(slot, capacity, &actor, clock))
            .await
    }

    async fn try_set_capacity(
        &self,
        slot: &SlotId,
        capacity: Capacity,
        actor: &Actor,
        clock: &Clock,
    ) -> Attempt<CapacityOutcome> {
        let mut tx = self.pool.begin().await?;
        let mut engine = self
            .load_slot(&mut tx, slot, Lock::ForUpdate)
            .await?
            .ok_or_else(|| EngineError::SlotNotFound(slot.clone()))?;
        let ctx = Context {
            at: clock(),
            actor: actor.clone(),
        };
        let outcome = engine.set_capacity(slot, capacity, &ctx)?;
        write_token_changes(&mut tx, &outcome.slot, outcome.token_changes(), &ctx).await?;
        sqlx::query("UPDATE slots SET capacity = $2 WHERE slot_id = $1")
            .bind(slot.as_str())
            .bind(outcome.slot.capacity as i32)
            .execute(&mut *tx)
            .await?;
        write_counts(&mut tx, &outcome.slot).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    pub async fn create_slot(
        &self,
        spec: SlotSpec,
        at: Timestamp,
    ) -> Result<SlotSummary, ServiceError> {
        self.retry(|| self.try_create_slot(&spec, at)).await
    }

    async fn try_create_slot(&self, spec: &SlotSpec, at: Timestamp) -> Attempt<SlotSummary> {
        // The engine checks the slot on its own first, so refusals come in
        // the same order as with the embedded backend.
        let summary = Engine::new(self.limits).create_slot(spec.clone())?;
        let mut tx = self.pool.begin().await?;
        let date = spec.date.to_string();
        sqlx::query(
            "INSERT INTO doctor_days (doctor_id, date) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(spec.doctor.as_str())
        .bind(&date)
        .execute(&mut *tx)
        .await?;
        // Slot creation for one doctor's day is serialised by this lock, so
        // two instances cannot both pass the overlap check.
        sqlx::query("SELECT 1 FROM doctor_days WHERE doctor_id = $1 AND date = $2 FOR UPDATE")
            .bind(spec.doctor.as_str())
            .bind(&date)
            .execute(&mut *tx)
            .await?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM slots WHERE slot_id = $1")
            .bind(spec.id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(EngineError::SlotExists(spec.id.clone()).into());
        }
        let overlapping: Option<String> = sqlx::query_scalar(
            "SELECT slot_id FROM slots WHERE doctor_id = $1 AND date = $2 AND start_time < $4 AND end_time > $3
             ORDER BY start_time LIMIT 1",
        )
        .bind(spec.doctor.as_str())
        .bind(&date)
        .bind(time(spec.start))
        .bind(time(spec.end))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = overlapping {
            let existing = parse(SlotId::parse, &existing)?;
            return Err(EngineError::SlotOverlap { existing }.into());
        }
        let inserted = sqlx::query(
            "INSERT INTO slots (slot_id, doctor_id, date, start_time, end_time, capacity, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (slot_id) DO NOTHING",
        )
        .bind(spec.id.as_str())
        .bind(spec.doctor.as_str())
        .bind(&date)
        .bind(time(spec.start))
        .bind(time(spec.end))
        .bind(spec.capacity.get() as i32)
        .bind(nanos(at))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // Another doctor's slot took this id meanwhile.
            return Err(EngineError::SlotExists(spec.id.clone()).into());
        }
        tx.commit().await?;
        Ok(summary)
    }

    pub async fn slot(&self, id: &SlotId) -> Result<Option<SlotDetail>, ServiceError> {
        self.retry(|| async {
            let mut tx = self.snapshot().await?;
            let engine = self.load_slot(&mut tx, id, Lock::None).await?;
            Ok(engine.and_then(|engine| engine.slot(id)))
        })
        .await
    }

    pub async fn slot_summary(&self, id: &SlotId) -> Result<Option<SlotSummary>, ServiceError> {
        self.retry(|| async {
            let row = sqlx::query(&format!("{SUMMARY_COLUMNS} WHERE slot_id = $1"))
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(summary).transpose()
        })
        .await
    }

    /// One page of slots, as [`crate::engine::Engine::slots`] lists them.
    pub async fn slots(&self, query: &SlotQuery) -> Result<SlotPage, ServiceError> {
        let date = query.date.map(|date| date.to_string());
        // One more row than the page tells whether more follow.
        let rows = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
        self.retry(|| async {
            // Slots are never deleted and never move, so the cursor slot's
            // place needs no snapshot shared with the page.
            let after = match &query.after {
                Some(after) => {
                    let row = sqlx::query("SELECT date, start_time FROM slots WHERE slot_id = $1")
                        .bind(after.as_str())
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or_else(|| EngineError::SlotNotFound(after.clone()))?;
                    let date: String = row.try_get(0)?;
                    let start: String = row.try_get(1)?;
                    Some((date, start, after.as_str()))
                }
                None => None,
            };
            let found = sqlx::query(&format!(
                "{SUMMARY_COLUMNS} WHERE ($1::text IS NULL OR doctor_id = $1) AND ($2::text IS NULL OR date = $2)
                 AND ($3::text IS NULL OR (date, start_time, slot_id) > ($3, $4, $5))
                 ORDER BY date, start_time, slot_id LIMIT $6"
            ))
            .bind(query.doctor.as_ref().map(DoctorId::as_str))
            .bind(date.as_deref())
            .bind(after.as_ref().map(|after| after.0.as_str()))
            .bind(after.as_ref().map(|after| after.1.as_str()))
            .bind(after.as_ref().map(|after| after.2))
            .bind(rows)
            .fetch_all(&self.pool)
            .await?;
            let mut slots = found.iter().map(summary).collect::<Attempt<Vec<_>>>()?;
            let more = slots.len() > query.limit;
            slots.truncate(query.limit);
            Ok(SlotPage { slots, more })
        })
        .await
    }

    pub async fn token(&self, id: Uuid) -> Result<Option<TokenDetail>, ServiceError> {
        self.retry(|| async {
            let mut tx = self.snapshot().await?;
            let row = sqlx::query(
                "SELECT t.token_id, t.sequence, t.token_number, t.patient_id, t.slot_id, t.doctor_id, s.date,
                        t.source, t.status, t.created_at, t.updated_at, t.priority
                 FROM tokens t JOIN slots s ON s.slot_id = t.slot_id WHERE t.token_id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let status = parse(Status::parse, row.try_get(8)?)?;
            let sequence: i64 = row.try_get(1)?;
            let priority: i16 = row.try_get(11)?;
            let waitlist_position = if status == Status::Waitlisted {
                let ahead: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM tokens WHERE slot_id = $1 AND status = 'WAITLISTED'
                     AND (priority < $2 OR (priority = $2 AND sequence <= $3))",
                )
                .bind(row.try_get::<&str, _>(4)?)
                .bind(priority)
                .bind(sequence)
                .fetch_one(&mut *tx)
                .await?;
                Some(ahead as u32)
            } else {
                None
            };
            let token = TokenView {
                id: row.try_get(0)?,
                sequence: sequence as u64,
                number: row.try_get::<i32, _>(2)? as u32,
                patient: parse(PatientId::parse, row.try_get(3)?)?,
                slot: parse(SlotId::parse, row.try_get(4)?)?,
                doctor: parse(DoctorId::parse, row.try_get(5)?)?,
                date: parse(|raw| raw.parse().ok(), row.try_get(6)?)?,
                source: parse(Source::parse, row.try_get(7)?)?,
                status,
                waitlist_position,
                created_at: timestamp(row.try_get(9)?)?,
                updated_at: timestamp(row.try_get(10)?)?,
            };
            let history = sqlx::query(
                "SELECT at, from_status, to_status, reason, actor FROM token_history WHERE token_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(history_entry)
            .collect::<Attempt<Vec<_>>>()?;
            Ok(Some(TokenDetail { token, history }))
        })
        .await
    }

    /// A read-only transaction that sees one consistent snapshot.
    async fn snapshot(&self) -> Attempt<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Loads one slot and its active tokens into a fresh engine.
    async fn load_slot(
        &self,
        connection: &mut PgConnection,
        id: &SlotId,
        lock: Lock,
    ) -> Attempt<Option<Engine>> {
        let query = match lock {
            Lock::ForUpdate => "SELECT doctor_id, date, start_time, end_time, capacity FROM slots WHERE slot_id = $1 FOR UPDATE",
            Lock::None => "SELECT doctor_id, date, start_time, end_time, capacity FROM slots WHERE slot_id = $1",
        };
        let Some(row) = sqlx::query(query)
            .bind(id.as_str())
            .fetch_optional(&mut *connection)
            .await?
        else {
            return Ok(None);
        };
        let mut engine = Engine::new(self.limits);
        engine
            .create_slot(SlotSpec {
                id: id.clone(),
                doctor: parse(DoctorId::parse, row.try_get(0)?)?,
                date: parse(|raw| raw.parse().ok(), row.try_get(1)?)?,
                start: parse(|raw| raw.parse().ok(), row.try_get(2)?)?,
                end: parse(|raw| raw.parse().ok(), row.try_get(3)?)?,
                capacity: u32::try_from(row.try_get::<i32, _>(4)?)
                    .ok()
                    .and_then(Capacity::new)
                    .ok_or_else(|| Failure::Corrupt("capacity out of range".into()))?,
            })
            .map_err(|error| Failure::Corrupt(error.to_string()))?;
        let tokens = sqlx::query(
            "SELECT token_id, sequence, token_number, patient_id, source, status, created_at, updated_at
             FROM tokens WHERE slot_id = $1 AND status IN ('ALLOCATED', 'WAITLISTED') ORDER BY sequence",
        )
        .bind(id.as_str())
        .fetch_all(&mut *connection)
        .await?;
        for row in &tokens {
            engine
                .restore_token(TokenRecord {
                    id: row.try_get(0)?,
                    sequence: row.try_get::<i64, _>(1)? as u64,
                    number: row.try_get::<i32, _>(2)? as u32,
                    patient: parse(PatientId::parse, row.try_get(3)?)?,
                    slot: id.clone(),
                    source: parse(Source::parse, row.try_get(4)?)?,
                    status: parse(Status::parse, row.try_get(5)?)?,
                    created_at: timestamp(row.try_get(6)?)?,
                    updated_at: timestamp(row.try_get(7)?)?,
                    // History is not needed to decide, only to show.
                    history: Vec::new(),
                })
                .map_err(|error| Failure::Corrupt(error.to_string()))?;
        }
        engine
            .check_invariants()
            .map_err(|error| Failure::Corrupt(error.to_string()))?;
        Ok(Some(engine))
    }
}

enum Lock {
    ForUpdate,
    None,
}

const SUMMARY_COLUMNS: &str =
    "SELECT slot_id, doctor_id, date, start_time, end_time, capacity, allocated_count, waitlist_count FROM slots";

fn summary(row: &PgRow) -> Attempt<SlotSummary> {
    Ok(SlotSummary {
        id: parse(SlotId::parse, row.try_get(0)?)?,
        doctor: parse(DoctorId::parse, row.try_get(1)?)?,
        date: parse(|raw| raw.parse().ok(), row.try_get(2)?)?,
        start: parse(|raw| raw.parse().ok(), row.try_get(3)?)?,
        end: parse(|raw| raw.parse().ok(), row.try_get(4)?)?,
        capacity: row.try_get::<i32, _>(5)? as u32,
        allocated: row.try_get::<i32, _>(6)? as u32,
        waitlisted: row.try_get::<i32, _>(7)? as u32,
    })
}

fn history_entry(row: &PgRow) -> Attempt<HistoryEntry> {
    Ok(HistoryEntry {
        at: timestamp(row.try_get(0)?)?,
        from: row
            .try_get::<Option<&str>, _>(1)?
            .map(|raw| parse(Status::parse, raw))
            .transpose()?,
        to: parse(Status::parse, row.try_get(2)?)?,
        reason: parse(Reason::parse, row.try_get(3)?)?,
        actor: Arc::from(row.try_get::<&str, _>(4)?),
    })
}

/// Writes token changes as the engine made them: a creation inserts the
/// token's row, a later change updates its status; each is one history row.
async fn write_token_changes(
    connection: &mut PgConnection,
    slot: &SlotSummary,
    changes: impl Iterator<Item = TokenChange<'_>>,
    ctx: &Context,
) -> Attempt<()> {
    for change in changes {
        if change.from.is_none() {
            sqlx::query(
                "INSERT INTO tokens (token_id, sequence, token_number, patient_id, slot_id, doctor_id, source, priority, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
            )
            .bind(change.token)
            .bind(change.sequence as i64)
            .bind(change.number as i32)
            .bind(change.patient.as_str())
            .bind(slot.id.as_str())
            .bind(slot.doctor.as_str())
            .bind(change.source.as_str())
            .bind(i16::from(change.source.priority().get()))
            .bind(change.to.as_str())
            .bind(nanos(ctx.at))
            .execute(&mut *connection)
            .await?;
        } else {
            sqlx::query("UPDATE tokens SET status = $2, updated_at = $3 WHERE token_id = $1")
                .bind(change.token)
                .bind(change.to.as_str())
                .bind(nanos(ctx.at))
                .execute(&mut *connection)
                .await?;
        }
        insert_history(
            connection,
            change.token,
            &slot.doctor,
            change.from,
            change.to,
            change.reason,
            ctx,
        )
        .await?;
    }
    Ok(())
}

async fn insert_history(
    connection: &mut PgConnection,
    token: Uuid,
    doctor: &DoctorId,
    from: Option<Status>,
    to: Status,
    reason: Reason,
    ctx: &Context,
) -> Attempt<()> {
    sqlx::query(
        "INSERT INTO token_history (token_id, doctor_id, at, from_status, to_status, reason, actor)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(token)
    .bind(doctor.as_str())
    .bind(nanos(ctx.at))
    .bind(from.map(Status::as_str))
    .bind(to.as_str())
    .bind(reason.as_str())
    .bind(&*ctx.actor)
    .execute(connection)
    .await?;
    Ok(())
}

/// Keeps the slot's counters, read by listings, in step with its queues.
async fn write_counts(connection: &mut PgConnection, slot: &SlotSummary) -> Attempt<()> {
    sqlx::query("UPDATE slots SET allocated_count = $2, waitlist_count = $3 WHERE slot_id = $1")
        .bind(slot.id.as_str())
        .bind(slot.allocated as i32)
        .bind(slot.waitlisted as i32)
        .execute(connection)
        .await?;
    Ok(())
}

fn is_retryable(error: &sqlx::Error) -> bool {
    match error {
        // Serialization failure, deadlock, and a unique violation: the last
        // happens when two instances store one idempotency key or slot at
        // once, and the retry then sees the winner's row.
        sqlx::Error::Database(database) => matches!(
            database.code().as_deref(),
            Some("40001" | "40P01" | "23505")
        ),
        _ => false,
    }
}

fn postgres_error(error: sqlx::Error) -> StoreError {
    StoreError::Postgres(error.to_string())
}

fn parse<T>(parse: impl Fn(&str) -> Option<T>, raw: &str) -> Attempt<T> {
    parse(raw).ok_or_else(|| Failure::Corrupt(format!("unexpected stored value {raw:?}")))
}

fn timestamp(nanos: i64) -> Attempt<Timestamp> {
    from_nanos(nanos).ok_or_else(|| Failure::Corrupt("timestamp out of range".into()))
}

fn time(time: jiff::civil::Time) -> String {
    time.strftime("%H:%M").to_string()
}

/// Keys stored before this instant (in stored nanoseconds) are past their
/// retention at `now`.
fn retention_cutoff(now: Timestamp) -> i64 {
    nanos(now - IDEMPOTENCY_RETENTION)
}
