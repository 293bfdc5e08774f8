//! sea-orm entities, one per table (see `migrations/`).

pub mod tenants;
pub mod branches;
pub mod api_keys;
pub mod workflow_definitions;
pub mod instances;
pub mod history;
pub mod timers;
pub mod outbox;
pub mod inbox_messages;
pub mod idempotency_keys;
