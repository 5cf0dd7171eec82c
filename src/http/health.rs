//! `GET /healthz`: for load balancers and container health checks.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthDto {
    /// Always `ok` in a 200 answer.
    status: &'static str,
    /// `sqlite` or `memory`.
    storage: &'static str,
}

/// 200 while the service accepts writes; 503 UNAVAILABLE once embedded
/// storage has failed (restart to recover from disk) or while PostgreSQL
/// cannot be reached.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, body = HealthDto),
        (status = 503, description = "UNAVAILABLE", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn healthz(State(app): State<AppState>) -> Response {
    if !app.service.is_healthy().await {
        return ApiError::Unavailable.into_response();
    }
    Json(HealthDto {
        status: "ok",
        storage: app.service.storage_name(),
    })
    .into_response()
}
