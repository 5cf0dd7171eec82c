//! `GET /me`: who the caller's key is. The web pages ask it when a user
//! signs in, to check the key, to show whose screen it is, to offer only
//! what the key's role may do, and to open a doctor key's own queue.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::auth::{Access, DoctorScope, Role};
use super::error::{ApiError, Result};
use super::routes::Routes;
use super::{AppState, Caller};

/// Every key may ask about itself.
pub fn router() -> Routes {
    Routes::new().route(routes!(me), Access::Read(DoctorScope::AnyDoctor))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeDto {
    /// The key's name, recorded as the actor of its changes; `anonymous`
    /// on a server without keys.
    name: String,
    /// `admin`, `front-desk`, `doctor:<doctorId>` or `viewer`, as in the
    /// keys file; `admin` on a server without keys, where every caller may
    /// do everything.
    role: String,
    /// The doctor of a `doctor:<doctorId>` key; `null` for other roles.
    doctor_id: Option<String>,
    /// Today in the clinic's time zone (YYYY-MM-DD): the date the OPD
    /// day's actions take.
    today: String,
}

/// The caller's key: its name and role, and the clinic's date today.
#[utoipa::path(
    get,
    path = "/me",
    tag = "operations",
    responses((status = 200, body = MeDto))
)]
pub async fn me(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Json<MeDto>> {
    let role = match app.security.presented_key(&headers) {
        Some(key) => key.role,
        None if app.security.is_open() => Role::Admin,
        // The key was removed by a reload after the gate admitted it.
        None => return Err(ApiError::Unauthorized),
    };
    let doctor_id = match &role {
        Role::Doctor(doctor) => Some(doctor.as_str().to_owned()),
        _ => None,
    };
    Ok(Json(MeDto {
        name: caller.name.to_string(),
        role: role.to_string(),
        doctor_id,
        today: app.service.today().to_string(),
    }))
}
