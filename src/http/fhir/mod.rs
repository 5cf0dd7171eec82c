//! A read-only HL7 FHIR R4 view of the service for the hospital's other
//! systems: `GET /fhir/metadata`, and read and search of `Schedule` (a
//! doctor), `Slot` (a slot) and `Appointment` (a token), in
//! `application/fhir+json`. docs/fhir.md documents the mapping, the search
//! parameters and every URL the project defines.
//!
//! Everything is read through the service's read methods (the slot
//! listing, a slot with its queues, a token with its history), like the
//! rest of the API, so FHIR answers see exactly what `GET /slots` and
//! `GET /tokens/{id}` see. Errors are OperationOutcomes (see [`outcome`]).

/// The project's namespace for the FHIR extensions, code systems and
/// identifier systems it defines (docs/fhir.md defines each). A macro so
/// that the URLs under it can be constants.
macro_rules! namespace {
    () => {
        "https://opd-token-engine.org/fhir"
    };
}

mod capability;
pub mod ids;
pub mod outcome;
mod resources;
pub mod search;

use std::collections::BTreeSet;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use jiff::civil::Date;
use serde_json::{json, Value};
use utoipa_axum::routes;

use super::auth::{Access, DoctorScope};
use super::input::{self, PathParam};
use super::routes::Routes;
use super::AppState;
use crate::engine::{DoctorId, SlotId, SlotQuery, SlotSummary};
use outcome::{fhir_response, FhirError};
use search::{DateFilter, Params, Search};

pub use outcome::{is_fhir_path, FHIR_JSON};

/// The project's namespace; see docs/fhir.md.
pub const NAMESPACE: &str = namespace!();
/// The code system of the codes errors carry, the same codes problem+json
/// answers carry elsewhere.
pub const ERROR_CODES: &str = concat!(namespace!(), "/CodeSystem/error");

/// The most slots one search reads from the slot listing; a search that
/// would read more is refused as too costly, with a hint to narrow it.
pub const SCAN_SLOTS_MAX: usize = 10_000;
/// The most slots whose queues one Appointment search reads.
pub const APPOINTMENT_SLOTS_MAX: usize = 1_000;
/// The most comma-separated alternatives a reference parameter takes.
pub const REFERENCES_MAX: usize = 20;

/// The FHIR routes with who may call them: the capability statement is
/// public, like the API's own documentation; reads and searches are every
/// role's, a doctor key's for its own doctor only.
pub fn router() -> Routes {
    Routes::new()
        .route(routes!(metadata), Access::Public)
        .route(
            routes!(search_schedules),
            Access::Read(DoctorScope::FhirSearch {
                parameter: "actor",
                target: "Practitioner",
            }),
        )
        .route(
            routes!(read_schedule),
            Access::Read(DoctorScope::FhirSchedule),
        )
        .route(
            routes!(search_slots),
            Access::Read(DoctorScope::FhirSearch {
                parameter: "schedule",
                target: "Schedule",
            }),
        )
        .route(routes!(read_slot), Access::Read(DoctorScope::FhirSlot))
        .route(
            routes!(search_appointments),
            Access::Read(DoctorScope::FhirSearch {
                parameter: "practitioner",
                target: "Practitioner",
            }),
        )
        .route(
            routes!(read_appointment),
            Access::Read(DoctorScope::FhirAppointment),
        )
}

/// Any FHIR resource; docs/fhir.md gives each one's content, and CI
/// validates every resource against the official FHIR R4 JSON schema.
#[derive(utoipa::ToSchema)]
#[schema(as = FhirResource)]
#[allow(dead_code)]
pub struct FhirResourceDoc {
    /// CapabilityStatement, Schedule, Slot, Appointment, Bundle or
    /// OperationOutcome.
    #[schema(rename = "resourceType")]
    resource_type: String,
}

