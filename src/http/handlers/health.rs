//! Operations: liveness, and metrics for Prometheus.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::http::error::ApiError;
use crate::http::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /metrics`: the Prometheus text format. With `O2FLOW_METRICS_TOKEN`
/// set, the caller sends it as a bearer token; without, only callers on
/// this machine may read (a scraper beside o2flow). API keys do not open
/// it: the figures span every tenant.
///
/// # Errors
/// 401 `invalid_metrics_token`, 403 `metrics_local_only`, a store error.
pub async fn metrics(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    match state.runtime.metrics_token() {
        Some(token) => {
            let sent = request
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .unwrap_or_default();
            if !constant_time_eq(sent.as_bytes(), token.as_bytes()) {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_metrics_token",
                    "send `Authorization: Bearer <O2FLOW_METRICS_TOKEN>`",
                ));
            }
        }
        None => {
            let local = request
                .peer_addr()
                .is_some_and(|peer| peer.ip().is_loopback());
            if !local {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "metrics_local_only",
                    "without O2FLOW_METRICS_TOKEN, /metrics answers only on this machine",
                ));
            }
        }
    }
    let text = state
        .runtime
        .metrics_text()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
