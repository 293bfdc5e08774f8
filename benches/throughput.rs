//! Throughput of a short flow: start → timer after 0s → send to the web
//! inbox → a correlated event → completed. Runs N instances with C in
//! flight on SQLite and PostgreSQL and prints instances/s and p50/p99 of
//! start-to-completed latency. Not a test: see docs/PERFORMANCE.md.
//!
//! `cargo bench --bench throughput -- [N] [C]` (defaults 2000 and 32);
//! PostgreSQL at `O2FLOW_TEST_POSTGRES_URL` (default postgres://postgres@127.0.0.1:5432).

use std::sync::Arc;
use std::time::{Duration, Instant};

use o2flow::engine::Event;
use o2flow::runtime::{Options, Runtime, StartRequest, SystemClock};
use o2flow::store::Store;
use o2flow::templates::Templates;
use sea_orm::{ConnectionTrait, Database};
use serde_json::json;

const FLOW: &str = r#"
name: bench_follow_up
inputs:
  patient: party
start: waiting
states:
  waiting:
    timers:
      - after: 0s
        goto: reminding
    on:
      registration.booked: done
  reminding:
    enter:
      - send: { to: patient, template: reminder }
    on:
      registration.booked: done
  done: { final: completed }
"#;

async fn run(label: &str, url: &str, total: usize, concurrency: usize) {
    let store = Store::connect(url).await.unwrap_or_else(|e| panic!("{e}"));
    let now = chrono::Utc::now();
    store
        .ensure_tenant("bench", "Bench", now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let templates = Templates::from_strings(&[(
        "reminder",
        "复诊提醒",
        "{{ party.id }}: please book your revisit",
    )])
    .unwrap_or_else(|e| panic!("{e}"));
    let runtime = Arc::new(Runtime::new(Options::new(
        store,
        Arc::new(SystemClock),
        Arc::new(templates),
        "http://bench".into(),
    )));
    runtime
        .deploy("bench", "bench.yaml", FLOW)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let background = runtime.spawn_jobs(Duration::from_millis(5), &stopped);
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let runtime = runtime.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let begin = Instant::now();
                let (instance, _) = runtime
                    .start(
                        "bench",
                        StartRequest {
                            workflow: "bench_follow_up".into(),
                            input: json!({"patient": {"id": "p"}}),
                            branch: None,
                            business_key: None,
                            idempotency: None,
                            parent_id: None,
                        },
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                loop {
                    let row = runtime
                        .store()
                        .instance("bench", &instance.id)
                        .await
                        .ok()
                        .flatten();
                    if row.is_some_and(|r| r.state == "reminding") {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                runtime
                    .send_event(
                        "bench",
                        &instance.id,
                        Event::Named {
                            event_type: "registration.booked".into(),
                            payload: json!({}),
                        },
                        None,
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                latencies.push(begin.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    for job in background {
        let _ = job.await;
    }
    // Messages are delivered by the background loop; make sure none is left.
    runtime
        .drain_outbox()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{label:<10} {total} instances, {concurrency} in flight: {:.0} instances/s, p50 {:.1} ms, p99 {:.1} ms, pending outbox {}",
        total as f64 / elapsed.as_secs_f64(),
        pick(0.50).as_secs_f64() * 1000.0,
        pick(0.99).as_secs_f64() * 1000.0,
        runtime.store().outbox_count("pending").await.unwrap_or_default(),
    );
    runtime.store().close().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let total = args.first().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let concurrency = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let name = format!("o2flow_bench_{}", uuid::Uuid::new_v4().simple());
    let path = std::env::temp_dir().join(format!("{name}.db"));
    run(
        "sqlite",
        &format!("sqlite:{}", path.display()),
        total,
        concurrency,
    )
    .await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let admin_url = std::env::var("O2FLOW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    match Database::connect(format!("{admin_url}/postgres")).await {
        Ok(admin) => {
            let _ = admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await;
            run(
                "postgres",
                &format!("{admin_url}/{name}"),
                total,
                concurrency,
            )
            .await;
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
        Err(error) => println!("postgres   not measured: {error}"),
    }
}
