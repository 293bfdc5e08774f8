//! Cron schedules start instances at local wall-clock times; repeating
//! timers fire while a state lasts; a redeploy replaces schedules and never
//! duplicates them. On both databases.

use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::{list, text, TestApp};
use crate::storage_test;

const SWEEP: &str = r#"
name: daily_sweep
title: 每日随访筛查 / Daily follow-up sweep
inputs:
  department: string
data:
  rounds: { type: integer, default: 0 }
schedules:
  - cron: "0 0 8 * * *"
    time_zone: Asia/Shanghai
    input: { department: 心内科 }
start: sweeping
states:
  sweeping:
    timers:
      - every: "0 0 9 * * *"
        actions: [ { set: { rounds: data.rounds + 1 } } ]
      - after: 3d
        goto: done
  done: { final: completed }
"#;

async fn sweeps(app: &TestApp) -> Vec<Value> {
    let (_, page) = app.get("/api/v1/instances?workflow=daily_sweep").await;
    list(&page, "items")
}

async fn a_daily_schedule_starts_one_instance_a_day_at_local_time_and_redeploys_replace_it(
    app: TestApp,
) {
    // The clock starts at 2026-11-20 08:00 UTC, 16:00 in Shanghai.
    assert_eq!(app.deploy(SWEEP).await.0, 201);
    let (_, detail) = app.get("/api/v1/workflows/daily_sweep").await;
    assert_eq!(
        detail["schedules"],
        json!([{"cron": "0 0 8 * * *", "time_zone": "Asia/Shanghai", "next_fire_at": "2026-11-21T00:00:00.000Z", "version": 1}])
    );

    app.advance(Duration::hours(15) + Duration::minutes(59))
        .await;
    assert_eq!(sweeps(&app).await.len(), 0);
    app.advance(Duration::minutes(1)).await;
    let started = sweeps(&app).await;
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["input"], json!({"department": "心内科"}));

    // 09:00 in Shanghai: the repeating timer fires and re-arms for tomorrow.
    app.advance(Duration::hours(1)).await;
    let id = text(&started[0], "id").to_owned();
    let (_, first) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(first["data"]["rounds"], 1);
    let due: Vec<&str> = first["timers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["due_at"].as_str())
        .collect();
    assert!(due.contains(&"2026-11-22T01:00:00.000Z"), "{due:?}");

    // The same content again changes nothing; new content replaces the schedule.
    assert_eq!(app.deploy(SWEEP).await.0, 200);
    let (status, _) = app
        .deploy(&SWEEP.replace("\"0 0 8 * * *\"", "\"0 30 8 * * *\""))
        .await;
    assert_eq!(status, 201);
    let (_, detail) = app.get("/api/v1/workflows/daily_sweep").await;
    assert_eq!(detail["schedules"].as_array().map(Vec::len), Some(1));
    assert_eq!(detail["schedules"][0]["cron"], "0 30 8 * * *");
    assert_eq!(detail["schedules"][0]["version"], 2);

    // The next morning: exactly one more instance, on the new version, at 08:30.
    app.advance(Duration::hours(23) + Duration::minutes(29))
        .await;
    assert_eq!(sweeps(&app).await.len(), 1);
    app.advance(Duration::minutes(1)).await;
    let all = sweeps(&app).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["version"], 2);
    assert_eq!(all[1]["created_at"], "2026-11-22T00:30:00.000Z");
    app.advance(Duration::minutes(30)).await;
    let (_, first) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(first["data"]["rounds"], 2);
}
storage_test!(a_daily_schedule_starts_one_instance_a_day_at_local_time_and_redeploys_replace_it);

async fn a_schedule_without_a_zone_runs_in_the_tenants_zone(app: TestApp) {
    // A hotel chain in Europe: its daily 08:00 is 07:00 UTC in November.
    app.runtime
        .set_tenant_time_zone("acme", "Europe/Berlin")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let source = SWEEP.replace("    time_zone: Asia/Shanghai\n", "");
    assert_eq!(app.deploy(&source).await.0, 201);
    let (_, detail) = app.get("/api/v1/workflows/daily_sweep").await;
    assert_eq!(detail["schedules"][0]["time_zone"], "Europe/Berlin");
    assert_eq!(
        detail["schedules"][0]["next_fire_at"],
        "2026-11-21T07:00:00.000Z"
    );

    // Moving the tenant moves the schedule at once; a zone written in the
    // file would stay.
    app.runtime
        .set_tenant_time_zone("acme", "Asia/Urumqi")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, detail) = app.get("/api/v1/workflows/daily_sweep").await;
    assert_eq!(detail["schedules"][0]["time_zone"], "Asia/Urumqi");
    assert_eq!(
        detail["schedules"][0]["next_fire_at"],
        "2026-11-21T02:00:00.000Z"
    );
    let refused = app
        .runtime
        .set_tenant_time_zone("acme", "Mars/Olympus")
        .await;
    assert!(refused.is_err());

    app.advance(Duration::hours(18)).await;
    assert_eq!(sweeps(&app).await.len(), 1);
    app.advance(Duration::days(4)).await;
}
storage_test!(a_schedule_without_a_zone_runs_in_the_tenants_zone);
