use actix_web::{web, HttpResponse};

use crate::http::auth::Caller;
use crate::http::dto::InboxMessage;
use crate::http::error::ApiError;
use crate::http::AppState;

/// `GET /api/v1/inbox/{party_id}`: messages delivered to a party, newest first.
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    party_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let rows = state
        .runtime
        .store()
        .inbox(&caller.tenant_id, &party_id, 200)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let messages: Vec<InboxMessage> = rows.iter().map(InboxMessage::from).collect();
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({"party_id": party_id.as_str(), "messages": messages})))
}
