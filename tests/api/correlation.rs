//! Correlated events: found by business key, kept when they come early,
//! deduplicated by message id. On both databases.

use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::{text, TestApp};
use crate::storage_test;

const FLOW: &str = r#"
name: registration_payment
title: 挂号缴费 / Registration payment
inputs:
  patient: party
  registration_id: string
correlation: registration_id
events:
  cashier.paid: { keep_for: 2h }
start: created
states:
  created:
    on:
      registration.submitted: awaiting_payment
  awaiting_payment:
    on:
      cashier.paid:
        - when: event.payload.amount == 1500
          goto: paid
    timers:
      - after: 15m
        goto: expired
  paid: { final: completed }
  expired: { final: expired }
"#;

async fn deploy_and_start(app: &TestApp, registration: &str) -> String {
    let (status, body) = app.deploy(FLOW).await;
    assert!(status == 201 || status == 200, "{body}");
    let (status, body) = app
        .post("/api/v1/instances", &json!({"workflow": "registration_payment", "input": {"patient": {"id": "p1"}, "registration_id": registration}}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["business_key"], registration);
    text(&body, "id").to_owned()
}

async fn publish(app: &TestApp, key: &str, message_id: &str, amount: i64) -> Value {
    let (status, body) = app
        .post("/api/v1/events", &json!({"type": "cashier.paid", "correlation_key": key, "message_id": message_id, "payload": {"amount": amount}}))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn an_early_payment_callback_is_kept_and_delivered_when_the_flow_gets_there(app: TestApp) {
    let id = deploy_and_start(&app, "R-1").await;
    let kept = publish(&app, "R-1", "wx-1", 1500).await;
    assert_eq!(kept["delivered_to"], json!([]));
    assert_eq!(kept["kept_until"], "2026-11-20T10:00:00.000Z");
    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(instance["state"], "created");

    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{id}/events"),
            &json!({"type": "registration.submitted"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["instance"]["state"].clone(),
            body["instance"]["status"].clone()
        ),
        (json!("paid"), json!("completed"))
    );

    // The callback again (WeChat retries): dropped, and it says so.
    let again = publish(&app, "R-1", "wx-1", 1500).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["delivered_to"], json!([id]));
    let (_, history) = app.get(&format!("/api/v1/instances/{id}/history")).await;
    let payments = history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "event" && e["detail"]["type"] == "cashier.paid")
        .count();
    assert_eq!(payments, 1);
}
storage_test!(an_early_payment_callback_is_kept_and_delivered_when_the_flow_gets_there);

async fn a_waiting_instance_gets_the_event_at_once(app: TestApp) {
    let id = deploy_and_start(&app, "R-2").await;
    app.post(
        &format!("/api/v1/instances/{id}/events"),
        &json!({"type": "registration.submitted"}),
    )
    .await;
    let delivered = publish(&app, "R-2", "wx-2", 1500).await;
    assert_eq!(delivered["delivered_to"], json!([id]));
    assert_eq!(delivered["kept_until"], Value::Null);
    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(instance["state"], "paid");
}
storage_test!(a_waiting_instance_gets_the_event_at_once);

async fn a_kept_event_expires_and_one_whose_guard_fails_stays_kept(app: TestApp) {
    let id = deploy_and_start(&app, "R-3").await;
    publish(&app, "R-3", "wx-3", 1500).await;
    app.advance(Duration::hours(3)).await;
    let (_, body) = app
        .post(
            &format!("/api/v1/instances/{id}/events"),
            &json!({"type": "registration.submitted"}),
        )
        .await;
    assert_eq!(
        body["instance"]["state"], "awaiting_payment",
        "an expired event is not delivered"
    );

    // A wrong amount does not satisfy the guard: not delivered, kept.
    let wrong = publish(&app, "R-3", "wx-4", 1).await;
    assert_eq!(wrong["delivered_to"], json!([]));
    assert!(wrong["kept_until"].is_string());
    app.advance(Duration::minutes(15)).await;
    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(instance["status"], "expired");
}
storage_test!(a_kept_event_expires_and_one_whose_guard_fails_stays_kept);

async fn correlated_events_refuse_bad_input(app: TestApp) {
    deploy_and_start(&app, "R-5").await;
    let cases = [
        (
            json!({"type": "cashier.paid", "correlation_key": "R-5"}),
            400,
            "malformed_json",
        ),
        (
            json!({"type": "cashier.paid", "correlation_key": "", "message_id": "m"}),
            400,
            "invalid_event",
        ),
        (
            json!({"type": "", "correlation_key": "R-5", "message_id": "m"}),
            400,
            "invalid_event",
        ),
    ];
    for (body, status, code) in cases {
        let (got, error) = app.post("/api/v1/events", &body).await;
        assert_eq!(
            (got, error["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    // A workflow with `correlation` computes the key; another one is refused.
    let (status, error) = app
        .post("/api/v1/instances", &json!({"workflow": "registration_payment", "business_key": "X", "input": {"patient": {"id": "p1"}, "registration_id": "R-6"}}))
        .await;
    assert_eq!(
        (status, error["error"].clone()),
        (422, json!("invalid_input"))
    );
    // The other tenant does not see this tenant's instances through events.
    let (status, body) = app
        .post_raw(
            "/api/v1/events",
            &app.other_key,
            json!({"type": "cashier.paid", "correlation_key": "R-5", "message_id": "m-other"})
                .to_string(),
            None,
        )
        .await;
    assert_eq!((status, body["delivered_to"].clone()), (200, json!([])));
}
storage_test!(correlated_events_refuse_bad_input);
