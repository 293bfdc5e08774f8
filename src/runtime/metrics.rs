//! What `/metrics` shows operators (Prometheus text format): instances
//! started and finished by workflow and outcome, transitions, how late
//! timers fire, how long effects take from being planned to being done, by
//! kind and channel, and effect failures. Labels are workflow names, step
//! kinds, channels and outcomes: never a tenant's or a person's data.
//! The outbox and timer backlog is read from the store at each scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkflowLabel {
    pub workflow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub workflow: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EffectLabels {
    pub kind: String,
    pub channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: String,
    /// `retry` or `final`.
    pub outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds from 1 ms to about 65 s.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    started: Family<WorkflowLabel, Counter>,
    finished: Family<OutcomeLabels, Counter>,
    transitions: Family<WorkflowLabel, Counter>,
    timer_lag: Histogram,
    effect_latency: HistogramFamily<EffectLabels>,
    effect_failures: Family<FailureLabels, Counter>,
    outbox_pending: Gauge,
    outbox_due: Gauge,
    timers_pending: Gauge,
}

/// The backlog a scrape reads from the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    pub outbox_pending: i64,
    pub outbox_due: i64,
    pub timers_pending: i64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    #[must_use]
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("o2flow");
        let started = Family::<WorkflowLabel, Counter>::default();
        registry.register(
            "instances_started",
            "Instances started, by workflow",
            started.clone(),
        );
        let finished = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "instances_finished",
            "Instances that ended, by workflow and final status",
            finished.clone(),
        );
        let transitions = Family::<WorkflowLabel, Counter>::default();
        registry.register(
            "transitions",
            "Committed transitions (starts, events, timers), by workflow",
            transitions.clone(),
        );
        let timer_lag = latency_buckets();
        registry.register(
            "timer_lag_seconds",
            "How long after its due time a timer's transition committed",
            timer_lag.clone(),
        );
        let effect_latency: HistogramFamily<EffectLabels> =
            Family::new_with_constructor(latency_buckets);
        registry.register(
            "effect_latency_seconds",
            "From an effect's planning commit to its result's commit, by kind and channel",
            effect_latency.clone(),
        );
        let effect_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "effect_failures",
            "Failed effect attempts (provider errors, channels down), by kind; `final` when no retry is left",
            effect_failures.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending",
            "Effects not yet done (due now or retrying later)",
            outbox_pending.clone(),
        );
        let outbox_due = Gauge::default();
        registry.register(
            "outbox_due",
            "Effects due now and not yet done: the backlog",
            outbox_due.clone(),
        );
        let timers_pending = Gauge::default();
        registry.register("timers_pending", "Armed timers", timers_pending.clone());
        Metrics {
            registry,
            started,
            finished,
            transitions,
            timer_lag,
            effect_latency,
            effect_failures,
            outbox_pending,
            outbox_due,
            timers_pending,
        }
    }

    /// A transition committed: `was` is the instance's status before
    /// (`None` for a start), `now` after.
    pub fn transition(&self, workflow: &str, was: Option<&str>, now: &str) {
        let label = WorkflowLabel {
            workflow: workflow.to_owned(),
        };
        self.transitions.get_or_create(&label).inc();
        if was.is_none() {
            self.started.get_or_create(&label).inc();
        }
        let active = crate::engine::Status::Active.as_str();
        if now != active && was.is_none_or(|was| was == active) {
            self.finished
                .get_or_create(&OutcomeLabels {
                    workflow: workflow.to_owned(),
                    outcome: now.to_owned(),
                })
                .inc();
        }
    }

    pub fn timer_fired(&self, lag: chrono::Duration) {
        self.timer_lag.observe(seconds(lag));
    }

    pub fn effect_done(&self, kind: &str, channel: &str, took: chrono::Duration) {
        self.effect_latency
            .get_or_create(&EffectLabels {
                kind: kind.to_owned(),
                channel: channel.to_owned(),
            })
            .observe(seconds(took));
    }

    pub fn effect_failed(&self, kind: &str, last: bool) {
        self.effect_failures
            .get_or_create(&FailureLabels {
                kind: kind.to_owned(),
                outcome: if last { "final" } else { "retry" }.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the backlog as read now.
    #[must_use]
    pub fn render(&self, backlog: Backlog) -> String {
        self.outbox_pending.set(backlog.outbox_pending);
        self.outbox_due.set(backlog.outbox_due);
        self.timers_pending.set(backlog.timers_pending);
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[allow(clippy::cast_precision_loss)]
fn seconds(d: chrono::Duration) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_starts_ends_and_lags_without_personal_labels() {
        let metrics = Metrics::new();
        metrics.transition("visit", None, "active");
        metrics.transition("visit", Some("active"), "active");
        metrics.transition("visit", Some("active"), "completed");
        // A commit on an instance that had ended already is not a second end.
        metrics.transition("visit", Some("completed"), "completed");
        metrics.timer_fired(chrono::Duration::milliseconds(3));
        metrics.effect_done("send", "webhook", chrono::Duration::milliseconds(20));
        metrics.effect_failed("pay", false);
        let text = metrics.render(Backlog {
            outbox_pending: 4,
            outbox_due: 1,
            timers_pending: 7,
        });
        assert!(text.contains("o2flow_instances_started_total{workflow=\"visit\"} 1"));
        assert!(text.contains("o2flow_transitions_total{workflow=\"visit\"} 4"));
        assert!(text.contains(
            "o2flow_instances_finished_total{workflow=\"visit\",outcome=\"completed\"} 1"
        ));
        assert!(text.contains("o2flow_timer_lag_seconds_count 1"));
        assert!(text.contains("o2flow_timer_lag_seconds_bucket{le=\"0.004\"} 1"));
        assert!(text
            .contains("o2flow_effect_latency_seconds_count{kind=\"send\",channel=\"webhook\"} 1"));
        assert!(text.contains("o2flow_effect_failures_total{kind=\"pay\",outcome=\"retry\"} 1"));
        assert!(text.contains("o2flow_outbox_due 1"));
        assert!(text.contains("o2flow_timers_pending 7"));
        assert!(text.ends_with("# EOF\n"));
    }
}
