//! `o2flow bench`: the benchmark harness. It starts `o2flow serve` (this
//! binary) on a fresh SQLite file and a fresh PostgreSQL database, with
//! the reference five-step flow deployed and its messages going to a
//! webhook the harness serves, and drives it over HTTP as a hospital's
//! systems would:
//!
//! start `{patient, visit_id, amount_fen}` → message → the HIS's correlated
//! `his.payment_received`, sent right after the start → message → durable
//! 1 s timer → message → completed.
//!
//! Two modes: latency (1, 8, 32 closed-loop clients) and saturation (the
//! number of flows in flight stepped up until completed flows/s stops
//! rising, and one step past). Then a step at half the best rate, and the
//! database's own ceiling (durable single-row inserts/s). Results go to
//! `docs/bench/bench.json` with SVG plots beside it; docs/PERFORMANCE.md
//! reads them.

mod load;
mod plot;
mod server;
mod sink;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde::Serialize;

use load::{drive, quantile_ms, CounterValues, Step, Target};
use server::{cpu_of, memory_kib, postgres_cpu, Launch, Server};
use sink::Sink;

/// The reference flow's timer, taken out of its latencies.
pub(crate) const FLOW_TIMER: Duration = Duration::from_secs(1);

/// Transitions in one reference flow: the start, the event, the timer.
const TRANSITIONS_PER_FLOW: f64 = 3.0;

const FLOW: &str = r"# The benchmark's reference five-step flow (written by `o2flow bench`).
name: bench_visit
title: Benchmark reference flow
inputs:
  patient: party
  visit_id: string
  amount_fen: integer
correlation: visit_id
start: awaiting_payment
states:
  awaiting_payment:
    enter:
      - send: { to: patient, template: bench_ordered, channels: [webhook] }
    on:
      his.payment_received: paid
  paid:
    enter:
      - send: { to: patient, template: bench_paid, channels: [webhook] }
    timers:
      - after: 1s
        goto: done
  done:
    final: completed
    enter:
      - send: { to: patient, template: bench_done, channels: [webhook] }
";

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The databases to run on, in order.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres", value_parser = ["sqlite", "postgres"])]
    pub databases: Vec<String>,
    /// The PostgreSQL server: the database `--postgres-database` is created
    /// afresh on it (dropped first if it exists).
    #[arg(
        long,
        env = "O2FLOW_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub postgres: String,
    #[arg(long, default_value = "o2flow_bench", value_parser = parse_database_name)]
    pub postgres_database: String,
    /// Closed-loop clients of the latency mode.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub clients: Vec<usize>,
    /// Flows in flight of the saturation mode, in order; it stops two steps
    /// after the best rate.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "64,128,256,512,1024,2048,4096"
    )]
    pub in_flight: Vec<usize>,
    /// How long each step runs; the first quarter is not counted.
    #[arg(long, default_value = "12s", value_parser = parse_duration)]
    pub step: Duration,
    /// Where `bench.json` and the SVG plots go.
    #[arg(long, default_value = "docs/bench")]
    pub out: PathBuf,
    /// The o2flow binary to measure (default: this one), to compare two
    /// builds with the same harness.
    #[arg(long)]
    pub server: Option<PathBuf>,
}

