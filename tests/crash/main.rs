//! Crash test of the durable write path: `kill -9` under load.
//!
//! Starts the server binary as a child process on a fresh data directory,
//! drives concurrent bookings, cancellations and no-shows from many clients,
//! sends SIGKILL to the server at a random moment while requests are in
//! flight, restarts it on the same data directory and checks that
//!
//! 1. every token named in an acknowledged (2xx) answer exists;
//! 2. its status is consistent with what was acknowledged: a token
//!    acknowledged CANCELLED or NO_SHOW is exactly that; any other token is
//!    active (ALLOCATED or WAITLISTED: bumps and promotions by later or lost
//!    requests may move it between the two), or terminal only if a cancel or
//!    no-show of it was sent and its answer was lost;
//! 3. every acknowledged transition (creation, bumps and promotions listed
//!    in `changes`, cancels, no-shows) is in the token's history, the history
//!    is well formed and ends in the current status, and the history seen
//!    after the previous restart is a prefix of it;
//! 4. every slot's invariants hold (non-emergency allocated <= capacity; a
//!    waitlist only when full; queues in priority then arrival order; one
//!    active token per patient; token numbers unique per doctor and date)
//!    and the slot queues agree with the tokens;
//! 5. an acknowledged booking with an `Idempotency-Key` replays the same
//!    token after the restart.
//!
//! The rounds share one data directory, so the state accumulates. A negative
//! control runs the same workload and the same checker against a server
//! started with `--in-memory`, which acknowledges without making anything
//! durable, and requires the checker to report lost acknowledged changes.
//!
//! The binary is `env!("CARGO_BIN_EXE_opd-token-engine")`, which cargo
//! builds in the test's profile: CI runs `cargo test --release --test crash`,
//! so there it is the release binary; a plain `cargo test` uses the debug
//! build.
//!
//! The random choices (kill delays, requests) come from a seed printed at the
//! start; `CRASH_SEED=<n>` reuses it. Thread interleaving still differs
//! between runs, so a failure is reproduced by the seed only approximately;
//! a failed run keeps its directory (the path is printed) with the SQLite
//! files and `server.log`.
//!
//! Each scenario is a module: `kill_rounds` (the kill -9 rounds), `controls`
//! (the negative controls) and `second_server` (a second server on a data
//! directory in use). They share the server as a child process (`server`),
//! the schedule file (`schedule`), the wire shapes (`wire`), the load
//! generator (`load`), the record of what was acknowledged (`ledger`), the
//! checker (`checker`) and the seeded randomness (`rng`).

mod checker;
mod controls;
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
