//! The negative controls: the same workload and checker against servers
//! that acknowledge changes they do not keep, which the checker must report
//! as lost.

use std::time::Duration;

use std::collections::HashSet;
use std::sync::Arc;

use crate::checker::check;
use crate::day_checker::check_day;
use crate::day_load::{run_day, Acted, DayLoad, DayLog, DayPlan, PlannedClose, TokenAction};
use crate::day_rounds::{closed_slots, summary};
use crate::events::read_all;
use crate::ledger::Ledger;
use crate::load::run_load;
use crate::rng::{seed, Rng};
use crate::schedule::{day_doctors, day_slots, slots_up_to, write_day_schedule, write_schedule};
use crate::server::{Server, TempDir};
use crate::wire::{ActionReply, BookingReply};

/// A server started with `--in-memory` acknowledges without making
/// anything durable, so a restart loses every acknowledged booking.
pub async fn in_memory() {
    let seed = seed();
    println!("negative control: seed {seed}");
    let mut rng = Rng::new(seed ^ 0x6e65_6761_7469_7665);
    let dir = TempDir::new("control");
    let data = dir.path().join("data");
    let schedule = dir.path().join("schedule.json");
    write_schedule(&schedule, 0);
    let mut server = Server::start(dir.path(), &data, &schedule, true).await;
    let mut ledger = Ledger::default();
    // Killed only once something was acknowledged, so there is something
    // to lose.
    let load = run_load(
        &mut server,
        0,
        "N",
        Vec::new(),
        Duration::from_millis(200),
        50,
        rng.next(),
    )
    .await;
    ledger.record(&load);
    let server = Server::start(dir.path(), &data, &schedule, true).await;
    let report = check(&server, &ledger, &slots_up_to(0)).await;
    println!(
        "negative control: killed after {} ms; bookings acked {}, actions acked {}; lost {}, other violations {}",
        load.killed_after.as_millis(),
        load.bookings_acked(),
        load.actions_acked(),
        report.lost,
        report.violations.len() - report.lost,
    );
    for violation in report.violations.iter().take(5) {
        println!("  control: {violation}");
    }
    assert!(
        load.bookings_acked() > 0,
        "the control acknowledged nothing"
    );
    assert!(
        report.lost > 0,
        "the checker did not notice that an in-memory server lost {} acknowledged bookings",
        load.bookings_acked()
    );
}

/// A sharper control: a durable server whose data directory is put back to
/// a copy taken before a round, as if that round's commits had been
/// acknowledged but never written. Older tokens survive, so the checker
/// must notice lost cancels and no-shows of them, not only missing tokens.
pub async fn rolled_back() {
    let seed = seed();
    println!("rollback control: seed {seed}");
    let mut rng = Rng::new(seed ^ 0x726f_6c6c_6261_636b);
    let dir = TempDir::new("rollback");
    let data = dir.path().join("data");
    let snapshot = dir.path().join("snapshot");
    let schedule = dir.path().join("schedule.json");
    write_schedule(&schedule, 1);
    let slots = slots_up_to(1);
    let mut server = Server::start(dir.path(), &data, &schedule, false).await;
    let mut ledger = Ledger::default();
    let load = run_load(
        &mut server,
        0,
        "B",
        Vec::new(),
        Duration::from_millis(150),
        50,
        rng.next(),
    )
    .await;
    ledger.record(&load);
    let mut server = Server::start(dir.path(), &data, &schedule, false).await;
    let report = check(&server, &ledger, &slots).await;
    assert!(
        report.violations.is_empty(),
        "the first round already fails: {:?}",
        &report.violations[..report.violations.len().min(5)]
    );
    let owned = ledger.observe(&report);

    // Killed first, so the files are at rest while copied.
    server.kill();
    std::fs::create_dir_all(&snapshot).expect("snapshot directory");
    for entry in std::fs::read_dir(&data).expect("data directory") {
        let entry = entry.expect("data directory entry");
        std::fs::copy(entry.path(), snapshot.join(entry.file_name())).expect("copy the data");
    }
    let mut server = Server::start(dir.path(), &data, &schedule, false).await;
    let load = run_load(
        &mut server,
        1,
        "B",
        owned,
        Duration::from_millis(150),
        50,
        rng.next(),
    )
    .await;
    ledger.record(&load);
    std::fs::remove_dir_all(&data).expect("remove the data");
    std::fs::rename(&snapshot, &data).expect("put the old data back");
    let server = Server::start(dir.path(), &data, &schedule, false).await;
    let report = check(&server, &ledger, &slots).await;
    println!(
        "rollback control: round killed after {} ms; bookings acked {}, actions acked {}; lost {} \
         (tokens {}, statuses {}, transitions {}, idempotency keys {}), other violations {}",
        load.killed_after.as_millis(),
        load.bookings_acked(),
        load.actions_acked(),
        report.lost,
        report.lost_of("token"),
        report.lost_of("status"),
        report.lost_of("transition"),
        report.lost_of("idempotency key"),
        report.violations.len() - report.lost,
    );
    for violation in report
        .violations
        .iter()
        .filter(|v| v.starts_with("LOST status"))
        .take(3)
    {
        println!("  rollback control: {violation}");
    }
    assert!(
        report.lost_of("token") > 0,
        "the checker missed lost bookings"
    );
    assert!(
        report.lost_of("status") > 0,
        "the checker missed lost cancels and no-shows of tokens that survived"
    );
}

