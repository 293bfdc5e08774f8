//! Child flows: a `start` action starts another workflow once, and the
//! parent receives `child.completed` with the child's outcome. Both databases.

use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::{text, TestApp};
use crate::storage_test;

const PARENT: &str = r#"
name: visit_close
title: 就诊结束 / Visit close
inputs:
  patient: party
  department: string
start: closing
states:
  closing:
    enter:
      - start:
          workflow: follow_up_reminder
          input:
            patient: patient
            department: department
            visit_ended_at: now
            remind_after_days: "1"
    on:
      child.completed:
        - when: event.payload.outcome == "completed"
          goto: revisited
        - goto: lost
  revisited: { final: completed }
  lost: { final: expired }
"#;

async fn start_parent(app: &TestApp, patient: &str) -> (String, Value) {
    let (status, body) = app.deploy(PARENT).await;
    assert!(status == 201 || status == 200, "{body}");
    let (status, parent) = app
        .post("/api/v1/instances", &json!({"workflow": "visit_close", "input": {"patient": {"id": patient}, "department": "心内科"}}))
        .await;
    assert_eq!(status, 201, "{parent}");
    app.advance(Duration::zero()).await;
    let parent_id = text(&parent, "id").to_owned();
    let (_, children) = app
        .get("/api/v1/instances?workflow=follow_up_reminder")
        .await;
    let children: Vec<Value> = children["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["parent_id"] == parent_id.as_str())
        .cloned()
        .collect();
    assert_eq!(children.len(), 1, "exactly one child");
    (parent_id, children[0].clone())
}

async fn a_parent_starts_one_child_and_hears_when_it_completes(app: TestApp) {
    let (parent_id, child) = start_parent(&app, "p-c1").await;
    assert_eq!(child["input"]["department"], "心内科");
    assert_eq!(child["input"]["visit_ended_at"], "2026-11-20T08:00:00Z");
    assert_eq!(child["branch"], "main");

    // Settling again starts nothing more.
    app.advance(Duration::minutes(1)).await;
    let (_, all) = app
        .get("/api/v1/instances?workflow=follow_up_reminder")
        .await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(1));

    let child_id = text(&child, "id");
    let (status, _) = app
        .post(
            &format!("/api/v1/instances/{child_id}/events"),
            &json!({"type": "registration.booked"}),
        )
        .await;
    assert_eq!(status, 200);
    app.advance(Duration::zero()).await;
    let (_, parent) = app.get(&format!("/api/v1/instances/{parent_id}")).await;
    assert_eq!(
        (parent["state"].clone(), parent["status"].clone()),
        (json!("revisited"), json!("completed"))
    );
    let (_, history) = app
        .get(&format!("/api/v1/instances/{parent_id}/history"))
        .await;
    let event = history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["kind"] == "event")
        .cloned()
        .unwrap_or_default();
    assert_eq!(event["detail"]["type"], "child.completed");
    assert_eq!(event["detail"]["payload"]["child_id"], child_id);
    assert_eq!(event["detail"]["payload"]["outcome"], "completed");
}
storage_test!(a_parent_starts_one_child_and_hears_when_it_completes);

async fn a_child_that_expires_moves_the_parent_on_the_other_branch(app: TestApp) {
    let (parent_id, _) = start_parent(&app, "p-c2").await;
    app.advance(Duration::days(2)).await;
    app.advance(Duration::days(14)).await;
    let (_, parent) = app.get(&format!("/api/v1/instances/{parent_id}")).await;
    assert_eq!(
        (parent["state"].clone(), parent["status"].clone()),
        (json!("lost"), json!("expired"))
    );
}
storage_test!(a_child_that_expires_moves_the_parent_on_the_other_branch);
