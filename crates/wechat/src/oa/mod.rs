//! WeChat Official Account (公众号) protocols: the server URL's signature
//! check and safe-mode (安全模式) message encryption.

pub mod crypto;
