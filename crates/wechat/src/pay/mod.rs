//! WeChat Pay API v3: request signing, response and callback verification,
//! notification decryption.

pub mod client;
pub mod crypto;
