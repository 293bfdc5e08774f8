use actix_web::{web, HttpRequest, HttpResponse};

use super::{check_event_type, idempotency, parse_json};
use crate::engine::Event;
use crate::http::auth::{Caller, WRITERS};
use crate::http::dto::{
    self, EventApplied, History, Instance, InstanceList, ListInstances, Page, PostEvent,
    StartInstance,
};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::runtime::StartRequest;
use crate::store::InstanceFilter;

/// The instance as the caller may see it: personal data masked for staff keys.
fn view(
    caller: &Caller,
    row: &crate::store::InstanceRow,
    timers: Option<&[crate::store::TimerRow]>,
) -> Instance {
    let mut instance = Instance::from_row(row, timers);
    if !caller.sees_personal_data() {
        crate::domain::party::mask_personal(&mut instance.input);
        crate::domain::party::mask_personal(&mut instance.data);
    }
    instance
}

/// `POST /api/v1/instances`: start an instance. 201 when created, 200
/// when the same `Idempotency-Key` and body were seen before.
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(&WRITERS)?;
    let (start, canonical): (StartInstance, String) = parse_json(&body)?;
    let idempotency = idempotency(&request, &canonical)?;
    let (row, created) = state
        .runtime
        .start(
            &caller.tenant_id,
            StartRequest {
                workflow: start.workflow,
                input: start.input,
                branch: start.branch,
                business_key: start.business_key,
                idempotency,
                parent_id: None,
            },
        )
        .await?;
    let body = view(&caller, &row, None);
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// `?wait=final|settled&timeout=30s` on `GET /api/v1/instances/{id}`.
#[derive(Debug, serde::Deserialize)]
pub struct GetInstance {
    pub wait: Option<String>,
    pub timeout: Option<String>,
}

/// How long a `wait=final` waits when the caller names no timeout.
const DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `GET /api/v1/instances/{id}`: state, status, data, pinned version, armed
/// timers. With `?wait=final&timeout=30s` the answer waits until the
/// instance has ended or the timeout (at most 120 s) has passed, then
/// shows it as it is: callers read `status` (`active` when the time ran
/// out), and need neither polling nor a webhook.
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<GetInstance>,
) -> Result<HttpResponse, ApiError> {
    let mut pending_effects = None;
    match wait_for(&query)? {
        Some((Wait::Final, timeout)) => {
            state
                .runtime
                .wait_final(&caller.tenant_id, &id, timeout)
                .await?;
        }
        Some((Wait::Settled, timeout)) => {
            pending_effects = state
                .runtime
                .wait_settled(&caller.tenant_id, &id, timeout)
                .await?
                .map(|(_, pending)| pending);
        }
        None => {}
    }
    let (row, timers) = state
        .reads
        .instance_with_timers(&caller.tenant_id, &id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| {
            ApiError::not_found("instance_not_found", format!("there is no instance `{id}`"))
        })?;
    let instance = view(&caller, &row, Some(&timers));
    match pending_effects {
        // With `wait=settled`: how many effects are still to be done (0
        // unless the time ran out).
        Some(pending) => {
            let mut body = serde_json::to_value(&instance).map_err(|e| ApiError::internal(&e))?;
            if let Some(object) = body.as_object_mut() {
                object.insert("pending_effects".into(), serde_json::json!(pending));
            }
            Ok(HttpResponse::Ok().json(body))
        }
        None => Ok(HttpResponse::Ok().json(instance)),
    }
}

/// What a `GET` waits for.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// The instance has ended.
    Final,
    /// The instance has ended and its last effects are done.
    Settled,
}

/// What to wait for and how long, when the query asks to.
fn wait_for(query: &GetInstance) -> Result<Option<(Wait, std::time::Duration)>, ApiError> {
    let wait = match query.wait.as_deref() {
        None => None,
        Some("final") => Some(Wait::Final),
        Some("settled") => Some(Wait::Settled),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`wait` can only be `final` or `settled` (got `{other}`)"),
            ))
        }
    };
    match (wait, query.timeout.as_deref()) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(ApiError::bad_request(
            "invalid_query",
            "`timeout` goes with `wait=final` or `wait=settled`",
        )),
        (Some(wait), None) => Ok(Some((wait, DEFAULT_WAIT))),
        (Some(wait), Some(text)) => {
            let max = crate::runtime::MAX_WAIT.as_secs();
            crate::domain::parse_duration(text)
                .ok()
                .and_then(|d| d.to_std().ok())
                .filter(|d| d.as_secs() <= max)
                .map(|d| Some((wait, d)))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("`timeout` must be a duration of at most {max}s, such as 30s (got `{text}`)"),
                    )
                })
        }
    }
}

/// `GET /api/v1/instances?workflow=&state=&status=&business_key=&after=&limit=`.
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListInstances>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 500",
        ));
    }
    let filter = InstanceFilter {
        workflow: query.workflow.clone(),
        state: query.state.clone(),
        status: query.status.clone(),
        business_key: query.business_key.clone(),
        after: query.after.clone(),
        limit: limit + 1,
    };
    let mut rows = state
        .reads
        .instances(&caller.tenant_id, &filter)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_after = if more {
        rows.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(InstanceList {
        items: rows.iter().map(|r| view(&caller, r, None)).collect(),
        next_after,
    }))
}

/// `GET /api/v1/instances/{id}/history?from=&limit=`: entries in order.
pub async fn history(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(500).clamp(1, 5000);
    let from = query.from.unwrap_or(0).max(0);
    let rows = state
        .reads
        .history(&caller.tenant_id, &id, from, limit + 1)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| {
            ApiError::not_found("instance_not_found", format!("there is no instance `{id}`"))
        })?;
    let more = rows.len() as u64 > limit;
    let entries: Vec<dto::HistoryEntry> = rows
        .iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(dto::HistoryEntry::from)
        .map(|mut entry| {
            if !caller.sees_personal_data() {
                crate::domain::party::mask_personal(&mut entry.detail);
            }
            entry
        })
        .collect();
    let next_from = if more {
        entries.last().map(|e| e.seq + 1)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(History {
        instance_id: id.into_inner(),
        entries,
        next_from,
    }))
}

async fn apply(
    state: &AppState,
    caller: &Caller,
    id: &str,
    event: Event,
    idempotency: Option<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let result = state
        .runtime
        .send_event(&caller.tenant_id, id, event, idempotency)
        .await?;
    Ok(HttpResponse::Ok().json(EventApplied {
        applied: result.applied,
        instance: view(caller, &result.instance, None),
    }))
}

/// `POST /api/v1/instances/{id}/events` `{type, payload}`.
pub async fn event(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(&WRITERS)?;
    let (posted, canonical): (PostEvent, String) = parse_json(&body)?;
    check_event_type(&posted.event_type)?;
    let idempotency = idempotency(&request, &canonical)?;
    let event = Event::Named {
        event_type: posted.event_type,
        payload: posted.payload,
    };
    apply(&state, &caller, &id, event, idempotency).await
}

/// `POST /api/v1/instances/{id}/cancel` `{reason?}`.
pub async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(&["admin", "operator"])?;
    let (cancel, canonical): (dto::Cancel, String) = if body.iter().all(u8::is_ascii_whitespace) {
        (dto::Cancel::default(), "{}".into())
    } else {
        parse_json(&body)?
    };
    let idempotency = idempotency(&request, &format!("cancel:{canonical}"))?;
    apply(
        &state,
        &caller,
        &id,
        Event::Cancel {
            reason: cancel.reason,
        },
        idempotency,
    )
    .await
}
