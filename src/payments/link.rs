//! Signed, expiring links to the pay page: `/p/pay/{token}` where the
//! token is `{out_trade_no}.{expires unix seconds}.{HMAC-SHA256}`. The key
//! is made once per database and shared by every node.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ring::hmac;

#[derive(Clone)]
pub struct LinkSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(<redacted>)")
    }
}

impl LinkSigner {
    pub fn new(secret: &[u8]) -> LinkSigner {
        LinkSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A token for `out_trade_no`, valid until `expires`.
    pub fn sign(&self, out_trade_no: &str, expires: DateTime<Utc>) -> String {
        let body = format!("{out_trade_no}.{}", expires.timestamp());
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The payment a token names, if its signature holds and it has not expired.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<String> {
        let (body, tag) = token.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.key, body.as_bytes(), &tag).ok()?;
        let (out_trade_no, expires) = body.split_once('.')?;
        let expires: i64 = expires.parse().ok()?;
        (now.timestamp() <= expires).then(|| out_trade_no.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn a_token_verifies_until_it_expires_and_not_when_changed() {
        let signer = LinkSigner::new(b"test key");
        let now = Utc::now();
        let token = signer.sign("O2ABC", now + Duration::minutes(5));
        assert_eq!(signer.verify(&token, now).as_deref(), Some("O2ABC"));
        assert_eq!(signer.verify(&token, now + Duration::minutes(6)), None);
        let forged = token.replacen("O2ABC", "O2ABD", 1);
        assert_eq!(signer.verify(&forged, now), None);
        let other = LinkSigner::new(b"other key");
        assert_eq!(other.verify(&token, now), None);
        assert_eq!(signer.verify("garbage", now), None);
    }
}
