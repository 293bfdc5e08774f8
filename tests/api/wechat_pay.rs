//! The WeChat Pay v3 client against the fake WeChat Pay server, both with
//! the test keys of `tests/vectors/wechat/`: signed requests, verified
//! answers, the order and refund rules, retries with the same numbers,
//! forged and stale answers refused, and notifications (normal, replayed,
//! probe, stale, unknown serial) checked by the same verification a
//! callback endpoint uses; notifications a receiver refuses retried on the
//! compressed schedule; 429 retried with the same body; platform-certificate
//! mode (download, verify, both keys held during a switch).

use crate::helpers::text;
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use o2flow::runtime::{Clock, ManualClock};
use o2flow::wechat::pay::client::{
    verify_signed, MerchantConfig, NonceCache, Order, PayClient, PayError, RefundRequest,
};
use o2flow::wechat::pay::crypto::{
    pay_sign_message, ApiV3Key, MerchantKey, PlatformKeys, VerifyingKey,
};
use o2flow_wechat_fake::{AnswerFault, FakeConfig, FakeWechatPay, NotifyMode};
use serde_json::Value;

use crate::wechat_vectors::{platform_keys, read};

pub const MCHID: &str = "1230000109";
pub const APPID: &str = "wx7e57c0de00000001";
pub const MERCHANT_SERIAL: &str = "7E57C0DE0000000000000000000000000000A001";
pub const PUB_KEY_ID: &str = "PUB_KEY_ID_0100000000000000000000000000TEST";
pub const API_V3_KEY: &str = "TestOnlyApiV3Key-NotReal-32bytes";
pub const OPENID: &str = "oTestOnly_7e57c0de_openid001";

pub fn api_key() -> ApiV3Key {
    ApiV3Key::new(API_V3_KEY).unwrap_or_else(|e| panic!("{e}"))
}

/// The fake WeChat Pay server's view of the test merchant, signing under
/// `serial` (the public key id, or the platform certificate's serial).
pub fn fake_config(serial: &str, clock: Arc<dyn Clock>) -> FakeConfig {
    FakeConfig {
        mchid: MCHID.into(),
        appid: APPID.into(),
        merchant_serial: MERCHANT_SERIAL.into(),
        merchant_public: VerifyingKey::from_public_key_pem(&read("merchant_public_key.pem"))
            .unwrap_or_else(|e| panic!("{e}")),
        platform_key: MerchantKey::from_pem(&read("platform_private_key.pem"))
            .unwrap_or_else(|e| panic!("{e}")),
        platform_serial: serial.into(),
        platform_private_pem: read("platform_private_key.pem"),
        platform_certificate: Some(read("platform_cert.pem")),
        api_v3_key: api_key(),
        clock,
    }
}

/// A callback receiver as o2flow's endpoint works: verify, decrypt, 204; else 401 FAIL.
struct Receiver {
    platform: PlatformKeys,
    nonces: NonceCache,
    clock: Arc<ManualClock>,
    received: std::sync::Mutex<Vec<Value>>,
    /// Answer this many genuine notifications with 500 first (a receiver that is down).
    refuse: std::sync::atomic::AtomicUsize,
}

async fn receive(
    request: HttpRequest,
    body: web::Bytes,
    receiver: web::Data<Receiver>,
) -> HttpResponse {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let now = receiver.clock.now().timestamp();
    if let Err(error) = verify_signed(&receiver.platform, &receiver.nonces, now, &header, &body) {
        return HttpResponse::Unauthorized()
            .json(serde_json::json!({"code": "FAIL", "message": error.to_string()}));
    }
    let down = receiver
        .refuse
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        )
        .is_ok();
    if down {
        return HttpResponse::InternalServerError()
            .json(serde_json::json!({"code": "FAIL", "message": "down"}));
    }
    let envelope: Value = serde_json::from_slice(&body).unwrap_or_default();
    let resource = &envelope["resource"];
    let Ok(plain) = api_key().decrypt(
        &text(resource, "nonce"),
        &text(resource, "associated_data"),
        &text(resource, "ciphertext"),
    ) else {
        return HttpResponse::BadRequest()
            .json(serde_json::json!({"code": "FAIL", "message": "decrypt"}));
    };
    let plain: Value = serde_json::from_slice(&plain).unwrap_or_default();
    if let Ok(mut received) = receiver.received.lock() {
        received.push(serde_json::json!({"event_type": envelope["event_type"], "resource": plain}));
    }
    HttpResponse::NoContent().finish()
}