/// A date search value as the OpenAPI document describes it; the server
/// also checks that the date is on the calendar.
#[derive(utoipa::ToSchema)]
#[schema(
    as = FhirDateSearch,
    pattern = r"^((eq|ne|gt|lt|ge|le)?[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+ -][0-9]{2}:[0-9]{2})?)?)?)?)(,(eq|ne|gt|lt|ge|le)?[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+ -][0-9]{2}:[0-9]{2})?)?)?)?)*$"
)]
#[allow(dead_code)]
pub struct FhirDateSearchDoc(String);

type QueryPairs =
    std::result::Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

type Answer = std::result::Result<Response, FhirError>;

/// The base URL of the FHIR routes as clients reach them: the configured
/// one, or `http://` and the request's `Host` with `/fhir`.
fn base_url(app: &AppState, headers: &HeaderMap) -> std::result::Result<String, FhirError> {
    if let Some(base) = &app.fhir_base_url {
        return Ok(base.to_string());
    }
    let host = match headers.get(header::HOST) {
        None => "localhost",
        Some(host) => host
            .to_str()
            .ok()
            .filter(|host| host.parse::<axum::http::uri::Authority>().is_ok())
            .ok_or_else(|| FhirError::invalid("the Host header is not a host name"))?,
    };
    Ok(format!("http://{host}/fhir"))
}

/// Whether the client asked for unknown search parameters to be ignored
/// (`Prefer: handling=lenient`).
fn is_lenient(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split([',', ';']))
        .any(|preference| preference.trim().eq_ignore_ascii_case("handling=lenient"))
}

fn params(query: QueryPairs) -> std::result::Result<Params, FhirError> {
    let Query(pairs) = query.map_err(|error| FhirError::invalid(error.body_text()))?;
    Ok(Params::new(pairs))
}

fn ok(body: Value) -> Answer {
    Ok(fhir_response(StatusCode::OK, body))
}

/// The CapabilityStatement: what this server serves.
#[utoipa::path(
    get,
    path = "/fhir/metadata",
    tag = "fhir",
    security(()),
    responses(
        (status = 200, description = "CapabilityStatement", body = FhirResourceDoc, content_type = "application/fhir+json"),
        (status = 400, description = "OperationOutcome: the Host header is not a host name", body = FhirResourceDoc, content_type = "application/fhir+json"),
    )
)]
pub async fn metadata(State(app): State<AppState>, headers: HeaderMap) -> Answer {
    ok(capability::capability_statement(&base_url(&app, &headers)?))
}

/// A doctor's Schedule.
#[utoipa::path(
    get,
    path = "/fhir/Schedule/{id}",
    tag = "fhir",
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9.-]{1,64}$", description = "The doctor id ('.' written '..', '_' written '.-')")),
    responses(
        (status = 200, description = "Schedule", body = FhirResourceDoc, content_type = "application/fhir+json"),
        (status = 404, description = "OperationOutcome: DOCTOR_NOT_FOUND, no slot of the doctor", body = FhirResourceDoc, content_type = "application/fhir+json"),
    )
)]
pub async fn read_schedule(State(app): State<AppState>, path: PathParam) -> Answer {
    let not_found = || not_found_in_path(&path, "DOCTOR_NOT_FOUND", "doctor");
    let doctor = decoded(&path, DoctorId::parse).ok_or_else(not_found)?;
    if !has_slots(&app, &doctor).await? {
        return Err(not_found());
    }
    ok(resources::schedule(&doctor).ok_or_else(not_found)?)
}

/// The doctor or slot id in the path, decoded from its FHIR form.
fn decoded<T>(path: &PathParam, parse: fn(&str) -> Option<T>) -> Option<T> {
    path.0
        .as_deref()
        .and_then(ids::decode)
        .and_then(|id| parse(&id))
}

/// The 404 for a path whose FHIR id names no `what`.
fn not_found_in_path(path: &PathParam, code: &'static str, what: &str) -> FhirError {
    FhirError::not_found(
        code,
        format!(
            "no {what} has the FHIR id {:?}",
            path.0.as_deref().unwrap_or_default()
        ),
    )
}

