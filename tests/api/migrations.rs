//! Moving running instances to a new version: dry run, refusal of unmapped
//! states with nothing changed, then the move with timers and history.

use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::{list, text, TestApp};
use crate::storage_test;

/// Version 2 renames `reminding` to `reminded`, waits 21 days instead of 14,
/// and adds a data field.
fn version_two() -> String {
    std::fs::read_to_string("workflows/follow_up_reminder.yaml")
        .unwrap_or_default()
        .replace("  reminding:\n", "  reminded:\n")
        .replace("goto: reminding", "goto: reminded")
        .replace("after: 14d", "after: 21d")
        .replace(
            "  reminders_sent: { type: integer, default: 0 }",
            "  reminders_sent: { type: integer, default: 0 }\n  channel_used: { type: string, default: inbox }",
        )
}

async fn migrate(app: &TestApp, body: Value) -> (u16, Value) {
    app.post("/api/v1/workflows/follow_up_reminder/migrations", &body)
        .await
}

async fn running_instances_move_to_a_new_version_only_when_every_state_is_mapped(app: TestApp) {
    let waiting = app.start_follow_up("p-m1", None).await;
    let reminding = app.start_follow_up("p-m2", None).await;
    let done = app.start_follow_up("p-m3", None).await;
    let done_id = text(&done, "id");
    app.post(
        &format!("/api/v1/instances/{done_id}/events"),
        &json!({"type": "registration.booked"}),
    )
    .await;
    // p-m2's instance reaches `reminding`; start p-m1 later so it is still waiting.
    app.advance(Duration::days(7)).await;
    let waiting_id = text(&waiting, "id").to_owned();
    let reminding_id = text(&reminding, "id").to_owned();
    app.post(
        &format!("/api/v1/instances/{waiting_id}/events"),
        &json!({"type": "consent.withdrawn"}),
    )
    .await;
    let late = app.start_follow_up("p-m4", None).await;
    let late_id = text(&late, "id").to_owned();

    let response = app
        .client
        .post(app.url("/api/v1/workflows"))
        .bearer_auth(&app.key)
        .body(version_two())
        .send()
        .await;
    let (status, _) = crate::helpers::read(response.unwrap_or_else(|e| panic!("{e}"))).await;
    assert_eq!(status, 201);

    // Dry run without a mapping: `reminding` has no counterpart.
    let (status, report) = migrate(
        &app,
        json!({"from_version": 1, "to_version": 2, "dry_run": true}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], false);
    let plans = list(&report, "instances");
    assert_eq!(
        plans.len(),
        2,
        "only active instances of version 1: {report}"
    );
    let plan_of = |id: &str| {
        plans
            .iter()
            .find(|p| p["instance_id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    assert!(plan_of(&reminding_id)["problem"]
        .as_str()
        .is_some_and(|p| p.contains("reminding")));
    assert_eq!(plan_of(&late_id)["to_state"], "waiting");
    assert_eq!(plan_of(&late_id)["data_added"], json!(["channel_used"]));

    // Applying it is refused and changes nothing.
    let (status, error) = migrate(&app, json!({"from_version": 1, "to_version": 2})).await;
    assert_eq!(
        (status, error["error"].clone()),
        (422, json!("unmapped_states"))
    );
    let (_, unchanged) = app.get(&format!("/api/v1/instances/{late_id}")).await;
    assert_eq!(unchanged["version"], 1);

    // A mapping to a state that does not exist, or the same version: refused.
    let (status, error) = migrate(
        &app,
        json!({"from_version": 1, "to_version": 2, "states": {"reminding": "nowhere"}}),
    )
    .await;
    assert_eq!(
        (status, error["error"].clone()),
        (422, json!("invalid_migration"))
    );
    let (status, error) = migrate(&app, json!({"from_version": 2, "to_version": 2})).await;
    assert_eq!(
        (status, error["error"].clone()),
        (422, json!("invalid_migration"))
    );
    let (status, error) = migrate(&app, json!({"from_version": 1, "to_version": 9})).await;
    assert_eq!(
        (status, error["error"].clone()),
        (404, json!("version_not_found"))
    );

    // With the mapping it applies, keeping the armed timer's due time.
    let (_, before) = app.get(&format!("/api/v1/instances/{reminding_id}")).await;
    let (status, report) = migrate(
        &app,
        json!({"from_version": 1, "to_version": 2, "states": {"reminding": "reminded"}}),
    )
    .await;
    assert_eq!(
        (status, report["applied"].clone()),
        (200, json!(true)),
        "{report}"
    );
    let (_, moved) = app.get(&format!("/api/v1/instances/{reminding_id}")).await;
    assert_eq!(
        (moved["version"].clone(), moved["state"].clone()),
        (json!(2), json!("reminded"))
    );
    assert_eq!(
        moved["data"],
        json!({"reminders_sent": 1, "channel_used": "inbox"})
    );
    assert_eq!(moved["timers"], before["timers"]);
    let (_, history) = app
        .get(&format!("/api/v1/instances/{reminding_id}/history"))
        .await;
    let last = list(&history, "entries")
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no history: {history}"));
    assert_eq!(last["kind"], "migrated");
    assert_eq!(last["detail"]["to_state"], "reminded");

    // The moved instances run on version 2: the booking completes the flow.
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{reminding_id}/events"),
            &json!({"type": "registration.booked"}),
        )
        .await;
    assert_eq!(
        (status, body["instance"]["state"].clone()),
        (200, json!("rebooked"))
    );
    // The late instance, now on version 2, reaches `reminded` and expires after 21 days.
    app.advance(Duration::days(7)).await;
    let (_, late_now) = app.get(&format!("/api/v1/instances/{late_id}")).await;
    assert_eq!(
        (late_now["version"].clone(), late_now["state"].clone()),
        (json!(2), json!("reminded"))
    );
    app.advance(Duration::days(20)).await;
    let (_, late_now) = app.get(&format!("/api/v1/instances/{late_id}")).await;
    assert_eq!(late_now["status"], "active");
    app.advance(Duration::days(1)).await;
    let (_, late_now) = app.get(&format!("/api/v1/instances/{late_id}")).await;
    assert_eq!(late_now["status"], "expired");
    // Final instances stay on the version they ended on.
    let (_, finished) = app.get(&format!("/api/v1/instances/{done_id}")).await;
    assert_eq!(finished["version"], 1);
}
storage_test!(running_instances_move_to_a_new_version_only_when_every_state_is_mapped);
