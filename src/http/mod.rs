//! The HTTP API (actix-web, JSON under `/api/v1`).
//!
//! Architecture invariant: this is the only module that knows actix and the
//! JSON shapes of requests and responses (`dto`). Handlers extract, convert,
//! call one runtime function and map the result.

mod auth;
mod dto;
mod error;
mod handlers;
mod routes;

pub use error::ApiError;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServiceResponse};
use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::runtime::Runtime;

/// What every handler can reach.
pub struct AppState {
    /// Changes go through the runtime.
    pub runtime: Arc<Runtime>,
    /// Reads, scoped to the caller's tenant.
    pub reads: crate::store::Reads,
}

/// Builds the HTTP server on an already bound listener (port 0 in tests).
///
/// # Errors
/// The listener cannot be used.
pub fn server(runtime: Arc<Runtime>, listener: TcpListener) -> std::io::Result<Server> {
    let reads = crate::store::Reads::new(runtime.store().clone());
    let state = web::Data::new(AppState { runtime, reads });
    let server = HttpServer::new(move || {
        App::new()
            .wrap(ErrorHandlers::new().default_handler(json_errors))
            .wrap(tracing_actix_web::TracingLogger::default())
            .app_data(state.clone())
            .configure(routes::configure)
    })
    .workers(2)
    .listen(listener)?
    .run();
    Ok(server)
}

/// Errors that actix answers itself (405, 413, …) get the same JSON shape
/// and a stable code as ours; a response that is JSON already passes as is.
fn json_errors<B>(response: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    }
    let status = response.status();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "route_not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal_error",
        _ => "http_error",
    };
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the body is larger than 1 MiB".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => format!(
            "{} is not allowed on {}",
            response.request().method(),
            response.request().path()
        ),
        s => s.canonical_reason().unwrap_or("error").to_owned(),
    };
    let (request, old) = response.into_parts();
    let mut new =
        HttpResponse::build(status).json(serde_json::json!({"error": code, "message": message}));
    for (name, value) in old.headers() {
        if name != CONTENT_TYPE && name != actix_web::http::header::CONTENT_LENGTH {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    new.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, new).map_into_right_body(),
    ))
}
