//! PostgreSQL storage: the connection pool, the schema and its migrations,
//! the row codecs, and the reads and writes a transaction is made of.
//!
//! Every read and write here runs on the connection or transaction it is
//! handed and answers in store terms: engine values, or a [`PgError`].
//! Which transaction to open, the order locks are taken in, retrying a
//! transaction that lost a race, and what a missing row means to a client
//! are the service's (`service/postgres.rs`).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, Executor, PgConnection, PgPool, Row};
use uuid::Uuid;

use super::events::SlotReason;
use super::{from_nanos, nanos, Event, EventKind, Page, StoreError, StoredIdempotency};
use crate::engine::{
    Actor, Capacity, Context, DoctorId, Engine, HistoryEntry, Pace, PatientId, Reason, SlotId,
    SlotPage, SlotQuery, SlotSpec, SlotSummary, Source, Status, TokenChange, TokenRecord,
    TokenView,
};

/// Why a read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored value that no valid write produces.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

pub type PgResult<T> = Result<T, PgError>;

/// A transaction on the shared database.
pub type Transaction = sqlx::Transaction<'static, sqlx::Postgres>;

/// The connection pool of one instance, and the hosts it may connect to.
#[derive(Clone)]
pub struct Database {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgPool,
    hosts: Hosts,
    /// Which connections may still be used; shared with the pool's hooks.
    freshness: Arc<Freshness>,
    /// Set while a task looks for the host that accepts writes.
    probing: AtomicBool,
    /// The furthest point of a server's log that a wait of this instance
    /// found durable (see [`Database::durable_covers`]).
    durable: tokio::sync::watch::Sender<Option<LogPoint>>,
    /// Set once a connection that commits without waiting for the flush
    /// is opened: only then do waits for durability follow commits.
    unflushed: AtomicBool,
}

/// The hosts a `--database-url` lists, in its order, each with the same
/// database, user and parameters.
#[derive(Debug, Clone)]
pub struct Hosts {
    options: Vec<PgConnectOptions>,
    /// Whether only a host that accepts writes will do: always when several
    /// hosts are listed (only one of them is the primary), and when the URL
    /// asks for it with `target_session_attrs`.
    read_write: bool,
}

impl Hosts {
    /// Reads a PostgreSQL URL whose host part may list several hosts
    /// separated by commas (`postgres://h1:5432,h2:5432/db`), as libpq
    /// accepts it. `target_session_attrs` may be `read-write` or `primary`
    /// (a host that accepts writes), or `any` with a single host; the
    /// service writes, so the values that ask for a standby are refused.
    pub fn parse(url: &str) -> Result<Hosts, StoreError> {
        let invalid = |why: &str| StoreError::Postgres(format!("invalid --database-url: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("it must start with postgres://"))?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (user, hosts) = match authority.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), authority),
        };
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (tail, None),
        };
        let mut attrs = None;
        let mut kept = Vec::new();
        for pair in query.into_iter().flat_map(|query| query.split('&')) {
            match pair.strip_prefix("target_session_attrs=") {
                Some(value) => attrs = Some(value.to_owned()),
                None if !pair.is_empty() => kept.push(pair),
                None => {}
            }
        }
        let query = if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        };
        let hosts: Vec<&str> = hosts.split(',').collect();
        if hosts.len() > 1 && hosts.iter().any(|host| host.is_empty()) {
            return Err(invalid("an empty host in the list of hosts"));
        }
        let read_write = match attrs.as_deref() {
            None => hosts.len() > 1,
            Some("read-write" | "primary") => true,
            Some("any") if hosts.len() == 1 => false,
            Some("any") => {
                return Err(invalid(
                    "target_session_attrs=any with several hosts: the service writes, \
                     so it needs read-write",
                ))
            }
            Some(other) => {
                return Err(invalid(&format!(
                    "target_session_attrs={other} is not supported: the service writes, \
                     so use read-write"
                )))
            }
        };
        let options = hosts
            .iter()
            .map(|host| {
                PgConnectOptions::from_str(&format!("{scheme}://{user}{host}{path}{query}"))
                    .map_err(|error| invalid(&error.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Hosts {
            options,
            read_write,
        })
    }

    /// Whether the URL lists more than one host.
    fn several(&self) -> bool {
        self.options.len() > 1
    }

    /// Uses `schema` on every connection.
    fn with_schema(mut self, schema: &str) -> Hosts {
        for options in &mut self.options {
            *options = options.clone().options([("search_path", schema)]);
        }
        self
    }

    /// The first host, in the URL's order, that answers and, when asked
    /// for, accepts writes.
    async fn find(&self) -> Result<PgConnectOptions, sqlx::Error> {
        let mut last = None;
        for options in &self.options {
            match tokio::time::timeout(PROBE_TIMEOUT, self.probe(options)).await {
                Ok(Ok(())) => return Ok(options.clone()),
                Ok(Err(error)) => last = Some(error),
                Err(_) => last = Some(sqlx::Error::PoolTimedOut),
            }
        }
        Err(last.expect("a URL lists at least one host"))
    }

    async fn probe(&self, options: &PgConnectOptions) -> Result<(), sqlx::Error> {
        let mut connection = PgConnection::connect_with(options).await?;
        let checked = if self.read_write {
            accepts_writes(&mut connection).await
        } else {
            Ok(())
        };
        let _ = connection.close().await;
        checked
    }
}

/// Whether a connection's server accepts writes, as libpq's
/// `target_session_attrs=read-write` asks: a standby, and a promoted one
/// that pg_auto_failover still keeps read-only, answer `on`.
async fn accepts_writes(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    let read_only: String = sqlx::query_scalar("SHOW transaction_read_only")
        .fetch_one(&mut *connection)
        .await?;
    if read_only == "off" {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            "the server does not accept writes (a standby, or a primary being demoted)".into(),
        ))
    }
}

/// How long a look for the primary waits for one host.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a look for the primary waits before it goes through the hosts
/// again.
const PROBE_AGAIN: Duration = Duration::from_millis(250);

/// Which pooled connections may still be used. A connection opened before
/// the last loss of one (a restarted server, a failover) may be dead or
/// lead to a server that no longer accepts writes, so the pool closes it
/// instead of handing it out or keeping it. Checked without I/O, which is
/// what lets the pool skip its ping before each use.
struct Freshness {
    stale_before: Mutex<Instant>,
}

impl Freshness {
    fn is_fresh(&self, age: Duration) -> bool {
        let opened = Instant::now().checked_sub(age);
        let stale_before = *self.stale_before.lock().expect("never poisoned");
        opened.is_some_and(|opened| opened >= stale_before)
    }

    /// Retires every connection opened before `moment`.
    fn retire_before(&self, moment: Instant) {
        let mut stale_before = self.stale_before.lock().expect("never poisoned");
        *stale_before = (*stale_before).max(moment);
    }
}

/// Whether an error means that the connection, or the server behind it, is
/// gone or no longer the primary, rather than a refusal of this one
/// transaction: the connection broke, none could be made, the server shut
/// down, or it does not accept writes (a demoted primary).
pub fn is_connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "25006")
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Configuration(_) => true,
        _ => false,
    }
}

/// Whether a lost connection ([`is_connection_lost`]) is worth one more
/// attempt on a new connection: not when the pool could not make one, as
/// it has already tried for as long as it may.
pub fn may_reconnect(error: &sqlx::Error) -> bool {
    is_connection_lost(error)
        && !matches!(
            error,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Configuration(_)
        )
}