/// The day's workload against a server started with `--in-memory`: the
/// restart loses every acknowledged token, transition and close, which
/// the day's checker must report.
pub async fn in_memory_day() {
    let seed = seed();
    println!("day negative control: seed {seed}");
    let mut rng = Rng::new(seed ^ 0x6461_795f_6e65_6761);
    let dir = TempDir::new("day-control");
    let data = dir.path().join("data");
    let schedule = dir.path().join("schedule.json");
    write_day_schedule(&schedule);
    let slots = day_slots();
    let doctors = Arc::new(day_doctors());
    let mut server = Server::start(dir.path(), &data, &schedule, true).await;
    let mut ledger = Ledger::default();
    // Each doctor's first slot closes early, so that closes are
    // acknowledged before the kill.
    let closes = doctors
        .iter()
        .map(|doctor| PlannedClose {
            after: Duration::from_millis(rng.range(20..80)),
            slot: doctor.slots[0].clone(),
            twice: false,
        })
        .collect();
    let plan = DayPlan {
        round: 0,
        doctors,
        closed: HashSet::new(),
        closes,
    };
    // Killed only once something was acknowledged, so there is something
    // to lose.
    let load = run_day(
        &mut server,
        plan,
        Duration::from_millis(200),
        50,
        1,
        rng.next(),
    )
    .await;
    ledger.record_day(&load);
    let server = Server::start(dir.path(), &data, &schedule, true).await;
    let events = read_all(&server).await;
    if let Ok(frames) = &events {
        ledger.discover(frames);
    }
    let report = check_day(&server, &ledger, events, &slots).await;
    println!(
        "day negative control: killed after {} ms; {}; lost {} (tokens {}, closes {}), other \
         violations {}",
        load.killed_after.as_millis(),
        summary(&load),
        report.lost,
        report.lost_of("token"),
        report.lost_of("close"),
        report.violations.len() - report.lost,
    );
    for violation in report.violations.iter().take(5) {
        println!("  day control: {violation}");
    }
    assert!(load.acked() > 0, "the day control acknowledged nothing");
    assert!(
        report.lost_of("token") > 0,
        "the checker did not notice that an in-memory server lost {} acknowledged bookings",
        load.bookings_acked()
    );
    assert!(
        report.lost_of("close") > 0,
        "the checker did not notice that an in-memory server lost {} acknowledged closes",
        load.closes_acked()
    );
}

