//! The rows and requests the store hands out and takes, shared by its aggregates.

use chrono::{DateTime, Utc};

use super::entities::{correlated_events, idempotency_keys, incidents, schedules};

pub use super::entities::history::Model as HistoryRow;
pub use super::entities::inbox_messages::Model as InboxRow;
pub use super::entities::instances::Model as InstanceRow;
pub use super::entities::outbox::Model as OutboxRow;
pub use super::entities::tenants::Model as TenantRow;
pub use super::entities::timers::Model as TimerRow;
pub use super::entities::workflow_definitions::Model as DefinitionRow;

/// The roles an API key can have.
pub const ROLES: [&str; 4] = ["admin", "operator", "integration", "viewer"];

/// An idempotency record written with the change it guards.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
    pub response: String,
    pub status_code: i32,
}

/// A stored idempotency record.
pub type StoredIdempotency = idempotency_keys::Model;

/// What else a transition's commit does, atomically with it.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitExtras<'a> {
    /// The timer that fired, deleted in the same transaction.
    pub fired_timer: Option<i64>,
    /// The idempotency record of the request.
    pub idempotency: Option<&'a IdempotencyRecord>,
    /// A kept correlated event (its message id) this transition consumes.
    pub consume: Option<&'a str>,
}

/// One instance moved to another workflow version.
#[derive(Debug, Clone)]
pub struct InstanceMove {
    pub instance_id: String,
    /// The revision the move was planned from.
    pub revision: i64,
    pub state: String,
    pub data: serde_json::Value,
    /// Armed timers that have no counterpart in the target state.
    pub drop_timers: Vec<i64>,
    /// What the history records.
    pub detail: serde_json::Value,
}

/// A schedule that starts instances.
pub type ScheduleRow = schedules::Model;

/// A schedule to store for a deployed version.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub index: usize,
    pub cron: String,
    pub time_zone: String,
    pub next_fire_at: DateTime<Utc>,
}

/// An incident: an effect that failed for good.
pub type IncidentRow = incidents::Model;

/// A correlated event, kept or delivered.
pub type CorrelatedEventRow = correlated_events::Model;

/// A new instance to insert with its first transition.
pub struct NewInstance<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub branch_id: &'a str,
    pub definition: &'a DefinitionRow,
    pub input: &'a serde_json::Value,
    pub business_key: Option<&'a str>,
    pub parent_id: Option<&'a str>,
}

/// Filters for listing instances.
#[derive(Debug, Default, Clone)]
pub struct InstanceFilter {
    pub workflow: Option<String>,
    pub state: Option<String>,
    pub status: Option<String>,
    pub business_key: Option<String>,
    /// Only ids after this one (ids are time-ordered UUIDv7).
    pub after: Option<String>,
    pub limit: u64,
}

/// SHA-256 as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

pub(super) fn is_unique_violation(error: &sea_orm::DbErr) -> bool {
    matches!(
        error.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}
