//! Cancel is an event like any other: a state that handles `cancel` decides
//! (here: refund first, or refuse once the guest is in); elsewhere the
//! state's `on_cancel` actions run once and the instance ends cancelled.
//! Through HTTP, on both databases.

use serde_json::json;

use crate::helpers::{list, text, TestApp};
use crate::storage_test;

const STAY: &str = r#"
name: hotel_stay
title: 入住 / Hotel stay
inputs:
  guest: party
  booking_id: string
data:
  checked_in: { type: boolean, default: false }
correlation: booking_id
start: booked
states:
  booked:
    on:
      checked_in:
        actions: [ { set: { checked_in: true } } ]
      cancel:
        when: "!data.checked_in"
        goto: refunding
      checked_out: stayed
  refunding:
    on:
      refund_confirmed: cancelled
    on_cancel:
      - send: { to: guest, template: booking_cancelled }
  cancelled: { final: cancelled }
  stayed: { final: completed }
"#;

async fn book(app: &TestApp, booking: &str) -> String {
    let (status, body) = app.deploy(STAY).await;
    assert!(status == 201 || status == 200, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/instances",
            &json!({"workflow": "hotel_stay", "input": {"guest": {"id": "g1"}, "booking_id": booking}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    text(&body, "id").to_owned()
}

async fn history_kinds(app: &TestApp, id: &str) -> Vec<String> {
    let (_, history) = app.get(&format!("/api/v1/instances/{id}/history")).await;
    list(&history, "entries")
        .iter()
        .map(|h| text(h, "kind"))
        .collect()
}

async fn a_handled_cancel_goes_through_the_flows_refund_state(app: TestApp) {
    let id = book(&app, "B-1").await;
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{id}/cancel"),
            &json!({"reason": "plans changed"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["instance"]["state"].clone(),
            body["instance"]["status"].clone()
        ),
        (json!("refunding"), json!("active"))
    );

    // The refund completes through a correlated event; the stay ends cancelled.
    let (status, body) = app
        .post("/api/v1/events", &json!({"type": "refund_confirmed", "correlation_key": "B-1", "message_id": "r-1", "payload": {}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, stay) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(
        (stay["state"].clone(), stay["status"].clone()),
        (json!("cancelled"), json!("cancelled"))
    );
    let kinds = history_kinds(&app, &id).await;
    assert!(!kinds.contains(&"cancel_requested".to_owned()), "{kinds:?}");
}
storage_test!(a_handled_cancel_goes_through_the_flows_refund_state);

async fn a_cancel_guard_refuses_and_changes_nothing(app: TestApp) {
    let id = book(&app, "B-2").await;
    let (status, _) = app
        .post(
            &format!("/api/v1/instances/{id}/events"),
            &json!({"type": "checked_in"}),
        )
        .await;
    assert_eq!(status, 200);
    let before = history_kinds(&app, &id).await;
    let (status, body) = app
        .post(&format!("/api/v1/instances/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "guard_rejected");
    let (_, stay) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(
        (stay["state"].clone(), stay["status"].clone()),
        (json!("booked"), json!("active"))
    );
    assert_eq!(history_kinds(&app, &id).await, before);
}
storage_test!(a_cancel_guard_refuses_and_changes_nothing);

async fn a_correlated_cancel_runs_on_cancel_once_where_the_state_does_not_handle_it(app: TestApp) {
    let id = book(&app, "B-3").await;
    let (status, _) = app
        .post(&format!("/api/v1/instances/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    // In `refunding` a cancel from the hotel system takes the default path.
    let cancel = json!({"type": "cancel", "correlation_key": "B-3", "message_id": "c-1", "payload": {"reason": "no refund needed"}});
    let (status, body) = app.post("/api/v1/events", &cancel).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["delivered_to"], json!([id]));
    let (status, body) = app.post("/api/v1/events", &cancel).await;
    assert_eq!((status, body["duplicate"].clone()), (200, json!(true)));
    app.advance(chrono::Duration::zero()).await;
    let (_, stay) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(
        (stay["state"].clone(), stay["status"].clone()),
        (json!("refunding"), json!("cancelled"))
    );
    let (_, inbox) = app.get("/api/v1/inbox/g1").await;
    let messages = list(&inbox, "messages");
    assert_eq!(messages.len(), 1, "{inbox}");
    assert!(
        text(&messages[0], "body").contains("B-3 已取消（no refund needed）"),
        "{inbox}"
    );
}
storage_test!(a_correlated_cancel_runs_on_cancel_once_where_the_state_does_not_handle_it);
