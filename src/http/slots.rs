//! Slot routes: create, list, read with queues, change capacity, close.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};
use utoipa_axum::routes;

use super::auth::{Access, DoctorScope};
use super::dto::{CapacityChangeDto, SlotDetailDto, SlotSummaryDto};
use super::error::{ApiError, FieldError, Result};
use super::input::{self, Fields, PathParam};
use super::routes::Routes;
use super::{AppState, Caller};
use crate::engine::{DoctorId, EngineError, SlotId, SlotQuery, SlotSpec};
use crate::service::ServiceError;

/// The slot routes, registered with their OpenAPI operations and with who
/// may call them. A path's methods are registered in the order its
/// `Allow` header lists them.
pub fn router() -> Routes {
    Routes::new()
        .route(routes!(list), Access::Read(DoctorScope::SlotList))
        .route(routes!(create), Access::Admin)
        .route(routes!(slot), Access::Read(DoctorScope::SlotInPath))
        .route(routes!(set_capacity), Access::Admin)
        .route(routes!(close), Access::Admin)
}

/// Reads a slot body; a missing `date` means `today`. Schedule files read
/// at start-up hold the same bodies.
pub fn slot_spec(object: &Map<String, Value>, today: jiff::civil::Date) -> Result<SlotSpec> {
    let mut fields = Fields::new(object);
    let id = fields.id("slotId", SlotId::parse);
    let doctor = fields.id("doctorId", DoctorId::parse);
    let date = fields.optional_date("date");
    let start = fields.time("startTime");
    let end = fields.time("endTime");
    let capacity = fields.capacity("capacity");
    fields.finish()?;
    match (id, doctor, date, start, end, capacity) {
        (Some(id), Some(doctor), Some(date), Some(start), Some(end), Some(capacity)) => {
            Ok(SlotSpec {
                id,
                doctor,
                date: date.unwrap_or(today),
                start,
                end,
                capacity,
            })
        }
        _ => unreachable!("finish() refuses requests with a missing field"),
    }
}

/// Creates a slot.
#[utoipa::path(
    post,
    path = "/slots",
    tag = "slots",
    request_body(content = CreateSlotBody, content_type = "application/json"),
    responses(
        (status = 201, body = SlotSummaryDto, headers(("Location" = String, description = "/slots/{slotId}"))),
        (status = 400, description = "MALFORMED_REQUEST", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "SLOT_EXISTS or SLOT_OVERLAP", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "VALIDATION_FAILED", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let object = input::json_body(&headers, body, app.body_limit_bytes).await?;
    let spec = slot_spec(&object, app.service.today())?;
    let summary = app.service.create_slot(spec, caller.actor()).await?;
    let location = HeaderValue::from_str(&format!("/slots/{}", summary.id))
        .expect("slot ids are valid header text");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(SlotSummaryDto::from(&summary)),
    )
        .into_response())
}

/// Lists slots by date, start time and id, one page at a time: when more
/// follow, a `Link` header with `rel="next"` gives the next page's URL.
#[utoipa::path(
    get,
    path = "/slots",
    tag = "slots",
    params(
        ("doctorId" = Option<String>, Query, pattern = r"^[A-Za-z0-9._-]{1,64}$", description = "Only this doctor's slots"),
        ("date" = Option<String>, Query, pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description = "Only slots on this date, YYYY-MM-DD"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "The most slots to list, from 1 to the server's page size (--slots-page-max, default 500), which is also the default"),
        ("after" = Option<String>, Query, pattern = r"^[A-Za-z0-9._-]{1,64}$", description = "List only slots after this existing slot in listing order (a cursor: the last slotId of the previous page)"),
    ),
    responses(
        (status = 200, body = Vec<SlotSummaryDto>, headers(("Link" = String, description = "`</slots?…&after=<last slotId>>; rel=\"next\"` when more slots follow"))),
        (status = 422, description = "VALIDATION_FAILED", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    query: std::result::Result<
        Query<HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response> {
    let Query(query) = query.map_err(|error| ApiError::Malformed(error.body_text()))?;
    let mut errors = Vec::new();
    let doctor = query.get("doctorId").and_then(|raw| {
        DoctorId::parse(raw).or_else(|| {
            errors.push(FieldError::new(
                "doctorId",
                "must be 1–64 characters of A–Z, a–z, 0–9, '.', '_' or '-'",
            ));
            None
        })
    });
    let date = query.get("date").and_then(|raw| {
        input::parse_date(raw).or_else(|| {
            errors.push(FieldError::new("date", "must be a date YYYY-MM-DD"));
            None
        })
    });
    let page_max = app.slots_page_max;
    let limit = match query.get("limit") {
        None => Some(page_max),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=page_max).contains(limit))
            .or_else(|| {
                errors.push(FieldError::new(
                    "limit",
                    format!("must be an integer from 1 to {page_max}"),
                ));
                None
            }),
    };
    let after = query.get("after").and_then(|raw| {
        SlotId::parse(raw).or_else(|| {
            errors.push(FieldError::new("after", "must be the slotId of a slot"));
            None
        })
    });
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let query = SlotQuery {
        doctor,
        date,
        after,
        limit: limit.expect("an invalid limit was refused"),
    };
    let page = match app.service.slots(&query).await {
        Err(ServiceError::Engine(EngineError::SlotNotFound(after))) => {
            return Err(ApiError::Validation(vec![FieldError::new(
                "after",
                format!("no slot {after} exists"),
            )]))
        }
        page => page?,
    };
    let body = Json(
        page.slots
            .iter()
            .map(SlotSummaryDto::from)
            .collect::<Vec<_>>(),
    );
    match page.slots.last().filter(|_| page.more) {
        Some(last) => Ok(([(header::LINK, next_link(&query, &last.id))], body).into_response()),
        None => Ok(body.into_response()),
    }
}

