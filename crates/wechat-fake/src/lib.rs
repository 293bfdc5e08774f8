//! A fake WeChat Pay server for tests and local development: loopback,
//! port 0. It behaves as the published API does (`wechat-protocols` §5): it
//! verifies every request's signature (401 `SIGN_ERROR` otherwise), signs
//! every 2xx answer with its platform key, keeps orders and refunds with
//! the real rules, and on a control call ("the user pays", "the refund
//! completes") sends signed, encrypted notifications. Failures can be
//! injected: a 500 `SYSTEM_ERROR`, a 429, a forged or stale answer, and
//! probe, stale, wrong-serial, delayed, dropped or duplicated
//! notifications. A notification the receiver does not answer 2xx within
//! 5 s is sent again on WeChat Pay's 15-step schedule, compressed.
//! 医保 mixed orders (`/v3/med-ins/*`) keep the amount invariants and
//! decrypt the payer's OAEP fields; `/v3/certificates` serves the platform
//! certificate for certificate mode, and the serial it signs under can be
//! switched mid-test (a migration).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use o2flow_core::clock::Clock;
use o2flow_wechat::pay::crypto::{
    parse_authorization, request_message, response_message, ApiV3Key, CryptoError, MerchantKey,
    VerifyingKey, SIGNTEST_PREFIX,
};

/// What the fake knows: the merchant it serves and its own platform key.
pub struct FakeConfig {
    pub mchid: String,
    pub appid: String,
    pub merchant_serial: String,
    pub merchant_public: VerifyingKey,
    pub platform_key: MerchantKey,
    /// The serial the fake signs under at first (`PUB_KEY_ID_…`, or the
    /// certificate's serial in certificate mode); `sign_as` changes it.
    pub platform_serial: String,
    /// The same key pair's private PEM, to decrypt OAEP fields (test key).
    pub platform_private_pem: String,
    /// The platform certificate (PEM) `/v3/certificates` serves, if any.
    pub platform_certificate: Option<String>,
    pub api_v3_key: ApiV3Key,
    pub clock: Arc<dyn Clock>,
}

/// WeChat Pay's schedule for a notification that was not answered 2xx:
/// 15 more attempts over about 24 h.
pub const RETRY_SCHEDULE: [Duration; 15] = [
    Duration::from_secs(15),
    Duration::from_secs(15),
    Duration::from_secs(30),
    Duration::from_secs(180),
    Duration::from_secs(600),
    Duration::from_secs(1200),
    Duration::from_secs(1800),
    Duration::from_secs(1800),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
    Duration::from_secs(10_800),
    Duration::from_secs(10_800),
    Duration::from_secs(10_800),
    Duration::from_secs(21_600),
    Duration::from_secs(21_600),
];

/// How long WeChat Pay waits for the receiver's answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A failure to inject into the next answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFault {
    /// 500 `SYSTEM_ERROR` (the client must retry with the same body).
    SystemError,
    /// A 2xx whose signature does not verify.
    ForgedSignature,
    /// A 2xx signed ten minutes in the past.
    StaleTimestamp,
    /// 429 `FREQUENCY_LIMITED` (the client must retry with the same body).
    RateLimited,
}

/// How to deliver a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyMode {
    Normal,
    /// The same notification twice, byte for byte (a replay: the second
    /// must be refused by the nonce check).
    Duplicate,
    /// The same notification (same id) sent again, freshly signed, as
    /// WeChat Pay retries when it did not see an answer.
    Resend,
    /// A `WECHATPAY/SIGNTEST/` probe: must be refused.
    Probe,
    /// Signed ten minutes ago: must be refused.
    StaleTimestamp,
    /// Signed under a serial the merchant does not hold: must be refused.
    WrongSerial,
    /// Lost on the way: the state changes, no notification arrives
    /// (reconciliation must find it).
    Drop,
    /// Sent this long after the state changed (a query may see it first).
    Delayed(Duration),
}

#[derive(Debug, Clone)]
struct FakeOrder {
    request: Value,
    prepay_id: String,
    trade_state: String,
    transaction_id: Option<String>,
    success_time: Option<String>,
    refunded: i64,
}

#[derive(Debug, Clone)]
struct FakeRefund {
    out_trade_no: String,
    refund_id: String,
    status: String,
    refund: i64,
    total: i64,
    notify_url: Option<String>,
}

/// A 医保 mixed order: the request as sent (payer fields decrypted) and its state.
#[derive(Debug, Clone)]
struct FakeMedOrder {
    request: Value,
    mix_pay_status: String,
    self_pay_status: String,
    med_ins_pay_status: String,
    paid_time: Option<String>,
    refunds: Vec<Value>,
}

#[derive(Default)]
struct State {
    orders: HashMap<String, FakeOrder>,
    refunds: HashMap<String, FakeRefund>,
    /// By `mix_trade_no`.
    med_orders: HashMap<String, FakeMedOrder>,
    faults: VecDeque<AnswerFault>,
    /// `(method, path?query, status)` of every request.
    requests: Vec<(String, String, u16)>,
    /// The body of every request, in the same order.
    bodies: Vec<String>,
    sequence: u64,
    /// Multiplies `RETRY_SCHEDULE` (tests compress a day into milliseconds).
    retry_scale: f64,
    /// Every notification attempt: `(notification id, status)`.
    deliveries: Vec<(String, u16)>,
}