/// Whether the doctor has a slot on any date (the service's doctors are
/// those with slots).
async fn has_slots(app: &AppState, doctor: &DoctorId) -> std::result::Result<bool, FhirError> {
    let page = app
        .service
        .slots(&SlotQuery {
            doctor: Some(doctor.clone()),
            date: None,
            after: None,
            limit: 1,
        })
        .await?;
    Ok(!page.slots.is_empty())
}

/// A slot.
#[utoipa::path(
    get,
    path = "/fhir/Slot/{id}",
    tag = "fhir",
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9.-]{1,64}$", description = "The slot id ('.' written '..', '_' written '.-')")),
    responses(
        (status = 200, description = "Slot", body = FhirResourceDoc, content_type = "application/fhir+json"),
        (status = 404, description = "OperationOutcome: SLOT_NOT_FOUND", body = FhirResourceDoc, content_type = "application/fhir+json"),
    )
)]
pub async fn read_slot(State(app): State<AppState>, path: PathParam) -> Answer {
    let not_found = || not_found_in_path(&path, "SLOT_NOT_FOUND", "slot");
    let id = decoded(&path, SlotId::parse).ok_or_else(not_found)?;
    let summary = app.service.slot_summary(&id).await?.ok_or_else(not_found)?;
    ok(resources::slot(&summary, app.service.zone()).ok_or_else(not_found)?)
}

/// A token as an Appointment.
#[utoipa::path(
    get,
    path = "/fhir/Appointment/{id}",
    tag = "fhir",
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9.-]{1,64}$", description = "The token id")),
    responses(
        (status = 200, description = "Appointment", body = FhirResourceDoc, content_type = "application/fhir+json"),
        (status = 404, description = "OperationOutcome: TOKEN_NOT_FOUND", body = FhirResourceDoc, content_type = "application/fhir+json"),
    )
)]
pub async fn read_appointment(State(app): State<AppState>, path: PathParam) -> Answer {
    let raw = path.0.as_deref().unwrap_or_default();
    let not_found =
        || FhirError::not_found("TOKEN_NOT_FOUND", format!("no token has the id {raw:?}"));
    let id = input::token_id(raw).map_err(|_| not_found())?;
    let detail = app.service.token(id).await?.ok_or_else(not_found)?;
    let slot = app
        .service
        .slot_summary(&detail.token.slot)
        .await?
        .ok_or_else(not_found)?;
    ok(resources::appointment(&detail, &slot, app.service.zone()))
}

