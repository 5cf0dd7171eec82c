//! Durability: changes decided by the engine are written to an embedded
//! SQLite database before they are acknowledged.
//!
//! The [`Journal`] is an ordered queue in front of one writer thread. The
//! service appends each change while it still holds the engine lock, so the
//! queue is in engine order; the writer commits whatever has queued up in
//! one transaction and one fsync (group commit) and then wakes every waiter
//! whose ticket is now durable. A failed commit marks the journal failed for
//! good: the service then refuses writes, and a restart rebuilds from what
//! is on disk.

pub mod backup;
pub mod events;
pub mod postgres;
mod sqlite;

pub use events::{Event, EventBus, EventKind, Page};
pub use sqlite::Scope;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::engine::{
    Absence, Actor, Context, Engine, Limits, Outcome, SlotOutcome, SlotSummary, Timed,
};

/// How long idempotency keys are remembered at the least. A key older than
/// this is forgotten: used again, it books as a new key.
pub const IDEMPOTENCY_RETENTION: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// The SHA-256 digest of a request's canonical form. Only the digest is
/// kept, so a remembered key costs the same whatever the request carried.
pub type Fingerprint = [u8; 32];

/// One change to make durable, as the engine reported it.
#[derive(Debug, Clone)]
pub enum Record {
    SlotCreated {
        slot: SlotSummary,
        ctx: Context,
    },
    Booked {
        outcome: Outcome,
        ctx: Context,
        idempotency: Option<StoredIdempotency>,
    },
    Acted {
        outcome: Outcome,
        ctx: Context,
    },
    CapacityChanged {
        outcome: SlotOutcome,
        ctx: Context,
    },
    SlotClosed {
        outcome: SlotOutcome,
        ctx: Context,
    },
    /// A doctor's absence: the doctor's slots of a date closed and their
    /// tokens cancelled.
    Absence {
        absence: Absence,
        ctx: Context,
    },
    /// What the clock made due, done at one moment by the system.
    Timed {
        done: Vec<Timed>,
        ctx: Context,
    },
}

/// The first answer to an idempotent booking, kept to replay it.
#[derive(Debug, Clone)]
pub struct StoredIdempotency {
    /// The name of the API key that used the key: keys are scoped by
    /// caller, so one desk can neither replay nor probe another's.
    pub caller: Actor,
    pub key: String,
    /// The digest of the canonical request the key was first used with.
    pub fingerprint: Fingerprint,
    pub token: Uuid,
    pub response: Arc<str>,
    pub stored_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored value has the wrong type: {0}")]
    Column(#[from] rusqlite::types::FromSqlError),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Inconsistent(#[from] crate::engine::RestoreError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("the data directory {0} is in use by another server")]
    InUse(String),
    /// The database was migrated by a newer release than this one: serving
    /// it would read and write a schema this code does not know.
    #[error(
        "the database is at schema version {found}, newer than this release's {known}: \
         it was upgraded by a newer release; run that release, or restore the backup \
         taken before the upgrade"
    )]
    TooNew { found: usize, known: usize },
}

