//! The answers to bookings and actions on tokens, written straight
//! into one buffer.
//!
//! These are the busiest answers of the service. Serializing them through
//! the DTOs in [`super::dto`] builds a dozen owned strings per answer and
//! escapes every character of every string; this writer borrows the
//! engine's values, copies strings that need no escaping as they are (ids
//! are validated to `A–Z a–z 0–9 . _ -`), and formats numbers and times
//! without the formatting machinery. The DTOs stay the definition of the
//! shapes (and of the OpenAPI document): the tests check that this writer
//! produces exactly the bytes `serde_json` produces for them.

use jiff::civil::{Date, Time};
use jiff::Timestamp;

use crate::engine::{Change, Outcome, SlotSummary, TokenView};

/// Room for a typical answer with a few changes, so the buffer rarely
/// grows while writing.
const TYPICAL_ANSWER_BYTES: usize = 768;

/// `{"decision","token","changes","slot"}` for `POST /tokens`.
pub fn booking(outcome: &Outcome) -> String {
    let decision = outcome
        .decision()
        .expect("a booking outcome has a decision");
    let mut out = Vec::with_capacity(TYPICAL_ANSWER_BYTES);
    out.extend_from_slice(b"{\"decision\":\"");
    // A decision is named as the reason it records.
    out.extend_from_slice(decision.reason().as_str().as_bytes());
    out.extend_from_slice(b"\",");
    token_changes_slot(&mut out, outcome);
    text(out)
}

/// `{"token","changes","slot"}` for an action on a token.
pub fn action(outcome: &Outcome) -> String {
    let mut out = Vec::with_capacity(TYPICAL_ANSWER_BYTES);
    out.push(b'{');
    token_changes_slot(&mut out, outcome);
    text(out)
}

/// Everything written is UTF-8: ASCII punctuation, digits and names, and
/// strings that were UTF-8 to begin with.
fn text(out: Vec<u8>) -> String {
    String::from_utf8(out).expect("the writer writes UTF-8")
}

fn token_changes_slot(out: &mut Vec<u8>, outcome: &Outcome) {
    out.extend_from_slice(b"\"token\":");
    token(out, &outcome.token);
    out.extend_from_slice(b",\"changes\":[");
    for (index, change) in outcome.changes.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        self::change(out, change);
    }
    out.extend_from_slice(b"],\"slot\":");
    slot(out, &outcome.slot);
    out.push(b'}');
}

fn token(out: &mut Vec<u8>, token: &TokenView) {
    out.extend_from_slice(b"{\"tokenId\":");
    uuid(out, &token.id);
    out.extend_from_slice(b",\"tokenNumber\":");
    number(out, token.number);
    out.extend_from_slice(b",\"patientId\":");
    string(out, token.patient.as_str());
    out.extend_from_slice(b",\"slotId\":");
    string(out, token.slot.as_str());
    out.extend_from_slice(b",\"doctorId\":");
    string(out, token.doctor.as_str());
    out.extend_from_slice(b",\"source\":\"");
    out.extend_from_slice(token.source.as_str().as_bytes());
    out.extend_from_slice(b"\",\"priority\":");
    number(out, u32::from(token.source.priority().get()));
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(token.status.as_str().as_bytes());
    out.extend_from_slice(b"\",\"waitlistPosition\":");
    optional_number(out, token.waitlist_position);
    out.extend_from_slice(b",\"checkedInAt\":");
    optional_timestamp(out, token.checked_in_at);
    out.extend_from_slice(b",\"queuePosition\":");
    optional_number(out, token.queue_position);
    out.extend_from_slice(b",\"estimatedCallAt\":");
    optional_timestamp(out, token.estimated_call_at);
    out.extend_from_slice(b",\"createdAt\":\"");
    timestamp(out, token.created_at);
    out.extend_from_slice(b"\",\"updatedAt\":\"");
    timestamp(out, token.updated_at);
    out.extend_from_slice(b"\"}");
}