impl Database {
    /// Connects to the host of `url` that accepts writes (see
    /// [`Hosts::parse`]), creates `schema` if one is given (and uses it for
    /// every connection), and applies the migrations.
    pub async fn connect(
        url: &str,
        schema: Option<&str>,
        connections: u32,
    ) -> Result<Database, StoreError> {
        let mut hosts = Hosts::parse(url)?;
        let options = hosts.find().await.map_err(|error| {
            StoreError::Postgres(format!("no host of --database-url can be used: {error}"))
        })?;
        if let Some(schema) = schema {
            let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
            let mut connection = PgConnection::connect_with(&options)
                .await
                .map_err(postgres_error)?;
            connection
                .execute(format!("CREATE SCHEMA IF NOT EXISTS {quoted}").as_str())
                .await
                .map_err(postgres_error)?;
            connection.close().await.map_err(postgres_error)?;
            hosts = hosts.with_schema(schema);
        }
        let options = match schema {
            Some(schema) => options.options([("search_path", schema)]),
            None => options,
        };
        let freshness = Arc::new(Freshness {
            stale_before: Mutex::new(Instant::now()),
        });
        let (on_acquire, on_release) = (freshness.clone(), freshness.clone());
        let read_write = hosts.read_write;
        let pool = PgPoolOptions::new()
            // One more than asked for: the event log's listener keeps one
            // connection for itself.
            .max_connections(connections + 1)
            .acquire_timeout(Duration::from_secs(5))
            // No ping before each use: it was a round trip on every
            // request. A dead connection fails its transaction instead,
            // which the service retries once on a new connection (see
            // `service/postgres.rs`), and every connection as old as it is
            // then retired by `Freshness`.
            .test_before_acquire(false)
            .before_acquire(move |_, meta| {
                let fresh = on_acquire.is_fresh(meta.age);
                Box::pin(async move { Ok(fresh) })
            })
            .after_release(move |_, meta| {
                let fresh = on_release.is_fresh(meta.age);
                Box::pin(async move { Ok(fresh) })
            })
            // A connection opened while a primary is being replaced may
            // reach one that no longer accepts writes; it is refused, and
            // the pool tries again until the look for the primary has
            // pointed it at the new one.
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if read_write {
                        accepts_writes(connection).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(postgres_error)?;
        let migrator = sqlx::migrate!("migrations/postgres");
        migrator.run(&pool).await.map_err(|error| match error {
            // A migration the database has and this release lacks was
            // applied by a newer release: say so rather than name a file.
            sqlx::migrate::MigrateError::VersionMissing(found) => StoreError::TooNew {
                found: usize::try_from(found).unwrap_or(usize::MAX),
                known: migrator.iter().count(),
            },
            other => StoreError::Postgres(other.to_string()),
        })?;
        Ok(Database {
            shared: Arc::new(Shared {
                pool,
                hosts,
                freshness,
                probing: AtomicBool::new(false),
                durable: tokio::sync::watch::Sender::new(None),
                unflushed: AtomicBool::new(false),
            }),
        })
    }

    /// Called when a transaction that began at `began` failed because its
    /// connection or server was lost ([`is_connection_lost`]): every
    /// connection opened before then is retired (unless none could be had
    /// at all, [`may_reconnect`]), and with several hosts a
    /// task looks for the one that now accepts writes (a failover) and
    /// points the pool at it. Requests meanwhile wait for a connection (up
    /// to the pool's acquire timeout) or answer 503.
    pub fn lost(&self, began: Instant, error: &sqlx::Error) {
        // A pool that could not hand out a connection in time may only be
        // busy: its connections are kept, and only the hosts are looked at.
        if may_reconnect(error) {
            self.shared.freshness.retire_before(began);
        }
        if self.shared.hosts.several() && !self.shared.probing.swap(true, Ordering::AcqRel) {
            tokio::spawn(find_primary(Arc::downgrade(&self.shared)));
        }
    }

    /// Whether the database answers a trivial query. A connection found
    /// dead is retired and the query tried once more on a new one.
    pub async fn check(&self) -> bool {
        for _ in 0..2 {
            let began = Instant::now();
            match sqlx::query("SELECT 1").execute(&self.shared.pool).await {
                Ok(_) => return true,
                Err(error) if may_reconnect(&error) => self.lost(began, &error),
                Err(error) => {
                    if is_connection_lost(&error) {
                        self.lost(began, &error);
                    }
                    return false;
                }
            }
        }
        false
    }

    /// A read-write transaction.
    pub async fn begin(&self) -> PgResult<Transaction> {
        Ok(self.shared.pool.begin().await?)
    }

    /// A read-only transaction that sees one consistent snapshot.
    pub async fn snapshot(&self) -> PgResult<Transaction> {
        let mut tx = self.shared.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A connection for reads that need no transaction of their own.
    pub async fn connection(&self) -> PgResult<PoolConnection<sqlx::Postgres>> {
        Ok(self.shared.pool.acquire().await?)
    }

    /// A connection of its own, outside the pool, whose transactions
    /// commit without waiting for their WAL to be flushed (to disk and to
    /// a synchronous standby): nothing written on it may be acknowledged
    /// before [`wait_until_durable`] returns on it. Dropping it closes it.
    pub async fn unflushed_connection(&self) -> PgResult<PgConnection> {
        let mut connection = self.connection().await?.detach();
        connection.execute("SET synchronous_commit TO off").await?;
        self.shared.unflushed.store(true, Ordering::Release);
        Ok(connection)
    }

    /// Records that everything up to `point` is durable, as a wait for
    /// durability on any of this instance's connections found it.
    pub fn note_durable(&self, point: LogPoint) {
        self.shared.durable.send_if_modified(|durable| {
            let further = match durable {
                Some(known) => known.server != point.server || known.lsn < point.lsn,
                None => true,
            };
            if further {
                *durable = Some(point);
            }
            further
        });
    }

    /// Whether everything up to `read` is durable, or becomes so `within`
    /// this time by a wait that another task of this instance makes
    /// anyway (a group's writer waits after each commit): then a reader of
    /// what was committed by `read` needs no wait of its own. Without an
    /// unflushed connection no such wait comes, and none is waited for.
    pub async fn durable_covers(&self, read: &LogPoint, within: Duration) -> bool {
        let within = if self.shared.unflushed.load(Ordering::Acquire) {
            within
        } else {
            Duration::ZERO
        };
        let mut durable = self.shared.durable.subscribe();
        let covers = |known: &Option<LogPoint>| {
            known
                .as_ref()
                .is_some_and(|known| known.server == read.server && known.lsn >= read.lsn)
        };
        tokio::time::timeout(within, durable.wait_for(covers))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// A connection of its own that is woken when any instance commits
    /// events (see [`notify_events`]).
    pub async fn listen_for_events(&self) -> PgResult<sqlx::postgres::PgListener> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.shared.pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        Ok(listener)
    }
}

/// Goes through the hosts until one accepts writes, then points the pool
/// at it and retires every connection opened before. Ends when the
/// database is dropped.
async fn find_primary(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(hosts) = shared.upgrade().map(|shared| shared.hosts.clone()) else {
            return;
        };
        if let Ok(options) = hosts.find().await {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let current = shared.pool.connect_options();
            let moved = (current.get_host(), current.get_port())
                != (options.get_host(), options.get_port());
            if moved {
                tracing::warn!(
                    host = options.get_host(),
                    port = options.get_port(),
                    "the database's primary is now this host"
                );
                shared.pool.set_connect_options(options);
                shared.freshness.retire_before(Instant::now());
            }
            shared.probing.store(false, Ordering::Release);
            return;
        }
        tokio::time::sleep(PROBE_AGAIN).await;
    }
}

/// The columns of an event row, in the order [`event`] reads them; the
/// log and the kept report events have the same.
const EVENT_COLUMNS: &str = "id, at, actor, kind, slot_id, doctor_id, date, reason, token_id, \
     token_number, source, from_status, to_status, start_time, end_time, capacity, allocated, \
     waitlisted, closes_at, closed, estimated_call_at";

/// How many columns [`EVENT_COLUMNS`] names.
const EVENT_FIELDS: usize = 21;

/// Which rows of the log day reports are made of: token events and slot
/// creations.
const REPORTED: &str = "(kind = 'TOKEN' OR reason = 'CREATED')";

/// The notification channel on which commits with events wake readers.
const EVENTS_CHANNEL: &str = "opd_events";

/// Wakes every instance's reader of the log when this transaction commits
/// (PostgreSQL delivers a notification only on commit, and folds repeats).
pub async fn notify_events(connection: &mut PgConnection) -> PgResult<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(EVENTS_CHANNEL)
        .execute(connection)
        .await?;
    Ok(())
}

/// The columns after a log position that say which server run answered,
/// as [`log_point_from`] reads them.
macro_rules! server_run {
    () => {
        "coalesce(host(inet_server_addr()), ''), coalesce(inet_server_port(), 0),
         (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint"
    };
}

/// Returns once every transaction committed before the call is as durable
/// as this instance's own commits: on a primary with a synchronous
/// standby, replicated to it. Answers the point of the log it covers.
///
/// PostgreSQL shows a commit to other sessions before the synchronous
/// standby has confirmed it, so events read from the log may still be lost
/// in a failover (their bookings were never acknowledged). This statement
/// writes a mark to the write-ahead log (see [`wait_until_durable`]), so its
/// commit (its own, or that of the transaction it runs in) comes after
/// everything the caller read and waits for the standby to confirm it,
/// and with it everything before it in the log. A stored idempotent
/// answer is given after the same wait.
pub async fn wait_for_durable_reads(connection: &mut PgConnection) -> PgResult<LogPoint> {
    let row = sqlx::query(concat!(
        "SELECT (pg_logical_emit_message(true, 'opd', 'durable') - '0/0')::bigint, ",
        server_run!()
    ))
    .fetch_one(connection)
    .await?;
    log_point_from(&row, 0)
}

/// Returns once everything committed on `connection` is as durable as a
/// synchronous commit makes it: flushed to disk and, with a synchronous
/// standby, to the standby; answers the point of the log it covers. The
/// transaction writes a mark to the log after every commit before it (a
/// transactional message, which logical decoding would show and nothing
/// else reads), and its commit waits for the mark's flush. A commit waits
/// only if its transaction wrote to the log: a transaction id alone
/// (`txid_current()`) writes nothing, and waiting that way, the failover
/// test lost acknowledged bookings.
pub async fn wait_until_durable(connection: &mut PgConnection) -> PgResult<LogPoint> {
    // Several statements in one round trip: the simple query protocol.
    let rows = connection
        .fetch_all(concat!(
            "BEGIN; SET LOCAL synchronous_commit TO on;
             SELECT (pg_logical_emit_message(true, 'opd', 'durable') - '0/0')::bigint, ",
            server_run!(),
            "; COMMIT"
        ))
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| PgError::Corrupt("a wait for durability answered no row".into()))?;
    log_point_from(row, 0)
}

/// The log position and server run in columns `at`.. of `row`.
fn log_point_from(row: &PgRow, at: usize) -> PgResult<LogPoint> {
    Ok(LogPoint {
        lsn: u64::try_from(row.try_get::<i64, _>(at)?)
            .map_err(|_| PgError::Corrupt("a negative log position".into()))?,
        server: ServerRun {
            address: row.try_get(at + 1)?,
            port: row.try_get(at + 2)?,
            started: row.try_get(at + 3)?,
        },
    })
}

/// A position in one server run's write-ahead log. Positions of different
/// runs are not compared: a restarted primary, or a promoted standby,
/// may reach a position again with other commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPoint {
    pub server: ServerRun,
    lsn: u64,
}

/// Which server a connection reached, and since when that server has run:
/// the same address and port with another start time is a server that
/// restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRun {
    address: String,
    port: i32,
    started: i64,
}

impl ServerRun {
    /// Whether `self` is the server `before` reached, at any run.
    pub fn is_same_server(&self, before: &ServerRun) -> bool {
        self.address == before.address && self.port == before.port
    }