struct Fake {
    config: FakeConfig,
    state: Mutex<State>,
    /// The serial answers and notifications are signed under now (apart
    /// from `state`: answers are signed while `state` is held).
    signing_serial: std::sync::RwLock<String>,
    http: reqwest::Client,
}

/// A running fake. Dropping it does not stop the server; call `stop`.
pub struct FakeWechatPay {
    pub base_url: String,
    fake: Arc<Fake>,
    handle: actix_web::dev::ServerHandle,
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .json(json!({"code": code, "message": message}))
}

impl Fake {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self) -> i64 {
        self.config.clock.now().timestamp()
    }

    fn signing_serial(&self) -> String {
        self.signing_serial
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Signature headers for `body`, at `timestamp`, under `serial`.
    fn sign(&self, timestamp: i64, serial: &str, body: &[u8]) -> Vec<(String, String)> {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let signature = self
            .config
            .platform_key
            .sign(&response_message(&timestamp.to_string(), &nonce, body))
            .unwrap_or_default();
        vec![
            ("Wechatpay-Timestamp".into(), timestamp.to_string()),
            ("Wechatpay-Nonce".into(), nonce),
            ("Wechatpay-Serial".into(), serial.to_owned()),
            ("Wechatpay-Signature".into(), signature),
            (
                "Wechatpay-Signature-Type".into(),
                "WECHATPAY2-SHA256-RSA2048".into(),
            ),
        ]
    }

    fn answer(&self, status: u16, body: Option<Value>, fault: Option<AnswerFault>) -> HttpResponse {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let timestamp = match fault {
            Some(AnswerFault::StaleTimestamp) => self.now() - 600,
            _ => self.now(),
        };
        let serial = self.signing_serial();
        let mut headers = self.sign(timestamp, &serial, &bytes);
        if fault == Some(AnswerFault::ForgedSignature) {
            headers[3].1 = self
                .config
                .platform_key
                .sign(b"something else")
                .unwrap_or_default();
        }
        let mut response =
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default());
        response.insert_header(("Request-ID", uuid::Uuid::new_v4().to_string()));
        for header in headers {
            response.insert_header(header);
        }
        if bytes.is_empty() {
            response.finish()
        } else {
            response.content_type("application/json").body(bytes)
        }
    }

    /// Why the request is not signed by the merchant, freshly (a 401).
    fn check_signature(&self, request: &HttpRequest, body: &[u8]) -> Result<(), String> {
        let sign_error = |why: &str| why.to_owned();
        let header = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| sign_error("missing Authorization"))?;
        let auth =
            parse_authorization(header).ok_or_else(|| sign_error("malformed Authorization"))?;
        if auth.mchid != self.config.mchid
            || !auth
                .serial_no
                .eq_ignore_ascii_case(&self.config.merchant_serial)
        {
            return Err(sign_error("unknown mchid or serial_no"));
        }
        let at: i64 = auth
            .timestamp
            .parse()
            .map_err(|_| sign_error("bad timestamp"))?;
        if (self.now() - at).abs() > 300 {
            return Err(sign_error("timestamp expired"));
        }
        let path = request
            .uri()
            .path_and_query()
            .map_or_else(|| request.path().to_owned(), ToString::to_string);
        let message = request_message(
            request.method().as_str(),
            &path,
            &auth.timestamp,
            &auth.nonce_str,
            body,
        );
        self.config
            .merchant_public
            .verify(&message, &auth.signature)
            .map_err(|_| sign_error("signature does not verify"))
    }

    fn transaction(&self, out_trade_no: &str, order: &FakeOrder) -> Value {
        let mut value = json!({
            "appid": order.request["appid"],
            "mchid": self.config.mchid,
            "out_trade_no": out_trade_no,
            "trade_type": if order.request.get("payer").is_some() { "JSAPI" } else { "NATIVE" },
            "trade_state": order.trade_state,
            "trade_state_desc": match order.trade_state.as_str() {
                "SUCCESS" => "支付成功", "CLOSED" => "已关闭", "REFUND" => "转入退款", _ => "订单未支付",
            },
            "amount": {"total": order.request["amount"]["total"], "currency": "CNY"},
        });
        if let Some(attach) = order.request.get("attach") {
            value["attach"] = attach.clone();
        }
        if let Some(id) = &order.transaction_id {
            value["transaction_id"] = json!(id);
            value["success_time"] = json!(order.success_time);
            value["bank_type"] = json!("OTHERS");
            value["amount"]["payer_total"] = order.request["amount"]["total"].clone();
            value["amount"]["payer_currency"] = json!("CNY");
            if let Some(payer) = order.request.get("payer") {
                value["payer"] = payer.clone();
            }
        }
        value
    }

    fn refund_json(&self, out_refund_no: &str, refund: &FakeRefund) -> Value {
        json!({
            "refund_id": refund.refund_id,
            "out_refund_no": out_refund_no,
            "out_trade_no": refund.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "status": refund.status,
            "amount": {"refund": refund.refund, "total": refund.total, "payer_refund": refund.refund, "payer_total": refund.total, "currency": "CNY"},
        })
    }

    fn handle(&self, request: &HttpRequest, body: &[u8]) -> HttpResponse {
        if let Err(why) = self.check_signature(request, body) {
            return error(401, "SIGN_ERROR", &why);
        }
        let fault = self.lock().faults.pop_front();
        if fault == Some(AnswerFault::SystemError) {
            return error(500, "SYSTEM_ERROR", "系统错误");
        }
        if fault == Some(AnswerFault::RateLimited) {
            return error(429, "FREQUENCY_LIMITED", "请求频率超限");
        }
        let path = request.path().to_owned();
        let method = request.method().as_str().to_owned();
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(value) => value,
                Err(_) => return error(400, "PARAM_ERROR", "body is not JSON"),
            }
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["v3", "pay", "transactions", scene @ ("jsapi" | "native")]) => {
                self.create_order(scene, body, fault)
            }
            ("GET", ["v3", "pay", "transactions", "out-trade-no", no]) => {
                let state = self.lock();
                match state.orders.get(*no) {
                    Some(order) => self.answer(200, Some(self.transaction(no, order)), fault),
                    None => error(404, "ORDER_NOT_EXIST", "订单不存在"),
                }
            }
            ("POST", ["v3", "pay", "transactions", "out-trade-no", no, "close"]) => {
                let mut state = self.lock();
                match state.orders.get_mut(*no) {
                    None => error(404, "ORDER_NOT_EXIST", "订单不存在"),
                    Some(order)
                        if order.trade_state == "SUCCESS" || order.trade_state == "REFUND" =>
                    {
                        error(400, "ORDERPAID", "订单已支付")
                    }
                    Some(order) => {
                        order.trade_state = "CLOSED".into();
                        self.answer(204, None, fault)
                    }
                }
            }
            ("POST", ["v3", "refund", "domestic", "refunds"]) => self.create_refund(&body, fault),
            ("GET", ["v3", "refund", "domestic", "refunds", no]) => {
                let state = self.lock();
                match state.refunds.get(*no) {
                    Some(refund) => self.answer(200, Some(self.refund_json(no, refund)), fault),
                    None => error(404, "RESOURCE_NOT_EXISTS", "退款单不存在"),
                }
            }
            ("GET", ["v3", "certificates"]) => self.certificates(fault),
            ("POST", ["v3", "med-ins", "orders"]) => {
                let serial = request
                    .headers()
                    .get("wechatpay-serial")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                self.create_med_order(body, &serial, fault)
            }
            ("GET", ["v3", "med-ins", "orders", by @ ("mix-trade-no" | "out-trade-no"), no]) => {
                let state = self.lock();
                let found = state.med_orders.iter().find(|(mix, order)| {
                    if *by == "mix-trade-no" {
                        mix.as_str() == *no
                    } else {
                        order.request["out_trade_no"] == *no
                    }
                });
                match found {
                    Some((mix, order)) => {
                        let answer = med_json(mix, order);
                        drop(state);
                        self.answer(200, Some(answer), fault)
                    }
                    None => error(404, "ORDER_NOT_EXIST", "订单不存在"),
                }
            }
            ("POST", ["v3", "med-ins", "refunds", "notify"]) => {
                let mix = request
                    .query_string()
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("mix_trade_no="))
                    .unwrap_or_default()
                    .to_owned();
                self.med_refund_notify(&mix, &body, fault)
            }
            _ => error(404, "NOT_FOUND", "no such API in the fake"),
        }
    }

    fn create_order(&self, scene: &str, body: Value, fault: Option<AnswerFault>) -> HttpResponse {
        let text = |name: &str| request_text(&body, name);
        let out_trade_no = text("out_trade_no");
        let valid_no = (6..=32).contains(&out_trade_no.len())
            && out_trade_no
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-|*".contains(c));
        let total = fen_or(&body["amount"]["total"], 0);
        if text("mchid") != self.config.mchid || text("appid").is_empty() {
            return error(400, "PARAM_ERROR", "mchid or appid is wrong");
        }
        if !valid_no
            || text("description").is_empty()
            || text("notify_url").is_empty()
            || total <= 0
        {
            return error(
                400,
                "PARAM_ERROR",
                "out_trade_no, description, notify_url and amount.total are required",
            );
        }
        if scene == "jsapi" && body["payer"]["openid"].as_str().is_none() {
            return error(400, "PARAM_ERROR", "payer.openid is required for JSAPI");
        }
        let mut state = self.lock();
        if let Some(order) = state.orders.get(&out_trade_no) {
            if order.trade_state == "CLOSED" {
                return error(400, "ORDER_CLOSED", "订单已关闭");
            }
            if order.request != body {
                return error(403, "OUT_TRADE_NO_USED", "商户订单号重复");
            }
            let prepay_id = order.prepay_id.clone();
            drop(state);
            return self.answer(200, Some(prepay_answer(scene, &prepay_id)), fault);
        }
        state.sequence += 1;
        let prepay_id = format!("wx{}{:010}", self.now(), state.sequence);
        state.orders.insert(
            out_trade_no,
            FakeOrder {
                request: body,
                prepay_id: prepay_id.clone(),
                trade_state: "NOTPAY".into(),
                transaction_id: None,
                success_time: None,
                refunded: 0,
            },
        );
        drop(state);
        self.answer(200, Some(prepay_answer(scene, &prepay_id)), fault)
    }

    fn create_refund(&self, body: &Value, fault: Option<AnswerFault>) -> HttpResponse {
        let out_trade_no = request_text(body, "out_trade_no");
        let out_refund_no = request_text(body, "out_refund_no");
        if out_refund_no.is_empty() || out_trade_no.is_empty() {
            return error(
                400,
                "PARAM_ERROR",
                "out_trade_no and out_refund_no are required",
            );
        }
        let refund = fen_or(&body["amount"]["refund"], 0);
        let total = fen_or(&body["amount"]["total"], 0);
        let mut state = self.lock();
        if let Some(existing) = state.refunds.get(&out_refund_no) {
            let answer = self.refund_json(&out_refund_no, existing);
            drop(state);
            return self.answer(200, Some(answer), fault);
        }
        let Some(order) = state.orders.get_mut(&out_trade_no) else {
            return error(404, "ORDER_NOT_EXIST", "订单不存在");
        };
        if order.transaction_id.is_none() {
            return error(400, "INVALID_REQUEST", "订单未支付");
        }
        if total != fen_or(&order.request["amount"]["total"], -1) {
            return error(400, "PARAM_ERROR", "amount.total does not match the order");
        }
        if refund <= 0 || order.refunded + refund > total {
            return error(403, "NOT_ENOUGH", "退款金额超过可退金额");
        }
        order.refunded += refund;
        order.trade_state = "REFUND".into();
        state.sequence += 1;
        let record = FakeRefund {
            out_trade_no,
            refund_id: format!("5030000{:020}", state.sequence),
            status: "PROCESSING".into(),
            refund,
            total,
            notify_url: body["notify_url"].as_str().map(str::to_owned),
        };
        let answer = self.refund_json(&out_refund_no, &record);
        state.refunds.insert(out_refund_no, record);
        drop(state);
        self.answer(200, Some(answer), fault)
    }

    /// `/v3/certificates`: the platform certificate, encrypted with the
    /// APIv3 key (AAD `certificate`).
    fn certificates(&self, fault: Option<AnswerFault>) -> HttpResponse {
        let Some(pem) = &self.config.platform_certificate else {
            return error(
                404,
                "NOT_FOUND",
                "this merchant uses the WeChat Pay public key",
            );
        };
        let Ok((_, serial)) = VerifyingKey::from_certificate_pem(pem) else {
            return error(500, "SYSTEM_ERROR", "bad test certificate");
        };
        let nonce = "CertNonce012";
        let ciphertext = self
            .config
            .api_v3_key
            .encrypt(nonce, "certificate", pem.as_bytes())
            .unwrap_or_default();
        let answer = json!({"data": [{
            "serial_no": serial,
            "effective_time": "2026-01-01T08:00:00+08:00",
            "expire_time": "2046-01-01T08:00:00+08:00",
            "encrypt_certificate": {"algorithm": "AEAD_AES_256_GCM", "nonce": nonce, "associated_data": "certificate", "ciphertext": ciphertext},
        }]});
        self.answer(200, Some(answer), fault)
    }

    /// `POST /v3/med-ins/orders` with the rules of §3: the payer's fields
    /// decrypt under the key named by `Wechatpay-Serial`, the amounts keep
    /// the invariants, the legs match `mix_pay_type`, the self-paid leg's
    /// prepay id is an order for exactly `wechat_pay_cash_fee`.
    fn create_med_order(
        &self,
        mut body: Value,
        serial: &str,
        fault: Option<AnswerFault>,
    ) -> HttpResponse {
        let param = |why: &str| error(400, "PARAM_ERROR", why);
        let signing = self.signing_serial();
        if !serial.eq_ignore_ascii_case(&signing)
            && !serial.eq_ignore_ascii_case(&self.config.platform_serial)
        {
            return param("Wechatpay-Serial does not name a WeChat Pay key of this merchant");
        }
        for field in ["name", "id_digest"] {
            let Some(text) = body["payer"][field].as_str() else {
                return param("payer.name and payer.id_digest are required");
            };
            match decrypt_oaep_for_tests(&self.config.platform_private_pem, text) {
                Ok(plain) => body["payer"][field] = json!(plain),
                Err(_) => {
                    return param(
                        "payer fields must be RSA-OAEP (SHA-1) encrypted under the WeChat Pay key",
                    )
                }
            }
        }
        let text = |name: &str| request_text(&body, name);
        let fee = |name: &str| fen_or(&body[name], -1);
        for name in [
            "order_type",
            "appid",
            "openid",
            "out_trade_no",
            "serial_no",
            "pay_order_id",
            "pay_auth_no",
            "city_id",
            "med_inst_name",
            "med_inst_no",
            "med_ins_order_create_time",
            "callback_url",
        ] {
            if text(name).is_empty() {
                return param(&format!("{name} is required"));
            }
        }
        if text("appid") != self.config.appid {
            return param("appid is wrong");
        }
        let sum = |list: &str, field: &str| -> i64 {
            body[list]
                .as_array()
                .map(|a| a.iter().map(|e| fen_or(&e[field], 0)).sum())
                .unwrap_or(0)
        };
        let (add, reduce) = (
            sum("cash_add_detail", "cash_add_fee"),
            sum("cash_reduce_detail", "cash_reduce_fee"),
        );
        let (gov, own, other, cash, wechat) = (
            fee("med_ins_gov_fee"),
            fee("med_ins_self_fee"),
            fee("med_ins_other_fee"),
            fee("med_ins_cash_fee"),
            fee("wechat_pay_cash_fee"),
        );
        if [gov, own, other, cash, wechat].iter().any(|v| *v < 0)
            || fee("total_fee") != gov + own + other + cash + add
            || fee("total_fee") != gov + own + other + wechat + reduce
        {
            return param("total_fee must be gov + self + other + cash + Σadd = gov + self + other + wechat_pay_cash + Σreduce");
        }
        let prepay = body["prepay_id"].as_str().map(str::to_owned);
        match text("mix_pay_type").as_str() {
            "INSURANCE_ONLY" if wechat == 0 && prepay.is_none() => {}
            "CASH_AND_INSURANCE" if wechat > 0 && gov + own + other > 0 && prepay.is_some() => {}
            _ => return param("mix_pay_type does not match the amounts and prepay_id"),
        }
        let mut state = self.lock();
        if let Some(prepay) = &prepay {
            let order = state.orders.values().find(|o| &o.prepay_id == prepay);
            match order {
                Some(o)
                    if o.request["amount"]["total"].as_i64() == Some(wechat)
                        && o.request["payer"]["openid"] == body["openid"] => {}
                Some(_) => {
                    return param(
                        "the prepay_id's order is not for wechat_pay_cash_fee and this openid",
                    )
                }
                None => return param("unknown prepay_id"),
            }
        }
        let out_trade_no = text("out_trade_no");
        if let Some((mix, order)) = state
            .med_orders
            .iter()
            .find(|(_, o)| o.request["out_trade_no"] == out_trade_no.as_str())
        {
            if order.request != body {
                return error(403, "OUT_TRADE_NO_USED", "商户订单号重复");
            }
            let answer = med_json(mix, order);
            drop(state);
            return self.answer(200, Some(answer), fault);
        }
        state.sequence += 1;
        let mix = format!("MIX{}{:010}", self.now(), state.sequence);
        let order = FakeMedOrder {
            request: body,
            mix_pay_status: "MIX_PAY_CREATED".into(),
            self_pay_status: if wechat > 0 {
                "SELF_PAY_CREATED"
            } else {
                "NO_SELF_PAY"
            }
            .into(),
            med_ins_pay_status: "MED_INS_PAY_CREATED".into(),
            paid_time: None,
            refunds: Vec::new(),
        };
        let answer = med_json(&mix, &order);
        state.med_orders.insert(mix, order);
        drop(state);
        self.answer(200, Some(answer), fault)
    }

    /// `POST /v3/med-ins/refunds/notify`: only for a paid order, never more
    /// than the insured amounts, the total the sum of its parts.
    fn med_refund_notify(
        &self,
        mix: &str,
        body: &Value,
        fault: Option<AnswerFault>,
    ) -> HttpResponse {
        let mut state = self.lock();
        let Some(order) = state.med_orders.get_mut(mix) else {
            return error(404, "ORDER_NOT_EXIST", "订单不存在");
        };
        if order.mix_pay_status != "MIX_PAY_SUCCESS" && order.mix_pay_status != "MIX_PAY_REFUND" {
            return error(400, "INVALID_REQUEST", "订单未支付成功");
        }
        let fee = |name: &str| fen_or(&body[name], -1);
        let (gov, own, other) = (
            fee("med_refund_gov_fee"),
            fee("med_refund_self_fee"),
            fee("med_refund_other_fee"),
        );
        let refunded = |field: &str| {
            order
                .refunds
                .iter()
                .map(|r| fen_or(&r[field], 0))
                .sum::<i64>()
        };
        if gov < 0
            || own < 0
            || other < 0
            || fee("med_refund_total_fee") != gov + own + other
            || body["out_refund_no"].as_str().is_none_or(str::is_empty)
            || body["refund_time"].as_str().is_none_or(str::is_empty)
            || gov + refunded("med_refund_gov_fee") > fen_or(&order.request["med_ins_gov_fee"], 0)
            || own + refunded("med_refund_self_fee") > fen_or(&order.request["med_ins_self_fee"], 0)
            || other + refunded("med_refund_other_fee")
                > fen_or(&order.request["med_ins_other_fee"], 0)
        {
            return error(
                400,
                "PARAM_ERROR",
                "the 医保 refund does not add up or exceeds what insurance paid",
            );
        }
        if !order
            .refunds
            .iter()
            .any(|r| r["out_refund_no"] == body["out_refund_no"])
        {
            order.refunds.push(body.clone());
        }
        order.mix_pay_status = "MIX_PAY_REFUND".into();
        order.med_ins_pay_status = "MED_INS_PAY_REFUND".into();
        drop(state);
        self.answer(204, None, fault)
    }

    /// Builds a signed, encrypted notification and posts it as `mode` says;
    /// returns the statuses the receiver answered.
    async fn notify(
        &self,
        url: &str,
        event_type: &str,
        original_type: &str,
        resource: &Value,
        mode: NotifyMode,
    ) -> Vec<u16> {
        // Held up on the way: signed when it is finally sent.
        if let NotifyMode::Delayed(delay) = mode {
            tokio::time::sleep(delay).await;
        }
        let sequence = {
            let mut state = self.lock();
            state.sequence += 1;
            state.sequence
        };
        let nonce = format!("{:012}", sequence % 1_000_000_000_000);
        let ciphertext = self
            .config
            .api_v3_key
            .encrypt(&nonce, original_type, resource.to_string().as_bytes())
            .unwrap_or_default();
        let envelope = json!({
            "id": format!("EV-{}-{sequence}", self.now()),
            "create_time": self.config.clock.now().with_timezone(&chrono_tz::Asia::Shanghai).to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": if event_type.starts_with("REFUND") { "退款成功" } else { "支付成功" },
            "resource": {"original_type": original_type, "algorithm": "AEAD_AES_256_GCM", "ciphertext": ciphertext, "associated_data": original_type, "nonce": nonce},
        });
        let body = envelope.to_string().into_bytes();
        let timestamp = if mode == NotifyMode::StaleTimestamp {
            self.now() - 600
        } else {
            self.now()
        };
        let serial = if mode == NotifyMode::WrongSerial {
            "7E57C0DE0000000000000000000000000000FFFF".to_owned()
        } else {
            self.signing_serial()
        };

        let mut headers = self.sign(timestamp, &serial, &body);
        if mode == NotifyMode::Probe {
            headers[3].1 = format!("{SIGNTEST_PREFIX}{}", headers[3].1);
        }
        let times = match mode {
            NotifyMode::Duplicate | NotifyMode::Resend => 2,
            NotifyMode::Drop => 0,
            _ => 1,
        };
        // The fake built this envelope itself, with an id.
        let id = request_text(&envelope, "id");
        let mut statuses = Vec::new();
        for attempt in 0..times {
            if mode == NotifyMode::Resend && attempt > 0 {
                headers = self.sign(timestamp, &serial, &body);
            }
            statuses.push(self.post(url, &id, &headers, &body).await);
        }
        // Not answered 2xx in time: WeChat Pay tries again on its schedule
        // (a probe or a forgery is never retried; the merchant is meant to refuse those).
        let retried = matches!(
            mode,
            NotifyMode::Normal | NotifyMode::Resend | NotifyMode::Delayed(_)
        );
        if retried && statuses.last().is_some_and(|s| !(200..300).contains(s)) {
            let scale = self.lock().retry_scale;
            for wait in RETRY_SCHEDULE {
                tokio::time::sleep(wait.mul_f64(scale)).await;
                let timestamp = self.now();
                let headers = self.sign(timestamp, &serial, &body);
                let status = self.post(url, &id, &headers, &body).await;
                statuses.push(status);
                if (200..300).contains(&status) {
                    break;
                }
            }
        }
        statuses
    }

    /// One delivery attempt: the receiver's status, 0 when it did not answer within 5 s.
    async fn post(&self, url: &str, id: &str, headers: &[(String, String)], body: &[u8]) -> u16 {
        let mut request = self
            .http
            .post(url)
            .timeout(ANSWER_WITHIN)
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let status = match request.body(body.to_vec()).send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        };
        self.lock().deliveries.push((id.to_owned(), status));
        status
    }
}

