//! The engine core: a pure function of (definition, instance, event, now)
//! that returns a `Transition`: the next state, the new data, effects as
//! data, timers to set and cancel, and history entries.
//!
//! Architecture invariant: nothing here does IO or reads the clock. The
//! caller (`runtime`) commits what `step` returns in one transaction and
//! executes the effects afterwards. Adding an action kind touches
//! `engine::actions`, never this file.

pub mod actions;
mod error;
mod scope;
mod step;

pub use crate::domain::events::{
    is_reserved_event, ACTION_FAILED, CALL_SUCCEEDED, CANCEL, CHILD_COMPLETED, PAYMENT_EXPIRED,
    PAYMENT_FAILED, PAYMENT_SUCCEEDED, RAISED_EVENTS, REFUND_ABNORMAL, REFUND_FAILED,
    REFUND_SUCCEEDED, RESERVED_EVENT_NAMESPACES,
};
pub use error::{Error, InputProblem};
pub use step::{normalize_input, normalize_payload, start, step, Started};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::Party;
use crate::dsl::{Channel, Outcome};

/// Whether an instance is running, or final with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Final(Outcome),
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Final(outcome) => outcome.as_str(),
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        if text == "active" {
            Some(Status::Active)
        } else {
            Outcome::parse(text).map(Status::Final)
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Status::Final(_))
    }
}

/// What the engine needs to know of a stored instance.
#[derive(Debug, Clone, Copy)]
pub struct Instance<'a> {
    pub id: &'a str,
    pub state: &'a str,
    pub status: Status,
    pub input: &'a serde_json::Value,
    pub data: &'a serde_json::Value,
    /// How many times a state has been entered; timers and effect keys
    /// carry it, so a timer armed by an earlier entry is recognised as stale.
    pub entry_seq: i64,
    /// The stored revision the event is applied to: one per applied event,
    /// so the effects of two occurrences of an event in one state entry (an
    /// internal transition, a repeating timer) get different keys, while
    /// the same occurrence always plans the same keys.
    pub revision: i64,
    pub business_key: Option<&'a str>,
    /// The instance that started this one with a `start` action.
    pub parent_id: Option<&'a str>,
    /// The tenant's time zone: the default of `local_time` and of `every`
    /// timers that name no zone.
    pub time_zone: chrono_tz::Tz,
}

/// Something that happens to an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A named event from outside: `registration.booked`, `payment.succeeded`.
    Named {
        event_type: String,
        payload: serde_json::Value,
    },
    /// A timer armed by state entry `entry_seq` has come due.
    Timer { entry_seq: i64, index: usize },
    /// The instance is cancelled from outside.
    Cancel { reason: Option<String> },
}

/// The result of applying one event.
#[derive(Debug, Clone)]
pub struct Transition {
    /// False when the event was absorbed as a recorded no-op (a late event
    /// on a final instance, a stale timer).
    pub applied: bool,
    pub state: String,
    pub status: Status,
    pub data: serde_json::Value,
    pub entry_seq: i64,
    pub effects: Vec<Effect>,
    /// Drop every armed timer of the instance (the state was left or the instance ended).
    pub cancel_timers: bool,
    pub timers: Vec<TimerSet>,
    pub history: Vec<HistoryEntry>,
}

/// A timer to arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerSet {
    pub entry_seq: i64,
    pub index: usize,
    pub due_at: DateTime<Utc>,
}

/// One history entry, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub kind: &'static str,
    pub detail: serde_json::Value,
}

/// A side effect to execute after commit, exactly once per `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    /// Deterministic idempotency key: instance, state entry, site, action
    /// index; a site inside a state entry (a transition, a timer, cancel)
    /// carries the revision it happened at (`on.ping.0@7`).
    pub key: String,
    pub kind: EffectKind,
}

