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

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::runtime::Runtime;

/// What every handler can reach.
pub struct AppState {
    pub runtime: Arc<Runtime>,
}

/// Builds the HTTP server on an already bound listener (port 0 in tests).
///
/// # Errors
/// The listener cannot be used.
pub fn server(runtime: Arc<Runtime>, listener: TcpListener) -> std::io::Result<Server> {
    let state = web::Data::new(AppState { runtime });
    let server = HttpServer::new(move || {
        App::new()
            .wrap(tracing_actix_web::TracingLogger::default())
            .app_data(state.clone())
            .configure(routes::configure)
    })
    .workers(2)
    .listen(listener)?
    .run();
    Ok(server)
}
