//! The FHIR R4 resources the service's state reads as: a `Schedule` per
//! doctor, a `Slot` per slot, an `Appointment` per token, and the
//! `CapabilityStatement`. docs/fhir.md is the mapping's documentation;
//! each choice is explained there, and the tables below are its source.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::{json, Map, Value};

use super::{ids, NAMESPACE};
use crate::engine::{DoctorId, Reason, SlotSummary, Source, Status};
use crate::service::TokenDetail;

/// The identifier system of patient ids, as `POST /tokens` takes them.
pub const PATIENT_SYSTEM: &str = concat!(namespace!(), "/sid/patient-id");
/// The identifier system of doctor ids.
pub const DOCTOR_SYSTEM: &str = concat!(namespace!(), "/sid/doctor-id");
/// The identifier system of slot ids.
pub const SLOT_SYSTEM: &str = concat!(namespace!(), "/sid/slot-id");
/// The identifier system of token numbers (unique per doctor and date).
pub const TOKEN_NUMBER_SYSTEM: &str = concat!(namespace!(), "/sid/token-number");
/// HL7 v2 table 0276, appointment reason codes.
const V2_APPOINTMENT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v2-0276";

/// The FHIR appointment status of a token status. One arm per status, so
/// a new status does not compile until it is mapped here.
pub fn appointment_status(status: Status) -> &'static str {
    match status {
        Status::Allocated => "booked",
        Status::Waitlisted => "waitlist",
        Status::CheckedIn => "arrived",
        Status::Called => "arrived",
        Status::InConsultation => "fulfilled",
        // Called and did not come: not in the hall as far as anyone knows,
        // and still booked, since the desk may check the patient in again.
        Status::Skipped => "booked",
        Status::Completed => "fulfilled",
        Status::Cancelled => "cancelled",
        Status::NoShow => "noshow",
        // Not seen: the cancellation reason says why (SLOT_CLOSED or
        // DAY_ENDED).
        Status::Expired => "cancelled",
    }
}

/// Every FHIR appointment status (http://hl7.org/fhir/appointmentstatus),
/// for reading a search's `status`.
pub const APPOINTMENT_STATUSES: [&str; 10] = [
    "proposed",
    "pending",
    "booked",
    "arrived",
    "fulfilled",
    "cancelled",
    "noshow",
    "entered-in-error",
    "checked-in",
    "waitlist",
];

/// Every FHIR slot status (http://hl7.org/fhir/slotstatus).
pub const SLOT_STATUSES: [&str; 5] = [
    "busy",
    "free",
    "busy-unavailable",
    "busy-tentative",
    "entered-in-error",
];

/// A slot's FHIR status: free while a seat is free, busy when every seat
/// is taken, busy-unavailable once the slot has closed (it takes no more
/// bookings, whatever its seats).
pub fn slot_status(summary: &SlotSummary) -> &'static str {
    if summary.closed {
        "busy-unavailable"
    } else if summary.available() > 0 {
        "free"
    } else {
        "busy"
    }
}

/// When a slot starts and ends, as instants.
pub fn slot_times(summary: &SlotSummary, zone: &TimeZone) -> (Timestamp, Timestamp) {
    (
        instant(summary.date, summary.start, zone),
        instant(summary.date, summary.end, zone),
    )
}

/// A clinic-local date and time as an instant; a time that the clock
/// skips is taken as after the skip, as for every slot time.
fn instant(date: Date, time: Time, zone: &TimeZone) -> Timestamp {
    zone.to_ambiguous_timestamp(date.to_datetime(time))
        .compatible()
        .unwrap_or(Timestamp::MAX)
}