/// Where storage reports its commits: handles of the application's
/// metrics, each an atomic counter or a lock-free sample list, so that
/// recording holds nothing up. The default records nothing.
#[derive(Clone)]
pub struct StorageMetrics {
    /// Seconds one commit took: the journal writer's transaction with its
    /// fsync, or a PostgreSQL `COMMIT`.
    pub commit_duration: metrics::Histogram,
    /// Changes one commit made durable.
    pub batch_size: metrics::Histogram,
    /// PostgreSQL transactions tried again after losing a race, by the
    /// SQLSTATE they lost with.
    pub retries: Vec<(&'static str, metrics::Counter)>,
    /// PostgreSQL bookings decided on an instance's copy of a slot that
    /// another change had made stale, so written nothing and decided again.
    pub stale_copies: metrics::Counter,
    /// PostgreSQL slots read whole for an instance's copy: read first, or
    /// again when the copy could not be brought up by its changes.
    pub copy_reads: metrics::Counter,
    /// PostgreSQL copies brought up to date by reading what changed, by a
    /// booking about to decide on one.
    pub copy_refreshes: metrics::Counter,
    /// PostgreSQL copies brought up to date by the event follower, for
    /// all the slots one read of the log showed changed at once.
    pub follower_copy_refreshes: metrics::Counter,
}

impl Default for StorageMetrics {
    fn default() -> StorageMetrics {
        StorageMetrics {
            commit_duration: metrics::Histogram::noop(),
            batch_size: metrics::Histogram::noop(),
            retries: Vec::new(),
            stale_copies: metrics::Counter::noop(),
            copy_reads: metrics::Counter::noop(),
            copy_refreshes: metrics::Counter::noop(),
            follower_copy_refreshes: metrics::Counter::noop(),
        }
    }
}

impl StorageMetrics {
    /// Records one commit of `changes` that took `took`.
    pub fn commit(&self, changes: usize, took: std::time::Duration) {
        self.commit_duration.record(took.as_secs_f64());
        self.batch_size.record(changes as f64);
    }

    /// Counts a retry after the database answered `sqlstate`.
    pub fn retried(&self, sqlstate: &str) {
        if let Some((_, counter)) = self.retries.iter().find(|(code, _)| *code == sqlstate) {
            counter.increment(1);
        }
    }
}

/// Where backups are counted: handles of the application's metrics, like
/// [`StorageMetrics`]. The default records nothing.
#[derive(Clone)]
pub struct BackupMetrics {
    /// When the newest backup that succeeded was taken, in seconds since
    /// the Unix epoch (by the service's clock).
    pub last_success: metrics::Gauge,
    /// How long the newest successful backup took, in seconds.
    pub last_duration: metrics::Gauge,
    /// The newest successful backup's size, in bytes.
    pub last_bytes: metrics::Gauge,
    /// Backups that failed.
    pub failures: metrics::Counter,
}

impl Default for BackupMetrics {
    fn default() -> BackupMetrics {
        BackupMetrics {
            last_success: metrics::Gauge::noop(),
            last_duration: metrics::Gauge::noop(),
            last_bytes: metrics::Gauge::noop(),
            failures: metrics::Counter::noop(),
        }
    }
}

impl BackupMetrics {
    pub fn succeeded(&self, backup: &backup::BackupInfo) {
        self.last_success
            .set(backup.taken_at.as_millisecond() as f64 / 1_000.0);
        self.last_duration.set(backup.duration.as_secs_f64());
        self.last_bytes.set(backup.bytes as f64);
    }

    pub fn failed(&self) {
        self.failures.increment(1);
    }
}

/// Stored instants are integer nanoseconds since the Unix epoch, so a
/// reload renders them exactly as they were first answered.
pub(crate) fn nanos(at: Timestamp) -> i64 {
    i64::try_from(at.as_nanosecond()).expect("timestamps before 2262 fit in i64 nanoseconds")
}

pub(crate) fn from_nanos(nanos: i64) -> Option<Timestamp> {
    Timestamp::from_nanosecond(i128::from(nanos)).ok()
}

/// What the writer has achieved so far.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Every ticket up to this one is durable.
    durable: u64,
    failed: bool,
}

/// The durable queue of changes. Cheap to share behind the service.
pub struct Journal {
    /// Bounded: a writer that falls behind (a stalled disk) holds back new
    /// changes, which are refused before they are made, instead of letting
    /// the queue grow without limit.
    queue: mpsc::Sender<Job>,
    last_ticket: AtomicU64,
    progress: watch::Receiver<Progress>,
}

/// Records that may wait for the writer at once. A commit takes up to
/// [`BATCH_MAX`], so this holds four commits' worth.
pub const QUEUE_MAX: usize = 4 * BATCH_MAX;

