//! Effects that fail for good: `action.failed` when the flow handles it, an
//! incident otherwise, retried through the API after the cause is fixed.

use o2flow::runtime::StartRequest;
use o2flow::store::Store;
use o2flow::templates::Templates;
use serde_json::json;

use crate::helpers::{int, list, runtime_with, text, TestApp};
use crate::storage_test;

const UNHANDLED: &str = r#"
name: notice
inputs:
  patient: party
start: notifying
states:
  notifying:
    enter:
      - send: { to: patient, template: notice, retry: { max_attempts: 2, initial: 1m } }
    on:
      acknowledged: done
  done: { final: completed }
"#;

const HANDLED: &str = r#"
name: notice_with_fallback
inputs:
  patient: party
start: notifying
states:
  notifying:
    enter:
      - send: { to: patient, template: notice }
    on:
      acknowledged: done
      action.failed: undeliverable
  done: { final: completed }
  undeliverable: { final: failed }
"#;

/// A second runtime on the app's database whose `notice` template has `body`.
async fn runtime_with_notice(
    app: &TestApp,
    body: &str,
) -> std::sync::Arc<o2flow::runtime::Runtime> {
    let templates = Templates::from_strings(&[("notice", "通知 / Notice", body)])
        .unwrap_or_else(|e| panic!("{e}"));
    let store = Store::connect(&app.database_url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    runtime_with(store, app.clock.clone(), templates)
}

async fn start(runtime: &o2flow::runtime::Runtime, workflow: &str, patient: &str) -> String {
    let (row, _) = runtime
        .start(
            "acme",
            StartRequest {
                workflow: workflow.into(),
                input: json!({"patient": {"id": patient}}),
                branch: None,
                business_key: None,
                idempotency: None,
                parent_id: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    row.id
}

async fn a_failed_send_opens_an_incident_that_is_retried_once_the_cause_is_fixed(app: TestApp) {
    // A template that cannot render: a permanent failure, not retried.
    let broken = runtime_with_notice(&app, "hello {{ missing_variable }}").await;
    broken
        .deploy("acme", "notice.yaml", UNHANDLED)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let id = start(&broken, "notice", "p-9").await;
    broken.settle().await.unwrap_or_else(|e| panic!("{e}"));

    let (status, body) = app.get("/api/v1/incidents").await;
    assert_eq!(status, 200);
    let incidents = list(&body, "incidents");
    assert_eq!(incidents.len(), 1, "{body}");
    assert_eq!(incidents[0]["instance_id"], id.as_str());
    assert_eq!(incidents[0]["status"], "open");
    assert!(text(&incidents[0], "error").contains("missing_variable"));
    let incident = int(&incidents[0], "id");
    let (_, history) = app.get(&format!("/api/v1/instances/{id}/history")).await;
    let kinds: Vec<&str> = history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "effect_failed").count(),
        1,
        "a permanent failure is not retried: {kinds:?}"
    );
    assert!(kinds.contains(&"incident_opened"));

    // Another tenant and a viewer cannot touch it.
    let (status, _) = app
        .post_raw(
            &format!("/api/v1/incidents/{incident}/retry"),
            &app.other_key,
            String::new(),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .post_raw(
            &format!("/api/v1/incidents/{incident}/retry"),
            &app.viewer_key,
            String::new(),
            None,
        )
        .await;
    assert_eq!(status, 403);

    // The template is fixed (a new deployment of o2flow), then the incident is retried.
    let fixed = runtime_with_notice(&app, "hello {{ party.id }}").await;
    let (status, body) = app
        .post_raw(
            &format!("/api/v1/incidents/{incident}/retry"),
            &app.key,
            String::new(),
            None,
        )
        .await;
    assert_eq!(
        (status, body["status"].clone()),
        (200, json!("retried")),
        "{body}"
    );
    fixed.settle().await.unwrap_or_else(|e| panic!("{e}"));
    let (_, inbox) = app.get("/api/v1/inbox/p-9").await;
    assert_eq!(inbox["messages"][0]["body"], "hello p-9");
    let (_, open) = app.get("/api/v1/incidents").await;
    assert_eq!(open["incidents"], json!([]));

    let (status, body) = app
        .post_raw(
            &format!("/api/v1/incidents/{incident}/retry"),
            &app.key,
            String::new(),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (409, json!("incident_not_open"))
    );
    let (status, body) = app
        .post_raw(
            "/api/v1/incidents/999999/retry",
            &app.key,
            String::new(),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("incident_not_found"))
    );
    let (status, body) = app.get("/api/v1/incidents?status=whatever").await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_query"))
    );
    broken.store().close().await;
    fixed.store().close().await;
}
storage_test!(a_failed_send_opens_an_incident_that_is_retried_once_the_cause_is_fixed);

async fn a_flow_that_handles_action_failed_moves_on_without_an_incident(app: TestApp) {
    let broken = runtime_with_notice(&app, "hello {{ missing_variable }}").await;
    broken
        .deploy("acme", "notice_with_fallback.yaml", HANDLED)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let id = start(&broken, "notice_with_fallback", "p-10").await;
    broken.settle().await.unwrap_or_else(|e| panic!("{e}"));
    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(
        (instance["state"].clone(), instance["status"].clone()),
        (json!("undeliverable"), json!("failed"))
    );
    let (_, all) = app.get("/api/v1/incidents?status=all").await;
    assert_eq!(all["incidents"], json!([]));
    broken.store().close().await;
}
storage_test!(a_flow_that_handles_action_failed_moves_on_without_an_incident);