    /// Whether `self` is the server of `before`, restarted since.
    pub fn restarted_since(&self, before: &ServerRun) -> bool {
        self.is_same_server(before) && self.started != before.started
    }
}

/// Whether a synchronous standby has confirmed everything this server has
/// written.
pub async fn standby_has_all(connection: &mut PgConnection) -> PgResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_replication
                         WHERE sync_state IN ('sync', 'quorum')
                           AND flush_lsn >= pg_current_wal_flush_lsn())",
    )
    .fetch_one(connection)
    .await?)
}

/// The log's events after `after`, at most `limit`, with the oldest id it
/// keeps, and the point the server's log had reached when they were read:
/// one statement, so one round trip and one snapshot. The point is taken
/// after the statement's snapshot, so every commit it shows lies before it.
pub async fn read_events(
    connection: &mut PgConnection,
    after: u64,
    limit: usize,
) -> PgResult<(Page, LogPoint)> {
    // A log without events after `after` is one row without an event.
    let rows = sqlx::query(&format!(
        "SELECT e.*, m.*
           FROM (SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint, {}, min(id), max(id)
                   FROM events) m
           LEFT JOIN LATERAL
                (SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2) e
             ON true
          ORDER BY e.id",
        server_run!()
    ))
    .bind(after as i64)
    .bind(limit as i64)
    .fetch_all(&mut *connection)
    .await?;
    let first = rows
        .first()
        .ok_or_else(|| PgError::Corrupt("a read of the log answered no row".into()))?;
    let (oldest, newest): (Option<i64>, Option<i64>) = (
        first.try_get(EVENT_FIELDS + 4)?,
        first.try_get(EVENT_FIELDS + 5)?,
    );
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<Option<i64>, _>(0)?.is_some() {
            events.push(event(row)?);
        }
    }
    let page = Page {
        events,
        oldest: oldest.map(|id| id as u64),
        newest: newest.map(|id| id as u64),
    };
    Ok((page, log_point_from(first, EVENT_FIELDS)?))
}

/// The newest id in the log; 0 when it is empty.
pub async fn newest_event_id(connection: &mut PgConnection) -> PgResult<u64> {
    let last: i64 = sqlx::query_scalar("SELECT last_id FROM event_log_head")
        .fetch_one(connection)
        .await?;
    Ok(last as u64)
}

/// Drops up to `max` of the oldest events stored before `before`, keeping
/// those day reports are made of in `report_events`: one statement, so an
/// event is always in exactly one of the two tables. Each call is a short
/// transaction of its own that takes no lock writers wait for; two
/// instances pruning at once delete (and keep) each event once, since the
/// second waits for the first's row locks and then finds those rows gone.
pub async fn prune_events(
    connection: &mut PgConnection,
    before: Timestamp,
    max: i64,
) -> PgResult<()> {
    sqlx::query(&format!(
        "WITH pruned AS (
             DELETE FROM events WHERE id IN
               (SELECT id FROM events WHERE at < $1 ORDER BY id LIMIT $2)
             RETURNING {EVENT_COLUMNS})
         INSERT INTO report_events ({EVENT_COLUMNS})
         SELECT {EVENT_COLUMNS} FROM pruned WHERE {REPORTED}
         ON CONFLICT (id) DO NOTHING"
    ))
    .bind(nanos(before))
    .bind(max)
    .execute(connection)
    .await?;
    Ok(())
}

/// The events a report of `date` is made of (its token events and slot
/// creations), kept and still in the log, in id order. Read in one
/// snapshot, so that pruning meanwhile neither hides nor repeats one.
pub async fn report_events(
    connection: &mut PgConnection,
    date: jiff::civil::Date,
) -> PgResult<Vec<Event>> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM report_events WHERE date = $1
         UNION ALL
         SELECT {EVENT_COLUMNS} FROM events WHERE date = $1 AND {REPORTED}
         ORDER BY id"
    ))
    .bind(date.to_string())
    .fetch_all(connection)
    .await?;
    rows.iter().map(event).collect()
}

fn event(row: &PgRow) -> PgResult<Event> {
    let text = |index: usize| -> PgResult<&str> { Ok(row.try_get(index)?) };
    let slot = parse(SlotId::parse, text(4)?)?;
    let doctor = parse(DoctorId::parse, text(5)?)?;
    let date: jiff::civil::Date = text(6)?
        .parse()
        .map_err(|_| PgError::Corrupt("an event's date".into()))?;
    let time = |index: usize| -> PgResult<jiff::civil::Time> {
        text(index)?
            .parse()
            .map_err(|_| PgError::Corrupt("an event's time".into()))
    };
    let count = |index: usize| -> PgResult<u32> { Ok(row.try_get::<i32, _>(index)? as u32) };
    let kind = match text(3)? {
        "TOKEN" => EventKind::Token {
            token: row.try_get(8)?,
            number: count(9)?,
            slot,
            doctor,
            date,
            source: parse(Source::parse, text(10)?)?,
            from: row
                .try_get::<Option<&str>, _>(11)?
                .map(|from| parse(Status::parse, from))
                .transpose()?,
            to: parse(Status::parse, text(12)?)?,
            reason: parse(Reason::parse, text(7)?)?,
            estimate: row
                .try_get::<Option<i64>, _>(20)?
                .map(|at| {
                    from_nanos(at).ok_or_else(|| PgError::Corrupt("an event's estimate".into()))
                })
                .transpose()?,
        },
        "SLOT" => EventKind::Slot {
            reason: parse(SlotReason::parse, text(7)?)?,
            slot: SlotSummary {
                id: slot,
                doctor,
                date,
                start: time(13)?,
                end: time(14)?,
                capacity: count(15)?,
                allocated: count(16)?,
                waitlisted: count(17)?,
                closes_at: from_nanos(row.try_get(18)?)
                    .ok_or_else(|| PgError::Corrupt("a slot event's closing time".into()))?,
                closed: row.try_get(19)?,
            },
        },
        _ => return Err(PgError::Corrupt("an event's kind".into())),
    };
    Ok(Event {
        id: row.try_get::<i64, _>(0)? as u64,
        at: from_nanos(row.try_get(1)?)
            .ok_or_else(|| PgError::Corrupt("an event's time".into()))?,
        actor: Arc::from(text(2)?),
        kind,
    })
}

/// Whether [`load_slot`] locks the slot's row until the transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    ForUpdate,
    None,
}

/// Loads one slot, its active tokens and those holding a seat into a
/// fresh engine; `None` when the slot does not exist. Other ended tokens
/// never change again and hold nothing, so the engine needs only these to
/// decide.
pub async fn load_slot(
    connection: &mut PgConnection,
    id: &SlotId,
    lock: Lock,
    engine: Engine,
) -> PgResult<Option<Engine>> {
    let query = match lock {
        Lock::ForUpdate => "SELECT slot_id, doctor_id, date, start_time, end_time, capacity, coalesce(closed_at, closes_at), closed_at IS NOT NULL FROM slots WHERE slot_id = $1 FOR UPDATE",
        Lock::None => "SELECT slot_id, doctor_id, date, start_time, end_time, capacity, coalesce(closed_at, closes_at), closed_at IS NOT NULL FROM slots WHERE slot_id = $1",
    };
    let rows = sqlx::query(query)
        .bind(id.as_str())
        .fetch_all(&mut *connection)
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    fill_engine(connection, engine, &rows).await.map(Some)
}

/// Loads every slot of a doctor's date, with their active and seated
/// tokens, into a fresh engine, locking the slots in start time order when
/// asked: the doctor's call order and the one token with the doctor span
/// all of them. The day's pace is read by [`lock_doctor_day`].
pub async fn load_doctor_day(
    connection: &mut PgConnection,
    doctor: &DoctorId,
    date: jiff::civil::Date,
    lock: Lock,
    engine: Engine,
) -> PgResult<Engine> {
    let query = match lock {
        Lock::ForUpdate => "SELECT slot_id, doctor_id, date, start_time, end_time, capacity, coalesce(closed_at, closes_at), closed_at IS NOT NULL FROM slots WHERE doctor_id = $1 AND date = $2 ORDER BY start_time FOR UPDATE",
        Lock::None => "SELECT slot_id, doctor_id, date, start_time, end_time, capacity, coalesce(closed_at, closes_at), closed_at IS NOT NULL FROM slots WHERE doctor_id = $1 AND date = $2 ORDER BY start_time",
    };
    let rows = sqlx::query(query)
        .bind(doctor.as_str())
        .bind(date.to_string())
        .fetch_all(&mut *connection)
        .await?;
    fill_engine(connection, engine, &rows).await
}

/// Creates the slots of `rows` in `engine` and restores their active and
/// seated tokens.
async fn fill_engine(
    connection: &mut PgConnection,
    mut engine: Engine,
    rows: &[PgRow],
) -> PgResult<Engine> {
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(create_slot_from(&mut engine, row, 0)?);
    }
    let names: Vec<&str> = ids.iter().map(SlotId::as_str).collect();
    let tokens = sqlx::query(
        "SELECT token_id, sequence, token_number, patient_id, source, status, created_at, updated_at,
                checked_in_at, skips, slot_id
         FROM tokens WHERE slot_id = ANY($1) AND (active OR seated) ORDER BY sequence",
    )
    .bind(&names)
    .fetch_all(&mut *connection)
    .await?;
    for row in &tokens {
        let slot = row.try_get::<&str, _>(10)?;
        let slot = ids
            .iter()
            .find(|id| id.as_str() == slot)
            .cloned()
            .ok_or_else(|| PgError::Corrupt("a token of a slot not loaded".into()))?;
        restore_token_from(&mut engine, row, 0, slot)?;
    }
    engine
        .check_invariants()
        .map_err(|error| PgError::Corrupt(error.to_string()))?;
    Ok(engine)
}

