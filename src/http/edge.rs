//! The edge of the HTTP stack: what every request passes through once, in
//! one layer and one future.
//!
//! - Request ids: a request keeps its `x-request-id` or gets a new UUID,
//!   and the answer carries the same id back.
//! - A debug-level span per request, and an error-level log line for every
//!   5xx answer with its request id and latency.
//! - Panics in a handler become a 500 problem, not a dropped connection.
//! - The request timeout: an answer that is not ready in time is a 408.
//! - Error answers made outside the handlers (axum's 405 with its `Allow`
//!   header, a timeout, a panic, a rejected path) get the problem+json
//!   shape.
//!
//! These were six tower and tower-http layers (request id, propagation,
//! trace, response mapping, catch-panic, timeout). Each one wraps the next
//! in its own future and touches the headers on its own; together they
//! cost about a fifth of the in-memory booking throughput (see the
//! README's performance section), which this one layer mostly saves.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tower::{Layer, Service};
use tracing::Instrument;

use super::error::{self, PROBLEM_JSON};
use super::{take_ready, Answer};

/// The header that carries a request's id both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps a router in [`Edge`].
#[derive(Debug, Clone, Copy)]
pub struct EdgeLayer {
    pub request_timeout: Duration,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            request_timeout: self.request_timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    request_timeout: Duration,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The id is carried by the span and the answer; nothing inside
        // reads it from the request.
        let id = match request.headers().get(&REQUEST_ID) {
            Some(id) => id.clone(),
            None => new_request_id(),
        };
        // Paths name slots and tokens, never patients.
        let span = tracing::debug_span!(
            "request",
            id = id.to_str().unwrap_or("-"),
            method = %request.method(),
            path = request.uri().path()
        );
        let started = Instant::now();
        let mut inner = take_ready(&mut self.inner);
        let called = catch_unwind(AssertUnwindSafe(move || inner.call(request)));
        let timeout = self.request_timeout;
        Box::pin(
            async move {
                let response = match called {
                    Ok(future) => answer(future, timeout).await,
                    Err(_) => panicked(),
                };
                let mut response = problem_for_bare_errors(response);
                if response.status().is_server_error() {
                    tracing::error!(
                        request_id = id.to_str().unwrap_or("-"),
                        status = response.status().as_u16(),
                        latency_ms = started.elapsed().as_millis() as u64,
                        "request failed"
                    );
                }
                response.headers_mut().insert(REQUEST_ID, id);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The handler's answer, a 408 when it is late, or a 500 when it panics.
async fn answer<F>(future: F, timeout: Duration) -> Response
where
    F: Future<Output = Result<Response, Infallible>>,
{
    match tokio::time::timeout(timeout, AssertUnwindSafe(future).catch_unwind()).await {
        Ok(Ok(Ok(response))) => response,
        Ok(Ok(Err(infallible))) => match infallible {},
        Ok(Err(_)) => panicked(),
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

fn panicked() -> Response {
    tracing::error!("a handler panicked");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

/// A random UUID, as the `x-request-id` of a request that came without one.
fn new_request_id() -> HeaderValue {
    let mut buffer = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

/// Gives every error answer the problem+json shape, including those made
/// by axum (405 with its `Allow` header, rejected paths or queries) and by
/// this layer (408, a caught panic's 500).
fn problem_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    if !is_error {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
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
        _ if status.is_server_error() => ("INTERNAL_ERROR", "an internal error occurred"),
        _ => ("HTTP_ERROR", "the request failed"),
    };
    // The original head is kept (an `Allow` header, say); the body and its
    // headers are the problem's.
    let (mut parts, _) = response.into_parts();
    let (_, body) = error::problem(status, code, detail, Default::default()).into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(parts, body)
}
