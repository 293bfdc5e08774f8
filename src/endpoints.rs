//! The hospital's or hotel's own systems, reached the one way both the
//! `webhook` channel and `call` steps use: a JSON POST to a named endpoint
//! of the tenant (the instance's branch's own, else the tenant's), carrying
//! the effect key as `Idempotency-Key`, so a request repeated after a crash
//! is recognised by the receiver, and signed with the endpoint's secret:
//! `X-O2flow-Signature: sha256=<hex HMAC-SHA256 of the raw body>`. 2xx is
//! taken; 408, 429, 5xx and network errors are transient; any other status
//! is permanent.

use std::fmt;
use std::time::Duration;

use ring::hmac;

use crate::channels::DeliveryError;
use crate::store::{self, Store};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where requests go and how they are signed.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub secret: Option<String>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// Endpoint `name` as instance `instance_id` sees it, with its secret read
/// (by reference: the error names the reference, never the value).
///
/// # Errors
/// `Transient` for a store error, `Permanent` for a secret that cannot be read.
pub async fn resolve(
    store: &Store,
    tenant_id: &str,
    instance_id: &str,
    name: &str,
) -> Result<Option<Target>, DeliveryError> {
    let Some(endpoint) = store
        .endpoint_for_instance(tenant_id, instance_id, name)
        .await
        .map_err(|e: store::Error| DeliveryError::Transient(e.to_string()))?
    else {
        return Ok(None);
    };
    let secret = match &endpoint.secret_ref {
        Some(reference) => Some(
            crate::payments::merchant::secret("the endpoint's secret", reference)
                .map_err(|e| DeliveryError::Permanent(format!("endpoint `{name}`: {e}")))?,
        ),
        None => None,
    };
    Ok(Some(Target {
        url: endpoint.url,
        secret,
    }))
}

/// POSTs `body` to `target`'s URL followed by `path`, naming `instance` in
/// `X-O2flow-Instance` when given; `label` names the receiver in errors.
/// Returns the status and the answer's text.
///
/// # Errors
/// `Transient` or `Permanent`, as the module says.
pub async fn post(
    client: &reqwest::Client,
    target: &Target,
    path: &str,
    key: &str,
    instance: Option<&str>,
    body: Vec<u8>,
    label: &str,
) -> Result<(u16, String), DeliveryError> {
    let url = format!("{}{path}", target.url.trim_end_matches('/'));
    let url = if path.is_empty() { &target.url } else { &url };
    let mut request = client
        .post(url)
        .timeout(TIMEOUT)
        .header("content-type", "application/json")
        .header("idempotency-key", key);
    if let Some(instance) = instance {
        request = request.header("x-o2flow-instance", instance);
    }
    if let Some(secret) = &target.secret {
        request = request.header("x-o2flow-signature", signature(secret, &body));
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| DeliveryError::Transient(format!("{label}: {e}")))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    match status {
        200..=299 => Ok((status, text)),
        408 | 429 | 500..=599 => Err(DeliveryError::Transient(format!(
            "{label} answered {status}"
        ))),
        _ => {
            let excerpt: String = text.chars().take(200).collect();
            Err(DeliveryError::Permanent(if excerpt.is_empty() {
                format!("{label} answered {status}")
            } else {
                format!("{label} answered {status}: {excerpt}")
            }))
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
        let target = Target {
            url: "http://his.example/hook".into(),
            secret: Some("s3cret".into()),
        };
        assert!(!format!("{target:?}").contains("s3cret"));
    }
}
