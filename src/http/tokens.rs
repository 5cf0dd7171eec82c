//! Token routes: book, read, and the actions of the OPD day (check-in,
//! call, start, complete, skip, cancel, no-show).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Json;
use serde_json::Value;
use utoipa_axum::routes;

use super::auth::{Access, DoctorScope};
use super::dto::{ActionDto, BookingDto, HistoryDto, TokenDetailDto, TokenDto};
use super::error::{ApiError, Result};
use super::input::{self, Fields, PathParam};
use super::render;
use super::routes::Routes;
use super::{AppState, Caller};
use crate::engine::{Action, BookRequest, EngineError, PatientId, SlotId, Source};
use crate::service::{Booking, IdempotencyKey};

/// The token routes, registered with their OpenAPI operations so that the
/// document lists exactly what is served, and with who may call them: the
/// desk books and takes a token through every action; a doctor key takes
/// part in its own doctor's consultations (call, start, complete, skip).
pub fn router() -> Routes {
    Routes::new()
        .route(routes!(book), Access::FrontDesk)
        .route(routes!(token), Access::Read(DoctorScope::TokenInPath))
        .route(routes!(check_in), Access::FrontDesk)
        .route(routes!(call), DOCTORS_TOKEN)
        .route(routes!(start), DOCTORS_TOKEN)
        .route(routes!(complete), DOCTORS_TOKEN)
        .route(routes!(skip), DOCTORS_TOKEN)
        .route(routes!(cancel), Access::FrontDesk)
        .route(routes!(no_show), Access::FrontDesk)
}

/// A doctor's action on a token: the desk's too, and a doctor key's for
/// its own doctor's tokens.
const DOCTORS_TOKEN: Access = Access::Clinical(DoctorScope::TokenInPath);

