//! Payments in workflows, end to end through HTTP: the sandbox (the
//! default), and a WeChat Pay merchant against the fake WeChat Pay server:
//! order → user pays → callback → the state advances → refund → refund
//! callback; duplicate, forged, probe, stale and early callbacks; a lost
//! callback found by reconciliation; an order that expires, is closed, and
//! is paid too late and refunded automatically. Every test on SQLite and
//! PostgreSQL.

use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::{at, list, text, TestApp};
use crate::storage_test;

pub fn workflow(name: &str) -> String {
    std::fs::read_to_string(format!("workflows/{name}.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

pub fn registration(id: &str, openid: Option<&str>) -> Value {
    json!({
        "workflow": "registration_payment",
        "input": {
            "patient": {"id": format!("p-{id}"), "name": "张三", "openid": openid},
            "registration_id": id,
            "department": "心内科",
            "fee": "15.00"
        }
    })
}

/// Starts a registration and returns `(instance id, pay link)` from the message.
pub async fn start_registration(app: &TestApp, id: &str, openid: Option<&str>) -> (String, String) {
    let (status, body) = app
        .post("/api/v1/instances", &registration(id, openid))
        .await;
    assert_eq!(status, 201, "{body}");
    let instance = text(&body, "id").to_owned();
    app.advance(Duration::zero()).await;
    let (message, link) = pay_message(app, &format!("p-{id}")).await;
    assert!(message.contains("¥15.00"), "{message}");
    (instance, link)
}

/// The first message in `party`'s inbox and the pay page path it links to.
pub async fn pay_message(app: &TestApp, party: &str) -> (String, String) {
    // The hospital's own system relays messages to patients: only its key sees the links.
    let (status, inbox) = app
        .get_with(&format!("/api/v1/inbox/{party}"), &app.integration_key)
        .await;
    assert_eq!(status, 200, "{inbox}");
    let message = text(&inbox, "messages.0.body");
    let link = pay_link_in(&message);
    (message, link)
}

/// The pay page path a message links to.
pub fn pay_link_in(message: &str) -> String {
    message
        .split(['：', ' ', '\n'])
        .find(|w| w.starts_with("http://o2flow.test/p/pay/"))
        .unwrap_or_else(|| panic!("no pay link in {message}"))
        .replace("http://o2flow.test", "")
}

/// The HTML of a pay page.
pub async fn page_html(app: &TestApp, link: &str) -> String {
    app.client
        .get(app.url(link))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Pays on the sandbox pay page, as the payer's tap does: `(status, view)`.
pub async fn sandbox_pay(app: &TestApp, link: &str) -> (u16, Value) {
    crate::helpers::read(
        app.client
            .post(app.url(&format!("{link}/sandbox/pay")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await
}

pub async fn state_of(app: &TestApp, instance: &str) -> String {
    let (_, body) = app.get(&format!("/api/v1/instances/{instance}")).await;
    text(&body, "state").to_owned()
}

pub async fn payments_of(app: &TestApp, instance: &str) -> Value {
    let (status, body) = app
        .get(&format!("/api/v1/instances/{instance}/payments"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["payments"].clone()
}

async fn sandbox_payment_books_then_cancel_refunds(app: TestApp) {
    let (status, body) = app.deploy(&workflow("registration_payment")).await;
    assert!(status == 200 || status == 201, "{body}");
    let (instance, link) = start_registration(&app, "REG1", None).await;
    assert_eq!(state_of(&app, &instance).await, "awaiting_payment");

    // The page: what is paid for, the amount, the sandbox buttons.
    let page = app
        .client
        .get(app.url(&link))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap_or_default();
    assert!(
        html.contains("挂号费 心内科") && html.contains("Pay ¥15.00") && html.contains("Cancel"),
        "{html}"
    );

    // A changed link is refused.
    let forged = link.replacen("/p/pay/O2", "/p/pay/O3", 1);
    let (status, _) = crate::helpers::read(
        app.client
            .get(app.url(&format!("{forged}/status")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(status, 404);

    // Pay in the sandbox: the same path as a verified callback. Twice: once.
    for _ in 0..2 {
        let (status, view) = sandbox_pay(&app, &link).await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["state"], "succeeded");
    }
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "booked");
    let (_, history) = app
        .get(&format!("/api/v1/instances/{instance}/history"))
        .await;
    let paid_events = history["entries"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["kind"] == "event" && e["detail"]["type"] == "payment.succeeded")
                .count()
        })
        .unwrap_or_default();
    assert_eq!(paid_events, 1, "{history}");

    // Cancelling a paid registration refunds it in full.
    let (status, body) = app
        .post(&format!("/api/v1/instances/{instance}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.advance(Duration::zero()).await;
    let (_, history) = app
        .get(&format!("/api/v1/instances/{instance}/history"))
        .await;
    assert_eq!(state_of(&app, &instance).await, "refunded", "{history}");
    let payments = payments_of(&app, &instance).await;
    assert_eq!(payments[0]["state"], "succeeded", "{payments}");
    assert_eq!(payments[0]["provider"], "sandbox");
    assert_eq!(payments[0]["refunded"], "15.00");
    assert_eq!(payments[0]["refunds"][0]["status"], "succeeded");
    assert_eq!(payments[0]["refunds"][0]["amount"], "15.00");
}
storage_test!(sandbox_payment_books_then_cancel_refunds);

/// A payment row whose state no code knows (written by hand, or by a newer
/// version) is an error wherever it is read: never taken as unpaid, never
/// paid over. Put back, it pays as before.
async fn a_payment_in_a_state_no_code_knows_is_an_error_not_a_default(app: TestApp) {
    let (status, body) = app.deploy(&workflow("registration_payment")).await;
    assert!(status == 200 || status == 201, "{body}");
    let (instance, link) = start_registration(&app, "REGX", None).await;
    let set_state = |state: &str| {
        format!("UPDATE payments SET state = '{state}' WHERE instance_id = '{instance}'")
    };
    app.sql(&set_state("paid")).await;
    let (status, body) = app
        .get(&format!("/api/v1/instances/{instance}/payments"))
        .await;
    assert_eq!(
        (status, text(&body, "error")),
        (500, "internal_error".to_owned()),
        "{body}"
    );
    let (status, _) = sandbox_pay(&app, &link).await;
    assert_eq!(status, 500);
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "awaiting_payment");

    app.sql(&set_state("pending")).await;
    let (status, view) = sandbox_pay(&app, &link).await;
    assert_eq!(
        (status, text(&view, "state")),
        (200, "succeeded".to_owned()),
        "{view}"
    );
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "booked");
}
storage_test!(a_payment_in_a_state_no_code_knows_is_an_error_not_a_default);

// ---- a WeChat Pay merchant, against the fake server ----------------------------

use o2flow::store::NewMerchant;
use o2flow_wechat_fake::{FakeWechatPay, NotifyMode};

use crate::wechat_pay::{APPID, MCHID, MERCHANT_SERIAL, OPENID, PUB_KEY_ID};

/// The fake WeChat Pay server, and tenant `acme` pointed at it by
/// configuration alone (secrets by file reference).
pub struct Merchant {
    pub fake: FakeWechatPay,
    pub id: i64,
    key_file: std::path::PathBuf,
}

impl Merchant {
    pub async fn stop(self) {
        self.fake.stop().await;
        let _ = std::fs::remove_file(self.key_file);
    }
}

pub async fn with_merchant(app: &TestApp) -> Merchant {
    with_merchant_verifying(app, false).await
}

/// `certificates`: the merchant is in platform-certificate mode (no public
/// key configured; o2flow downloads `/v3/certificates`) and the fake signs
/// under the certificate's serial.
pub async fn with_merchant_verifying(app: &TestApp, certificates: bool) -> Merchant {
    let serial = if certificates {
        "7E57C0DE0000000000000000000000000000B002"
    } else {
        PUB_KEY_ID
    };
    let fake = FakeWechatPay::start(crate::wechat_pay::fake_config(serial, app.clock.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let key_file =
        std::env::temp_dir().join(format!("o2flow-apiv3-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&key_file, crate::wechat_pay::API_V3_KEY).unwrap_or_else(|e| panic!("{e}"));
    let mut merchant = NewMerchant {
        tenant_id: "acme".into(),
        branch_id: None,
        mchid: MCHID.into(),
        appid: APPID.into(),
        serial_no: MERCHANT_SERIAL.into(),
        private_key: "file:tests/vectors/wechat/merchant_private_key.pem".into(),
        api_v3_key: format!("file:{}", key_file.display()),
        public_key: (!certificates)
            .then(|| "file:tests/vectors/wechat/platform_public_key.pem".into()),
        public_key_id: (!certificates).then(|| PUB_KEY_ID.into()),
        platform_certificates: certificates,
        notify_url: None,
        base_url: fake.base_url.clone(),
    };
    let store = app.runtime.store();
    let row = store
        .upsert_merchant(&merchant, app.clock.now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    merchant.notify_url = Some(app.url(&format!("/callbacks/wechatpay/{}", row.id)));
    store
        .upsert_merchant(&merchant, app.clock.now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = app.deploy(&workflow("registration_payment")).await;
    assert!(status == 200 || status == 201, "{body}");
    Merchant {
        fake,
        id: row.id,
        key_file,
    }
}

use o2flow::runtime::Clock;

pub async fn payment_no(app: &TestApp, instance: &str) -> String {
    text(&payments_of(app, instance).await, "0.payment").to_owned()
}

fn count_events(history: &Value, event_type: &str) -> usize {
    history["entries"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["kind"] == "event" && e["detail"]["type"] == event_type)
                .count()
        })
        .unwrap_or_default()
}

async fn wechat_payment_callback_refund_and_refund_callback(app: TestApp) {
    let m = with_merchant(&app).await;
    let (instance, link) = start_registration(&app, "REG2", Some(OPENID)).await;
    let no = payment_no(&app, &instance).await;
    assert_eq!(m.fake.trade_state(&no).as_deref(), Some("NOTPAY"));
    let payments = payments_of(&app, &instance).await;
    assert_eq!(payments[0]["provider"], "wechat", "{payments}");
    assert_eq!(payments[0]["state"], "pending");

    // The page offers JSAPI payment with a paySign for the prepay id.
    let html = page_html(&app, &link).await;
    assert!(
        html.contains("wechat-pay") && html.contains("prepay_id="),
        "{html}"
    );
    assert!(
        !html.contains("id=\"pay\""),
        "no sandbox button for a real merchant"
    );

    // The user pays; the notification comes twice (same id, signed
    // again): both answered 204, applied once.
    let answers = m.fake.user_pays(&no, NotifyMode::Resend).await;
    assert_eq!(answers, vec![204, 204]);
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "booked");
    let notifications = app
        .runtime
        .store()
        .notifications(m.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        notifications.len(),
        1,
        "the duplicate is dropped by notification id"
    );
    let (_, history) = app
        .get(&format!("/api/v1/instances/{instance}/history"))
        .await;
    assert_eq!(count_events(&history, "payment.succeeded"), 1, "{history}");

    // Cancel: the refund goes to WeChat Pay (PROCESSING), then its callback completes it.
    let (status, body) = app
        .post(&format!("/api/v1/instances/{instance}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "refunding");
    let payments = payments_of(&app, &instance).await;
    let refund_no = text(&payments, "0.refunds.0.refund").to_owned();
    assert_eq!(
        payments[0]["refunds"][0]["status"], "processing",
        "{payments}"
    );
    // Replayed byte for byte: the copy is refused (nonce seen), the original applied.
    assert_eq!(
        m.fake
            .refund_completes(&refund_no, "SUCCESS", NotifyMode::Duplicate)
            .await,
        vec![204, 401]
    );
    app.advance(Duration::zero()).await;
    let (_, history) = app
        .get(&format!("/api/v1/instances/{instance}/history"))
        .await;
    assert_eq!(state_of(&app, &instance).await, "refunded", "{history}");
    let payments = payments_of(&app, &instance).await;
    assert_eq!(payments[0]["refunds"][0]["status"], "succeeded");
    assert_eq!(payments[0]["refunded"], "15.00");
    let (_, history) = app
        .get(&format!("/api/v1/instances/{instance}/history"))
        .await;
    assert_eq!(count_events(&history, "refund.succeeded"), 1, "{history}");
    // One order and one refund request went to WeChat Pay.
    let requests = m.fake.requests();
    let orders = requests
        .iter()
        .filter(|(method, path, _)| {
            method == "POST" && path.starts_with("/v3/pay/transactions/jsapi")
        })
        .count();
    let refunds = requests
        .iter()
        .filter(|(method, path, _)| {
            method == "POST" && path.starts_with("/v3/refund/domestic/refunds")
        })
        .count();
    assert_eq!((orders, refunds), (1, 1), "{requests:?}");
    m.stop().await;
}
storage_test!(wechat_payment_callback_refund_and_refund_callback);

async fn forged_callbacks_change_nothing_and_reconciliation_finds_the_payment(app: TestApp) {
    let m = with_merchant(&app).await;
    let (instance, _) = start_registration(&app, "REG3", Some(OPENID)).await;
    let no = payment_no(&app, &instance).await;

    // The user pays, but every notification that reaches us is refused:
    // probe, stale, unknown serial. Nothing changes.
    for mode in [
        NotifyMode::Probe,
        NotifyMode::StaleTimestamp,
        NotifyMode::WrongSerial,
    ] {
        let answers = m.fake.user_pays(&no, mode).await;
        assert_eq!(answers, vec![401], "{mode:?}");
    }
    // A body changed after signing, and one with no signature at all.
    let response = app
        .client
        .post(app.url(&format!("/callbacks/wechatpay/{}", m.id)))
        .header("content-type", "application/json")
        .body(r#"{"id":"EV-forged","event_type":"TRANSACTION.SUCCESS"}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.unwrap_or_default();
    assert_eq!(body["code"], "FAIL", "{body}");
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "awaiting_payment");
    assert_eq!(payments_of(&app, &instance).await[0]["state"], "pending");
    assert!(app
        .runtime
        .store()
        .notifications(m.id)
        .await
        .unwrap_or_default()
        .is_empty());

    // No callback ever came: the reconciliation query finds it paid.
    app.advance(Duration::minutes(5)).await;
    assert_eq!(state_of(&app, &instance).await, "booked");
    let (_, history) = app
        .get(&format!("/api/v1/instances/{instance}/history"))
        .await;
    assert_eq!(count_events(&history, "payment.succeeded"), 1);
    // A late genuine callback now changes nothing more.
    let answers = m.fake.user_pays(&no, NotifyMode::Normal).await;
    assert_eq!(answers, vec![204]);
    app.advance(Duration::zero()).await;
    let (_, history) = app
        .get(&format!("/api/v1/instances/{instance}/history"))
        .await;
    assert_eq!(count_events(&history, "payment.succeeded"), 1, "{history}");
    m.stop().await;
}
storage_test!(forged_callbacks_change_nothing_and_reconciliation_finds_the_payment);

async fn an_unpaid_order_expires_and_a_late_payment_is_refunded(app: TestApp) {
    let m = with_merchant(&app).await;
    // Unpaid for 15 minutes: queried, closed, the flow gets payment.expired.
    let (expiring, _) = start_registration(&app, "REG4", Some(OPENID)).await;
    let expiring_no = payment_no(&app, &expiring).await;
    app.advance(Duration::minutes(15)).await;
    assert_eq!(state_of(&app, &expiring).await, "unpaid");
    assert_eq!(m.fake.trade_state(&expiring_no).as_deref(), Some("CLOSED"));
    assert_eq!(payments_of(&app, &expiring).await[0]["state"], "expired");

    // Cancelled by the hospital (the slot is resold), then the patient pays
    // anyway: the payment is recorded, refunded in full, and the flow stays over.
    let (cancelled, _) = start_registration(&app, "REG5", Some(OPENID)).await;
    let no = payment_no(&app, &cancelled).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{cancelled}/cancel"),
            &json!({"reason": "slot resold"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(m.fake.user_pays(&no, NotifyMode::Normal).await, vec![204]);
    app.advance(Duration::zero()).await;
    let (_, instance) = app.get(&format!("/api/v1/instances/{cancelled}")).await;
    assert_eq!(instance["status"], "cancelled", "{instance}");
    let payments = payments_of(&app, &cancelled).await;
    assert_eq!(payments[0]["state"], "succeeded", "{payments}");
    assert_eq!(payments[0]["late"], true);
    assert_eq!(payments[0]["refunds"][0]["automatic"], true);
    assert_eq!(payments[0]["refunds"][0]["amount"], "15.00");
    let refund_no = text(&payments, "0.refunds.0.refund").to_owned();
    // The refund completes without a callback: found by reconciliation.
    assert!(m
        .fake
        .refund_completes(&refund_no, "SUCCESS", NotifyMode::Drop)
        .await
        .is_empty());
    app.advance(Duration::minutes(5)).await;
    assert_eq!(
        payments_of(&app, &cancelled).await[0]["refunds"][0]["status"],
        "succeeded"
    );
    // The patient is told: a message, and the pay page no longer says "paid".
    let (status, inbox) = app
        .get_with("/api/v1/inbox/p-REG5", &app.integration_key)
        .await;
    assert_eq!(status, 200, "{inbox}");
    let messages = list(&inbox, "messages");
    assert_eq!(
        messages.len(),
        2,
        "the pay request and the refund notice: {inbox}"
    );
    assert_eq!(text(&messages[0], "template"), "payment_refunded");
    let notice = text(&messages[0], "body");
    assert!(
        notice.contains("¥15.00") && notice.contains("自动退回"),
        "{notice}"
    );
    let link = pay_link_in(&notice);
    let (status, view) = app.get(&format!("{link}/status")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        (at(&view, "late"), at(&view, "refunded")),
        (&json!(true), &json!(1500)),
        "{view}"
    );
    let html = page_html(&app, &link).await;
    assert!(
        html.contains("自动退回") && html.contains("data-late=\"true\""),
        "{html}"
    );

    // Cancelled with nobody paying: at the next check the order is closed
    // long before its expiry, so the patient cannot pay for it any more.
    let (dropped, _) = start_registration(&app, "REG11", Some(OPENID)).await;
    let dropped_no = payment_no(&app, &dropped).await;
    let (status, body) = app
        .post(&format!("/api/v1/instances/{dropped}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.advance(Duration::minutes(5)).await;
    assert_eq!(m.fake.trade_state(&dropped_no).as_deref(), Some("CLOSED"));
    assert_eq!(payments_of(&app, &dropped).await[0]["state"], "expired");
    assert!(m
        .fake
        .user_pays(&dropped_no, NotifyMode::Normal)
        .await
        .is_empty());
    m.stop().await;
}
storage_test!(an_unpaid_order_expires_and_a_late_payment_is_refunded);

use o2flow_wechat_fake::AnswerFault;

async fn abnormal_refund_opens_an_incident_and_system_errors_are_retried(app: TestApp) {
    let m = with_merchant(&app).await;
    // WeChat Pay fails the first order request with SYSTEM_ERROR: the client
    // retries with the same out_trade_no and body, and one order exists.
    m.fake.inject(AnswerFault::SystemError);
    let (instance, _) = start_registration(&app, "REG6", Some(OPENID)).await;
    let no = payment_no(&app, &instance).await;
    let order_requests: Vec<_> = m
        .fake
        .requests()
        .into_iter()
        .filter(|(method, path, _)| {
            method == "POST" && path.starts_with("/v3/pay/transactions/jsapi")
        })
        .map(|(_, _, status)| status)
        .collect();
    assert_eq!(order_requests, vec![500, 200]);
    assert_eq!(m.fake.trade_state(&no).as_deref(), Some("NOTPAY"));

    assert_eq!(m.fake.user_pays(&no, NotifyMode::Normal).await, vec![204]);
    app.advance(Duration::zero()).await;
    let (status, body) = app
        .post(&format!("/api/v1/instances/{instance}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.advance(Duration::zero()).await;
    let refund_no = text(&payments_of(&app, &instance).await, "0.refunds.0.refund").to_owned();
    assert_eq!(
        m.fake
            .refund_completes(&refund_no, "ABNORMAL", NotifyMode::Normal)
            .await,
        vec![204]
    );
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "refund_needs_staff");
    assert_eq!(
        payments_of(&app, &instance).await[0]["refunds"][0]["status"],
        "abnormal"
    );
    let (_, incidents) = app.get("/api/v1/incidents").await;
    let incidents = list(&incidents, "incidents");
    assert!(
        incidents
            .iter()
            .any(|i| i["instance_id"] == instance.as_str()
                && i["effect"] == "refund"
                && i["effect_key"] == refund_no.as_str()),
        "{incidents:?}"
    );
    m.stop().await;
}
storage_test!(abnormal_refund_opens_an_incident_and_system_errors_are_retried);

const HOTEL_PREPAY: &str = r#"
name: hotel_prepay
title: 房费预付 / Room prepayment
inputs:
  guest: party
  booking_id: string
  deposit: money
start: holding
states:
  holding:
    enter:
      - pay: { amount: deposit, description: "'房费预付 ' + booking_id", payer: guest, scene: native, expires_in: 30m }
    on:
      room.confirmed: confirmed
  confirmed:
    on:
      payment.succeeded: paid
  paid: { final: completed }
"#;

async fn an_early_payment_waits_for_the_flow_and_a_native_order_has_a_qr(app: TestApp) {
    let m = with_merchant(&app).await;
    let (status, body) = app.deploy(HOTEL_PREPAY).await;
    assert!(status == 200 || status == 201, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/instances",
            &json!({"workflow": "hotel_prepay", "input": {"guest": {"id": "g1", "name": "赵六"}, "booking_id": "BK1", "deposit": "388.00"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let instance = text(&body, "id").to_owned();
    app.advance(Duration::zero()).await;
    let payments = payments_of(&app, &instance).await;
    assert_eq!(payments[0]["scene"], "native");
    assert_eq!(payments[0]["amount"], "388.00");
    let no = text(&payments, "0.payment").to_owned();
    // The guest pays before the flow waits for it: kept, not refunded.
    assert_eq!(m.fake.user_pays(&no, NotifyMode::Normal).await, vec![204]);
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "holding");
    assert_eq!(payments_of(&app, &instance).await[0]["refunds"], json!([]));
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{instance}/events"),
            &json!({"type": "room.confirmed"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.advance(Duration::seconds(15)).await;
    assert_eq!(state_of(&app, &instance).await, "paid");
    let payments = payments_of(&app, &instance).await;
    assert_eq!(payments[0]["late"], false, "{payments}");
    assert_eq!(payments[0]["refunds"], json!([]));
    m.stop().await;
}
storage_test!(an_early_payment_waits_for_the_flow_and_a_native_order_has_a_qr);

async fn a_bill_that_does_not_add_up_is_refused_and_merchants_show_no_secret(app: TestApp) {
    let (status, body) = app.deploy(&workflow("prescription_billing")).await;
    assert!(status == 200 || status == 201, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/instances",
            &json!({
                "workflow": "prescription_billing",
                "input": {
                    "patient": {"id": "p-rx2"},
                    "prescription_id": "RX2",
                    "bill": {
                        "items": [{"name": "阿莫西林胶囊", "amount": "25.00"}],
                        "insurance": {"pooled_fund": "20.00", "personal_account": "10.00", "self_pay": "0.00"}
                    }
                }
            }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"], "bad_bill",
        "the code docs/payments.md promises"
    );
    let problem = text(&body, "details.problems.0.message");
    assert!(
        problem.contains("3000") && problem.contains("2500"),
        "{problem}"
    );
    let (_, list) = app
        .get("/api/v1/instances?workflow=prescription_billing")
        .await;
    assert_eq!(list["items"], json!([]), "nothing was created");

    let m = with_merchant(&app).await;
    let (status, body) = app.get("/api/v1/merchants").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["merchants"][0]["mchid"], MCHID);
    let text = body.to_string();
    assert!(
        !text.contains("private_key") && !text.contains("api_v3_key") && !text.contains("file:"),
        "{text}"
    );
    let (status, _) = app.get_with("/api/v1/merchants", &app.viewer_key).await;
    assert_eq!(status, 403);
    m.stop().await;
}
storage_test!(a_bill_that_does_not_add_up_is_refused_and_merchants_show_no_secret);

async fn certificate_mode_merchant_and_a_late_callback_after_reconciliation(app: TestApp) {
    // A merchant configured for platform certificates only: o2flow downloads
    // them, orders and callbacks verify under the certificate's serial.
    let m = with_merchant_verifying(&app, true).await;
    // WeChat Pay is down when o2flow first downloads the certificates (three
    // 500s): the order goes ahead, and its answer, under a serial not held,
    // makes o2flow download them again.
    for _ in 0..3 {
        m.fake.inject(AnswerFault::SystemError);
    }
    let (instance, _) = start_registration(&app, "REG9", Some(OPENID)).await;
    let no = payment_no(&app, &instance).await;
    assert_eq!(m.fake.trade_state(&no).as_deref(), Some("NOTPAY"));
    let downloads: Vec<u16> = m
        .fake
        .requests()
        .iter()
        .filter(|(method, path, _)| method == "GET" && path == "/v3/certificates")
        .map(|(_, _, status)| *status)
        .collect();
    assert_eq!(downloads, vec![500, 500, 500, 200]);

    // The callback is held up (more than WeChat Pay's usual seconds): the
    // reconciliation query finds the payment first; the late callback is
    // answered 204 and changes nothing more.
    let fake = std::sync::Arc::new(m.fake);
    let late = {
        let fake = fake.clone();
        let no = no.clone();
        tokio::spawn(async move {
            fake.user_pays(
                &no,
                NotifyMode::Delayed(std::time::Duration::from_millis(400)),
            )
            .await
        })
    };
    for _ in 0..100 {
        if fake.trade_state(&no).as_deref() == Some("SUCCESS") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    app.advance(Duration::minutes(5)).await;
    assert_eq!(state_of(&app, &instance).await, "booked");
    assert_eq!(late.await.unwrap_or_default(), vec![204]);
    app.advance(Duration::zero()).await;
    let notifications = app
        .runtime
        .store()
        .notifications(m.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0].outcome.as_deref(), Some("already known"));
    let (_, history) = app
        .get(&format!("/api/v1/instances/{instance}/history"))
        .await;
    assert_eq!(count_events(&history, "payment.succeeded"), 1, "{history}");
    fake.stop().await;
    let _ = std::fs::remove_file(m.key_file);
}
storage_test!(certificate_mode_merchant_and_a_late_callback_after_reconciliation);

async fn a_closed_refund_is_sent_again_under_a_new_number_when_its_incident_is_retried(
    app: TestApp,
) {
    let m = with_merchant(&app).await;
    let (instance, _) = start_registration(&app, "REG10", Some(OPENID)).await;
    let no = payment_no(&app, &instance).await;
    assert_eq!(m.fake.user_pays(&no, NotifyMode::Normal).await, vec![204]);
    app.advance(Duration::zero()).await;
    let (status, body) = app
        .post(&format!("/api/v1/instances/{instance}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.advance(Duration::zero()).await;
    let first = text(&payments_of(&app, &instance).await, "0.refunds.0.refund").to_owned();
    // WeChat Pay closes the refund (not enough balance): the flow hears
    // refund.failed, the amount is owed again, an incident opens.
    assert_eq!(
        m.fake
            .refund_completes(&first, "CLOSED", NotifyMode::Normal)
            .await,
        vec![204]
    );
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "refund_needs_staff");
    let payments = payments_of(&app, &instance).await;
    assert_eq!(payments[0]["refunds"][0]["status"], "closed", "{payments}");
    assert_eq!(payments[0]["refunded"], "0.00");
    let (_, incidents) = app.get("/api/v1/incidents?status=open").await;
    let incident = incidents["incidents"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|i| i["effect_key"] == first.as_str())
                .cloned()
        })
        .unwrap_or_else(|| panic!("no incident for {first}: {incidents}"));

    // Staff top up the balance and retry: a new refund, a new number, the same amount.
    let (status, body) = app
        .post(
            &format!("/api/v1/incidents/{}/retry", incident["id"]),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = app
        .post(
            &format!("/api/v1/incidents/{}/retry", incident["id"]),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "retried once");
    let payments = payments_of(&app, &instance).await;
    let refunds = list(&payments, "0.refunds");
    assert_eq!(refunds.len(), 2, "{payments}");
    let second = text(&refunds[1], "refund").to_owned();
    assert_ne!(second, first);
    assert_eq!(refunds[1]["amount"], "15.00");
    assert_eq!(refunds[1]["status"], "processing");
    assert_eq!(
        m.fake
            .refund_completes(&second, "SUCCESS", NotifyMode::Normal)
            .await,
        vec![204]
    );
    app.advance(Duration::zero()).await;
    let payments = payments_of(&app, &instance).await;
    assert_eq!(
        payments[0]["refunds"][1]["status"], "succeeded",
        "{payments}"
    );
    assert_eq!(payments[0]["refunded"], "15.00");
    let posts: Vec<String> = m
        .fake
        .bodies()
        .into_iter()
        .filter(|b| b.contains("out_refund_no"))
        .collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert!(posts[0].contains(&first) && posts[1].contains(&second));
    // The flow waited for the incident's outcome instead of ending failed:
    // the money is back, and so the registration ends refunded.
    let (_, shown) = app.get(&format!("/api/v1/instances/{instance}")).await;
    assert_eq!(
        (text(&shown, "state"), text(&shown, "status")),
        ("refunded".to_owned(), "cancelled".to_owned()),
        "{shown}"
    );
    m.stop().await;
}
storage_test!(a_closed_refund_is_sent_again_under_a_new_number_when_its_incident_is_retried);

/// A room booking for `nights` nights from `check_in`, prepaid in the sandbox.
async fn booked_room(
    app: &TestApp,
    id: &str,
    nights: i64,
    check_in: chrono::DateTime<chrono::Utc>,
) -> String {
    let (status, body) = app
        .post(
            "/api/v1/instances",
            &json!({"workflow": "room_booking", "input": {
                "guest": {"id": format!("g-{id}"), "name": "赵六"},
                "booking_id": id, "room_type": "豪华大床房", "nights": nights, "price": "1176.00",
                "check_in_at": check_in.to_rfc3339(),
            }}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let instance = text(&body, "id").to_owned();
    app.advance(Duration::zero()).await;
    let (message, link) = pay_message(app, &format!("g-{id}")).await;
    assert!(
        message.contains("¥1176.00") && message.contains("豪华大床房"),
        "{message}"
    );
    let (status, view) = sandbox_pay(app, &link).await;
    assert_eq!(status, 200, "{view}");
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(app, &instance).await, "confirmed");
    instance
}

async fn a_room_booking_refunds_by_when_it_is_cancelled(app: TestApp) {
    let (status, body) = app.deploy(&workflow("room_booking")).await;
    assert!(status == 200 || status == 201, "{body}");
    let now = app.clock.now();
    // Cancelled three days ahead: everything back.
    let early = booked_room(&app, "BK1", 3, now + Duration::days(3)).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{early}/cancel"),
            &json!({"reason": "行程变更"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &early).await, "cancelled");
    assert_eq!(payments_of(&app, &early).await[0]["refunded"], "1176.00");
    // Cancelled the evening before: the first of three nights is kept.
    let late = booked_room(&app, "BK2", 3, now + Duration::hours(20)).await;
    let (status, body) = app
        .post(&format!("/api/v1/instances/{late}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &late).await, "cancelled_first_night_kept");
    let payments = payments_of(&app, &late).await;
    assert_eq!(payments[0]["refunded"], "784.00", "{payments}");
    // One night, cancelled late: nothing to refund, the booking just ends.
    let single = booked_room(&app, "BK3", 1, now + Duration::hours(20)).await;
    let (status, body) = app
        .post(&format!("/api/v1/instances/{single}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(state_of(&app, &single).await, "cancelled_late");
    assert_eq!(payments_of(&app, &single).await[0]["refunded"], "0.00");
    // Never came: a no-show 22 hours after the check-in time, the stay kept.
    let absent = booked_room(&app, "BK4", 2, now + Duration::hours(2)).await;
    app.advance(Duration::hours(24)).await;
    let (_, shown) = app.get(&format!("/api/v1/instances/{absent}")).await;
    assert_eq!(
        (shown["state"].as_str(), shown["status"].as_str()),
        (Some("no_show"), Some("no_show")),
        "{shown}"
    );
    assert_eq!(payments_of(&app, &absent).await[0]["refunded"], "0.00");
    // Each of them says why it keeps the money: no money_held incident.
    let (_, incidents) = app.get("/api/v1/incidents?status=all").await;
    assert_eq!(incidents["incidents"], json!([]), "{incidents}");
}
storage_test!(a_room_booking_refunds_by_when_it_is_cancelled);
