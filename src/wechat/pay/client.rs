//! The WeChat Pay API v3 client: one per merchant, base URL configured
//! (default the real host). Requests are signed over the exact bytes sent;
//! every 2xx answer is verified on its raw bytes (signature by
//! `Wechatpay-Serial`, timestamp within ±300 s, nonce not seen before) or
//! refused as forged. 5xx and `SYSTEM_ERROR` are retried with the same
//! body, so the same `out_trade_no` / `out_refund_no`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::crypto::{
    authorization, pay_sign_message, ApiV3Key, CryptoError, MerchantKey, PlatformKeys,
};
use crate::runtime::Clock;

/// The real host.
pub const DEFAULT_BASE_URL: &str = "https://api.mch.weixin.qq.com";

/// How far a WeChat Pay timestamp may be from our clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Attempts for a request answered with 5xx or `SYSTEM_ERROR`.
const ATTEMPTS: usize = 3;

/// One merchant account.
pub struct MerchantConfig {
    pub mchid: String,
    pub appid: String,
    /// The merchant certificate's serial (`serial_no` in `Authorization`).
    pub serial_no: String,
    pub key: MerchantKey,
    pub platform: PlatformKeys,
    /// The serial sent as `Wechatpay-Serial` (the public key id or a platform certificate serial).
    pub wechatpay_serial: String,
    pub api_v3_key: ApiV3Key,
    pub notify_url: String,
    pub base_url: String,
}

impl fmt::Debug for MerchantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerchantConfig")
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("serial_no", &self.serial_no)
            .field("key", &self.key)
            .field("platform", &self.platform.serials())
            .field("api_v3_key", &self.api_v3_key)
            .field("notify_url", &self.notify_url)
            .field("base_url", &self.base_url)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayError {
    /// WeChat Pay answered with an error code (`ORDER_NOT_EXIST`, `PARAM_ERROR`…).
    #[error("WeChat Pay answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The network, or 5xx after every retry: worth trying again later with the same numbers.
    #[error("WeChat Pay unreachable: {0}")]
    Transport(String),
    /// A 2xx answer that does not prove it came from WeChat Pay.
    #[error("forged or stale answer: {0}")]
    Forged(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl PayError {
    /// Whether trying again later with the same parameters may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            PayError::Transport(_) => true,
            PayError::Api { status, code, .. } => {
                *status >= 500 || code == "SYSTEM_ERROR" || *status == 429
            }
            _ => false,
        }
    }
}

/// Nonces of recently verified answers and callbacks: a replayed one is refused.
#[derive(Default)]
pub struct NonceCache {
    seen: Mutex<VecDeque<(i64, String)>>,
}

impl NonceCache {
    /// Records `nonce` seen at `timestamp`; false when it was seen before.
    pub fn check(&self, nonce: &str, now: i64) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        while seen
            .front()
            .is_some_and(|(at, _)| now - at > 2 * MAX_CLOCK_SKEW_SECS)
        {
            seen.pop_front();
        }
        if seen.iter().any(|(_, n)| n == nonce) {
            return false;
        }
        seen.push_back((now, nonce.to_owned()));
        true
    }
}

/// Checks the four `Wechatpay-*` headers against the raw body: key by
/// serial, ±300 s, nonce never seen. Used for answers and callbacks alike.
///
/// # Errors
/// `Forged` (missing header, stale, replayed) or `Crypto` (probe, bad signature, unknown serial).
pub fn verify_signed(
    platform: &PlatformKeys,
    nonces: &NonceCache,
    now: i64,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<(), PayError> {
    let get =
        |name: &str| header(name).ok_or_else(|| PayError::Forged(format!("no {name} header")));
    let timestamp = get("Wechatpay-Timestamp")?;
    let nonce = get("Wechatpay-Nonce")?;
    let signature = get("Wechatpay-Signature")?;
    let serial = get("Wechatpay-Serial")?;
    let at: i64 = timestamp
        .parse()
        .map_err(|_| PayError::Forged("Wechatpay-Timestamp is not a number".into()))?;
    platform.verify(&serial, &timestamp, &nonce, body, &signature)?;
    if (now - at).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(PayError::Forged(format!(
            "timestamp {at} is more than {MAX_CLOCK_SKEW_SECS} s from now ({now})"
        )));
    }
    if !nonces.check(&nonce, now) {
        return Err(PayError::Forged(format!("nonce {nonce} was seen before")));
    }
    Ok(())
}

