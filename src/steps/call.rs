//! Executes `call`: posts the effect's JSON body to a named endpoint of the
//! tenant (the branch's own, else the tenant's), signed with the
//! endpoint's secret (`X-O2flow-Signature: sha256=<hex HMAC-SHA256 of the
//! raw body>`) and carrying the effect key as `Idempotency-Key`, so a call
//! repeated after a crash is recognised by the hospital's system. A 2xx
//! answer's named fields go into `data` through `call.succeeded`; 408, 429,
//! 5xx and network errors are retried by the action's policy; any other
//! status, an answer without the named fields, or an endpoint not
//! configured fails for good (`action.failed`, else an incident).

use std::time::Duration;

use serde_json::json;

use crate::channels::webhook::signature;
use crate::engine::{self, CallEffect, Event};
use crate::payments::merchant::secret;
use crate::runtime::{Execute, Failure, Runtime};
use crate::store::{self, OutboxRow};

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

impl Execute for CallEffect {
    async fn execute(&self, runtime: &Runtime, row: &OutboxRow) -> Result<(), Failure> {
        let store = runtime.store();
        let transient = |e: store::Error| Failure::Transient(e.to_string());
        let instance = store
            .instance(&row.tenant_id, &row.instance_id)
            .await
            .map_err(transient)?
            .ok_or_else(|| Failure::Permanent("the instance is gone".into()))?;
        let endpoint = store
            .endpoint(&row.tenant_id, &instance.branch_id, &self.endpoint)
            .await
            .map_err(transient)?
            .ok_or_else(|| {
                Failure::Permanent(format!(
                    "no endpoint `{}` is configured for tenant `{}` (o2flow endpoints set {} https://… --tenant {})",
                    self.endpoint, row.tenant_id, self.endpoint, row.tenant_id
                ))
            })?;
        let key = match &endpoint.secret_ref {
            Some(reference) => Some(
                secret("the endpoint's secret", reference)
                    .map_err(|e| Failure::Permanent(e.to_string()))?,
            ),
            None => None,
        };
        let url = format!(
            "{}{}",
            endpoint.url.trim_end_matches('/'),
            self.path.as_deref().unwrap_or_default()
        );
        let body = serde_json::to_vec(&self.body)
            .map_err(|e| Failure::Permanent(format!("encoding the body: {e}")))?;
        let mut request = runtime
            .http_client()
            .post(&url)
            .timeout(TIMEOUT)
            .header("content-type", "application/json")
            .header("idempotency-key", &row.effect_key)
            .header("x-o2flow-instance", &row.instance_id);
        if let Some(key) = &key {
            request = request.header("x-o2flow-signature", signature(key, &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::Transient(format!("endpoint `{}`: {e}", self.endpoint)))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        match status {
            200..=299 => {}
            408 | 429 | 500..=599 => {
                return Err(Failure::Transient(format!(
                    "endpoint `{}` answered {status}",
                    self.endpoint
                )))
            }
            _ => {
                return Err(Failure::Permanent(format!(
                    "endpoint `{}` answered {status}: {}",
                    self.endpoint,
                    text.chars().take(200).collect::<String>()
                )))
            }
        }
        let answer: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| {
                Failure::Permanent(format!(
                    "endpoint `{}` answered {status} with a body that is not JSON: {e}",
                    self.endpoint
                ))
            })?
        };
        let fields = engine::pick_answer_fields(&self.result, &answer)
            .map_err(|e| Failure::Permanent(format!("endpoint `{}`: {e}", self.endpoint)))?;
        let event = Event::Named {
            event_type: engine::CALL_SUCCEEDED.into(),
            payload: json!({"endpoint": self.endpoint, "key": row.effect_key, "status": status, "fields": fields}),
        };
        let once = format!("call:{}", row.effect_key);
        let idempotency = Some((once.clone(), store::sha256_hex(once.as_bytes())));
        match runtime
            .raise(&row.tenant_id, &row.instance_id, event, idempotency)
            .await
        {
            Ok(_) => {}
            Err(crate::runtime::Error::Store(error)) => return Err(transient(error)),
            Err(error) => return Err(Failure::Permanent(error.to_string())),
        }
        store
            .outbox_done(
                row,
                &json!({"effect": "call", "key": row.effect_key, "endpoint": self.endpoint, "status": status}),
                runtime.now(),
            )
            .await
            .map_err(transient)
    }

    fn retry_policy(&self) -> Option<crate::domain::RetryPolicy> {
        self.retry
    }
}
