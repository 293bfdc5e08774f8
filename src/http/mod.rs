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
    /// Write requests under way at most (`--max-in-flight`); past it the
    /// API answers 503 `overloaded` with `Retry-After` and changes nothing.
    pub admission: Arc<tokio::sync::Semaphore>,
}

/// How the HTTP side is sized.
#[derive(Debug, Clone, Copy)]
pub struct Sizing {
    /// actix worker threads.
    pub workers: usize,
    /// API write requests (POST) under way at most.
    pub max_in_flight: usize,
}

impl Default for Sizing {
    fn default() -> Sizing {
        Sizing {
            workers: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// Write requests under way at most, unless configured otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// Builds the HTTP server on an already bound listener (port 0 in tests).
///
/// # Errors
/// The listener cannot be used.
pub fn server(
    runtime: Arc<Runtime>,
    listener: TcpListener,
    sizing: Sizing,
) -> std::io::Result<Server> {
    let reads = crate::store::Reads::new(runtime.store().clone());
    let state = web::Data::new(AppState {
        runtime,
        reads,
        admission: Arc::new(tokio::sync::Semaphore::new(sizing.max_in_flight.max(1))),
    });
    let server = HttpServer::new(move || {
        App::new()
            .wrap(ErrorHandlers::new().default_handler(json_errors))
            .wrap(tracing_actix_web::TracingLogger::default())
            .app_data(state.clone())
            .configure(routes::configure)
    })
    .workers(sizing.workers.max(1))
    .listen(listener)?
    .run();
    Ok(server)
}

/// Sheds load past `--max-in-flight` write requests: 503 `overloaded`
/// with `Retry-After: 1`, before anything is read or changed, instead of
/// queueing without bound until connections drop. Reads (and long polls
/// with `?wait=final`) are not counted.
async fn admission(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::ResponseError;
    if request.method() == actix_web::http::Method::GET {
        return Ok(next.call(request).await?.map_into_left_body());
    }
    let permit = request
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.admission.clone().try_acquire_owned().ok());
    let Some(permit) = permit else {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "o2flow is at capacity; nothing was changed: send the same request again after Retry-After",
        )
        .error_response();
        response.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            HeaderValue::from_static("1"),
        );
        return Ok(request.into_response(response).map_into_right_body());
    };
    let response = next.call(request).await;
    drop(permit);
    Ok(response?.map_into_left_body())
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
