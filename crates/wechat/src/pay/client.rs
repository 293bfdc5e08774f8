//! The WeChat Pay API v3 client: one per merchant, base URL configured
//! (default the real host). Requests are signed over the exact bytes sent;
//! every 2xx answer is verified on its raw bytes (signature by
//! `Wechatpay-Serial`, timestamp within ±300 s, nonce not seen before) or
//! refused as forged. 5xx and `SYSTEM_ERROR` are retried with the same
//! body, so the same `out_trade_no` / `out_refund_no`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::crypto::{
    authorization, pay_sign_message, ApiV3Key, CryptoError, MerchantKey, PlatformKeys, VerifyingKey,
};
use o2flow_core::clock::Clock;
use o2flow_core::domain::{CheckedBill, MixPayType};

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
    /// Platform-certificate mode: `/v3/certificates` is downloaded (and
    /// again when an answer names a serial not held: a rotation).
    pub platform_certificates: bool,
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
            .field("platform_certificates", &self.platform_certificates)
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

/// What the 医保 order APIs and the `MEDICAL_INSURANCE.SUCCESS`
/// notification say of a mixed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedInsStatus {
    pub mix_trade_no: String,
    /// `MIX_PAY_CREATED`, `MIX_PAY_SUCCESS`, `MIX_PAY_REFUND`, `MIX_PAY_FAIL`.
    pub mix_pay_status: String,
    #[serde(default)]
    pub self_pay_status: Option<String>,
    #[serde(default)]
    pub med_ins_pay_status: Option<String>,
    #[serde(default)]
    pub out_trade_no: Option<String>,
    #[serde(default)]
    pub appid: Option<String>,
    #[serde(default)]
    pub total_fee: Option<i64>,
    #[serde(default)]
    pub wechat_pay_cash_fee: Option<i64>,
    #[serde(default)]
    pub paid_time: Option<String>,
    #[serde(default)]
    pub med_ins_fail_reason: Option<String>,
}

/// A 医保 mixed order to create: the bill (amounts and the bureau's
/// pre-settlement ids) and, when there is a self-paid part, the prepay id
/// of its JSAPI order.
#[derive(Debug, Clone, Copy)]
pub struct MedInsOrder<'a> {
    pub out_trade_no: &'a str,
    pub openid: &'a str,
    pub bill: &'a CheckedBill,
    pub prepay_id: Option<&'a str>,
    /// RFC 3339 with offset.
    pub create_time: &'a str,
}

/// The 医保 part of a refund, done by the hospital through the insurance
/// bureau, reported to WeChat Pay under the self-pay refund's number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedInsRefund {
    pub out_refund_no: String,
    /// Fen.
    pub gov: i64,
    pub personal: i64,
    pub other: i64,
    /// RFC 3339 with offset.
    pub refund_time: String,
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
    /// The WeChat Pay keys answers are verified with and the serial sent
    /// as `Wechatpay-Serial`: the configured ones, plus in certificate
    /// mode the platform certificates last downloaded.
    keys: RwLock<(PlatformKeys, String)>,
    /// When an unknown serial last made us download (at most once a minute,
    /// so forged serials cannot make us hammer WeChat Pay).
    last_unknown_refresh: Mutex<Option<i64>>,
}

/// A platform certificate from `GET /v3/certificates`, decrypted.
#[derive(Debug, Clone)]
pub struct PlatformCertificate {
    pub serial_no: String,
    pub key: VerifyingKey,
    pub effective_time: DateTime<FixedOffset>,
    pub expire_time: DateTime<FixedOffset>,
}

