//! Prometheus metrics: commands by name and outcome, command latency, and the encoder
//! behind `/metrics`. Label values are bounded (unknown command names become `unknown`).

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformLabel {
    platform: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    commands: Family<CommandLabels, Counter>,
    latency: Family<NameLabel, Histogram>,
    alerts_received: Counter,
    runs_finished: Family<KindLabel, Counter>,
    outbound_failures: Family<KindLabel, Counter>,
    not_delivered: Family<PlatformLabel, Counter>,
    alert_backlog: prometheus_client::metrics::gauge::Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("opsbot");
        let commands = Family::<CommandLabels, Counter>::default();
        let latency = Family::<NameLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "commands",
            "Commands handled, by command and outcome",
            commands.clone(),
        );
        registry.register(
            "command_duration_seconds",
            "Time from receiving a command to its reply, audit included",
            latency.clone(),
        );
        let alerts_received = Counter::default();
        registry.register(
            "alerts_received",
            "Alerts accepted and stored (redeliveries included)",
            alerts_received.clone(),
        );
        let runs_finished = Family::<KindLabel, Counter>::default();
        registry.register(
            "runs_finished",
            "Runbook executions, by final state",
            runs_finished.clone(),
        );
        let outbound_failures = Family::<KindLabel, Counter>::default();
        registry.register(
            "outbound_failures",
            "Bot messages that failed: retry_after (platform 429s), failed (retried), undeliverable (given up, logged)",
            outbound_failures.clone(),
        );
        let not_delivered = Family::<PlatformLabel, Counter>::default();
        registry.register(
            "messages_not_delivered",
            "Bot messages given up on after the outbound's own retries, each logged with its text (alert group messages are tried again later by the alert service)",
            not_delivered.clone(),
        );
        let alert_backlog = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "alert_backlog_groups",
            "Alert groups waiting for chat delivery",
            alert_backlog.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            commands,
            latency,
            alerts_received,
            runs_finished,
            outbound_failures,
            not_delivered,
            alert_backlog,
        }
    }

    pub fn observe_command(&self, command: &str, outcome: Outcome, elapsed: Duration) {
        self.commands
            .get_or_create(&CommandLabels {
                command: command.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
        self.latency
            .get_or_create(&NameLabel {
                command: command.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn alerts_received(&self, n: usize) {
        self.alerts_received.inc_by(n as u64);
    }

    pub fn run_finished(&self, state: &'static str) {
        self.runs_finished
            .get_or_create(&KindLabel { kind: state })
            .inc();
    }

    pub fn outbound_failure(&self, kind: &'static str) {
        self.outbound_failures
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    pub fn message_not_delivered(&self, platform: &str) {
        self.not_delivered
            .get_or_create(&PlatformLabel {
                platform: platform.to_owned(),
            })
            .inc();
    }

    pub fn alert_backlog(&self, groups: usize) {
        self.alert_backlog.set(groups as i64);
    }

    /// OpenMetrics text for `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry poisoned");
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
