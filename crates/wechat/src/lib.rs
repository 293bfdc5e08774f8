//! WeChat protocols, written to the published specifications with every
//! host configurable (no maintained crate lets the base URL point at a
//! local fake). See `docs/payments.md`.

pub mod oa;
pub mod pay;
