//! sea-orm entities, one per table (see `migrations/`).

pub mod api_keys;
pub mod branches;
pub mod correlated_events;
pub mod endpoints;
pub mod history;
pub mod idempotency_keys;
pub mod inbox_messages;
pub mod incidents;
pub mod instances;
pub mod merchants;
pub mod message_templates;
pub mod outbox;
pub mod pay_notifications;
pub mod payments;
pub mod refunds;
pub mod schedules;
pub mod settings;
pub mod tenants;
pub mod timers;
pub mod workflow_definitions;
