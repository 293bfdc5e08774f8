//! A merchant account as stored (secrets by reference) turned into a
//! working `MerchantConfig`: the private key and APIv3 key are read from a
//! file or the environment when the account is loaded, never stored in the
//! database, never logged, never returned by the API.

use crate::store::MerchantRow;
use crate::wechat::pay::client::MerchantConfig;
use crate::wechat::pay::crypto::{ApiV3Key, MerchantKey, PlatformKeys, VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    #[error("{what}: `{reference}` must be `file:/path` or `env:NAME`")]
    BadReference {
        what: &'static str,
        reference: String,
    },
    #[error("{what}: cannot read {reference}: {reason}")]
    Unreadable {
        what: &'static str,
        reference: String,
        reason: String,
    },
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

/// Reads a secret by reference: `file:/path/to/key.pem`, `env:NAME`, or a
/// bare path. The error names the reference, never the value.
///
/// # Errors
/// A malformed reference, a missing file or variable.
pub fn secret(what: &'static str, reference: &str) -> Result<String, MerchantError> {
    let unreadable = |reason: String| MerchantError::Unreadable {
        what,
        reference: reference.to_owned(),
        reason,
    };
    if let Some(name) = reference.strip_prefix("env:") {
        return std::env::var(name).map_err(|e| unreadable(e.to_string()));
    }
    let path = reference.strip_prefix("file:").unwrap_or(reference);
    if path.is_empty() {
        return Err(MerchantError::BadReference {
            what,
            reference: reference.to_owned(),
        });
    }
    std::fs::read_to_string(path)
        .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|e| unreadable(e.to_string()))
}

/// Builds the client configuration of a stored merchant. `callback_base`
/// is o2flow's public URL, for the default notify URL.
///
/// # Errors
/// A secret cannot be read or does not parse.
pub fn load_merchant(
    row: &MerchantRow,
    callback_base: &str,
) -> Result<MerchantConfig, MerchantError> {
    let invalid = |what: &'static str| {
        move |e: crate::wechat::pay::crypto::CryptoError| MerchantError::Invalid {
            what,
            reason: e.to_string(),
        }
    };
    let key = MerchantKey::from_pem(&secret("private key", &row.private_key)?)
        .map_err(invalid("private key"))?;
    let api_v3_key =
        ApiV3Key::new(&secret("APIv3 key", &row.api_v3_key)?).map_err(invalid("APIv3 key"))?;
    let mut platform = PlatformKeys::default();
    let mut wechatpay_serial = String::new();
    if let (Some(reference), Some(id)) = (&row.public_key, &row.public_key_id) {
        if !id.starts_with("PUB_KEY_ID_") {
            return Err(MerchantError::Invalid {
                what: "WeChat Pay public key id",
                reason: format!("`{id}` does not start with PUB_KEY_ID_"),
            });
        }
        let pem = secret("WeChat Pay public key", reference)?;
        let verifying =
            VerifyingKey::from_public_key_pem(&pem).map_err(invalid("WeChat Pay public key"))?;
        platform.add(id, verifying);
        wechatpay_serial.clone_from(id);
    } else if !row.platform_certificates {
        // Neither a public key nor certificates: nothing would verify WeChat Pay.
        return Err(MerchantError::Invalid {
            what: "verification",
            reason: "give the WeChat Pay public key (--public-key) and its PUB_KEY_ID (--public-key-id), or --platform-certificates to download /v3/certificates".into(),
        });
    }
    let notify_url = row.notify_url.clone().unwrap_or_else(|| {
        format!(
            "{}/callbacks/wechatpay/{}",
            callback_base.trim_end_matches('/'),
            row.id
        )
    });
    Ok(MerchantConfig {
        mchid: row.mchid.clone(),
        appid: row.appid.clone(),
        serial_no: row.serial_no.clone(),
        key,
        platform,
        wechatpay_serial,
        api_v3_key,
        notify_url,
        base_url: row.base_url.clone(),
        platform_certificates: row.platform_certificates,
    })
}
