//! The SQLite schema, its migrations, the rebuild query and the batch
//! writer. Timestamps are stored as integer nanoseconds since the Unix
//! epoch so a rebuild reproduces them exactly; enums as their API names so
//! operators can read the tables.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use jiff::civil::Date;
use jiff::Timestamp;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::events::{SlotReason, EVENT_RETENTION};
use super::{
    from_nanos, nanos, Event, EventKind, Page, Record, StoreError, StoredIdempotency,
    IDEMPOTENCY_RETENTION,
};
use crate::engine::{
    Capacity, Context, Decision, DoctorId, HistoryEntry, PatientId, Reason, SlotId, SlotSpec,
    SlotSummary, Source, Status, TokenChange, TokenRecord,
};

/// Migrations in order; `PRAGMA user_version` counts those applied.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_initial.sql"),
    include_str!("../../migrations/sqlite/0002_creation_in_token_row.sql"),
    include_str!("../../migrations/sqlite/0003_status_from_history.sql"),
    include_str!("../../migrations/sqlite/0004_idempotency_by_caller.sql"),
    include_str!("../../migrations/sqlite/0005_events.sql"),
    include_str!("../../migrations/sqlite/0006_closing.sql"),
    include_str!("../../migrations/sqlite/0007_reports.sql"),
    include_str!("../../migrations/sqlite/0008_retention.sql"),
];

/// The columns of an event row, in the order [`event`] reads them; the
/// log and the kept report events have the same.
const EVENT_COLUMNS: &str = "id, at, actor, kind, slot_id, doctor_id, date, reason, token_id, \
     token_number, source, from_status, to_status, start_time, end_time, capacity, allocated, \
     waitlisted, closes_at, closed, estimated_call_at";

/// How many pages the write-ahead log holds before a commit copies them
/// into the database. The default (1,000) checkpoints every few hundred
/// bookings and rewrites the same hot pages each time; 10,000 pages (about
/// 40 MiB of log) measured 10-15 % more durable bookings per second.
const WAL_CHECKPOINT_PAGES: i64 = 10_000;

pub(super) fn connect(path: &Path, limit_bytes: Option<u64>) -> Result<Connection, StoreError> {
    let connection = Connection::open(path)?;
    if let Some(limit_bytes) = limit_bytes {
        let page_size: u64 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
        connection.pragma_update(None, "max_page_count", (limit_bytes / page_size).max(1))?;
    }
    // One process owns a data directory: an exclusive lock, held until the
    // process ends, keeps a second server off it, and spares every commit
    // the shared-memory index and the file locking of shared WAL mode.
    connection.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    // WAL appends each commit to one log, and FULL makes every commit fsync
    // it: an acknowledged change survives power loss.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    // Take the exclusive lock now, not at the first change: a second
    // server on this directory fails at start-up, even when this one has
    // written nothing yet.
    connection.execute_batch("BEGIN EXCLUSIVE; COMMIT;")?;
    Ok(connection)
}

pub(super) fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let applied: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            found: applied,
            known: MIGRATIONS.len(),
        });
    }
    // Migration 0004 digests stored requests; SQLite has no SHA-256 of its
    // own, so the migrating connection lends it ours.
    connection.create_scalar_function(
        "sha256",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |context| Ok(Sha256::digest(context.get_raw(0).as_bytes()?).to_vec()),
    )?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", index + 1)?;
        transaction.commit()?;
    }
    Ok(())
}

pub(super) struct Snapshot {
    pub(super) slots: Slots,
    pub(super) idempotency: Vec<StoredIdempotency>,
    /// The newest event's id; 0 when the log is empty.
    pub(super) last_event: u64,
}

/// Some slots with their tokens.
#[derive(Default)]
pub(super) struct Slots {
    /// Each slot with when it closed, if it has, by date and start time.
    pub(super) slots: Vec<(SlotSpec, Option<Timestamp>)>,
    /// In arrival order, each with its full history.
    pub(super) tokens: Vec<TokenRecord>,
}

/// Which slots to read, with their tokens.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every slot dated on or after this date.
    Since(Date),
    /// One slot.
    Slot(SlotId),
    /// The slot of a token of a day the engine no longer holds.
    OldToken(Uuid),
    /// The slots of one date, of one doctor or of every doctor.
    Date(Date, Option<DoctorId>),
    /// A page of the slots dated before `before` in listing order (date,
    /// start time, id), after `after`'s place, of one doctor or of all.
    Listing {
        before: Date,
        after: Option<(Date, jiff::civil::Time, SlotId)>,
        doctor: Option<DoctorId>,
        limit: usize,
    },
}

