//! The doctor's routes: call the next patient, the doctor's queue of the
//! day, the waiting-hall board, and a doctor's absence.

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::HeaderMap;
use axum::Json;
use utoipa_axum::routes;

use super::auth::{Access, DoctorScope};
use super::dto::{AbsenceDto, ActionDto, BoardDto, DoctorQueueDto};
use super::error::{ApiError, FieldError, Result};
use super::input::{self, Fields, PathParam};
use super::routes::Routes;
use super::tokens::action_response;
use super::{AppState, Caller};
use crate::engine::{DoctorId, EngineError};

/// The doctor routes, registered with their OpenAPI operations and with
/// who may call them: a doctor key calls and reads its own doctor's queue
/// only; the board, which carries no patient ids, is every key's.
pub fn router() -> Routes {
    Routes::new()
        .route(
            routes!(call_next),
            Access::Clinical(DoctorScope::DoctorInPath),
        )
        .route(routes!(queue), Access::Read(DoctorScope::DoctorInPath))
        .route(routes!(board), Access::Read(DoctorScope::AnyDoctor))
        .route(routes!(absence), Access::Admin)
}

/// Records that the doctor is absent on a date: every slot of the doctor's
/// date closes, and every active token of them is cancelled with reason
/// DOCTOR_ABSENT and listed, for the desk to phone the patients. A
/// consultation in progress is left to finish. Calling it again changes
/// nothing and answers `changed: false` with nothing cancelled.
#[utoipa::path(
    post,
    path = "/doctors/{doctorId}/absences",
    tag = "doctors",
    params(("doctorId" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body(content = AbsenceBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded (changed: true), or recorded before (changed: false)", body = AbsenceDto),
        (status = 400, description = "MALFORMED_REQUEST", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "DOCTOR_NOT_FOUND: the doctor has no slot at all; SLOT_NOT_FOUND: none on the date", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "VALIDATION_FAILED", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn absence(
    State(app): State<AppState>,
    caller: Caller,
    path: PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<AbsenceDto>> {
    let object = input::json_body(&headers, body, app.body_limit_bytes).await?;
    let mut fields = Fields::new(&object);
    let date = fields.optional_date("date");
    // The date is required: an absence cancels every booking of the day,
    // so it is never taken from a default.
    if date == Some(None) {
        fields.error(FieldError::new("date", "is required"));
    }
    fields.finish()?;
    let date = date.flatten().expect("finish() refuses a missing date");
    let doctor = path.doctor_id()?;
    let absence = app
        .service
        .declare_absence(&doctor, date, caller.actor())
        .await?;
    Ok(Json(AbsenceDto::from(&absence)))
}

/// The body of `POST /doctors/{doctorId}/absences`.
#[derive(utoipa::ToSchema)]
#[schema(as = AbsenceRequest)]
#[allow(dead_code)]
pub struct AbsenceBody {
    /// YYYY-MM-DD: the date the doctor is absent.
    #[schema(format = Date)]
    date: String,
}

/// Calls the first CHECKED_IN token of the doctor's slots dated today, in
/// call order: emergencies first (any slot), then slot start time, then
/// priority, then booking order.
#[utoipa::path(
    post,
    path = "/doctors/{doctorId}/call-next",
    tag = "doctors",
    params(("doctorId" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, description = "Called", body = ActionDto),
        (status = 404, description = "DOCTOR_NOT_FOUND: the doctor has no slot at all", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "DOCTOR_BUSY (with currentTokenId), or QUEUE_EMPTY", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn call_next(
    State(app): State<AppState>,
    path: PathParam,
    request: Request,
) -> Result<axum::response::Response> {
    let (parts, body) = request.into_parts();
    let caller = Caller::of(&parts.extensions);
    // The body is ignored, but its size is still bounded.
    input::read_body(&parts.headers, body, app.body_limit_bytes).await?;
    let doctor = path.doctor_id()?;
    let outcome = app.service.call_next(&doctor, caller.actor()).await?;
    Ok(action_response(&outcome))
}

/// The doctor's day over all of the doctor's slots of the date: the token
/// with the doctor, the call queue, who has not arrived, who was skipped,
/// the waitlist, and how many ended.
#[utoipa::path(
    get,
    path = "/doctors/{doctorId}/queue",
    tag = "doctors",
    params(
        ("doctorId" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,64}$"),
        ("date" = Option<String>, Query, pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description = "YYYY-MM-DD; today in the clinic's zone by default"),
    ),
    responses(
        (status = 200, body = DoctorQueueDto),
        (status = 404, description = "DOCTOR_NOT_FOUND: the doctor has no slot on any date", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "VALIDATION_FAILED", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn queue(
    State(app): State<AppState>,
    path: PathParam,
    query: std::result::Result<
        Query<Vec<(String, String)>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Json<DoctorQueueDto>> {
    let Query(query) = query.map_err(|error| ApiError::Malformed(error.body_text()))?;
    let date = match query.iter().find(|(name, _)| name == "date") {
        None => app.service.today(),
        Some((_, raw)) => input::parse_date(raw).ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new("date", "must be a date YYYY-MM-DD")])
        })?,
    };
    let doctor = path.doctor_id()?;
    let queue = app.service.doctor_queue(&doctor, date).await?;
    queue
        .map(|queue| Json(DoctorQueueDto::from(&queue)))
        .ok_or(ApiError::Engine(EngineError::DoctorNotFound(doctor)))
}

/// Today's waiting-hall board: who is with each doctor and who is next, by
/// token number only (no patient ids: it is shown on a public screen).
#[utoipa::path(
    get,
    path = "/board",
    tag = "doctors",
    params(("doctorId" = Option<Vec<String>>, Query, description = "Repeatable; without it, every doctor with a slot today")),
    responses(
        (status = 200, body = BoardDto),
        (status = 422, description = "VALIDATION_FAILED", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn board(
    State(app): State<AppState>,
    query: std::result::Result<
        Query<Vec<(String, String)>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Json<BoardDto>> {
    let Query(query) = query.map_err(|error| ApiError::Malformed(error.body_text()))?;
    let mut doctors = Vec::new();
    for (_, raw) in query.iter().filter(|(name, _)| name == "doctorId") {
        doctors.push(DoctorId::parse(raw).ok_or_else(|| {
            ApiError::Validation(vec![FieldError::new(
                "doctorId",
                "must be 1–64 characters of A–Z, a–z, 0–9, '.', '_' or '-'",
            )])
        })?);
    }
    let asked = (!doctors.is_empty()).then_some(doctors.as_slice());
    let (date, entries) = app.service.board(asked).await?;
    Ok(Json(BoardDto::new(date, &entries)))
}
