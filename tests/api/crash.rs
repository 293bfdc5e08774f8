//! Crash safety. The real `o2flow serve` binary runs 300 instances, each
//! posting two webhooks to a receiving fake and firing two timers, while
//! the test kills it with SIGKILL again and again and restarts it on the
//! same database. Afterwards every instance has completed, exactly 300 were
//! created (starts are retried with their Idempotency-Key), every webhook
//! key reached the fake (a repeat after a crash carries the same key and
//! counts once), and no timer or outbox row is left. On both databases.

use std::collections::HashMap;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use o2flow::channels::webhook::signature;
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::storage_test;

const INSTANCES: usize = 300;
const SECRET: &str = "drill-secret";

const DRILL: &str = r#"
name: crash_drill
title: 演练 / Crash drill
inputs:
  patient: party
start: notified
states:
  notified:
    enter:
      - send: { to: patient, template: drill_notice, channels: [webhook], retry: { initial: 1s, max: 2s } }
    timers:
      - after: 1s
        goto: reminded
  reminded:
    enter:
      - send: { to: patient, template: drill_notice, channels: [webhook], retry: { initial: 1s, max: 2s } }
    timers:
      - after: 1s
        goto: done
  done: { final: completed }
"#;

/// What the receiving fake saw: deliveries per idempotency key.
#[derive(Default)]
struct Received {
    by_key: HashMap<String, u32>,
    requests: u32,
    bad_signatures: u32,
}

async fn receive(
    request: HttpRequest,
    body: web::Bytes,
    received: web::Data<Mutex<Received>>,
) -> HttpResponse {
    let Ok(mut received) = received.lock() else {
        return HttpResponse::InternalServerError().finish();
    };
    received.requests += 1;
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if header("x-o2flow-signature") != signature(SECRET, &body) {
        received.bad_signatures += 1;
        return HttpResponse::Unauthorized().finish();
    }
    let key = header("idempotency-key");
    let message: Value = serde_json::from_slice(&body).unwrap_or_default();
    if key.is_empty() || message["key"] != key.as_str() {
        return HttpResponse::BadRequest().finish();
    }
    // Like a real provider: one request in seven fails the first time.
    let seen = received.by_key.get(&key).copied().unwrap_or(0);
    if seen == 0 && received.requests % 7 == 0 {
        return HttpResponse::ServiceUnavailable().finish();
    }
    *received.by_key.entry(key).or_insert(0) += 1;
    HttpResponse::Ok().json(json!({"ok": true}))
}

fn fake_receiver() -> (String, Arc<Mutex<Received>>, actix_web::dev::ServerHandle) {
    let received = web::Data::new(Mutex::new(Received::default()));
    let shared = received.clone().into_inner();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(received.clone())
            .route("/hook", web::post().to(receive))
    })
    .workers(1)
    .listen(listener)
    .unwrap_or_else(|e| panic!("{e}"))
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://{address}/hook"), shared, handle)
}

/// Starts `o2flow serve` on the drill's workflows and webhook; returns it and its address.
fn serve(database_url: &str, dir: &std::path::Path, hook: &str) -> (Child, String) {
    let mut command = crate::helpers::serve_command(database_url);
    command
        .arg("--workflows")
        .arg(dir.join("workflows"))
        .arg("--templates")
        .arg(dir.join("templates"))
        // A long lease: work a killed process claimed comes back because
        // its restart (the same node name) takes it back, not by waiting.
        .args(["--webhook-url", hook, "--claim-lease", "60s"])
        .env("O2FLOW_WEBHOOK_SECRET", SECRET);
    let (child, address, _) = crate::helpers::spawn_serve(command);
    (child, address)
}

fn drill_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("o2flow-crash-{}", uuid::Uuid::new_v4().simple()));
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(&dir)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    };
    write("workflows/crash_drill.yaml", DRILL);
    write("templates/drill_notice/title.txt.tera", "演练通知");
    write(
        "templates/drill_notice/body.txt.tera",
        "{{ party.id }} in {{ instance.state }}",
    );
    dir
}

/// Starts instance `n` (idempotently); false when the server was not there.
async fn start(client: &reqwest::Client, address: &str, key: &str, n: usize) -> bool {
    let response = client
        .post(format!("{address}/api/v1/instances"))
        .bearer_auth(key)
        .header("idempotency-key", format!("drill-{n}"))
        .json(&json!({"workflow": "crash_drill", "input": {"patient": {"id": format!("p{n}")}}}))
        .send()
        .await;
    matches!(response, Ok(r) if r.status().is_success())
}