impl Scope {
    /// The condition on the slot `s` and its parameters.
    fn condition(&self) -> (&'static str, Vec<Value>) {
        let text = |text: String| Value::Text(text);
        let doctor = |doctor: &Option<DoctorId>| {
            doctor
                .as_ref()
                .map_or(Value::Null, |doctor| text(doctor.to_string()))
        };
        match self {
            Scope::Since(date) => ("s.date >= ?1", vec![text(date.to_string())]),
            Scope::Slot(id) => ("s.slot_id = ?1", vec![text(id.to_string())]),
            Scope::OldToken(id) => (
                "s.slot_id = (SELECT t.slot_id FROM old_tokens AS o JOIN tokens AS t ON t.sequence = o.sequence
                               WHERE o.token_id = ?1)",
                vec![Value::Blob(id.as_bytes().to_vec())],
            ),
            Scope::Date(date, of) => (
                "s.date = ?1 AND (?2 IS NULL OR s.doctor_id = ?2)",
                vec![text(date.to_string()), doctor(of)],
            ),
            Scope::Listing {
                before,
                after,
                doctor: of,
                limit,
            } => {
                let (date, start, id) = match after {
                    Some((date, start, id)) => (date.to_string(), clock_time(*start), id.to_string()),
                    None => (String::new(), String::new(), String::new()),
                };
                (
                    "s.slot_id IN (SELECT slot_id FROM slots
                                    WHERE date < ?1 AND (?2 IS NULL OR doctor_id = ?2)
                                      AND (date, start_time, slot_id) > (?3, ?4, ?5)
                                    ORDER BY date, start_time, slot_id LIMIT ?6)",
                    vec![
                        text(before.to_string()),
                        doctor(of),
                        text(date),
                        text(start),
                        text(id),
                        Value::Integer(i64::try_from(*limit).unwrap_or(i64::MAX)),
                    ],
                )
            }
        }
    }
}

/// Reads the slots of `scope` with their tokens and their tokens' full
/// histories, through the indexes of migration 0008: the slots first,
/// then each one's tokens, so no query scans the tokens of other days.
pub(super) fn load_slots(connection: &Connection, scope: &Scope) -> Result<Slots, StoreError> {
    let (condition, values) = scope.condition();
    let mut slots = Vec::new();
    let mut statement = connection.prepare_cached(&format!(
        "SELECT s.slot_id, s.doctor_id, s.date, s.start_time, s.end_time, s.capacity, s.closed_at
           FROM slots AS s WHERE {condition} ORDER BY s.date, s.start_time"
    ))?;
    let mut rows = statement.query(params_from_iter(values.iter()))?;
    while let Some(row) = rows.next()? {
        let spec = SlotSpec {
            id: parse_id(SlotId::parse, row.get_ref(0)?.as_str()?)?,
            doctor: parse_id(DoctorId::parse, row.get_ref(1)?.as_str()?)?,
            date: parse_value(row.get_ref(2)?.as_str()?)?,
            start: parse_value(row.get_ref(3)?.as_str()?)?,
            end: parse_value(row.get_ref(4)?.as_str()?)?,
            capacity: Capacity::new(row.get(5)?).ok_or_else(|| corrupt("capacity out of range"))?,
        };
        let closed_at = row.get::<_, Option<i64>>(6)?.map(timestamp).transpose()?;
        slots.push((spec, closed_at));
    }
    if slots.is_empty() {
        return Ok(Slots::default());
    }

    let slot_ids: HashMap<String, SlotId> = slots
        .iter()
        .map(|(slot, _)| (slot.id.to_string(), slot.id.clone()))
        .collect();
    // Actor names repeat (a handful of API keys); each is stored once.
    let mut actors: HashMap<String, Arc<str>> = HashMap::new();
    let mut actor = |name: &str| match actors.get(name) {
        Some(shared) => shared.clone(),
        None => {
            let shared: Arc<str> = Arc::from(name);
            actors.insert(name.to_owned(), shared.clone());
            shared
        }
    };
    let mut tokens = Vec::new();
    // CROSS JOIN keeps SQLite from scanning every token in sequence order
    // to spare itself the sort: the slots come first, then each one's
    // tokens by index, and only those are sorted.
    let mut statement = connection.prepare_cached(&format!(
        "SELECT t.sequence, t.token_id, t.token_number, t.patient_id, t.slot_id, t.source, t.created_at,
                t.created_reason, t.created_by
           FROM slots AS s CROSS JOIN tokens AS t ON t.slot_id = s.slot_id
          WHERE {condition} ORDER BY t.sequence"
    ))?;
    let mut rows = statement.query(params_from_iter(values.iter()))?;
    while let Some(row) = rows.next()? {
        let slot = row.get_ref(4)?.as_str()?;
        let created_at = timestamp(row.get(6)?)?;
        let reason =
            Reason::parse(row.get_ref(7)?.as_str()?).ok_or_else(|| corrupt("creation reason"))?;
        let decision = Decision::from_reason(reason)
            .ok_or_else(|| corrupt("a creation reason that no booking gives"))?;
        let created = HistoryEntry {
            at: created_at,
            from: None,
            to: decision.status(),
            reason,
            actor: actor(row.get_ref(8)?.as_str()?),
        };
        tokens.push(TokenRecord {
            sequence: row.get::<_, i64>(0)? as u64,
            id: uuid(row.get_ref(1)?.as_blob()?)?,
            number: row.get(2)?,
            patient: parse_id(PatientId::parse, row.get_ref(3)?.as_str()?)?,
            slot: slot_ids
                .get(slot)
                .cloned()
                .ok_or_else(|| corrupt("token of an unknown slot"))?,
            source: Source::parse(row.get_ref(5)?.as_str()?).ok_or_else(|| corrupt("source"))?,
            // The creation, until a later history row says otherwise.
            status: created.to,
            created_at,
            updated_at: created_at,
            // The engine derives both from the history.
            checked_in_at: None,
            skips: 0,
            history: vec![created],
        });
    }

    // History rows come in insertion order, which is each token's order;
    // tokens are sorted by sequence, so a binary search finds the owner.
    // Each row moves its token on from the status the previous one left,
    // and the last one gives the token's current status.
    let mut statement = connection.prepare_cached(&format!(
        "SELECT h.token_sequence, h.at, h.from_status, h.to_status, h.reason, h.actor
           FROM slots AS s CROSS JOIN tokens AS t ON t.slot_id = s.slot_id
                CROSS JOIN token_history AS h ON h.token_sequence = t.sequence
          WHERE {condition} ORDER BY h.id"
    ))?;
    let mut rows = statement.query(params_from_iter(values.iter()))?;
    while let Some(row) = rows.next()? {
        let sequence = row.get::<_, i64>(0)? as u64;
        let owner = tokens
            .binary_search_by_key(&sequence, |token| token.sequence)
            .map_err(|_| corrupt("history of an unknown token"))?;
        let actor = actor(row.get_ref(5)?.as_str()?);
        let entry = HistoryEntry {
            at: timestamp(row.get(1)?)?,
            from: row.get_ref(2)?.as_str_or_null()?.map(status).transpose()?,
            to: status(row.get_ref(3)?.as_str()?)?,
            reason: Reason::parse(row.get_ref(4)?.as_str()?).ok_or_else(|| corrupt("reason"))?,
            actor,
        };
        let token = &mut tokens[owner];
        if entry.from != Some(token.status) {
            return Err(corrupt(
                "a status change that does not start from the token's status",
            ));
        }
        token.status = entry.to;
        token.updated_at = entry.at;
        token.history.push(entry);
    }
    Ok(Slots { slots, tokens })
}

