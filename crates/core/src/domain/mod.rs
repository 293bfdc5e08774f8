//! Validated value types shared by every layer: money in fen, parties,
//! durations and outcomes. No IO, no clock.

pub mod bill;
mod duration;
pub mod events;
mod money;
pub mod party;
mod retry;

pub use bill::{Adjustment, Bill, BillError, CheckedBill, InsuranceSplit, LineItem, MixPayType};
pub use duration::{parse_duration, DurationError};
pub use money::{Money, MoneyError};
pub use party::Party;
pub use retry::RetryPolicy;
