use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::engine;
use crate::runtime;

/// An API error: a stable snake_case code, a message for people, and
/// optional details. Internal causes are logged, never returned.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// An opaque 500; the cause goes to the log only.
    #[track_caller]
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        let location = std::panic::Location::caller();
        tracing::error!(error.location = %location, "internal error: {cause}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something went wrong on our side; it has been logged",
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({"error": self.code, "message": self.message});
        if let (Some(details), Some(object)) = (&self.details, body.as_object_mut()) {
            object.insert("details".into(), details.clone());
        }
        HttpResponse::build(self.status).json(body)
    }
}

impl From<runtime::Error> for ApiError {
    #[track_caller]
    fn from(error: runtime::Error) -> ApiError {
        use runtime::Error as R;
        match error {
            R::UnknownWorkflow(name) => ApiError::unprocessable(
                "unknown_workflow",
                format!("there is no workflow `{name}`"),
            ),
            R::UnknownBranch(name) => {
                ApiError::unprocessable("unknown_branch", format!("there is no branch `{name}`"))
            }
            R::TenantNotFound(id) => {
                ApiError::not_found("tenant_not_found", format!("there is no tenant `{id}`"))
            }
            error @ R::BadTimeZone(_) => ApiError::unprocessable("bad_time_zone", error.to_string()),
            R::InstanceNotFound(id) => {
                ApiError::not_found("instance_not_found", format!("there is no instance `{id}`"))
            }
            R::InvalidWorkflow(diagnostics) => ApiError::unprocessable(
                "invalid_workflow",
                format!("the workflow has {} problem(s)", diagnostics.len()),
            )
            .with_details(json!({"diagnostics": diagnostics})),
            R::IdempotencyMismatch => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request body",
            ),
            R::IncidentNotFound(id) => {
                ApiError::not_found("incident_not_found", format!("there is no incident {id}"))
            }
            R::IncidentNotOpen(id) => ApiError::new(
                StatusCode::CONFLICT,
                "incident_not_open",
                format!("incident {id} is not open; only open incidents are retried"),
            ),
            error @ R::ClockNotManual => {
                ApiError::new(StatusCode::CONFLICT, "clock_not_manual", error.to_string())
            }
            error @ R::BadAdvance(_) => ApiError::unprocessable("invalid_duration", error.to_string()),
            error @ R::InvalidTemplate(_) => {
                ApiError::unprocessable("invalid_template", error.to_string())
            }
            error @ R::ReservedEvent(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                "reserved_event",
                format!("{error}: payment.*, refund.*, child.*, action.* and the events of other step kinds come only from the effect behind them"),
            ),
            R::VersionNotFound(name, version) => ApiError::not_found(
                "version_not_found",
                format!("workflow `{name}` has no version {version}"),
            ),
            R::InvalidMigration(message) => ApiError::unprocessable("invalid_migration", message),
            R::Unmigratable(report) => ApiError::unprocessable(
                "unmapped_states",
                format!(
                    "{} instance(s) are in states the target version does not have; map them in `states` (nothing was changed)",
                    report.instances.iter().filter(|i| i.problem.is_some()).count()
                ),
            )
            .with_details(serde_json::to_value(&*report).unwrap_or_default()),
            R::Busy => ApiError::new(
                StatusCode::CONFLICT,
                "instance_busy",
                "the instance kept changing; try again",
            ),
            R::Engine(error) => engine_error(error),
            R::Store(error) => ApiError::internal(&error),
        }
    }
}

fn engine_error(error: engine::Error) -> ApiError {
    use engine::Error as E;
    let message = error.to_string();
    match error {
        E::InvalidInput(problems) => {
            // A bill that does not add up has its own code (docs/payments.md).
            let code = if problems.iter().any(|p| p.code == "bad_bill") {
                "bad_bill"
            } else {
                "invalid_input"
            };
            ApiError::unprocessable(code, message).with_details(json!({"problems": problems}))
        }
        E::InvalidPayload(problems) => ApiError::unprocessable("invalid_payload", message)
            .with_details(json!({"problems": problems})),
        E::EventNotHandled {
            state,
            event_type,
            handled,
        } => ApiError::new(StatusCode::CONFLICT, "event_not_handled", message)
            .with_details(json!({"state": state, "event": event_type, "handled": handled})),
        E::GuardRejected { state, event_type } => {
            ApiError::new(StatusCode::CONFLICT, "guard_rejected", message)
                .with_details(json!({"state": state, "event": event_type}))
        }
        E::Refused {
            state,
            event_type,
            reason,
        } => ApiError::new(StatusCode::CONFLICT, "refused", message)
            .with_details(json!({"state": state, "event": event_type, "reason": reason})),
        E::Expression(_) => ApiError::unprocessable("expression_failed", message),
        E::UnknownState(_) => ApiError::internal(&message),
    }
}
