//! The names of the events o2flow itself raises or uses, shared by the DSL
//! (which refuses them from outside) and the engine (which raises them).

/// The event type of a cancellation, whether it comes from
/// `POST /instances/{id}/cancel` or as a named or correlated event.
pub const CANCEL: &str = "cancel";

/// The events a payment sends its instance.
pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
pub const PAYMENT_FAILED: &str = "payment.failed";
pub const PAYMENT_EXPIRED: &str = "payment.expired";
pub const REFUND_SUCCEEDED: &str = "refund.succeeded";
pub const REFUND_FAILED: &str = "refund.failed";
pub const REFUND_ABNORMAL: &str = "refund.abnormal";

/// The event a parent receives when a child ends.
pub const CHILD_COMPLETED: &str = "child.completed";

/// The event a flow receives when an action's effect failed for good.
pub const ACTION_FAILED: &str = "action.failed";

/// The event a flow receives when a `call` was answered; the fields its
/// `result` names are in `data` already.
pub const CALL_SUCCEEDED: &str = "call.succeeded";

/// The events o2flow raises today.
pub const RAISED_EVENTS: [&str; 9] = [
    PAYMENT_SUCCEEDED,
    PAYMENT_FAILED,
    PAYMENT_EXPIRED,
    REFUND_SUCCEEDED,
    REFUND_FAILED,
    REFUND_ABNORMAL,
    CHILD_COMPLETED,
    ACTION_FAILED,
    CALL_SUCCEEDED,
];

/// Namespaces of the events o2flow itself raises: payments, refunds,
/// children, failed actions, and those of the step kinds to come (codes,
/// door keys, queues, messages, incidents). Such an event is never accepted
/// from the API: only the effect behind it can raise it.
pub const RESERVED_EVENT_NAMESPACES: [&str; 10] = [
    "payment", "refund", "child", "action", "call", "code", "door_key", "queue", "message",
    "incident",
];

/// Whether `event_type` is one only o2flow raises (`payment.succeeded`,
/// `child.completed`, …) or one the engine uses itself (`start`, `timer`).
pub fn is_reserved_event(event_type: &str) -> bool {
    let namespace = event_type.split('.').next().unwrap_or_default();
    (event_type.contains('.') && RESERVED_EVENT_NAMESPACES.contains(&namespace))
        || matches!(event_type, "start" | "timer")
}
