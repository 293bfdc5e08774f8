//! The server's clock: read it, and move it when o2flow runs with
//! `serve --clock manual` (a flow author trying a 7-day flow in seconds).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::handlers::parse_json;
use crate::http::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advance {
    /// A duration: `90s`, `24h`, `7d`.
    pub by: String,
}

fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub async fn get(state: web::Data<AppState>, _caller: Caller) -> HttpResponse {
    let runtime = &state.runtime;
    let mode = if runtime.clock_is_manual() {
        "manual"
    } else {
        "system"
    };
    HttpResponse::Ok().json(json!({"now": time(runtime.now()), "mode": mode}))
}

/// Moves a manual clock: due timers fire, schedules run and orders expire
/// on the way, in order. Admin keys only.
pub async fn advance(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(&["admin"])?;
    let (request, _) = parse_json::<Advance>(&body)?;
    let by = crate::domain::parse_duration(&request.by).map_err(|e| {
        ApiError::unprocessable(
            "invalid_duration",
            format!("`by` must be a duration such as 90s, 24h or 7d: {e}"),
        )
    })?;
    let advanced = state.runtime.advance_clock(by).await?;
    Ok(HttpResponse::Ok().json(json!({
        "from": time(advanced.from),
        "now": time(advanced.now),
        "stops": advanced.stops,
        "mode": "manual",
    })))
}