/// The date before which every day has left the engine (see migration
/// 0008).
pub(super) fn evicted_before(connection: &Connection) -> Result<Date, StoreError> {
    let date: String =
        connection.query_row("SELECT evicted_before FROM retention", [], |row| row.get(0))?;
    // The migration's first value, before any real date.
    Ok(date.parse().unwrap_or(Date::MIN))
}

/// Records that the days before `before` have left the engine: their
/// tokens' ids are indexed for reads by id, in one transaction. Days
/// already recorded are not read again.
pub(super) fn evict_before(connection: &Connection, before: Date) -> Result<(), StoreError> {
    // The writer's connection, between its commits: no other transaction
    // is open on it.
    let transaction = connection.unchecked_transaction()?;
    let since = evicted_before(&transaction)?;
    if since < before {
        transaction.execute(
            "INSERT OR IGNORE INTO old_tokens (token_id, sequence)
             SELECT t.token_id, t.sequence
               FROM slots AS s CROSS JOIN tokens AS t ON t.slot_id = s.slot_id
              WHERE s.date >= ?1 AND s.date < ?2",
            params![since.to_string(), before.to_string()],
        )?;
        transaction.execute(
            "UPDATE retention SET evicted_before = ?1",
            params![before.to_string()],
        )?;
    }
    transaction.commit()?;
    Ok(())
}