/// An instant with the clinic's offset, as FHIR `instant` writes it.
fn local_instant(at: Timestamp, zone: &TimeZone) -> String {
    at.to_zoned(zone.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// A reference to a resource of this server by type and the service's id;
/// `None` when the id has no FHIR id.
fn reference(resource_type: &str, id: &str) -> Option<Value> {
    ids::encode(id).map(|id| json!({"reference": format!("{resource_type}/{id}")}))
}

fn extension(name: &str, value_type: &str, value: Value) -> Value {
    let mut object = Map::new();
    object.insert(
        "url".into(),
        format!("{NAMESPACE}/StructureDefinition/{name}").into(),
    );
    object.insert(format!("value{value_type}"), value);
    Value::Object(object)
}

fn coding(code_system: &str, code: &str) -> Value {
    json!({"system": format!("{NAMESPACE}/CodeSystem/{code_system}"), "code": code})
}

/// The Schedule of a doctor; `None` when the doctor id has no FHIR id.
pub fn schedule(doctor: &DoctorId) -> Option<Value> {
    let id = ids::encode(doctor.as_str())?;
    let identifier = json!({"system": DOCTOR_SYSTEM, "value": doctor.as_str()});
    Some(json!({
        "resourceType": "Schedule",
        "id": id,
        "identifier": [identifier],
        "active": true,
        "actor": [{
            "reference": format!("Practitioner/{id}"),
            "type": "Practitioner",
            "identifier": identifier,
        }],
    }))
}

/// The Slot of a slot; `None` when the slot or its doctor has no FHIR id.
pub fn slot(summary: &SlotSummary, zone: &TimeZone) -> Option<Value> {
    let id = ids::encode(summary.id.as_str())?;
    let schedule = reference("Schedule", summary.doctor.as_str())?;
    let (start, end) = slot_times(summary, zone);
    Some(json!({
        "resourceType": "Slot",
        "id": id,
        "extension": [
            extension("slot-capacity", "UnsignedInt", summary.capacity.into()),
            extension("slot-allocated", "UnsignedInt", summary.allocated.into()),
            extension("slot-waitlisted", "UnsignedInt", summary.waitlisted.into()),
            extension("slot-closes-at", "Instant", summary.closes_at.to_string().into()),
        ],
        "identifier": [{"system": SLOT_SYSTEM, "value": summary.id.as_str()}],
        "schedule": schedule,
        "status": slot_status(summary),
        "start": local_instant(start, zone),
        "end": local_instant(end, zone),
        "overbooked": summary.is_overbooked(),
    }))
}

/// The project's source code and the HL7 v2 appointment reason that fits
/// it (code and display, as table 0276 gives them).
fn appointment_type(source: Source) -> Value {
    let (v2_code, v2_display) = match source {
        Source::Emergency => ("EMERGENCY", "Emergency appointment"),
        Source::FollowUp => ("FOLLOWUP", "A follow up visit from a previous appointment"),
        Source::WalkIn => ("WALKIN", "A previously unscheduled walk-in visit"),
        Source::Paid | Source::Online => ("ROUTINE", "Routine appointment - default if not valued"),
    };
    json!({
        "coding": [
            coding("source", source.as_str()),
            {"system": V2_APPOINTMENT_REASON, "code": v2_code, "display": v2_display},
        ],
        "text": source.as_str(),
    })
}

/// The Appointment of a token in `slot` (the token's own slot).
pub fn appointment(detail: &TokenDetail, slot: &SlotSummary, zone: &TimeZone) -> Value {
    let token = &detail.token;
    let status = appointment_status(token.status);
    let reason = detail
        .history
        .last()
        .map_or(Reason::Allocated, |entry| entry.reason);
    let mut extensions = vec![
        extension("token-status", "Code", token.status.as_str().into()),
        extension("token-status-reason", "Code", reason.as_str().into()),
    ];
    if let Some(at) = token.checked_in_at {
        extensions.push(extension("checked-in-at", "Instant", at.to_string().into()));
    }
    if let Some(position) = token.waitlist_position {
        extensions.push(extension(
            "waitlist-position",
            "PositiveInt",
            position.into(),
        ));
    }
    if let Some(position) = token.queue_position {
        extensions.push(extension("queue-position", "PositiveInt", position.into()));
    }
    if let Some(at) = token.estimated_call_at {
        extensions.push(extension(
            "estimated-call-at",
            "Instant",
            at.to_string().into(),
        ));
    }
    let (start, end) = slot_times(slot, zone);
    let mut practitioner = json!({
        "type": "Practitioner",
        "identifier": {"system": DOCTOR_SYSTEM, "value": token.doctor.as_str()},
    });
    if let Some(Value::Object(found)) = reference("Practitioner", token.doctor.as_str()) {
        practitioner
            .as_object_mut()
            .expect("an object")
            .extend(found);
    }
    let mut appointment = json!({
        "resourceType": "Appointment",
        "id": token.id.hyphenated().to_string(),
        "meta": {"lastUpdated": token.updated_at.to_string()},
        "extension": extensions,
        "identifier": [
            {"system": "urn:ietf:rfc:3986", "value": token.id.urn().to_string()},
            {
                "system": TOKEN_NUMBER_SYSTEM,
                "value": token.number.to_string(),
                "period": {"start": token.date.to_string(), "end": token.date.to_string()},
            },
        ],
        "status": status,
        "appointmentType": appointment_type(token.source),
        "priority": token.source.priority().get(),
        "start": local_instant(start, zone),
        "end": local_instant(end, zone),
        "created": token.created_at.to_string(),
        "participant": [
            {
                "actor": {
                    "type": "Patient",
                    "identifier": {"system": PATIENT_SYSTEM, "value": token.patient.as_str()},
                },
                "required": "required",
                "status": "accepted",
            },
            {"actor": practitioner, "required": "required", "status": "accepted"},
        ],
    });
    let object = appointment.as_object_mut().expect("an object");
    // FHIR lets only cancelled appointments (and no-shows) carry a
    // cancellation reason; a no-show's status says it all.
    if status == "cancelled" {
        object.insert(
            "cancelationReason".into(),
            json!({"coding": [coding("token-reason", reason.as_str())], "text": reason.as_str()}),
        );
    }
    if let Some(slot) = reference("Slot", token.slot.as_str()) {
        object.insert("slot".into(), json!([slot]));
    }
    appointment
}
