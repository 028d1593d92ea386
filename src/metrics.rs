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

pub struct Metrics {
    registry: Mutex<Registry>,
    commands: Family<CommandLabels, Counter>,
    latency: Family<NameLabel, Histogram>,
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
        Self {
            registry: Mutex::new(registry),
            commands,
            latency,
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

    /// OpenMetrics text for `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry poisoned");
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