/// Creates in `engine` the slot whose row's columns start at `at`: id,
/// doctor, date, start, end, capacity, closing time and whether closed.
fn create_slot_from(engine: &mut Engine, row: &PgRow, at: usize) -> PgResult<SlotId> {
    let id = parse(SlotId::parse, row.try_get(at)?)?;
    engine
        .create_slot(SlotSpec {
            id: id.clone(),
            doctor: parse(DoctorId::parse, row.try_get(at + 1)?)?,
            date: parse(|raw| raw.parse().ok(), row.try_get(at + 2)?)?,
            start: parse(|raw| raw.parse().ok(), row.try_get(at + 3)?)?,
            end: parse(|raw| raw.parse().ok(), row.try_get(at + 4)?)?,
            capacity: u32::try_from(row.try_get::<i32, _>(at + 5)?)
                .ok()
                .and_then(Capacity::new)
                .ok_or_else(|| PgError::Corrupt("capacity out of range".into()))?,
        })
        .map_err(|error| PgError::Corrupt(error.to_string()))?;
    engine
        .restore_closing(&id, timestamp(row.try_get(at + 6)?)?, row.try_get(at + 7)?)
        .map_err(|error| PgError::Corrupt(error.to_string()))?;
    Ok(id)
}

/// Restores in `engine` the token of `slot` whose row's columns start at
/// `at` (see [`token_record_from`]).
fn restore_token_from(engine: &mut Engine, row: &PgRow, at: usize, slot: SlotId) -> PgResult<()> {
    engine
        .restore_token(token_record_from(row, at, slot)?)
        .map_err(|error| PgError::Corrupt(error.to_string()))
}

/// The token of `slot` whose row's columns start at `at`: id, sequence,
/// number, patient, source, status, created, updated, first check-in and
/// skips, without its history.
fn token_record_from(row: &PgRow, at: usize, slot: SlotId) -> PgResult<TokenRecord> {
    Ok(TokenRecord {
        id: row.try_get(at)?,
        sequence: row.try_get::<i64, _>(at + 1)? as u64,
        number: row.try_get::<i32, _>(at + 2)? as u32,
        patient: parse(PatientId::parse, row.try_get(at + 3)?)?,
        slot,
        source: parse(Source::parse, row.try_get(at + 4)?)?,
        status: parse(Status::parse, row.try_get(at + 5)?)?,
        created_at: timestamp(row.try_get(at + 6)?)?,
        updated_at: timestamp(row.try_get(at + 7)?)?,
        checked_in_at: row
            .try_get::<Option<i64>, _>(at + 8)?
            .map(timestamp)
            .transpose()?,
        skips: u8::try_from(row.try_get::<i16, _>(at + 9)?)
            .map_err(|_| PgError::Corrupt("a skip count out of range".into()))?,
        // History is not needed to decide, only to show.
        history: Vec::new(),
    })
}

/// Takes the lock of one caller's idempotency key until the transaction
/// ends.
pub async fn lock_idempotency_key(
    connection: &mut PgConnection,
    caller: &Actor,
    key: &str,
) -> PgResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || E'\\n' || $2, 0))")
        .bind(&**caller)
        .bind(key)
        .execute(connection)
        .await?;
    Ok(())
}

/// The caller's record for `key`, if it was stored at or after `since`.
pub async fn find_idempotency(
    connection: &mut PgConnection,
    caller: &Actor,
    key: &str,
    since: Timestamp,
) -> PgResult<Option<StoredIdempotency>> {
    let row = sqlx::query(
        "SELECT fingerprint, token_id, response, stored_at FROM idempotency
         WHERE caller = $1 AND key = $2 AND stored_at >= $3",
    )
    .bind(&**caller)
    .bind(key)
    .bind(nanos(since))
    .fetch_optional(connection)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(StoredIdempotency {
        caller: caller.clone(),
        key: key.to_owned(),
        fingerprint: fingerprint(row.try_get(0)?)?,
        token: row.try_get(1)?,
        response: Arc::from(row.try_get::<&str, _>(2)?),
        stored_at: timestamp(row.try_get(3)?)?,
    }))
}

/// A stored idempotency fingerprint.
fn fingerprint(stored: &[u8]) -> PgResult<[u8; 32]> {
    stored
        .try_into()
        .map_err(|_| PgError::Corrupt("an idempotency fingerprint that is not 32 bytes".into()))
}

/// How many idempotency keys stored at or after some instant are
/// remembered, for one caller and over all, and the oldest of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCounts {
    pub caller: usize,
    pub caller_oldest: Option<Timestamp>,
    pub total: usize,
    pub total_oldest: Option<Timestamp>,
}

/// Counts the keys stored at or after `since`. The count visits every such
/// key, so its cost grows with the keys the limits allow.
pub async fn count_idempotency(
    connection: &mut PgConnection,
    caller: &Actor,
    since: Timestamp,
) -> PgResult<KeyCounts> {
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE caller = $1), min(stored_at) FILTER (WHERE caller = $1),
                count(*), min(stored_at)
           FROM idempotency WHERE stored_at >= $2",
    )
    .bind(&**caller)
    .bind(nanos(since))
    .fetch_one(connection)
    .await?;
    let count = |count: i64| usize::try_from(count).unwrap_or(0);
    Ok(KeyCounts {
        caller: count(row.try_get(0)?),
        caller_oldest: row.try_get::<Option<i64>, _>(1)?.and_then(from_nanos),
        total: count(row.try_get(2)?),
        total_oldest: row.try_get::<Option<i64>, _>(3)?.and_then(from_nanos),
    })
}

/// Stores an idempotency record. The row of an expired use of the same
/// key may not be pruned yet: the new use replaces it.
pub async fn store_idempotency(
    connection: &mut PgConnection,
    record: &StoredIdempotency,
) -> PgResult<()> {
    sqlx::query(
        "INSERT INTO idempotency (caller, key, fingerprint, token_id, response, stored_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (caller, key) DO UPDATE SET
             fingerprint = excluded.fingerprint, token_id = excluded.token_id,
             response = excluded.response, stored_at = excluded.stored_at",
    )
    .bind(&*record.caller)
    .bind(&record.key)
    .bind(&record.fingerprint[..])
    .bind(record.token)
    .bind(&*record.response)
    .bind(nanos(record.stored_at))
    .execute(connection)
    .await?;
    Ok(())
}

/// Deletes the idempotency records stored before `before`.
pub async fn prune_idempotency(connection: &mut PgConnection, before: Timestamp) -> PgResult<()> {
    sqlx::query("DELETE FROM idempotency WHERE stored_at < $1")
        .bind(nanos(before))
        .execute(connection)
        .await?;
    Ok(())
}

/// Creates the doctor's day row, which holds its token number counter, if
/// it does not exist yet.
pub async fn add_doctor_day(
    connection: &mut PgConnection,
    doctor: &DoctorId,
    date: jiff::civil::Date,
) -> PgResult<()> {
    sqlx::query("INSERT INTO doctor_days (doctor_id, date) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(doctor.as_str())
        .bind(date.to_string())
        .execute(connection)
        .await?;
    Ok(())
}

/// Locks the doctor's day row until the transaction ends and reads how
/// many token numbers it has issued.
pub async fn lock_doctor_day(
    connection: &mut PgConnection,
    doctor: &DoctorId,
    date: jiff::civil::Date,
) -> PgResult<u32> {
    let issued: i32 = sqlx::query_scalar(
        "SELECT numbers_issued FROM doctor_days WHERE doctor_id = $1 AND date = $2 FOR UPDATE",
    )
    .bind(doctor.as_str())
    .bind(date.to_string())
    .fetch_one(connection)
    .await?;
    u32::try_from(issued).map_err(|_| PgError::Corrupt("a negative token number".into()))
}

/// The doctor's day's pace, locking its row until the transaction ends
/// when asked; the default for a day without a row.
pub async fn doctor_day_pace(
    connection: &mut PgConnection,
    doctor: &DoctorId,
    date: jiff::civil::Date,
    lock: Lock,
) -> PgResult<Pace> {
    let query = match lock {
        Lock::ForUpdate => "SELECT consultations, consultation_nanos, calls, skips FROM doctor_days WHERE doctor_id = $1 AND date = $2 FOR UPDATE",
        Lock::None => "SELECT consultations, consultation_nanos, calls, skips FROM doctor_days WHERE doctor_id = $1 AND date = $2",
    };
    let Some(row) = sqlx::query(query)
        .bind(doctor.as_str())
        .bind(date.to_string())
        .fetch_optional(connection)
        .await?
    else {
        return Ok(Pace::default());
    };
    let count =
        |value: i32| u32::try_from(value).map_err(|_| PgError::Corrupt("a negative count".into()));
    Ok(Pace {
        consultations: count(row.try_get(0)?)?,
        consultation_nanos: row.try_get(1)?,
        calls: count(row.try_get(2)?)?,
        skips: count(row.try_get(3)?)?,
    })
}

/// Records the doctor's day's pace.
pub async fn write_pace(
    connection: &mut PgConnection,
    doctor: &DoctorId,
    date: jiff::civil::Date,
    pace: Pace,
) -> PgResult<()> {
    sqlx::query(
        "UPDATE doctor_days SET consultations = $3, consultation_nanos = $4, calls = $5, skips = $6
         WHERE doctor_id = $1 AND date = $2",
    )
    .bind(doctor.as_str())
    .bind(date.to_string())
    .bind(pace.consultations as i32)
    .bind(pace.consultation_nanos)
    .bind(pace.calls as i32)
    .bind(pace.skips as i32)
    .execute(connection)
    .await?;
    Ok(())
}

/// Whether the doctor has a slot on any date.
pub async fn doctor_exists(connection: &mut PgConnection, doctor: &DoctorId) -> PgResult<bool> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM slots WHERE doctor_id = $1 LIMIT 1")
        .bind(doctor.as_str())
        .fetch_optional(connection)
        .await?;
    Ok(found.is_some())
}

