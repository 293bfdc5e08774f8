//! One file per resource.

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