fn optional_number(out: &mut Vec<u8>, value: Option<u32>) {
    match value {
        Some(value) => number(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

fn optional_timestamp(out: &mut Vec<u8>, at: Option<Timestamp>) {
    match at {
        Some(at) => {
            out.push(b'"');
            timestamp(out, at);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

fn change(out: &mut Vec<u8>, change: &Change) {
    out.extend_from_slice(b"{\"tokenId\":");
    uuid(out, &change.token);
    out.extend_from_slice(b",\"patientId\":");
    string(out, change.patient.as_str());
    out.extend_from_slice(b",\"from\":\"");
    out.extend_from_slice(change.from.as_str().as_bytes());
    out.extend_from_slice(b"\",\"to\":\"");
    out.extend_from_slice(change.to.as_str().as_bytes());
    out.extend_from_slice(b"\",\"reason\":\"");
    out.extend_from_slice(change.reason.as_str().as_bytes());
    out.extend_from_slice(b"\"}");
}

fn slot(out: &mut Vec<u8>, slot: &SlotSummary) {
    out.extend_from_slice(b"{\"slotId\":");
    string(out, slot.id.as_str());
    out.extend_from_slice(b",\"doctorId\":");
    string(out, slot.doctor.as_str());
    out.extend_from_slice(b",\"date\":\"");
    date(out, slot.date);
    out.extend_from_slice(b"\",\"startTime\":\"");
    time(out, slot.start);
    out.extend_from_slice(b"\",\"endTime\":\"");
    time(out, slot.end);
    out.extend_from_slice(b"\",\"capacity\":");
    number(out, slot.capacity);
    out.extend_from_slice(b",\"allocatedCount\":");
    number(out, slot.allocated);
    out.extend_from_slice(b",\"waitlistCount\":");
    number(out, slot.waitlisted);
    out.extend_from_slice(b",\"available\":");
    number(out, slot.available());
    out.extend_from_slice(b",\"overbooked\":");
    out.extend_from_slice(if slot.is_overbooked() {
        b"true"
    } else {
        b"false"
    });
    out.extend_from_slice(b",\"overbookedBy\":");
    number(out, slot.overbooked_by());
    out.extend_from_slice(if slot.closed {
        b",\"closed\":true,\"closesAt\":\""
    } else {
        b",\"closed\":false,\"closesAt\":\""
    });
    timestamp(out, slot.closes_at);
    out.extend_from_slice(b"\"}");
}

/// A JSON string. Text without quotes, backslashes or control characters
/// (every validated id) is copied as it is; anything else goes through
/// `serde_json`'s escaping.
fn string(out: &mut Vec<u8>, text: &str) {
    let plain = text
        .bytes()
        .all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
    }
}

fn uuid(out: &mut Vec<u8>, id: &uuid::Uuid) {
    let mut buffer = uuid::Uuid::encode_buffer();
    out.push(b'"');
    out.extend_from_slice(id.hyphenated().encode_lower(&mut buffer).as_bytes());
    out.push(b'"');
}

fn number(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Two digits, zero-padded; callers pass 0–99.
fn two_digits(out: &mut Vec<u8>, value: u8) {
    out.extend_from_slice(&[b'0' + value / 10, b'0' + value % 10]);
}

fn four_digits(out: &mut Vec<u8>, value: u16) {
    two_digits(out, (value / 100) as u8);
    two_digits(out, (value % 100) as u8);
}

/// `YYYY-MM-DD`, as `jiff` displays a date, for years 0–9999; other years
/// (never a clinic day) are left to `jiff`.
fn date(out: &mut Vec<u8>, date: Date) {
    match u16::try_from(date.year()) {
        Ok(year) if year <= 9999 => {
            four_digits(out, year);
            out.push(b'-');
            two_digits(out, date.month() as u8);
            out.push(b'-');
            two_digits(out, date.day() as u8);
        }
        _ => out.extend_from_slice(date.to_string().as_bytes()),
    }
}

/// `HH:MM`.
fn time(out: &mut Vec<u8>, time: Time) {
    two_digits(out, time.hour() as u8);
    out.push(b':');
    two_digits(out, time.minute() as u8);
}

/// RFC 3339 in UTC exactly as `jiff` displays a timestamp:
/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the fraction without trailing zeros.
fn timestamp(out: &mut Vec<u8>, at: Timestamp) {
    let utc = jiff::tz::Offset::UTC.to_datetime(at);
    if !(0..=9999).contains(&utc.year()) {
        out.extend_from_slice(at.to_string().as_bytes());
        return;
    }
    date(out, utc.date());
    out.push(b'T');
    two_digits(out, utc.hour() as u8);
    out.push(b':');
    two_digits(out, utc.minute() as u8);
    out.push(b':');
    two_digits(out, utc.second() as u8);
    let nanos = utc.subsec_nanosecond();
    if nanos > 0 {
        let mut digits = [0u8; 9];
        let mut rest = nanos as u32;
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let len = 9 - digits
            .iter()
            .rev()
            .take_while(|&&digit| digit == b'0')
            .count();
        out.push(b'.');
        out.extend_from_slice(&digits[..len]);
    }
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{
        Action, BookRequest, Capacity, Context, Engine, Limits, PatientId, SlotId, SlotSpec, Source,
    };
    use crate::http::dto::{ActionDto, BookingDto};
    use proptest::prelude::*;

    fn serde_booking(outcome: &Outcome) -> String {
        serde_json::to_string(&BookingDto {
            decision: outcome.decision().unwrap().into(),
            token: (&outcome.token).into(),
            changes: outcome.changes.iter().map(Into::into).collect(),
            slot: (&outcome.slot).into(),
        })
        .unwrap()
    }

    fn serde_action(outcome: &Outcome) -> String {
        serde_json::to_string(&ActionDto::from(outcome)).unwrap()
    }

    proptest! {
        /// Every kind of answer the engine gives (free seat, overbooking,
        /// bump with a change, waitlist with positions, promotion on
        /// cancel, every action of the OPD day, with queue positions and
        /// call estimates) is written byte for byte as the DTOs
        /// serialize it, at any time of any day.
        #[test]
        fn answers_match_the_dtos(
            sources in proptest::collection::vec(0usize..5, 1..40),
            actions in proptest::collection::vec((any::<prop::sample::Index>(), 0..Action::ALL.len()), 0..30),
            nanos in 0i64..4_102_444_800_000_000_000,
            step in 0i64..10_000_000_000,
        ) {
            let mut engine = Engine::new(Limits::default());
            let slot = SlotId::parse("D1-09").unwrap();
            engine.create_slot(SlotSpec {
                id: slot.clone(),
                doctor: crate::engine::DoctorId::parse("D1").unwrap(),
                // Later than every generated time, so the slot stays open.
                date: jiff::civil::date(2200, 1, 7),
                start: jiff::civil::time(9, 0, 0, 0),
                end: jiff::civil::time(10, 0, 0, 0),
                capacity: Capacity::new(3).unwrap(),
            }).unwrap();
            let mut at = nanos;
            let mut next_ctx = || {
                at += step;
                Context {
                    at: Timestamp::from_nanosecond(i128::from(at)).unwrap(),
                    actor: "test".into(),
                    today: jiff::civil::date(2200, 1, 7),
                }
            };
            let mut booked = Vec::new();
            for (index, source) in sources.iter().enumerate() {
                let outcome = engine.book(BookRequest {
                    token: uuid::Uuid::from_u128(index as u128 + 1),
                    patient: PatientId::parse(&format!("P{index}")).unwrap(),
                    slot: slot.clone(),
                    source: Source::ALL[*source],
                }, &next_ctx()).unwrap();
                prop_assert_eq!(booking(&outcome), serde_booking(&outcome));
                booked.push(outcome.token.id);
            }
            for (pick, kind) in &actions {
                let id = *pick.get(&booked);
                let kind = Action::ALL[*kind];
                if let Ok(outcome) = engine.act(id, kind, &next_ctx()) {
                    prop_assert_eq!(action(&outcome), serde_action(&outcome));
                }
            }
        }

        #[test]
        fn timestamps_match_jiff(nanos in -377_705_116_800_000_000_000i128..253_402_207_200_000_000_000i128) {
            let at = Timestamp::from_nanosecond(nanos).unwrap();
            let mut out = Vec::new();
            timestamp(&mut out, at);
            prop_assert_eq!(String::from_utf8(out).unwrap(), at.to_string());
        }

        #[test]
        fn strings_match_serde(text in "\\PC*|[\"\\\\\u{0}-\u{1f}a-z]*") {
            let mut out = Vec::new();
            string(&mut out, &text);
            prop_assert_eq!(out, serde_json::to_vec(&text).unwrap());
        }
    }
}