/// Doctors' Schedules, by doctor id.
#[utoipa::path(
    get,
    path = "/fhir/Schedule",
    tag = "fhir",
    params(
        ("actor" = Option<String>, Query, pattern = r"^[^,]+(,[^,]+)*$", description = "Practitioner/<doctor id>, comma-separated alternatives"),
        ("_count" = Option<u32>, Query, minimum = 0, maximum = 100, description = "Entries per page (default 50)"),
        ("_cursor" = Option<String>, Query, pattern = r"^[A-Za-z0-9._:-]{1,80}$", description = "Where the page starts, as the next link gives it"),
    ),
    responses(
        (status = 200, description = "Bundle (searchset)", body = FhirResourceDoc, content_type = "application/fhir+json"),
        (status = 400, description = "OperationOutcome: an unknown parameter, an invalid value, or a search too costly to answer", body = FhirResourceDoc, content_type = "application/fhir+json"),
        (status = 406, description = "OperationOutcome: a _format other than JSON", body = FhirResourceDoc, content_type = "application/fhir+json"),
    )
)]
pub async fn search_schedules(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Answer {
    let base = base_url(&app, &headers)?;
    let mut params = params(query)?;
    let actors = doctor_references(&params.take("actor")?, "actor", "Practitioner")?;
    let search = params.finish(is_lenient(&headers), &["actor"])?;
    let doctors: BTreeSet<DoctorId> = match actors {
        Some(actors) => {
            let mut found = BTreeSet::new();
            for doctor in actors {
                if has_slots(&app, &doctor).await? {
                    found.insert(doctor);
                }
            }
            found
        }
        None => scan_slots(&app, None, None)
            .await?
            .into_iter()
            .map(|slot| slot.doctor)
            .collect(),
    };
    let matches: Vec<(DoctorId, Value)> = doctors
        .into_iter()
        .filter_map(|doctor| resources::schedule(&doctor).map(|resource| (doctor, resource)))
        .collect();
    let start = match &search.cursor {
        None => 0,
        Some(cursor) => matches.partition_point(|(doctor, _)| doctor.as_str() <= cursor.as_str()),
    };
    let total = matches.len();
    let page: Vec<(DoctorId, Value)> = matches.into_iter().skip(start).take(search.count).collect();
    let next = (search.count > 0 && start + page.len() < total)
        .then(|| page.last().map(|(doctor, _)| doctor.to_string()))
        .flatten();
    ok(bundle(
        &base,
        "Schedule",
        &search,
        total,
        page.into_iter().map(|(_, resource)| resource).collect(),
        next,
    ))
}

/// Slots in listing order (date, start time, slot id).
#[utoipa::path(
    get,
    path = "/fhir/Slot",
    tag = "fhir",
    params(
        ("schedule" = Option<String>, Query, pattern = r"^[^,]+(,[^,]+)*$", description = "Schedule/<doctor id>, comma-separated alternatives"),
        ("start" = Option<Vec<FhirDateSearchDoc>>, Query, description = "Repeatable: [eq|ne|gt|lt|ge|le]YYYY[-MM[-DD[Thh:mm[:ss][Z|±hh:mm]]]]"),
        ("status" = Option<String>, Query, pattern = r"^(free|busy|busy-unavailable|busy-tentative|entered-in-error)(,(free|busy|busy-unavailable|busy-tentative|entered-in-error))*$", description = "Comma-separated alternatives"),
        ("_count" = Option<u32>, Query, minimum = 0, maximum = 100, description = "Entries per page (default 50)"),
        ("_cursor" = Option<String>, Query, pattern = r"^[A-Za-z0-9._:-]{1,80}$", description = "Where the page starts, as the next link gives it"),
    ),
    responses(
        (status = 200, description = "Bundle (searchset)", body = FhirResourceDoc, content_type = "application/fhir+json"),
        (status = 400, description = "OperationOutcome: an unknown parameter, an invalid value, or a search too costly to answer", body = FhirResourceDoc, content_type = "application/fhir+json"),
        (status = 406, description = "OperationOutcome: a _format other than JSON", body = FhirResourceDoc, content_type = "application/fhir+json"),
    )
)]
pub async fn search_slots(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Answer {
    let base = base_url(&app, &headers)?;
    let zone = app.service.zone().clone();
    let mut params = params(query)?;
    let doctors = doctor_references(&params.take("schedule")?, "schedule", "Schedule")?;
    let start = DateFilter::parse(&params.take("start")?, "start", &zone)?;
    let statuses = search::codes(
        &params.take("status")?,
        "status",
        "http://hl7.org/fhir/slotstatus",
        &resources::SLOT_STATUSES,
    )?;
    let search = params.finish(is_lenient(&headers), &["schedule", "start", "status"])?;
    let dates = start.dates(&zone);
    let slots = scan_slots(&app, doctors.as_deref(), dates.as_deref()).await?;
    let matches: Vec<(SlotSummary, Value)> = slots
        .into_iter()
        .filter(|slot| start.matches(resources::slot_times(slot, &zone).0))
        .filter(|slot| statuses.is_empty() || statuses.contains(&resources::slot_status(slot)))
        .filter_map(|slot| resources::slot(&slot, &zone).map(|resource| (slot, resource)))
        .collect();
    let first = match &search.cursor {
        None => 0,
        Some(cursor) => {
            let after = cursor_slot(&app, cursor).await?;
            matches.partition_point(|(slot, _)| listing_key(slot) <= listing_key(&after))
        }
    };
    let total = matches.len();
    let page: Vec<(SlotSummary, Value)> =
        matches.into_iter().skip(first).take(search.count).collect();
    let next = (search.count > 0 && first + page.len() < total)
        .then(|| page.last().map(|(slot, _)| slot.id.to_string()))
        .flatten();
    ok(bundle(
        &base,
        "Slot",
        &search,
        total,
        page.into_iter().map(|(_, resource)| resource).collect(),
        next,
    ))
}

/// Appointments (tokens) in their slots' listing order, then by token
/// number.
#[utoipa::path(
    get,
    path = "/fhir/Appointment",
    tag = "fhir",
    params(
        ("date" = Option<Vec<FhirDateSearchDoc>>, Query, description = "Repeatable: [eq|ne|gt|lt|ge|le]YYYY[-MM[-DD[Thh:mm[:ss][Z|±hh:mm]]]]"),
        ("practitioner" = Option<String>, Query, pattern = r"^[^,]+(,[^,]+)*$", description = "Practitioner/<doctor id>, comma-separated alternatives"),
        ("status" = Option<String>, Query, pattern = r"^(proposed|pending|booked|arrived|fulfilled|cancelled|noshow|entered-in-error|checked-in|waitlist)(,(proposed|pending|booked|arrived|fulfilled|cancelled|noshow|entered-in-error|checked-in|waitlist))*$", description = "Comma-separated alternatives"),
        ("patient:identifier" = Option<String>, Query, pattern = r"^[^,]+(,[^,]+)*$", description = "[system|]<patient id>, comma-separated alternatives"),
        ("slot" = Option<String>, Query, pattern = r"^[^,]+(,[^,]+)*$", description = "Slot/<slot id>, comma-separated alternatives"),
        ("_count" = Option<u32>, Query, minimum = 0, maximum = 100, description = "Entries per page (default 50)"),
        ("_cursor" = Option<String>, Query, pattern = r"^[A-Za-z0-9._:-]{1,80}$", description = "Where the page starts, as the next link gives it"),
    ),
    responses(
        (status = 200, description = "Bundle (searchset)", body = FhirResourceDoc, content_type = "application/fhir+json"),
        (status = 400, description = "OperationOutcome: an unknown parameter, an invalid value, or a search too costly to answer", body = FhirResourceDoc, content_type = "application/fhir+json"),
        (status = 406, description = "OperationOutcome: a _format other than JSON", body = FhirResourceDoc, content_type = "application/fhir+json"),
    )
)]
pub async fn search_appointments(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Answer {
    let base = base_url(&app, &headers)?;
    let zone = app.service.zone().clone();
    let mut params = params(query)?;
    let date = DateFilter::parse(&params.take("date")?, "date", &zone)?;
    let doctors = doctor_references(
        &params.take("practitioner")?,
        "practitioner",
        "Practitioner",
    )?;
    let statuses = search::codes(
        &params.take("status")?,
        "status",
        "http://hl7.org/fhir/appointmentstatus",
        &resources::APPOINTMENT_STATUSES,
    )?;
    let patients = search::identifiers(&params.take("patient:identifier")?);
    let slot_ids = slot_references(&params.take("slot")?)?;
    let search = params.finish(
        is_lenient(&headers),
        &[
            "date",
            "practitioner",
            "status",
            "patient:identifier",
            "slot",
        ],
    )?;

    let slots = match slot_ids {
        Some(ids) => {
            let mut slots = Vec::new();
            for id in ids {
                if let Some(slot) = app.service.slot_summary(&id).await? {
                    if doctors
                        .as_ref()
                        .is_none_or(|doctors| doctors.contains(&slot.doctor))
                    {
                        slots.push(slot);
                    }
                }
            }
            slots.sort_by(|a, b| listing_key(a).cmp(&listing_key(b)));
            slots
        }
        None => scan_slots(&app, doctors.as_deref(), date.dates(&zone).as_deref()).await?,
    };
    let slots: Vec<SlotSummary> = slots
        .into_iter()
        .filter(|slot| date.matches(resources::slot_times(slot, &zone).0))
        .collect();
    if slots.len() > APPOINTMENT_SLOTS_MAX {
        return Err(FhirError::too_costly(format!(
            "this search covers {} slots, and one search reads the queues of at most {APPOINTMENT_SLOTS_MAX}: add practitioner, slot or a narrower date",
            slots.len()
        )));
    }
    // (slot's place in listing order, token number, token id)
    let mut matches: Vec<(usize, u32, uuid::Uuid)> = Vec::new();
    for (place, slot) in slots.iter().enumerate() {
        let Some(detail) = app.service.slot(&slot.id).await? else {
            continue;
        };
        // Tokens that ended without a seat are in no queue, but they are
        // appointments all the same (cancelled, noshow).
        let ended = app
            .service
            .ended_tokens(&slot.id)
            .await?
            .unwrap_or_default();
        for token in detail
            .allocated
            .iter()
            .chain(&detail.waitlist)
            .chain(&ended)
        {
            let status = resources::appointment_status(token.status);
            let wanted_status = statuses.is_empty() || statuses.contains(&status);
            let wanted_patient = patients.is_empty()
                || patients.iter().any(|patient| {
                    patient.matches(resources::PATIENT_SYSTEM, token.patient.as_str())
                });
            if wanted_status && wanted_patient {
                matches.push((place, token.number, token.id));
            }
        }
    }
    matches.sort_unstable();
    let first = match &search.cursor {
        None => 0,
        Some(cursor) => {
            let (slot, number) = cursor
                .rsplit_once(':')
                .and_then(|(slot, number)| Some((slot, number.parse::<u32>().ok()?)))
                .ok_or_else(|| FhirError::invalid("_cursor is not one this server gave"))?;
            let after = cursor_slot(&app, slot).await?;
            matches.partition_point(|(place, token_number, _)| {
                (listing_key(&slots[*place]), *token_number) <= (listing_key(&after), number)
            })
        }
    };
    let total = matches.len();
    let mut entries = Vec::new();
    let mut last = None;
    for &(place, number, id) in matches.iter().skip(first).take(search.count) {
        let slot = &slots[place];
        last = Some(format!("{}:{number}", slot.id));
        if let Some(detail) = app.service.token(id).await? {
            entries.push(resources::appointment(&detail, slot, &zone));
        }
    }
    let next = (search.count > 0 && first + search.count < total)
        .then_some(last)
        .flatten();
    ok(bundle(&base, "Appointment", &search, total, entries, next))
}

/// The doctors a reference parameter names; `None` when it is not given.
/// References to ids no doctor can have match nothing.
fn doctor_references(
    values: &[String],
    name: &str,
    target: &str,
) -> std::result::Result<Option<Vec<DoctorId>>, FhirError> {
    if values.is_empty() {
        return Ok(None);
    }
    let mut doctors = Vec::new();
    for value in bounded_alternatives(values, name)? {
        if let Some(doctor) = search::reference_id(value, target)?
            .as_deref()
            .and_then(DoctorId::parse)
        {
            if !doctors.contains(&doctor) {
                doctors.push(doctor);
            }
        }
    }
    Ok(Some(doctors))
}

/// The slots the `slot` parameter names; `None` when it is not given.
fn slot_references(values: &[String]) -> std::result::Result<Option<Vec<SlotId>>, FhirError> {
    if values.is_empty() {
        return Ok(None);
    }
    let mut slots = Vec::new();
    for value in bounded_alternatives(values, "slot")? {
        if let Some(slot) = search::reference_id(value, "Slot")?
            .as_deref()
            .and_then(SlotId::parse)
        {
            if !slots.contains(&slot) {
                slots.push(slot);
            }
        }
    }
    Ok(Some(slots))
}

/// A reference parameter's alternatives, at most [`REFERENCES_MAX`].
fn bounded_alternatives<'a>(
    values: &'a [String],
    name: &str,
) -> std::result::Result<Vec<&'a str>, FhirError> {
    let alternatives: Vec<&str> = search::either(values).collect();
    if alternatives.len() > REFERENCES_MAX {
        return Err(FhirError::invalid(format!(
            "{name} takes at most {REFERENCES_MAX} references"
        )));
    }
    Ok(alternatives)
}