fn parse_database_name(text: &str) -> Result<String, String> {
    if !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(text.to_owned())
    } else {
        Err("lower-case letters, digits and `_`, at most 63".into())
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::domain::parse_duration(text)
        .map_err(|e| e.to_string())?
        .to_std()
        .map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
struct Quantiles {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Quantiles {
    fn of(mut values: Vec<Duration>) -> Quantiles {
        Quantiles {
            p50: round(quantile_ms(&mut values, 0.50)),
            p95: round(quantile_ms(&mut values, 0.95)),
            p99: round(quantile_ms(&mut values, 0.99)),
            max: round(quantile_ms(&mut values, 1.0)),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
struct CpuPerFlow {
    o2flow_ms: f64,
    database_ms: f64,
    total_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
struct StepReport {
    /// Closed-loop clients, that is flows in flight.
    in_flight: usize,
    /// Flows started in the counted window (all of them completed).
    flows: usize,
    flows_per_s: f64,
    /// Start sent to last message arrived, less the 1 s timer.
    start_to_complete_ms: Quantiles,
    /// Correlated event sent to the message its transition planned arrived.
    event_to_effect_ms: Quantiles,
    /// Second to third message, less the 1 s timer.
    timer_lag_ms: Quantiles,
    cpu_per_flow: Option<CpuPerFlow>,
    /// PostgreSQL transactions, reads included
    /// (`pg_stat_database.xact_commit`), per flow.
    transactions_per_flow: Option<f64>,
    errors: CounterValues,
    /// Messages the webhook received twice (their key seen before).
    duplicate_messages: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Ceiling {
    inserts_per_s: f64,
    connections: usize,
}

#[derive(Debug, Clone, Serialize)]
struct DatabaseReport {
    database: String,
    startup_ms: f64,
    idle_rss_mib: f64,
    peak_rss_mib: f64,
    latency: Vec<StepReport>,
    saturation: Vec<StepReport>,
    best_flows_per_s: f64,
    best_in_flight: usize,
    half_load: Option<StepReport>,
    ceiling: Ceiling,
    /// Engine transitions/s at the best rate (3 per flow), as a share of
    /// the database's durable inserts/s.
    transitions_share_of_ceiling: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    version: &'static str,
    cores: usize,
    step_s: f64,
    databases: Vec<DatabaseReport>,
}

/// Runs the harness.
///
/// # Errors
/// A server that does not start, a database that cannot be reached, or
/// results that cannot be written.
pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut databases = Vec::new();
    for database in &args.databases {
        eprintln!("== {database}");
        databases.push(one_database(&args, database).await?);
    }
    let report = Report {
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        version: env!("CARGO_PKG_VERSION"),
        cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        step_s: args.step.as_secs_f64(),
        databases,
    };
    let json = args.out.join("bench.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")?;
    write_plots(&args.out, &report.databases)?;
    print_summary(&report);
    eprintln!(
        "results: {}, plots: {}",
        json.display(),
        args.out.join("*.svg").display()
    );
    Ok(0)
}

/// The flow and its templates, in a fresh directory.
fn prepare(dir: &Path) -> anyhow::Result<()> {
    let workflows = dir.join("workflows");
    std::fs::create_dir_all(&workflows)?;
    std::fs::write(workflows.join("bench_visit.yaml"), FLOW)?;
    for (template, title) in [
        ("bench_ordered", "待缴费 / fee due"),
        ("bench_paid", "已缴费 / paid"),
        ("bench_done", "就诊完成 / visit done"),
    ] {
        let path = dir.join("templates").join(template);
        std::fs::create_dir_all(&path)?;
        std::fs::write(path.join("title.txt.tera"), title)?;
        std::fs::write(
            path.join("body.txt.tera"),
            "{{ input.visit_id }}: ¥{{ input.amount_fen / 100 }}",
        )?;
    }
    Ok(())
}

/// A fresh database for one run: a new SQLite file, or `o2flow_bench`
/// dropped and created again.
async fn fresh_database(
    args: &BenchArgs,
    database: &str,
    dir: &Path,
) -> anyhow::Result<(String, Option<DatabaseConnection>)> {
    if database == "sqlite" {
        return Ok((format!("sqlite:{}", dir.join("bench.db").display()), None));
    }
    let server = args.postgres.trim_end_matches('/');
    let admin = Database::connect(format!("{server}/postgres"))
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let name = &args.postgres_database;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    admin.close().await?;
    let url = format!("{server}/{name}");
    let stats = Database::connect(&url).await?;
    Ok((url, Some(stats)))
}

/// Drops the benchmark's PostgreSQL database (its figures are in the report).
async fn drop_database(args: &BenchArgs) {
    let server = args.postgres.trim_end_matches('/');
    if let Ok(admin) = Database::connect(format!("{server}/postgres")).await {
        let _ = admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                args.postgres_database
            ))
            .await;
        let _ = admin.close().await;
    }
}

/// One reading of the resources a step uses.
#[derive(Debug, Clone, Copy)]
struct Reading {
    o2flow: Duration,
    database: Duration,
    commits: Option<i64>,
}

async fn read(pid: u32, stats: Option<&DatabaseConnection>) -> Reading {
    let commits = match stats {
        Some(db) => db
            .query_one(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            ))
            .await
            .ok()
            .flatten()
            .and_then(|row| row.try_get_by_index::<i64>(0).ok()),
        None => None,
    };
    Reading {
        o2flow: cpu_of(pid),
        database: if stats.is_some() {
            postgres_cpu()
        } else {
            Duration::ZERO
        },
        commits,
    }
}

struct Run<'a> {
    target: Arc<Target>,
    server: &'a Server,
    stats: Option<&'a DatabaseConnection>,
    step: Duration,
}

impl Run<'_> {
    async fn step(&self, in_flight: usize) -> StepReport {
        let readings = Arc::new(Mutex::new(Vec::new()));
        let duplicates_before = self
            .target
            .sink
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed);
        let step: Step = drive(&self.target, in_flight, self.step, self.step / 4, || {
            let readings = readings.clone();
            let (pid, stats) = (self.server.pid, self.stats);
            async move {
                let reading = read(pid, stats).await;
                if let Ok(mut all) = readings.lock() {
                    all.push(reading);
                }
            }
        })
        .await;
        let readings = readings.lock().map(|r| r.clone()).unwrap_or_default();
        let in_window = step.in_window();
        let completed = step.completed_since_opening();
        let (cpu_per_flow, commits_per_flow) = match readings.as_slice() {
            [first, last] if completed > 0 => {
                let per = |d: Duration| round(d.as_secs_f64() * 1000.0 / completed as f64);
                let o2flow_ms = per(last.o2flow.saturating_sub(first.o2flow));
                let database_ms = per(last.database.saturating_sub(first.database));
                let commits = match (first.commits, last.commits) {
                    (Some(a), Some(b)) => Some(round((b - a) as f64 / completed as f64)),
                    _ => None,
                };
                (
                    Some(CpuPerFlow {
                        o2flow_ms,
                        database_ms,
                        total_ms: round(o2flow_ms + database_ms),
                    }),
                    commits,
                )
            }
            _ => (None, None),
        };
        let report = StepReport {
            in_flight,
            flows: in_window,
            flows_per_s: round(step.rate()),
            start_to_complete_ms: Quantiles::of(
                step.flows.iter().map(|f| f.start_to_complete).collect(),
            ),
            event_to_effect_ms: Quantiles::of(
                step.flows.iter().map(|f| f.event_to_effect).collect(),
            ),
            timer_lag_ms: Quantiles::of(step.flows.iter().map(|f| f.timer_lag).collect()),
            cpu_per_flow,
            transactions_per_flow: commits_per_flow,
            errors: step.counters,
            duplicate_messages: self
                .target
                .sink
                .duplicates
                .load(std::sync::atomic::Ordering::Relaxed)
                - duplicates_before,
        };
        eprintln!(
            "  {:>5} in flight: {:>7.1} flows/s, start→complete p50 {:.1} p99 {:.1} ms, event→effect p99 {:.1} ms, timer lag p99 {:.1} ms, CPU {} ms/flow, shed {}, lost {}",
            report.in_flight,
            report.flows_per_s,
            report.start_to_complete_ms.p50,
            report.start_to_complete_ms.p99,
            report.event_to_effect_ms.p99,
            report.timer_lag_ms.p99,
            report
                .cpu_per_flow
                .map_or("-".into(), |c| format!("{:.2}", c.total_ms)),
            report.errors.shed,
            report.errors.timed_out,
        );
        // Let the last flows' messages drain before the next step.
        tokio::time::sleep(Duration::from_millis(500)).await;
        report
    }
}

