//! Several o2flow processes on one database share the work: no timer fires
//! twice and no outbox row runs twice.

use chrono::Duration;
use serde_json::Value;

use crate::helpers::{list, runtime_on, text, TestApp};
use crate::storage_test;

async fn count_history(app: &TestApp, id: &str, kind: &str) -> usize {
    let (_, history) = app.get(&format!("/api/v1/instances/{id}/history")).await;
    history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == kind)
        .count()
}

async fn two_runtimes_on_one_database_never_do_the_same_work_twice(app: TestApp) {
    let mut ids = Vec::new();
    for i in 0..40 {
        let started = app.start_follow_up(&format!("p-{i}"), None).await;
        ids.push(text(&started, "id").to_owned());
    }
    let store = o2flow::store::Store::connect(&app.database_url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let second = runtime_on(store, app.clock.clone());

    app.clock.advance(Duration::days(7));
    let (first_result, second_result) = tokio::join!(app.runtime.settle(), second.settle());
    first_result.unwrap_or_else(|e| panic!("{e}"));
    second_result.unwrap_or_else(|e| panic!("{e}"));

    for (i, id) in ids.iter().enumerate() {
        let (_, inbox) = app.get(&format!("/api/v1/inbox/p-{i}")).await;
        assert_eq!(inbox["messages"].as_array().map(Vec::len), Some(1), "p-{i}");
        assert_eq!(count_history(&app, id, "timer_fired").await, 1, "{id}");
        assert_eq!(count_history(&app, id, "effect_done").await, 1, "{id}");
    }

    app.clock.advance(Duration::days(14));
    let (first_result, second_result) = tokio::join!(app.runtime.settle(), second.settle());
    first_result.unwrap_or_else(|e| panic!("{e}"));
    second_result.unwrap_or_else(|e| panic!("{e}"));
    let (_, expired) = app.get("/api/v1/instances?status=expired&limit=100").await;
    assert_eq!(expired["items"].as_array().map(Vec::len), Some(ids.len()));
    let fired: Vec<Value> = list(&expired, "items");
    assert!(fired.iter().all(|i| i["state"] == "expired"));
    second.store().close().await;
}
storage_test!(two_runtimes_on_one_database_never_do_the_same_work_twice);