/// What a start needs: the slots of the days the engine holds (from
/// `since`) with their tokens, the idempotency keys stored from
/// `idempotency_since` on, and the newest event id.
pub(super) fn load(
    connection: &Connection,
    since: Date,
    idempotency_since: Timestamp,
) -> Result<Snapshot, StoreError> {
    let slots = load_slots(connection, &Scope::Since(since))?;
    let mut actors: HashMap<String, Arc<str>> = HashMap::new();
    let mut actor = |name: &str| match actors.get(name) {
        Some(shared) => shared.clone(),
        None => {
            let shared: Arc<str> = Arc::from(name);
            actors.insert(name.to_owned(), shared.clone());
            shared
        }
    };
    let mut idempotency = Vec::new();
    let mut statement = connection.prepare(
        "SELECT caller, key, fingerprint, token_id, response, stored_at FROM idempotency
         WHERE stored_at >= ?1 ORDER BY stored_at",
    )?;
    let mut rows = statement.query([nanos(idempotency_since)])?;
    while let Some(row) = rows.next()? {
        idempotency.push(StoredIdempotency {
            caller: actor(row.get_ref(0)?.as_str()?),
            key: row.get(1)?,
            fingerprint: row
                .get_ref(2)?
                .as_blob()?
                .try_into()
                .map_err(|_| corrupt("an idempotency fingerprint that is not 32 bytes"))?,
            token: uuid(row.get_ref(3)?.as_blob()?)?,
            response: Arc::from(row.get_ref(4)?.as_str()?),
            stored_at: timestamp(row.get(5)?)?,
        });
    }
    let last_event: Option<i64> =
        connection.query_row("SELECT max(id) FROM events", [], |row| row.get(0))?;
    Ok(Snapshot {
        slots,
        idempotency,
        last_event: last_event.map_or(0, |id| id as u64),
    })
}

/// The statements every batch runs, prepared once per batch rather than
/// looked up in the statement cache once per row. Both append: a token's
/// row is never rewritten.
struct Statements<'c> {
    insert_token: rusqlite::CachedStatement<'c>,
    insert_history: rusqlite::CachedStatement<'c>,
    insert_event: rusqlite::CachedStatement<'c>,
}

impl<'c> Statements<'c> {
    fn prepare(connection: &'c Connection) -> Result<Statements<'c>, StoreError> {
        Ok(Statements {
            insert_token: connection.prepare_cached(
                "INSERT INTO tokens (sequence, token_id, token_number, patient_id, slot_id, source, created_at,
                                     created_reason, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?,
            insert_history: connection.prepare_cached(
                "INSERT INTO token_history (token_sequence, at, from_status, to_status, reason, actor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
            insert_event: connection.prepare_cached(
                "INSERT INTO events (id, at, actor, kind, slot_id, doctor_id, date, reason,
                                     token_id, token_number, source, from_status, to_status,
                                     start_time, end_time, capacity, allocated, waitlisted, closes_at, closed,
                                     estimated_call_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
                         ?21)",
            )?,
        })
    }

    fn event(&mut self, event: &Event) -> Result<(), StoreError> {
        let at = nanos(event.at);
        match &event.kind {
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
            } => self.insert_event.execute(params![
                event.id as i64,
                at,
                &*event.actor,
                "TOKEN",
                slot.as_str(),
                doctor.as_str(),
                date.to_string(),
                reason.as_str(),
                token.as_bytes(),
                number,
                source.as_str(),
                from.map(Status::as_str),
                to.as_str(),
                None::<&str>,
                None::<&str>,
                None::<u32>,
                None::<u32>,
                None::<u32>,
                None::<i64>,
                None::<bool>,
                estimate.map(nanos),
            ])?,
            EventKind::Slot { reason, slot } => self.insert_event.execute(params![
                event.id as i64,
                at,
                &*event.actor,
                "SLOT",
                slot.id.as_str(),
                slot.doctor.as_str(),
                slot.date.to_string(),
                reason.as_str(),
                None::<&[u8]>,
                None::<u32>,
                None::<&str>,
                None::<&str>,
                None::<&str>,
                clock_time(slot.start),
                clock_time(slot.end),
                slot.capacity,
                slot.allocated,
                slot.waitlisted,
                nanos(slot.closes_at),
                slot.closed,
                None::<i64>,
            ])?,
        };
        Ok(())
    }

    /// Writes token changes as the engine made them: a creation is the
    /// token's row, every later change a history row.
    fn token_changes<'a>(
        &mut self,
        slot: &SlotId,
        changes: impl Iterator<Item = TokenChange<'a>>,
        ctx: &Context,
    ) -> Result<(), StoreError> {
        for change in changes {
            match change.from {
                None => self.insert_token.execute(params![
                    change.sequence as i64,
                    change.token.as_bytes(),
                    change.number,
                    change.patient.as_str(),
                    slot.as_str(),
                    change.source.as_str(),
                    nanos(ctx.at),
                    change.reason.as_str(),
                    &*ctx.actor,
                ])?,
                Some(from) => self.insert_history.execute(params![
                    change.sequence as i64,
                    nanos(ctx.at),
                    from.as_str(),
                    change.to.as_str(),
                    change.reason.as_str(),
                    &*ctx.actor,
                ])?,
            };
        }
        Ok(())
    }
}

/// When the writer last pruned the event log, in the log's own time.
#[derive(Debug, Default)]
pub(super) struct Pruning {
    last: Option<Timestamp>,
}

/// How often the log is pruned, in its own time, and how many events one
/// pruning removes at most: a commit never carries more than this extra
/// work, so pruning never holds writes up.
const PRUNE_EVERY: jiff::SignedDuration = jiff::SignedDuration::from_mins(1);
const PRUNE_MAX: i64 = 5_000;

