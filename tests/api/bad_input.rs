//! Bad input gets a stable error code and a 4xx, and changes nothing.

use serde_json::json;

use crate::helpers::{text, TestApp};
use crate::storage_test;

async fn bad_requests_get_clear_errors_and_change_nothing(app: TestApp) {
    let started = app.start_follow_up("p-1", None).await;
    let id = text(&started, "id").to_owned();
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("malformed JSON", "/api/v1/instances", "{\"workflow\": ".into(), 400, "malformed_json"),
        ("unknown field", "/api/v1/instances", json!({"workflow": "follow_up_reminder", "colour": 1}).to_string(), 400, "malformed_json"),
        ("unknown workflow", "/api/v1/instances", json!({"workflow": "no_such_flow", "input": {}}).to_string(), 422, "unknown_workflow"),
        ("invalid input", "/api/v1/instances", json!({"workflow": "follow_up_reminder", "input": {"patient": {"id": "p"}, "visit_ended_at": "soon"}}).to_string(), 422, "invalid_input"),
        ("unhandled event", &format!("/api/v1/instances/{id}/events"), json!({"type": "lab.result"}).to_string(), 409, "event_not_handled"),
        ("event without type", &format!("/api/v1/instances/{id}/events"), json!({"payload": {}}).to_string(), 400, "malformed_json"),
        ("event on unknown instance", "/api/v1/instances/nope/events", json!({"type": "x"}).to_string(), 404, "instance_not_found"),
    ]
    .into_iter()
    .map(|(what, path, body, status, code)| (what, path.to_owned().leak() as &str, body, status, code))
    .collect();
    for (what, path, body, status, code) in cases {
        let (got, error) = app.post_raw(path, &app.key, body, None).await;
        assert_eq!(
            (got, error["error"].as_str()),
            (status, Some(code)),
            "{what}: {error}"
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    let (_, problems) = app.post_raw("/api/v1/instances", &app.key, json!({"workflow": "follow_up_reminder", "input": {"patient": {"id": "p"}, "visit_ended_at": "soon"}}).to_string(), None).await;
    let fields: Vec<&str> = problems["details"]["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["department", "visit_ended_at"]);

    // The instance did not move, and nothing else was created.
    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(
        (instance["state"].clone(), instance["updated_at"].clone()),
        (json!("waiting"), started["updated_at"].clone())
    );
    let (_, list) = app.get("/api/v1/instances").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let (_, history) = app.get(&format!("/api/v1/instances/{id}/history")).await;
    assert_eq!(history["entries"].as_array().map(Vec::len), Some(3));
}
storage_test!(bad_requests_get_clear_errors_and_change_nothing);

async fn keys_are_checked_and_tenants_are_kept_apart(app: TestApp) {
    let started = app.start_follow_up("p-2", None).await;
    let id = text(&started, "id");
    let response = app
        .client
        .get(app.url("/api/v1/instances"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = crate::helpers::read(response).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("missing_api_key"))
    );
    let (status, body) = app.get_with("/api/v1/instances", "o2f_wrong").await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("invalid_api_key"))
    );
    // Another tenant's instance is not found, not forbidden.
    let (status, body) = app
        .get_with(&format!("/api/v1/instances/{id}"), &app.other_key)
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("instance_not_found"))
    );
    let (status, _) = app
        .post_raw(
            &format!("/api/v1/instances/{id}/cancel"),
            &app.other_key,
            String::new(),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, theirs) = app.get_with("/api/v1/inbox/p-2", &app.other_key).await;
    assert_eq!(theirs["messages"], json!([]));
    // A viewer reads but does not write.
    let (status, _) = app
        .get_with(&format!("/api/v1/instances/{id}"), &app.viewer_key)
        .await;
    assert_eq!(status, 200);
    let (status, body) = app
        .post_raw(
            &format!("/api/v1/instances/{id}/cancel"),
            &app.viewer_key,
            String::new(),
            None,
        )
        .await;
    assert_eq!((status, body["error"].clone()), (403, json!("forbidden")));
    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(instance["status"], "active");
}
storage_test!(keys_are_checked_and_tenants_are_kept_apart);

async fn an_invalid_workflow_is_refused_with_every_diagnostic(app: TestApp) {
    let source = "name: broken\nstart: waiting\nstates:\n  waiting:\n    on:\n      x: nowhere\n    timers:\n      - after: 7days\n        goto: done\n  done: { final: completed }\n  orphan: { final: expired }\n";
    let response = app
        .client
        .post(app.url("/api/v1/workflows?file=broken.yaml"))
        .bearer_auth(&app.key)
        .body(source)
        .send()
        .await;
    let (status, body) = crate::helpers::read(response.unwrap_or_else(|e| panic!("{e}"))).await;
    assert_eq!(
        (status, body["error"].clone()),
        (422, json!("invalid_workflow"))
    );
    let codes: Vec<&str> = body["details"]["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["code"].as_str())
        .collect();
    assert_eq!(
        codes,
        vec!["unknown_state", "bad_duration", "unreachable_state"]
    );
    assert_eq!(body["details"]["diagnostics"][0]["file"], "broken.yaml");
    assert_eq!(body["details"]["diagnostics"][0]["line"], 6);
    assert_eq!(body["details"]["diagnostics"][0]["column"], 10);
    let (_, list) = app.get("/api/v1/workflows").await;
    assert_eq!(list["workflows"].as_array().map(Vec::len), Some(1));
    // Only admins deploy.
    let response = app
        .client
        .post(app.url("/api/v1/workflows"))
        .bearer_auth(&app.viewer_key)
        .body("name: x")
        .send()
        .await;
    let (status, _) = crate::helpers::read(response.unwrap_or_else(|e| panic!("{e}"))).await;
    assert_eq!(status, 403);
}
storage_test!(an_invalid_workflow_is_refused_with_every_diagnostic);

#[tokio::test]
async fn unknown_routes_and_health_answer_json() {
    let app = TestApp::spawn(crate::helpers::Db::Sqlite).await;
    let (status, body) = app.get("/api/v1/nope").await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("route_not_found"))
    );
    let (status, body) = app.get("/healthz").await;
    assert_eq!((status, body["status"].clone()), (200, json!("ok")));
    let (status, body) = app.get("/api/v1/workflows/nope").await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("workflow_not_found"))
    );
    let (status, body) = app.get("/api/v1/instances?limit=0").await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_query"))
    );
    app.cleanup().await;
}