/// An order to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub out_trade_no: String,
    pub description: String,
    /// Fen.
    pub total: i64,
    /// Required for JSAPI.
    pub payer_openid: Option<String>,
    /// RFC 3339 with offset.
    pub time_expire: Option<String>,
    pub attach: Option<String>,
}

/// What the query and the notification say about a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub appid: Option<String>,
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: Option<String>,
    pub trade_state: String,
    #[serde(default)]
    pub trade_state_desc: Option<String>,
    #[serde(default)]
    pub success_time: Option<String>,
    #[serde(default)]
    pub attach: Option<String>,
    #[serde(default)]
    pub amount: Option<TransactionAmount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    #[serde(default)]
    pub total: Option<i64>,
    #[serde(default)]
    pub payer_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
}

/// A refund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub reason: Option<String>,
    /// Fen.
    pub refund: i64,
    /// Fen: the order's total.
    pub total: i64,
}

/// What the refund API and its notification say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub out_refund_no: String,
    pub out_trade_no: Option<String>,
    pub refund_id: Option<String>,
    /// `status` in answers, `refund_status` in notifications.
    #[serde(alias = "refund_status")]
    pub status: String,
    #[serde(default)]
    pub amount: Option<Value>,
}

/// The parameters a page hands to `WeixinJSBridge.invoke('getBrandWCPayRequest', …)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsapiParams {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: String,
    pub pay_sign: String,
}

pub struct PayClient {
    config: Arc<MerchantConfig>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    nonces: NonceCache,
}

fn nonce() -> String {
    uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .to_ascii_uppercase()
}

