//! The day rounds: the whole OPD day under kill -9. Rounds of the day's
//! load on one data directory, each ended by SIGKILL at a random moment
//! (in some rounds right as a close is sent), a restart and the day's
//! check, so that the day goes on across the rounds.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::day_checker::check_day;
use crate::day_load::{run_day, DayLoad, DayPlan, PlannedClose};
use crate::events::read_all;
use crate::ledger::Ledger;
use crate::rng::{seed, Rng};
use crate::schedule::{day_doctors, day_slots, write_day_schedule, DayDoctor};
use crate::server::{Server, TempDir};

/// Crash rounds of the day, all on one data directory.
const DAY_ROUNDS: usize = 6;
/// The kill comes this long after the load starts (uniform)...
const KILL_AFTER_MS: Range<u64> = 50..400;
/// ...or, in this share of the rounds (percent), this long after one of
/// the round's closes is sent (uniform), so that closes lose their
/// answers.
const KILL_ON_CLOSE_PERCENT: u64 = 50;
const KILL_ON_CLOSE_MS: Range<u64> = 0..4;
/// Slots the admin closes a round, each the earliest open slot of a
/// doctor: the day's sessions end one after the other.
const CLOSES_PER_ROUND: usize = 3;
/// A close is sent this long after the load starts (uniform).
const CLOSE_AFTER_MS: Range<u64> = 20..350;
/// The share of closes (percent) sent twice at once.
const TWICE_PERCENT: u64 = 30;

pub async fn run() {
    let started = Instant::now();
    let seed = seed();
    println!("day crash test: seed {seed} (rerun with CRASH_SEED={seed})");
    let mut rng = Rng::new(seed ^ 0x6461_795f_726f_756e);
    let dir = TempDir::new("day");
    let data = dir.path().join("data");
    let schedule = dir.path().join("schedule.json");
    write_day_schedule(&schedule);
    let slots = day_slots();
    let doctors = Arc::new(day_doctors());
    let mut server = Server::start(dir.path(), &data, &schedule, false).await;
    let mut ledger = Ledger::default();
    let mut failures = Vec::new();
    for round in 0..DAY_ROUNDS {
        let closes = plan_closes(&ledger, &doctors, &mut rng);
        let kill_after = if !closes.is_empty() && rng.below(100) < KILL_ON_CLOSE_PERCENT {
            let close = &closes[rng.below(closes.len() as u64) as usize];
            close.after + Duration::from_millis(rng.range(KILL_ON_CLOSE_MS))
        } else {
            Duration::from_millis(rng.range(KILL_AFTER_MS))
        };
        let plan = DayPlan {
            round,
            doctors: doctors.clone(),
            closed: closed_slots(&ledger),
            closes,
        };
        let load = run_day(&mut server, plan, kill_after, 0, 0, rng.next()).await;
        ledger.record_day(&load);

        let restart = Instant::now();
        server = Server::start(dir.path(), &data, &schedule, false).await;
        let restart = restart.elapsed();
        let check_started = Instant::now();
        let events = read_all(&server).await;
        if let Ok(frames) = &events {
            ledger.discover(frames);
        }
        let report = check_day(&server, &ledger, events, &slots).await;
        println!(
            "day round {round}: killed after {} ms (planned {} ms); {}; restart {} ms; \
             checked {} tokens, {} slots ({} closed), {} events, {} doctors in {} ms: lost {}, \
             other violations {}",
            load.killed_after.as_millis(),
            kill_after.as_millis(),
            summary(&load),
            restart.as_millis(),
            report.tokens_checked,
            report.slots_checked,
            report.slots.values().filter(|slot| slot.closed).count(),
            report.events_checked,
            report.doctors_checked,
            check_started.elapsed().as_millis(),
            report.lost,
            report.violations.len() - report.lost,
        );
        for violation in report.violations.iter().take(20) {
            println!("  day round {round}: {violation}");
        }
        if !report.violations.is_empty() {
            failures.push(format!(
                "day round {round}: {} violations ({} lost acknowledged changes), first: {}",
                report.violations.len(),
                report.lost,
                report.violations[0]
            ));
        }
        ledger.observe(&report);
    }
    drop(server);
    println!(
        "day crash test: {DAY_ROUNDS} rounds, {} tokens known, {:.1} s",
        ledger.tokens.len(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        panic!(
            "seed {seed}: acknowledged transitions were lost, or a slot closed more than once or \
             by half, or the day's invariants broke:\n{}",
            failures.join("\n")
        );
    }
}

/// What a round's clients were told, in a line.
pub fn summary(load: &DayLoad) -> String {
    format!(
        "sent {}, acked {}, in doubt {}, refused {}; acked bookings {}, check-ins {}, calls {}, \
         starts {}, completions {}, skips {}, cancels {}, no-shows {}; acked closes {} (no-shows {}, \
         promotions {}, expiries {}), closes in doubt {}",
        load.sent(),
        load.acked(),
        load.in_doubt(),
        load.refused(),
        load.bookings_acked(),
        load.acted("CHECKED_IN") + load.acted("WAITLISTED"),
        load.acted("CALLED"),
        load.acted("IN_CONSULTATION"),
        load.acted("COMPLETED"),
        load.acted("SKIPPED"),
        load.acted("CANCELLED"),
        load.acted("NO_SHOW"),
        load.closes_acked(),
        load.closing_changes("NO_SHOW"),
        load.closing_changes("PROMOTED"),
        load.closing_changes("SLOT_CLOSED"),
        load.closes_in_doubt(),
    )
}

/// The slots known to be closed, or closed by an acknowledged close.
pub fn closed_slots(ledger: &Ledger) -> HashSet<String> {
    ledger
        .slots
        .iter()
        .filter(|(_, slot)| slot.closed_at.is_some() || slot.close_acked)
        .map(|(id, _)| id.clone())
        .collect()
}

/// The round's closes: the earliest slot not known to be closed of
/// `CLOSES_PER_ROUND` doctors picked at random.
fn plan_closes(ledger: &Ledger, doctors: &[DayDoctor], rng: &mut Rng) -> Vec<PlannedClose> {
    let closed = closed_slots(ledger);
    let mut candidates: Vec<&String> = doctors
        .iter()
        .filter_map(|doctor| doctor.slots.iter().find(|slot| !closed.contains(*slot)))
        .collect();
    let mut closes = Vec::new();
    while closes.len() < CLOSES_PER_ROUND && !candidates.is_empty() {
        let slot = candidates.swap_remove(rng.below(candidates.len() as u64) as usize);
        closes.push(PlannedClose {
            after: Duration::from_millis(rng.range(CLOSE_AFTER_MS)),
            slot: slot.clone(),
            twice: rng.below(100) < TWICE_PERCENT,
        });
    }
    closes
}