/// The doctors with a slot on `date`, by id.
pub async fn doctors_on(
    connection: &mut PgConnection,
    date: jiff::civil::Date,
) -> PgResult<Vec<DoctorId>> {
    let doctors: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT doctor_id FROM slots WHERE date = $1 ORDER BY doctor_id",
    )
    .bind(date.to_string())
    .fetch_all(connection)
    .await?;
    doctors
        .iter()
        .map(|doctor| parse(DoctorId::parse, doctor))
        .collect()
}

/// How many of the doctor's tokens of `date` ended, per final status that
/// holds no seat (the seated ones are loaded with the day).
pub async fn ended_counts(
    connection: &mut PgConnection,
    doctor: &DoctorId,
    date: jiff::civil::Date,
) -> PgResult<Vec<(Status, u32)>> {
    let rows = sqlx::query(
        "SELECT t.status, count(*) FROM tokens t JOIN slots s ON s.slot_id = t.slot_id
         WHERE t.doctor_id = $1 AND s.date = $2 AND NOT t.active AND NOT t.seated
         GROUP BY t.status",
    )
    .bind(doctor.as_str())
    .bind(date.to_string())
    .fetch_all(connection)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                parse(Status::parse, row.try_get(0)?)?,
                row.try_get::<i64, _>(1)? as u32,
            ))
        })
        .collect()
}

/// Records the last token number the doctor's day has issued.
pub async fn write_numbers_issued(
    connection: &mut PgConnection,
    doctor: &DoctorId,
    date: jiff::civil::Date,
    issued: u32,
) -> PgResult<()> {
    sqlx::query("UPDATE doctor_days SET numbers_issued = $3 WHERE doctor_id = $1 AND date = $2")
        .bind(doctor.as_str())
        .bind(date.to_string())
        .bind(issued as i32)
        .execute(connection)
        .await?;
    Ok(())
}

/// A copy of one slot, with its active and seated tokens, to decide
/// bookings on without reading it first: the version of the slot's row it
/// was read at, and the numbers its doctor's day had issued then.
pub struct SlotCopy {
    pub engine: Engine,
    pub version: i64,
    pub numbers_issued: u32,
}

/// Reads a copy of a slot in one statement, so from one snapshot and in
/// one round trip; `None` when the slot does not exist.
pub async fn read_slot_copy(
    connection: &mut PgConnection,
    id: &SlotId,
    mut engine: Engine,
) -> PgResult<Option<SlotCopy>> {
    let rows = sqlx::query(
        "SELECT s.version, d.numbers_issued,
                s.slot_id, s.doctor_id, s.date, s.start_time, s.end_time, s.capacity,
                coalesce(s.closed_at, s.closes_at), s.closed_at IS NOT NULL,
                t.token_id, t.sequence, t.token_number, t.patient_id, t.source, t.status,
                t.created_at, t.updated_at, t.checked_in_at, t.skips
           FROM slots s
           JOIN doctor_days d ON d.doctor_id = s.doctor_id AND d.date = s.date
           LEFT JOIN tokens t ON t.slot_id = s.slot_id AND (t.active OR t.seated)
          WHERE s.slot_id = $1
          ORDER BY t.sequence",
    )
    .bind(id.as_str())
    .fetch_all(&mut *connection)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let slot = create_slot_from(&mut engine, first, 2)?;
    for row in &rows {
        // A slot without tokens is one row without a token.
        if row.try_get::<Option<Uuid>, _>(10)?.is_some() {
            restore_token_from(&mut engine, row, 10, slot.clone())?;
        }
    }
    engine
        .check_invariants()
        .map_err(|error| PgError::Corrupt(error.to_string()))?;
    Ok(Some(SlotCopy {
        engine,
        version: first.try_get(0)?,
        numbers_issued: numbers_issued_from(first, 1)?,
    }))
}

/// The numbers a doctor's day has issued, in column `at` of `row`.
fn numbers_issued_from(row: &PgRow, at: usize) -> PgResult<u32> {
    u32::try_from(row.try_get::<i32, _>(at)?)
        .map_err(|_| PgError::Corrupt("a negative count of numbers issued".into()))
}

/// Brings `copy` of slot `id` up to the slot as stored, in one statement:
/// the slot's row and the tokens changed since the copy's version (see
/// migration 0010), and the tokens `also` whatever their stamps (those a
/// decision taken back had moved in the copy). Returns false, with `copy`
/// to be dropped, when it cannot be brought up that way: the slot's
/// capacity or closing changed, or what the changes make of the copy does
/// not add up to the slot's stored counts.
pub async fn refresh_slot_copy(
    connection: &mut PgConnection,
    id: &SlotId,
    copy: &mut SlotCopy,
    also: &[Uuid],
) -> PgResult<bool> {
    let brought_up = refresh_slot_copies(connection, &mut [(id, copy)], also).await?;
    Ok(brought_up == [true])
}

/// Brings several copies up as [`refresh_slot_copy`] does, in one
/// statement for all; a token of `also` counts for its own slot's copy.
/// Answers, in the order of `copies`, whether each was brought up; one
/// that was not is to be dropped. The tokens `also` are read apart from
/// the changed ones so that each read keeps its index: with the two
/// conditions joined by OR, PostgreSQL read every token of each slot.
pub async fn refresh_slot_copies(
    connection: &mut PgConnection,
    copies: &mut [(&SlotId, &mut SlotCopy)],
    also: &[Uuid],
) -> PgResult<Vec<bool>> {
    let ids: Vec<&str> = copies.iter().map(|(id, _)| id.as_str()).collect();
    let versions: Vec<i64> = copies.iter().map(|(_, copy)| copy.version).collect();
    let rows = sqlx::query(
        "SELECT s.version, d.numbers_issued, s.capacity,
                coalesce(s.closed_at, s.closes_at), s.closed_at IS NOT NULL,
                s.allocated_count, s.waitlist_count,
                t.token_id, t.sequence, t.token_number, t.patient_id, t.source, t.status,
                t.created_at, t.updated_at, t.checked_in_at, t.skips, c.at
           FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS c(slot_id, version, at)
           JOIN slots s ON s.slot_id = c.slot_id
           JOIN doctor_days d ON d.doctor_id = s.doctor_id AND d.date = s.date
           LEFT JOIN LATERAL (
                SELECT * FROM tokens t WHERE t.slot_id = s.slot_id AND t.changed > c.version
                UNION ALL
                SELECT * FROM tokens t
                 WHERE t.slot_id = s.slot_id AND t.changed <= c.version AND t.token_id = ANY ($3)
           ) t ON true
          ORDER BY c.at, t.sequence",
    )
    .bind(&ids)
    .bind(&versions)
    .bind(also)
    .fetch_all(&mut *connection)
    .await?;
    let mut ats = Vec::with_capacity(rows.len());
    for row in &rows {
        ats.push(row.try_get::<i64, _>(17)?);
    }
    let own = rows_of_each(&ats, copies.len());
    let mut brought_up = Vec::with_capacity(copies.len());
    for ((id, copy), own) in copies.iter_mut().zip(own) {
        brought_up.push(bring_up(id, copy, &rows[own])?);
    }
    Ok(brought_up)
}

/// Where the rows of each of `count` copies are, given each row's copy
/// (numbered from 1, as `WITH ORDINALITY` numbers them) in ascending
/// order: a copy whose slot is gone has none.
fn rows_of_each(ats: &[i64], count: usize) -> Vec<std::ops::Range<usize>> {
    let mut start = 0;
    (1..=count as i64)
        .map(|at| {
            let end = start + ats[start..].iter().take_while(|row| **row == at).count();
            let own = start..end;
            start = end;
            own
        })
        .collect()
}

/// Brings `copy` of slot `id` up by its `rows` of
/// [`refresh_slot_copies`]: the slot's row with each token changed since
/// the copy's version.
fn bring_up(id: &SlotId, copy: &mut SlotCopy, rows: &[PgRow]) -> PgResult<bool> {
    let Some(first) = rows.first() else {
        return Ok(false);
    };
    let Some(held) = copy.engine.slot_summary(id) else {
        return Ok(false);
    };
    if i64::from(held.capacity) != i64::from(first.try_get::<i32, _>(2)?)
        || held.closes_at != timestamp(first.try_get(3)?)?
        || held.closed != first.try_get::<bool, _>(4)?
    {
        return Ok(false);
    }
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        if row.try_get::<Option<Uuid>, _>(7)?.is_some() {
            records.push(token_record_from(row, 7, id.clone())?);
        }
    }
    if copy.engine.refresh_tokens(records).is_err() {
        return Ok(false);
    }
    let now = copy.engine.slot_summary(id).expect("held above");
    if i64::from(now.allocated) != i64::from(first.try_get::<i32, _>(5)?)
        || i64::from(now.waitlisted) != i64::from(first.try_get::<i32, _>(6)?)
    {
        tracing::warn!(slot = %id, "a copy brought up by its changes does not match the slot's counts; reading it whole");
        return Ok(false);
    }
    if cfg!(debug_assertions) {
        copy.engine
            .check_invariants()
            .map_err(|error| PgError::Corrupt(error.to_string()))?;
    }
    copy.version = first.try_get(0)?;
    copy.numbers_issued = numbers_issued_from(first, 1)?;
    Ok(true)
}