/// The day's sharper control: a durable server's data directory is put
/// back to a copy taken before a round that was then checked clean, so
/// that the round's acknowledged changes, read back once, are gone again.
/// Older tokens survive, so the checker must notice their lost
/// transitions and histories, and it must notice the lost closes and the
/// event log that fell short of what was read before.
pub async fn rolled_back_day() {
    let seed = seed();
    println!("day rollback control: seed {seed}");
    let mut rng = Rng::new(seed ^ 0x6461_795f_726f_6c6c);
    let dir = TempDir::new("day-rollback");
    let data = dir.path().join("data");
    let snapshot = dir.path().join("snapshot");
    let schedule = dir.path().join("schedule.json");
    write_day_schedule(&schedule);
    let slots = day_slots();
    let doctors = Arc::new(day_doctors());
    let mut server = Server::start(dir.path(), &data, &schedule, false).await;
    let mut ledger = Ledger::default();
    for round in 0..2 {
        if round == 1 {
            let survivor = book_a_survivor(&server, &ledger).await;
            ledger.record_day(&one_acknowledged(DayLog {
                booked: vec![survivor.clone()],
                ..DayLog::default()
            }));
            // Killed first, so the files are at rest while copied.
            server.kill();
            std::fs::create_dir_all(&snapshot).expect("snapshot directory");
            for entry in std::fs::read_dir(&data).expect("data directory") {
                let entry = entry.expect("data directory entry");
                std::fs::copy(entry.path(), snapshot.join(entry.file_name()))
                    .expect("copy the data");
            }
            server = Server::start(dir.path(), &data, &schedule, false).await;
            let cancelled = cancel(&server, &survivor).await;
            ledger.record_day(&one_acknowledged(cancelled));
        }
        // Each round closes every doctor's earliest open slot early, so
        // that closes are acknowledged before the kill.
        let closed = closed_slots(&ledger);
        let closes = doctors
            .iter()
            .filter_map(|doctor| doctor.slots.iter().find(|slot| !closed.contains(*slot)))
            .map(|slot| PlannedClose {
                after: Duration::from_millis(rng.range(20..80)),
                slot: slot.clone(),
                twice: false,
            })
            .collect();
        let plan = DayPlan {
            round,
            doctors: doctors.clone(),
            closed,
            closes,
        };
        let load = run_day(
            &mut server,
            plan,
            Duration::from_millis(150),
            50,
            1,
            rng.next(),
        )
        .await;
        ledger.record_day(&load);
        server = Server::start(dir.path(), &data, &schedule, false).await;
        let events = read_all(&server).await;
        if let Ok(frames) = &events {
            ledger.discover(frames);
        }
        let report = check_day(&server, &ledger, events, &slots).await;
        assert!(
            report.violations.is_empty(),
            "round {round} already fails: {:?}",
            &report.violations[..report.violations.len().min(5)]
        );
        ledger.observe(&report);
    }

    server.kill();
    std::fs::remove_dir_all(&data).expect("remove the data");
    std::fs::rename(&snapshot, &data).expect("put the old data back");
    let server = Server::start(dir.path(), &data, &schedule, false).await;
    let events = read_all(&server).await;
    if let Ok(frames) = &events {
        ledger.discover(frames);
    }
    let report = check_day(&server, &ledger, events, &slots).await;
    println!(
        "day rollback control: lost {} (tokens {}, statuses {}, transitions {}, histories {}, \
         closes {}, event log {}), other violations {}",
        report.lost,
        report.lost_of("token"),
        report.lost_of("status"),
        report.lost_of("transition"),
        report.lost_of("history"),
        report.lost_of("close"),
        report.lost_of("event"),
        report.violations.len() - report.lost,
    );
    for kind in ["status", "transition", "history", "close", "event"] {
        if let Some(violation) = report
            .violations
            .iter()
            .find(|violation| violation.starts_with(&format!("LOST {kind}")))
        {
            println!("  day rollback control: {violation}");
        }
    }
    assert!(
        report.lost_of("token") > 0,
        "the checker missed lost bookings"
    );
    assert!(
        report.lost_of("status") + report.lost_of("transition") > 0,
        "the checker missed lost transitions of tokens that survived"
    );
    assert!(
        report.lost_of("history") > 0,
        "the checker missed histories that fell short of what was read before"
    );
    assert!(
        report.lost_of("close") > 0,
        "the checker missed lost closes"
    );
    assert!(
        report.lost_of("event") > 0,
        "the checker missed an event log that fell short of what was read before"
    );
}

/// Books one token, before the snapshot, into a slot no round closes
/// before the rollback, so that the rollback certainly takes a transition
/// (its cancel, below) from a token that survives it; the random load
/// alone does not always leave one open.
async fn book_a_survivor(server: &Server, ledger: &Ledger) -> BookingReply {
    let closed = closed_slots(ledger);
    for doctor in day_doctors() {
        let slot = doctor.slots.last().expect("a doctor has slots");
        if closed.contains(slot) {
            continue;
        }
        let response = server
            .http
            .post(format!("{}/tokens", server.base))
            .json(&serde_json::json!({"patientId": "SURVIVOR", "slotId": slot, "source": "PAID"}))
            .send()
            .await
            .expect("the booking is answered");
        if response.status() == 201 {
            return response.json().await.expect("a booking's answer");
        }
    }
    panic!("no slot took the survivor's booking");
}

/// Cancels the survivor after the snapshot: the change the rollback loses.
async fn cancel(server: &Server, survivor: &BookingReply) -> DayLog {
    let token = &survivor.token;
    let response = server
        .http
        .post(format!("{}/tokens/{}/cancel", server.base, token.token_id))
        .send()
        .await
        .expect("the cancel is answered");
    assert_eq!(response.status(), 200, "the survivor's cancel is accepted");
    let reply: ActionReply = response.json().await.expect("a cancel's answer");
    DayLog {
        acted: vec![Acted {
            token: token.token_id.clone(),
            slot: token.slot_id.clone(),
            patient: token.patient_id.clone(),
            action: TokenAction::Cancel,
            seen: token.status.clone(),
            reply: Some(reply),
        }],
        ..DayLog::default()
    }
}

/// A load of one acknowledged request, as the ledger records loads.
fn one_acknowledged(log: DayLog) -> DayLoad {
    DayLoad {
        logs: vec![DayLog {
            sent: 1,
            acked: 1,
            ..log
        }],
        killed_after: Duration::ZERO,
    }
}
