use std::future::Future;
use std::pin::Pin;

use actix_web::http::StatusCode;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use super::error::ApiError;
use super::AppState;

/// The tenant and role behind the request's `Authorization: Bearer <key>`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: String,
    pub role: String,
}

impl Caller {
    /// # Errors
    /// `forbidden` when the key's role is not among `roles`.
    pub fn require(&self, roles: &[&str]) -> Result<(), ApiError> {
        if roles.contains(&self.role.as_str()) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "a key with role `{}` cannot do this (needs one of: {})",
                    self.role,
                    roles.join(", ")
                ),
            ))
        }
    }
}

impl Caller {
    /// Whether the caller sees personal data in full: the tenant's admin
    /// and the hospital's or hotel's own system (`integration`). Staff
    /// keys (`operator`, `viewer`) see names, phones and e-mail masked and
    /// openids and ID digests hidden.
    pub fn sees_personal_data(&self) -> bool {
        matches!(self.role.as_str(), "admin" | "integration")
    }

    /// Whether the caller sees the links in messages (pay links, later
    /// codes and door keys): they are the patient's or guest's capability,
    /// so only the system that delivers messages to them (`integration`).
    pub fn sees_links(&self) -> bool {
        self.role == "integration"
    }
}

/// Roles that may read an inbox (a patient's messages).
pub const INBOX_READERS: [&str; 3] = ["admin", "operator", "integration"];

/// Roles that may change instances.
pub const WRITERS: [&str; 3] = ["admin", "operator", "integration"];

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let header = request
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let state = request.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let unauthorized = |code: &'static str, message: &str| {
                ApiError::new(StatusCode::UNAUTHORIZED, code, message)
            };
            let Some(header) = header else {
                return Err(unauthorized(
                    "missing_api_key",
                    "send `Authorization: Bearer <key>`; `o2flow keys create` makes a key",
                ));
            };
            let Some(key) = header
                .strip_prefix("Bearer ")
                .map(str::trim)
                .filter(|k| !k.is_empty())
            else {
                return Err(unauthorized(
                    "missing_api_key",
                    "the Authorization header must be `Bearer <key>`",
                ));
            };
            let Some(state) = state else {
                return Err(ApiError::internal(&"application state missing"));
            };
            match state.reads.authenticate(key).await {
                Ok(Some((tenant_id, role))) => Ok(Caller { tenant_id, role }),
                Ok(None) => Err(unauthorized("invalid_api_key", "this API key is not valid")),
                Err(error) => Err(ApiError::internal(&error)),
            }
        })
    }
}