/// Writes a batch of records and their events in one transaction: one
/// fsync for all. Now and then the same transaction drops events past
/// their retention, measured from the newest event's time so the writer
/// needs no clock of its own.
pub(super) fn commit(
    connection: &Connection,
    records: &[&Record],
    events: &[Event],
    pruning: &mut Pruning,
) -> Result<(), StoreError> {
    // The writer's connection is shared with a backup in progress (see
    // `backup`), so the transaction is begun on a shared reference; the
    // writer thread is the only one that uses the connection, one
    // transaction at a time.
    let transaction = connection.unchecked_transaction()?;
    let mut statements = Statements::prepare(&transaction)?;
    for event in events {
        statements.event(event)?;
    }
    if let Some(newest) = events.last().map(|event| event.at) {
        if pruning.last.is_none_or(|last| newest - PRUNE_EVERY >= last) {
            pruning.last = Some(newest);
            // Ids and times rise together, so the oldest rows by id are
            // the ones past the retention. What day reports are made of
            // is kept first, in the same transaction (see migration 0007).
            let cutoff = nanos(newest - EVENT_RETENTION);
            transaction
                .prepare_cached(&format!(
                    "INSERT INTO report_events ({EVENT_COLUMNS})
                     SELECT {EVENT_COLUMNS} FROM events
                      WHERE id < (SELECT coalesce(min(id), 0) FROM events) + ?2 AND at < ?1
                        AND {REPORTED}"
                ))?
                .execute(params![cutoff, PRUNE_MAX])?;
            transaction
                .prepare_cached(
                    "DELETE FROM events WHERE id IN
                       (SELECT id FROM events WHERE id < (SELECT coalesce(min(id), 0) FROM events) + ?2
                          AND at < ?1)",
                )?
                .execute(params![cutoff, PRUNE_MAX])?;
        }
    }
    for record in records.iter().copied() {
        match record {
            Record::SlotCreated { slot, ctx } => {
                transaction
                    .prepare_cached(
                        "INSERT INTO slots (slot_id, doctor_id, date, start_time, end_time, capacity, created_at, closed_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        slot.id.as_str(),
                        slot.doctor.as_str(),
                        slot.date.to_string(),
                        clock_time(slot.start),
                        clock_time(slot.end),
                        slot.capacity,
                        nanos(ctx.at),
                        slot.closed.then(|| nanos(slot.closes_at)),
                    ])?;
            }
            Record::Booked {
                outcome,
                ctx,
                idempotency,
            } => {
                statements.token_changes(&outcome.slot.id, outcome.token_changes(), ctx)?;
                if let Some(stored) = idempotency {
                    // A key past its retention may still have its row (rows
                    // are pruned only as new keys arrive, and the pruning
                    // runs after this insert): the new use replaces it.
                    // Inserting plainly would fail the whole batch.
                    transaction
                        .prepare_cached(
                            "INSERT INTO idempotency (caller, key, fingerprint, token_id, response, stored_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                             ON CONFLICT (caller, key) DO UPDATE SET
                                 fingerprint = excluded.fingerprint, token_id = excluded.token_id,
                                 response = excluded.response, stored_at = excluded.stored_at",
                        )?
                        .execute(params![
                            &*stored.caller,
                            stored.key,
                            stored.fingerprint,
                            stored.token.as_bytes(),
                            &*stored.response,
                            nanos(stored.stored_at),
                        ])?;
                }
            }
            Record::Acted { outcome, ctx } => {
                statements.token_changes(&outcome.slot.id, outcome.token_changes(), ctx)?;
            }
            Record::CapacityChanged { ctx, .. }
            | Record::SlotClosed { ctx, .. }
            | Record::Absence { ctx, .. }
            | Record::Timed { ctx, .. } => {
                for (reason, outcome) in record.made().0.slot_parts() {
                    let slot = &outcome.slot;
                    match reason {
                        Some(SlotReason::CapacityChanged) => transaction
                            .prepare_cached("UPDATE slots SET capacity = ?1 WHERE slot_id = ?2")?
                            .execute(params![slot.capacity, slot.id.as_str()])?,
                        Some(SlotReason::Closed) => transaction
                            .prepare_cached("UPDATE slots SET closed_at = ?1 WHERE slot_id = ?2")?
                            .execute(params![nanos(slot.closes_at), slot.id.as_str()])?,
                        Some(SlotReason::Created) | None => 0,
                    };
                    statements.token_changes(&slot.id, outcome.token_changes(), ctx)?;
                }
            }
        }
    }
    drop(statements);
    // Keys older than the retention are no longer needed; dropping them
    // when new ones arrive keeps the table bounded without a separate job.
    let stored_keys = records.iter().any(|record| {
        matches!(
            record,
            Record::Booked {
                idempotency: Some(_),
                ..
            }
        )
    });
    if !stored_keys {
        transaction.commit()?;
        return Ok(());
    }
    if let Some(cutoff) = oldest_kept(&transaction)? {
        transaction
            .prepare_cached("DELETE FROM idempotency WHERE stored_at < ?1")?
            .execute([cutoff])?;
    }
    transaction.commit()?;
    Ok(())
}

