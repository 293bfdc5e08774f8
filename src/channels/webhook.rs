//! The webhook channel: a JSON POST to the operator's own system, at the
//! tenant's (or the instance's branch's) endpoint named `webhook`
//! (`o2flow endpoints set webhook https://…`), else at `--webhook-url`.
//!
//! Every request carries the effect's key as `Idempotency-Key`, so a
//! delivery repeated after a crash (sent, but not yet recorded as sent) is
//! recognised by the receiver. With a secret, the body is signed:
//! `X-O2flow-Signature: sha256=<hex HMAC-SHA256 of the raw body>`.
//! 2xx is delivered; 408, 429, 5xx and network errors are transient;
//! any other status is permanent.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use ring::hmac;
use serde::Serialize;
use serde_json::json;

use super::{Deliver, Delivered, DeliveryError, Outgoing};
use crate::store::Store;

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
    store: Store,
    /// `--webhook-url`: for tenants with no `webhook` endpoint of their own.
    fallback: Option<WebhookConfig>,
    client: reqwest::Client,
}

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

impl Deliver for Webhook {
    fn deliver<'a>(
        &'a self,
        message: &'a Outgoing<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            let config = self.config_for(message).await?;
            let body = WebhookMessage {
                key: message.key,
                tenant_id: message.tenant_id,
                instance_id: message.instance_id,
                to: &message.to.id,
                template: message.template,
                purpose: message.purpose,
                title: &message.message.title,
                body: &message.message.body,
            };
            let status = self.post(&config, &body).await?;
            Ok(Delivered::Sent {
                detail: json!({"channel": "webhook", "status": status, "attempt": message.attempts + 1}),
            })
        })
    }
}

impl Webhook {
    pub fn new(store: Store, fallback: Option<WebhookConfig>) -> Webhook {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Webhook {
            store,
            fallback,
            client,
        }
    }

    /// Where this message's webhook goes: the branch's or tenant's
    /// `webhook` endpoint, else `--webhook-url`.
    async fn config_for(&self, message: &Outgoing<'_>) -> Result<WebhookConfig, DeliveryError> {
        let transient = |e: crate::store::Error| DeliveryError::Transient(e.to_string());
        let branch = self
            .store
            .instance(message.tenant_id, message.instance_id)
            .await
            .map_err(transient)?
            .map(|i| i.branch_id)
            .unwrap_or_default();
        let endpoint = self
            .store
            .endpoint(message.tenant_id, &branch, "webhook")
            .await
            .map_err(transient)?;
        match (endpoint, &self.fallback) {
            (Some(endpoint), _) => {
                let secret = match &endpoint.secret_ref {
                    Some(reference) => Some(
                        crate::payments::merchant::secret("the webhook endpoint's secret", reference)
                            .map_err(|e| DeliveryError::Permanent(e.to_string()))?,
                    ),
                    None => None,
                };
                Ok(WebhookConfig {
                    url: endpoint.url,
                    secret,
                })
            }
            (None, Some(fallback)) => Ok(fallback.clone()),
            (None, None) => Err(DeliveryError::Permanent(format!(
                "the webhook channel is not configured for tenant `{}` (o2flow endpoints set webhook https://… --tenant {}, or serve --webhook-url)",
                message.tenant_id, message.tenant_id
            ))),
        }
    }

    /// Posts one message. Returns the HTTP status on success.
    ///
    /// # Errors
    /// `Transient` or `Permanent`, as the module says.
    async fn post(
        &self,
        config: &WebhookConfig,
        message: &WebhookMessage<'_>,
    ) -> Result<u16, DeliveryError> {
        let body = serde_json::to_vec(message)
            .map_err(|e| DeliveryError::Permanent(format!("encoding the webhook body: {e}")))?;
        let mut request = self
            .client
            .post(&config.url)
            .header("content-type", "application/json")
            .header("idempotency-key", message.key);
        if let Some(secret) = &config.secret {
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
