//! Effect executors: each effect kind (`engine::EffectKind`) has one,
//! an `Execute` impl beside the code that does the work, and
//! `dispatch_effects!` lists them once. The dispatch is an exhaustive
//! `match`, so a kind the engine gains without an executor here does not
//! compile, and neither does an executor list naming a type that cannot
//! execute.
//!
//! An executor runs one claimed outbox row and returns what became of it,
//! a `Completion` (done, with the detail its history keeps; a message a
//! channel delivered; or postponed), which the runtime writes with the
//! row's completion: executors never mark a row done themselves, so a
//! claimed batch's completions can be written together. Or it returns a
//! `Failure` that the runtime retries by the effect's policy or turns into
//! `action.failed` and an incident. Nothing here decides an HTTP status.
//!
//! ```
//! use o2flow::engine::SendEffect;
//! use o2flow::runtime::{Completion, Execute, Failure, Runtime};
//! use o2flow::store::OutboxRow;
//!
//! /// A door key, as the keys issue will add it.
//! struct DoorKeyEffect;
//!
//! impl Execute for DoorKeyEffect {
//!     async fn execute(&self, _: &Runtime, _: &OutboxRow) -> Result<Completion, Failure> {
//!         Err(Failure::Permanent("no lock system yet".into()))
//!     }
//! }
//!
//! enum Kinds {
//!     Send(SendEffect),
//!     DoorKey(DoorKeyEffect),
//! }
//!
//! o2flow::dispatch_effects!(dispatch: Kinds { Send, DoorKey });
//! ```
//!
//! Without its executor, a kind does not compile:
//!
//! ```compile_fail,E0277
//! use o2flow::engine::SendEffect;
//!
//! struct DoorKeyEffect;
//!
//! enum Kinds {
//!     Send(SendEffect),
//!     DoorKey(DoorKeyEffect),
//! }
//!
//! o2flow::dispatch_effects!(dispatch: Kinds { Send, DoorKey });
//! ```
//!
//! Nor does a list that leaves a kind out:
//!
//! ```compile_fail,E0004
//! use o2flow::engine::{PayEffect, SendEffect};
//!
//! enum Kinds {
//!     Send(SendEffect),
//!     Pay(PayEffect),
//! }
//!
//! o2flow::dispatch_effects!(dispatch: Kinds { Send });
//! ```

use std::future::Future;

use serde_json::json;

use super::{Error, Runtime, StartRequest};
use crate::domain::RetryPolicy;
use crate::engine::{
    self, EffectKind, Event, NotifyParentEffect, PayEffect, RefundEffect, SendEffect,
    StartChildEffect,
};
use crate::store::{self, OutboxRow};

/// Why an effect failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying with the same key: a timeout, a 5xx, a lost connection.
    Transient(String),
    /// Retrying cannot help: no further attempt.
    Permanent(String),
}

impl From<crate::channels::DeliveryError> for Failure {
    fn from(error: crate::channels::DeliveryError) -> Failure {
        match error {
            crate::channels::DeliveryError::Transient(m) => Failure::Transient(m),
            crate::channels::DeliveryError::Permanent(m) => Failure::Permanent(m),
        }
    }
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Transient(m) | Failure::Permanent(m) => m,
        }
    }
}

/// What became of a claimed outbox row, for the runtime to write with the
/// row's completion.
#[derive(Debug)]
pub enum Completion {
    /// Done: `detail` is kept in the instance's history (`effect_done`;
    /// the runtime adds the effect's kind and key).
    Done(serde_json::Value),
    /// A channel took a message.
    Delivered(crate::channels::Delivered),
    /// Not yet: offered again at `at`, with why.
    Postponed {
        at: chrono::DateTime<chrono::Utc>,
        reason: String,
    },
}

/// Runs one effect of a kind.
pub trait Execute {
    /// Runs the effect of the claimed outbox `row` once and says what
    /// became of it; the runtime writes that.
    fn execute(
        &self,
        runtime: &Runtime,
        row: &OutboxRow,
    ) -> impl Future<Output = Result<Completion, Failure>> + Send;

    /// How a failure is retried, when the action set its own policy.
    fn retry_policy(&self) -> Option<RetryPolicy> {
        None
    }
}

