//! The webhook channel: a JSON POST to the operator's own system.
//!
//! Every request carries the effect's key as `Idempotency-Key`, so a
//! delivery repeated after a crash (sent, but not yet recorded as sent) is
//! recognised by the receiver. With a secret, the body is signed:
//! `X-O2flow-Signature: sha256=<hex HMAC-SHA256 of the raw body>`.
//! 2xx is delivered; 408, 429, 5xx and network errors are transient;
//! any other status is permanent.

use std::fmt;
use std::time::Duration;

use ring::hmac;
use serde::Serialize;

use super::DeliveryError;

/// Where webhooks go and how they are signed.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: Option<String>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// The body of one webhook delivery.
#[derive(Debug, Serialize)]
pub struct WebhookMessage<'a> {
    pub key: &'a str,
    pub tenant_id: &'a str,
    pub instance_id: &'a str,
    pub to: &'a str,
    pub template: &'a str,
    pub purpose: Option<&'a str>,
    pub title: &'a str,
    pub body: &'a str,
}

pub struct Webhook {
    config: WebhookConfig,
    client: reqwest::Client,
}

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

impl Webhook {
    pub fn new(config: WebhookConfig) -> Webhook {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Webhook { config, client }
    }

    /// Posts one message. Returns the HTTP status on success.
    ///
    /// # Errors
    /// `Transient` or `Permanent`, as the module says.
    pub async fn post(&self, message: &WebhookMessage<'_>) -> Result<u16, DeliveryError> {
        let body = serde_json::to_vec(message)
            .map_err(|e| DeliveryError::Permanent(format!("encoding the webhook body: {e}")))?;
        let mut request = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header("idempotency-key", message.key);
        if let Some(secret) = &self.config.secret {
            request = request.header("x-o2flow-signature", signature(secret, &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::Transient(format!("webhook: {e}")))?;
        let status = response.status().as_u16();
        match status {
            200..=299 => Ok(status),
            408 | 429 | 500..=599 => Err(DeliveryError::Transient(format!(
                "webhook answered {status}"
            ))),
            _ => Err(DeliveryError::Permanent(format!(
                "webhook answered {status}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_raw_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let config = WebhookConfig {
            url: "http://his.example/hook".into(),
            secret: Some("s3cret".into()),
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
