//! The follow-up reminder end to end through HTTP, on both databases.

use chrono::Duration;
use serde_json::json;

use crate::helpers::{follow_up_request, list, runtime_on, text, TestApp};
use crate::storage_test;

async fn reminder_is_sent_after_seven_days_and_rebooking_completes_the_flow(app: TestApp) {
    let started = app.start_follow_up("p-100", Some("visit-100")).await;
    let id = text(&started, "id").to_owned();
    assert_eq!(started["state"], "waiting");
    assert_eq!(started["version"], 1);

    // The timer is armed for 7 days after the visit, at 10:00 Shanghai time.
    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(instance["timers"][0]["due_at"], "2026-11-27T02:00:00.000Z");

    // One minute early: nothing yet.
    app.advance(Duration::days(6) + Duration::hours(17) + Duration::minutes(59))
        .await;
    let (_, inbox) = app.get("/api/v1/inbox/p-100").await;
    assert_eq!(inbox["messages"].as_array().map(Vec::len), Some(0));

    app.advance(Duration::minutes(1)).await;
    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(instance["state"], "reminding");
    assert_eq!(instance["data"]["reminders_sent"], 1);
    // The hospital's system relays the message to the patient: its key sees the link.
    let (_, inbox) = app
        .get_with("/api/v1/inbox/p-100", &app.integration_key)
        .await;
    let messages = list(&inbox, "messages");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["title"], "复诊提醒：心内科");
    assert!(text(&messages[0], "body").contains(&format!("http://o2flow.test/book?department=%E5%BF%83%E5%86%85%E7%A7%91&doctor=%E6%9D%8E%E6%98%8E&from={id}")));

    // Settling again delivers nothing twice.
    app.advance(Duration::hours(1)).await;
    let (_, inbox) = app.get("/api/v1/inbox/p-100").await;
    assert_eq!(inbox["messages"].as_array().map(Vec::len), Some(1));

    // The patient books the revisit.
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{id}/events"),
            &json!({"type": "registration.booked", "payload": {"registration": "R-1"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], true);
    assert_eq!(body["instance"]["state"], "rebooked");
    assert_eq!(body["instance"]["status"], "completed");
    assert!(body["instance"]["ended_at"].is_string());

    // A late duplicate is absorbed and recorded.
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{id}/events"),
            &json!({"type": "registration.booked"}),
        )
        .await;
    assert_eq!((status, body["applied"].clone()), (200, json!(false)));

    // The expiry timer died with the state: nothing fires a month later.
    app.advance(Duration::days(30)).await;
    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(instance["status"], "completed");
    assert_eq!(instance["timers"], json!([]));

    let (_, history) = app.get(&format!("/api/v1/instances/{id}/history")).await;
    let kinds: Vec<&str> = history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "started",
            "entered",
            "timer_set",
            "timer_fired",
            "transition",
            "entered",
            "effect_planned",
            "data_set",
            "timer_set",
            "effect_done",
            "event",
            "transition",
            "entered",
            "finished",
            "event_ignored"
        ]
    );
    let seqs: Vec<i64> = history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    assert_eq!(seqs, (0..15).collect::<Vec<i64>>());
}
storage_test!(reminder_is_sent_after_seven_days_and_rebooking_completes_the_flow);

async fn without_a_booking_the_flow_expires_two_weeks_after_the_reminder(app: TestApp) {
    let started = app.start_follow_up("p-200", None).await;
    let id = text(&started, "id").to_owned();
    app.advance(Duration::days(7)).await;
    app.advance(Duration::days(14)).await;
    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(
        (instance["state"].clone(), instance["status"].clone()),
        (json!("expired"), json!("expired"))
    );
    let (_, inbox) = app.get("/api/v1/inbox/p-200").await;
    assert_eq!(inbox["messages"].as_array().map(Vec::len), Some(1));
}
storage_test!(without_a_booking_the_flow_expires_two_weeks_after_the_reminder);

async fn pending_timers_and_unsent_outbox_rows_carry_on_after_a_restart(app: TestApp) {
    let a = app.start_follow_up("p-300", None).await;
    let b = app.start_follow_up("p-301", None).await;
    // Fire the first instance's timer without draining the outbox: the
    // send is committed but not delivered when the process "dies".
    app.clock.advance(Duration::days(7));
    app.runtime
        .fire_due_timers()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        app.runtime.store().outbox_count("pending").await.ok(),
        Some(2)
    );

    // A new runtime on the same database, as after a restart.
    let store = o2flow::store::Store::connect(&app.database_url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let restarted = runtime_on(store, app.clock.clone());
    restarted.settle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        restarted.store().outbox_count("pending").await.ok(),
        Some(0)
    );
    for (party, instance) in [("p-300", &a), ("p-301", &b)] {
        let (_, inbox) = app.get(&format!("/api/v1/inbox/{party}")).await;
        assert_eq!(
            inbox["messages"].as_array().map(Vec::len),
            Some(1),
            "{party}"
        );
        let (_, row) = app
            .get(&format!("/api/v1/instances/{}", text(instance, "id")))
            .await;
        assert_eq!(row["state"], "reminding");
    }
    // And the restarted runtime goes on firing the next timers.
    app.clock.advance(Duration::days(14));
    restarted.settle().await.unwrap_or_else(|e| panic!("{e}"));
    let (_, row) = app
        .get(&format!("/api/v1/instances/{}", text(&a, "id")))
        .await;
    assert_eq!(row["status"], "expired");
    restarted.store().close().await;
}
storage_test!(pending_timers_and_unsent_outbox_rows_carry_on_after_a_restart);

async fn the_same_idempotency_key_returns_the_same_instance_and_another_body_conflicts(
    app: TestApp,
) {
    let body = follow_up_request("p-400", Some("visit-400")).to_string();
    let (first, created) = app
        .post_raw(
            "/api/v1/instances",
            &app.key,
            body.clone(),
            Some("start-400"),
        )
        .await;
    assert_eq!(first, 201, "{created}");
    let (again, replayed) = app
        .post_raw("/api/v1/instances", &app.key, body, Some("start-400"))
        .await;
    assert_eq!(again, 200);
    assert_eq!(replayed["id"], created["id"]);
    let other = follow_up_request("p-401", Some("visit-401")).to_string();
    let (conflict, error) = app
        .post_raw("/api/v1/instances", &app.key, other, Some("start-400"))
        .await;
    assert_eq!(
        (conflict, error["error"].clone()),
        (409, json!("idempotency_key_reused"))
    );
    let (_, list) = app
        .get("/api/v1/instances?workflow=follow_up_reminder")
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));

    // Events honour the key too.
    let id = text(&created, "id");
    let event = json!({"type": "consent.withdrawn"}).to_string();
    let (s1, b1) = app
        .post_raw(
            &format!("/api/v1/instances/{id}/events"),
            &app.key,
            event.clone(),
            Some("ev-1"),
        )
        .await;
    let (s2, b2) = app
        .post_raw(
            &format!("/api/v1/instances/{id}/events"),
            &app.key,
            event,
            Some("ev-1"),
        )
        .await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(
        (b1["applied"].clone(), b2["applied"].clone()),
        (json!(true), json!(true))
    );
    let (_, history) = app.get(&format!("/api/v1/instances/{id}/history")).await;
    let events = history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "event")
        .count();
    assert_eq!(events, 1);
}
storage_test!(the_same_idempotency_key_returns_the_same_instance_and_another_body_conflicts);