/// A 医保 order as the API answers it (no payer fields).
fn med_json(mix: &str, order: &FakeMedOrder) -> Value {
    let mut value = order.request.clone();
    if let Some(object) = value.as_object_mut() {
        object.remove("payer");
    }
    value["mix_trade_no"] = json!(mix);
    value["mix_pay_status"] = json!(order.mix_pay_status);
    value["self_pay_status"] = json!(order.self_pay_status);
    value["med_ins_pay_status"] = json!(order.med_ins_pay_status);
    if let Some(paid) = &order.paid_time {
        value["paid_time"] = json!(paid);
    }
    if order.mix_pay_status == "MIX_PAY_FAIL" {
        value["med_ins_fail_reason"] = json!("医保结算失败");
    }
    value
}

fn prepay_answer(scene: &str, prepay_id: &str) -> Value {
    if scene == "native" {
        json!({"code_url": format!("weixin://wxpay/bizpayurl?pr={prepay_id}")})
    } else {
        json!({"prepay_id": prepay_id})
    }
}

async fn dispatch(request: HttpRequest, body: web::Bytes, fake: web::Data<Fake>) -> HttpResponse {
    let response = fake.handle(&request, &body);
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(String::new, ToString::to_string);
    let mut state = fake.lock();
    state.requests.push((
        request.method().to_string(),
        path,
        response.status().as_u16(),
    ));
    state
        .bodies
        .push(String::from_utf8_lossy(&body).into_owned());
    drop(state);
    response
}

