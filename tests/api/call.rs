//! `call`: a flow reaches the hospital's own system (a stand-in HIS here)
//! through a named endpoint, with a signed body and the effect key as
//! `Idempotency-Key`, and named fields of the answer land in `data`.

use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::{at, list, text, TestApp};
use crate::storage_test;

const SLOT_HOLD: &str = r#"
name: slot_hold
inputs:
  patient: party
  slot_id: string
data:
  hold_id: { type: string, default: "" }
  invoice_no: { type: string, default: "" }
start: holding
states:
  holding:
    enter:
      - call:
          endpoint: his
          path: /slots/hold
          body: { patient_id: patient.id, slot: slot_id }
          result: { hold_id: hold.id, invoice_no: invoice }
          retry: { max_attempts: 3, initial: 10s }
    on:
      call.succeeded: held
      action.failed: failed
  held: { final: completed }
  failed: { final: failed }
"#;

/// One request the stand-in received: its headers of interest and raw body.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    idempotency_key: String,
    signature: String,
    body: Vec<u8>,
}

/// A stand-in HIS: answers 503 to the first request, then a slot hold.
struct StandIn {
    address: String,
    received: Arc<Mutex<Vec<Received>>>,
    handle: actix_web::dev::ServerHandle,
}

async fn stand_in() -> StandIn {
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let state = web::Data::new(received.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let address = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let server = HttpServer::new(move || {
        App::new().app_data(state.clone()).default_service(web::to(
            |request: HttpRequest,
             body: web::Bytes,
             seen: web::Data<Arc<Mutex<Vec<Received>>>>| async move {
                let header = |name: &str| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let mut seen = seen.lock().unwrap_or_else(|e| panic!("{e}"));
                seen.push(Received {
                    path: request.path().to_owned(),
                    idempotency_key: header("idempotency-key"),
                    signature: header("x-o2flow-signature"),
                    body: body.to_vec(),
                });
                if seen.len() == 1 {
                    HttpResponse::ServiceUnavailable().finish()
                } else {
                    HttpResponse::Ok()
                        .json(json!({"hold": {"id": "H-42", "expires": "10m"}, "invoice": "INV-7"}))
                }
            },
        ))
    })
    .workers(1)
    .listen(listener)
    .unwrap_or_else(|e| panic!("{e}"))
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    StandIn {
        address,
        received,
        handle,
    }
}

fn o2flow(args: &[&str], database_url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_o2flow"))
        .args(args)
        .args(["--database-url", database_url])
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Sets endpoint `name` of tenant acme through the CLI, its secret in a
/// new file; returns the file and its `file:` reference.
fn set_endpoint(
    app: &TestApp,
    name: &str,
    url: &str,
    secret: &str,
) -> (std::path::PathBuf, String) {
    let secret_file = std::env::temp_dir().join(format!(
        "o2flow-{name}-{}.secret",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&secret_file, secret).unwrap_or_else(|e| panic!("{e}"));
    let reference = format!("file:{}", secret_file.display());
    let set = o2flow(
        &[
            "endpoints",
            "set",
            name,
            url,
            "--tenant",
            "acme",
            "--secret",
            &reference,
        ],
        &app.database_url,
    );
    assert!(set.status.success(), "{set:?}");
    (secret_file, reference)
}

async fn a_call_reaches_the_hospital_system_and_its_answer_lands_in_data(app: TestApp) {
    let his = stand_in().await;
    let (secret_file, _) = set_endpoint(&app, "his", &his.address, "his-signing-secret\n");

    let (status, body) = app.deploy(SLOT_HOLD).await;
    assert_eq!(status, 201, "{body}");
    let (status, started) = app
        .post(
            "/api/v1/instances",
            &json!({"workflow": "slot_hold", "input": {"patient": {"id": "p-call"}, "slot_id": "S-0930"}}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let id = text(&started, "id");
    // The answer o2flow alone gives cannot be faked from outside.
    let (status, refused) = app
        .post(
            &format!("/api/v1/instances/{id}/events"),
            &json!({"type": "call.succeeded", "payload": {"fields": {"hold_id": "FAKE"}}}),
        )
        .await;
    assert_eq!(
        (status, text(&refused, "error")),
        (403, "reserved_event".to_owned())
    );

    // The first attempt meets a 503; the retry 10 s later is answered.
    app.advance(Duration::zero()).await;
    let (_, shown) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(text(&shown, "state"), "holding", "{shown}");
    app.advance(Duration::seconds(10)).await;
    let (_, shown) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(text(&shown, "state"), "held", "{shown}");
    assert_eq!(at(&shown, "data.hold_id"), &json!("H-42"), "{shown}");
    assert_eq!(at(&shown, "data.invoice_no"), &json!("INV-7"), "{shown}");

    let received = his.received.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(received.len(), 2, "{received:?}");
    for request in &received {
        assert_eq!(request.path, "/slots/hold");
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        assert_eq!(body, json!({"patient_id": "p-call", "slot": "S-0930"}));
        assert_eq!(
            request.signature,
            o2flow::channels::webhook::signature("his-signing-secret", &request.body),
            "the body is signed with the endpoint's secret"
        );
    }
    assert!(!received[0].idempotency_key.is_empty());
    assert_eq!(
        received[0].idempotency_key, received[1].idempotency_key,
        "a retried call carries the same Idempotency-Key"
    );
    let (_, history) = app.get(&format!("/api/v1/instances/{id}/history")).await;
    assert!(
        list(&history, "entries")
            .iter()
            .any(|e| text(e, "kind") == "event" && at(e, "detail.type") == &json!("call.succeeded")),
        "{history}"
    );

    // An endpoint nobody configured fails the action for good: the flow
    // takes `action.failed`.
    let (status, body) = app
        .deploy(
            &SLOT_HOLD
                .replace("slot_hold", "slot_hold_pms")
                .replace("endpoint: his", "endpoint: pms"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, started) = app
        .post(
            "/api/v1/instances",
            &json!({"workflow": "slot_hold_pms", "input": {"patient": {"id": "p-call"}, "slot_id": "S-1"}}),
        )
        .await;
    app.advance(Duration::zero()).await;
    let (_, shown) = app
        .get(&format!("/api/v1/instances/{}", text(&started, "id")))
        .await;
    assert_eq!(text(&shown, "state"), "failed", "{shown}");
    his.handle.stop(false).await;
    let _ = std::fs::remove_file(&secret_file);
}
storage_test!(a_call_reaches_the_hospital_system_and_its_answer_lands_in_data);

async fn endpoints_are_refused_when_not_a_url_or_given_a_secret_by_value(app: TestApp) {
    let not_url = o2flow(
        &["endpoints", "set", "his", "ftp://x", "--tenant", "acme"],
        &app.database_url,
    );
    assert_eq!(not_url.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_url.stderr).contains("not an http:// or https:// URL"));
    let literal = o2flow(
        &[
            "endpoints",
            "set",
            "his",
            "https://his.example",
            "--tenant",
            "acme",
            "--secret",
            "hunter2-literal",
        ],
        &app.database_url,
    );
    assert_eq!(literal.status.code(), Some(1));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&literal.stdout),
        String::from_utf8_lossy(&literal.stderr)
    );
    assert!(said.contains("`file:/path` or `env:NAME`"), "{said}");
    assert!(
        !said.contains("hunter2"),
        "a secret is never echoed: {said}"
    );
    let listed = o2flow(
        &["endpoints", "list", "--tenant", "acme"],
        &app.database_url,
    );
    assert!(listed.status.success());
    assert!(listed.stdout.is_empty(), "nothing was stored: {listed:?}");
}
storage_test!(endpoints_are_refused_when_not_a_url_or_given_a_secret_by_value);

const TELL_HIS: &str = r#"
name: tell_his
inputs:
  patient: party
  booking_id: { type: string, default: "B-1" }
start: telling
states:
  telling:
    enter:
      - send: { to: patient, template: booking_cancelled, channels: [webhook] }
    on:
      done: finished
  finished: { final: completed }
"#;

/// The webhook channel is an endpoint like any other: the tenant's own
/// `webhook` endpoint, signed with its secret, retried with the same key.
async fn the_webhook_channel_posts_to_the_tenants_webhook_endpoint(app: TestApp) {
    let his = stand_in().await;
    let set = o2flow(
        &[
            "endpoints",
            "set",
            "webhook",
            &format!("{}/messages", his.address),
            "--tenant",
            "acme",
            "--secret",
            "env:O2FLOW_TEST_WEBHOOK_SECRET",
        ],
        &app.database_url,
    );
    // The reference must resolve where it is set; the value stays out of the database.
    assert_eq!(set.status.code(), Some(1), "{set:?}");
    let (secret_file, reference) = set_endpoint(
        &app,
        "webhook",
        &format!("{}/messages", his.address),
        "webhook-secret",
    );
    let listed = o2flow(
        &["endpoints", "list", "--tenant", "acme"],
        &app.database_url,
    );
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains(&format!("secret={reference}")), "{listed}");
    assert!(!listed.contains("webhook-secret\n"), "{listed}");

    let (status, body) = app.deploy(TELL_HIS).await;
    assert_eq!(status, 201, "{body}");
    let (status, started) = app
        .post(
            "/api/v1/instances",
            &json!({"workflow": "tell_his", "input": {"patient": {"id": "p-hook", "name": "张三"}}}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    app.advance(Duration::zero()).await;
    app.advance(Duration::seconds(2)).await;
    let received = his.received.lock().map(|r| r.clone()).unwrap_or_default();
    let (_, seen) = app
        .get(&format!(
            "/api/v1/instances/{}/history",
            text(&started, "id")
        ))
        .await;
    assert_eq!(
        received.len(),
        2,
        "a 503, then delivered: {received:?} {seen}"
    );
    assert_eq!(received[0].idempotency_key, received[1].idempotency_key);
    let last = &received[1];
    assert_eq!(last.path, "/messages");
    assert_eq!(
        last.signature,
        o2flow::channels::webhook::signature("webhook-secret", &last.body)
    );
    let body: Value = serde_json::from_slice(&last.body).unwrap_or_default();
    assert_eq!(at(&body, "to"), &json!("p-hook"));
    assert_eq!(at(&body, "template"), &json!("booking_cancelled"));
    assert!(text(&body, "body").contains("B-1"), "{body}");
    let (_, history) = app
        .get(&format!(
            "/api/v1/instances/{}/history",
            text(&started, "id")
        ))
        .await;
    assert!(
        list(&history, "entries")
            .iter()
            .any(|e| text(e, "kind") == "effect_done"
                && at(e, "detail.channel") == &json!("webhook")),
        "{history}"
    );
    his.handle.stop(false).await;
    let _ = std::fs::remove_file(&secret_file);
}
storage_test!(the_webhook_channel_posts_to_the_tenants_webhook_endpoint);
