//! Payments outside the engine: where secrets come from, which provider
//! takes a tenant's payments (a WeChat Pay merchant or the sandbox), and
//! the signed links of the pay page. The runtime (`runtime::payments`)
//! drives them; `wechat::pay` speaks the protocol.

mod link;
pub mod merchant;
mod provider;

pub use link::LinkSigner;
pub use merchant::{load_merchant, secret, MerchantError};
pub use provider::{med_ins_bill, Opened, Provider};