/// Where a slot stands in listing order.
fn listing_key(slot: &SlotSummary) -> (Date, jiff::civil::Time, &SlotId) {
    (slot.date, slot.start, &slot.id)
}

/// The slot a cursor names: pages go on after it in listing order.
async fn cursor_slot(app: &AppState, cursor: &str) -> std::result::Result<SlotSummary, FhirError> {
    let invalid = || FhirError::invalid("_cursor is not one this server gave");
    let id = SlotId::parse(cursor).ok_or_else(invalid)?;
    app.service.slot_summary(&id).await?.ok_or_else(invalid)
}

/// The slots of the given doctors (or all) on the given dates (or all),
/// in listing order, read page by page from the slot listing; refused as
/// too costly past [`SCAN_SLOTS_MAX`].
async fn scan_slots(
    app: &AppState,
    doctors: Option<&[DoctorId]>,
    dates: Option<&[Date]>,
) -> std::result::Result<Vec<SlotSummary>, FhirError> {
    let doctors: Vec<Option<DoctorId>> = match doctors {
        None => vec![None],
        Some(doctors) => doctors.iter().cloned().map(Some).collect(),
    };
    let dates: Vec<Option<Date>> = match dates {
        None => vec![None],
        Some(dates) => dates.iter().copied().map(Some).collect(),
    };
    let mut slots: Vec<SlotSummary> = Vec::new();
    for doctor in &doctors {
        for date in &dates {
            let mut after = None;
            loop {
                let page = app
                    .service
                    .slots(&SlotQuery {
                        doctor: doctor.clone(),
                        date: *date,
                        after,
                        limit: app.slots_page_max,
                    })
                    .await?;
                if slots.len() + page.slots.len() > SCAN_SLOTS_MAX {
                    return Err(FhirError::too_costly(format!(
                        "this search would read more than {SCAN_SLOTS_MAX} slots: narrow it by doctor (schedule, actor or practitioner) or by a date range of at most {} days",
                        search::RANGE_DAYS_MAX
                    )));
                }
                after = page.slots.last().map(|slot| slot.id.clone());
                slots.extend(page.slots);
                if !page.more {
                    break;
                }
            }
        }
    }
    slots.sort_by(|a, b| listing_key(a).cmp(&listing_key(b)));
    Ok(slots)
}

/// A searchset Bundle of one page, with `self` and, when more follow,
/// `next` links.
fn bundle(
    base: &str,
    resource_type: &str,
    search: &Search,
    total: usize,
    resources: Vec<Value>,
    next_cursor: Option<String>,
) -> Value {
    let mut parameters = search.applied.clone();
    parameters.push(("_count".into(), search.count.to_string()));
    let mut this_page = parameters.clone();
    if let Some(cursor) = &search.cursor {
        this_page.push(("_cursor".into(), cursor.clone()));
    }
    let mut links = vec![json!({
        "relation": "self",
        "url": search::search_url(base, resource_type, &this_page),
    })];
    if let Some(cursor) = next_cursor {
        parameters.push(("_cursor".into(), cursor));
        links.push(json!({
            "relation": "next",
            "url": search::search_url(base, resource_type, &parameters),
        }));
    }
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|resource| {
            let full_url = format!(
                "{base}/{resource_type}/{}",
                resource["id"].as_str().unwrap_or_default()
            );
            json!({"fullUrl": full_url, "resource": resource, "search": {"mode": "match"}})
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
    });
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    bundle
}
