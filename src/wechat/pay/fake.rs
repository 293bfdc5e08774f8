//! A fake WeChat Pay server for tests and local development: loopback,
//! port 0. It behaves as the published API does (`wechat-protocols` §5): it
//! verifies every request's signature (401 `SIGN_ERROR` otherwise), signs
//! every 2xx answer with its platform key, keeps orders and refunds with
//! the real rules, and on a control call ("the user pays", "the refund
//! completes") sends signed, encrypted notifications. Failures can be
//! injected: a 500 `SYSTEM_ERROR`, a forged or stale answer, and probe,
//! stale, wrong-serial or duplicated notifications.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::crypto::{
    parse_authorization, request_message, response_message, ApiV3Key, MerchantKey, VerifyingKey,
    SIGNTEST_PREFIX,
};
use crate::runtime::Clock;

/// What the fake knows: the merchant it serves and its own platform key.
pub struct FakeConfig {
    pub mchid: String,
    pub appid: String,
    pub merchant_serial: String,
    pub merchant_public: VerifyingKey,
    pub platform_key: MerchantKey,
    /// The serial the fake signs under (`PUB_KEY_ID_…`).
    pub platform_serial: String,
    pub api_v3_key: ApiV3Key,
    pub clock: Arc<dyn Clock>,
}

/// A failure to inject into the next answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFault {
    /// 500 `SYSTEM_ERROR` (the client must retry with the same body).
    SystemError,
    /// A 2xx whose signature does not verify.
    ForgedSignature,
    /// A 2xx signed ten minutes in the past.
    StaleTimestamp,
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

#[derive(Default)]
struct State {
    orders: HashMap<String, FakeOrder>,
    refunds: HashMap<String, FakeRefund>,
    faults: VecDeque<AnswerFault>,
    /// `(method, path?query, status)` of every request.
    requests: Vec<(String, String, u16)>,
    sequence: u64,
}

struct Fake {
    config: FakeConfig,
    state: Mutex<State>,
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
        let mut headers = self.sign(timestamp, &self.config.platform_serial, &bytes);
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
            _ => error(404, "NOT_FOUND", "no such API in the fake"),
        }
    }

    fn create_order(&self, scene: &str, body: Value, fault: Option<AnswerFault>) -> HttpResponse {
        let text = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
        let out_trade_no = text("out_trade_no");
        let valid_no = (6..=32).contains(&out_trade_no.len())
            && out_trade_no
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-|*".contains(c));
        let total = body["amount"]["total"].as_i64().unwrap_or(0);
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
        let out_trade_no = body["out_trade_no"].as_str().unwrap_or_default().to_owned();
        let out_refund_no = body["out_refund_no"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let refund = body["amount"]["refund"].as_i64().unwrap_or(0);
        let total = body["amount"]["total"].as_i64().unwrap_or(0);
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
        if total != order.request["amount"]["total"].as_i64().unwrap_or(-1) {
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
            self.config.platform_serial.clone()
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
        let mut statuses = Vec::new();
        for attempt in 0..times {
            if mode == NotifyMode::Resend && attempt > 0 {
                headers = self.sign(timestamp, &serial, &body);
            }
            let mut request = self
                .http
                .post(url)
                .header("content-type", "application/json");
            for (name, value) in &headers {
                request = request.header(name, value);
            }
            let status = match request.body(body.clone()).send().await {
                Ok(response) => response.status().as_u16(),
                Err(_) => 0,
            };
            statuses.push(status);
        }
        statuses
    }
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
    fake.lock().requests.push((
        request.method().to_string(),
        path,
        response.status().as_u16(),
    ));
    response
}

impl FakeWechatPay {
    /// Starts the fake on 127.0.0.1, port 0.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub fn start(config: FakeConfig) -> std::io::Result<FakeWechatPay> {
        let fake = web::Data::new(Fake {
            config,
            state: Mutex::new(State::default()),
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