/// What the writer thread is asked to do, in order.
// Writes are nearly every job and reads are rare: boxing the large variant
// would cost every change an allocation to save a few bytes per queued read.
#[allow(clippy::large_enum_variant)]
enum Job {
    Write(Queued),
    /// Reads the event log after everything queued before it is durable.
    ReadEvents {
        after: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Page, StoreError>>,
    },
    /// Reads the events a day's report is made of, the same way.
    ReadReport {
        date: jiff::civil::Date,
        reply: oneshot::Sender<Result<Vec<Event>, StoreError>>,
    },
    /// Reads slots of days the engine does not hold into an engine of
    /// their own, the same way.
    ReadSlots {
        scope: Scope,
        limits: Limits,
        reply: oneshot::Sender<Result<Option<Engine>, StoreError>>,
    },
    /// Records that the days before this date left the engine, after
    /// every change queued before it is durable.
    Evict(jiff::civil::Date),
    /// Copies the database into a file, between commits (see [`backup`]).
    Backup(BackupJob),
}

/// A backup the writer is asked to copy: the file to write, and where to
/// answer with the newest event id the copy holds.
struct BackupJob {
    target: PathBuf,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// A record on its way to the writer.
struct Queued {
    ticket: u64,
    record: Record,
    /// The id of the record's first event; its events take the ids after.
    first_event: u64,
    /// Tells the record's waiter it is durable.
    done: oneshot::Sender<()>,
}

/// A place in the writer's queue, taken before a change is decided so that
/// a full queue refuses the change before it is made.
pub struct Reservation<'a> {
    permit: mpsc::Permit<'a, Job>,
    journal: &'a Journal,
}

/// A place in the writer's queue for the record that the days before a
/// date left the engine.
pub struct Eviction<'a>(mpsc::Permit<'a, Job>);

impl Eviction<'_> {
    /// Queues the record that the days before `before` left the engine:
    /// after the changes queued before it are durable, storage indexes
    /// their tokens' ids for reads by id.
    pub fn send(self, before: jiff::civil::Date) {
        self.0.send(Job::Evict(before));
    }
}

/// The journal takes no record now: its queue is full, or its writer
/// stopped after a failure. The change was not made.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the journal takes no more records now")]
pub struct NotAccepting;

/// What a change or a read waits on before it is answered.
pub enum Ticket {
    /// An appended record: the writer signals exactly this waiter, so a
    /// commit wakes the requests it made durable and no others.
    Appended(oneshot::Receiver<()>),
    /// A read: everything up to this ticket number must be durable.
    Barrier(u64),
}

/// The journal failed before this ticket became durable.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the change could not be made durable")]
pub struct NotDurable;

impl Reservation<'_> {
    /// Queues a record, whose events take the ids from `first_event` on,
    /// and returns the ticket to wait on. Callers append in engine order
    /// (under the engine's write lock), so ticket order, queue order and
    /// event id order are one order.
    pub fn append(self, record: Record, first_event: u64) -> Ticket {
        let (done, signal) = oneshot::channel();
        let ticket = self.journal.last_ticket.fetch_add(1, Ordering::SeqCst) + 1;
        self.permit.send(Job::Write(Queued {
            ticket,
            record,
            first_event,
            done,
        }));
        Ticket::Appended(signal)
    }
}

