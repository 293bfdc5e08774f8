//! The pages people use, in a real headless Chromium (`chromium` and
//! `chromium-driver`): the pay page shows the amount and the 医保 split,
//! pays in the sandbox, and shows a payment made elsewhere without a reload.

use std::time::Duration as StdDuration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::helpers::{text, TestApp};
use crate::payments::{start_registration, state_of, workflow};
use crate::storage_test;

/// A chromedriver on a free port, and a headless Chromium session through it.
pub struct Browser {
    driver: std::process::Child,
    pub client: Client,
}

impl Browser {
    pub async fn start() -> Browser {
        // fantoccini's rustls and reqwest's bring two crypto providers: pick one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("chromedriver (Debian package chromium-driver) must be installed: {e}")
            });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=480,900"]}),
        );
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        let client = ClientBuilder::rustls()
            .unwrap_or_else(|e| panic!("{e}"))
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot start Chromium through chromedriver: {e}"));
        Browser { driver, client }
    }

    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap_or_default()
    }

    /// Waits (up to 15 s) until the element's `data-state` is `state`.
    pub async fn wait_for_state(&self, state: &str) {
        for _ in 0..150 {
            let now = self.client.find(Locator::Css("#state")).await.ok();
            if let Some(element) = now {
                if element.attr("data-state").await.ok().flatten().as_deref() == Some(state) {
                    return;
                }
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        let shown = self.text("#state").await;
        panic!("the page never showed `{state}` (shows `{shown}`)");
    }

    pub async fn stop(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn the_pay_page_pays_in_the_sandbox(app: TestApp) {
    let (status, body) = app.deploy(&workflow("registration_payment")).await;
    assert!(status == 200 || status == 201, "{body}");
    let (instance, link) = start_registration(&app, "REG9", None).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&app.url(&link))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(browser.text("#amount").await, "¥15.00");
    assert_eq!(browser.text("#description").await, "挂号费 心内科");
    browser.wait_for_state("pending").await;
    assert!(browser.text("#state").await.contains("待支付"));
    assert_eq!(browser.text("#pay").await, "Pay ¥15.00");
    browser
        .client
        .find(Locator::Css("#pay"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    browser.wait_for_state("succeeded").await;
    assert!(browser.text("#state").await.contains("已支付"));
    // The buttons are gone once paid.
    let actions_hidden = browser
        .client
        .execute("return document.getElementById('actions').hidden;", vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(actions_hidden, Value::Bool(true));
    browser.stop().await;
    app.advance(chrono::Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "booked");
}
storage_test!(the_pay_page_pays_in_the_sandbox);

async fn the_pay_page_shows_the_insurance_split_and_updates_without_reload(app: TestApp) {
    let (status, body) = app.deploy(&workflow("prescription_billing")).await;
    assert!(status == 200 || status == 201, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/instances",
            &json!({
                "workflow": "prescription_billing",
                "input": {
                    "patient": {"id": "p-rx1", "name": "李四"},
                    "prescription_id": "RX1",
                    "bill": {
                        "items": [{"name": "阿莫西林胶囊", "amount": "12.50", "quantity": 2}, {"name": "复方甘草片", "amount": "15.00"}],
                        "insurance": {"pooled_fund": "20.00", "personal_account": "10.00", "other_funds": "0.00", "self_pay": "10.00"},
                        "add": [{"type": "FREIGHT", "amount": "5.00"}],
                        "reduce": [{"type": "HOSPITAL_REDUCE", "amount": "1.00"}]
                    }
                }
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let instance = text(&body, "id").to_owned();
    app.advance(chrono::Duration::zero()).await;
    let (message, link) = crate::payments::pay_message(&app, "p-rx1").await;
    // Self-pay 10.00 + freight 5.00 − reduction 1.00.
    assert!(message.contains("¥14.00"), "{message}");
    let browser = Browser::start().await;
    browser
        .client
        .goto(&app.url(&link))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(browser.text("#amount").await, "¥14.00");
    assert_eq!(browser.text("#bill-total").await, "¥45.00");
    assert_eq!(browser.text("#pooled-fund").await, "−¥20.00");
    assert_eq!(browser.text("#personal-account").await, "−¥10.00");
    assert_eq!(browser.text("#self-pay").await, "¥10.00");
    browser.wait_for_state("pending").await;
    // Paid elsewhere (another tab, a kiosk): the open page shows it on its own.
    let (status, _) = crate::payments::sandbox_pay(&app, &link).await;
    assert_eq!(status, 200);
    browser.wait_for_state("succeeded").await;
    browser.stop().await;
    app.advance(chrono::Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "paid");
}
storage_test!(the_pay_page_shows_the_insurance_split_and_updates_without_reload);

async fn the_med_ins_pay_page_calls_wechat_with_the_mix_number_and_shows_the_outcome(app: TestApp) {
    let m = crate::payments::with_merchant(&app).await;
    let (status, body) = app.deploy(&workflow("prescription_billing")).await;
    assert!(status == 200 || status == 201, "{body}");
    let (instance, payment) = crate::med_ins::start(&app, "RXB1", true).await;
    let mix = text(&payment, "mix_trade_no").to_owned();
    let (_, link) = crate::payments::pay_message(&app, "p-RXB1").await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&app.url(&link))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    browser.wait_for_state("pending").await;
    assert_eq!(browser.text("#amount").await, "¥45.00");
    assert_eq!(browser.text("#pooled-fund").await, "−¥60.00");
    assert_eq!(browser.text("#mix-trade-no").await, mix);
    assert!(browser.text("#med-ins-pay").await.contains("医保支付"));
    let source = browser.client.source().await.unwrap_or_default();
    assert!(
        !source.contains("张三"),
        "the insured person's name is not on the page"
    );
    let click = || async {
        browser
            .client
            .find(Locator::Css("#med-ins-pay"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    };
    // Outside WeChat: the page says where to open it.
    click().await;
    let hint_hidden = browser
        .client
        .execute(
            "return document.getElementById('not-wechat').hidden;",
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hint_hidden, Value::Bool(false));
    // Inside WeChat (its bridge stood in for): the 医保 call with the mix number
    // and the self-paid part's signed parameters.
    browser
        .client
        .execute(
            "window.WeixinJSBridge = {invoke: function (name, params, done) { window.called = {name: name, params: params}; done({err_msg: name + ':ok'}); }};",
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    click().await;
    let called = browser
        .client
        .execute("return window.called;", vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(called["name"], "requestMedicalInsurancePay", "{called}");
    assert_eq!(called["params"]["mixTradeNo"], mix.as_str());
    assert_eq!(called["params"]["appid"], crate::wechat_pay::APPID);
    assert_eq!(called["params"]["signType"], "RSA");
    assert!(
        called["params"]["package"]
            .as_str()
            .is_some_and(|p| p.starts_with("prepay_id=")),
        "{called}"
    );
    // WeChat Pay confirms both parts: the open page shows it on its own.
    assert_eq!(
        m.fake
            .user_pays_med_ins(&mix, o2flow_wechat_fake::NotifyMode::Normal)
            .await,
        vec![204]
    );
    browser.wait_for_state("succeeded").await;
    browser.stop().await;
    app.advance(chrono::Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "paid");
    m.stop().await;
}
storage_test!(the_med_ins_pay_page_calls_wechat_with_the_mix_number_and_shows_the_outcome);
