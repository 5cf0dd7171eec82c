//! The edge of the HTTP stack: what every request passes through once, in
//! one layer and one future.
//!
//! - The access check ([`Gate`]), before the request is routed.
//! - Request metrics: every answer is counted by the route template the
//!   gate matched, its method and status, and its duration recorded.
//! - Request ids: a request keeps its `x-request-id` or gets a new UUID,
//!   and the answer carries the same id back.
//! - A debug-level span per request, and an error-level log line for every
//!   5xx answer with its request id and latency.
//! - Panics in a handler become a 500 problem, not a dropped connection.
//! - The request timeout: an answer that is not ready in time is a 408.
//! - Error answers made outside the handlers (axum's 405 with its `Allow`
//!   header, a timeout, a panic, a rejected path) get the problem+json
//!   shape.
//! - Errors under `/fhir` are FHIR OperationOutcomes rather than problems
//!   (see [`fhir::outcome`]), with the same status and headers.
//! - Every answer carries `X-Content-Type-Options: nosniff`, and a 413
//!   carries `Connection: close`, since the connection is closed after it.
//! - A browser's navigation to `/board` is sent to the board's web page
//!   (see [`pages::negotiate`]), and both answers of `/board` say
//!   `Vary: Accept`.
//!
//! These were six tower and tower-http layers (request id, propagation,
//! trace, response mapping, catch-panic, timeout). Each one wraps the next
//! in its own future and touches the headers on its own; together they
//! cost about a fifth of the in-memory booking throughput (see the
//! README's performance section), which this one layer mostly saves.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tower::{Layer, Service};
use tracing::Instrument;

use super::auth::gate::Verdict;
use super::auth::Gate;
use super::error::{self, PROBLEM_JSON};
use super::fhir;
use super::pages;
use super::{take_ready, Answer};

/// The header that carries a request's id both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Tells browsers to take every answer as the media type it declares, never
/// to guess another (a problem+json echoing input read as HTML, say).
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// Wraps a router in [`Edge`].
#[derive(Clone)]
pub struct EdgeLayer {
    pub request_timeout: Duration,
    /// The access check every request passes before it is routed, with
    /// the request metrics (one shared handle for both).
    pub gate: Arc<Gate>,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            request_timeout: self.request_timeout,
            gate: self.gate.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    request_timeout: Duration,
    gate: Arc<Gate>,
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

    fn call(&mut self, mut request: Request) -> Self::Future {
        // Before the gate: a browser navigating to the board gets its page,
        // which needs no key, rather than the API's JSON.
        let varies_with_accept = pages::negotiate(&mut request);
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
        let deadline = started + self.request_timeout;
        let under_fhir = fhir::is_fhir_path(request.uri().path());
        let mut request = request;
        let method = request.method().clone();
        // What needs no read is decided here; it also finds the route
        // template the request is counted under.
        let (route, verdict) = self.gate.check(&mut request);
        let gate = self.gate.clone();
        let router = take_ready(&mut self.inner);
        Box::pin(
            async move {
                let work = admit_and_route(&gate, router, request, verdict);
                let response = answer(work, deadline).await;
                let mut response = problem_for_bare_errors(response);
                if under_fhir {
                    response = fhir::outcome::from_problem(response).await;
                }
                gate.requests().record(
                    route,
                    &method,
                    response.status().as_u16(),
                    started.elapsed(),
                );
                if response.status().is_server_error() {
                    tracing::error!(
                        request_id = id.to_str().unwrap_or("-"),
                        status = response.status().as_u16(),
                        latency_ms = started.elapsed().as_millis() as u64,
                        "request failed"
                    );
                }
                let too_large = response.status() == StatusCode::PAYLOAD_TOO_LARGE;
                let headers = response.headers_mut();
                headers.insert(REQUEST_ID, id);
                headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
                if varies_with_accept {
                    headers.insert(header::VARY, HeaderValue::from_static("accept"));
                }
                // The body of a request refused for its size is not read,
                // so the connection cannot carry another request: say so,
                // and hyper closes it after this answer.
                if too_large {
                    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The rest of the access check, then the router's answer.
async fn admit_and_route<S>(
    gate: &Gate,
    mut router: S,
    mut request: Request,
    verdict: Verdict,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    if let Err(refusal) = gate.admit(verdict, &mut request).await {
        return refusal;
    }
    match router.call(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    }
}

/// The answer of `work`; a 408 when it is not ready by `deadline`, or a
/// 500 when it panics.
///
/// Most answers are ready on their first poll (an in-memory booking whose
/// body came with its head), so the timer is armed only when that poll is
/// pending: registering a timer with tokio and removing it again cost
/// about 5 % of the in-memory booking throughput (see the README's
/// performance section).
async fn answer(work: impl Future<Output = Response>, deadline: Instant) -> Response {
    let mut work = std::pin::pin!(AssertUnwindSafe(work).catch_unwind());
    let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
    let outcome = match first {
        Poll::Ready(outcome) => outcome,
        Poll::Pending => match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(outcome) => outcome,
            Err(_) => return StatusCode::REQUEST_TIMEOUT.into_response(),
        },
    };
    outcome.unwrap_or_else(|_| panicked())
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

/// Gives every error answer the problem+json shape (or, from a FHIR
/// route, leaves its OperationOutcome), including those made
/// by axum (405 with its `Allow` header, rejected paths or queries) and by
/// this layer (408, a caught panic's 500).
fn problem_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    if !is_error {
        return response;
    }
    // FHIR routes answer their own errors as OperationOutcomes.
    let is_shaped = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| {
            let value = value.as_bytes();
            value.starts_with(PROBLEM_JSON.as_bytes())
                || value.starts_with(fhir::FHIR_JSON.as_bytes())
        });
    if is_shaped {
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
