//! The contract's token statuses and transitions (API.md, "Token statuses
//! and the OPD day" and "Closing a slot"), written out here from the
//! contract rather than taken from the server, so that the checker judges
//! the server by the contract.

use jiff::Timestamp;

use crate::wire::HistoryDto;

/// Statuses that never change again.
pub const FINAL: [&str; 4] = ["COMPLETED", "CANCELLED", "NO_SHOW", "EXPIRED"];

/// The server's `--max-skips` (the crash test keeps the default): the
/// second skip of a token makes it a no-show, so a history holds at most
/// one `SKIPPED` entry.
pub const MAX_SKIPS: usize = 2;

/// How a token comes into being: the booking's decision and its status.
const CREATION: [(&str, &str); 4] = [
    ("ALLOCATED", "ALLOCATED"),
    ("OVERBOOKED", "ALLOCATED"),
    ("BUMPED_LOWER", "ALLOCATED"),
    ("WAITLISTED", "WAITLISTED"),
];

pub fn is_final(status: &str) -> bool {
    FINAL.contains(&status)
}

/// Whether a token in `status` counts towards its slot's seats ("A"),
/// and so is listed in the slot's `allocated`.
pub fn holds_seat(status: &str) -> bool {
    matches!(
        status,
        "ALLOCATED" | "CHECKED_IN" | "CALLED" | "IN_CONSULTATION" | "SKIPPED" | "COMPLETED"
    )
}

/// Whether the doctor is busy with a token in `status`: a doctor has at
/// most one such token at a time.
pub fn with_doctor(status: &str) -> bool {
    matches!(status, "CALLED" | "IN_CONSULTATION")
}

/// Whether a token in `status` is in one of its slot's queues.
pub fn queued(status: &str) -> bool {
    holds_seat(status) || status == "WAITLISTED"
}

/// What a token has been through so far, which some transitions depend
/// on.
#[derive(Default)]
struct Past {
    checked_in: bool,
    called: bool,
    skips: usize,
}

/// Whether a history entry with `reason` may go from `from` to `to`.
fn allowed(reason: &str, from: &str, to: &str, past: &Past) -> bool {
    match reason {
        // Only tokens the doctor has not called yet are moved to the
        // waitlist (a token back from a skip was called).
        "BUMPED" | "CAPACITY_REDUCED" => {
            matches!(from, "ALLOCATED" | "CHECKED_IN") && to == "WAITLISTED" && !past.called
        }
        // A promoted token is in the hall if it checked in while waiting.
        "PROMOTED" => {
            from == "WAITLISTED"
                && to
                    == if past.checked_in {
                        "CHECKED_IN"
                    } else {
                        "ALLOCATED"
                    }
        }
        // The first check-in only: `checkedInAt` is kept for life.
        "CHECKED_IN" => {
            !past.checked_in
                && matches!(
                    (from, to),
                    ("ALLOCATED", "CHECKED_IN") | ("WAITLISTED", "WAITLISTED")
                )
        }
        "RETURNED" => (from, to) == ("SKIPPED", "CHECKED_IN"),
        "CALLED" => (from, to) == ("CHECKED_IN", "CALLED"),
        "STARTED" => (from, to) == ("CALLED", "IN_CONSULTATION"),
        "COMPLETED" => (from, to) == ("IN_CONSULTATION", "COMPLETED"),
        "SKIPPED" => (from, to) == ("CALLED", "SKIPPED"),
        // The no-show action, the skip that reaches the limit, and the
        // closing of the slot.
        "NO_SHOW" => matches!(from, "ALLOCATED" | "CALLED" | "SKIPPED") && to == "NO_SHOW",
        "CANCELLED" => {
            matches!(
                from,
                "ALLOCATED" | "WAITLISTED" | "CHECKED_IN" | "CALLED" | "SKIPPED"
            ) && to == "CANCELLED"
        }
        "SLOT_CLOSED" => (from, to) == ("WAITLISTED", "EXPIRED"),
        "DAY_ENDED" => matches!(
            (from, to),
            ("CHECKED_IN" | "CALLED", "EXPIRED")
                | ("SKIPPED", "NO_SHOW")
                | ("IN_CONSULTATION", "COMPLETED")
        ),
        _ => false,
    }
}

pub fn timestamp(at: &str) -> Option<Timestamp> {
    at.parse().ok()
}

/// What is wrong with a token's history by the contract: it must start
/// with a creation, each entry must go on from the status before it by a
/// transition the contract allows, nothing may follow a final status, and
/// time never goes back. `makes` tells which reasons the workload can
/// cause at all: an entry with another reason is wrong too.
pub fn history_problems(history: &[HistoryDto], makes: impl Fn(&str) -> bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut past = Past::default();
    let mut previous: Option<&HistoryDto> = None;
    for entry in history {
        if timestamp(&entry.at).is_none() {
            problems.push(format!("has an unreadable time in {entry:?}"));
        }
        if !makes(&entry.reason) {
            problems.push(format!("has {entry:?}, which nothing sent could cause"));
        }
        match previous {
            None => {
                if entry.from.is_some()
                    || !CREATION.contains(&(entry.reason.as_str(), entry.to.as_str()))
                {
                    problems.push(format!("starts with {entry:?}"));
                }
            }
            Some(before) => {
                if is_final(&before.to) {
                    problems.push(format!("continues after final {before:?}"));
                }
                match entry.from.as_deref() {
                    Some(from) if from == before.to => {
                        if !allowed(&entry.reason, from, &entry.to, &past) {
                            problems
                                .push(format!("has {entry:?}, which the contract forbids there"));
                        }
                    }
                    _ => problems.push(format!("jumps from {before:?} to {entry:?}")),
                }
                if let (Some(earlier), Some(later)) = (timestamp(&before.at), timestamp(&entry.at))
                {
                    if later < earlier {
                        problems.push(format!("goes back in time from {before:?} to {entry:?}"));
                    }
                }
            }
        }
        match entry.reason.as_str() {
            "CHECKED_IN" => past.checked_in = true,
            "CALLED" => past.called = true,
            "SKIPPED" => past.skips += 1,
            _ => {}
        }
        previous = Some(entry);
    }
    if history.is_empty() {
        problems.push("is empty".to_owned());
    }
    if past.skips >= MAX_SKIPS {
        problems.push(format!(
            "has {} skips, though the skip that reaches {MAX_SKIPS} makes a no-show",
            past.skips
        ));
    }
    problems
}
