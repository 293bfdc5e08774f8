use serde::Serialize;

/// Why the engine refused an event or a start. The instance is unchanged.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("the input is not valid: {}", .0.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
    InvalidInput(Vec<InputProblem>),
    #[error("the event's payload is not valid: {}", .0.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
    InvalidPayload(Vec<InputProblem>),
    #[error("state `{state}` does not handle `{event_type}`{}", handled_list(.handled))]
    EventNotHandled {
        state: String,
        event_type: String,
        handled: Vec<String>,
    },
    #[error("state `{state}` handles `{event_type}`, but no transition's `when` holds")]
    GuardRejected { state: String, event_type: String },
    #[error("state `{state}` refuses `{event_type}`: {reason}")]
    Refused {
        state: String,
        event_type: String,
        reason: String,
    },
    #[error("an expression failed: {0}")]
    Expression(String),
    #[error("the instance is in state `{0}`, which its definition does not have")]
    UnknownState(String),
}

fn handled_list(handled: &[String]) -> String {
    if handled.is_empty() {
        String::new()
    } else {
        format!(" (it handles: {})", handled.join(", "))
    }
}

/// One problem with a start input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputProblem {
    pub field: String,
    pub message: String,
    /// The kind of problem: `invalid_value`, `bad_money`, `bad_bill`, …
    pub code: &'static str,
}