impl Journal {
    /// The log's events after `after`, at most `limit`, once every change
    /// queued before this call is durable. The writer thread owns the only
    /// connection, so it reads between commits.
    pub async fn read_events(&self, after: u64, limit: usize) -> Result<Page, NotAccepting> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Job::ReadEvents {
                after,
                limit,
                reply,
            })
            .map_err(|_| NotAccepting)?;
        match answer.await {
            Ok(Ok(page)) => Ok(page),
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot read the event log");
                Err(NotAccepting)
            }
            Err(_) => Err(NotAccepting),
        }
    }

    /// The events the report of `date` is made of (token events and slot
    /// creations, kept or still in the log, in id order), once every
    /// change queued before this call is durable.
    pub async fn read_report_events(
        &self,
        date: jiff::civil::Date,
    ) -> Result<Vec<Event>, NotAccepting> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Job::ReadReport { date, reply })
            .map_err(|_| NotAccepting)?;
        match answer.await {
            Ok(Ok(events)) => Ok(events),
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot read the events of a day's report");
                Err(NotAccepting)
            }
            Err(_) => Err(NotAccepting),
        }
    }

    /// An engine of its own holding the slots of `scope` with their tokens
    /// as storage has them, once every change queued before this call is
    /// durable; `None` when no slot matches. This is how days the engine
    /// no longer holds are read: the same engine answers as it would have.
    pub async fn read_slots(
        &self,
        scope: Scope,
        limits: Limits,
    ) -> Result<Option<Engine>, NotAccepting> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Job::ReadSlots {
                scope,
                limits,
                reply,
            })
            .map_err(|_| NotAccepting)?;
        match answer.await {
            Ok(Ok(engine)) => Ok(engine),
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot read the slots of an old day");
                Err(NotAccepting)
            }
            Err(_) => Err(NotAccepting),
        }
    }

    /// Takes a place in the queue for the record that days left the
    /// engine. Send it under the engine's lock as they leave, so that any
    /// read that finds them gone queues after it.
    pub fn reserve_eviction(&self) -> Result<Eviction<'_>, NotAccepting> {
        let permit = self.queue.try_reserve().map_err(|_| NotAccepting)?;
        Ok(Eviction(permit))
    }

    /// Copies the database into a new backup in `dir`, named after `at`,
    /// while changes go on being made durable: the writer thread copies a
    /// bounded number of pages at a time and commits what has queued up in
    /// between. The copy is flushed to disk and renamed only once
    /// complete. One backup at a time: the caller keeps them apart.
    pub async fn backup(
        &self,
        dir: &Path,
        at: Timestamp,
    ) -> Result<backup::BackupInfo, backup::BackupError> {
        let started = std::time::Instant::now();
        let dir = dir.to_path_buf();
        let target = backup::partial_path(&dir, at);
        {
            let (dir, target) = (dir.clone(), target.clone());
            run_blocking(move || {
                backup::prepare(&dir)?;
                // A partial file of this second is a stopped backup's.
                match std::fs::remove_file(&target) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
                    _ => Ok(()),
                }
            })
            .await?;
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Job::Backup(BackupJob {
                target: target.clone(),
                reply,
            }))
            .map_err(|_| backup::BackupError::NotAccepting)?;
        let copied = match answer.await {
            Ok(copied) => copied,
            // The writer stopped (storage failed) before answering.
            Err(_) => Err(StoreError::Io(std::io::Error::other(
                "storage failed during the backup",
            ))),
        };
        let last_event = match copied {
            Ok(last_event) => last_event,
            Err(error) => {
                let _ = std::fs::remove_file(&target);
                return Err(error.into());
            }
        };
        let finished = {
            let (dir, target) = (dir.clone(), target.clone());
            run_blocking(move || backup::finish(&target, &dir, at, last_event)).await
        };
        let (path, bytes) = match finished {
            Ok(done) => done,
            Err(error) => {
                let _ = std::fs::remove_file(&target);
                return Err(error.into());
            }
        };
        Ok(backup::BackupInfo {
            path,
            bytes,
            last_event,
            duration: started.elapsed(),
            taken_at: at,
        })
    }

    /// Takes a place in the queue for the next record.
    pub fn reserve(&self) -> Result<Reservation<'_>, NotAccepting> {
        let permit = self.queue.try_reserve().map_err(|_| NotAccepting)?;
        Ok(Reservation {
            permit,
            journal: self,
        })
    }

    /// The newest ticket handed out: waiting on it covers every change
    /// made so far.
    pub fn barrier(&self) -> Ticket {
        Ticket::Barrier(self.last_ticket.load(Ordering::SeqCst))
    }

    pub async fn durable(&self, ticket: Ticket) -> Result<(), NotDurable> {
        let number = match ticket {
            // The writer drops the sender unsent when the commit fails, and
            // after a failure drops every record that still arrives.
            Ticket::Appended(done) => return done.await.map_err(|_| NotDurable),
            Ticket::Barrier(number) => number,
        };
        let mut progress = self.progress.clone();
        let reached = progress
            .wait_for(|p| p.durable >= number || p.failed)
            .await
            .map_err(|_| NotDurable)?;
        if reached.durable >= number {
            Ok(())
        } else {
            Err(NotDurable)
        }
    }

    /// `false` once a commit failed or the writer thread is gone.
    pub fn is_healthy(&self) -> bool {
        !self.progress.borrow().failed && self.progress.has_changed().is_ok()
    }
}

