//! The load generator: closed-loop clients, each running the reference
//! flow over HTTP again and again, timed by the messages the sink receives.
//! A `429` or `503` is retried after its `Retry-After` under the same
//! `Idempotency-Key` (or `message_id`), as a well-behaved client would, and
//! counted: shed load is seen, never lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::sink::Sink;
use super::FLOW_TIMER;

/// Where the load goes.
pub struct Target {
    pub client: reqwest::Client,
    pub base_url: String,
    pub key: String,
    pub sink: Arc<Sink>,
    /// Makes patient ids unique across the steps of one run.
    pub run: String,
    next: AtomicU64,
    pub counters: Counters,
}

/// What went wrong on the way, counted over a step.
#[derive(Debug, Default)]
pub struct Counters {
    /// `429`/`503` answers (retried).
    pub shed: AtomicU64,
    /// Requests that got no answer (retried).
    pub connection_errors: AtomicU64,
    /// Other non-2xx answers (the flow is given up).
    pub refused: AtomicU64,
    /// Flows whose messages did not all arrive within a minute.
    pub timed_out: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct CounterValues {
    pub shed: u64,
    pub connection_errors: u64,
    pub refused: u64,
    pub timed_out: u64,
}

impl Counters {
    fn take(&self) -> CounterValues {
        CounterValues {
            shed: self.shed.swap(0, Ordering::Relaxed),
            connection_errors: self.connection_errors.swap(0, Ordering::Relaxed),
            refused: self.refused.swap(0, Ordering::Relaxed),
            timed_out: self.timed_out.swap(0, Ordering::Relaxed),
        }
    }
}

/// One completed flow.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// From sending the start to the last message's arrival, less the 1 s timer.
    pub start_to_complete: Duration,
    /// From sending the correlated event to the arrival of the message its
    /// transition planned.
    pub event_to_effect: Duration,
    /// Between the second and third messages, less the 1 s timer: the
    /// timer's lag plus the difference of two deliveries.
    pub timer_lag: Duration,
    pub started_at: Instant,
    pub done_at: Instant,
}

/// Why a flow did not complete.
#[derive(Debug)]
enum Failed {
    Refused,
    TimedOut,
}

