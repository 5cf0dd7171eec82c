//! Every error the API answers with, rendered as RFC 9457
//! `application/problem+json` with a machine-readable `code`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::engine::EngineError;
use crate::service::ServiceError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no route matches {0}")]
    RouteNotFound(String),
    #[error("metrics are turned off on this server (--metrics off)")]
    MetricsOff,
    #[error("the request body is larger than {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("{0}")]
    Malformed(String),
    #[error(
        "slot {0:?} does not exist: slot ids are 1–64 characters of A–Z, a–z, 0–9, '.', '_' or '-'"
    )]
    MalformedSlotId(String),
    /// A doctor id in the path that is not even well formed: no doctor
    /// has it, so 404 like an unknown doctor.
    #[error("doctor {0:?} has no slot")]
    MalformedDoctorId(String),
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    #[error("this caller (or the service) remembers as many Idempotency-Keys as it may; book without a key, or retry after {retry_after_secs} s, when the oldest expires")]
    IdempotencyLimit { retry_after_secs: u64 },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the change could not be made durable; nothing was changed")]
    Unavailable,
    #[error("a valid API key is required: send Authorization: Bearer <key>")]
    Unauthorized,
    #[error("the key's role may not do this")]
    Forbidden,
    #[error("too many requests; retry after {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("this server runs without API keys and answers only requests addressed to localhost, 127.0.0.1 or [::1]")]
    MisdirectedRequest,
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        match error {
            ServiceError::Engine(error) => ApiError::Engine(error),
            ServiceError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            ServiceError::IdempotencyLimit { retry_after } => ApiError::IdempotencyLimit {
                retry_after_secs: super::rate_limit::retry_after_secs(retry_after.unsigned_abs()),
            },
            ServiceError::Unavailable => ApiError::Unavailable,
        }
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::RouteNotFound(_)
            | ApiError::MetricsOff
            | ApiError::MalformedSlotId(_)
            | ApiError::MalformedDoctorId(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) | ApiError::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Engine(error) => match error {
                EngineError::SlotNotFound(_)
                | EngineError::TokenNotFound(_)
                | EngineError::DoctorNotFound(_)
                | EngineError::NoSlotOnDate { .. } => StatusCode::NOT_FOUND,
                EngineError::EndNotAfterStart => StatusCode::UNPROCESSABLE_ENTITY,
                EngineError::SlotExists(_)
                | EngineError::SlotOverlap { .. }
                | EngineError::DuplicateBooking { .. }
                | EngineError::InvalidTransition { .. }
                | EngineError::WaitlistFull { .. }
                | EngineError::OverbookFull { .. }
                | EngineError::TokenIdInUse(_)
                | EngineError::NotToday { .. }
                | EngineError::DoctorBusy { .. }
                | EngineError::QueueEmpty
                | EngineError::SlotClosed { .. } => StatusCode::CONFLICT,
            },
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } | ApiError::IdempotencyLimit { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::RouteNotFound(_) | ApiError::MetricsOff => "NOT_FOUND",
            ApiError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::Malformed(_) => "MALFORMED_REQUEST",
            ApiError::MalformedSlotId(_) => "SLOT_NOT_FOUND",
            ApiError::MalformedDoctorId(_) => "DOCTOR_NOT_FOUND",
            ApiError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::Validation(_) | ApiError::Engine(EngineError::EndNotAfterStart) => {
                "VALIDATION_FAILED"
            }
            ApiError::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ApiError::Engine(error) => match error {
                EngineError::SlotNotFound(_) | EngineError::NoSlotOnDate { .. } => "SLOT_NOT_FOUND",
                EngineError::TokenNotFound(_) => "TOKEN_NOT_FOUND",
                EngineError::SlotExists(_) => "SLOT_EXISTS",
                EngineError::SlotOverlap { .. } => "SLOT_OVERLAP",
                EngineError::DuplicateBooking { .. } => "DUPLICATE_BOOKING",
                EngineError::InvalidTransition { .. } => "INVALID_TRANSITION",
                EngineError::WaitlistFull { .. } => "WAITLIST_FULL",
                EngineError::OverbookFull { .. } => "OVERBOOK_FULL",
                // A random v4 id collided: the client may simply retry.
                EngineError::TokenIdInUse(_) => "TOKEN_ID_CONFLICT",
                EngineError::EndNotAfterStart => "VALIDATION_FAILED",
                EngineError::DoctorNotFound(_) => "DOCTOR_NOT_FOUND",
                EngineError::NotToday { .. } => "NOT_TODAY",
                EngineError::DoctorBusy { .. } => "DOCTOR_BUSY",
                EngineError::QueueEmpty => "QUEUE_EMPTY",
                EngineError::SlotClosed { .. } => "SLOT_CLOSED",
            },
            ApiError::Unavailable => "UNAVAILABLE",
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::Forbidden => "FORBIDDEN",
            ApiError::TooManyRequests { .. } => "RATE_LIMITED",
            ApiError::IdempotencyLimit { .. } => "IDEMPOTENCY_LIMIT",
            ApiError::MisdirectedRequest => "MISDIRECTED_REQUEST",
        }
    }
}

/// The `type` URI of a problem: a URN naming its code.
fn problem_type(code: &str) -> String {
    format!(
        "urn:opd:problem:{}",
        code.to_ascii_lowercase().replace('_', "-")
    )
}

/// Builds a problem response for a status and code; `extra` fields are
/// merged into the top level of the body.
pub fn problem(
    status: StatusCode,
    code: &str,
    detail: &str,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Response {
    let mut body = json!({
        "type": problem_type(code),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    body.as_object_mut()
        .expect("a problem body is an object")
        .extend(extra);
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut extra = serde_json::Map::new();
        match &self {
            ApiError::Validation(errors) => {
                extra.insert("errors".into(), json!(errors));
            }
            ApiError::Engine(EngineError::EndNotAfterStart) => {
                let errors = [FieldError::new("endTime", self.to_string())];
                extra.insert("errors".into(), json!(errors));
            }
            ApiError::Engine(EngineError::DuplicateBooking { existing }) => {
                extra.insert("existingTokenId".into(), json!(existing));
            }
            ApiError::Engine(EngineError::DoctorBusy { current }) => {
                extra.insert("currentTokenId".into(), json!(current));
            }
            ApiError::Unavailable => {
                tracing::error!("answering 503: storage cannot make changes durable");
            }
            _ => {}
        }
        let mut response = problem(self.status(), self.code(), &self.to_string(), extra);
        if let ApiError::TooManyRequests { retry_after_secs }
        | ApiError::IdempotencyLimit { retry_after_secs } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}
