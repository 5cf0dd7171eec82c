//! Group commit of bookings in one call: concurrent bookings into
//! different slots share one call to PostgreSQL and one commit.
//!
//! A booking decided on its copy of a slot hands its call to a queue. The
//! writer takes what is waiting (up to [`GROUP_MAX`] calls) and writes it
//! with one `opd_book_group`, so while one group commits the next gathers,
//! without any timer: at one booking at a time a group is one call, and
//! under load one call, one commit and one wait for the flush serve many
//! bookings. A group cannot hold two calls on one doctor's day
//! from one instance: the booking holds the day's numbers while its call
//! is queued and written.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, Mutex as AsyncMutex};

use crate::store::postgres::{self as db, CallAnswer, Database, OneCall, PgError};
use crate::store::StorageMetrics;

/// The most calls one group carries: as many as the connections of a
/// busy front end, so that none waits for a second group. With 64 clients
/// (`CLIENTS=64 loadtest/pg-slot-size.py`, runs taking turns), groups of
/// up to 16 gave 7,712–7,892 bookings/s and groups of up to 64
/// 9,121–9,230.
const GROUP_MAX: usize = 64;

/// Groups written at the same time, each on a connection of its own. One:
/// while it writes a group the next gathers, and more writers make smaller
/// groups, each a commit of its own (with 16 clients, one writer gave
/// 5,686 bookings/s and two 4,053, `loadtest/pg-slot-size.py`). A group
/// that waits for a row lock (a slot a lock-first change holds) holds the
/// instance's bookings up for as long.
const WRITERS: usize = 1;

/// Calls waiting for a writer; a booking waits for room past it.
const QUEUED: usize = 4 * GROUP_MAX * WRITERS;

/// Why a group wrote nothing for a call.
#[derive(Clone, Copy, Debug)]
pub enum GroupFailure {
    /// The group's connection was lost; its commit may or may not have
    /// been made. `may_reconnect` is false when the pool could not give a
    /// connection at all.
    Lost { may_reconnect: bool },
    /// Anything else (a lost race, an error of one call): each call is
    /// written again alone, so that it gets its own answer.
    Failed,
}

struct Queued {
    call: Arc<OneCall>,
    answer: oneshot::Sender<Result<CallAnswer, GroupFailure>>,
}

/// The queue and its writers; stopping them is dropping this.
pub struct GroupCommit {
    queue: mpsc::Sender<Queued>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        for writer in &self.writers {
            writer.abort();
        }
    }
}

impl GroupCommit {
    /// Starts the writers on `database`; each commit is recorded in
    /// `metrics`. Must be called within the runtime.
    pub fn start(database: &Database, metrics: &StorageMetrics) -> GroupCommit {
        let (queue, waiting) = mpsc::channel(QUEUED);
        let waiting = Arc::new(AsyncMutex::new(waiting));
        let writers = (0..WRITERS)
            .map(|_| {
                tokio::spawn(write_groups(
                    database.clone(),
                    metrics.clone(),
                    Arc::clone(&waiting),
                ))
            })
            .collect();
        GroupCommit { queue, writers }
    }

    /// Writes `call` in the next group.
    pub async fn write(&self, call: Arc<OneCall>) -> Result<CallAnswer, GroupFailure> {
        let (answer, answered) = oneshot::channel();
        if self.queue.send(Queued { call, answer }).await.is_err() {
            return Err(GroupFailure::Failed);
        }
        answered.await.unwrap_or(Err(GroupFailure::Failed))
    }
}

/// One writer: takes what waits, writes it as one group, answers each.
async fn write_groups(
    database: Database,
    metrics: StorageMetrics,
    waiting: Arc<AsyncMutex<mpsc::Receiver<Queued>>>,
) {
    let mut connection = None;
    let mut group = Vec::with_capacity(GROUP_MAX);
    loop {
        {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            group.push(first);
            while group.len() < GROUP_MAX {
                let Ok(next) = waiting.try_recv() else {
                    break;
                };
                group.push(next);
            }
        }
        let written = {
            let calls: Vec<&OneCall> = group.iter().map(|queued| &*queued.call).collect();
            write_unflushed(&database, &metrics, &mut connection, &calls).await
        };
        match written {
            Ok(answers) => {
                for (queued, answer) in group.drain(..).zip(answers) {
                    // A booking no longer waiting was dropped with its
                    // request; its call is answered by the stored state.
                    let _ = queued.answer.send(Ok(answer));
                }
            }
            Err(error) => {
                let failure = match &error {
                    PgError::Database(error) if db::is_connection_lost(error) => {
                        GroupFailure::Lost {
                            may_reconnect: db::may_reconnect(error),
                        }
                    }
                    _ => GroupFailure::Failed,
                };
                tracing::warn!(%error, calls = group.len(), "a group of bookings was not written; each is tried again");
                for queued in group.drain(..) {
                    let _ = queued.answer.send(Err(failure));
                }
            }
        }
    }
}

/// Writes `calls` as one group on the writer's own `connection` (opened
/// if there is none, closed on any error), and records the commit of the
/// bookings it made in `metrics`.
///
/// The group commits without waiting for its WAL to be flushed, and then
/// waits for the flush before answering. Every group takes the event
/// log's head and holds it until its commit ends, so a commit that waited
/// for the flush held every other instance's group for as long: groups
/// went one flush at a time, and two instances, each gathering half as
/// many bookings per group, booked half as much as one. Committed this
/// way the head is held for microseconds, and the flushes that groups
/// wait for afterwards overlap. A group's changes are visible to other
/// transactions from its commit, before its flush: anything decided on
/// them commits with a later WAL record, so it is not durable, and not
/// acknowledged, before they are.
async fn write_unflushed(
    database: &Database,
    metrics: &StorageMetrics,
    connection: &mut Option<sqlx::PgConnection>,
    calls: &[&OneCall],
) -> Result<Vec<CallAnswer>, PgError> {
    if connection.is_none() {
        *connection = Some(database.unflushed_connection().await?);
    }
    let written = write_on(
        database,
        connection.as_mut().expect("opened above"),
        metrics,
        calls,
    )
    .await;
    if written.is_err() {
        *connection = None;
    }
    written
}

/// Writes `calls` as one group on a connection of the pool, and records
/// the commit of the bookings it made in `metrics`.
pub async fn write(
    database: &Database,
    metrics: &StorageMetrics,
    calls: &[&OneCall],
) -> Result<Vec<CallAnswer>, PgError> {
    write_on(database, &mut *database.connection().await?, metrics, calls).await
}

/// Writes `calls` as one group on `connection`, waits until what it wrote,
/// and any stored answer it found, is durable (and notes so on
/// `database`, for the event follower), and records the commit of the
/// bookings it made in `metrics`.
async fn write_on(
    database: &Database,
    connection: &mut sqlx::PgConnection,
    metrics: &StorageMetrics,
    calls: &[&OneCall],
) -> Result<Vec<CallAnswer>, PgError> {
    let started = Instant::now();
    let answers = db::book_in_group(connection, calls).await?;
    database.note_durable(db::wait_until_durable(connection).await?);
    let booked = answers
        .iter()
        .filter(|answer| matches!(answer, CallAnswer::Booked { .. }))
        .count();
    if booked > 0 {
        metrics.commit(booked, started.elapsed());
    }
    Ok(answers)
}
