//! The webhook channel: a JSON POST to the operator's own system, at the
//! tenant's (or the instance's branch's) endpoint named `webhook`
//! (`o2flow endpoints set webhook https://…`), else at `--webhook-url`.
//!
//! Signed, keyed and classified as every request to an endpoint is
//! (`crate::endpoints`).

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::json;

use super::{Deliver, Delivered, DeliveryError, Outgoing};
pub use crate::endpoints::{signature, Target as WebhookConfig};
use crate::store::Store;

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

impl Deliver for Webhook {
    fn deliver<'a>(
        &'a self,
        message: &'a Outgoing<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>> {
        Box::pin(async move {
            let target = self.target_for(message).await?;
            let body = serde_json::to_vec(&WebhookMessage {
                key: message.key,
                tenant_id: message.tenant_id,
                instance_id: message.instance_id,
                to: &message.to.id,
                template: message.template,
                purpose: message.purpose,
                title: &message.message.title,
                body: &message.message.body,
            })
            .map_err(|e| DeliveryError::Permanent(format!("encoding the webhook body: {e}")))?;
            let (status, _) = crate::endpoints::post(
                &self.client,
                &target,
                "",
                message.key,
                None,
                body,
                "webhook",
            )
            .await?;
            Ok(Delivered::Sent {
                detail: json!({"channel": "webhook", "status": status, "attempt": message.attempts + 1}),
            })
        })
    }
}

impl Webhook {
    pub fn new(store: Store, client: reqwest::Client, fallback: Option<WebhookConfig>) -> Webhook {
        Webhook {
            store,
            fallback,
            client,
        }
    }

    /// Where this message's webhook goes: the branch's or tenant's
    /// `webhook` endpoint, else `--webhook-url`.
    async fn target_for(&self, message: &Outgoing<'_>) -> Result<WebhookConfig, DeliveryError> {
        let endpoint = crate::endpoints::resolve(
            &self.store,
            message.tenant_id,
            message.instance_id,
            "webhook",
        )
        .await?;
        match (endpoint, &self.fallback) {
            (Some(target), _) => Ok(target),
            (None, Some(fallback)) => Ok(fallback.clone()),
            (None, None) => Err(DeliveryError::Permanent(format!(
                "the webhook channel is not configured for tenant `{}` (o2flow endpoints set webhook https://… --tenant {}, or serve --webhook-url)",
                message.tenant_id, message.tenant_id
            ))),
        }
    }
}
