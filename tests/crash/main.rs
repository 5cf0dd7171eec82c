//! Crash test of the durable write path: `kill -9` under load.
//!
//! Starts the server binary as a child process on a fresh data directory,
//! drives concurrent clients against it, sends SIGKILL to the server at a
//! random moment while requests are in flight, restarts it on the same
//! data directory and checks what it shows against a ledger of what was
//! acknowledged. Two workloads do this, each in rounds on its own data
//! directory, so that the state accumulates across the rounds.
//!
//! The kill rounds (`kill_rounds`) book, cancel and mark no-shows, and
//! check that
//!
//! 1. every token named in an acknowledged (2xx) answer exists;
//! 2. its status is consistent with what was acknowledged: a token
//!    acknowledged CANCELLED or NO_SHOW is exactly that; any other token is
//!    ALLOCATED or WAITLISTED (bumps and promotions by later or lost
//!    requests may move it between the two), or final only if a cancel or
//!    no-show of it was sent and its answer was lost;
//! 3. every acknowledged transition (creation, bumps and promotions listed
//!    in `changes`, cancels, no-shows) is in the token's history, the history
//!    is well formed by the contract and ends in the current status, and the
//!    history seen after the previous restart is a prefix of it;
//! 4. every slot's invariants hold (non-emergency seat holders <= capacity;
//!    a waitlist only when full; queues in priority then arrival order; one
//!    active token per patient; token numbers unique per doctor and date)
//!    and the slot queues agree with the tokens;
//! 5. an acknowledged booking with an `Idempotency-Key` replays the same
//!    token after the restart.
//!
//! The day rounds (`day_rounds`) run the whole OPD day at once: clerks
//! book, front desks check patients in, take back skipped ones, cancel and
//! mark no-shows, doctors call the next patient, start, complete and skip,
//! nurses call particular patients, and an admin closes slots, some twice
//! at once; in half of the rounds the kill comes right as a close is sent.
//! The same checks hold for every token and slot, with every transition of
//! the day (`changes` of closings too: NO_SHOW, PROMOTED, EXPIRED), and
//! besides (`day_checker`):
//!
//! 6. a close that was acknowledged, or read back after a restart, holds,
//!    with the same `closesAt`; a closing is whole or absent, never half;
//!    every slot closes at most once (one SLOT_CLOSED entry per token, one
//!    `slot` event CLOSED per closed slot);
//! 7. the event log (`GET /events?after=0`) read after an earlier restart is
//!    a prefix of the later one, and each token's events are its history;
//! 8. a doctor never had two tokens CALLED or IN_CONSULTATION at once, and
//!    the doctor's queue agrees with the tokens.
//!
//! Negative controls run the same workloads and checkers against servers
//! that acknowledge changes without keeping them, and require the checkers
//! to report lost acknowledged changes: a server started with
//! `--in-memory`, and a data directory put back to a copy taken before a
//! round; each for both workloads.
//!
//! The binary is `env!("CARGO_BIN_EXE_opd-token-engine")`, which cargo
//! builds in the test's profile: CI runs `cargo test --release --test crash`,
//! so there it is the release binary; a plain `cargo test` uses the debug
//! build. The servers run in a clinic time zone chosen so that today's
//! slots stay today while the test runs (`schedule::ZONE`).
//!
//! The random choices (kill delays, requests, closes) come from a seed
//! printed at the start; `CRASH_SEED=<n>` reuses it. Thread interleaving
//! still differs between runs, so a failure is reproduced by the seed only
//! approximately; a failed run keeps its directory (the path is printed)
//! with the SQLite files and `server.log`.
//!
//! Each scenario is a module: `kill_rounds` and `day_rounds` (the kill -9
//! rounds), `controls` (the negative controls) and `second_server` (a second
//! server on a data directory in use). They share the server as a child
//! process (`server`), the schedule files (`schedule`), the wire shapes
//! (`wire`), the contract's statuses and transitions (`contract`), the load
//! generators (`load`, `day_load`), the record of what was acknowledged
//! (`ledger`), the checkers (`checker`, `day_checker`), the event log reader
//! (`events`) and the seeded randomness (`rng`).

mod checker;
mod contract;
mod controls;
mod day_checker;
mod day_load;
mod day_rounds;
mod events;
mod kill_rounds;
mod ledger;
mod load;
mod rng;
mod schedule;
mod second_server;
mod server;
mod wire;

use std::sync::Mutex;

/// The tests each load the machine; they run one after the other.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn acknowledged_changes_survive_kill_9() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    runtime().block_on(kill_rounds::run());
}

#[test]
fn acknowledged_day_transitions_survive_kill_9_and_slots_close_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    runtime().block_on(day_rounds::run());
}

#[test]
fn negative_control_in_memory_server_loses_day_transitions_and_closes() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    runtime().block_on(controls::in_memory_day());
}

#[test]
fn negative_control_rolled_back_data_dir_loses_day_transitions_and_closes() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    runtime().block_on(controls::rolled_back_day());
}

#[test]
fn negative_control_in_memory_server_loses_acknowledged_changes() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    runtime().block_on(controls::in_memory());
}

#[test]
fn negative_control_rolled_back_data_dir_loses_acknowledged_changes() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    runtime().block_on(controls::rolled_back());
}

/// One server owns a data directory: a second one on the same directory
/// refuses to start, even when the first has written nothing since it
/// started, and the first keeps serving.
#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let _serial = SERIAL.lock().unwrap_or_else(|poison| poison.into_inner());
    runtime().block_on(second_server::run());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
