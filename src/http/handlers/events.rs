use actix_web::{web, HttpResponse};

use super::{check_event_type, parse_json};
use serde_json::json;

use crate::http::auth::{Caller, WRITERS};
use crate::http::dto::PublishEvent;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::runtime::Published;

fn check(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > max {
        return Err(ApiError::bad_request(
            "invalid_event",
            format!("`{field}` must be 1 to {max} characters"),
        ));
    }
    Ok(())
}

/// `POST /api/v1/events` `{type, correlation_key, payload, message_id}`:
/// delivered to the instances whose state waits for it with that business
/// key, or kept until one does. The same `message_id` twice is dropped.
pub async fn publish(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(&WRITERS)?;
    let (body, _): (PublishEvent, String) = parse_json(&body)?;
    check_event_type(&body.event_type)?;
    check("correlation_key", &body.correlation_key, 200)?;
    check("message_id", &body.message_id, 200)?;
    let message_id = body.message_id.clone();
    let result = state
        .runtime
        .publish(
            &caller.tenant_id,
            Published {
                event_type: body.event_type,
                correlation_key: body.correlation_key,
                payload: body.payload,
                message_id: body.message_id,
            },
        )
        .await?;
    let message = if result.duplicate {
        "this message_id was received before; the event was dropped".to_owned()
    } else if result.delivered_to.is_empty() {
        "nothing waits for this event yet; it is kept until an instance does or it expires"
            .to_owned()
    } else {
        format!("delivered to {} instance(s)", result.delivered_to.len())
    };
    Ok(HttpResponse::Ok().json(json!({
        "message_id": message_id,
        "duplicate": result.duplicate,
        "delivered_to": result.delivered_to,
        "kept_until": result.kept_until.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "message": message,
    })))
}
