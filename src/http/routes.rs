//! The one routing table.

use actix_web::{web, HttpRequest};

use super::error::ApiError;
use super::handlers::{clock, events, health, inbox, incidents, instances, payments, workflows};

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .app_data(
            web::JsonConfig::default()
                .limit(1 << 20)
                .error_handler(|error, _| {
                    ApiError::bad_request(
                        "malformed_json",
                        format!("the body is not the JSON expected: {error}"),
                    )
                    .into()
                }),
        )
        .app_data(web::QueryConfig::default().error_handler(|error, _| {
            ApiError::bad_request(
                "invalid_query",
                format!("the query string is not valid: {error}"),
            )
            .into()
        }))
        .app_data(web::PathConfig::default().error_handler(|error, _| {
            ApiError::bad_request("invalid_path", format!("the path is not valid: {error}")).into()
        }))
        .app_data(web::PayloadConfig::default().limit(1 << 20))
        .route("/healthz", web::get().to(health::healthz))
        .route("/metrics", web::get().to(health::metrics))
        .route(
            "/callbacks/wechatpay/{merchant}",
            web::post().to(payments::callback),
        )
        .route("/p/pay/{token}", web::get().to(payments::page))
        .route("/p/pay/{token}/status", web::get().to(payments::status))
        .route("/p/pay/{token}/qr.svg", web::get().to(payments::qr))
        .route(
            "/p/pay/{token}/sandbox/pay",
            web::post().to(payments::sandbox_pay),
        )
        .route(
            "/p/pay/{token}/sandbox/cancel",
            web::post().to(payments::sandbox_cancel),
        )
        .service(
            web::scope("/api/v1")
                .wrap(actix_web::middleware::from_fn(super::admission))
                .route("/workflows", web::post().to(workflows::deploy))
                .route("/workflows", web::get().to(workflows::list))
                .route("/workflows/{name}", web::get().to(workflows::get))
                .route("/workflows/{name}/graph", web::get().to(workflows::graph))
                .route(
                    "/workflows/{name}/migrations",
                    web::post().to(workflows::migrate),
                )
                .route("/instances", web::post().to(instances::create))
                .route("/instances", web::get().to(instances::list))
                .route("/instances/{id}", web::get().to(instances::get))
                .route("/instances/{id}/history", web::get().to(instances::history))
                .route("/instances/{id}/events", web::post().to(instances::event))
                .route("/instances/{id}/cancel", web::post().to(instances::cancel))
                .route(
                    "/instances/{id}/payments",
                    web::get().to(payments::of_instance),
                )
                .route("/merchants", web::get().to(payments::merchants))
                .route("/events", web::post().to(events::publish))
                .route("/incidents", web::get().to(incidents::list))
                .route("/incidents/{id}/retry", web::post().to(incidents::retry))
                .route("/inbox/{party_id}", web::get().to(inbox::list))
                .route("/clock", web::get().to(clock::get))
                .route("/clock/advance", web::post().to(clock::advance)),
        )
        .default_service(web::to(not_found));
}

async fn not_found(request: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found(
        "route_not_found",
        format!("no route for {} {}", request.method(), request.path()),
    ))
}
