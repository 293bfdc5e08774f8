//! The action kinds. Each kind is one file with one `run` function that
//! reads the `ActionContext` and changes data or emits effects. Adding a
//! kind (`issue_code`, `door_key`, `queue.join`) adds a file here and its
//! lines in the registry (`crate::kinds`); the engine core in `step.rs`
//! does not change.

// One file per kind, declared in the registry (`crate::kinds`).
crate::step_kind_modules!(engine);

use chrono::{DateTime, Utc};

use super::{Effect, Error, HistoryEntry};
use crate::dsl::{Action, Scope, WorkflowDef};

/// What an action sees and may change.
pub struct ActionContext<'a> {
    pub def: &'a WorkflowDef,
    pub input: &'a serde_json::Value,
    pub data: &'a mut serde_json::Value,
    pub scope: &'a Scope,
    /// The event being handled (`{type, payload}`); on start, `{type: "start"}`.
    pub event: &'a serde_json::Value,
    pub instance_id: &'a str,
    pub state: &'a str,
    pub now: DateTime<Utc>,
    /// The idempotency key of this action's effect.
    pub key: String,
    pub effects: &'a mut Vec<Effect>,
    pub history: &'a mut Vec<HistoryEntry>,
}

macro_rules! run_action_kinds {
    ($($name:ident => $variant:ident($spec:ty, $action:ty) check $check:path, run $run:path, $doc:literal;)*) => {
        /// Runs one action.
        ///
        /// # Errors
        /// An expression in the action failed.
        pub fn run(action: &Action, context: &mut ActionContext<'_>) -> Result<(), Error> {
            match action {
                $(Action::$variant(action) => $run(action, context),)*
            }
        }
    };
}
crate::step_kinds!(run_action_kinds);