/// Everything needed to serve again after a restart.
pub struct Loaded {
    pub engine: Engine,
    /// The id of the newest event in the log; 0 when it is empty.
    pub last_event: u64,
    pub idempotency: Vec<StoredIdempotency>,
    pub journal: Journal,
    pub tokens: usize,
}

/// Opens (creating and migrating if needed) the database in `dir`, rebuilds
/// the engine from it, and starts the writer thread. The engine gets the
/// slots dated from `live_from` on, and those of older days that had not
/// left it when the server last stopped (their closing or day's end may
/// still be due); older days stay in storage.
/// `limit_bytes` caps the database's size: a commit that would pass it
/// fails like a full disk. The files hold patient ids and their history,
/// so a new directory is private to the server's user and the database
/// files always are (see [`prepare_dir`] and [`protect_files`]).
pub fn open(
    dir: &Path,
    limits: Limits,
    limit_bytes: Option<u64>,
    now: Timestamp,
    live_from: jiff::civil::Date,
    events: &EventBus,
    metrics: StorageMetrics,
) -> Result<Loaded, StoreError> {
    prepare_dir(dir)?;
    let path = dir.join(DATABASE_FILE);
    protect_files(&path)?;
    // One connection, locked for this process from here on, migrates,
    // loads and then writes.
    let mut connection = sqlite::connect(&path, limit_bytes).map_err(|error| in_use(error, dir))?;
    sqlite::migrate(&mut connection)?;
    let since = sqlite::evicted_before(&connection)?.min(live_from);
    let snapshot = sqlite::load(&connection, since, now - IDEMPOTENCY_RETENTION)?;
    let tokens = snapshot.slots.tokens.len();
    let engine = build_engine(limits, snapshot.slots)?;

    let (sender, receiver) = mpsc::channel(QUEUE_MAX);
    let (progress_sender, progress) = watch::channel(Progress::default());
    let bus = events.clone();
    std::thread::Builder::new()
        .name("opd-journal".into())
        .spawn(move || write_loop(connection, receiver, progress_sender, bus, metrics))?;
    Ok(Loaded {
        engine,
        last_event: snapshot.last_event,
        idempotency: snapshot.idempotency,
        journal: Journal {
            queue: sender,
            last_ticket: AtomicU64::new(0),
            progress,
        },
        tokens,
    })
}

/// An engine holding the given slots and tokens, checked whole.
fn build_engine(limits: Limits, slots: sqlite::Slots) -> Result<Engine, StoreError> {
    let mut engine = Engine::new(limits);
    for (slot, closed_at) in slots.slots {
        let id = slot.id.clone();
        engine
            .create_slot(slot)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        if let Some(at) = closed_at {
            engine.restore_closing(&id, at, true)?;
        }
    }
    for token in slots.tokens {
        engine.restore_token(token)?;
    }
    engine.check_invariants()?;
    Ok(engine)
}

