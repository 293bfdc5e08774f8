//! A clock a flow author can drive: `serve --clock manual` and
//! `POST /api/v1/clock/advance` run a 7-day flow in seconds, in order.

use chrono::Duration;
use serde_json::{json, Value};

use crate::helpers::{at, int, list, read, serve_command, spawn_serve, text, TestApp};
use crate::storage_test;

/// A stay with a reminder every morning at 09:00 and checkout after 7 days.
const STAY: &str = r#"
name: week_stay
inputs:
  guest: party
  booking_id: { type: string, default: "W-1" }
data:
  mornings: { type: integer, default: 0 }
start: staying
states:
  staying:
    timers:
      - every: "0 0 9 * * *"
        actions:
          - set: { mornings: data.mornings + 1 }
          - send: { to: guest, template: booking_cancelled }
      - after: 7d
        goto: checked_out
  checked_out: { final: completed }
"#;

async fn post(client: &reqwest::Client, url: String, key: &str, body: &Value) -> (u16, Value) {
    let response = client
        .post(url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    read(response).await
}

async fn get(client: &reqwest::Client, url: String, key: &str) -> (u16, Value) {
    let response = client
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    read(response).await
}

async fn advancing_the_clock_fires_what_comes_due_in_order(app: TestApp) {
    let (status, body) = app.deploy(STAY).await;
    assert_eq!(status, 201, "{body}");
    let (status, started) = app
        .post(
            "/api/v1/instances",
            &json!({"workflow": "week_stay", "input": {"guest": {"id": "g-week"}}}),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    let id = text(&started, "id");
    let (status, clock) = app.get("/api/v1/clock").await;
    assert_eq!((status, text(&clock, "mode")), (200, "manual".to_owned()));
    let before = text(&clock, "now");

    // One call moves seven days: every 09:00 on the way fires at its time
    // (16:00 Shanghai start: the 21st to the 27th), then checkout.
    let (status, moved) = app
        .post("/api/v1/clock/advance", &json!({"by": "7d"}))
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(text(&moved, "from"), before);
    assert!(int(&moved, "stops") >= 8, "{moved}");
    let (_, shown) = app.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(text(&shown, "state"), "checked_out", "{shown}");
    assert_eq!(at(&shown, "data.mornings"), &json!(7), "{shown}");
    let (_, inbox) = app.get("/api/v1/inbox/g-week").await;
    assert_eq!(list(&inbox, "messages").len(), 7, "{inbox}");
    let (_, clock) = app.get("/api/v1/clock").await;
    let now = chrono::DateTime::parse_from_rfc3339(&text(&clock, "now"))
        .unwrap_or_else(|e| panic!("{e}"));
    let from = chrono::DateTime::parse_from_rfc3339(&before).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(now - from, Duration::days(7));

    // Only an admin moves the clock; a bad duration changes nothing.
    for key in [&app.viewer_key, &app.operator_key, &app.integration_key] {
        let (status, body) = post(
            &app.client,
            app.url("/api/v1/clock/advance"),
            key,
            &json!({"by": "1h"}),
        )
        .await;
        assert_eq!(
            (status, text(&body, "error")),
            (403, "forbidden".to_owned())
        );
    }
    for by in ["soon", "0s", "-1h", "500d"] {
        let (status, body) = app.post("/api/v1/clock/advance", &json!({"by": by})).await;
        assert_eq!(
            (status, text(&body, "error")),
            (422, "invalid_duration".to_owned()),
            "{by}: {body}"
        );
    }
    let (_, unchanged) = app.get("/api/v1/clock").await;
    assert_eq!(text(&unchanged, "now"), text(&clock, "now"));
}
storage_test!(advancing_the_clock_fires_what_comes_due_in_order);

async fn a_seven_day_flow_runs_in_seconds_under_serve_with_a_manual_clock(app: TestApp) {
    let began = std::time::Instant::now();
    let mut command = serve_command(&app.database_url);
    command.args(["--clock", "manual"]);
    let (mut child, address, _) = spawn_serve(command);
    let client = reqwest::Client::new();
    let key = app.key.clone();
    let (_, clock) = get(&client, format!("{address}/api/v1/clock"), &key).await;
    assert_eq!(text(&clock, "mode"), "manual", "{clock}");
    let visit_ended_at = text(&clock, "now");
    let (status, started) = post(
        &client,
        format!("{address}/api/v1/instances"),
        &key,
        &json!({"workflow": "follow_up_reminder", "input": {
            "patient": {"id": "p-week", "name": "张三", "time_zone": "Asia/Shanghai"},
            "department": "心内科",
            "visit_ended_at": visit_ended_at,
            "remind_after_days": 7
        }}),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let id = text(&started, "id");
    let state = |client: reqwest::Client, address: String, key: String, id: String| async move {
        let (_, shown) = get(&client, format!("{address}/api/v1/instances/{id}"), &key).await;
        shown
    };

    let (status, moved) = post(
        &client,
        format!("{address}/api/v1/clock/advance"),
        &key,
        &json!({"by": "6d"}),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    let shown = state(client.clone(), address.clone(), key.clone(), id.clone()).await;
    assert_eq!(text(&shown, "state"), "waiting", "{shown}");

    // The reminder is due on the 7th day at 10:00 Shanghai time.
    let (status, _) = post(
        &client,
        format!("{address}/api/v1/clock/advance"),
        &key,
        &json!({"by": "2d"}),
    )
    .await;
    assert_eq!(status, 200);
    let shown = state(client.clone(), address.clone(), key.clone(), id.clone()).await;
    assert_eq!(text(&shown, "state"), "reminding", "{shown}");
    let (_, inbox) = get(&client, format!("{address}/api/v1/inbox/p-week"), &key).await;
    assert_eq!(list(&inbox, "messages").len(), 1, "{inbox}");

    // Unbooked for two weeks after the reminder: expired.
    let (status, _) = post(
        &client,
        format!("{address}/api/v1/clock/advance"),
        &key,
        &json!({"by": "14d"}),
    )
    .await;
    assert_eq!(status, 200);
    let shown = state(client.clone(), address.clone(), key.clone(), id.clone()).await;
    assert_eq!(
        (text(&shown, "state"), text(&shown, "status")),
        ("expired".to_owned(), "expired".to_owned()),
        "{shown}"
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        began.elapsed() < std::time::Duration::from_secs(60),
        "22 days of flow took {:?}",
        began.elapsed()
    );

    // On the system clock, time cannot be moved.
    let (mut child, address, _) = spawn_serve(serve_command(&app.database_url));
    let (status, body) = post(
        &client,
        format!("{address}/api/v1/clock/advance"),
        &key,
        &json!({"by": "1h"}),
    )
    .await;
    let (_, clock) = get(&client, format!("{address}/api/v1/clock"), &key).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        (status, text(&body, "error")),
        (409, "clock_not_manual".to_owned()),
        "{body}"
    );
    assert_eq!(text(&clock, "mode"), "system");

    // A production tenant takes real money on real time: no manual clock.
    let set = std::process::Command::new(env!("CARGO_BIN_EXE_o2flow"))
        .args(["tenants", "set-production", "--tenant", "acme"])
        .args(["--database-url", &app.database_url])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(set.status.success(), "{set:?}");
    let refused = serve_command(&app.database_url)
        .args(["--clock", "manual", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--clock manual") && stderr.contains("`acme` is marked production"),
        "{stderr}"
    );
}
storage_test!(a_seven_day_flow_runs_in_seconds_under_serve_with_a_manual_clock);