/// Reads a `/v3/certificates` answer: each certificate decrypted with the
/// APIv3 key (AES-GCM proves it came from WeChat Pay), its serial checked
/// against the one listed, and the answer's own signature verified with
/// the certificate it names.
///
/// # Errors
/// `Crypto` for a certificate that does not decrypt or an answer that does not verify.
pub fn read_certificates(
    api_v3_key: &ApiV3Key,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<Vec<PlatformCertificate>, PayError> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| PayError::Unexpected(e.to_string()))?;
    let mut certificates = Vec::new();
    let mut keys = PlatformKeys::default();
    let items = answer["data"]
        .as_array()
        .ok_or_else(|| PayError::Unexpected("the certificate list has no `data`".into()))?;
    for item in items {
        let field = |value: &Value, name: &str| {
            value[name].as_str().map(str::to_owned).ok_or_else(|| {
                PayError::Unexpected(format!("a listed certificate has no `{name}`"))
            })
        };
        let serial_no = field(item, "serial_no")?;
        let text = |name: &str| field(item, name);
        let encrypted = &item["encrypt_certificate"];
        let pem = api_v3_key.decrypt(
            &field(encrypted, "nonce")?,
            &field(encrypted, "associated_data")?,
            &field(encrypted, "ciphertext")?,
        )?;
        let (key, serial) = VerifyingKey::from_certificate_pem(&String::from_utf8_lossy(&pem))?;
        if !serial.eq_ignore_ascii_case(&serial_no) {
            return Err(PayError::Forged(format!(
                "certificate {serial} is listed as {serial_no}"
            )));
        }
        let time = |name: &str| {
            DateTime::parse_from_rfc3339(&text(name)?)
                .map_err(|e| PayError::Unexpected(format!("{name}: {e}")))
        };
        keys.add(&serial, key.clone());
        certificates.push(PlatformCertificate {
            serial_no: serial,
            key,
            effective_time: time("effective_time")?,
            expire_time: time("expire_time")?,
        });
    }
    let get =
        |name: &str| header(name).ok_or_else(|| PayError::Forged(format!("no {name} header")));
    keys.verify(
        &get("Wechatpay-Serial")?,
        &get("Wechatpay-Timestamp")?,
        &get("Wechatpay-Nonce")?,
        body,
        &get("Wechatpay-Signature")?,
    )?;
    Ok(certificates)
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
        let keys = RwLock::new((config.platform.clone(), config.wechatpay_serial.clone()));
        PayClient {
            config,
            http,
            clock,
            nonces: NonceCache::default(),
            keys,
            last_unknown_refresh: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &MerchantConfig {
        &self.config
    }

    /// The WeChat Pay keys held now (callbacks are verified with them).
    pub fn platform_keys(&self) -> PlatformKeys {
        self.keys
            .read()
            .map(|k| k.0.clone())
            .unwrap_or_else(|e| e.into_inner().0.clone())
    }

    /// The serial sent as `Wechatpay-Serial`, whose key encrypts sensitive fields.
    pub fn wechatpay_serial(&self) -> String {
        self.keys
            .read()
            .map(|k| k.1.clone())
            .unwrap_or_else(|e| e.into_inner().1.clone())
    }

    /// In certificate mode, a message signed under a serial we do not hold
    /// may mean WeChat Pay rotated its certificate: download them again
    /// (at most once a minute), so the message can then be verified.
    pub async fn learn_serial(&self, serial: &str) {
        if !self.config.platform_certificates || self.platform_keys().get(serial).is_some() {
            return;
        }
        let now = self.clock.now().timestamp();
        {
            let Ok(mut last) = self.last_unknown_refresh.lock() else {
                return;
            };
            if last.is_some_and(|at| now - at < 60) {
                return;
            }
            *last = Some(now);
        }
        if let Err(error) = self.refresh_certificates().await {
            tracing::warn!(mchid = %self.config.mchid, "downloading WeChat Pay certificates failed: {error}");
        }
    }

    /// Platform-certificate mode: `GET /v3/certificates`, decrypted and
    /// verified (`read_certificates`). The configured public key (if any)
    /// stays; certificates past their expiry are dropped; the newest one in
    /// effect becomes `Wechatpay-Serial` unless a public key is held (the
    /// direction WeChat Pay is moving merchants). Old and new certificates
    /// are both held during a rotation, so either signature verifies.
    ///
    /// # Errors
    /// `PayError`; the keys held before stay.
    pub async fn refresh_certificates(&self) -> Result<Vec<String>, PayError> {
        let (_, raw, headers) = self.exchange("GET", "/v3/certificates", &[], false).await?;
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let now = self.clock.now();
        let certificates = read_certificates(&self.config.api_v3_key, &get, &raw)?;
        let at = get("Wechatpay-Timestamp")
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or_default();
        if (now.timestamp() - at).abs() > MAX_CLOCK_SKEW_SECS {
            return Err(PayError::Forged(format!("timestamp {at} is stale")));
        }
        let mut keys = self.config.platform.clone();
        let mut serial = self.config.wechatpay_serial.clone();
        let mut newest: Option<&PlatformCertificate> = None;
        for certificate in &certificates {
            if certificate.expire_time <= now {
                continue;
            }
            keys.add(&certificate.serial_no, certificate.key.clone());
            if certificate.effective_time <= now
                && newest.is_none_or(|n| n.effective_time < certificate.effective_time)
            {
                newest = Some(certificate);
            }
        }
        if !serial.starts_with("PUB_KEY_ID_") {
            if let Some(newest) = newest {
                serial.clone_from(&newest.serial_no);
            }
        }
        let serials = keys.serials();
        if let Ok(mut held) = self.keys.write() {
            *held = (keys, serial);
        }
        Ok(serials)
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
        let (status, raw, _) = self.exchange(method, path_and_query, &bytes, true).await?;
        Ok((status, raw))
    }

    /// Sends the same bytes until an answer that is not transient
    /// (5xx, `SYSTEM_ERROR`, 429, the network), verifying 2xx answers when `verify`.
    async fn exchange(
        &self,
        method: &str,
        path_and_query: &str,
        bytes: &[u8],
        verify: bool,
    ) -> Result<(u16, Vec<u8>, reqwest::header::HeaderMap), PayError> {
        let mut last = PayError::Transport("no attempt".into());
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
            }
            match self.attempt(method, path_and_query, bytes, verify).await {
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
        verify: bool,
    ) -> Result<(u16, Vec<u8>, reqwest::header::HeaderMap), PayError> {
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
        .header("wechatpay-serial", self.wechatpay_serial())
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
                code: error
                    .get("code")
                    .and_then(Value::as_str)
                    .unwrap_or("UNKNOWN")
                    .to_owned(),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("(WeChat Pay gave no message)")
                    .to_owned(),
            });
        }
        if verify {
            let get = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let serial = get("Wechatpay-Serial").unwrap_or_default();
            Box::pin(self.learn_serial(&serial)).await;
            verify_signed(
                &self.platform_keys(),
                &self.nonces,
                self.clock.now().timestamp(),
                &get,
                &raw,
            )?;
        }
        Ok((status, raw, headers))
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

    /// `POST /v3/med-ins/orders`: the mixed order, with the payer's name
    /// and ID digest RSA-OAEP-encrypted under the key named by
    /// `Wechatpay-Serial`. Returns the order with its `mix_trade_no`.
    ///
    /// # Errors
    /// `PayError` (`Crypto` when no key is held under the serial sent).
    pub async fn med_ins_order(&self, order: &MedInsOrder<'_>) -> Result<MedInsStatus, PayError> {
        let bill = order.bill;
        let settlement = bill.bill.settlement.as_ref().ok_or_else(|| {
            PayError::Unexpected("a 医保 order needs the bill's settlement".into())
        })?;
        if self.config.platform_certificates && self.platform_keys().serials().is_empty() {
            // Certificate mode and nothing downloaded yet (WeChat Pay was
            // unreachable): without a key the payer's fields cannot be encrypted.
            self.refresh_certificates().await?;
        }
        let serial = self.wechatpay_serial();
        let keys = self.platform_keys();
        let key = keys
            .get(&serial)
            .ok_or_else(|| CryptoError::UnknownSerial(serial.clone()))?;
        let mix_pay_type = match bill.mix_pay_type {
            MixPayType::CashOnly => "CASH_ONLY",
            MixPayType::InsuranceOnly => "INSURANCE_ONLY",
            MixPayType::CashAndInsurance => "CASH_AND_INSURANCE",
        };
        let mut body = json!({
            "mix_pay_type": mix_pay_type,
            "order_type": settlement.order_type,
            "appid": self.config.appid,
            "openid": order.openid,
            "payer": {
                "name": key.encrypt_oaep(&settlement.payer.name)?,
                "id_digest": key.encrypt_oaep(&settlement.payer.id_digest)?,
                "card_type": "ID_CARD",
            },
            "pay_for_relatives": false,
            "out_trade_no": order.out_trade_no,
            "serial_no": settlement.serial_no,
            "pay_order_id": settlement.pay_order_id,
            "pay_auth_no": settlement.pay_auth_no,
        });
        if let Some(geo) = &settlement.geo_location {
            body["geo_location"] = json!(geo);
        }
        body["city_id"] = json!(settlement.city_id);
        body["med_inst_name"] = json!(settlement.med_inst_name);
        body["med_inst_no"] = json!(settlement.med_inst_no);
        body["med_ins_order_create_time"] = json!(order.create_time);
        body["total_fee"] = json!(bill.total);
        body["med_ins_gov_fee"] = json!(bill.split.pooled_fund);
        body["med_ins_self_fee"] = json!(bill.split.personal_account);
        body["med_ins_other_fee"] = json!(bill.split.other_funds);
        body["med_ins_cash_fee"] = json!(bill.split.self_pay);
        body["wechat_pay_cash_fee"] = json!(bill.wechat_pay_cash);
        let detail = |list: &[o2flow_core::domain::Adjustment], fee: &str, kind: &str| -> Value {
            list.iter()
                .map(|a| json!({fee: a.amount, kind: a.kind}))
                .collect()
        };
        if !bill.bill.add.is_empty() {
            body["cash_add_detail"] = detail(&bill.bill.add, "cash_add_fee", "cash_add_type");
        }
        if !bill.bill.reduce.is_empty() {
            body["cash_reduce_detail"] =
                detail(&bill.bill.reduce, "cash_reduce_fee", "cash_reduce_type");
        }
        body["callback_url"] = json!(self.config.notify_url);
        if let Some(prepay_id) = order.prepay_id {
            body["prepay_id"] = json!(prepay_id);
        }
        body["med_ins_test_env"] = json!(settlement.test_env);
        let (_, raw) = self.send("POST", "/v3/med-ins/orders", Some(&body)).await?;
        serde_json::from_slice(&raw).map_err(|e| PayError::Unexpected(e.to_string()))
    }

    /// `GET /v3/med-ins/orders/mix-trade-no/{mix_trade_no}`.
    ///
    /// # Errors
    /// `PayError`.
    pub async fn query_med_ins(&self, mix_trade_no: &str) -> Result<MedInsStatus, PayError> {
        let path = format!("/v3/med-ins/orders/mix-trade-no/{mix_trade_no}");
        let (_, raw) = self.send("GET", &path, None).await?;
        serde_json::from_slice(&raw).map_err(|e| PayError::Unexpected(e.to_string()))
    }

    /// `POST /v3/med-ins/refunds/notify?mix_trade_no=…`: tells WeChat Pay the
    /// hospital refunded the 医保 part through the bureau (after the
    /// self-paid part's refund, with the same `out_refund_no`).
    ///
    /// # Errors
    /// `PayError`.
    pub async fn med_ins_refund_notify(
        &self,
        mix_trade_no: &str,
        refund: &MedInsRefund,
    ) -> Result<(), PayError> {
        let path = format!("/v3/med-ins/refunds/notify?mix_trade_no={mix_trade_no}");
        let body = json!({
            "med_refund_total_fee": refund.gov + refund.personal + refund.other,
            "med_refund_gov_fee": refund.gov,
            "med_refund_self_fee": refund.personal,
            "med_refund_other_fee": refund.other,
            "refund_time": refund.refund_time,
            "out_refund_no": refund.out_refund_no,
        });
        self.send("POST", &path, Some(&body)).await?;
        Ok(())
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