/// The slots of `scope` in an engine of their own; `None` when there are
/// none.
fn read_slots(
    connection: &rusqlite::Connection,
    scope: &Scope,
    limits: Limits,
) -> Result<Option<Engine>, StoreError> {
    let slots = sqlite::load_slots(connection, scope)?;
    if slots.slots.is_empty() {
        return Ok(None);
    }
    build_engine(limits, slots).map(Some)
}

/// The database's file in a data directory.
pub const DATABASE_FILE: &str = "opd.sqlite3";

/// Says that the data directory is in use when SQLite found the database
/// locked by another process.
fn in_use(error: StoreError, dir: &Path) -> StoreError {
    match error {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
            if failure.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            StoreError::InUse(dir.display().to_string())
        }
        other => other,
    }
}

/// Runs blocking file work off the async workers.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| std::io::Error::other("the file task stopped"))?
}

/// Creates the data directory with mode 0700, whatever the umask, or warns
/// when an existing one lets other users in. An existing directory keeps
/// its mode: it was chosen by whoever runs the server, and may be shared on
/// purpose (a group that backs it up); the database files in it are
/// private either way.
fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        match std::fs::metadata(dir) {
            Ok(metadata) => {
                let mode = metadata.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        data_dir = %dir.display(),
                        mode = %format_args!("{mode:03o}"),
                        "the data directory is open to other users and holds patient data: chmod 700 it"
                    );
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
                // The umask applies to the mode given at creation.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
            Err(error) => return Err(error),
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// Makes the database file, and the log files SQLite keeps beside it,
/// readable and writable by the server's user only (0600), whatever the
/// umask. SQLite creates its `-wal` and `-shm` files with the main file's
/// permissions, so creating the main file (an empty file is an empty
/// database) with 0600 before SQLite opens it carries over to them; files
/// left by an earlier version with wider modes are narrowed. A file the
/// server may use but not change the mode of (another user's, shared
/// through a group) is warned about rather than refused.
fn protect_files(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        let mut log = path.as_os_str().to_owned();
        log.push("-wal");
        let mut index = path.as_os_str().to_owned();
        index.push("-shm");
        for file in [path.as_os_str(), &log, &index] {
            match std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => tracing::warn!(
                    file = %Path::new(file).display(),
                    %error,
                    "cannot make a database file private to the server's user"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The most records one transaction takes, so one commit stays short.
const BATCH_MAX: usize = 4_096;

/// Puts the calling writer thread under Linux's `SCHED_BATCH` policy: it
/// still gets its fair share of the CPU, but waking up no longer preempts
/// a running request worker. The writer wakes when the first record of a
/// batch arrives; preempting the worker then commits a batch of one or two
/// bookings, while waiting for the worker to yield lets it queue the rest
/// of the requests in flight first: fewer, larger commits, so fewer fsyncs
/// and thread switches (durable bookings 51-53k -> 55-59k/s on one core in
/// alternating runs). An idle CPU still runs the writer at once, so a lone
/// booking waits no longer than before.
fn use_batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param` and changes only the
        // scheduling policy of the calling thread (pid 0).
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if result != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "the journal writer keeps the default scheduling policy"
            );
        }
    }
}

fn write_loop(
    connection: rusqlite::Connection,
    mut queue: mpsc::Receiver<Job>,
    progress: watch::Sender<Progress>,
    bus: EventBus,
    metrics: StorageMetrics,
) {
    use_batch_scheduling();
    let mut writer = Writer {
        batch: Vec::with_capacity(BATCH_MAX),
        reads: Vec::new(),
        report_reads: Vec::new(),
        slot_reads: Vec::new(),
        evict: None,
        backups: Vec::new(),
        events: Vec::new(),
        pruning: sqlite::Pruning::default(),
        progress,
        bus,
        metrics,
    };
    // Blocks for the first job, then takes whatever else is waiting: the
    // longer a commit takes, the more the next one carries.
    while let Some(first) = queue.blocking_recv() {
        writer.take(first, &mut queue);
        let mut healthy = writer.flush(&connection);
        // Backups run after the commit they were queued behind, and take
        // their turns with whatever arrives meanwhile.
        while healthy {
            let Some(job) = writer.backups.pop() else {
                break;
            };
            healthy = writer.backup(&connection, job, &mut queue);
        }
        if !healthy {
            // Nothing more is written: the files and their lock are let go.
            drop(connection);
            refuse_the_rest(queue);
            return;
        }
    }
}

/// Where the writer answers a read.
type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// The writer thread's jobs taken from the queue and not yet done, and
/// where it tells what it made durable.
struct Writer {
    batch: Vec<Queued>,
    /// Event log reads: after which id, how many, and where to answer.
    reads: Vec<(u64, usize, Reply<Page>)>,
    report_reads: Vec<(jiff::civil::Date, Reply<Vec<Event>>)>,
    /// Reads of days the engine no longer holds.
    slot_reads: Vec<(Scope, Limits, Reply<Option<Engine>>)>,
    /// The latest date before which days left the engine, not yet
    /// recorded.
    evict: Option<jiff::civil::Date>,
    backups: Vec<BackupJob>,
    events: Vec<Event>,
    pruning: sqlite::Pruning,
    progress: watch::Sender<Progress>,
    bus: EventBus,
    metrics: StorageMetrics,
}

impl Writer {
    /// Takes `first` and whatever else is waiting, up to a batch's bound
    /// of records.
    fn take(&mut self, first: Job, queue: &mut mpsc::Receiver<Job>) {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write(queued) => self.batch.push(queued),
                Job::ReadEvents {
                    after,
                    limit,
                    reply,
                } => self.reads.push((after, limit, reply)),
                Job::ReadReport { date, reply } => self.report_reads.push((date, reply)),
                Job::ReadSlots {
                    scope,
                    limits,
                    reply,
                } => self.slot_reads.push((scope, limits, reply)),
                // Days leave in date order, so the latest date covers
                // every earlier one.
                Job::Evict(before) => self.evict = self.evict.max(Some(before)),
                Job::Backup(backup) => self.backups.push(backup),
            }
            if self.batch.len() < BATCH_MAX {
                next = queue.try_recv().ok();
            }
        }
    }

    /// Commits the batch taken, then answers the reads taken with it;
    /// `false` when the commit failed, after which nothing more is done.
    fn flush(&mut self, connection: &rusqlite::Connection) -> bool {
        if !self.batch.is_empty()
            && !commit_batch(
                connection,
                &mut self.batch,
                &mut self.events,
                &self.progress,
                &self.bus,
                &mut self.pruning,
                &self.metrics,
            )
        {
            // The failed batch's waiters, and the reads and backups queued
            // with it, are told now by dropping them.
            self.batch.clear();
            self.reads.clear();
            self.report_reads.clear();
            self.slot_reads.clear();
            self.backups.clear();
            return false;
        }
        // After the commit, so that the days' last changes are durable
        // first, and before the reads, so that a read of a day that left
        // the engine finds its tokens' ids indexed.
        if let Some(before) = self.evict.take() {
            if let Err(error) = sqlite::evict_before(connection, before) {
                // The days stay in storage and the next start indexes
                // them; until then their tokens are not found by id.
                tracing::error!(%error, %before, "cannot index the tokens of the days that left the engine");
            }
        }
        // After the commit, so a read sees every change queued before it,
        // and only durable ones.
        for (after, limit, reply) in self.reads.drain(..) {
            let _ = reply.send(sqlite::read_events(connection, after, limit));
        }
        for (date, reply) in self.report_reads.drain(..) {
            let _ = reply.send(sqlite::report_events(connection, date));
        }
        for (scope, limits, reply) in self.slot_reads.drain(..) {
            let _ = reply.send(read_slots(connection, &scope, limits));
        }
        true
    }

    /// Copies the database for `job`, committing whatever arrives between
    /// two steps of the copy; `false` when a commit failed.
    fn backup(
        &mut self,
        connection: &rusqlite::Connection,
        job: BackupJob,
        queue: &mut mpsc::Receiver<Job>,
    ) -> bool {
        let mut healthy = true;
        // One commit between two steps, of everything waiting: under a
        // steady load there is always more, and the copy must go on too.
        let copied = backup::copy(connection, &job.target, || {
            if let Ok(first) = queue.try_recv() {
                self.take(first, queue);
                if !self.flush(connection) {
                    healthy = false;
                    return false;
                }
            }
            true
        });
        if healthy {
            let answer = copied.and_then(|last_event| {
                last_event.ok_or_else(|| StoreError::Corrupt("the backup was stopped".into()))
            });
            let _ = job.reply.send(answer);
        }
        healthy
    }
}

/// After a failed commit: takes every job that still arrives and drops it,
/// so its waiter is told at once that it was not made durable. Closing the
/// queue instead would not do: a request that took its place before the
/// failure may still send into it, and its record would wait there, with
/// its waiter, for as long as the journal lives.
fn refuse_the_rest(mut queue: mpsc::Receiver<Job>) {
    while let Some(job) = queue.blocking_recv() {
        drop(job);
    }
}

/// Commits a batch and tells its waiters and the event bus; `false` when
/// the commit failed (the journal is then failed for good).
fn commit_batch(
    connection: &rusqlite::Connection,
    batch: &mut Vec<Queued>,
    events: &mut Vec<Event>,
    progress: &watch::Sender<Progress>,
    bus: &EventBus,
    pruning: &mut sqlite::Pruning,
    metrics: &StorageMetrics,
) -> bool {
    let last = batch.last().expect("batch is not empty").ticket;
    for queued in batch.iter() {
        events.extend(queued.record.events(queued.first_event));
    }
    let records: Vec<&Record> = batch.iter().map(|queued| &queued.record).collect();
    let started = std::time::Instant::now();
    match sqlite::commit(connection, &records, events, pruning) {
        Ok(()) => {
            metrics.commit(batch.len(), started.elapsed());
            progress.send_modify(|p| p.durable = last);
            for queued in batch.drain(..) {
                // The waiter may have gone (its client disconnected).
                let _ = queued.done.send(());
            }
            // Told only now that they are durable, one message for the
            // whole commit.
            if bus.has_subscribers() {
                bus.publish(std::mem::take(events));
            } else {
                events.clear();
            }
            true
        }
        Err(error) => {
            tracing::error!(%error, "commit failed; refusing writes until restart");
            progress.send_modify(|p| p.failed = true);
            false
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The scheduling policy (field 41 of `/proc/<pid>/task/<tid>/stat`) of
    /// every thread of this process with the given name.
    fn policies_of_threads_named(name: &str) -> Vec<u32> {
        let mut policies = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
                continue;
            };
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.join("stat")).unwrap();
            // The command name may hold spaces; fields after it do not.
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            let policy = after_name.split(' ').nth(41 - 3).unwrap();
            policies.push(policy.parse().unwrap());
        }
        policies
    }

    #[test]
    fn the_writer_thread_runs_under_sched_batch() {
        let dir = std::env::temp_dir().join(format!("opd-writer-{}", uuid::Uuid::new_v4()));
        let loaded = open(
            &dir,
            Limits::default(),
            None,
            Timestamp::UNIX_EPOCH,
            jiff::civil::Date::MIN,
            &EventBus::default(),
            StorageMetrics::default(),
        )
        .unwrap();
        // The writer sets its policy first thing; give it a moment to start.
        let mut policies = Vec::new();
        for _ in 0..100 {
            policies = policies_of_threads_named("opd-journal");
            if !policies.is_empty() && policies.iter().all(|&p| p == libc::SCHED_BATCH as u32) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!policies.is_empty(), "no writer thread found");
        assert!(
            policies.iter().all(|&p| p == libc::SCHED_BATCH as u32),
            "writer policies: {policies:?}"
        );
        drop(loaded);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