/// The retention cutoff, measured from the newest stored key so the
/// writer needs no clock of its own.
fn oldest_kept(connection: &Connection) -> Result<Option<i64>, StoreError> {
    let newest: Option<i64> = connection
        .prepare_cached("SELECT max(stored_at) FROM idempotency")?
        .query_row([], |row| row.get(0))
        .optional()?
        .flatten();
    let retention = IDEMPOTENCY_RETENTION.as_nanos() as i64;
    Ok(newest.map(|newest| newest - retention))
}

/// The oldest and newest ids of the log. Each in a subquery of its own:
/// SQLite reads a lone `min(id)` or `max(id)` off the end of the table's
/// b-tree, but `SELECT min(id), max(id)` scans every row, which made each
/// new event stream's first read cost the writer a pass over the whole
/// log (a thousand screens opening at once held every booking for
/// seconds).
const LOG_BOUNDS: &str = "SELECT (SELECT min(id) FROM events), (SELECT max(id) FROM events)";

/// The log's events after `after`, at most `limit`, with the oldest id it
/// keeps.
pub(super) fn read_events(
    connection: &Connection,
    after: u64,
    limit: usize,
) -> Result<Page, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    let mut rows = statement.query(params![after as i64, limit as i64])?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        events.push(event(row)?);
    }
    let (oldest, newest): (Option<i64>, Option<i64>) = connection
        .prepare_cached(LOG_BOUNDS)?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(Page {
        events,
        oldest: oldest.map(|id| id as u64),
        newest: newest.map(|id| id as u64),
    })
}

/// The events a report of `date` is made of (its token events and slot
/// creations), kept and still in the log, in id order.
pub(super) fn report_events(
    connection: &Connection,
    date: jiff::civil::Date,
) -> Result<Vec<Event>, StoreError> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM report_events WHERE date = ?1
         UNION ALL
         SELECT {EVENT_COLUMNS} FROM events WHERE date = ?1 AND {REPORTED}
         ORDER BY id"
    ))?;
    let mut rows = statement.query([date.to_string()])?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        events.push(event(row)?);
    }
    Ok(events)
}

/// Which rows of the log day reports are made of.
const REPORTED: &str = "(kind = 'TOKEN' OR reason = 'CREATED')";

fn event(row: &rusqlite::Row<'_>) -> Result<Event, StoreError> {
    let text = |index: usize| -> Result<&str, StoreError> { Ok(row.get_ref(index)?.as_str()?) };
    let slot = parse_id(SlotId::parse, text(4)?)?;
    let doctor = parse_id(DoctorId::parse, text(5)?)?;
    let date: jiff::civil::Date = parse_value(text(6)?)?;
    let kind = match text(3)? {
        "TOKEN" => EventKind::Token {
            token: uuid(row.get_ref(8)?.as_blob()?)?,
            number: row.get(9)?,
            slot,
            doctor,
            date,
            source: Source::parse(text(10)?).ok_or_else(|| corrupt("source"))?,
            from: row.get_ref(11)?.as_str_or_null()?.map(status).transpose()?,
            to: status(text(12)?)?,
            reason: Reason::parse(text(7)?).ok_or_else(|| corrupt("reason"))?,
            estimate: row.get::<_, Option<i64>>(20)?.map(timestamp).transpose()?,
        },
        "SLOT" => EventKind::Slot {
            reason: SlotReason::parse(text(7)?).ok_or_else(|| corrupt("slot event reason"))?,
            slot: SlotSummary {
                id: slot,
                doctor,
                date,
                start: parse_value(text(13)?)?,
                end: parse_value(text(14)?)?,
                capacity: row.get(15)?,
                allocated: row.get(16)?,
                waitlisted: row.get(17)?,
                closes_at: timestamp(row.get(18)?)?,
                closed: row.get(19)?,
            },
        },
        _ => return Err(corrupt("event kind")),
    };
    Ok(Event {
        id: row.get::<_, i64>(0)? as u64,
        at: timestamp(row.get(1)?)?,
        actor: Arc::from(text(2)?),
        kind,
    })
}

/// A time of day as stored: `HH:MM`.
fn clock_time(time: jiff::civil::Time) -> String {
    time.strftime("%H:%M").to_string()
}

fn timestamp(nanos: i64) -> Result<Timestamp, StoreError> {
    from_nanos(nanos).ok_or_else(|| corrupt("timestamp out of range"))
}

