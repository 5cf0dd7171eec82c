//! Errors under `/fhir` as FHIR `OperationOutcome`s, which FHIR clients
//! read (fhirpy, for one, raises the outcome it finds in an error's body),
//! instead of problem+json.
//!
//! Every error keeps the status, the headers (`WWW-Authenticate`,
//! `Retry-After`, `Allow`) and the place in the error order that the rest
//! of the API gives it; only the body changes. The outcome's one issue
//! carries the FHIR issue type for the status and, as a coding in
//! `details`, the same machine-readable code a problem would carry.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::ERROR_CODES;
use crate::http::error::{ApiError, PROBLEM_JSON};
use crate::service::ServiceError;

/// The media type of every answer under `/fhir`.
pub const FHIR_JSON: &str = "application/fhir+json";

/// The largest problem body the edge rewrites; problems are a few hundred
/// bytes.
const PROBLEM_BYTES_MAX: usize = 64 * 1024;

/// An error of a FHIR route: its status, the FHIR issue type, the
/// project's code and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirError {
    pub status: StatusCode,
    /// A code of http://hl7.org/fhir/issue-type.
    pub issue: &'static str,
    /// The project's code, as problem+json answers carry it.
    pub code: &'static str,
    pub text: String,
}

impl FhirError {
    /// A search parameter or value this server does not take: 400, as
    /// FHIR answers a search it cannot process.
    pub fn invalid(text: impl Into<String>) -> FhirError {
        FhirError {
            status: StatusCode::BAD_REQUEST,
            issue: "invalid",
            code: "INVALID_SEARCH",
            text: text.into(),
        }
    }

    /// A search parameter this server does not know (without `Prefer:
    /// handling=lenient`).
    pub fn unknown_parameter(name: &str, supported: &[&str]) -> FhirError {
        FhirError {
            status: StatusCode::BAD_REQUEST,
            issue: "not-supported",
            code: "UNKNOWN_SEARCH_PARAMETER",
            text: format!(
                "this server does not search by {name:?}; it takes {} (send `Prefer: handling=lenient` to have unknown parameters ignored)",
                supported.join(", ")
            ),
        }
    }

    /// A search that would read more than the server reads for one answer.
    pub fn too_costly(text: impl Into<String>) -> FhirError {
        FhirError {
            status: StatusCode::BAD_REQUEST,
            issue: "too-costly",
            code: "SEARCH_TOO_COSTLY",
            text: text.into(),
        }
    }

    /// A resource that does not exist; `code` as the rest of the API names
    /// it (`SLOT_NOT_FOUND`, …).
    pub fn not_found(code: &'static str, text: impl Into<String>) -> FhirError {
        FhirError {
            status: StatusCode::NOT_FOUND,
            issue: "not-found",
            code,
            text: text.into(),
        }
    }

    /// A `_format` other than JSON.
    pub fn not_acceptable(text: impl Into<String>) -> FhirError {
        FhirError {
            status: StatusCode::NOT_ACCEPTABLE,
            issue: "not-supported",
            code: "NOT_ACCEPTABLE",
            text: text.into(),
        }
    }
}

impl From<ServiceError> for FhirError {
    fn from(error: ServiceError) -> FhirError {
        let error = ApiError::from(error);
        if matches!(error, ApiError::Unavailable) {
            tracing::error!("answering 503: storage cannot make changes durable");
        }
        let status = error.status();
        FhirError {
            status,
            issue: issue_type(status),
            code: error.code(),
            text: error.to_string(),
        }
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        fhir_response(
            self.status,
            outcome(self.status, self.issue, self.code, &self.text),
        )
    }
}

/// A JSON body as a FHIR answer.
pub fn fhir_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// An OperationOutcome with one error issue.
fn outcome(status: StatusCode, issue: &str, code: &str, text: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": if status.is_server_error() { "fatal" } else { "error" },
            "code": issue,
            "details": {
                "coding": [{"system": ERROR_CODES, "code": code}],
                "text": text,
            },
        }],
    })
}

/// The FHIR issue type (http://hl7.org/fhir/issue-type) that fits an
/// error status.
fn issue_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid",
        401 => "login",
        403 => "forbidden",
        404 => "not-found",
        405 | 406 | 415 => "not-supported",
        408 => "timeout",
        409 => "conflict",
        413 => "too-long",
        421 => "security",
        429 => "throttled",
        503 => "transient",
        500..=599 => "exception",
        _ => "processing",
    }
}

/// The answer to a request under `/fhir` with a problem+json error (from
/// the access check, the router or the edge) rewritten as an
/// OperationOutcome: same status, same headers, the problem's code and
/// detail in the outcome. Other answers pass unchanged.
pub async fn from_problem(response: Response) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let problem: Value = match axum::body::to_bytes(body, PROBLEM_BYTES_MAX).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let code = problem["code"].as_str().unwrap_or("HTTP_ERROR");
    let text = problem["detail"].as_str().unwrap_or("the request failed");
    let body = outcome(parts.status, issue_type(parts.status), code, text).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    Response::from_parts(parts, Body::from(body))
}

/// Whether a request path is under `/fhir`, whose errors are outcomes.
pub fn is_fhir_path(path: &str) -> bool {
    path.strip_prefix("/fhir")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_problem_becomes_an_outcome_with_its_status_headers_and_code() {
        let mut problem = ApiError::TooManyRequests {
            retry_after_secs: 3,
        }
        .into_response();
        problem
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        let response = from_problem(problem).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::CONTENT_TYPE], FHIR_JSON);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(response.headers()[header::ALLOW], "GET");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome");
        assert_eq!(body["issue"][0]["code"], "throttled");
        assert_eq!(
            body["issue"][0]["details"]["coding"][0]["code"],
            "RATE_LIMITED"
        );
    }

    #[test]
    fn only_paths_under_fhir_are_fhir_paths() {
        for path in ["/fhir", "/fhir/", "/fhir/Slot", "/fhir/metadata"] {
            assert!(is_fhir_path(path), "{path}");
        }
        for path in ["/", "/fhirx", "/slots", "/FHIR/Slot", "/x/fhir"] {
            assert!(!is_fhir_path(path), "{path}");
        }
    }
}
