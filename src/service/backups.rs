//! Backups of the embedded store, on demand and on a schedule. The store
//! takes them (see `store::backup`); this decides when, keeps one at a
//! time, prunes the oldest, logs and counts them.

use std::path::PathBuf;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Mutex;

use crate::store::backup::{self, BackupInfo};
use crate::store::{BackupMetrics, Journal};

/// Where backups go and how often they are taken.
#[derive(Debug, Clone)]
pub struct BackupPlan {
    pub dir: PathBuf,
    /// `None`: only on demand.
    pub every: Option<SignedDuration>,
    /// How many backups the directory keeps; the oldest beyond are
    /// removed after each backup. `None` keeps every one.
    pub keep: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "this server keeps its state {0}; backups are taken of the embedded SQLite store only"
    )]
    Unsupported(&'static str),
    #[error("another backup is running; try again when it has finished")]
    Running,
    #[error("storage is not accepting work now")]
    Unavailable,
    #[error("the backup failed: {0}")]
    Failed(String),
}

/// How soon a scheduled backup that failed is tried again, unless the
/// schedule itself is sooner: a clinic should not go a whole interval
/// without a backup because of one full disk.
const RETRY_AFTER_FAILURE: SignedDuration = SignedDuration::from_mins(5);

pub(super) struct Backups {
    plan: BackupPlan,
    metrics: BackupMetrics,
    /// Held while a backup runs, so there is one at a time; holds when the
    /// next scheduled backup is due (`None` until the first tick reads the
    /// directory).
    next_due: Mutex<Option<Timestamp>>,
}

impl Backups {
    pub(super) fn new(plan: BackupPlan, metrics: BackupMetrics) -> Backups {
        Backups {
            plan,
            metrics,
            next_due: Mutex::new(None),
        }
    }

    /// Takes a backup now, unless one is running.
    pub(super) async fn on_demand(
        &self,
        journal: &Journal,
        now: Timestamp,
    ) -> Result<BackupInfo, BackupError> {
        let _running = self.next_due.try_lock().map_err(|_| BackupError::Running)?;
        self.take(journal, now, "on demand").await
    }

    /// Takes the scheduled backup if it is due at `now`: the first one
    /// is due a period after the newest backup in the directory (at once
    /// when there is none), each next one a period after the last.
    pub(super) async fn when_due(&self, journal: &Journal, now: Timestamp) {
        let Some(every) = self.plan.every else {
            return;
        };
        // Waits for a backup in progress: a tick returns only once the
        // backup it found due is done.
        let mut next_due = self.next_due.lock().await;
        let due = match *next_due {
            Some(due) => due,
            None => {
                let newest = match backup::newest(&self.plan.dir) {
                    Ok(newest) => newest,
                    Err(error) => {
                        tracing::warn!(backup_dir = %self.plan.dir.display(), %error, "cannot list the backups");
                        None
                    }
                };
                newest.map_or(now, |taken| taken + every)
            }
        };
        if now < due {
            *next_due = Some(due);
            return;
        }
        *next_due = Some(match self.take(journal, now, "scheduled").await {
            Ok(_) => now + every,
            Err(_) => now + every.min(RETRY_AFTER_FAILURE),
        });
    }

    /// Takes a backup, prunes the oldest, logs and counts it. The caller
    /// holds the lock.
    async fn take(
        &self,
        journal: &Journal,
        now: Timestamp,
        why: &'static str,
    ) -> Result<BackupInfo, BackupError> {
        let taken = journal.backup(&self.plan.dir, now).await;
        let info = match taken {
            Ok(info) => info,
            Err(error) => {
                self.metrics.failed();
                tracing::error!(backup_dir = %self.plan.dir.display(), %error, why, "backup failed; bookings go on");
                return Err(match error {
                    backup::BackupError::NotAccepting => BackupError::Unavailable,
                    backup::BackupError::Failed(error) => BackupError::Failed(error.to_string()),
                });
            }
        };
        self.metrics.succeeded(&info);
        tracing::info!(
            file = %info.path.display(),
            bytes = info.bytes,
            last_event_id = info.last_event,
            duration_ms = info.duration.as_millis() as u64,
            why,
            "backup taken"
        );
        if let Some(keep) = self.plan.keep {
            let dir = self.plan.dir.clone();
            let pruned = tokio::task::spawn_blocking(move || backup::prune(&dir, keep)).await;
            match pruned {
                Ok(Ok(removed)) => {
                    for path in removed {
                        tracing::info!(file = %path.display(), keep, "removed an old backup");
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(backup_dir = %self.plan.dir.display(), %error, "cannot remove old backups")
                }
                Err(_) => tracing::warn!("the task removing old backups stopped"),
            }
        }
        Ok(info)
    }
}
