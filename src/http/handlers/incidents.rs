use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::store::{from_ms, IncidentRow};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListIncidents {
    /// `open` (default), `retried` or `all`.
    pub status: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Incident {
    pub id: i64,
    pub instance_id: String,
    pub effect: String,
    pub effect_key: String,
    pub error: String,
    pub status: String,
    pub opened_at: String,
    pub resolved_at: Option<String>,
}

impl From<&IncidentRow> for Incident {
    fn from(row: &IncidentRow) -> Incident {
        let time = |ms: i64| from_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        Incident {
            id: row.id,
            instance_id: row.instance_id.clone(),
            effect: row.kind.clone(),
            effect_key: row.effect_key.clone(),
            error: row.error.clone(),
            status: row.status.clone(),
            opened_at: time(row.created_at_ms),
            resolved_at: row.resolved_at_ms.map(time),
        }
    }
}

/// `GET /api/v1/incidents?status=open|retried|all`: effects that failed for good.
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListIncidents>,
) -> Result<HttpResponse, ApiError> {
    let status = match query.status.as_deref() {
        None | Some("open") => Some("open"),
        Some("retried") => Some("retried"),
        Some("all") => None,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("status `{other}` is not one of open, retried, all"),
            ))
        }
    };
    let rows = state
        .reads
        .incidents(&caller.tenant_id, status, 500)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let incidents: Vec<Incident> = rows.iter().map(Incident::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"incidents": incidents})))
}

/// `POST /api/v1/incidents/{id}/retry`: after the cause is fixed, run the
/// effect again with fresh attempts.
pub async fn retry(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&["admin", "operator"])?;
    let incident = state.runtime.retry_incident(&caller.tenant_id, *id).await?;
    Ok(HttpResponse::Ok().json(Incident::from(&incident)))
}