/// A booking decided on a [`SlotCopy`], as [`book_in_group`] writes it:
/// owned, so that a group's writer can take it from another task.
pub struct OneCall {
    slot: SlotId,
    doctor: DoctorId,
    date: String,
    /// The version of the slot's row the copy was read at.
    version: i64,
    /// The booked token's number.
    number: i32,
    allocated: i32,
    waitlisted: i32,
    at: i64,
    actor: Actor,
    changes: Vec<CallChange>,
    key: Option<KeyedCall>,
}

/// One token change of a [`OneCall`], in the columns it is written as.
struct CallChange {
    token: Uuid,
    number: i32,
    patient: String,
    source: &'static str,
    priority: i16,
    from: Option<&'static str>,
    to: &'static str,
    reason: &'static str,
    active: bool,
    seated: bool,
    checked_in: Option<i64>,
    skips: i16,
    estimate: Option<i64>,
}

/// The idempotency record a keyed booking stores, and the limits on the
/// keys remembered.
pub struct KeyedCall {
    pub key: String,
    pub fingerprint: [u8; 32],
    pub response: Arc<str>,
    /// Keys stored before this are past their retention.
    pub since: Timestamp,
    pub per_caller: usize,
    pub total: usize,
}

impl OneCall {
    /// The booking that left `slot` as it is, with `changes`, decided on a
    /// copy read at `version`.
    pub fn new<'a>(
        slot: &SlotSummary,
        version: i64,
        number: u32,
        changes: impl Iterator<Item = TokenChange<'a>>,
        ctx: &Context,
        key: Option<KeyedCall>,
    ) -> OneCall {
        let changes = changes
            .map(|c| CallChange {
                token: c.token,
                number: c.number as i32,
                patient: c.patient.as_str().to_owned(),
                source: c.source.as_str(),
                priority: i16::from(c.source.priority().get()),
                from: c.from.map(Status::as_str),
                to: c.to.as_str(),
                reason: c.reason.as_str(),
                active: c.to.is_active(),
                seated: c.to.holds_seat(),
                checked_in: c.checked_in_at.map(nanos),
                skips: i16::from(c.skips),
                estimate: c.estimated_call_at.map(nanos),
            })
            .collect();
        OneCall {
            slot: slot.id.clone(),
            doctor: slot.doctor.clone(),
            date: slot.date.to_string(),
            version,
            number: number as i32,
            allocated: slot.allocated as i32,
            waitlisted: slot.waitlisted as i32,
            at: nanos(ctx.at),
            actor: ctx.actor.clone(),
            changes,
            key,
        }
    }
}

/// What [`book_in_group`] did with one call.
#[derive(Debug)]
pub enum CallAnswer {
    /// Written; the slot's row is now at `version`.
    Booked { version: i64 },
    /// The slot's row, or the day's numbers, moved on from the copy; the
    /// day had issued `numbers_issued` when it was the numbers. Nothing was
    /// written.
    Stale { numbers_issued: Option<u32> },
    /// The booked token exists already: an earlier try of the same call
    /// committed.
    Written,
    /// The caller's key is stored, with this answer.
    Stored {
        fingerprint: [u8; 32],
        token: Uuid,
        response: Arc<str>,
    },
    /// Storing the key would pass a limit.
    KeysFull(KeyCounts),
}

/// Writes bookings decided on copies of their slots in one statement (the
/// function `opd_book_group`, migration 0009), which is one transaction,
/// one commit and one round trip however many calls it carries. Each call
/// is written only if its slot's row is still at its copy's version and
/// its day has issued the numbers before the booked one; the answers are
/// in the order of `calls`. The function takes its locks in an order no
/// other transaction crosses (the migration says why).
pub async fn book_in_group(
    connection: &mut PgConnection,
    calls: &[&OneCall],
) -> PgResult<Vec<CallAnswer>> {
    // One array per column, calls and their changes in order.
    fn each<T>(calls: &[&OneCall], f: impl Fn(&OneCall) -> T) -> Vec<T> {
        calls.iter().map(|call| f(call)).collect()
    }
    fn every<'c, T>(calls: &[&'c OneCall], f: impl Fn(&'c CallChange) -> T) -> Vec<T> {
        calls
            .iter()
            .flat_map(|call| call.changes.iter())
            .map(f)
            .collect()
    }
    let (mut first, mut last, mut call_of) = (Vec::new(), Vec::new(), Vec::new());
    for (index, call) in calls.iter().enumerate() {
        let before = call_of.len() as i32;
        call_of.extend(std::iter::repeat_n(index as i32 + 1, call.changes.len()));
        first.push(before + 1);
        last.push(call_of.len() as i32);
    }
    let limit = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let rows = sqlx::query(
        "SELECT * FROM opd_book_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                      $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24,
                                      $25, $26, $27, $28, $29, $30, $31, $32)",
    )
    .bind(EVENTS_CHANNEL)
    .bind(each(calls, |c| c.slot.as_str().to_owned()))
    .bind(each(calls, |c| c.version))
    .bind(each(calls, |c| c.doctor.as_str().to_owned()))
    .bind(each(calls, |c| c.date.clone()))
    .bind(each(calls, |c| c.number))
    .bind(each(calls, |c| c.allocated))
    .bind(each(calls, |c| c.waitlisted))
    .bind(each(calls, |c| c.at))
    .bind(each(calls, |c| c.actor.to_string()))
    .bind(first)
    .bind(last)
    .bind(call_of)
    .bind(every(calls, |c| c.token))
    .bind(every(calls, |c| c.number))
    .bind(every(calls, |c| c.patient.as_str()))
    .bind(every(calls, |c| c.source))
    .bind(every(calls, |c| c.priority))
    .bind(every(calls, |c| c.from))
    .bind(every(calls, |c| c.to))
    .bind(every(calls, |c| c.reason))
    .bind(every(calls, |c| c.active))
    .bind(every(calls, |c| c.seated))
    .bind(every(calls, |c| c.checked_in))
    .bind(every(calls, |c| c.skips))
    .bind(every(calls, |c| c.estimate))
    .bind(each(calls, |c| c.key.as_ref().map(|k| k.key.clone())))
    .bind(each(calls, |c| {
        c.key.as_ref().map(|k| k.fingerprint.to_vec())
    }))
    .bind(each(calls, |c| {
        c.key.as_ref().map(|k| k.response.to_string())
    }))
    .bind(each(calls, |c| c.key.as_ref().map(|k| nanos(k.since))))
    .bind(each(calls, |c| c.key.as_ref().map(|k| limit(k.per_caller))))
    .bind(each(calls, |c| c.key.as_ref().map(|k| limit(k.total))))
    .fetch_all(connection)
    .await?;
    let mut answers: Vec<Option<CallAnswer>> = calls.iter().map(|_| None).collect();
    for row in &rows {
        let count = |index: usize| -> PgResult<usize> {
            Ok(usize::try_from(row.try_get::<Option<i64>, _>(index)?.unwrap_or(0)).unwrap_or(0))
        };
        let oldest = |index: usize| -> PgResult<Option<Timestamp>> {
            Ok(row.try_get::<Option<i64>, _>(index)?.and_then(from_nanos))
        };
        let answer = match row.try_get::<&str, _>(1)? {
            "BOOKED" => CallAnswer::Booked {
                version: row.try_get(2)?,
            },
            "STALE" => CallAnswer::Stale {
                numbers_issued: row
                    .try_get::<Option<i32>, _>(3)?
                    .map(|issued| issued as u32),
            },
            "WRITTEN" => CallAnswer::Written,
            "ALREADY" => CallAnswer::Stored {
                fingerprint: fingerprint(row.try_get(4)?)?,
                token: row.try_get(5)?,
                response: Arc::from(row.try_get::<&str, _>(6)?),
            },
            "LIMIT" => CallAnswer::KeysFull(KeyCounts {
                caller: count(7)?,
                caller_oldest: oldest(8)?,
                total: count(9)?,
                total_oldest: oldest(10)?,
            }),
            other => return Err(PgError::Corrupt(format!("opd_book_group answered {other}"))),
        };
        let call = row.try_get::<i32, _>(0)?;
        let slot = usize::try_from(call - 1)
            .ok()
            .and_then(|index| answers.get_mut(index))
            .ok_or_else(|| PgError::Corrupt(format!("opd_book_group answered call {call}")))?;
        *slot = Some(answer);
    }
    answers
        .into_iter()
        .map(|answer| {
            answer.ok_or_else(|| PgError::Corrupt("opd_book_group left a call unanswered".into()))
        })
        .collect()
}

/// Draws the next arrival sequence number.
pub async fn next_sequence(connection: &mut PgConnection) -> PgResult<u64> {
    let next: i64 = sqlx::query_scalar("SELECT nextval('token_sequence')")
        .fetch_one(connection)
        .await?;
    Ok(next as u64)
}

/// The doctor and date of a token's slot; `None` when no such token
/// exists.
pub async fn token_day(
    connection: &mut PgConnection,
    id: Uuid,
) -> PgResult<Option<(DoctorId, jiff::civil::Date)>> {
    let row = sqlx::query(
        "SELECT s.doctor_id, s.date FROM tokens t JOIN slots s ON s.slot_id = t.slot_id
         WHERE t.token_id = $1",
    )
    .bind(id)
    .fetch_optional(connection)
    .await?;
    row.map(|row| {
        Ok((
            parse(DoctorId::parse, row.try_get(0)?)?,
            parse(|raw| raw.parse().ok(), row.try_get(1)?)?,
        ))
    })
    .transpose()
}

/// The current status of a token known to exist.
pub async fn token_status(connection: &mut PgConnection, id: Uuid) -> PgResult<Status> {
    let status: String = sqlx::query_scalar("SELECT status FROM tokens WHERE token_id = $1")
        .bind(id)
        .fetch_one(connection)
        .await?;
    parse(Status::parse, &status)
}

