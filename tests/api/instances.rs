//! Listing, pagination, cancel, workflows and graphs, on both databases.

use chrono::Duration;
use serde_json::json;

use crate::helpers::{list, text, Db, TestApp};
use crate::storage_test;

async fn instances_are_listed_by_filter_a_page_at_a_time(app: TestApp) {
    for i in 0..5 {
        app.start_follow_up(&format!("p-{i}"), Some(&format!("visit-{i}")))
            .await;
    }
    let (_, page) = app
        .get("/api/v1/instances?workflow=follow_up_reminder&limit=2")
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let mut seen = 2;
    let mut after = page["next_after"].as_str().map(str::to_owned);
    while let Some(cursor) = after {
        let (_, page) = app
            .get(&format!(
                "/api/v1/instances?workflow=follow_up_reminder&limit=2&after={cursor}"
            ))
            .await;
        seen += list(&page, "items").len();
        after = page["next_after"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, 5);
    let (_, one) = app.get("/api/v1/instances?business_key=visit-3").await;
    assert_eq!(one["items"][0]["input"]["patient"]["id"], "p-3");
    let (_, none) = app.get("/api/v1/instances?state=reminding").await;
    assert_eq!(none["items"], json!([]));
    // Another tenant sees none of them.
    let (_, theirs) = app.get_with("/api/v1/instances", &app.other_key).await;
    assert_eq!(theirs["items"], json!([]));
}
storage_test!(instances_are_listed_by_filter_a_page_at_a_time);

async fn cancel_ends_the_instance_and_its_timers_never_fire(app: TestApp) {
    let started = app.start_follow_up("p-500", None).await;
    let id = text(&started, "id");
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{id}/cancel"),
            &json!({"reason": "visit voided"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instance"]["status"], "cancelled");
    app.advance(Duration::days(30)).await;
    let (_, inbox) = app.get("/api/v1/inbox/p-500").await;
    assert_eq!(inbox["messages"], json!([]));
    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(instance["timers"], json!([]));
}
storage_test!(cancel_ends_the_instance_and_its_timers_never_fire);

async fn workflows_deploy_once_per_content_and_new_content_is_a_new_version(app: TestApp) {
    let source = std::fs::read_to_string("workflows/follow_up_reminder.yaml").unwrap_or_default();
    let response = app
        .client
        .post(app.url("/api/v1/workflows"))
        .bearer_auth(&app.key)
        .body(source.clone())
        .send()
        .await;
    let (status, body) = crate::helpers::read(response.unwrap_or_else(|e| panic!("{e}"))).await;
    assert_eq!((status, body["version"].clone()), (200, json!(1)));

    // A running instance stays pinned to the version it started on.
    let started = app.start_follow_up("p-600", None).await;
    let changed = source.replace("after: 14d", "after: 21d");
    let response = app
        .client
        .post(app.url("/api/v1/workflows"))
        .bearer_auth(&app.key)
        .body(changed)
        .send()
        .await;
    let (status, body) = crate::helpers::read(response.unwrap_or_else(|e| panic!("{e}"))).await;
    assert_eq!(
        (status, body["name"].clone(), body["version"].clone()),
        (201, json!("follow_up_reminder"), json!(2))
    );
    assert_eq!(body["hash"].as_str().map(str::len), Some(64));
    let (_, old) = app
        .get(&format!("/api/v1/instances/{}", text(&started, "id")))
        .await;
    assert_eq!(old["version"], 1);
    let newer = app.start_follow_up("p-601", None).await;
    assert_eq!(newer["version"], 2);

    let (_, list) = app.get("/api/v1/workflows").await;
    assert_eq!(list["workflows"][0]["latest_version"], 2);
    let (_, detail) = app
        .get("/api/v1/workflows/follow_up_reminder?version=1")
        .await;
    assert_eq!(detail["source"].as_str(), Some(source.as_str()));
    let graph = app
        .client
        .get(app.url("/api/v1/workflows/follow_up_reminder/graph"))
        .bearer_auth(&app.key)
        .send()
        .await;
    let text = graph
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        text.starts_with("stateDiagram-v2\n    [*] --> waiting\n"),
        "{text}"
    );
    assert!(text.contains("reminding --> expired: after 21d"), "{text}");
}
storage_test!(workflows_deploy_once_per_content_and_new_content_is_a_new_version);

async fn instances_belong_to_a_branch(app: TestApp) {
    let mut request = crate::helpers::follow_up_request("p-700", None);
    request["branch"] = json!("east");
    let (status, body) = app.post("/api/v1/instances", &request).await;
    assert_eq!((status, body["branch"].clone()), (201, json!("east")));
    let started = app.start_follow_up("p-701", None).await;
    assert_eq!(started["branch"], "main");
    request["branch"] = json!("west");
    let (status, body) = app.post("/api/v1/instances", &request).await;
    assert_eq!(
        (status, body["error"].clone()),
        (422, json!("unknown_branch"))
    );
}
storage_test!(instances_belong_to_a_branch);

/// SQLite runs in WAL mode with every commit durable (`synchronous =
/// FULL`): what o2flow answered, a payment callback's 204 above all,
/// survives a power cut.
async fn sqlite_runs_in_wal_mode_with_durable_commits(app: TestApp) {
    let store = app.runtime.store();
    let mode = store.journal_mode().await.unwrap_or_else(|e| panic!("{e}"));
    let synchronous = store.synchronous().await.unwrap_or_else(|e| panic!("{e}"));
    match app.db {
        Db::Sqlite => assert_eq!((mode.as_deref(), synchronous), (Some("wal"), Some(2))),
        Db::Postgres => assert_eq!((mode, synchronous), (None, None)),
    }
}
storage_test!(sqlite_runs_in_wal_mode_with_durable_commits);

/// A stored instance whose data is not JSON is an error, never read as
/// `null` and stepped on: the event is refused and nothing changes.
async fn a_corrupt_instance_row_is_an_error_not_a_default(app: TestApp) {
    let started = app.start_follow_up("p-corrupt", None).await;
    let id = text(&started, "id");
    app.sql(&format!(
        "UPDATE instances SET data = 'not json' WHERE id = '{id}'"
    ))
    .await;
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{id}/events"),
            &json!({"type": "registration.booked", "payload": {}}),
        )
        .await;
    assert_eq!(
        (status, text(&body, "error")),
        (500, "internal_error".to_owned()),
        "{body}"
    );
    let (_, history) = app.get(&format!("/api/v1/instances/{id}/history")).await;
    assert!(
        !list(&history, "entries")
            .iter()
            .any(|e| text(e, "kind") == "event"),
        "nothing was applied: {history}"
    );
}
storage_test!(a_corrupt_instance_row_is_an_error_not_a_default);

/// `?wait=final`: the answer comes when the instance ends (woken by the
/// commit that ends it), or as it is when the timeout runs out; a bad
/// query is 400 and an instance of another tenant is 404.
async fn a_caller_can_wait_for_an_instance_to_end(app: TestApp) {
    let started = app.start_follow_up("p-wait", None).await;
    let id = text(&started, "id").to_owned();

    // Nothing ends it: the answer comes at the timeout, still active.
    let (status, body) = app
        .get(&format!("/api/v1/instances/{id}?wait=final&timeout=1s"))
        .await;
    assert_eq!(
        (status, text(&body, "status")),
        (200, "active".to_owned()),
        "{body}"
    );

    // The weakest key may wait too; the event that ends it comes while it waits.
    let waiting = {
        let client = app.client.clone();
        let url = app.url(&format!("/api/v1/instances/{id}?wait=final&timeout=60s"));
        let key = app.viewer_key.clone();
        tokio::spawn(async move {
            crate::helpers::read(
                client
                    .get(url)
                    .bearer_auth(key)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            )
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{id}/events"),
            &json!({"type": "registration.booked", "payload": {}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = waiting.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (status, text(&body, "status"), text(&body, "state")),
        (200, "completed".to_owned(), "rebooked".to_owned()),
        "{body}"
    );
    // Already ended: answered at once.
    let (status, body) = app.get(&format!("/api/v1/instances/{id}?wait=final")).await;
    assert_eq!(
        (status, text(&body, "status")),
        (200, "completed".to_owned()),
        "{body}"
    );

    for query in [
        "wait=done",
        "timeout=5s",
        "wait=final&timeout=5m",
        "wait=final&timeout=soon",
    ] {
        let (status, body) = app.get(&format!("/api/v1/instances/{id}?{query}")).await;
        assert_eq!(
            (status, text(&body, "error")),
            (400, "invalid_query".to_owned()),
            "{query}: {body}"
        );
    }
    let (status, body) = app
        .get_with(
            &format!("/api/v1/instances/{id}?wait=final&timeout=1s"),
            &app.other_key,
        )
        .await;
    assert_eq!(
        (status, text(&body, "error")),
        (404, "instance_not_found".to_owned()),
        "{body}"
    );
}
storage_test!(a_caller_can_wait_for_an_instance_to_end);

/// An effect's result (here a delivered message) is appended to the
/// history numbered after what is there, without bumping the instance's
/// revision: a transition that read the instance before it still commits
/// instead of conflicting (`instance_busy` under load).
async fn an_effect_result_does_not_change_the_revision_transitions_check(app: TestApp) {
    let started = app.start_follow_up("p-rev", None).await;
    let id = text(&started, "id").to_owned();
    let store = app.runtime.store();
    // The reminder is due: its timer fires, and the message waits in the outbox.
    app.clock.advance(chrono::Duration::days(8));
    app.runtime
        .fire_due_timers()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tenant = "acme";
    let before = store
        .instance(tenant, &id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no instance"));
    assert_eq!(before.state, "reminding");
    let rows = store
        .claim_outbox(app.runtime.now(), chrono::Duration::minutes(1), 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let row = rows
        .iter()
        .find(|r| r.instance_id == id)
        .unwrap_or_else(|| panic!("no outbox row for {id}"));
    store
        .outbox_done(row, &json!({"effect": "send"}), app.runtime.now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let after = store
        .instance(tenant, &id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no instance"));
    assert_eq!(
        after.revision, before.revision,
        "an effect result is not a transition"
    );
    assert_eq!(after.history_len, before.history_len + 1);

    // The event commits on the first try, and the history stays numbered 0, 1, 2, …
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{id}/events"),
            &json!({"type": "registration.booked", "payload": {}}),
        )
        .await;
    assert_eq!(
        (status, text(&body, "instance.state")),
        (200, "rebooked".to_owned()),
        "{body}"
    );
    let (_, history) = app.get(&format!("/api/v1/instances/{id}/history")).await;
    let seqs: Vec<i64> = list(&history, "entries")
        .iter()
        .map(|e| crate::helpers::int(e, "seq"))
        .collect();
    let expected: Vec<i64> = (0..i64::try_from(seqs.len()).unwrap_or(0)).collect();
    assert_eq!(seqs, expected, "{history}");
    assert!(
        list(&history, "entries")
            .iter()
            .any(|e| text(e, "kind") == "effect_done"),
        "{history}"
    );
}
storage_test!(an_effect_result_does_not_change_the_revision_transitions_check);
