//! The HTTP API: routes, JSON shapes, validation and problem+json errors.
//! Handlers parse input into engine types, call the [`Service`], and turn
//! what it returns into DTOs. Nothing below this layer knows JSON.

pub mod auth;
mod backups;
pub mod cors;
mod doctors;
pub mod dto;
pub mod edge;
pub mod error;
pub mod events;
pub mod fhir;
mod health;
pub mod input;
mod me;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod rate_limit;
pub mod render;
pub mod reports;
pub mod routes;
pub mod serve;
pub mod slots;
pub mod tokens;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use axum::Router;
use tower::util::Either;
use tower::Layer;
use tower_http::cors::Cors;

pub use auth::Caller;
use edge::Edge;

use crate::service::Service;
use auth::AccessRules;
use error::ApiError;

/// The future of the API's own middleware service, [`edge::Edge`].
pub type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The service that was made ready, to be called; a clone takes its place
/// for the next request, as tower's readiness contract asks.
fn take_ready<S: Clone>(service: &mut S) -> S {
    let fresh = service.clone();
    std::mem::replace(service, fresh)
}

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    /// Bodies over this size get 413 before anything else is checked.
    pub body_limit_bytes: usize,
    /// The most slots one page of `GET /slots` holds, and its default size.
    pub slots_page_max: usize,
    /// Where clients reach the FHIR routes, when configured; otherwise it
    /// is taken from each request's `Host`.
    pub fhir_base_url: Option<Arc<str>>,
    /// API keys, rate limit and CORS; see [`auth`].
    pub security: Arc<auth::Security>,
    /// Turns true when the server starts to shut down: long-lived answers
    /// (event streams) end then, so that shutting down does not wait for
    /// them.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Hands durable events on to the open event streams.
    pub fanout: Arc<events::Fanout>,
    /// The application's metrics, rendered by `GET /metrics`.
    pub metrics: Arc<metrics::Metrics>,
}

/// The whole API as one service: the routes with their access checks,
/// inside the [`edge::Edge`], inside CORS when it is configured.
pub type App = Either<Cors<Edge<Router>>, Edge<Router>>;

/// The whole API with its middleware.
///
/// # Panics
///
/// When an operation of the API document has no access rule: the access
/// check runs before routing, so such a route would be served unchecked.
/// Routes registered through [`routes::Routes`] always have one; this
/// catches an operation that reached the document another way.
pub fn app(state: AppState, request_timeout: Duration) -> App {
    let cors = state.security.cors();
    let (routes, document, rules) = openapi::api(state.security.is_open());
    let unguarded = operations_without_rule(&document, &rules);
    assert!(
        unguarded.is_empty(),
        "routes without an access rule: {unguarded:?}"
    );
    let router = routes
        .fallback(
            |uri: axum::http::Uri| async move { ApiError::RouteNotFound(uri.path().to_owned()) },
        )
        .with_state(state.clone());
    // The edge wraps the router once, not each route: a per-route layer is
    // cloned, with its boxed inner services, for every request.
    let gate = Arc::new(auth::Gate::new(state, &rules));
    let app = edge::EdgeLayer {
        request_timeout,
        gate,
    }
    .layer(router);
    // Outermost, so preflights need no key and every answer, errors
    // included, carries the CORS headers a browser needs to read it.
    match cors {
        Some(cors) => Either::Left(cors.layer(app)),
        None => Either::Right(app),
    }
}

/// The operations of `document` that no rule of `rules` covers, as
/// `METHOD /path`.
fn operations_without_rule(
    document: &utoipa::openapi::OpenApi,
    rules: &AccessRules,
) -> Vec<String> {
    let mut missing = Vec::new();
    for (path, item) in &document.paths.paths {
        for method in routes::methods(item) {
            if rules.rule(&method, path).is_none() {
                missing.push(format!("{method} {path}"));
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem, Paths};
    use utoipa::openapi::OpenApiBuilder;

    use super::*;

    #[test]
    fn every_served_operation_has_an_access_rule() {
        for open in [false, true] {
            let (_, document, rules) = openapi::api(open);
            assert_eq!(
                operations_without_rule(&document, &rules),
                Vec::<String>::new()
            );
        }
    }

    #[test]
    fn an_operation_without_a_rule_is_found() {
        let paths = Paths::builder()
            .path(
                "/invoices",
                PathItem::new(HttpMethod::Get, OperationBuilder::new().build()),
            )
            .path(
                "/slots",
                PathItem::new(HttpMethod::Delete, OperationBuilder::new().build()),
            )
            .build();
        let document = OpenApiBuilder::new().paths(paths).build();
        assert_eq!(
            operations_without_rule(&document, &openapi::access_rules()),
            vec!["GET /invoices", "DELETE /slots"]
        );
    }
}