/// Defines `async fn $name(effect: &$enum, runtime, row) -> (Result<Completion, Failure>, Option<RetryPolicy>)`
/// dispatching every variant of `$enum` to its executor: a variant left out
/// is a non-exhaustive match, a variant whose data has no `Execute` impl an
/// unsatisfied bound. Both fail to compile.
#[macro_export]
macro_rules! dispatch_effects {
    ($name:ident : $enum:ident { $($variant:ident),* $(,)? }) => {
        #[allow(dead_code)]
        async fn $name(
            effect: &$enum,
            runtime: &$crate::runtime::Runtime,
            row: &$crate::store::OutboxRow,
        ) -> (
            ::std::result::Result<$crate::runtime::Completion, $crate::runtime::Failure>,
            ::std::option::Option<$crate::domain::RetryPolicy>,
        ) {
            match effect {
                $($enum::$variant(effect) => (
                    $crate::runtime::Execute::execute(effect, runtime, row).await,
                    $crate::runtime::Execute::retry_policy(effect),
                ),)*
            }
        }
    };
}

/// Every effect kind the core lists (`o2flow_core::effect_kinds!`),
/// dispatched to its `Execute` impl: nothing to add here for a new kind.
macro_rules! dispatch_every_effect_kind {
    ($($tag:ident => $variant:ident($effect:ty)),* $(,)?) => {
        dispatch_effects!(dispatch: EffectKind { $($variant),* });
    };
}
o2flow_core::effect_kinds!(dispatch_every_effect_kind);

impl Runtime {
    /// Runs one claimed outbox row through its executor.
    pub(super) async fn execute_row(
        &self,
        row: &OutboxRow,
    ) -> (Result<Completion, Failure>, Option<RetryPolicy>) {
        if row.kind == store::DELIVER_EVENT {
            return (self.deliver_owed(row).await, None);
        }
        match EffectKind::from_stored(&row.kind, &row.payload) {
            Ok(effect) => dispatch(&effect, self, row).await,
            Err(error) => (
                Err(Failure::Permanent(format!(
                    "unreadable `{}` effect: {error}",
                    row.kind
                ))),
                None,
            ),
        }
    }
}

impl Execute for SendEffect {
    async fn execute(&self, runtime: &Runtime, row: &OutboxRow) -> Result<Completion, Failure> {
        runtime.deliver(row, self).await
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        self.retry
    }
}

impl Execute for PayEffect {
    async fn execute(&self, runtime: &Runtime, row: &OutboxRow) -> Result<Completion, Failure> {
        runtime.execute_pay(row, self).await
    }
}

impl Execute for RefundEffect {
    async fn execute(&self, runtime: &Runtime, row: &OutboxRow) -> Result<Completion, Failure> {
        runtime.execute_refund(row, self).await
    }
}

/// Starts a child instance once: the start carries the effect's key as its
/// idempotency key.
impl Execute for StartChildEffect {
    async fn execute(&self, runtime: &Runtime, row: &OutboxRow) -> Result<Completion, Failure> {
        let parent = runtime
            .store
            .instance(&row.tenant_id, &self.parent_id)
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        let request = StartRequest {
            workflow: self.workflow.clone(),
            input: self.input.clone(),
            branch: parent.map(|p| p.branch_id),
            business_key: None,
            idempotency: Some((
                row.effect_key.clone(),
                store::sha256_hex(row.effect_key.as_bytes()),
            )),
            parent_id: Some(self.parent_id.clone()),
        };
        let (child, _) =
            runtime
                .start(&row.tenant_id, request)
                .await
                .map_err(|error| match error {
                    Error::Store(error) => Failure::Transient(error.to_string()),
                    other => Failure::Permanent(other.to_string()),
                })?;
        Ok(Completion::Done(
            json!({"child": child.id, "workflow": child.workflow}),
        ))
    }
}

/// Delivers `child.completed` to the parent once (keyed by the child). A
/// parent that is over, or whose state does not handle it, records nothing
/// and the effect is done.
impl Execute for NotifyParentEffect {
    async fn execute(&self, runtime: &Runtime, row: &OutboxRow) -> Result<Completion, Failure> {
        let event = Event::Named {
            event_type: engine::CHILD_COMPLETED.into(),
            payload: json!({"child_id": self.child_id, "workflow": self.workflow, "state": self.state, "outcome": self.outcome, "data": self.data}),
        };
        let key = format!("child:{}", self.child_id);
        let idempotency = Some((key.clone(), store::sha256_hex(key.as_bytes())));
        let delivered = match runtime
            .raise(&row.tenant_id, &self.parent_id, event, idempotency)
            .await
        {
            Ok(_) => true,
            Err(Error::Engine(
                engine::Error::EventNotHandled { .. } | engine::Error::GuardRejected { .. },
            )) => false,
            Err(Error::Store(error)) => return Err(Failure::Transient(error.to_string())),
            Err(error) => return Err(Failure::Permanent(error.to_string())),
        };
        Ok(Completion::Done(
            json!({"parent": self.parent_id, "delivered": delivered}),
        ))
    }
}