impl Target {
    #[must_use]
    pub fn new(base_url: String, key: String, sink: Arc<Sink>, run: String) -> Target {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Target {
            client,
            base_url,
            key,
            sink,
            run,
            next: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }

    /// POSTs `body`, retrying shed load and lost connections under the same
    /// idempotency key for up to a minute.
    async fn post(&self, path: &str, body: &Value, idempotency: Option<&str>) -> Option<Value> {
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(60) {
            let mut request = self
                .client
                .post(format!("{}{path}", self.base_url))
                .bearer_auth(&self.key)
                .json(body);
            if let Some(key) = idempotency {
                request = request.header("Idempotency-Key", key);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    return response.json().await.ok();
                }
                Ok(response) if matches!(response.status().as_u16(), 429 | 503) => {
                    self.counters.shed.fetch_add(1, Ordering::Relaxed);
                    let wait = response
                        .headers()
                        .get("Retry-After")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1);
                    tokio::time::sleep(Duration::from_secs(wait).min(Duration::from_secs(1))).await;
                }
                Ok(response) => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    tracing::warn!("{path} answered {status}: {text}");
                    return None;
                }
                Err(_) => {
                    self.counters
                        .connection_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        None
    }

    /// Runs one reference flow and waits for its three messages.
    async fn flow(&self) -> Result<Flow, Failed> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let visit = format!("{}-{n}", self.run);
        let (sender, mut arrivals) = mpsc::unbounded_channel();
        self.sink.expect(&visit, sender);
        let result = async {
            let started = Instant::now();
            let input = json!({
                "workflow": "bench_visit",
                "input": {"patient": {"id": visit}, "visit_id": visit, "amount_fen": 1500},
            });
            self.post("/api/v1/instances", &input, Some(&format!("start-{visit}")))
                .await
                .ok_or(Failed::Refused)?;
            let event_sent = Instant::now();
            let event = json!({
                "type": "his.payment_received",
                "correlation_key": visit,
                "payload": {"amount_fen": 1500},
                "message_id": format!("paid-{visit}"),
            });
            self.post("/api/v1/events", &event, None)
                .await
                .ok_or(Failed::Refused)?;
            let (mut paid, mut done) = (None, None);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while done.is_none() || paid.is_none() {
                match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                    Ok(Some((template, at))) => match template.as_str() {
                        "bench_paid" => paid = Some(at),
                        "bench_done" => done = Some(at),
                        _ => {}
                    },
                    _ => return Err(Failed::TimedOut),
                }
            }
            let (paid, done) = (paid.unwrap_or(started), done.unwrap_or(started));
            Ok(Flow {
                start_to_complete: (done - started).saturating_sub(FLOW_TIMER),
                event_to_effect: paid.saturating_duration_since(event_sent),
                timer_lag: done
                    .saturating_duration_since(paid)
                    .saturating_sub(FLOW_TIMER),
                started_at: started,
                done_at: done,
            })
        }
        .await;
        self.sink.forget(&visit);
        if matches!(result, Err(Failed::TimedOut)) {
            self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

/// What one step of load gave.
pub struct Step {
    pub flows: Vec<Flow>,
    pub counters: CounterValues,
    /// The part of the step that counts: from `warm_up` after its start to
    /// when clients stop starting flows.
    pub window: (Instant, Instant),
}

impl Step {
    /// Flows started inside the window (and completed, whenever). In a
    /// closed loop flows start as fast as they complete, so this counts
    /// throughput even when flows take longer than the window, past
    /// saturation.
    #[must_use]
    pub fn in_window(&self) -> usize {
        self.flows
            .iter()
            .filter(|f| f.started_at >= self.window.0 && f.started_at < self.window.1)
            .count()
    }

    /// Flows that completed after the window opened: what the CPU read at
    /// its opening and after the step drained was spent on.
    #[must_use]
    pub fn completed_since_opening(&self) -> usize {
        self.flows
            .iter()
            .filter(|f| f.done_at >= self.window.0)
            .count()
    }

    #[must_use]
    pub fn rate(&self) -> f64 {
        let seconds = (self.window.1 - self.window.0).as_secs_f64();
        if seconds > 0.0 {
            self.in_window() as f64 / seconds
        } else {
            0.0
        }
    }
}

/// `clients` closed-loop clients for `run_for`; flows started in the first
/// `warm_up` are not counted. `at_window` runs when the counted window
/// opens and again when every flow has drained (CPU and commit readings).
pub async fn drive<F, Fut>(
    target: &Arc<Target>,
    clients: usize,
    run_for: Duration,
    warm_up: Duration,
    mut at_window: F,
) -> Step
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _ = target.counters.take();
    let began = Instant::now();
    let stop_at = began + run_for;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut flows = Vec::new();
            while Instant::now() < stop_at {
                match target.flow().await {
                    Ok(flow) => flows.push(flow),
                    Err(Failed::Refused) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(Failed::TimedOut) => {}
                }
            }
            flows
        }));
    }
    tokio::time::sleep_until((began + warm_up).into()).await;
    let opened = Instant::now();
    at_window().await;
    tokio::time::sleep_until(stop_at.into()).await;
    let closed = Instant::now();
    let mut flows = Vec::new();
    for task in tasks {
        flows.extend(task.await.unwrap_or_default());
    }
    at_window().await;
    Step {
        flows,
        counters: target.counters.take(),
        window: (opened, closed),
    }
}

/// The `q` quantile of `values` in ms (0 when empty).
#[must_use]
pub fn quantile_ms(values: &mut [Duration], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let index = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    values[index].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let mut values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert!((quantile_ms(&mut values, 0.5) - 50.0).abs() < 1e-9);
        assert!((quantile_ms(&mut values, 0.99) - 99.0).abs() < 1e-9);
        assert!((quantile_ms(&mut values, 1.0) - 100.0).abs() < 1e-9);
        assert!(quantile_ms(&mut [], 0.5).abs() < 1e-9);
        let mut one = [Duration::from_millis(7)];
        assert!((quantile_ms(&mut one, 0.99) - 7.0).abs() < 1e-9);
    }
}