struct Setup {
    clock: Arc<ManualClock>,
    fake: FakeWechatPay,
    client: PayClient,
    receiver: web::Data<Receiver>,
    notify_url: String,
}

fn setup() -> Setup {
    setup_signing(PUB_KEY_ID)
}

/// The fake signs under `serial` (the public key id, or the platform
/// certificate's serial in certificate mode).
fn setup_signing(serial: &str) -> Setup {
    let clock = Arc::new(ManualClock::new(
        chrono::DateTime::from_timestamp(1_795_140_900, 0).unwrap_or_default(),
    ));
    let fake = FakeWechatPay::start(crate::wechat_pay::fake_config(serial, clock.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    let receiver = web::Data::new(Receiver {
        platform: platform_keys(),
        nonces: NonceCache::default(),
        clock: clock.clone(),
        received: std::sync::Mutex::new(Vec::new()),
        refuse: std::sync::atomic::AtomicUsize::new(0),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let notify_url = format!(
        "http://{}/wechat-pay/notify",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let data = receiver.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(receive))
    })
    .workers(1)
    .listen(listener)
    .unwrap_or_else(|e| panic!("{e}"))
    .run();
    tokio::spawn(server);
    let client = PayClient::new(
        Arc::new(merchant(
            &fake.base_url,
            &notify_url,
            "merchant_private_key.pem",
        )),
        clock.clone(),
    );
    Setup {
        clock,
        fake,
        client,
        receiver,
        notify_url,
    }
}

fn merchant(base_url: &str, notify_url: &str, key_file: &str) -> MerchantConfig {
    MerchantConfig {
        mchid: MCHID.into(),
        appid: APPID.into(),
        serial_no: MERCHANT_SERIAL.into(),
        key: MerchantKey::from_pem(&read(key_file)).unwrap_or_else(|e| panic!("{e}")),
        platform: platform_keys(),
        wechatpay_serial: PUB_KEY_ID.into(),
        api_v3_key: api_key(),
        notify_url: notify_url.into(),
        base_url: base_url.into(),
        platform_certificates: false,
    }
}

fn order(no: &str, total: i64) -> Order {
    Order {
        out_trade_no: no.into(),
        description: "门诊挂号费-内科普通号".into(),
        total,
        payer_openid: Some(OPENID.into()),
        time_expire: Some("2026-11-20T10:30:00+08:00".into()),
        attach: Some("visit=V1".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_created_once_paid_notified_queried_and_refunded() {
    let s = setup();
    let prepay = s
        .client
        .jsapi_order(&order("REG20261120000001", 1500))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The same number and parameters: the same prepay_id.
    let again = s
        .client
        .jsapi_order(&order("REG20261120000001", 1500))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prepay, again);
    // The same number with another amount is refused.
    let reused = s.client.jsapi_order(&order("REG20261120000001", 1)).await;
    assert!(
        matches!(&reused, Err(PayError::Api { status: 403, code, .. }) if code == "OUT_TRADE_NO_USED"),
        "{reused:?}"
    );

    // The page's paySign verifies under the merchant key.
    let params = s
        .client
        .jsapi_params(&prepay)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(params.package, format!("prepay_id={prepay}"));
    VerifyingKey::from_public_key_pem(&read("merchant_public_key.pem"))
        .unwrap_or_else(|e| panic!("{e}"))
        .verify(
            pay_sign_message(
                &params.app_id,
                &params.time_stamp,
                &params.nonce_str,
                &params.package,
            )
            .as_bytes(),
            &params.pay_sign,
        )
        .unwrap_or_else(|e| panic!("{e}"));

    let before = s
        .client
        .query("REG20261120000001")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(before.trade_state, "NOTPAY");
    assert_eq!(
        s.fake
            .user_pays("REG20261120000001", NotifyMode::Normal)
            .await,
        vec![204]
    );
    let after = s
        .client
        .query("REG20261120000001")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.trade_state, "SUCCESS");
    assert_eq!(after.amount.and_then(|a| a.total), Some(1500));
    {
        let received = s.receiver.received.lock().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(received.len(), 1);
        assert_eq!(received[0]["event_type"], "TRANSACTION.SUCCESS");
        assert_eq!(received[0]["resource"]["out_trade_no"], "REG20261120000001");
        assert_eq!(received[0]["resource"]["amount"]["total"], 1500);
    }

    // A partial refund, asked twice with the same number: one refund.
    let request = RefundRequest {
        out_trade_no: "REG20261120000001".into(),
        out_refund_no: "RFD20261120000001".into(),
        reason: Some("患者取消挂号".into()),
        refund: 500,
        total: 1500,
    };
    let refund = s
        .client
        .refund(&request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refund.status, "PROCESSING");
    let same = s
        .client
        .refund(&request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(same.refund_id, refund.refund_id);
    let too_much = s
        .client
        .refund(&RefundRequest {
            out_refund_no: "RFD20261120000002".into(),
            refund: 1001,
            ..request.clone()
        })
        .await;
    assert!(
        matches!(&too_much, Err(PayError::Api { code, .. }) if code == "NOT_ENOUGH"),
        "{too_much:?}"
    );
    assert_eq!(
        s.fake
            .refund_completes("RFD20261120000001", "SUCCESS", NotifyMode::Normal)
            .await,
        vec![204]
    );
    let done = s
        .client
        .query_refund("RFD20261120000001")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.status, "SUCCESS");
    let received = s
        .receiver
        .received
        .lock()
        .unwrap_or_else(|e| panic!("{e}"))
        .clone();
    assert_eq!(received[1]["event_type"], "REFUND.SUCCESS");
    assert_eq!(received[1]["resource"]["refund_status"], "SUCCESS");
    s.fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_probe_stale_and_unknown_serial_notifications_are_refused() {
    let s = setup();
    s.client
        .native_order(&Order {
            payer_openid: None,
            ..order("NAT0000001", 800)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.fake.user_pays("NAT0000001", NotifyMode::Probe).await,
        vec![401]
    );
    assert_eq!(
        s.fake
            .user_pays("NAT0000001", NotifyMode::StaleTimestamp)
            .await,
        vec![401]
    );
    assert_eq!(
        s.fake
            .user_pays("NAT0000001", NotifyMode::WrongSerial)
            .await,
        vec![401]
    );
    // The very same signed request twice: the replay is refused.
    assert_eq!(
        s.fake.user_pays("NAT0000001", NotifyMode::Duplicate).await,
        vec![204, 401]
    );
    assert_eq!(
        s.receiver
            .received
            .lock()
            .map(|r| r.len())
            .unwrap_or_default(),
        1
    );
    assert!(s.notify_url.ends_with("/wechat-pay/notify"));
    s.fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_errors_are_retried_with_the_same_body_and_forged_answers_refused() {
    let s = setup();
    s.fake.inject(AnswerFault::SystemError);
    s.client
        .jsapi_order(&order("REG0000000002", 1500))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let posts: Vec<u16> = s
        .fake
        .requests()
        .into_iter()
        .filter(|(m, p, _)| m == "POST" && p == "/v3/pay/transactions/jsapi")
        .map(|(_, _, status)| status)
        .collect();
    assert_eq!(posts, vec![500, 200]);

    s.fake.inject(AnswerFault::ForgedSignature);
    let forged = s.client.query("REG0000000002").await;
    assert!(matches!(forged, Err(PayError::Crypto(_))), "{forged:?}");
    s.fake.inject(AnswerFault::StaleTimestamp);
    let stale = s.client.query("REG0000000002").await;
    assert!(matches!(stale, Err(PayError::Forged(_))), "{stale:?}");

    // Closing: 204, then the number cannot be used again.
    s.client
        .close("REG0000000002")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.fake.trade_state("REG0000000002").as_deref(),
        Some("CLOSED")
    );
    let reopened = s.client.jsapi_order(&order("REG0000000002", 1500)).await;
    assert!(
        matches!(&reopened, Err(PayError::Api { code, .. }) if code == "ORDER_CLOSED"),
        "{reopened:?}"
    );
    let missing = s.client.query("NOSUCHORDER1").await;
    assert!(
        matches!(&missing, Err(PayError::Api { status: 404, code, .. }) if code == "ORDER_NOT_EXIST"),
        "{missing:?}"
    );
    s.fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_signed_with_the_wrong_key_or_an_old_clock_gets_sign_error() {
    let s = setup();
    let impostor = PayClient::new(
        Arc::new(merchant(
            &s.fake.base_url,
            &s.notify_url,
            "platform_private_key.pem",
        )),
        s.clock.clone(),
    );
    let refused = impostor.jsapi_order(&order("REG0000000003", 1500)).await;
    assert!(
        matches!(&refused, Err(PayError::Api { status: 401, code, .. }) if code == "SIGN_ERROR"),
        "{refused:?}"
    );
    let late_clock = Arc::new(ManualClock::new(
        s.clock.now() - chrono::Duration::minutes(10),
    ));
    let late = PayClient::new(
        Arc::new(merchant(
            &s.fake.base_url,
            &s.notify_url,
            "merchant_private_key.pem",
        )),
        late_clock,
    );
    let refused = late.jsapi_order(&order("REG0000000003", 1500)).await;
    assert!(
        matches!(&refused, Err(PayError::Api { status: 401, .. })),
        "{refused:?}"
    );
    assert_eq!(s.fake.trade_state("REG0000000003"), None);
    s.fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_notifications_are_retried_on_the_schedule_and_429_keeps_the_body() {
    let s = setup();
    s.client
        .jsapi_order(&order("REG0000000004", 1500))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The receiver is down for three attempts: WeChat Pay tries again on its
    // 15-step schedule (compressed here), the same notification each time.
    s.receiver
        .refuse
        .store(3, std::sync::atomic::Ordering::SeqCst);
    s.fake.set_retry_scale(1.0 / 100_000.0);
    assert_eq!(
        s.fake.user_pays("REG0000000004", NotifyMode::Normal).await,
        vec![500, 500, 500, 204]
    );
    let deliveries = s.fake.deliveries();
    assert_eq!(deliveries.len(), 4);
    assert!(
        deliveries.iter().all(|(id, _)| id == &deliveries[0].0),
        "{deliveries:?}"
    );
    assert_eq!(
        s.receiver
            .received
            .lock()
            .map(|r| r.len())
            .unwrap_or_default(),
        1
    );
    // Never answered: all 16 attempts, then WeChat Pay gives up (querying remains).
    s.client
        .jsapi_order(&order("REG0000000005", 1500))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.receiver
        .refuse
        .store(100, std::sync::atomic::Ordering::SeqCst);
    let statuses = s.fake.user_pays("REG0000000005", NotifyMode::Normal).await;
    assert_eq!(statuses.len(), 1 + o2flow_wechat_fake::RETRY_SCHEDULE.len());
    assert!(statuses.iter().all(|s| *s == 500));
    // A probe is refused and not retried.
    s.receiver
        .refuse
        .store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        s.fake.user_pays("REG0000000004", NotifyMode::Probe).await,
        vec![401]
    );

    // A delayed notification still arrives, once.
    let before = s
        .receiver
        .received
        .lock()
        .map(|r| r.len())
        .unwrap_or_default();
    let started = std::time::Instant::now();
    assert_eq!(
        s.fake
            .user_pays(
                "REG0000000004",
                NotifyMode::Delayed(std::time::Duration::from_millis(150))
            )
            .await,
        vec![204]
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    assert_eq!(
        s.receiver
            .received
            .lock()
            .map(|r| r.len())
            .unwrap_or_default(),
        before + 1
    );

    // 429 FREQUENCY_LIMITED: retried with the very same bytes (same out_refund_no).
    s.fake.inject(AnswerFault::RateLimited);
    let refund = s
        .client
        .refund(&RefundRequest {
            out_trade_no: "REG0000000004".into(),
            out_refund_no: "RFD0000000004".into(),
            reason: None,
            refund: 1500,
            total: 1500,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refund.status, "PROCESSING");
    let requests = s.fake.requests();
    let bodies = s.fake.bodies();
    let refunds: Vec<(u16, &String)> = requests
        .iter()
        .zip(&bodies)
        .filter(|((m, p, _), _)| m == "POST" && p == "/v3/refund/domestic/refunds")
        .map(|((_, _, status), body)| (*status, body))
        .collect();
    assert_eq!(refunds.len(), 2, "{refunds:?}");
    assert_eq!((refunds[0].0, refunds[1].0), (429, 200));
    assert_eq!(refunds[0].1, refunds[1].1, "identical bodies");
    s.fake.stop().await;
}

/// A merchant in platform-certificate mode: no key configured up front
/// (`platform` holds the public key only during a switch).
fn certificate_merchant(s: &Setup, with_public_key: bool) -> PayClient {
    let mut config = merchant(&s.fake.base_url, &s.notify_url, "merchant_private_key.pem");
    config.platform_certificates = true;
    config.platform = PlatformKeys::default();
    config.wechatpay_serial = String::new();
    if with_public_key {
        config.platform.add(
            PUB_KEY_ID,
            VerifyingKey::from_public_key_pem(&read("platform_public_key.pem"))
                .unwrap_or_else(|e| panic!("{e}")),
        );
        config.wechatpay_serial = PUB_KEY_ID.into();
    }
    PayClient::new(Arc::new(config), s.clock.clone())
}

const CERT_SERIAL: &str = "7E57C0DE0000000000000000000000000000B002";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_mode_downloads_and_verifies_and_holds_both_keys_during_a_switch() {
    // The vector's /v3/certificates answer (independent bytes) reads as the fake's does.
    let vector: Value =
        serde_json::from_str(&read("certificates_response.json")).unwrap_or_else(|e| panic!("{e}"));
    let headers = vector["response"]["headers"].clone();
    let header = |name: &str| headers[name].as_str().map(str::to_owned);
    let certificates = o2flow::wechat::pay::client::read_certificates(
        &api_key(),
        &header,
        text(&vector, "response.body").as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(certificates.len(), 1);
    assert_eq!(certificates[0].serial_no, CERT_SERIAL);
    let mut tampered = text(&vector, "response.body").to_owned();
    tampered = tampered.replace("2046", "2047");
    assert!(o2flow::wechat::pay::client::read_certificates(
        &api_key(),
        &header,
        tampered.as_bytes()
    )
    .is_err());

    let s = setup_signing(CERT_SERIAL);
    let client = certificate_merchant(&s, false);
    // A forged download changes nothing; a genuine one gives the certificate.
    s.fake.inject(AnswerFault::ForgedSignature);
    assert!(client.refresh_certificates().await.is_err());
    assert!(client.platform_keys().serials().is_empty());
    let serials = client
        .refresh_certificates()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(serials, vec![CERT_SERIAL.to_owned()]);
    assert_eq!(client.wechatpay_serial(), CERT_SERIAL);
    // Answers signed under the certificate verify.
    client
        .jsapi_order(&order("CRT0000000001", 1500))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // A certificate-mode client that has not downloaded yet does so when an
    // answer names a serial it does not hold (a rotation), then verifies it.
    let fresh = certificate_merchant(&s, false);
    let answer = fresh
        .query("CRT0000000001")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.trade_state, "NOTPAY");
    assert_eq!(
        fresh.platform_keys().serials(),
        vec![CERT_SERIAL.to_owned()]
    );

    // Switching to the public key: both are held, the public key is named in
    // Wechatpay-Serial, and answers under either verify.
    let switching = certificate_merchant(&s, true);
    let serials = switching
        .refresh_certificates()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(serials, vec![CERT_SERIAL.to_owned(), PUB_KEY_ID.to_owned()]);
    assert_eq!(switching.wechatpay_serial(), PUB_KEY_ID);
    switching
        .query("CRT0000000001")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.fake.sign_as(PUB_KEY_ID);
    switching
        .query("CRT0000000001")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The certificate-only merchant cannot verify the public key's answers.
    let refused = client.query("CRT0000000001").await;
    assert!(matches!(refused, Err(PayError::Crypto(_))), "{refused:?}");
    s.fake.stop().await;
}
