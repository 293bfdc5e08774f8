//! Validated value types shared by every layer: money in fen, parties,
//! durations and outcomes. No IO, no clock.

mod duration;
mod money;
mod party;
mod retry;

pub use duration::{parse_duration, DurationError};
pub use money::{Money, MoneyError};
pub use party::Party;
pub use retry::RetryPolicy;