async fn one_database(args: &BenchArgs, database: &str) -> anyhow::Result<DatabaseReport> {
    let dir = std::env::temp_dir().join(format!("o2flow-bench-{}-{database}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    prepare(&dir)?;
    let (url, stats) = fresh_database(args, database, &dir).await?;
    let sink = Arc::new(Sink::default());
    let webhook_url = sink.serve(std::net::TcpListener::bind("127.0.0.1:0")?)?;
    let log = dir.join("server.log");
    let server = Server::start(&Launch {
        binary: args.server.as_deref(),
        database_url: &url,
        dir: &dir,
        webhook_url: &webhook_url,
        log: &log,
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss_mib = mib(memory_kib(server.pid, "VmRSS"));
    let target = Arc::new(Target::new(
        server.base_url.clone(),
        server.key.clone(),
        sink.clone(),
        format!("{database}-{}", std::process::id()),
    ));
    let run = Run {
        target,
        server: &server,
        stats: stats.as_ref(),
        step: args.step,
    };
    eprintln!("latency (closed-loop clients):");
    let mut latency = Vec::new();
    for &clients in &args.clients {
        latency.push(run.step(clients).await);
    }
    eprintln!("saturation (flows in flight):");
    let mut saturation: Vec<StepReport> = Vec::new();
    let mut since_best = 0;
    for &in_flight in &args.in_flight {
        let report = run.step(in_flight).await;
        let best = saturation.iter().map(|s| s.flows_per_s).fold(0.0, f64::max);
        since_best = if report.flows_per_s > best * 1.05 {
            0
        } else {
            since_best + 1
        };
        saturation.push(report);
        if since_best >= 2 {
            break;
        }
    }
    let best = saturation
        .iter()
        .max_by(|a, b| a.flows_per_s.total_cmp(&b.flows_per_s))
        .cloned();
    let (best_flows_per_s, best_in_flight) =
        best.map_or((0.0, 0), |b| (b.flows_per_s, b.in_flight));
    // Half the best rate: a closed loop runs in_flight / (1 s + latency) flows/s.
    let unloaded = latency
        .first()
        .map_or(0.0, |l| l.start_to_complete_ms.p50 / 1000.0);
    let half = ((best_flows_per_s / 2.0) * (FLOW_TIMER.as_secs_f64() + unloaded)).round();
    let half_load = if half >= 1.0 {
        eprintln!("half the best rate:");
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(run.step(half as usize).await)
    } else {
        None
    };
    let peak_rss_mib = mib(memory_kib(server.pid, "VmHWM"));
    let startup_ms = round(server.startup.as_secs_f64() * 1000.0);
    drop(run);
    server.stop().await;
    let ceiling = match &stats {
        Some(db) => postgres_ceiling(&url, db, args.step).await?,
        None => sqlite_ceiling(&dir, args.step).await?,
    };
    let transitions_share_of_ceiling = if ceiling.inserts_per_s > 0.0 {
        round(best_flows_per_s * TRANSITIONS_PER_FLOW / ceiling.inserts_per_s)
    } else {
        0.0
    };
    eprintln!(
        "ceiling: {:.0} durable single-row inserts/s on {} connection(s); the engine's transitions at its best rate are {:.0} % of it",
        ceiling.inserts_per_s,
        ceiling.connections,
        transitions_share_of_ceiling * 100.0
    );
    if let Some(db) = stats {
        db.close().await?;
        drop_database(args).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(DatabaseReport {
        database: database.to_owned(),
        startup_ms,
        idle_rss_mib,
        peak_rss_mib,
        latency,
        saturation,
        best_flows_per_s,
        best_in_flight,
        half_load,
        ceiling,
        transitions_share_of_ceiling,
    })
}

/// Inserts one row per transaction from `connections` tasks for `run_for`.
async fn insert_loop(db: &DatabaseConnection, connections: usize, run_for: Duration) -> f64 {
    let began = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..connections {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while began.elapsed() < run_for {
                let sql = format!("INSERT INTO bench_ceiling (task, body) VALUES ({task}, 'x')");
                if db.execute_unprepared(&sql).await.is_ok() {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap_or(0);
    }
    round(total as f64 / began.elapsed().as_secs_f64())
}

/// PostgreSQL's durable single-row inserts/s on as many connections as
/// o2flow's pool holds (16), each its own commit.
async fn postgres_ceiling(
    url: &str,
    db: &DatabaseConnection,
    run_for: Duration,
) -> anyhow::Result<Ceiling> {
    db.execute_unprepared(
        "CREATE TABLE bench_ceiling (id BIGSERIAL PRIMARY KEY, task INT NOT NULL, body TEXT NOT NULL)",
    )
    .await?;
    let connections = 16;
    let mut options = sea_orm::ConnectOptions::new(url.to_owned());
    options
        .max_connections(u32::try_from(connections).unwrap_or(16))
        .sqlx_logging(false);
    let pool = Database::connect(options).await?;
    let inserts_per_s = insert_loop(&pool, connections, run_for).await;
    pool.close().await?;
    Ok(Ceiling {
        inserts_per_s,
        connections,
    })
}

/// SQLite's durable single-row inserts/s, configured as o2flow's store is
/// (WAL, `synchronous = FULL`, one connection).
async fn sqlite_ceiling(dir: &Path, run_for: Duration) -> anyhow::Result<Ceiling> {
    let mut options = sea_orm::ConnectOptions::new(format!(
        "sqlite:{}?mode=rwc",
        dir.join("ceiling.db").display()
    ));
    options
        .max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    let db = Database::connect(options).await?;
    for pragma in [
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = FULL",
        "CREATE TABLE bench_ceiling (id INTEGER PRIMARY KEY, task INT NOT NULL, body TEXT NOT NULL)",
    ] {
        db.execute_unprepared(pragma).await?;
    }
    let inserts_per_s = insert_loop(&db, 1, run_for).await;
    db.close().await?;
    Ok(Ceiling {
        inserts_per_s,
        connections: 1,
    })
}

fn write_plots(out: &Path, databases: &[DatabaseReport]) -> anyhow::Result<()> {
    let series = |pick: &dyn Fn(&StepReport) -> f64, suffix: &str| -> Vec<plot::Series> {
        databases
            .iter()
            .map(|d| plot::Series {
                name: format!("{}{suffix}", d.database),
                points: d
                    .saturation
                    .iter()
                    .map(|s| (s.in_flight as f64, pick(s)))
                    .collect(),
            })
            .collect()
    };
    std::fs::write(
        out.join("throughput.svg"),
        plot::chart(
            "Completed reference flows/s against flows in flight",
            "flows in flight (closed-loop clients)",
            "completed flows/s",
            &series(&|s| s.flows_per_s, ""),
        ),
    )?;
    let mut latency = series(&|s| s.start_to_complete_ms.p50, " p50");
    latency.extend(series(&|s| s.start_to_complete_ms.p99, " p99"));
    std::fs::write(
        out.join("latency.svg"),
        plot::chart(
            "Start to complete (1 s timer excluded) against flows in flight",
            "flows in flight (closed-loop clients)",
            "ms",
            &latency,
        ),
    )?;
    Ok(())
}

fn print_summary(report: &Report) {
    println!(
        "| database | best flows/s | at in flight | CPU ms/flow (o2flow + db) | db transactions/flow | p99 event→effect at half load | p99 timer lag at half load | ceiling inserts/s | startup | idle RSS | peak RSS |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for d in &report.databases {
        let best = d
            .saturation
            .iter()
            .find(|s| s.in_flight == d.best_in_flight);
        let cpu = best.and_then(|b| b.cpu_per_flow).map_or("-".into(), |c| {
            format!(
                "{:.2} ({:.2} + {:.2})",
                c.total_ms, c.o2flow_ms, c.database_ms
            )
        });
        let commits = best
            .and_then(|b| b.transactions_per_flow)
            .map_or("-".into(), |c| format!("{c:.1}"));
        let (event, timer) = d.half_load.as_ref().map_or(("-".into(), "-".into()), |h| {
            (
                format!("{:.1} ms", h.event_to_effect_ms.p99),
                format!("{:.1} ms", h.timer_lag_ms.p99),
            )
        });
        println!(
            "| {} | {:.0} | {} | {cpu} | {commits} | {event} | {timer} | {:.0} | {:.0} ms | {:.1} MiB | {:.1} MiB |",
            d.database,
            d.best_flows_per_s,
            d.best_in_flight,
            d.ceiling.inserts_per_s,
            d.startup_ms,
            d.idle_rss_mib,
            d.peak_rss_mib,
        );
    }
}

#[allow(clippy::cast_precision_loss)]
fn mib(kib: u64) -> f64 {
    round(kib as f64 / 1024.0)
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
