//! One file per resource.

pub mod clock;
pub mod events;
pub mod health;
pub mod inbox;
pub mod incidents;
pub mod instances;
pub mod payments;
pub mod workflows;

use actix_web::HttpRequest;

use super::error::ApiError;

/// The `Idempotency-Key` header and a hash of the canonical request, if the header is present.
pub fn idempotency(
    request: &HttpRequest,
    canonical: &str,
) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = request.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 200 visible characters",
            )
        })?;
    Ok(Some((
        key.to_owned(),
        crate::store::sha256_hex(canonical.as_bytes()),
    )))
}

/// Parses a JSON body whatever its `Content-Type` (every endpoint takes
/// JSON the same way) and returns it with its canonical text, which
/// idempotency hashes.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<(T, String), ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
    })?;
    let canonical = value.to_string();
    let parsed = serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!("the body is not the JSON expected: {e}"),
        )
    })?;
    Ok((parsed, canonical))
}

/// An event type as the DSL writes them: lower-case words joined by dots
/// (`visit.completed`), at most 100 characters.
pub fn check_event_type(event_type: &str) -> Result<(), ApiError> {
    if event_type.len() > 100 || !crate::dsl::is_event_name(event_type) {
        return Err(ApiError::bad_request(
            "invalid_event",
            format!("`type` must be lower-case words joined by dots, such as `visit.completed` (1 to 100 characters), got {event_type:?}"),
        ));
    }
    Ok(())
}
