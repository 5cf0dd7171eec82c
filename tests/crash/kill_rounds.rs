//! The real test: rounds of load on one data directory, each ended by
//! SIGKILL at a random moment, a restart and a full check, so the state
//! accumulates across the rounds.

use std::time::{Duration, Instant};

use crate::checker::check;
use crate::ledger::Ledger;
use crate::load::run_load;
use crate::rng::{seed, Rng};
use crate::schedule::{slots_up_to, write_schedule};
use crate::server::{Server, TempDir};

/// Crash rounds of the real test, all on one data directory.
const ROUNDS: usize = 8;
/// The kill comes this long after the load starts (uniform).
const KILL_AFTER_MS: std::ops::Range<u64> = 50..400;

pub async fn run() {
    let started = Instant::now();
    let seed = seed();
    println!("crash test: seed {seed} (rerun with CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let dir = TempDir::new("crash");
    let data = dir.path().join("data");
    let schedule = dir.path().join("schedule.json");
    write_schedule(&schedule, 0);
    let mut server = Server::start(dir.path(), &data, &schedule, false).await;
    let mut ledger = Ledger::default();
    let mut owned: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let kill_after = Duration::from_millis(rng.range(KILL_AFTER_MS));
        let load = run_load(&mut server, round, "R", owned, kill_after, 0, rng.next()).await;
        ledger.record(&load);

        // The next round's slots join the schedule; existing ones are kept.
        write_schedule(&schedule, round + 1);
        let restart = Instant::now();
        server = Server::start(dir.path(), &data, &schedule, false).await;
        let restart = restart.elapsed();
        let check_started = Instant::now();
        let report = check(&server, &ledger, &slots_up_to(round + 1)).await;
        println!(
            "round {round}: killed after {} ms (planned {} ms); bookings sent {}, acked {}, in doubt {}; \
             actions sent {}, acked {}, in doubt {}; refused {}; acked bumps {}, promotions {}; restart {} ms; \
             checked {} tokens, {} slots, {} replays in {} ms: lost {}, other violations {}",
            load.killed_after.as_millis(),
            kill_after.as_millis(),
            load.bookings_sent(),
            load.bookings_acked(),
            load.bookings_in_doubt(),
            load.actions_sent(),
            load.actions_acked(),
            load.actions_in_doubt(),
            load.refused(),
            load.changes("BUMPED"),
            load.changes("PROMOTED"),
            restart.as_millis(),
            report.tokens_checked,
            report.slots_checked,
            report.replays,
            check_started.elapsed().as_millis(),
            report.lost,
            report.violations.len() - report.lost,
        );
        for violation in report.violations.iter().take(20) {
            println!("  round {round}: {violation}");
        }
        if !report.violations.is_empty() {
            failures.push(format!(
                "round {round}: {} violations ({} lost acknowledged changes), first: {}",
                report.violations.len(),
                report.lost,
                report.violations[0]
            ));
        }
        owned = ledger.observe(&report);
    }
    drop(server);
    println!(
        "crash test: {ROUNDS} rounds, {} tokens known, {:.1} s",
        ledger.tokens.len(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        panic!(
            "seed {seed}: acknowledged state was lost or invariants broken:\n{}",
            failures.join("\n")
        );
    }
}
