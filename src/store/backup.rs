//! Online backups of the embedded database, and restoring one into a data
//! directory.
//!
//! The server holds its database with SQLite's exclusive lock, so nothing
//! outside the process can read it while it serves. A backup is therefore
//! taken by the journal's writer thread, on the writer's own connection,
//! with SQLite's online backup API: a bounded number of pages per step,
//! and whatever queued up (bookings, reads) is committed between two steps.
//! A commit made on the connection being backed up is copied into the
//! backup by SQLite as it is made, so the finished file is the database as
//! it stood after the last commit before the final step: a consistent
//! snapshot, whose newest event id is read from the copy itself.
//!
//! The copy is written under a temporary name (`….partial`), flushed to
//! disk, then renamed to its final name, which carries the time it was
//! taken and the id of the newest event it holds, so a directory of
//! backups sorts oldest first by name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{sqlite, StoreError};

/// Pages copied per step: 256 pages of 4 KiB (1 MiB) take about a
/// millisecond from the page cache, so a booking that arrives during a
/// step waits about that long before its commit.
pub(super) const PAGES_PER_STEP: std::os::raw::c_int = 256;

/// Every backup file's name starts with this and ends with
/// [`BACKUP_SUFFIX`]; nothing else in a backup directory is pruned.
const BACKUP_PREFIX: &str = "opd-backup-";
const BACKUP_SUFFIX: &str = ".sqlite3";
/// Where a backup is written until it is complete and on disk.
const PARTIAL_SUFFIX: &str = ".partial";
/// The time in a backup's name: UTC, to the second, sorting as text.
const STAMP_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// A finished backup.
#[derive(Debug, Clone)]
pub struct BackupInfo {
    /// The backup file, in the backup directory.
    pub path: PathBuf,
    pub bytes: u64,
    /// The id of the newest event the backup holds (0 when none): every
    /// change with an event up to this one is in it, none after.
    pub last_event: u64,
    /// From the request to the renamed, flushed file.
    pub duration: Duration,
    /// When it was taken, by the service's clock.
    pub taken_at: Timestamp,
}

/// Why a backup was not made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The journal took no job: its queue is full or storage has failed.
    #[error("storage is not accepting work now")]
    NotAccepting,
    #[error("cannot write the backup: {0}")]
    Failed(#[from] StoreError),
}

impl From<std::io::Error> for BackupError {
    fn from(error: std::io::Error) -> BackupError {
        BackupError::Failed(StoreError::Io(error))
    }
}

impl From<rusqlite::Error> for BackupError {
    fn from(error: rusqlite::Error) -> BackupError {
        BackupError::Failed(StoreError::Sqlite(error))
    }
}

/// The temporary file a backup taken at `at` is written to.
pub(super) fn partial_path(dir: &Path, at: Timestamp) -> PathBuf {
    dir.join(format!(
        "{BACKUP_PREFIX}{}{PARTIAL_SUFFIX}",
        at.strftime(STAMP_FORMAT)
    ))
}

/// The final name of a backup taken at `at` holding events up to
/// `last_event`; the event id is zero-padded so names sort by time, then
/// by id.
fn final_path(dir: &Path, at: Timestamp, last_event: u64) -> PathBuf {
    dir.join(format!(
        "{BACKUP_PREFIX}{}-e{last_event:020}{BACKUP_SUFFIX}",
        at.strftime(STAMP_FORMAT)
    ))
}

/// Copies the database behind `source` into a new file at `target`, a
/// bounded number of pages at a time; between steps `between` is called
/// to commit what has queued up, and stops the copy by returning `false`.
/// Returns the id of the newest event in the copy, or `None` when stopped.
///
/// The copy's own writes are not flushed here (they are written with
/// `synchronous = OFF`): the writer thread must not wait for a disk flush
/// of the whole file; [`finish`] flushes it on another thread.
pub(super) fn copy(
    source: &Connection,
    target: &Path,
    mut between: impl FnMut() -> bool,
) -> Result<Option<u64>, StoreError> {
    // The backup holds patient ids: private to the server's user, as the
    // database is.
    super::protect_files(target)?;
    let mut copy = Connection::open(target)?;
    copy.pragma_update(None, "synchronous", "OFF")?;
    copy.pragma_update(None, "journal_mode", "OFF")?;
    let written = std::fs::File::open(target)?;
    {
        let backup = Backup::new(source, &mut copy)?;
        loop {
            // More, or busy or locked, which cannot last: the source is
            // this very connection, which holds no lock between commits,
            // so the next step goes on.
            if let StepResult::Done = backup.step(PAGES_PER_STEP)? {
                break;
            }
            start_writeback(&written);
            if !between() {
                return Ok(None);
            }
        }
    }
    let last_event: i64 = copy.query_row("SELECT coalesce(max(id), 0) FROM events", [], |row| {
        row.get(0)
    })?;
    Ok(Some(last_event as u64))
}

