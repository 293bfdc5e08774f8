//! The workflow DSL: YAML files parsed, checked and compiled into
//! `WorkflowDef`. Owns the file format, its JSON Schema and its Mermaid
//! graph. Does no IO and knows nothing of storage, HTTP or time: callers
//! hand it the source text and a `Catalog` of the templates that exist.

mod cron;
mod def;
mod diagnostic;
pub mod expr;
mod graph;
mod model;
pub(crate) mod validate;
pub mod yaml;

// The step kinds with files of their own (`crate::kinds`).
crate::step_kind_modules!(dsl);

pub use cron::CronSpec;
pub use def::{
    Action, ActionExprs, Channel, Due, PayAction, RefundAction, ScheduleDef, SendAction, SetAction,
    StartAction, StateDef, TimerDef, TransitionDef, WorkflowDef, DEFAULT_KEEP_EVENTS_FOR,
    DEFAULT_PAY_EXPIRES_IN,
};
pub use diagnostic::Diagnostic;
pub use expr::{Expr, Scope};
pub use graph::mermaid;
pub use model::{
    json_schema, ExprText, FieldSpec, Outcome, PayScene, PaySpec, RefundSpec, RetrySpec, SendSpec,
    StartSpec, ValueType, WorkflowFile,
};
pub use validate::{
    check_data_value, check_value, is_event_name, is_identifier, validate, Catalog,
};
