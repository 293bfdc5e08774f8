//! The promises o2flow makes, driven over HTTP as hospital systems,
//! patients and staff would (issue 11): nothing faked (events only o2flow
//! raises are refused from outside), nothing kept (a paid flow never ends
//! holding money silently), nothing lost (one effect per occurrence, one
//! answer per request), nothing leaked (staff keys see personal data masked
//! and never a patient's link). Every test on SQLite and PostgreSQL.

use chrono::Duration;
use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{at, list, text, TestApp};
use crate::payments::{pay_message, payments_of, start_registration, state_of, workflow};
use crate::storage_test;

async fn deploy(app: &TestApp, source: &str) {
    let (status, body) = app.deploy(source).await;
    assert!(status == 200 || status == 201, "{body}");
}

/// Starts an instance through the API and returns its id.
async fn start(app: &TestApp, request: &Value) -> String {
    let (status, body) = app.post("/api/v1/instances", request).await;
    assert_eq!(status, 201, "{body}");
    text(&body, "id")
}

/// Posts an event to an instance that must take it; returns the answer.
async fn send(app: &TestApp, instance: &str, event: &Value) -> Value {
    let (status, body) = app
        .post(&format!("/api/v1/instances/{instance}/events"), event)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn post_as(app: &TestApp, key: &str, path: &str, body: &Value) -> (u16, Value) {
    app.post_raw(path, key, body.to_string(), None).await
}

/// Pays the first pay link in `party`'s inbox in the sandbox, as the patient would.
async fn pay_in_sandbox(app: &TestApp, party: &str) {
    let (_, link) = pay_message(app, party).await;
    let response = app
        .client
        .post(app.url(&format!("{link}/sandbox/pay")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status().as_u16(), 200);
    app.advance(Duration::zero()).await;
}

async fn an_api_caller_cannot_raise_what_only_o2flow_raises(app: TestApp) {
    deploy(&app, &workflow("registration_payment")).await;
    deploy(&app, &workflow("prescription_billing")).await;
    let (instance, _) = start_registration(&app, "F1", None).await;
    let events = format!("/api/v1/instances/{instance}/events");
    for event_type in [
        "payment.succeeded",
        "payment.failed",
        "refund.succeeded",
        "refund.abnormal",
        "child.completed",
        "action.failed",
        "code.verified",
    ] {
        let (status, body) = post_as(
            &app,
            &app.integration_key,
            &events,
            &json!({"type": event_type, "payload": {"amount": 1500}}),
        )
        .await;
        assert_eq!(
            (status, text(&body, "error")),
            (403, "reserved_event".to_owned()),
            "{body}"
        );
        let (status, body) = post_as(
            &app,
            &app.integration_key,
            "/api/v1/events",
            &json!({"type": event_type, "correlation_key": "F1", "message_id": format!("m-{event_type}")}),
        )
        .await;
        assert_eq!(
            (status, text(&body, "error")),
            (403, "reserved_event".to_owned()),
            "{body}"
        );
    }
    // A malformed event type is a bad request, not an unhandled event.
    let (status, body) = post_as(
        &app,
        &app.integration_key,
        &events,
        &json!({"type": "Payment Succeeded!"}),
    )
    .await;
    assert_eq!(
        (status, text(&body, "error")),
        (400, "invalid_event".to_owned()),
        "{body}"
    );
    // Nothing changed: still waiting for the patient, the payment pending.
    assert_eq!(state_of(&app, &instance).await, "awaiting_payment");
    assert_eq!(
        text(&payments_of(&app, &instance).await, "0.state"),
        "pending"
    );
    let (_, history) = app
        .get(&format!("/api/v1/instances/{instance}/history"))
        .await;
    assert!(
        list(&history, "entries")
            .iter()
            .all(|e| e["kind"] != "event"),
        "{history}"
    );
    // And a prescription never paid cannot be dispensed.
    let rx = start(&app, &prescription("RX-F1")).await;
    app.advance(Duration::zero()).await;
    let (status, body) = post_as(
        &app,
        &app.integration_key,
        &format!("/api/v1/instances/{rx}/events"),
        &json!({"type": "dispensed"}),
    )
    .await;
    assert_eq!(
        (status, text(&body, "error")),
        (409, "event_not_handled".to_owned()),
        "{body}"
    );
}
storage_test!(an_api_caller_cannot_raise_what_only_o2flow_raises);

/// A prescription of ¥90.00 whose self-paid part, ¥45.00, the patient pays
/// (no insurance bureau settlement: an ordinary order, the sandbox here).
fn prescription(id: &str) -> Value {
    json!({
        "workflow": "prescription_billing",
        "input": {
            "patient": {"id": format!("p-{id}"), "name": "张三", "phone": "13800001234"},
            "prescription_id": id,
            "bill": {
                "items": [{"name": "阿莫西林胶囊", "amount": "90.00"}],
                "insurance": {"pooled_fund": "30.00", "personal_account": "20.00", "other_funds": "0.00", "self_pay": "40.00"},
                "add": [{"type": "FREIGHT", "amount": "5.00"}]
            }
        }
    })
}

async fn a_paid_prescription_cancelled_any_way_is_refunded_in_full(app: TestApp) {
    deploy(&app, &workflow("prescription_billing")).await;
    let mut paid = Vec::new();
    for id in ["RX-C1", "RX-C2", "RX-C3"] {
        let instance = start(&app, &prescription(id)).await;
        app.advance(Duration::zero()).await;
        pay_in_sandbox(&app, &format!("p-{id}")).await;
        assert_eq!(state_of(&app, &instance).await, "paid");
        paid.push(instance);
    }
    // The three ways a cancel arrives: the cancel endpoint, an event, a correlated event.
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{}/cancel", paid[0]),
            &json!({"reason": "患者取消"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{}/events", paid[1]),
            &json!({"type": "cancel", "payload": {"reason": "处方作废"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/events",
            &json!({"type": "cancel", "correlation_key": "RX-C3", "message_id": "his-cancel-1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.advance(Duration::zero()).await;
    for instance in &paid {
        let (_, shown) = app.get(&format!("/api/v1/instances/{instance}")).await;
        assert_eq!(
            (text(&shown, "state"), text(&shown, "status")),
            ("refunded".to_owned(), "cancelled".to_owned()),
            "{shown}"
        );
        let payments = payments_of(&app, instance).await;
        assert_eq!(text(&payments, "0.state"), "succeeded", "{payments}");
        assert_eq!(text(&payments, "0.refunded"), "45.00", "{payments}");
    }
    // No incident: every one ended refunded.
    let (_, incidents) = app.get("/api/v1/incidents?status=all").await;
    assert_eq!(
        list(&incidents, "incidents"),
        Vec::<Value>::new(),
        "{incidents}"
    );
}
storage_test!(a_paid_prescription_cancelled_any_way_is_refunded_in_full);

/// Valid, yet it can end holding money: `closed` is not a cancel, so only
/// the runtime's backstop sees it.
const DEPOSIT: &str = r#"
name: inpatient_deposit
inputs:
  patient: party
  deposit: money
start: awaiting_deposit
states:
  awaiting_deposit:
    enter:
      - pay: { key: deposit, amount: deposit, description: "'住院押金'", payer: patient }
    on:
      payment.succeeded: admitted
  admitted:
    on:
      discharged: settled
      ward.closed: closed
      cancel: { refuse: "'已入院 / already admitted'" }
  settled: { final: completed }
  closed: { final: expired }
"#;

async fn an_instance_that_ends_holding_money_opens_a_money_held_incident(app: TestApp) {
    deploy(&app, DEPOSIT).await;
    let instance = start(&app, &json!({"workflow": "inpatient_deposit", "input": {"patient": {"id": "p-dep"}, "deposit": "2000.00"}})).await;
    app.advance(Duration::zero()).await;
    // No message in this flow: the patient pays at the kiosk, by the same link.
    let no = text(&payments_of(&app, &instance).await, "0.payment");
    let link = app
        .runtime
        .pay_link(&no, app.runtime.now() + Duration::hours(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("http://o2flow.test", "");
    let response = app
        .client
        .post(app.url(&format!("{link}/sandbox/pay")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status().as_u16(), 200);
    app.advance(Duration::zero()).await;
    assert_eq!(state_of(&app, &instance).await, "admitted");
    // A refused cancel changes nothing.
    let (status, body) = app
        .post(&format!("/api/v1/instances/{instance}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (status, text(&body, "error")),
        (409, "refused".to_owned()),
        "{body}"
    );
    assert_eq!(text(&body, "details.reason"), "已入院 / already admitted");
    assert_eq!(state_of(&app, &instance).await, "admitted");
    send(&app, &instance, &json!({"type": "ward.closed"})).await;
    let (_, incidents) = app.get("/api/v1/incidents?status=open").await;
    let held: Vec<Value> = list(&incidents, "incidents")
        .into_iter()
        .filter(|i| i["effect"] == "money_held" && i["instance_id"] == instance.as_str())
        .collect();
    assert_eq!(held.len(), 1, "{incidents}");
    assert!(text(&held[0], "error").contains("¥2000.00"), "{incidents}");
}
storage_test!(an_instance_that_ends_holding_money_opens_a_money_held_incident);

const PINGED: &str = r#"
name: pinged
inputs:
  guest: party
  booking_id: string
data:
  pings: { type: integer, default: 0 }
start: open
states:
  open:
    on:
      ping:
        actions:
          - set: { pings: data.pings + 1 }
          - send: { to: guest, template: booking_cancelled }
      close: closed
    timers:
      - every: "0 * * * * *"
        actions:
          - send: { to: guest, template: booking_cancelled }
  closed: { final: completed }
"#;

async fn every_occurrence_of_a_repeated_message_is_delivered_once(app: TestApp) {
    deploy(&app, PINGED).await;
    let instance = start(
        &app,
        &json!({"workflow": "pinged", "input": {"guest": {"id": "g-ping"}, "booking_id": "B-1"}}),
    )
    .await;
    for ping in ["a", "b"] {
        let (status, body) = app
            .post_raw(
                &format!("/api/v1/instances/{instance}/events"),
                &app.key,
                json!({"type": "ping", "payload": {"n": ping}}).to_string(),
                Some(&format!("ping-{ping}")),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    app.advance(Duration::zero()).await;
    let (_, shown) = app.get(&format!("/api/v1/instances/{instance}")).await;
    assert_eq!(at(&shown, "data.pings"), &json!(2));
    let (_, inbox) = app.get("/api/v1/inbox/g-ping").await;
    assert_eq!(
        list(&inbox, "messages").len(),
        2,
        "two pings, two messages: {inbox}"
    );
    // The repeating timer fires three times: three more messages.
    for _ in 0..3 {
        app.advance(Duration::minutes(1)).await;
    }
    let (_, inbox) = app.get("/api/v1/inbox/g-ping").await;
    assert_eq!(list(&inbox, "messages").len(), 5, "{inbox}");
    send(&app, &instance, &json!({"type": "close"})).await;
}
storage_test!(every_occurrence_of_a_repeated_message_is_delivered_once);

const LAB: &str = r#"
name: lab_results
inputs:
  patient: party
  order_id: string
data:
  notes: { type: integer, default: 0 }
correlation: order_id
events:
  lab.result:
    keep_for: 7d
    payload: { critical: boolean, value: string }
start: waiting
states:
  waiting:
    on:
      lab.result:
        - when: event.payload.critical
          goto: critical
        - goto: normal
      note.added:
        when: event.payload.level > 2
        actions: [ { set: { notes: data.notes + 1 } } ]
  critical: { final: completed }
  normal: { final: completed }
"#;

async fn publish(app: &TestApp, body: Value) -> (u16, Value) {
    post_as(app, &app.integration_key, "/api/v1/events", &body).await
}

async fn a_refused_event_is_never_kept_and_declared_payloads_are_checked_at_the_door(app: TestApp) {
    deploy(&app, LAB).await;
    let instance = start(&app, &json!({"workflow": "lab_results", "input": {"patient": {"id": "p-lab"}, "order_id": "LAB-1"}})).await;
    // A guard that fails on the payload: 422, and the event is forgotten.
    let (status, body) = publish(&app, json!({"type": "note.added", "correlation_key": "LAB-1", "message_id": "n-1", "payload": {"level": "high"}})).await;
    assert_eq!(
        (status, text(&body, "error")),
        (422, "expression_failed".to_owned()),
        "{body}"
    );
    app.advance(Duration::seconds(65)).await;
    let (_, shown) = app.get(&format!("/api/v1/instances/{instance}")).await;
    assert_eq!(
        at(&shown, "data.notes"),
        &json!(0),
        "an event answered 422 is never applied later"
    );
    // The corrected resend, with the same message id, is applied.
    let (status, body) = publish(&app, json!({"type": "note.added", "correlation_key": "LAB-1", "message_id": "n-1", "payload": {"level": 3}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(list(&body, "delivered_to"), vec![json!(instance)]);
    // A declared payload is checked field by field before anything happens.
    let (status, body) = publish(&app, json!({"type": "lab.result", "correlation_key": "LAB-1", "message_id": "r-1", "payload": {"critical": "Y", "value": "7.9"}})).await;
    assert_eq!(
        (status, text(&body, "error")),
        (422, "invalid_payload".to_owned()),
        "{body}"
    );
    assert_eq!(
        text(&body, "details.problems.0.field"),
        "critical",
        "{body}"
    );
    let (status, body) = post_as(
        &app,
        &app.integration_key,
        &format!("/api/v1/instances/{instance}/events"),
        &json!({"type": "lab.result", "payload": {"critical": true}}),
    )
    .await;
    assert_eq!(
        (status, text(&body, "error")),
        (422, "invalid_payload".to_owned()),
        "{body}"
    );
    assert_eq!(text(&body, "details.problems.0.field"), "value", "{body}");
    // The corrected resend under the same message id goes through.
    let (status, body) = publish(&app, json!({"type": "lab.result", "correlation_key": "LAB-1", "message_id": "r-1", "payload": {"critical": true, "value": "7.9"}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(list(&body, "delivered_to"), vec![json!(instance)]);
    assert_eq!(state_of(&app, &instance).await, "critical");
    // One rule for bodies: no Content-Type needed on /events either.
    let response = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(&app.integration_key)
        .body(json!({"type": "note.added", "correlation_key": "LAB-2", "message_id": "n-9", "payload": {"level": 3}}).to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = crate::helpers::read(response).await;
    assert_eq!(status, 200, "{body}");
}
storage_test!(a_refused_event_is_never_kept_and_declared_payloads_are_checked_at_the_door);

async fn twenty_copies_of_one_request_get_one_answer(app: TestApp) {
    deploy(&app, PINGED).await;
    deploy(&app, LAB).await;
    let instance = start(
        &app,
        &json!({"workflow": "pinged", "input": {"guest": {"id": "g-20"}, "booking_id": "B-20"}}),
    )
    .await;
    let path = format!("/api/v1/instances/{instance}/events");
    let answers = join_all((0..20).map(|_| {
        app.post_raw(
            &path,
            &app.integration_key,
            json!({"type": "ping"}).to_string(),
            Some("same-ping"),
        )
    }))
    .await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(at(body, "applied"), &json!(true), "{body}");
    }
    app.advance(Duration::zero()).await;
    let (_, shown) = app.get(&format!("/api/v1/instances/{instance}")).await;
    assert_eq!(at(&shown, "data.pings"), &json!(1), "applied once");
    // Twenty copies of one correlated message: each names the instance it went to.
    let lab = start(&app, &json!({"workflow": "lab_results", "input": {"patient": {"id": "p-20"}, "order_id": "LAB-20"}})).await;
    let message = json!({"type": "lab.result", "correlation_key": "LAB-20", "message_id": "r-20", "payload": {"critical": false, "value": "5.1"}});
    let answers = join_all((0..20).map(|_| publish(&app, message.clone()))).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(list(body, "delivered_to"), vec![json!(lab)], "{body}");
    }
    assert_eq!(
        answers
            .iter()
            .filter(|(_, b)| b["duplicate"] == false)
            .count(),
        1
    );
    let (status, body) = app.post(&path, &json!({"type": "close"})).await;
    assert_eq!(status, 200, "{body}");
    // Twenty copies of one start: one instance, one 201, the same id for all.
    let request =
        json!({"workflow": "pinged", "input": {"guest": {"id": "g-21"}, "booking_id": "B-21"}});
    let answers = join_all((0..20).map(|_| {
        app.post_raw(
            "/api/v1/instances",
            &app.integration_key,
            request.to_string(),
            Some("same-start"),
        )
    }))
    .await;
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    let first = text(&answers[0].1, "id");
    for (status, body) in &answers {
        assert!(*status == 200 || *status == 201, "{body}");
        assert_eq!(text(body, "id"), first, "{body}");
    }
    let (_, page) = app.get("/api/v1/instances?workflow=pinged").await;
    assert_eq!(list(&page, "items").len(), 2, "{page}");
    send(&app, &first, &json!({"type": "close"})).await;
}
storage_test!(twenty_copies_of_one_request_get_one_answer);

async fn staff_keys_see_personal_data_masked_and_never_a_patients_link(app: TestApp) {
    deploy(&app, &workflow("registration_payment")).await;
    let instance = start(&app, &json!({
                "workflow": "registration_payment",
                "input": {
                    "patient": {"id": "p-priv", "name": "张三丰", "phone": "13800001234", "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "email": "zhang@example.com"},
                    "registration_id": "PRIV-1", "department": "心内科", "fee": "15.00"
                }
            })).await;
    app.advance(Duration::zero()).await;
    for key in [&app.viewer_key, &app.operator_key] {
        let (status, shown) = app
            .get_with(&format!("/api/v1/instances/{instance}"), key)
            .await;
        assert_eq!(status, 200, "{shown}");
        assert_eq!(
            at(&shown, "input.patient"),
            &json!({"id": "p-priv", "name": "张**", "phone": "138****1234", "openid": "[hidden]", "email": "z***@example.com", "time_zone": null})
        );
        let (_, page) = app
            .get_with("/api/v1/instances?workflow=registration_payment", key)
            .await;
        assert_eq!(text(&page, "items.0.input.patient.name"), "张**");
        assert_eq!(text(&page, "items.0.input.patient.phone"), "138****1234");
        let (_, history) = app
            .get_with(&format!("/api/v1/instances/{instance}/history"), key)
            .await;
        let raw = history.to_string();
        assert!(
            !raw.contains("张三丰") && !raw.contains("13800001234") && !raw.contains("oUpF8u"),
            "{history}"
        );
    }
    // The admin and the hospital's own system see them in full.
    for key in [&app.key, &app.integration_key] {
        let (_, shown) = app
            .get_with(&format!("/api/v1/instances/{instance}"), key)
            .await;
        assert_eq!(text(&shown, "input.patient.phone"), "13800001234");
    }
    // The inbox: not for viewers; staff see the message without its link;
    // only the system that delivers it to the patient sees the link.
    let (status, body) = app.get_with("/api/v1/inbox/p-priv", &app.viewer_key).await;
    assert_eq!(
        (status, text(&body, "error")),
        (403, "forbidden".to_owned()),
        "{body}"
    );
    for key in [&app.operator_key, &app.key] {
        let (status, inbox) = app.get_with("/api/v1/inbox/p-priv", key).await;
        assert_eq!(status, 200, "{inbox}");
        let body = text(&inbox, "messages.0.body");
        assert!(
            !body.contains("/p/pay/") && body.contains("[link withheld"),
            "{body}"
        );
    }
    let (_, link) = pay_message(&app, "p-priv").await;
    assert!(link.starts_with("/p/pay/"));
    // A viewer cannot decline the payment without the link: nothing reached it.
    assert_eq!(state_of(&app, &instance).await, "awaiting_payment");
}
storage_test!(staff_keys_see_personal_data_masked_and_never_a_patients_link);

async fn a_pay_link_works_as_soon_as_it_is_sent(app: TestApp) {
    deploy(&app, &workflow("registration_payment")).await;
    // Twenty patients register at the same moment; each link works at once.
    let requests: Vec<Value> = (0..20)
        .map(|i| crate::payments::registration(&format!("AT-{i}"), None))
        .collect();
    let starts = join_all(
        requests
            .iter()
            .map(|request| app.post("/api/v1/instances", request)),
    )
    .await;
    for (status, body) in &starts {
        assert_eq!(*status, 201, "{body}");
    }
    app.advance(Duration::zero()).await;
    for i in 0..20 {
        let (_, link) = pay_message(&app, &format!("p-AT-{i}")).await;
        let (status, view) = app.get(&format!("{link}/status")).await;
        assert_eq!(
            (status, text(&view, "state")),
            (200, "pending".to_owned()),
            "{view}"
        );
    }
    // A link opened before its order is even recorded: the page waits,
    // offers nothing that cannot work, and shows the order once it is open.
    let instance = start(&app, &crate::payments::registration("AT-early", None)).await;
    let (_, history) = app
        .get(&format!("/api/v1/instances/{instance}/history"))
        .await;
    let planned = list(&history, "entries")
        .into_iter()
        .find(|e| e["kind"] == "effect_planned" && e["detail"]["effect"] == "pay")
        .unwrap_or_else(|| panic!("no pay planned: {history}"));
    let no = text(&planned, "detail.payment");
    let link = app
        .runtime
        .pay_link(&no, app.runtime.now() + Duration::minutes(15))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("http://o2flow.test", "");
    let page = app
        .client
        .get(app.url(&link))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        html.contains("Preparing your payment") && !html.contains("<button"),
        "{html}"
    );
    let (status, view) = app.get(&format!("{link}/status")).await;
    assert_eq!(
        (status, text(&view, "state")),
        (200, "preparing".to_owned())
    );
    let (status, body) = app.post(&format!("{link}/sandbox/pay"), &json!({})).await;
    assert_eq!(
        (status, text(&body, "error")),
        (409, "not_payable".to_owned()),
        "{body}"
    );
    app.advance(Duration::zero()).await;
    let (status, view) = app.get(&format!("{link}/status")).await;
    assert_eq!(
        (status, text(&view, "state")),
        (200, "pending".to_owned()),
        "{view}"
    );
}
storage_test!(a_pay_link_works_as_soon_as_it_is_sent);

const DAILY: &str = r#"
name: daily_check
inputs:
  patient: party
start: watching
states:
  watching:
    on:
      stop: stopped
    timers:
      - every: "0 0 9 * * *"
        actions:
          - send: { to: patient, template: booking_cancelled }
  stopped: { final: completed }
"#;

async fn the_tenants_time_zone_is_the_default_everywhere(app: TestApp) {
    app.runtime
        .set_tenant_time_zone("acme", "Europe/Berlin")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A patient without a time zone is reminded at 10:00 in the tenant's
    // zone: 7 days after 2026-11-20 is 2026-11-27, 10:00 CET = 09:00 UTC.
    let (status, body) = app
        .post(
            "/api/v1/instances",
            &json!({"workflow": "follow_up_reminder", "input": {
                "patient": {"id": "p-berlin"}, "department": "心内科",
                "visit_ended_at": "2026-11-20T15:30:00+08:00"
            }}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, shown) = app
        .get(&format!("/api/v1/instances/{}", text(&body, "id")))
        .await;
    assert_eq!(
        text(&shown, "timers.0.due_at"),
        "2026-11-27T09:00:00.000Z",
        "{shown}"
    );
    // 02:30 on 2027-03-14 does not exist in New York: moved forward to 03:30 EDT.
    let (status, body) = app
        .post(
            "/api/v1/instances",
            &json!({"workflow": "follow_up_reminder", "input": {
                "patient": {"id": "p-ny", "time_zone": "America/New_York"}, "department": "心内科",
                "visit_ended_at": "2027-03-07T12:00:00-05:00", "remind_at": "02:30"
            }}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, shown) = app
        .get(&format!("/api/v1/instances/{}", text(&body, "id")))
        .await;
    assert_eq!(
        text(&shown, "timers.0.due_at"),
        "2027-03-14T07:30:00.000Z",
        "{shown}"
    );
    // A repeating timer without a zone runs in the tenant's: 09:00 CET.
    deploy(
        &app,
        &DAILY.replace("booking_cancelled", "follow_up_reminder"),
    )
    .await;
    let daily = start(
        &app,
        &json!({"workflow": "daily_check", "input": {"patient": {"id": "p-daily"}}}),
    )
    .await;
    let (_, shown) = app.get(&format!("/api/v1/instances/{daily}")).await;
    assert_eq!(
        text(&shown, "timers.0.due_at"),
        "2026-11-21T08:00:00.000Z",
        "{shown}"
    );
    send(&app, &daily, &json!({"type": "stop"})).await;
}
storage_test!(the_tenants_time_zone_is_the_default_everywhere);

const TYPED: &str = r#"
name: typed_charges
inputs:
  patient: party
data:
  total: { type: money, default: "0.00" }
  count: { type: integer, default: 0 }
  due: { type: datetime, optional: true }
start: open
states:
  open:
    on:
      charge.posted:
        actions: [ { set: { total: event.payload.amount } } ]
      count.set:
        actions: [ { set: { count: event.payload.n } } ]
      due.set:
        actions: [ { set: { due: event.payload.at } } ]
      close: closed
  closed: { final: completed }
"#;

async fn set_keeps_to_the_declared_types(app: TestApp) {
    deploy(&app, TYPED).await;
    let instance = start(
        &app,
        &json!({"workflow": "typed_charges", "input": {"patient": {"id": "p-typed"}}}),
    )
    .await;
    let events = format!("/api/v1/instances/{instance}/events");
    // Yuan text into money is held as fen.
    let (status, body) = app
        .post(
            &events,
            &json!({"type": "charge.posted", "payload": {"amount": "123.45"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(at(&body, "instance.data.total"), &json!(12345));
    // Values of the wrong type are refused and change nothing.
    for (event, payload) in [
        ("charge.posted", json!({"amount": "lots"})),
        ("count.set", json!({"n": "hello"})),
        ("due.set", json!({"at": "tomorrow"})),
    ] {
        let (status, body) = app
            .post(&events, &json!({"type": event, "payload": payload}))
            .await;
        assert_eq!(
            (status, text(&body, "error")),
            (422, "expression_failed".to_owned()),
            "{event}: {body}"
        );
    }
    let (_, shown) = app.get(&format!("/api/v1/instances/{instance}")).await;
    assert_eq!(
        at(&shown, "data"),
        &json!({"total": 12345, "count": 0, "due": null})
    );
    let (status, body) = app
        .post(
            &events,
            &json!({"type": "due.set", "payload": {"at": "2026-11-23T09:30:00+08:00"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        at(&body, "instance.data.due"),
        &json!("2026-11-23T01:30:00Z")
    );
    // Literals of the wrong type, and a bare number for money, are refused by validate.
    let (status, body) = app
        .deploy(
            &TYPED
                .replace("total: event.payload.amount", "total: 3000")
                .replace("count: event.payload.n", "count: \"'hello'\""),
        )
        .await;
    assert_eq!(
        (status, text(&body, "error")),
        (422, "invalid_workflow".to_owned()),
        "{body}"
    );
    let codes: Vec<String> = list(&body, "details.diagnostics")
        .iter()
        .map(|d| text(d, "code"))
        .collect();
    assert_eq!(
        codes,
        vec!["bare_number_for_money", "type_mismatch"],
        "{body}"
    );
    let (status, body) = app.post(&events, &json!({"type": "close"})).await;
    assert_eq!(status, 200, "{body}");
}
storage_test!(set_keeps_to_the_declared_types);

const LAB_READY: &str = r#"
name: lab_ready
inputs:
  patient: party
  test_name: string
start: ready
states:
  ready:
    enter:
      - send: { to: patient, template: lab_ready }
    on:
      seen: done
  done: { final: completed }
"#;

async fn a_workflow_is_deployed_with_its_templates_without_a_restart(app: TestApp) {
    // One request: the workflow and the template it sends.
    let bundle = |title: &str| {
        json!({
            "file": "lab_ready.yaml",
            "source": LAB_READY,
            "templates": {"lab_ready": {"title": title, "body": "{{ input.test_name }} 的结果已出 / {{ input.test_name }} results are ready"}}
        })
    };
    let (status, body) = app
        .post("/api/v1/workflows", &bundle("检验结果 / Lab results"))
        .await;
    assert_eq!(status, 201, "{body}");
    let instance = start(&app, &json!({"workflow": "lab_ready", "input": {"patient": {"id": "p-lab-ready"}, "test_name": "血常规"}})).await;
    app.advance(Duration::zero()).await;
    let (_, inbox) = app.get("/api/v1/inbox/p-lab-ready").await;
    assert_eq!(
        text(&inbox, "messages.0.title"),
        "检验结果 / Lab results",
        "{inbox}"
    );
    assert!(
        text(&inbox, "messages.0.body").starts_with("血常规 的结果已出"),
        "{inbox}"
    );
    send(&app, &instance, &json!({"type": "seen"})).await;
    // A template that does not compile: nothing is stored, neither the
    // template nor the workflow.
    let broken = json!({"source": LAB_READY.replace("lab_ready", "lab_broken"), "templates": {"lab_broken": {"title": "{% if %}", "body": "x"}}});
    let (status, body) = app.post("/api/v1/workflows", &broken).await;
    assert_eq!(
        (status, text(&body, "error")),
        (422, "invalid_template".to_owned()),
        "{body}"
    );
    let (status, _) = app.get("/api/v1/workflows/lab_broken").await;
    assert_eq!(status, 404);
    // A workflow naming a template nobody sent is refused as before.
    let missing =
        json!({"source": LAB_READY.replace("template: lab_ready", "template: lab_missing")});
    let (status, body) = app.post("/api/v1/workflows", &missing).await;
    assert_eq!(
        (status, text(&body, "error")),
        (422, "invalid_workflow".to_owned()),
        "{body}"
    );

    // Template files added while `serve` runs are read on the next deploy.
    let dir = std::env::temp_dir().join(format!(
        "o2flow-templates-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    for entry in std::fs::read_dir("templates")
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let to = dir.join(entry.file_name());
        std::fs::create_dir_all(&to).unwrap_or_else(|e| panic!("{e}"));
        for file in ["title.txt.tera", "body.txt.tera"] {
            std::fs::copy(entry.path().join(file), to.join(file)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let mut command = crate::helpers::serve_command(&app.database_url);
    command
        .args(["--templates"])
        .arg(&dir)
        .args(["--workflows", "workflows"]);
    let (mut child, address, _) = crate::helpers::spawn_serve(command);
    std::fs::create_dir_all(dir.join("ward_round")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("ward_round/title.txt.tera"), "查房 / Ward round")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("ward_round/body.txt.tera"),
        "{{ input.test_name }}",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let response = app
        .client
        .post(format!("{address}/api/v1/workflows?file=ward_round.yaml"))
        .bearer_auth(&app.key)
        .body(LAB_READY.replace("lab_ready", "ward_round"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = crate::helpers::read(response).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status, 201, "{body}");
}
storage_test!(a_workflow_is_deployed_with_its_templates_without_a_restart);