fn uuid(bytes: &[u8]) -> Result<Uuid, StoreError> {
    Uuid::from_slice(bytes).map_err(|_| corrupt("token id is not 16 bytes"))
}

fn status(name: &str) -> Result<Status, StoreError> {
    Status::parse(name).ok_or_else(|| corrupt("status"))
}

fn parse_id<T>(parse: fn(&str) -> Option<T>, raw: &str) -> Result<T, StoreError> {
    parse(raw).ok_or_else(|| corrupt("identifier"))
}

fn parse_value<T: std::str::FromStr>(raw: &str) -> Result<T, StoreError> {
    raw.parse().map_err(|_| corrupt("date or time"))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        at: i64,
        from: Option<Status>,
        to: Status,
        reason: Reason,
        actor: &str,
    ) -> HistoryEntry {
        HistoryEntry {
            at: from_nanos(at).unwrap(),
            from,
            to,
            reason,
            actor: actor.into(),
        }
    }

    /// A database written by the first schema, where a token's creation
    /// was a history row, loads after migration 0002 with the same
    /// histories, and no creation rows are left in the history table.
    #[test]
    fn migration_0002_moves_creation_into_the_token_row() {
        // P1 is allocated, then bumped to the waitlist by P2's paid
        // booking.
        let (_dir, connection) = migrated_from(
            1,
            "INSERT INTO slots VALUES ('D1-09', 'D1', '2030-01-07', '09:00', '10:00', 1, 0);
             INSERT INTO tokens VALUES
               (1, X'00000000000000000000000000000001', 1, 'P1', 'D1-09', 'ONLINE', 'WAITLISTED', 100, 200),
               (2, X'00000000000000000000000000000002', 2, 'P2', 'D1-09', 'PAID', 'ALLOCATED', 200, 200);
             INSERT INTO token_history (token_sequence, at, from_status, to_status, reason, actor) VALUES
               (1, 100, NULL, 'ALLOCATED', 'ALLOCATED', 'desk'),
               (2, 200, NULL, 'ALLOCATED', 'BUMPED_LOWER', 'web'),
               (1, 200, 'ALLOCATED', 'WAITLISTED', 'BUMPED', 'web');",
        );
        let snapshot = load(&connection, Date::MIN, Timestamp::UNIX_EPOCH).unwrap();

        let histories: Vec<_> = snapshot
            .slots
            .tokens
            .iter()
            .map(|t| t.history.clone())
            .collect();
        assert_eq!(
            histories,
            [
                vec![
                    entry(100, None, Status::Allocated, Reason::Allocated, "desk"),
                    entry(
                        200,
                        Some(Status::Allocated),
                        Status::Waitlisted,
                        Reason::Bumped,
                        "web"
                    ),
                ],
                vec![entry(
                    200,
                    None,
                    Status::Allocated,
                    Reason::BumpedLower,
                    "web"
                )],
            ]
        );
        let creation_rows: i64 = connection
            .query_row(
                "SELECT count(*) FROM token_history WHERE from_status IS NULL",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(creation_rows, 0);
    }

    /// A scratch directory, removed when dropped.
    struct ScratchDir(std::path::PathBuf);

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The bounds of the log, read once per stream opened, look the two
    /// ids up at the ends of the table and never scan the log, whose size
    /// grows with the day's traffic; the one-statement form, which does
    /// scan, shows that the check sees a scan.
    #[test]
    fn the_log_bounds_are_read_without_scanning_the_log() {
        let (_dir, connection) = migrated_from(0, "");
        let scans = |query: &str| -> bool {
            let plan: Vec<String> = connection
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .unwrap()
                .query_map([], |row| row.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            plan.iter().any(|step| step.starts_with("SCAN events"))
        };

        assert!(!scans(LOG_BOUNDS));
        assert!(scans("SELECT min(id), max(id) FROM events"));
    }

    /// A database at schema `version` with `sql` run on it, then opened
    /// and migrated to the latest version as a server start does.
    fn migrated_from(version: usize, sql: &str) -> (ScratchDir, Connection) {
        let dir =
            ScratchDir(std::env::temp_dir().join(format!("opd-migration-{}", Uuid::new_v4())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("opd.sqlite3");
        {
            let connection = Connection::open(&path).unwrap();
            for migration in &MIGRATIONS[..version] {
                connection.execute_batch(migration).unwrap();
            }
            connection
                .pragma_update(None, "user_version", version)
                .unwrap();
            connection.execute_batch(sql).unwrap();
        }
        let mut connection = connect(&path, None).unwrap();
        migrate(&mut connection).unwrap();
        (dir, connection)
    }

    /// A downgrade is refused before anything is read or written: an
    /// older release cannot know what a newer migration changed.
    #[test]
    fn a_database_from_a_newer_release_is_refused() {
        let dir =
            ScratchDir(std::env::temp_dir().join(format!("opd-migration-{}", Uuid::new_v4())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("opd.sqlite3");
        let newer = MIGRATIONS.len() + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let mut connection = connect(&path, None).unwrap();
        let error = migrate(&mut connection).unwrap_err();
        assert!(
            matches!(error, StoreError::TooNew { found, known } if found == newer && known == MIGRATIONS.len()),
            "{error}"
        );
        let version: usize = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, newer, "the refusal changed nothing");
    }

    /// A database at schema version 2 with `sql` run on it, migrated to
    /// the latest version and loaded.
    fn load_version_2(sql: &str) -> Result<Snapshot, StoreError> {
        let (_dir, connection) = migrated_from(2, sql);
        load(&connection, Date::MIN, Timestamp::UNIX_EPOCH)
    }

    /// P1 is booked into a one-seat slot at 100 and bumped to the
    /// waitlist at 200 by P2's paid booking; P2 cancels at 300 and P1 is
    /// promoted.
    const BUMP_CANCEL_PROMOTE: &str =
        "INSERT INTO slots VALUES ('D1-09', 'D1', '2030-01-07', '09:00', '10:00', 1, 0);
         INSERT INTO tokens (sequence, token_id, token_number, patient_id, slot_id, source, status,
                             created_at, updated_at, created_reason, created_by) VALUES
           (1, X'00000000000000000000000000000001', 1, 'P1', 'D1-09', 'ONLINE', 'ALLOCATED', 100, 300, 'ALLOCATED', 'desk'),
           (2, X'00000000000000000000000000000002', 2, 'P2', 'D1-09', 'PAID', 'CANCELLED', 200, 300, 'BUMPED_LOWER', 'web');
         INSERT INTO token_history (token_sequence, at, from_status, to_status, reason, actor) VALUES
           (1, 200, 'ALLOCATED', 'WAITLISTED', 'BUMPED', 'web'),
           (2, 300, 'ALLOCATED', 'CANCELLED', 'CANCELLED', 'web'),
           (1, 300, 'WAITLISTED', 'ALLOCATED', 'PROMOTED', 'web');";

    /// Migration 0003 drops the status and update time from token rows:
    /// after it, both come from the newest history row, and they are the
    /// ones the rows held.
    #[test]
    fn migration_0003_takes_the_status_from_the_newest_history_row() {
        let snapshot = load_version_2(BUMP_CANCEL_PROMOTE).unwrap();
        let states: Vec<_> = snapshot
            .slots
            .tokens
            .iter()
            .map(|t| (t.status, nanos(t.updated_at), t.history.len()))
            .collect();
        assert_eq!(
            states,
            [(Status::Allocated, 300, 3), (Status::Cancelled, 300, 2)]
        );
    }

    /// Migration 0004 scopes stored idempotency keys by the caller that
    /// booked their token and keeps only the digest of the request: a
    /// retry after the upgrade still replays, and another caller's key of
    /// the same name is not found.
    #[test]
    fn migration_0004_keeps_keys_under_their_caller_with_a_digest() {
        let request = r#"{"patientId":"P1","slotId":"D1-09","source":"ONLINE"}"#;
        let (_dir, connection) = migrated_from(
            3,
            &format!(
                "INSERT INTO slots VALUES ('D1-09', 'D1', '2030-01-07', '09:00', '10:00', 1, 0);
                 INSERT INTO tokens (sequence, token_id, token_number, patient_id, slot_id, source,
                                     created_at, created_reason, created_by) VALUES
                   (1, X'00000000000000000000000000000001', 1, 'P1', 'D1-09', 'ONLINE', 100, 'ALLOCATED', 'desk');
                 INSERT INTO idempotency (key, fingerprint, token_id, response, stored_at) VALUES
                   ('k1', '{request}', X'00000000000000000000000000000001', '{{}}', 100);"
            ),
        );
        let snapshot = load(&connection, Date::MIN, Timestamp::UNIX_EPOCH).unwrap();

        let keys: Vec<_> = snapshot
            .idempotency
            .iter()
            .map(|k| (&*k.caller, k.key.as_str(), k.fingerprint, k.token.as_u128()))
            .collect();
        let digest: [u8; 32] = Sha256::digest(request).into();
        assert_eq!(keys, [("desk", "k1", digest, 1)]);
    }

    /// A history row that does not start from the status the previous one
    /// left is refused, not silently applied.
    #[test]
    fn a_broken_history_chain_is_refused() {
        let broken = BUMP_CANCEL_PROMOTE.replace(
            "(1, 300, 'WAITLISTED', 'ALLOCATED'",
            "(1, 300, 'CANCELLED', 'ALLOCATED'",
        );
        assert!(matches!(
            load_version_2(&broken),
            Err(StoreError::Corrupt(what)) if what.contains("does not start from")
        ));
    }
}
