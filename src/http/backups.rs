//! `POST /admin/backups`: a backup of the embedded store, taken now while
//! the server goes on serving.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::Access;
use super::error::{problem, ApiError};
use super::routes::Routes;
use super::AppState;
use crate::service::BackupError;

/// Backups are an operator's task: admin keys only.
pub fn router() -> Routes {
    Routes::new().route(routes!(take_backup), Access::Admin)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupDto {
    /// The backup's file name: `opd-backup-<UTC time>-e<last event id>.sqlite3`.
    file: String,
    /// Where the server wrote it, on the server's host.
    path: String,
    /// Its size in bytes.
    bytes: u64,
    /// The id of the newest event the backup holds: every change up to
    /// it is in the backup, none after it.
    last_event_id: u64,
    /// When it was taken (RFC 3339).
    taken_at: String,
    /// How long taking it took, in milliseconds.
    duration_ms: u64,
}

/// Takes a backup of the embedded SQLite store now, a consistent snapshot
/// copied while bookings go on (each waits at most about a millisecond
/// for it), into the server's backup directory (`--backup-dir`).
/// 409 `BACKUP_RUNNING` while another backup runs, 409
/// `BACKUP_UNSUPPORTED` on a server in memory or on PostgreSQL (whose
/// backups are the database's own, see the README).
#[utoipa::path(
    post,
    path = "/admin/backups",
    tag = "operations",
    responses(
        (status = 201, body = BackupDto),
        (status = 409, description = "BACKUP_RUNNING, BACKUP_UNSUPPORTED", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 500, description = "BACKUP_FAILED: the backup could not be written (a full or unwritable backup directory); nothing else is affected", body = super::openapi::Problem, content_type = "application/problem+json"),
        (status = 503, description = "UNAVAILABLE: storage has failed", body = super::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn take_backup(State(app): State<AppState>) -> Response {
    match app.service.backup().await {
        Ok(info) => {
            let file = info
                .path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dto = BackupDto {
                file,
                path: info.path.display().to_string(),
                bytes: info.bytes,
                last_event_id: info.last_event,
                taken_at: info.taken_at.to_string(),
                duration_ms: info.duration.as_millis() as u64,
            };
            (StatusCode::CREATED, Json(dto)).into_response()
        }
        Err(BackupError::Unavailable) => ApiError::Unavailable.into_response(),
        Err(error) => {
            let (status, code) = match &error {
                BackupError::Running => (StatusCode::CONFLICT, "BACKUP_RUNNING"),
                BackupError::Unsupported(_) => (StatusCode::CONFLICT, "BACKUP_UNSUPPORTED"),
                BackupError::Failed(_) | BackupError::Unavailable => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "BACKUP_FAILED")
                }
            };
            problem(status, code, &error.to_string(), serde_json::Map::new())
        }
    }
}
