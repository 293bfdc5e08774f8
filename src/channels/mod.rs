//! Where rendered messages go. The inbox lives in the store; the others
//! are clients of outside systems, each saying whether a failure is worth
//! retrying.

pub mod webhook;

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying with the same key: a timeout, a 5xx, a 429.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help: a 4xx, a channel that is not configured.
    #[error("{0}")]
    Permanent(String),
}