/// Writes token changes as the engine made them: a creation inserts the
/// token's row, a later change updates its status, first check-in and
/// skips; each is one history row. Whether the token is active and whether
/// it holds a seat are written with its status, from the engine's
/// [`Status::is_active`] and [`Status::holds_seat`], for the queries that
/// select the tokens an engine is loaded with.
pub async fn write_token_changes(
    connection: &mut PgConnection,
    slot: &SlotSummary,
    changes: impl Iterator<Item = TokenChange<'_>>,
    ctx: &Context,
) -> PgResult<()> {
    for change in changes {
        if change.from.is_none() {
            sqlx::query(
                "INSERT INTO tokens (token_id, sequence, token_number, patient_id, slot_id, doctor_id, source, priority, status, active, seated, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
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
            .bind(change.to.is_active())
            .bind(change.to.holds_seat())
            .bind(nanos(ctx.at))
            .execute(&mut *connection)
            .await?;
        } else {
            sqlx::query(
                "UPDATE tokens SET status = $2, active = $3, seated = $4, checked_in_at = $5,
                        skips = $6, updated_at = $7 WHERE token_id = $1",
            )
            .bind(change.token)
            .bind(change.to.as_str())
            .bind(change.to.is_active())
            .bind(change.to.holds_seat())
            .bind(change.checked_in_at.map(nanos))
            .bind(i16::from(change.skips))
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
) -> PgResult<()> {
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

/// Takes `count` event ids, the next after the newest handed out, and
/// returns the first. The head row stays locked until the transaction
/// ends, so transactions commit in the order of their ids: take the ids as
/// the last write before the commit, to hold the lock for as short a time
/// as the commit allows.
pub async fn take_event_ids(connection: &mut PgConnection, count: u64) -> PgResult<u64> {
    let last: i64 =
        sqlx::query_scalar("UPDATE event_log_head SET last_id = last_id + $1 RETURNING last_id")
            .bind(count as i64)
            .fetch_one(connection)
            .await?;
    Ok(last as u64 + 1 - count)
}

/// Makes the next event id at least `last + 1`; ids the log lost are then
/// never handed out again.
pub async fn skip_event_ids_to(connection: &mut PgConnection, last: u64) -> PgResult<()> {
    sqlx::query("UPDATE event_log_head SET last_id = $1 WHERE last_id < $1")
        .bind(last as i64)
        .execute(connection)
        .await?;
    Ok(())
}

/// Writes events into the log.
pub async fn insert_events(connection: &mut PgConnection, events: &[Event]) -> PgResult<()> {
    for event in events {
        let query = sqlx::query(
            "INSERT INTO events (id, at, actor, kind, slot_id, doctor_id, date, reason,
                                 token_id, token_number, source, from_status, to_status,
                                 start_time, end_time, capacity, allocated, waitlisted, closes_at, closed,
                                 estimated_call_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                     $19, $20, $21)",
        )
        .bind(event.id as i64)
        .bind(nanos(event.at))
        .bind(&*event.actor);
        let query = match &event.kind {
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
            } => query
                .bind("TOKEN")
                .bind(slot.as_str())
                .bind(doctor.as_str())
                .bind(date.to_string())
                .bind(reason.as_str())
                .bind(Some(*token))
                .bind(Some(*number as i32))
                .bind(Some(source.as_str()))
                .bind(from.map(Status::as_str))
                .bind(Some(to.as_str()))
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(None::<i32>)
                .bind(None::<i32>)
                .bind(None::<i32>)
                .bind(None::<i64>)
                .bind(None::<bool>)
                .bind(estimate.map(nanos)),
            EventKind::Slot { reason, slot } => query
                .bind("SLOT")
                .bind(slot.id.as_str())
                .bind(slot.doctor.as_str())
                .bind(slot.date.to_string())
                .bind(reason.as_str())
                .bind(None::<Uuid>)
                .bind(None::<i32>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(Some(slot.start.strftime("%H:%M").to_string()))
                .bind(Some(slot.end.strftime("%H:%M").to_string()))
                .bind(Some(slot.capacity as i32))
                .bind(Some(slot.allocated as i32))
                .bind(Some(slot.waitlisted as i32))
                .bind(Some(nanos(slot.closes_at)))
                .bind(Some(slot.closed))
                .bind(None::<i64>),
        };
        query.execute(&mut *connection).await?;
    }
    Ok(())
}

/// Keeps the slot's counters, read by listings, in step with its queues.
pub async fn write_counts(connection: &mut PgConnection, slot: &SlotSummary) -> PgResult<()> {
    sqlx::query("UPDATE slots SET allocated_count = $2, waitlist_count = $3 WHERE slot_id = $1")
        .bind(slot.id.as_str())
        .bind(slot.allocated as i32)
        .bind(slot.waitlisted as i32)
        .execute(connection)
        .await?;
    Ok(())
}

/// Records that a slot closed, and when.
pub async fn write_closed(connection: &mut PgConnection, slot: &SlotSummary) -> PgResult<()> {
    sqlx::query("UPDATE slots SET closed_at = $2 WHERE slot_id = $1")
        .bind(slot.id.as_str())
        .bind(nanos(slot.closes_at))
        .execute(connection)
        .await?;
    Ok(())
}

/// Records that the doctor's slots of `date` whose date has ended by `at`
/// have had their day's end handled.
pub async fn write_days_ended(
    connection: &mut PgConnection,
    doctor: &DoctorId,
    date: jiff::civil::Date,
    at: Timestamp,
) -> PgResult<()> {
    sqlx::query(
        "UPDATE slots SET day_ended = TRUE
         WHERE doctor_id = $1 AND date = $2 AND day_ends_at <= $3 AND NOT day_ended",
    )
    .bind(doctor.as_str())
    .bind(date.to_string())
    .bind(nanos(at))
    .execute(connection)
    .await?;
    Ok(())
}

/// Doctors' days with a slot to close or a day to end by `at`, at most
/// `limit`, earliest first.
pub async fn due_days(
    connection: &mut PgConnection,
    at: Timestamp,
    limit: usize,
) -> PgResult<Vec<(DoctorId, jiff::civil::Date)>> {
    let rows = sqlx::query(
        "SELECT doctor_id, date, min(due) FROM (
             SELECT doctor_id, date, closes_at AS due FROM slots WHERE closed_at IS NULL AND closes_at <= $1
             UNION ALL
             SELECT doctor_id, date, day_ends_at FROM slots WHERE NOT day_ended AND day_ends_at <= $1
         ) AS due GROUP BY doctor_id, date ORDER BY 3 LIMIT $2",
    )
    .bind(nanos(at))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(connection)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                parse(DoctorId::parse, row.try_get(0)?)?,
                parse(|raw| raw.parse().ok(), row.try_get(1)?)?,
            ))
        })
        .collect()
}

/// Records a slot's new capacity.
pub async fn write_capacity(connection: &mut PgConnection, slot: &SlotSummary) -> PgResult<()> {
    sqlx::query("UPDATE slots SET capacity = $2 WHERE slot_id = $1")
        .bind(slot.id.as_str())
        .bind(slot.capacity as i32)
        .execute(connection)
        .await?;
    Ok(())
}

pub async fn slot_exists(connection: &mut PgConnection, id: &SlotId) -> PgResult<bool> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM slots WHERE slot_id = $1")
        .bind(id.as_str())
        .fetch_optional(connection)
        .await?;
    Ok(exists.is_some())
}

/// The earliest of the doctor's slots that day whose time overlaps the
/// new slot's.
pub async fn overlapping_slot(
    connection: &mut PgConnection,
    spec: &SlotSpec,
) -> PgResult<Option<SlotId>> {
    let overlapping: Option<String> = sqlx::query_scalar(
        "SELECT slot_id FROM slots WHERE doctor_id = $1 AND date = $2 AND start_time < $4 AND end_time > $3
         ORDER BY start_time LIMIT 1",
    )
    .bind(spec.doctor.as_str())
    .bind(spec.date.to_string())
    .bind(time(spec.start))
    .bind(time(spec.end))
    .fetch_optional(connection)
    .await?;
    overlapping
        .map(|existing| parse(SlotId::parse, &existing))
        .transpose()
}

/// Inserts a slot with when it closes and when its date ends; `false`
/// when a slot with its id exists already.
pub async fn insert_slot(
    connection: &mut PgConnection,
    spec: &SlotSpec,
    at: Timestamp,
    closes_at: Timestamp,
    day_ends_at: Timestamp,
) -> PgResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO slots (slot_id, doctor_id, date, start_time, end_time, capacity, created_at,
                            closes_at, day_ends_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (slot_id) DO NOTHING",
    )
    .bind(spec.id.as_str())
    .bind(spec.doctor.as_str())
    .bind(spec.date.to_string())
    .bind(time(spec.start))
    .bind(time(spec.end))
    .bind(spec.capacity.get() as i32)
    .bind(nanos(at))
    .bind(nanos(closes_at))
    .bind(nanos(day_ends_at))
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

const SUMMARY_COLUMNS: &str =
    "SELECT slot_id, doctor_id, date, start_time, end_time, capacity, allocated_count, waitlist_count,
            coalesce(closed_at, closes_at), closed_at IS NOT NULL FROM slots";

pub async fn slot_summary(
    connection: &mut PgConnection,
    id: &SlotId,
) -> PgResult<Option<SlotSummary>> {
    let row = sqlx::query(&format!("{SUMMARY_COLUMNS} WHERE slot_id = $1"))
        .bind(id.as_str())
        .fetch_optional(connection)
        .await?;
    row.as_ref().map(summary).transpose()
}