/// Every crash_drill instance, optionally only those with `status`;
/// `None` when the server did not answer.
async fn list(
    client: &reqwest::Client,
    address: &str,
    key: &str,
    status: Option<&str>,
) -> Option<Vec<Value>> {
    let mut items = Vec::new();
    let mut after = String::new();
    loop {
        let mut url =
            format!("{address}/api/v1/instances?workflow=crash_drill&limit=500&after={after}");
        if let Some(status) = status {
            url.push_str(&format!("&status={status}"));
        }
        let response = client.get(url).bearer_auth(key).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        items.extend(body["items"].as_array()?.iter().cloned());
        match body["next_after"].as_str() {
            Some(next) => next.clone_into(&mut after),
            None => return Some(items),
        }
    }
}

async fn count(client: &reqwest::Client, address: &str, key: &str, status: &str) -> usize {
    list(client, address, key, Some(status))
        .await
        .map_or(usize::MAX, |items| items.len())
}

fn kill(mut child: Child) {
    // `Child::kill` is SIGKILL on Unix: no shutdown code runs.
    child.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = child.wait();
}

async fn three_hundred_instances_survive_repeated_sigkill_with_every_effect_once(app: TestApp) {
    let dir = drill_dir();
    let (hook, received, receiver) = fake_receiver();
    let client = reqwest::Client::new();
    let mut started = vec![false; INSTANCES];
    // Kill the server at these moments after it listens, starting instances meanwhile.
    for (round, after_ms) in [900_u64, 350, 1400, 600, 1100, 250, 800]
        .into_iter()
        .enumerate()
    {
        let (child, address) = serve(&app.database_url, &dir, &hook);
        let deadline = Instant::now() + Duration::from_millis(after_ms);
        let batch = INSTANCES / 6;
        for n in (round * batch..((round + 1) * batch).min(INSTANCES)).chain(0..INSTANCES) {
            if Instant::now() >= deadline {
                break;
            }
            if !started[n] {
                started[n] = start(&client, &address, &app.key, n).await;
            }
        }
        tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
        kill(child);
    }

    // The last run: finish the starts, then wait for every instance to end.
    let (child, address) = serve(&app.database_url, &dir, &hook);
    let restarted = Instant::now();
    for (n, done) in started.iter().enumerate() {
        if !done {
            assert!(start(&client, &address, &app.key, n).await, "start {n}");
        }
    }
    let give_up = Instant::now() + Duration::from_secs(120);
    while count(&client, &address, &app.key, "active").await != 0 {
        assert!(
            Instant::now() < give_up,
            "instances still active after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        count(&client, &address, &app.key, "completed").await,
        INSTANCES
    );
    // Far within the 60 s lease: the restart took the dead one's work back.
    let took = restarted.elapsed();
    assert!(took < Duration::from_secs(30), "the last run took {took:?}");
    // Let the last webhooks of the final states' entries land.
    let store = app.runtime.store();
    while store.outbox_count("pending").await.unwrap_or(1) != 0 {
        assert!(
            Instant::now() < give_up,
            "outbox rows still pending after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kill(child);
    receiver.stop(false).await;

    // Nothing left behind in the database.
    let far = chrono::Utc::now() + chrono::Duration::days(365);
    let timers = store
        .due_timers(far, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(timers.is_empty(), "timers left: {timers:?}");
    for status in ["pending", "failed"] {
        assert_eq!(
            store.outbox_count(status).await.ok(),
            Some(0),
            "{status} outbox rows"
        );
    }
    let all = list(&client, &app.address, &app.key, None)
        .await
        .unwrap_or_default();
    assert_eq!(all.len(), INSTANCES, "instances created once each");

    // Every effect reached the fake, once per key; keys belong to the instances.
    let received = received.lock().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(received.bad_signatures, 0);
    assert_eq!(
        received.by_key.len(),
        2 * INSTANCES,
        "two webhooks per instance"
    );
    let ids: std::collections::HashSet<&str> =
        all.iter().filter_map(|i| i["id"].as_str()).collect();
    assert!(received
        .by_key
        .keys()
        .all(|key| ids.contains(key.split('/').next().unwrap_or_default())));
    let repeated: u32 = received.by_key.values().map(|n| n - 1).sum();
    eprintln!(
        "{} requests, {} keys, {} repeated after a crash (same key)",
        received.requests,
        received.by_key.len(),
        repeated
    );
    let _ = std::fs::remove_dir_all(&dir);
}
storage_test!(three_hundred_instances_survive_repeated_sigkill_with_every_effect_once);