/// The `Link` header leading to the page after `last`, with the same
/// filters and page size. Ids and dates need no escaping in a URL: ids are
/// letters, digits, `.`, `_` and `-`.
fn next_link(query: &SlotQuery, last: &SlotId) -> HeaderValue {
    let mut url = String::from("/slots?");
    if let Some(doctor) = &query.doctor {
        url.push_str(&format!("doctorId={doctor}&"));
    }
    if let Some(date) = query.date {
        url.push_str(&format!("date={date}&"));
    }
    url.push_str(&format!("limit={}&after={last}", query.limit));
    HeaderValue::from_str(&format!("<{url}>; rel=\"next\""))
        .expect("ids and dates are valid header text")
}

/// A slot with its allocated tokens and waitlist.
#[utoipa::path(
    get,
    path = "/slots/{slotId}",
    tag = "slots",
    params(("slotId" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, body = SlotDetailDto),
        (status = 404, description = "SLOT_NOT_FOUND", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn slot(State(app): State<AppState>, path: PathParam) -> Result<Json<SlotDetailDto>> {
    let id = path.slot_id()?;
    let detail = app.service.slot(&id).await?;
    detail
        .map(|detail| Json(SlotDetailDto::from(&detail)))
        .ok_or(ApiError::Engine(EngineError::SlotNotFound(id)))
}

/// Changes a slot's capacity; growth promotes, cuts demote.
#[utoipa::path(
    patch,
    path = "/slots/{slotId}",
    tag = "slots",
    params(("slotId" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body(content = CapacityBody, content_type = "application/json"),
    responses(
        (status = 200, body = CapacityChangeDto),
        (status = 400, description = "MALFORMED_REQUEST", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "SLOT_NOT_FOUND", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "WAITLIST_FULL: the cut would overflow the waitlist", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "VALIDATION_FAILED", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_capacity(
    State(app): State<AppState>,
    caller: Caller,
    path: PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CapacityChangeDto>> {
    let object = input::json_body(&headers, body, app.body_limit_bytes).await?;
    let mut fields = Fields::new(&object);
    let capacity = fields.capacity("capacity");
    fields.finish()?;
    let capacity = capacity.expect("finish() refuses a missing capacity");
    let id = path.slot_id()?;
    let outcome = app
        .service
        .set_capacity(&id, capacity, caller.actor())
        .await?;
    Ok(Json(CapacityChangeDto {
        slot: (&outcome.slot).into(),
        changes: outcome.changes.iter().map(Into::into).collect(),
    }))
}

/// Closes a slot at once: patients who never came become no-shows,
/// waitlisted patients in the hall take the seats so freed, and everyone
/// still waitlisted expires. Patients checked in, called or with the
/// doctor stay.
#[utoipa::path(
    post,
    path = "/slots/{slotId}/close",
    tag = "slots",
    params(("slotId" = String, Path, pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, body = CapacityChangeDto, description = "The slot, closed, and the token changes the closing made, in order"),
        (status = 404, description = "SLOT_NOT_FOUND", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "SLOT_CLOSED: the slot has closed already", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn close(
    State(app): State<AppState>,
    caller: Caller,
    path: PathParam,
) -> Result<Json<CapacityChangeDto>> {
    let id = path.slot_id()?;
    let outcome = app.service.close_slot(&id, caller.actor()).await?;
    Ok(Json(CapacityChangeDto {
        slot: (&outcome.slot).into(),
        changes: outcome.changes.iter().map(Into::into).collect(),
    }))
}

/// The body of `POST /slots`.
#[derive(utoipa::ToSchema)]
#[schema(as = CreateSlotRequest, rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CreateSlotBody {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    slot_id: String,
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    doctor_id: String,
    /// YYYY-MM-DD; defaults to today in the clinic's time zone.
    #[schema(format = Date)]
    date: Option<String>,
    /// HH:MM
    #[schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    start_time: String,
    /// HH:MM, after startTime
    #[schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    end_time: String,
    /// 0 to 10000
    #[schema(maximum = 10_000)]
    capacity: u32,
}

/// The body of `PATCH /slots/{slotId}`.
#[derive(utoipa::ToSchema)]
#[schema(as = ChangeCapacityRequest)]
#[allow(dead_code)]
pub struct CapacityBody {
    /// 0 to 10000
    #[schema(maximum = 10_000)]
    capacity: u32,
}