/// Books a token for a patient in a slot.
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    request_body(content = BookTokenBody, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,128}$", description = "1–128 visible ASCII characters; a retry with the same key and body replays the first answer")),
    responses(
        (status = 201, description = "Booked (also a replay of an idempotent retry)", body = BookingDto,
            headers(("Location" = String, description = "/tokens/{tokenId}"))),
        (status = 400, description = "MALFORMED_REQUEST", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "SLOT_NOT_FOUND", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "DUPLICATE_BOOKING (with existingTokenId), WAITLIST_FULL, or OVERBOOK_FULL (an emergency in a slot already holding --overbook-max emergencies beyond its capacity)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "VALIDATION_FAILED or IDEMPOTENCY_KEY_REUSED", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "RATE_LIMITED (this key or address sent too many requests), or IDEMPOTENCY_LIMIT (a new Idempotency-Key while the caller, or the service, remembers as many as it may)", body = super::openapi::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn book(State(app): State<AppState>, request: Request) -> Result<Response> {
    // The request is taken whole, not through the header map extractor,
    // which would copy the headers.
    let (parts, body) = request.into_parts();
    let caller = Caller::of(&parts.extensions);
    let headers = &parts.headers;
    let bytes = input::json_bytes(headers, body, app.body_limit_bytes).await?;
    let (request, key) = booking_request(headers, &bytes)?;
    let booking = app
        .service
        .book(request, key, caller.actor(), render::booking)
        .await?;
    let (Booking::Created(rendered) | Booking::Replayed(rendered)) = booking;
    let location = token_location(&rendered.token);
    // The remembered answer is shared, not copied, into the response.
    let body = bytes::Bytes::from_owner(SharedBody(rendered.body));
    let mut response = json_response(StatusCode::CREATED, body);
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// A JSON answer from an already rendered body.
fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A booking under a new token id.
fn book_request(patient: PatientId, slot: SlotId, source: Source) -> BookRequest {
    BookRequest {
        token: uuid::Uuid::new_v4(),
        patient,
        slot,
        source,
    }
}

/// Reads a booking body into the booking and, when the request has one,
/// its idempotency key with the request's fingerprint. A plain, valid body
/// without an idempotency key
/// (the common case) is read without building a JSON tree; anything else
/// takes the thorough way, which reports every problem at once and
/// fingerprints keyed requests.
fn booking_request(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<(BookRequest, Option<IdempotencyKey>)> {
    if !headers.contains_key(input::IDEMPOTENCY_KEY) {
        if let Some((patient, slot, source)) = input::quick_booking(bytes) {
            return Ok((book_request(patient, slot, source), None));
        }
    }
    let object = input::json_object(bytes)?;
    let mut fields = Fields::new(&object);
    let patient = fields.id("patientId", PatientId::parse);
    let slot = fields.id("slotId", SlotId::parse);
    let source = fields.source("source");
    let key = input::idempotency_key(headers).unwrap_or_else(|error| {
        fields.error(error);
        None
    });
    fields.finish()?;
    let (Some(patient), Some(slot), Some(source)) = (patient, slot, source) else {
        unreachable!("finish() refuses requests with a missing field");
    };
    let key = key.map(|key| IdempotencyKey {
        key,
        fingerprint: input::fingerprint(&Value::Object(object)),
    });
    Ok((book_request(patient, slot, source), key))
}

/// `/tokens/{id}`, the `Location` of a new token.
fn token_location(id: &uuid::Uuid) -> HeaderValue {
    let mut buffer = uuid::Uuid::encode_buffer();
    let mut location = [0u8; 8 + uuid::fmt::Hyphenated::LENGTH];
    location[..8].copy_from_slice(b"/tokens/");
    location[8..].copy_from_slice(id.hyphenated().encode_lower(&mut buffer).as_bytes());
    HeaderValue::from_bytes(&location).expect("a UUID path is a valid header")
}

/// A remembered answer as the bytes of a response body.
struct SharedBody(std::sync::Arc<str>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A token with its history.
#[utoipa::path(
    get,
    path = "/tokens/{tokenId}",
    tag = "tokens",
    params(("tokenId" = uuid::Uuid, Path, description = "Canonical UUID, any letter case")),
    responses(
        (status = 200, body = TokenDetailDto),
        (status = 400, description = "MALFORMED_REQUEST: not a UUID", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "TOKEN_NOT_FOUND", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn token(State(app): State<AppState>, path: PathParam) -> Result<Json<TokenDetailDto>> {
    let id = path.token_id()?;
    let detail = app.service.token(id).await?;
    detail
        .map(|detail| {
            Json(TokenDetailDto {
                token: TokenDto::from(&detail.token),
                history: detail.history.iter().map(HistoryDto::from).collect(),
            })
        })
        .ok_or(ApiError::Engine(EngineError::TokenNotFound(id)))
}

/// Checks a patient in: ALLOCATED → CHECKED_IN (into the doctor's call
/// queue), WAITLISTED → WAITLISTED (sets checkedInAt; promoted later, it
/// becomes CHECKED_IN), SKIPPED → CHECKED_IN (reason RETURNED). Only on
/// the slot's date.
#[utoipa::path(
    post,
    path = "/tokens/{tokenId}/check-in",
    tag = "tokens",
    params(("tokenId" = uuid::Uuid, Path, description = "Canonical UUID, any letter case")),
    responses(
        (status = 200, description = "Checked in", body = ActionDto),
        (status = 400, description = "MALFORMED_REQUEST", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "TOKEN_NOT_FOUND", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "INVALID_TRANSITION, or NOT_TODAY (not the slot's date)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn check_in(
    State(app): State<AppState>,
    path: PathParam,
    request: Request,
) -> Result<Response> {
    act(app, path, request, Action::CheckIn).await
}

/// Calls a CHECKED_IN token to the doctor's room: CALLED. Only on the
/// slot's date, and only while the doctor has nobody CALLED or
/// IN_CONSULTATION.
#[utoipa::path(
    post,
    path = "/tokens/{tokenId}/call",
    tag = "tokens",
    params(("tokenId" = uuid::Uuid, Path, description = "Canonical UUID, any letter case")),
    responses(
        (status = 200, description = "Called", body = ActionDto),
        (status = 400, description = "MALFORMED_REQUEST", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "TOKEN_NOT_FOUND", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "INVALID_TRANSITION, NOT_TODAY, or DOCTOR_BUSY (with currentTokenId)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn call(
    State(app): State<AppState>,
    path: PathParam,
    request: Request,
) -> Result<Response> {
    act(app, path, request, Action::Call).await
}

/// Starts the consultation of a CALLED token: IN_CONSULTATION.
#[utoipa::path(
    post,
    path = "/tokens/{tokenId}/start",
    tag = "tokens",
    params(("tokenId" = uuid::Uuid, Path, description = "Canonical UUID, any letter case")),
    responses(
        (status = 200, description = "In consultation", body = ActionDto),
        (status = 400, description = "MALFORMED_REQUEST", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "TOKEN_NOT_FOUND", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "INVALID_TRANSITION", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start(
    State(app): State<AppState>,
    path: PathParam,
    request: Request,
) -> Result<Response> {
    act(app, path, request, Action::Start).await
}

/// Completes the consultation of an IN_CONSULTATION token: COMPLETED (it
/// keeps its seat).
#[utoipa::path(
    post,
    path = "/tokens/{tokenId}/complete",
    tag = "tokens",
    params(("tokenId" = uuid::Uuid, Path, description = "Canonical UUID, any letter case")),
    responses(
        (status = 200, description = "Completed", body = ActionDto),
        (status = 400, description = "MALFORMED_REQUEST", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "TOKEN_NOT_FOUND", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "INVALID_TRANSITION", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn complete(
    State(app): State<AppState>,
    path: PathParam,
    request: Request,
) -> Result<Response> {
    act(app, path, request, Action::Complete).await
}

/// Skips a CALLED token whose patient did not come: SKIPPED, or NO_SHOW
/// (freeing its seat) on the skip that reaches --max-skips.
#[utoipa::path(
    post,
    path = "/tokens/{tokenId}/skip",
    tag = "tokens",
    params(("tokenId" = uuid::Uuid, Path, description = "Canonical UUID, any letter case")),
    responses(
        (status = 200, description = "Skipped, or a no-show; promotions appear in changes", body = ActionDto),
        (status = 400, description = "MALFORMED_REQUEST", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "TOKEN_NOT_FOUND", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "INVALID_TRANSITION", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn skip(
    State(app): State<AppState>,
    path: PathParam,
    request: Request,
) -> Result<Response> {
    act(app, path, request, Action::Skip).await
}

/// Cancels a token that is ALLOCATED, WAITLISTED, CHECKED_IN, CALLED or
/// SKIPPED.
#[utoipa::path(
    post,
    path = "/tokens/{tokenId}/cancel",
    tag = "tokens",
    params(("tokenId" = uuid::Uuid, Path, description = "Canonical UUID, any letter case")),
    responses(
        (status = 200, description = "Cancelled; promotions appear in changes", body = ActionDto),
        (status = 400, description = "MALFORMED_REQUEST", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "TOKEN_NOT_FOUND", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "INVALID_TRANSITION", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(app): State<AppState>,
    path: PathParam,
    request: Request,
) -> Result<Response> {
    act(app, path, request, Action::Cancel).await
}

/// Marks an ALLOCATED, CALLED or SKIPPED token as a no-show. Only on the
/// slot's date.
#[utoipa::path(
    post,
    path = "/tokens/{tokenId}/no-show",
    tag = "tokens",
    params(("tokenId" = uuid::Uuid, Path, description = "Canonical UUID, any letter case")),
    responses(
        (status = 200, description = "Marked; promotions appear in changes", body = ActionDto),
        (status = 400, description = "MALFORMED_REQUEST", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "TOKEN_NOT_FOUND", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "INVALID_TRANSITION, or NOT_TODAY (not the slot's date)", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn no_show(
    State(app): State<AppState>,
    path: PathParam,
    request: Request,
) -> Result<Response> {
    act(app, path, request, Action::NoShow).await
}

/// An action's answer from an outcome.
pub fn action_response(outcome: &crate::engine::Outcome) -> Response {
    json_response(StatusCode::OK, render::action(outcome))
}

async fn act(app: AppState, path: PathParam, request: Request, action: Action) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let caller = Caller::of(&parts.extensions);
    // The body is ignored, but its size is still bounded.
    input::read_body(&parts.headers, body, app.body_limit_bytes).await?;
    let id = path.token_id()?;
    let outcome = app.service.act(id, action, caller.actor()).await?;
    Ok(action_response(&outcome))
}

/// The body of `POST /tokens`.
#[derive(utoipa::ToSchema)]
#[schema(as = BookTokenRequest, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct BookTokenBody {
    /// 1–64 characters of A–Z a–z 0–9 . _ -
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    patient_id: String,
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    slot_id: String,
    source: super::dto::SourceDto,
}
