//! The HTTP API: routes, JSON shapes, validation and problem+json errors.
//! Handlers parse input into engine types, call the [`Service`], and turn
//! what it returns into DTOs. Nothing below this layer knows JSON.

pub mod auth;
pub mod dto;
pub mod error;
mod health;
pub mod input;
pub mod openapi;
pub mod rate_limit;
pub mod serve;
pub mod slots;
pub mod tokens;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::Router;
use tower::util::MapResponseLayer;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{OnResponse, TraceLayer};
use tracing::Span;

use crate::engine::Actor;
use crate::service::Service;
use error::{ApiError, PROBLEM_JSON};

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    /// Bodies over this size get 413 before anything else is checked.
    pub body_limit_bytes: usize,
    /// API keys, access rules, rate limit and CORS; see [`auth`].
    pub security: Arc<auth::Security>,
}

/// Who is calling, as resolved by authentication; `anonymous` when the
/// server runs without API keys.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: Arc<str>,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller {
            name: Arc::from("anonymous"),
        }
    }

    pub fn actor(&self) -> Actor {
        self.name.clone()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, Infallible> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(Caller::anonymous))
    }
}

/// The whole API with its middleware.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let cors = state.security.cors();
    let (routes, document) = openapi::api(state.security.is_open());
    let router = routes
        .merge(openapi::docs(document))
        // A route layer sees the matched route; unknown paths get 404 first.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .fallback(
            |uri: axum::http::Uri| async move { ApiError::RouteNotFound(uri.path().to_owned()) },
        )
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(LogServerErrors)
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(MapResponseLayer::new(problem_for_bare_errors))
                .layer(CatchPanicLayer::new())
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    request_timeout,
                )),
        );
    // Outermost, so preflights need no key and every answer, errors
    // included, carries the CORS headers a browser needs to read it.
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// The span around one request: its id, method and path (paths name slots
/// and tokens, never patients). It is a debug span because formatting its
/// fields for every request costs a fifth of the in-memory throughput; at
/// the default level, [`LogServerErrors`] still logs every 5xx with its
/// request id.
fn request_span(request: &Request) -> Span {
    tracing::debug_span!(
        "request",
        id = request_id(request.headers()),
        method = %request.method(),
        path = request.uri().path()
    )
}

fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-")
}

/// Logs every 5xx answer at error level with its request id, method-free
/// so that it needs no span.
#[derive(Clone, Copy)]
struct LogServerErrors;

impl<B> OnResponse<B> for LogServerErrors {
    fn on_response(self, response: &axum::http::Response<B>, latency: Duration, _span: &Span) {
        if response.status().is_server_error() {
            tracing::error!(
                request_id = request_id(response.headers()),
                status = response.status().as_u16(),
                latency_ms = latency.as_millis() as u64,
                "request failed"
            );
        }
    }
}

/// Gives every error answer the problem+json shape, including those made
/// by axum and tower layers (405 with its `Allow` header, 408, a caught
/// panic's 500, rejected paths or queries).
fn problem_for_bare_errors<B>(response: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = response.map(axum::body::Body::new);
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !is_error || is_problem {
        return response;
    }
    let (code, detail) = match status {
        StatusCode::BAD_REQUEST => ("MALFORMED_REQUEST", "the request could not be read"),
        StatusCode::NOT_FOUND => ("NOT_FOUND", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "METHOD_NOT_ALLOWED",
            "this path does not take this method; see the Allow header",
        ),
        StatusCode::REQUEST_TIMEOUT => ("REQUEST_TIMEOUT", "the request took too long"),
        StatusCode::PAYLOAD_TOO_LARGE => ("PAYLOAD_TOO_LARGE", "the request body is too large"),
        _ if status.is_server_error() => {
            tracing::error!(%status, "internal error");
            ("INTERNAL_ERROR", "an internal error occurred")
        }
        _ => ("HTTP_ERROR", "the request failed"),
    };
    let (mut parts, _) = response.into_parts();
    let problem = error::problem(status, code, detail, Default::default());
    let (problem_parts, body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        problem_parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static(PROBLEM_JSON)),
    );
    Response::from_parts(parts, body)
}
