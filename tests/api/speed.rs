//! The fast path holds its promises: writes committed together in one
//! group commit fail or succeed alone, events racing for one instance all
//! apply once with no `instance_busy`, `/metrics` counts what happened and
//! opens only to this machine or its token, and the benchmark harness runs
//! end to end with nothing lost or sent twice. Figures are in
//! docs/PERFORMANCE.md, never asserted here.

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{at, int, list, read, text, TestApp};
use crate::storage_test;

const COUNTER: &str = r#"
name: bedside_counter
title: 床旁计数 / Bedside counter
inputs:
  patient: party
data:
  readings: { type: integer, default: 0 }
start: counting
states:
  counting:
    on:
      reading.taken:
        actions: [ { set: { readings: data.readings + 1 } } ]
      discharged: done
  done: { final: completed }
"#;

/// Starts `workflow` for patient `patient`; returns the instance id.
async fn start_for(app: &TestApp, workflow: &str, patient: &str) -> String {
    let (status, body) = app
        .post(
            "/api/v1/instances",
            &json!({"workflow": workflow, "input": {"patient": {"id": patient}}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    text(&body, "id")
}

async fn start_counter(app: &TestApp, patient: &str) -> String {
    start_for(app, "bedside_counter", patient).await
}

/// Sends an event without payload to instance `id`; it must be answered 200.
async fn send_event(app: &TestApp, id: &str, event_type: &str) {
    let (status, body) = app
        .post(
            &format!("/api/v1/instances/{id}/events"),
            &json!({"type": event_type}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Deploys `source` with the `bedside_notice` template its sends use.
async fn deploy_with_notice(app: &TestApp, source: &str) {
    let (status, body) = app
        .post(
            "/api/v1/workflows",
            &json!({
                "source": source,
                "templates": {"bedside_notice": {"title": "通知", "body": "hello {{ party.id }}"}},
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Twenty events for one instance and twenty starts of others, all at
/// once: they meet in the same group commits. Every event applies exactly
/// once (the count is 20, the history holds 20 of them numbered without a
/// gap), none is refused as busy, and every start stands.
async fn events_racing_for_one_instance_all_apply_once(app: TestApp) {
    assert_eq!(app.deploy(COUNTER).await.0, 201);
    let id = start_counter(&app, "bed-1").await;
    let events = (0..20).map(|n| {
        let app = app.clone();
        let id = id.clone();
        async move {
            app.post(
                &format!("/api/v1/instances/{id}/events"),
                &json!({"type": "reading.taken", "payload": {"n": n}}),
            )
            .await
        }
    });
    let starts = (0..20).map(|n| {
        let app = app.clone();
        async move { start_counter(&app, &format!("bed-{}", n + 2)).await }
    });
    let (answers, started) = futures::join!(join_all(events), join_all(starts));
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(at(body, "applied"), true, "{body}");
    }
    assert_eq!(started.len(), 20);
    for other in &started {
        let (status, body) = app.get(&format!("/api/v1/instances/{other}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(int(&body, "data.readings"), 0);
    }
    let (_, instance) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(int(&instance, "data.readings"), 20, "{instance}");
    let (_, history) = app
        .get(&format!("/api/v1/instances/{id}/history?limit=1000"))
        .await;
    let entries = list(&history, "entries");
    for (n, entry) in entries.iter().enumerate() {
        assert_eq!(
            int(entry, "seq"),
            i64::try_from(n).unwrap_or(-1),
            "{history}"
        );
    }
    let readings = entries
        .iter()
        .filter(|e| text(e, "kind") == "event" && text(e, "detail.type") == "reading.taken")
        .count();
    assert_eq!(readings, 20, "{history}");
    send_event(&app, &id, "discharged").await;
}
storage_test!(events_racing_for_one_instance_all_apply_once);

/// The same start 20 times at once under one Idempotency-Key, beside 20
/// different starts: one instance for the repeated key, and the others'
/// writes unharmed by it.
async fn a_repeated_start_in_a_busy_group_commit_makes_one_instance(app: TestApp) {
    assert_eq!(app.deploy(COUNTER).await.0, 201);
    let request = |patient: String, key: String| {
        let app = app.clone();
        async move {
            let response = app
                .client
                .post(app.url("/api/v1/instances"))
                .bearer_auth(&app.key)
                .header("Idempotency-Key", key)
                .json(
                    &json!({"workflow": "bedside_counter", "input": {"patient": {"id": patient}}}),
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            read(response).await
        }
    };
    let same = (0..20).map(|_| request("bed-same".into(), "one-key".into()));
    let different = (0..20).map(|n| request(format!("bed-{n}"), format!("key-{n}")));
    let (same, different) = futures::join!(join_all(same), join_all(different));
    let ids: std::collections::BTreeSet<String> =
        same.iter().map(|(_, body)| text(body, "id")).collect();
    assert_eq!(ids.len(), 1, "{same:?}");
    assert!(same
        .iter()
        .all(|(status, _)| *status == 200 || *status == 201));
    assert_eq!(same.iter().filter(|(status, _)| *status == 201).count(), 1);
    for (status, body) in &different {
        assert_eq!(*status, 201, "{body}");
    }
    let (_, page) = app
        .get("/api/v1/instances?workflow=bedside_counter&limit=100")
        .await;
    assert_eq!(list(&page, "items").len(), 21, "{page}");
}
storage_test!(a_repeated_start_in_a_busy_group_commit_makes_one_instance);

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
}

/// `/metrics` counts starts, ends and transitions by workflow, effects by
/// kind and channel, timer lag and the backlog; it names no tenant and no
/// person, and answers a caller on this machine without any key.
async fn metrics_count_what_happened_without_naming_anyone(app: TestApp) {
    let started = app
        .start_follow_up("patient-metrics-13800138000", None)
        .await;
    let id = text(&started, "id");
    // The reminder is due in days: the clock moves there, the timer fires
    // and the message is delivered.
    app.advance(chrono::Duration::days(8)).await;
    send_event(&app, &id, "registration.booked").await;
    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status().as_u16(), 200);
    let body = response.text().await.unwrap_or_else(|e| panic!("{e}"));
    let workflow = "workflow=\"follow_up_reminder\"";
    assert_eq!(
        metric(
            &body,
            &format!("o2flow_instances_started_total{{{workflow}}}")
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            &format!("o2flow_instances_finished_total{{{workflow},outcome=\"completed\"}}")
        ),
        Some(1.0),
        "{body}"
    );
    // Start, timer, event.
    assert_eq!(
        metric(&body, &format!("o2flow_transitions_total{{{workflow}}}")),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "o2flow_timer_lag_seconds_count"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "o2flow_effect_latency_seconds_count{kind=\"send\",channel=\"inbox\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(metric(&body, "o2flow_outbox_due"), Some(0.0), "{body}");
    assert_eq!(metric(&body, "o2flow_timers_pending"), Some(0.0), "{body}");
    for private in ["acme", "patient-metrics", "13800138000", &id] {
        assert!(!body.contains(private), "{private} in {body}");
    }
}
storage_test!(metrics_count_what_happened_without_naming_anyone);

/// With `O2FLOW_METRICS_TOKEN` set, `/metrics` asks for it: no token, a
/// wrong one or an admin API key get 401.
#[test]
fn metrics_ask_for_their_token_when_one_is_set() {
    let database = crate::helpers::TempSqlite::new("metrics");
    let mut command = crate::helpers::serve_command(&database.url);
    command.env("O2FLOW_METRICS_TOKEN", "scrape-secret");
    let (mut child, address, key) = crate::helpers::spawn_serve(command);
    let key = key.unwrap_or_else(|| panic!("no key printed"));
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let answers = runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut answers = Vec::new();
        for bearer in [
            None,
            Some("wrong"),
            Some(key.as_str()),
            Some("scrape-secret"),
        ] {
            let mut request = client.get(format!("{address}/metrics"));
            if let Some(bearer) = bearer {
                request = request.bearer_auth(bearer);
            }
            let response = request.send().await.unwrap_or_else(|e| panic!("{e}"));
            let status = response.status().as_u16();
            answers.push((
                status,
                response.text().await.unwrap_or_else(|e| panic!("{e}")),
            ));
        }
        answers
    });
    let _ = child.kill();
    let _ = child.wait();
    for (status, body) in &answers[..3] {
        assert_eq!(*status, 401, "{body}");
        let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(at(&body, "error"), "invalid_metrics_token");
    }
    assert_eq!(answers[3].0, 200, "{}", answers[3].1);
    assert!(answers[3].1.contains("o2flow_outbox_pending"));
}

/// `o2flow bench` runs end to end on both databases in a short form: every
/// flow completes, no message arrives twice, and it writes its JSON and
/// plots.
#[test]
fn the_benchmark_harness_runs_end_to_end() {
    let out = std::env::temp_dir().join(format!("o2flow-bench-{}", uuid::Uuid::new_v4().simple()));
    let database = format!("o2flow_bench_test_{}", uuid::Uuid::new_v4().simple());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_o2flow"))
        .args([
            "bench",
            "--clients",
            "2",
            "--in-flight",
            "4",
            "--step",
            "3s",
        ])
        .arg("--postgres")
        .arg(crate::helpers::postgres_admin_url())
        .arg("--postgres-database")
        .arg(&database)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("bench.json")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let databases = list(&report, "databases");
    assert_eq!(databases.len(), 2, "{report}");
    for database in &databases {
        for step in list(database, "latency")
            .iter()
            .chain(list(database, "saturation").iter())
        {
            assert!(int(step, "flows") > 0, "{step}");
            assert_eq!(int(step, "errors.timed_out"), 0, "{step}");
            assert_eq!(int(step, "errors.refused"), 0, "{step}");
            assert_eq!(int(step, "duplicate_messages"), 0, "{step}");
        }
        let ceiling = at(database, "ceiling.inserts_per_s")
            .as_f64()
            .unwrap_or_else(|| panic!("ceiling.inserts_per_s is not a number in {database}"));
        assert!(ceiling > 0.0, "{database}");
    }
    for plot in ["throughput.svg", "latency.svg"] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap_or_else(|e| panic!("{e}"));
        assert!(svg.starts_with("<svg"), "{plot}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

const NOTICE: &str = r#"
name: bedside_notice
title: 床旁通知 / Bedside notice
inputs:
  patient: party
start: noticed
states:
  noticed:
    enter:
      - send: { to: patient, template: bedside_notice, channels: [inbox] }
    on:
      discharged: done
  done: { final: completed }
"#;

/// A process restarted under its node's name takes back the work its dead
/// predecessor had claimed, at once: not another node's, and not after
/// the lease. A running process renews the leases of work it still runs,
/// and only those.
async fn a_restarted_node_takes_back_its_predecessors_claims_at_once(app: TestApp) {
    deploy_with_notice(&app, NOTICE).await;
    start_for(&app, "bedside_notice", "bed-7").await;
    let store = app.runtime.store();
    let now = app.runtime.now();
    // The dead process of node-a had claimed the message for an hour.
    let dead = store.claiming_as("node-a");
    let claimed = dead
        .claim_outbox(now, chrono::Duration::hours(1), 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claimed.len(), 1);
    app.runtime.settle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.outbox_count("pending").await.ok(),
        Some(1),
        "held by the claim"
    );

    // While it lived, its lease was renewed (the message still runs).
    let renewed = dead
        .renew_claims(
            now + chrono::Duration::minutes(30),
            chrono::Duration::hours(1),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(renewed, 1);

    // Another node does not take node-a's work.
    let other = store.claiming_as("node-b");
    assert_eq!(other.take_back_claims().await.ok(), Some(0));
    // node-a, restarted, does.
    let restarted = store.claiming_as("node-a");
    assert_eq!(restarted.take_back_claims().await.ok(), Some(1));
    app.runtime.settle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.outbox_count("pending").await.ok(), Some(0));
    let (_, inbox) = app.get("/api/v1/inbox/bed-7").await;
    assert_eq!(list(&inbox, "messages").len(), 1, "{inbox}");
    // Done work is not renewed.
    assert_eq!(
        dead.renew_claims(now, chrono::Duration::hours(1))
            .await
            .ok(),
        Some(0)
    );
}
storage_test!(a_restarted_node_takes_back_its_predecessors_claims_at_once);

/// Past `--max-in-flight` write requests, o2flow sheds load: 503
/// `overloaded` with `Retry-After`, nothing changed; the same requests sent
/// again (same Idempotency-Key) all succeed, once each.
#[test]
fn past_capacity_writes_are_shed_with_retry_after_and_nothing_is_lost() {
    let database = crate::helpers::TempSqlite::new("shed");
    let mut command = crate::helpers::serve_command(&database.url);
    command.args(["--max-in-flight", "1"]);
    let (mut child, address, key) = crate::helpers::spawn_serve(command);
    let key = key.unwrap_or_else(|| panic!("no key printed"));
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let (first, retried, listed) = runtime.block_on(async {
        let client = reqwest::Client::new();
        let start = |n: usize| {
            let (client, address, key) = (client.clone(), address.clone(), key.clone());
            async move {
                let response = client
                    .post(format!("{address}/api/v1/instances"))
                    .bearer_auth(&key)
                    .header("Idempotency-Key", format!("shed-{n}"))
                    .json(&crate::helpers::follow_up_request(&format!("p-{n}"), None))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let retry_after = response
                    .headers()
                    .get("Retry-After")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let (status, body) = read(response).await;
                (n, status, retry_after, body)
            }
        };
        let first = join_all((0..40).map(start)).await;
        let shed: Vec<usize> = first
            .iter()
            .filter(|(_, status, _, _)| *status == 503)
            .map(|(n, ..)| *n)
            .collect();
        let mut retried = Vec::new();
        for n in shed {
            retried.push(start(n).await);
        }
        let response = client
            .get(format!(
                "{address}/api/v1/instances?workflow=follow_up_reminder&limit=100"
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (first, retried, read(response).await.1)
    });
    let _ = child.kill();
    let _ = child.wait();
    let shed: Vec<_> = first
        .iter()
        .filter(|(_, status, ..)| *status == 503)
        .collect();
    assert!(
        !shed.is_empty(),
        "40 starts at once past a limit of 1: none shed"
    );
    for (_, _, retry_after, body) in &shed {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(at(body, "error"), "overloaded", "{body}");
    }
    for (_, status, _, body) in first.iter().filter(|(_, status, ..)| *status != 503) {
        assert_eq!(*status, 201, "{body}");
    }
    for (_, status, _, body) in &retried {
        assert_eq!(*status, 201, "{body}");
    }
    assert_eq!(list(&listed, "items").len(), 40, "{listed}");
}

const LAST_WORD: &str = r#"
name: bedside_last_word
title: 出院通知 / Discharge notice
inputs:
  patient: party
start: admitted
states:
  admitted:
    on:
      discharged: done
  done:
    final: completed
    enter:
      - send: { to: patient, template: bedside_notice, channels: [inbox] }
"#;

/// `?wait=final` answers when the instance ends, its final message still
/// undelivered; `?wait=settled` waits for that message too, and says how
/// many effects are pending when its time runs out.
async fn a_caller_can_wait_for_an_instance_and_its_last_effects(app: TestApp) {
    deploy_with_notice(&app, LAST_WORD).await;
    let id = start_for(&app, "bedside_last_word", "bed-9").await;
    send_event(&app, &id, "discharged").await;
    // Ended: `final` answers at once; the goodbye is not delivered yet.
    let (status, ended) = app
        .get(&format!("/api/v1/instances/{id}?wait=final&timeout=5s"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(text(&ended, "status"), "completed");
    let (status, waited) = app
        .get(&format!("/api/v1/instances/{id}?wait=settled&timeout=1s"))
        .await;
    assert_eq!(status, 200, "{waited}");
    assert_eq!(int(&waited, "pending_effects"), 1, "{waited}");
    // Delivered while a caller waits: the waiter answers then.
    let waiter = {
        let app = app.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            let answer = app
                .get(&format!("/api/v1/instances/{id}?wait=settled&timeout=60s"))
                .await;
            (answer, began.elapsed())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.runtime.settle().await.unwrap_or_else(|e| panic!("{e}"));
    let ((status, settled), took) = waiter.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "{settled}");
    assert_eq!(int(&settled, "pending_effects"), 0, "{settled}");
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    let (_, inbox) = app.get("/api/v1/inbox/bed-9").await;
    assert_eq!(list(&inbox, "messages").len(), 1, "{inbox}");
    let (status, bad) = app
        .get(&format!("/api/v1/instances/{id}?wait=delivered"))
        .await;
    assert_eq!(status, 400);
    assert_eq!(at(&bad, "error"), "invalid_query");
}
storage_test!(a_caller_can_wait_for_an_instance_and_its_last_effects);