impl FakeWechatPay {
    /// Starts the fake on 127.0.0.1, port 0.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub fn start(config: FakeConfig) -> std::io::Result<FakeWechatPay> {
        let state = State {
            retry_scale: 1.0 / 10_000.0,
            ..State::default()
        };
        let fake = web::Data::new(Fake {
            signing_serial: std::sync::RwLock::new(config.platform_serial.clone()),
            config,
            state: Mutex::new(state),
            http: reqwest::Client::new(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let data = fake.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(dispatch))
        })
        .workers(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(FakeWechatPay {
            base_url: format!("http://{address}"),
            fake: fake.into_inner(),
            handle,
        })
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }

    /// The next answer carries this fault.
    pub fn inject(&self, fault: AnswerFault) {
        self.fake.lock().faults.push_back(fault);
    }

    /// Every request so far: `(method, path?query, status)`.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        self.fake.lock().requests.clone()
    }

    /// The body of every request so far, in the order of `requests`.
    pub fn bodies(&self) -> Vec<String> {
        self.fake.lock().bodies.clone()
    }

    /// Every notification attempt so far: `(notification id, receiver's status)`.
    pub fn deliveries(&self) -> Vec<(String, u16)> {
        self.fake.lock().deliveries.clone()
    }

    /// From now on answers and notifications are signed under `serial`
    /// (the same key pair: a switch between public key and certificate).
    pub fn sign_as(&self, serial: &str) {
        if let Ok(mut signing) = self.fake.signing_serial.write() {
            serial.clone_into(&mut signing);
        }
    }

    /// `RETRY_SCHEDULE` times `scale` (default 1/10 000: a day in about 9 s).
    pub fn set_retry_scale(&self, scale: f64) {
        self.fake.lock().retry_scale = scale;
    }

    /// A 医保 order's state: `(mix_pay_status, self_pay_status, med_ins_pay_status)`.
    pub fn med_order_state(&self, mix_trade_no: &str) -> Option<(String, String, String)> {
        self.fake.lock().med_orders.get(mix_trade_no).map(|o| {
            (
                o.mix_pay_status.clone(),
                o.self_pay_status.clone(),
                o.med_ins_pay_status.clone(),
            )
        })
    }

    /// The payer of a 医保 order as the fake decrypted it: `(name, id_digest)`.
    pub fn med_payer(&self, mix_trade_no: &str) -> Option<(String, String)> {
        self.fake.lock().med_orders.get(mix_trade_no).map(|o| {
            let field = |name: &str| {
                o.request["payer"][name]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            (field("name"), field("id_digest"))
        })
    }

    /// The 医保 refunds reported for an order.
    pub fn med_refunds(&self, mix_trade_no: &str) -> Vec<Value> {
        self.fake
            .lock()
            .med_orders
            .get(mix_trade_no)
            .map(|o| o.refunds.clone())
            .unwrap_or_default()
    }

    /// The patient confirms the 医保 payment (password, then the self-paid
    /// part): the cash leg's order succeeds (`TRANSACTION.SUCCESS` to its
    /// notify_url, which alone settles nothing), then the order reaches
    /// `MIX_PAY_SUCCESS` and `MEDICAL_INSURANCE.SUCCESS` goes to its
    /// callback_url as `mode` says. Returns the answers to the latter.
    pub async fn user_pays_med_ins(&self, mix_trade_no: &str, mode: NotifyMode) -> Vec<u16> {
        self.settle_med(mix_trade_no, true, mode).await
    }

    /// The self-paid leg is paid but the insurance bureau refuses its part:
    /// `MIX_PAY_FAIL` (no 医保 notification: WeChat Pay only notifies success).
    pub async fn med_ins_fails(&self, mix_trade_no: &str) {
        self.settle_med(mix_trade_no, false, NotifyMode::Normal)
            .await;
    }

    /// As `med_ins_fails`, but the mixed order goes on saying its self-paid
    /// leg is `self_pay_status` (WeChat Pay's mixed order and its cash
    /// order are two records, and they need not agree at once).
    pub async fn med_ins_fails_saying(&self, mix_trade_no: &str, self_pay_status: &str) {
        self.settle_med(mix_trade_no, false, NotifyMode::Normal)
            .await;
        if let Some(order) = self.fake.lock().med_orders.get_mut(mix_trade_no) {
            order.self_pay_status = self_pay_status.to_owned();
        }
    }

    async fn settle_med(&self, mix_trade_no: &str, success: bool, mode: NotifyMode) -> Vec<u16> {
        let (prepay, request) = {
            let state = self.fake.lock();
            let Some(order) = state.med_orders.get(mix_trade_no) else {
                return Vec::new();
            };
            if order.mix_pay_status != "MIX_PAY_CREATED" {
                return Vec::new();
            }
            (
                order.request["prepay_id"].as_str().map(str::to_owned),
                order.request.clone(),
            )
        };
        if let Some(prepay) = prepay {
            let cash_no = self
                .fake
                .lock()
                .orders
                .iter()
                .find(|(_, o)| o.prepay_id == prepay)
                .map(|(no, _)| no.clone());
            if let Some(cash_no) = cash_no {
                self.user_pays(&cash_no, NotifyMode::Normal).await;
            }
        }
        let now = self
            .fake
            .config
            .clock
            .now()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        let resource = {
            let mut state = self.fake.lock();
            let Some(order) = state.med_orders.get_mut(mix_trade_no) else {
                return Vec::new();
            };
            if success {
                order.mix_pay_status = "MIX_PAY_SUCCESS".into();
                order.med_ins_pay_status = "MED_INS_PAY_SUCCESS".into();
                order.paid_time = Some(now);
            } else {
                order.mix_pay_status = "MIX_PAY_FAIL".into();
                order.med_ins_pay_status = "MED_INS_PAY_FAIL".into();
            }
            if order.self_pay_status == "SELF_PAY_CREATED" {
                order.self_pay_status = "SELF_PAY_SUCCESS".into();
            }
            med_json(mix_trade_no, order)
        };
        if !success {
            return Vec::new();
        }
        let url = request["callback_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.fake
            .notify(
                &url,
                "MEDICAL_INSURANCE.SUCCESS",
                "medical_insurance",
                &resource,
                mode,
            )
            .await
    }

    /// The order's trade state, if it exists.
    pub fn trade_state(&self, out_trade_no: &str) -> Option<String> {
        self.fake
            .lock()
            .orders
            .get(out_trade_no)
            .map(|o| o.trade_state.clone())
    }

    /// The user pays: the order succeeds and `TRANSACTION.SUCCESS` goes to
    /// its `notify_url`. Returns the receiver's answers (none when the
    /// order cannot be paid).
    pub async fn user_pays(&self, out_trade_no: &str, mode: NotifyMode) -> Vec<u16> {
        let (url, resource) = {
            let mut state = self.fake.lock();
            state.sequence += 1;
            let sequence = state.sequence;
            let now = self.fake.config.clock.now();
            let Some(order) = state.orders.get_mut(out_trade_no) else {
                return Vec::new();
            };
            if order.trade_state == "NOTPAY" {
                order.trade_state = "SUCCESS".into();
                order.transaction_id = Some(format!("42000{:023}", sequence));
                order.success_time = Some(
                    now.with_timezone(&chrono_tz::Asia::Shanghai)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                );
            } else if order.trade_state != "SUCCESS" {
                return Vec::new();
            }
            let order = order.clone();
            (
                order.request["notify_url"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                self.fake.transaction(out_trade_no, &order),
            )
        };
        self.fake
            .notify(&url, "TRANSACTION.SUCCESS", "transaction", &resource, mode)
            .await
    }

    /// The refund reaches `status` (`SUCCESS`, `CLOSED` or `ABNORMAL`) and
    /// the matching notification goes out.
    pub async fn refund_completes(
        &self,
        out_refund_no: &str,
        status: &str,
        mode: NotifyMode,
    ) -> Vec<u16> {
        let (url, resource) = {
            let mut state = self.fake.lock();
            let Some(refund) = state.refunds.get_mut(out_refund_no) else {
                return Vec::new();
            };
            refund.status = status.to_owned();
            let refund = refund.clone();
            if status == "CLOSED" {
                if let Some(order) = state.orders.get_mut(&refund.out_trade_no) {
                    order.refunded -= refund.refund;
                }
            }
            let mut resource = self.fake.refund_json(out_refund_no, &refund);
            resource["mchid"] = json!(self.fake.config.mchid);
            resource["refund_status"] = json!(status);
            (refund.notify_url.unwrap_or_default(), resource)
        };
        let event = format!("REFUND.{status}");
        self.fake
            .notify(&url, &event, "refund", &resource, mode)
            .await
    }
}

/// Decrypts an OAEP (SHA-1) field with a private key: what WeChat Pay does
/// with our sensitive fields, and so what the fake server does. Test keys
/// only (the `rsa` crate's private-key operations are not constant-time,
/// RUSTSEC-2023-0071; o2flow itself never holds WeChat Pay's private key).
///
/// # Errors
/// `BadKey` or `Decryption`.
pub fn decrypt_oaep_for_tests(
    private_pem: &str,
    ciphertext_b64: &str,
) -> Result<String, CryptoError> {
    use base64::Engine as _;
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(private_pem)
        .map_err(|e| CryptoError::BadKey(e.to_string()))?;
    let ciphertext = base64::engine::general_purpose::STANDARD
        .decode(ciphertext_b64)
        .map_err(|_| CryptoError::Decryption)?;
    let plain = key
        .decrypt(rsa::Oaep::new::<sha1::Sha1>(), &ciphertext)
        .map_err(|_| CryptoError::Decryption)?;
    String::from_utf8(plain).map_err(|_| CryptoError::Decryption)
}

/// A text field of a request o2flow sent: missing reads as empty, which
/// every caller then refuses with `PARAM_ERROR`, as WeChat Pay does.
fn request_text(body: &Value, name: &str) -> String {
    body.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_default()
}

/// An amount in fen of a request o2flow sent, or `missing` when it is not
/// there: every caller then refuses the missing amount (`PARAM_ERROR`,
/// `NOT_ENOUGH`, a mismatch), as WeChat Pay does.
fn fen_or(value: &Value, missing: i64) -> i64 {
    value.as_i64().unwrap_or(missing)
}