impl PayClient {
    pub fn new(config: Arc<MerchantConfig>, clock: Arc<dyn Clock>) -> PayClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        PayClient {
            config,
            http,
            clock,
            nonces: NonceCache::default(),
        }
    }

    pub fn config(&self) -> &MerchantConfig {
        &self.config
    }

    /// Sends one signed request and returns the verified status and raw body.
    async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), PayError> {
        // Serialised once: these exact bytes are signed, sent, and re-sent on retry.
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut last = PayError::Transport("no attempt".into());
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
            }
            match self.attempt(method, path_and_query, &bytes).await {
                Ok(answer) => return Ok(answer),
                Err(error) if error.is_transient() => {
                    tracing::warn!(attempt, "WeChat Pay {method} {path_and_query}: {error}");
                    last = error;
                }
                Err(error) => return Err(error),
            }
        }
        Err(last)
    }

    async fn attempt(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), PayError> {
        let config = &self.config;
        let timestamp = self.clock.now().timestamp().to_string();
        let header = authorization(
            &config.key,
            &config.mchid,
            &config.serial_no,
            method,
            path_and_query,
            &timestamp,
            &nonce(),
            body,
        )?;
        let url = format!("{}{path_and_query}", config.base_url.trim_end_matches('/'));
        let mut request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        }
        .header("accept", "application/json")
        .header("authorization", header)
        .header("wechatpay-serial", &config.wechatpay_serial)
        .header("user-agent", concat!("o2flow/", env!("CARGO_PKG_VERSION")));
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body.to_vec());
        }
        let response = request
            .send()
            .await
            .map_err(|e| PayError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if let Some(id) = headers.get("request-id").and_then(|v| v.to_str().ok()) {
            tracing::debug!(wechatpay.request_id = id, "WeChat Pay answered {status}");
        }
        let raw = response
            .bytes()
            .await
            .map_err(|e| PayError::Transport(e.to_string()))?
            .to_vec();
        if !(200..300).contains(&status) {
            let error: Value = serde_json::from_slice(&raw).unwrap_or_default();
            return Err(PayError::Api {
                status,
                code: error["code"].as_str().unwrap_or("UNKNOWN").to_owned(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        verify_signed(
            &config.platform,
            &self.nonces,
            self.clock.now().timestamp(),
            &get,
            &raw,
        )?;
        Ok((status, raw))
    }

    fn order_body(&self, order: &Order) -> Value {
        let mut body = json!({
            "appid": self.config.appid,
            "mchid": self.config.mchid,
            "description": order.description,
            "out_trade_no": order.out_trade_no,
        });
        if let Some(expire) = &order.time_expire {
            body["time_expire"] = json!(expire);
        }
        if let Some(attach) = &order.attach {
            body["attach"] = json!(attach);
        }
        body["notify_url"] = json!(self.config.notify_url);
        body["amount"] = json!({"total": order.total, "currency": "CNY"});
        if let Some(openid) = &order.payer_openid {
            body["payer"] = json!({"openid": openid});
        }
        body
    }

    /// `POST /v3/pay/transactions/jsapi` → `prepay_id`. The same
    /// `out_trade_no` with the same parameters returns the latest `prepay_id`.
    ///
    /// # Errors
    /// `PayError`.
    pub async fn jsapi_order(&self, order: &Order) -> Result<String, PayError> {
        let (_, raw) = self
            .send(
                "POST",
                "/v3/pay/transactions/jsapi",
                Some(&self.order_body(order)),
            )
            .await?;
        field(&raw, "prepay_id")
    }

    /// `POST /v3/pay/transactions/native` → `code_url` (shown as a QR).
    ///
    /// # Errors
    /// `PayError`.
    pub async fn native_order(&self, order: &Order) -> Result<String, PayError> {
        let (_, raw) = self
            .send(
                "POST",
                "/v3/pay/transactions/native",
                Some(&self.order_body(order)),
            )
            .await?;
        field(&raw, "code_url")
    }

    /// `GET /v3/pay/transactions/out-trade-no/{no}?mchid=…`.
    ///
    /// # Errors
    /// `PayError` (`ORDER_NOT_EXIST` as `Api`).
    pub async fn query(&self, out_trade_no: &str) -> Result<Transaction, PayError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
            self.config.mchid
        );
        let (_, raw) = self.send("GET", &path, None).await?;
        serde_json::from_slice(&raw).map_err(|e| PayError::Unexpected(e.to_string()))
    }

    /// `POST /v3/pay/transactions/out-trade-no/{no}/close` (204).
    ///
    /// # Errors
    /// `PayError`.
    pub async fn close(&self, out_trade_no: &str) -> Result<(), PayError> {
        let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
        self.send("POST", &path, Some(&json!({"mchid": self.config.mchid})))
            .await?;
        Ok(())
    }

    /// `POST /v3/refund/domestic/refunds`. A retry after a network error
    /// must reuse the same `out_refund_no`; after `CLOSED`, use a new one.
    ///
    /// # Errors
    /// `PayError`.
    pub async fn refund(&self, request: &RefundRequest) -> Result<Refund, PayError> {
        let mut body = json!({
            "out_trade_no": request.out_trade_no,
            "out_refund_no": request.out_refund_no,
        });
        if let Some(reason) = &request.reason {
            body["reason"] = json!(reason);
        }
        body["notify_url"] = json!(self.config.notify_url);
        body["amount"] =
            json!({"refund": request.refund, "total": request.total, "currency": "CNY"});
        let (_, raw) = self
            .send("POST", "/v3/refund/domestic/refunds", Some(&body))
            .await?;
        serde_json::from_slice(&raw).map_err(|e| PayError::Unexpected(e.to_string()))
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
    ///
    /// # Errors
    /// `PayError`.
    pub async fn query_refund(&self, out_refund_no: &str) -> Result<Refund, PayError> {
        let path = format!("/v3/refund/domestic/refunds/{out_refund_no}");
        let (_, raw) = self.send("GET", &path, None).await?;
        serde_json::from_slice(&raw).map_err(|e| PayError::Unexpected(e.to_string()))
    }

    /// The signed parameters a WeChat page needs to pay `prepay_id`.
    ///
    /// # Errors
    /// `Crypto` if signing fails.
    pub fn jsapi_params(&self, prepay_id: &str) -> Result<JsapiParams, PayError> {
        let time_stamp = self.clock.now().timestamp().to_string();
        let nonce_str = nonce();
        let package = format!("prepay_id={prepay_id}");
        let pay_sign = self.config.key.sign(
            pay_sign_message(&self.config.appid, &time_stamp, &nonce_str, &package).as_bytes(),
        )?;
        Ok(JsapiParams {
            app_id: self.config.appid.clone(),
            time_stamp,
            nonce_str,
            package,
            sign_type: "RSA".into(),
            pay_sign,
        })
    }
}

fn field(raw: &[u8], name: &str) -> Result<String, PayError> {
    let value: Value =
        serde_json::from_slice(raw).map_err(|e| PayError::Unexpected(e.to_string()))?;
    value[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| PayError::Unexpected(format!("no `{name}` in the answer")))
}