macro_rules! effect_kind_enum {
    ($($tag:ident => $variant:ident($effect:ty)),* $(,)?) => {
        /// What an effect does, with its data (the kinds: `crate::kinds`).
        /// Stored in the outbox tagged: the row's `kind` column is the tag
        /// (`send`, `pay`, …) and its `payload` the data, read back with
        /// `EffectKind::from_stored`. The shell dispatches on this enum
        /// exhaustively, so a kind without an executor does not compile.
        #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
        #[serde(tag = "kind", content = "effect", rename_all = "snake_case")]
        pub enum EffectKind {
            $($variant($effect),)*
        }

        impl EffectKind {
            /// The tag stored in the outbox's `kind` column.
            pub fn name(&self) -> &'static str {
                match self {
                    $(EffectKind::$variant(_) => stringify!($tag),)*
                }
            }
        }
    };
}
crate::effect_kinds!(effect_kind_enum);

impl EffectKind {
    /// The effect's data as stored in the outbox's `payload` column.
    ///
    /// # Errors
    /// Serialisation failed.
    pub fn payload(&self) -> Result<String, serde_json::Error> {
        let tagged = serde_json::to_value(self)?;
        serde_json::to_string(tagged.get("effect").unwrap_or(&serde_json::Value::Null))
    }

    /// An effect as stored: its tag and its data. A tag no kind has, or
    /// data that does not fit the kind, is an error, never a default.
    ///
    /// # Errors
    /// The stored effect is unreadable.
    pub fn from_stored(kind: &str, payload: &str) -> Result<EffectKind, serde_json::Error> {
        let effect: serde_json::Value = serde_json::from_str(payload)?;
        serde_json::from_value(serde_json::json!({"kind": kind, "effect": effect}))
    }
}

/// Create a payment order. `out_trade_no` is derived from the effect key,
/// so a retried effect asks WeChat Pay for the same order.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PayEffect {
    pub out_trade_no: String,
    /// The `key` of the `pay` action.
    pub name: String,
    pub payer: Party,
    pub scene: crate::dsl::PayScene,
    pub description: String,
    /// Fen the payer pays through WeChat Pay.
    pub amount: i64,
    /// The checked bill (fen), when the payment is for one.
    pub bill: Option<Box<crate::domain::CheckedBill>>,
    pub expires_at: DateTime<Utc>,
}

/// Refund a payment of the instance; `out_refund_no` derives from the effect key.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RefundEffect {
    pub out_refund_no: String,
    /// The `key` of the payment to refund; none: the instance's latest paid payment.
    pub payment: Option<String>,
    /// Fen; none: everything not yet refunded.
    pub amount: Option<i64>,
    pub reason: Option<String>,
    /// The 医保 part refunded through the insurance bureau (a 医保 payment only).
    #[serde(default)]
    pub insurance: Option<InsuranceRefund>,
}

/// Fen the hospital refunded through the insurance bureau, by fund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct InsuranceRefund {
    pub pooled_fund: i64,
    pub personal_account: i64,
    pub other_funds: i64,
}

/// A WeChat Pay business number derived from an effect key: `prefix` and
/// upper-case hex of its SHA-256, 32 characters in all (`out_trade_no`
/// allows 6-32 of `[0-9A-Za-z_-|*]`).
pub fn business_number(prefix: &str, key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let take = 32usize.saturating_sub(prefix.len());
    format!("{prefix}{}", &hex[..take])
}

/// Start a child instance of `workflow` for the instance that planned it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StartChildEffect {
    pub workflow: String,
    pub input: serde_json::Value,
    pub parent_id: String,
}

/// Tell the parent that its child reached a final state (`child.completed`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NotifyParentEffect {
    pub parent_id: String,
    pub child_id: String,
    pub workflow: String,
    pub state: String,
    pub outcome: String,
    pub data: serde_json::Value,
}

/// A message to render from `template` and deliver to `to`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SendEffect {
    pub to: Party,
    pub template: String,
    pub channels: Vec<Channel>,
    pub purpose: Option<String>,
    /// What the template sees: inputs, data, instance, party.
    pub context: serde_json::Value,
    /// The retry policy of the action, when the file sets one.
    #[serde(default)]
    pub retry: Option<crate::domain::RetryPolicy>,
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod kind_tests;