/// Starts writing what the copy has written so far to the disk, without
/// waiting for it. Left to the final flush, a whole database's pages went
/// to the disk in one burst, and the commits queued behind it waited for
/// the burst; started step by step, they go out as the copy is made.
fn start_writeback(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the call's duration; the call
        // only asks the kernel to start writing the file's dirty pages.
        // A failure only leaves the pages to the final flush.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Flushes a copied backup to disk, gives it its final name and flushes
/// the directory, so a backup that has its name is complete.
pub(super) fn finish(
    partial: &Path,
    dir: &Path,
    at: Timestamp,
    last_event: u64,
) -> std::io::Result<(PathBuf, u64)> {
    let file = std::fs::File::open(partial)?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    let path = final_path(dir, at, last_event);
    std::fs::rename(partial, &path)?;
    sync_dir(dir)?;
    Ok((path, bytes))
}

/// Creates the backup directory, private to the server's user (backups
/// hold patient ids), if it does not exist.
pub(super) fn prepare(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The backups in `dir`, oldest first.
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut backups = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(backups),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if name.starts_with(BACKUP_PREFIX) && name.ends_with(BACKUP_SUFFIX) {
            backups.push(path);
        }
    }
    backups.sort();
    Ok(backups)
}

/// When the newest backup in `dir` was taken, from its name.
pub fn newest(dir: &Path) -> std::io::Result<Option<Timestamp>> {
    Ok(list(dir)?.last().and_then(|path| {
        let name = path.file_name()?.to_str()?;
        let stamp = name.strip_prefix(BACKUP_PREFIX)?.get(..16)?;
        jiff::civil::DateTime::strptime("%Y%m%dT%H%M%S", stamp.strip_suffix('Z')?)
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|zoned| zoned.timestamp())
    }))
}

/// Removes all but the newest `keep` backups of `dir`, and the partial
/// files of backups that never finished (the server was stopped during
/// one); returns the backups removed. Call it only while no backup runs.
pub fn prune(dir: &Path, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let backups = list(dir)?;
    let surplus = backups.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for path in backups.into_iter().take(surplus) {
        std::fs::remove_file(&path)?;
        removed.push(path);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let partial = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(BACKUP_PREFIX) && name.ends_with(PARTIAL_SUFFIX));
        if partial {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(removed)
}

/// What [`restore`] did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The database the server will start from.
    pub database: PathBuf,
    /// Where the database that was there before now is, if there was one.
    pub previous: Option<PathBuf>,
    /// The id of the newest event in the restored database.
    pub last_event: u64,
    /// Tokens in the restored database.
    pub tokens: usize,
}

/// Puts the backup `file` in place as the database of `data_dir`, which
/// no server may be using: checks the data directory is free (the lock a
/// running server holds), copies the backup beside the database, checks
/// the copy (SQLite's integrity check, a schema version this build knows,
/// migrated to the current one, every row read back as the start-up
/// reads it), moves the current database aside under a name that says
/// when, and renames the copy into its place. The server then starts from
/// it as from any database.
pub fn restore(file: &Path, data_dir: &Path, now: Timestamp) -> Result<Restored, StoreError> {
    super::prepare_dir(data_dir)?;
    let database = data_dir.join(super::DATABASE_FILE);
    let staged = data_dir.join(format!("{}.restoring", super::DATABASE_FILE));
    // A server on this directory holds the database's exclusive lock:
    // taking it here refuses to restore under a running server, and
    // holding it keeps one from starting until the copy is checked.
    let current = if database.exists() {
        Some(sqlite::connect(&database, None).map_err(|error| super::in_use(error, data_dir))?)
    } else {
        None
    };
    let _ = std::fs::remove_file(&staged);
    std::fs::copy(file, &staged)?;
    super::protect_files(&staged)?;
    let checked = check(&staged, now);
    let (last_event, tokens) = match checked {
        Ok(found) => found,
        Err(error) => {
            let _ = std::fs::remove_file(&staged);
            return Err(error);
        }
    };
    std::fs::File::open(&staged)?.sync_all()?;
    // Closing the last connection copies the write-ahead log into the
    // database file and removes the log, so the file moved aside is whole.
    drop(current);
    let previous = if database.exists() {
        let aside = data_dir.join(format!(
            "{}.before-restore-{}",
            super::DATABASE_FILE,
            now.strftime(STAMP_FORMAT)
        ));
        std::fs::rename(&database, &aside)?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&staged, &database)?;
    sync_dir(data_dir)?;
    Ok(Restored {
        database,
        previous,
        last_event,
        tokens,
    })
}

/// Checks a database file as a restore needs it: SQLite's integrity check
/// passes, its schema version is one this build knows (older ones are
/// migrated, as a start-up would), and its rows read back as at start-up.
/// Returns its newest event id and its token count.
fn check(path: &Path, now: Timestamp) -> Result<(u64, usize), StoreError> {
    let mut connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let not_a_backup = |error: rusqlite::Error| {
        StoreError::Corrupt(format!(
            "{} is not a sound database: {error}",
            path.display()
        ))
    };
    let integrity: String = connection
        .query_row("PRAGMA integrity_check(1)", [], |row| row.get(0))
        .map_err(not_a_backup)?;
    if integrity != "ok" {
        return Err(StoreError::Corrupt(format!(
            "{} fails SQLite's integrity check: {integrity}",
            path.display()
        )));
    }
    let version: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version == 0 || version > sqlite::MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "{} has schema version {version}; this build knows versions 1 to {}",
            path.display(),
            sqlite::MIGRATIONS.len()
        )));
    }
    sqlite::migrate(&mut connection)?;
    // Every day, not only the live ones a start loads: a restore reads the
    // whole file back once, so a bad row of an old day is found now.
    let snapshot = sqlite::load(
        &connection,
        jiff::civil::Date::MIN,
        now - super::IDEMPOTENCY_RETENTION,
    )?;
    Ok((snapshot.last_event, snapshot.slots.tokens.len()))
}