/// One page of slots, as [`crate::engine::Engine::slots`] lists them;
/// `None` when the query's cursor names no slot.
pub async fn slot_page(
    connection: &mut PgConnection,
    query: &SlotQuery,
) -> PgResult<Option<SlotPage>> {
    // Slots are never deleted and never move, so the cursor slot's place
    // needs no snapshot shared with the page.
    let after = match &query.after {
        Some(after) => {
            let row = sqlx::query("SELECT date, start_time FROM slots WHERE slot_id = $1")
                .bind(after.as_str())
                .fetch_optional(&mut *connection)
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let date: String = row.try_get(0)?;
            let start: String = row.try_get(1)?;
            Some((date, start, after.as_str()))
        }
        None => None,
    };
    // One more row than the page tells whether more follow.
    let rows = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
    let found = sqlx::query(&format!(
        "{SUMMARY_COLUMNS} WHERE ($1::text IS NULL OR doctor_id = $1) AND ($2::text IS NULL OR date = $2)
         AND ($3::text IS NULL OR (date, start_time, slot_id) > ($3, $4, $5))
         ORDER BY date, start_time, slot_id LIMIT $6"
    ))
    .bind(query.doctor.as_ref().map(DoctorId::as_str))
    .bind(query.date.map(|date| date.to_string()))
    .bind(after.as_ref().map(|after| after.0.as_str()))
    .bind(after.as_ref().map(|after| after.1.as_str()))
    .bind(after.as_ref().map(|after| after.2))
    .bind(rows)
    .fetch_all(connection)
    .await?;
    let mut slots = found.iter().map(summary).collect::<PgResult<Vec<_>>>()?;
    let more = slots.len() > query.limit;
    slots.truncate(query.limit);
    Ok(Some(SlotPage { slots, more }))
}

/// A token as shown to clients, with its waitlist position while it
/// waits.
/// The columns [`token_row`] reads, from `tokens t JOIN slots s`.
const TOKEN_COLUMNS: &str =
    "SELECT t.token_id, t.sequence, t.token_number, t.patient_id, t.slot_id, t.doctor_id, s.date,
            t.source, t.status, t.created_at, t.updated_at, t.priority, t.checked_in_at, t.skips
     FROM tokens t JOIN slots s ON s.slot_id = t.slot_id";

/// The tokens of a slot that ended without a seat (cancelled, no-shows,
/// expired), in arrival order.
pub async fn ended_tokens(
    connection: &mut PgConnection,
    slot: &SlotId,
) -> PgResult<Vec<TokenView>> {
    let rows = sqlx::query(&format!(
        "{TOKEN_COLUMNS} WHERE t.slot_id = $1 AND NOT t.active AND NOT t.seated ORDER BY t.sequence"
    ))
    .bind(slot.as_str())
    .fetch_all(&mut *connection)
    .await?;
    rows.iter().map(|row| token_row(row, None)).collect()
}

pub async fn token_view(connection: &mut PgConnection, id: Uuid) -> PgResult<Option<TokenView>> {
    let row = sqlx::query(&format!("{TOKEN_COLUMNS} WHERE t.token_id = $1"))
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let status = parse(Status::parse, row.try_get(8)?)?;
    let sequence: i64 = row.try_get(1)?;
    let priority: i16 = row.try_get(11)?;
    let waitlist_position = if status.is_waiting() {
        // The waiting tokens of the slot (active, in this token's status)
        // up to this one in promotion order.
        let ahead: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tokens WHERE slot_id = $1 AND active AND status = $2
             AND (priority < $3 OR (priority = $3 AND sequence <= $4))",
        )
        .bind(row.try_get::<&str, _>(4)?)
        .bind(status.as_str())
        .bind(priority)
        .bind(sequence)
        .fetch_one(&mut *connection)
        .await?;
        Some(ahead as u32)
    } else {
        None
    };
    token_row(&row, waitlist_position).map(Some)
}

/// A token as [`TOKEN_COLUMNS`] reads it, with its waitlist position.
fn token_row(row: &PgRow, waitlist_position: Option<u32>) -> PgResult<TokenView> {
    let status = parse(Status::parse, row.try_get(8)?)?;
    Ok(TokenView {
        id: row.try_get(0)?,
        sequence: row.try_get::<i64, _>(1)? as u64,
        number: row.try_get::<i32, _>(2)? as u32,
        patient: parse(PatientId::parse, row.try_get(3)?)?,
        slot: parse(SlotId::parse, row.try_get(4)?)?,
        doctor: parse(DoctorId::parse, row.try_get(5)?)?,
        date: parse(|raw| raw.parse().ok(), row.try_get(6)?)?,
        source: parse(Source::parse, row.try_get(7)?)?,
        status,
        waitlist_position,
        checked_in_at: row
            .try_get::<Option<i64>, _>(12)?
            .map(timestamp)
            .transpose()?,
        skips: u8::try_from(row.try_get::<i16, _>(13)?)
            .map_err(|_| PgError::Corrupt("a skip count out of range".into()))?,
        // A checked-in token's place in its doctor's call order is read
        // from the doctor's day loaded into an engine (see the service).
        queue_position: None,
        estimated_call_at: None,
        created_at: timestamp(row.try_get(9)?)?,
        updated_at: timestamp(row.try_get(10)?)?,
    })
}

/// A token's history, oldest first.
pub async fn token_history(connection: &mut PgConnection, id: Uuid) -> PgResult<Vec<HistoryEntry>> {
    sqlx::query(
        "SELECT at, from_status, to_status, reason, actor FROM token_history WHERE token_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(connection)
    .await?
    .iter()
    .map(history_entry)
    .collect()
}

fn summary(row: &PgRow) -> PgResult<SlotSummary> {
    Ok(SlotSummary {
        id: parse(SlotId::parse, row.try_get(0)?)?,
        doctor: parse(DoctorId::parse, row.try_get(1)?)?,
        date: parse(|raw| raw.parse().ok(), row.try_get(2)?)?,
        start: parse(|raw| raw.parse().ok(), row.try_get(3)?)?,
        end: parse(|raw| raw.parse().ok(), row.try_get(4)?)?,
        capacity: row.try_get::<i32, _>(5)? as u32,
        allocated: row.try_get::<i32, _>(6)? as u32,
        waitlisted: row.try_get::<i32, _>(7)? as u32,
        closes_at: timestamp(row.try_get(8)?)?,
        closed: row.try_get(9)?,
    })
}

fn history_entry(row: &PgRow) -> PgResult<HistoryEntry> {
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

fn postgres_error(error: sqlx::Error) -> StoreError {
    StoreError::Postgres(error.to_string())
}

fn parse<T>(parse: impl Fn(&str) -> Option<T>, raw: &str) -> PgResult<T> {
    parse(raw).ok_or_else(|| PgError::Corrupt(format!("unexpected stored value {raw:?}")))
}

fn timestamp(nanos: i64) -> PgResult<Timestamp> {
    from_nanos(nanos).ok_or_else(|| PgError::Corrupt("timestamp out of range".into()))
}

fn time(time: jiff::civil::Time) -> String {
    time.strftime("%H:%M").to_string()
}

#[cfg(test)]
mod tests {
    use super::{rows_of_each, Hosts, EVENT_COLUMNS, EVENT_FIELDS};

    #[test]
    fn each_copy_finds_its_own_rows_and_a_gone_slot_none() {
        assert_eq!(
            rows_of_each(&[1, 1, 3, 4, 4, 4], 5),
            [0..2, 2..2, 2..3, 3..6, 6..6]
        );
        assert_eq!(rows_of_each(&[], 2), [0..0, 0..0]);
        assert_eq!(rows_of_each(&[2], 2), [0..0, 0..1]);
    }

    #[test]
    fn the_count_of_event_columns_is_the_count_named() {
        assert_eq!(EVENT_COLUMNS.split(',').count(), EVENT_FIELDS);
    }

    fn hosts(url: &str) -> Vec<(String, u16, Option<String>, Option<String>)> {
        Hosts::parse(url)
            .unwrap()
            .options
            .iter()
            .map(|options| {
                (
                    options.get_host().to_owned(),
                    options.get_port(),
                    Some(options.get_username().to_owned()),
                    options.get_database().map(str::to_owned),
                )
            })
            .collect()
    }

    #[test]
    fn a_multi_host_url_gives_one_set_of_options_per_host_in_its_order() {
        let url = "postgres://app@127.0.0.1:6002,127.0.0.1:6001/test\
                   ?target_session_attrs=read-write&sslmode=prefer";
        assert_eq!(
            hosts(url),
            [
                (
                    "127.0.0.1".into(),
                    6002,
                    Some("app".into()),
                    Some("test".into())
                ),
                (
                    "127.0.0.1".into(),
                    6001,
                    Some("app".into()),
                    Some("test".into())
                ),
            ]
        );
        assert!(Hosts::parse(url).unwrap().read_write);
    }

    #[test]
    fn several_hosts_always_look_for_the_one_that_accepts_writes() {
        let parsed = Hosts::parse("postgres://a:1,b:2/db").unwrap();
        assert!(parsed.read_write);
        assert!(!Hosts::parse("postgres://a:1/db").unwrap().read_write);
        let primary = Hosts::parse("postgres://a:1/db?target_session_attrs=primary").unwrap();
        assert!(primary.read_write);
    }

    #[test]
    fn target_session_attrs_that_would_not_write_are_refused() {
        for url in [
            "postgres://a:1,b:2/db?target_session_attrs=any",
            "postgres://a:1,b:2/db?target_session_attrs=standby",
            "postgres://a:1/db?target_session_attrs=read-only",
            "postgres://a:1,,b:2/db",
            "a:1/db",
        ] {
            assert!(Hosts::parse(url).is_err(), "{url}");
        }
    }
}
