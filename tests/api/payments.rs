//! Payments in workflows, end to end through HTTP: the sandbox (the
//! default), and a WeChat Pay merchant against the fake WeChat Pay server:
//! order → user pays → callback → the state advances → refund → refund
//! callback; duplicate, forged, probe, stale and early callbacks; a lost
//! callback found by reconciliation; an order that expires, is closed, and
//! is paid too late and refunded automatically. Every test on SQLite and
//! PostgreSQL.

use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::TestApp;
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
    let instance = body["id"].as_str().unwrap_or_default().to_owned();
    app.advance(Duration::zero()).await;
    let (_, inbox) = app.get(&format!("/api/v1/inbox/p-{id}")).await;
    let message = inbox["messages"][0]["body"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("¥15.00"), "{message}");
    let link = message
        .split_whitespace()
        .flat_map(|w| w.split('：'))
        .find(|w| w.starts_with("http://o2flow.test/p/pay/"))
        .unwrap_or_else(|| panic!("no pay link in {message}"))
        .to_owned();
    (instance, link.replace("http://o2flow.test", ""))
}

pub async fn state_of(app: &TestApp, instance: &str) -> String {
    let (_, body) = app.get(&format!("/api/v1/instances/{instance}")).await;
    body["state"].as_str().unwrap_or_default().to_owned()
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
        let (status, view) = crate::helpers::read(
            app.client
                .post(app.url(&format!("{link}/sandbox/pay")))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
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
