//! Executes `call`: posts the effect's JSON body to a named endpoint of the
//! tenant (the branch's own, else the tenant's), signed with the
//! endpoint's secret (`X-O2flow-Signature: sha256=<hex HMAC-SHA256 of the
//! raw body>`) and carrying the effect key as `Idempotency-Key`, so a call
//! repeated after a crash is recognised by the hospital's system. A 2xx
//! answer's named fields go into `data` through `call.succeeded`; 408, 429,
//! 5xx and network errors are retried by the action's policy; any other
//! status, an answer without the named fields, or an endpoint not
//! configured fails for good (`action.failed`, else an incident).

use serde_json::json;

use crate::engine::actions::call::{pick_answer_fields, CallEffect};
use crate::engine::{self, Event};
use crate::runtime::{Completion, Execute, Failure, Runtime};
use crate::store::{self, OutboxRow};

impl Execute for CallEffect {
    async fn execute(&self, runtime: &Runtime, row: &OutboxRow) -> Result<Completion, Failure> {
        let store = runtime.store();
        let transient = |e: store::Error| Failure::Transient(e.to_string());
        let target =
            crate::endpoints::resolve(store, &row.tenant_id, &row.instance_id, &self.endpoint)
                .await?
                .ok_or_else(|| {
                    Failure::Permanent(format!(
                        "no endpoint `{}` is configured for tenant `{}` (o2flow endpoints set {} https://… --tenant {})",
                        self.endpoint, row.tenant_id, self.endpoint, row.tenant_id
                    ))
                })?;
        let body = serde_json::to_vec(&self.body)
            .map_err(|e| Failure::Permanent(format!("encoding the body: {e}")))?;
        let (status, text) = crate::endpoints::post(
            runtime.http_client(),
            &target,
            self.path.as_deref().unwrap_or_default(),
            &row.effect_key,
            Some(&row.instance_id),
            body,
            &format!("endpoint `{}`", self.endpoint),
        )
        .await?;
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
        let fields = pick_answer_fields(&self.result, &answer)
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
        Ok(Completion::Done(
            json!({"endpoint": self.endpoint, "status": status}),
        ))
    }

    fn retry_policy(&self) -> Option<crate::domain::RetryPolicy> {
        self.retry
    }
}
