//! Prometheus metrics: commands by name and outcome, command and runbook latency, alert intake
//! and refused webhooks, chat delivery, each chat adapter's state and the build, escalation
//! steps, lateness and stops, and the encoder behind `/metrics`. Label values are bounded (unknown command names become
//! `unknown`), and every label combination known at start is there at zero from the first
//! scrape, so `rate()` and alerts on absent series work before the first event.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::domain::{EscalationPolicy, Notify, Outcome, Platform, RunState, StopReason};

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    endpoint: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PageLabels {
    service: String,
    action: &'static str,
    outcome: &'static str,
}

/// How one page ended (after the pager's own retries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageOutcome {
    /// The service took it.
    Sent,
    /// The service refused it for good (a 4xx such as PagerDuty's 400): never retried.
    Rejected,
    /// Still failing (transport, 429, 5xx) when the attempts ran out.
    Failed,
}

impl PageOutcome {
    const ALL: [PageOutcome; 3] = [Self::Sent, Self::Rejected, Self::Failed];

    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    policy: String,
    target: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// What one target of an escalation step came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// A message mentioning them (a person, a role's holders or group, the one on call) was
    /// queued.
    Notified,
    /// The schedule (layer) had nobody on call: the message says so and pings no one.
    NobodyOnCall,
    /// The paging service took the trigger.
    Paged,
    /// The page failed (after the pager's retries) or was refused.
    PageFailed,
}

impl StepOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Notified => "notified",
            Self::NobodyOnCall => "nobody_on_call",
            Self::Paged => "paged",
            Self::PageFailed => "page_failed",
        }
    }

    /// The outcomes a target of this kind can have.
    fn of(target: &Notify) -> &'static [StepOutcome] {
        match target {
            Notify::Schedule { .. } => &[Self::Notified, Self::NobodyOnCall],
            Notify::Person(_) | Notify::Role(_) => &[Self::Notified],
            Notify::Page(_) => &[Self::Paged, Self::PageFailed],
        }
    }
}

/// The `target` label of a step's target: its kind, never its name.
fn target_kind(target: &Notify) -> &'static str {
    match target {
        Notify::Schedule { .. } => "schedule",
        Notify::Person(_) => "person",
        Notify::Role(_) => "role",
        Notify::Page(_) => "page",
    }
}

/// The `action` label values of `opsbot_pages_total`.
pub const PAGE_ACTIONS: [&str; 3] = ["trigger", "acknowledge", "resolve"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    /// `release` or `debug`: a debug build in production is worth noticing.
    profile: &'static str,
}

/// The inbound endpoints whose refusals are counted: alert intake and the chat platforms'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    /// `/hooks/alertmanager` (bearer token).
    Alertmanager,
    /// `/hooks/alert` (HMAC signature).
    Alert,
    /// `/slack/*` (signing secret).
    Slack,
    /// `/discord/interactions` (Ed25519 signature).
    Discord,
    /// `/telegram/webhook` (secret token).
    Telegram,
}

/// Why a webhook was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Missing or wrong bearer token.
    Token,
    /// Missing, stale or wrong signature.
    Signature,
    /// Body over `alerts.max_body_bytes`.
    TooLarge,
    /// Not the expected JSON.
    BadJson,
}

impl Webhook {
    fn as_str(self) -> &'static str {
        match self {
            Webhook::Alertmanager => "alertmanager",
            Webhook::Alert => "alert",
            Webhook::Slack => "slack",
            Webhook::Discord => "discord",
            Webhook::Telegram => "telegram",
        }
    }

    /// The refusals this endpoint can give, its own authentication first ("bad_json" is any
    /// payload that is not what the endpoint takes).
    pub fn refusals(self) -> [Refusal; 3] {
        let auth = match self {
            Webhook::Alertmanager | Webhook::Telegram => Refusal::Token,
            Webhook::Alert | Webhook::Slack | Webhook::Discord => Refusal::Signature,
        };
        [auth, Refusal::TooLarge, Refusal::BadJson]
    }
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Token => "token",
            Refusal::Signature => "signature",
            Refusal::TooLarge => "too_large",
            Refusal::BadJson => "bad_json",
        }
    }
}

/// How a run can end with a duration (an interrupted run's end is not seen).
const RUN_ENDINGS: [RunState; 3] = [RunState::Succeeded, RunState::Failed, RunState::TimedOut];

/// The `kind`s of `opsbot_outbound_failures_total`.
const OUTBOUND_FAILURES: [&str; 3] = ["retry_after", "failed", "undeliverable"];

pub struct Metrics {
    registry: Mutex<Registry>,
    commands: Family<CommandLabels, Counter>,
    latency: Family<NameLabel, Histogram>,
    alerts_received: Counter,
    runs_finished: Family<KindLabel, Counter>,
    run_duration: Family<CommandLabels, Histogram>,
    outbound_failures: Family<KindLabel, Counter>,
    not_delivered: Family<PlatformLabel, Counter>,
    unreachable: Family<PlatformLabel, Counter>,
    alert_backlog: Gauge,
    adapter_up: Family<PlatformLabel, Gauge>,
    webhook_refused: Family<RefusalLabels, Counter>,
    leader: Gauge,
    audit_failures: Counter,
    outbox_pending: Gauge,
    outbox_oldest: Gauge,
    outbox_retried: Counter,
    outbox_given_up: Counter,
    pages: Family<PageLabels, Counter>,
    page_retries: Family<ServiceLabel, Counter>,
    escalation_steps: Family<StepLabels, Counter>,
    escalations_active: Gauge,
    escalation_lateness: Histogram,
    escalation_stops: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Self {
            commands: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            alerts_received: Counter::default(),
            runs_finished: Family::default(),
            // 0.1 s to about 27 minutes: runbooks range from an HTTP call to a backup.
            run_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.1, 2.0, 15))
            }),
            outbound_failures: Family::default(),
            not_delivered: Family::default(),
            unreachable: Family::default(),
            alert_backlog: Gauge::default(),
            adapter_up: Family::default(),
            webhook_refused: Family::default(),
            leader: Gauge::default(),
            audit_failures: Counter::default(),
            outbox_pending: Gauge::default(),
            outbox_oldest: Gauge::default(),
            outbox_retried: Counter::default(),
            outbox_given_up: Counter::default(),
            pages: Family::default(),
            page_retries: Family::default(),
            escalation_steps: Family::default(),
            escalations_active: Gauge::default(),
            // 10 ms to about 11 minutes: the sweeper looks every second, so most land under 1 s;
            // the tail is a leader that was down or a store that was slow.
            escalation_lateness: Histogram::new(exponential_buckets(0.01, 2.0, 17)),
            escalation_stops: Family::default(),
            registry: Mutex::new(Registry::with_prefix("opsbot")),
        };
        metrics.register(&mut metrics.registry.lock().expect("metrics registry poisoned"));
        metrics
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "build",
            "The running opsbot's version and build profile (always 1)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                profile: if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
            }),
        );
        registry.register(
            "commands",
            "Commands handled, by command and outcome",
            self.commands.clone(),
        );
        registry.register(
            "command_duration_seconds",
            "Time from receiving a command to its reply, audit included",
            self.latency.clone(),
        );
        registry.register(
            "alerts_received",
            "Alerts accepted and stored (redeliveries included)",
            self.alerts_received.clone(),
        );
        registry.register(
            "runs_finished",
            "Runbook executions, by final state",
            self.runs_finished.clone(),
        );
        registry.register(
            "runbook_duration_seconds",
            "How long a runbook's action ran, by command and how it ended (succeeded, failed, timed_out)",
            self.run_duration.clone(),
        );
        registry.register(
            "outbound_failures",
            "Bot messages that failed: retry_after (platform 429s), failed (retried), undeliverable (given up, logged)",
            self.outbound_failures.clone(),
        );
        registry.register(
            "messages_not_delivered",
            "Bot messages given up on after the outbound's own retries, each logged with its text (alert group messages are tried again later by the alert service)",
            self.not_delivered.clone(),
        );
        registry.register(
            "mentions_unreachable",
            "People a message meant to mention who have no identity on its platform (named in plain text instead)",
            self.unreachable.clone(),
        );
        registry.register(
            "alert_backlog_groups",
            "Alert groups waiting for chat delivery",
            self.alert_backlog.clone(),
        );
        registry.register(
            "adapter_up",
            "1 while every adapter of a configured chat platform receives events, else 0 (connecting, retrying or off; see /readyz for why)",
            self.adapter_up.clone(),
        );
        registry.register(
            "webhook_refused",
            "Alert webhooks refused, by endpoint and reason (token, signature, too_large, bad_json)",
            self.webhook_refused.clone(),
        );
        self.register_cluster(registry);
        self.register_escalations(registry);
    }

    /// Leadership, the audit log's refusals, the outbox and paging: what keeps a cluster's
    /// messages and pages flowing.
    fn register_cluster(&self, registry: &mut Registry) {
        registry.register(
            "leader",
            "1 while this replica leads (polls Telegram, holds the Discord gateway, runs scheduled checks, the heartbeat and sweeps), else 0; one replica of a cluster should show 1",
            self.leader.clone(),
        );
        registry.register(
            "audit_append_failures",
            "Audit records the store did not take; the request was not acted on (or, for a run already started, its result is reported with the gap)",
            self.audit_failures.clone(),
        );
        registry.register(
            "outbox_pending",
            "Chat messages queued in the outbox and not yet delivered (the whole cluster's, read from the store)",
            self.outbox_pending.clone(),
        );
        registry.register(
            "outbox_oldest_age_seconds",
            "How long the oldest undelivered message in the outbox has waited (0 when none)",
            self.outbox_oldest.clone(),
        );
        registry.register(
            "outbox_retried",
            "Outbox deliveries that failed and were scheduled again (after Retry-After or a backoff)",
            self.outbox_retried.clone(),
        );
        registry.register(
            "outbox_given_up",
            "Outbox messages given up on (the platform will never take them, or too many attempts), each logged with its text",
            self.outbox_given_up.clone(),
        );
        registry.register(
            "pages",
            "Pages sent to paging services ([[paging.services]]), by service, action (trigger, acknowledge, resolve) and outcome (sent, rejected: refused for good, failed: still failing after the retries); see /readyz for the last failure",
            self.pages.clone(),
        );
        registry.register(
            "page_retries",
            "Attempts at a page that a paging service did not take (transport error, 429, 5xx) and that were tried again, by service: a rising count is a paging service in trouble before pages fail",
            self.page_retries.clone(),
        );
    }

    fn register_escalations(&self, registry: &mut Registry) {
        registry.register(
            "escalation_steps",
            "Targets of escalation steps taken, by policy, target kind (schedule, person, role, page) and outcome (notified, nobody_on_call, paged, page_failed)",
            self.escalation_steps.clone(),
        );
        registry.register(
            "escalations_active",
            "Escalations under way (not stopped), the whole cluster's, read from the store at scrape",
            self.escalations_active.clone(),
        );
        registry.register(
            "escalation_step_lateness_seconds",
            "How long after its due time an escalation step was taken",
            self.escalation_lateness.clone(),
        );
        registry.register(
            "escalation_stops",
            "Escalations stopped, by reason (acknowledged, silenced, resolved, policy_removed)",
            self.escalation_stops.clone(),
        );
    }

    /// Creates at zero every series whose labels are known at start: each command (built-ins
    /// and the catalogue, and `unknown`) by outcome, each runbook by how a run ends, the
    /// configured chat platforms, the webhook refusals and the outbound failure kinds.
    pub fn known<'a>(
        &self,
        commands: impl IntoIterator<Item = &'a str>,
        runbooks: impl IntoIterator<Item = &'a str>,
        platforms: &[Platform],
    ) {
        for command in commands.into_iter().chain(["unknown"]) {
            for outcome in Outcome::ALL {
                let _ = self
                    .commands
                    .get_or_create(&command_labels(command, outcome.as_str()));
            }
            let _ = self.latency.get_or_create(&NameLabel {
                command: command.to_owned(),
            });
        }
        for runbook in runbooks {
            for state in RUN_ENDINGS {
                let _ = self
                    .run_duration
                    .get_or_create(&command_labels(runbook, state.as_str()));
            }
        }
        for state in RUN_ENDINGS {
            let _ = self.runs_finished.get_or_create(&KindLabel {
                kind: state.as_str(),
            });
        }
        for kind in OUTBOUND_FAILURES {
            let _ = self.outbound_failures.get_or_create(&KindLabel { kind });
        }
        for platform in platforms {
            let _ = self.not_delivered.get_or_create(&platform_label(*platform));
            let _ = self.unreachable.get_or_create(&platform_label(*platform));
            let _ = self.adapter_up.get_or_create(&platform_label(*platform));
        }
        let chat = platforms.iter().filter_map(|p| match p {
            Platform::Slack => Some(Webhook::Slack),
            Platform::Discord => Some(Webhook::Discord),
            Platform::Telegram => Some(Webhook::Telegram),
            Platform::Console => None,
        });
        for endpoint in [Webhook::Alertmanager, Webhook::Alert]
            .into_iter()
            .chain(chat)
        {
            for reason in endpoint.refusals() {
                let _ = self.webhook_refused.get_or_create(&RefusalLabels {
                    endpoint: endpoint.as_str(),
                    reason: reason.as_str(),
                });
            }
        }
    }

    /// An audit record the store refused.
    pub fn audit_append_failed(&self) {
        self.audit_failures.inc();
    }

    pub fn observe_command(&self, command: &str, outcome: Outcome, elapsed: Duration) {
        self.commands
            .get_or_create(&command_labels(command, outcome.as_str()))
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

    /// A runbook's action ended in `state` after running for `ran`.
    pub fn run_finished(&self, command: &str, state: RunState, ran: Duration) {
        self.runs_finished
            .get_or_create(&KindLabel {
                kind: state.as_str(),
            })
            .inc();
        self.run_duration
            .get_or_create(&command_labels(command, state.as_str()))
            .observe(ran.as_secs_f64());
    }

    pub fn outbound_failure(&self, kind: &'static str) {
        self.outbound_failures
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// A person to mention has no identity on `platform`.
    pub fn mention_unreachable(&self, platform: Platform) {
        self.unreachable
            .get_or_create(&platform_label(platform))
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

    pub fn webhook_refused(&self, endpoint: Webhook, reason: Refusal) {
        self.webhook_refused
            .get_or_create(&RefusalLabels {
                endpoint: endpoint.as_str(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Whether each platform's adapters are all up now (from `Liveness`, read at scrape).
    /// Whether this replica leads now.
    pub fn set_leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    pub fn adapters_up(&self, platforms: impl IntoIterator<Item = (Platform, bool)>) {
        for (platform, up) in platforms {
            self.adapter_up
                .get_or_create(&platform_label(platform))
                .set(i64::from(up));
        }
    }

    /// The outbox as the store shows it now: how many wait, the oldest for how long.
    pub fn outbox(&self, pending: u64, oldest: Duration) {
        self.outbox_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.outbox_oldest
            .set(i64::try_from(oldest.as_secs()).unwrap_or(i64::MAX));
    }

    pub fn outbox_retried(&self) {
        self.outbox_retried.inc();
    }

    pub fn outbox_given_up(&self) {
        self.outbox_given_up.inc();
    }

    /// Creates every configured paging service's series at zero.
    pub fn known_pagers<'a>(&self, services: impl IntoIterator<Item = &'a str>) {
        for service in services {
            let _ = (self.page_retries).get_or_create(&ServiceLabel {
                service: service.to_owned(),
            });
            for action in PAGE_ACTIONS {
                for outcome in PageOutcome::ALL {
                    let _ = self
                        .pages
                        .get_or_create(&page_labels(service, action, outcome));
                }
            }
        }
    }

    /// One page to `service` (a configured one: the label stays bounded) ended in `outcome`.
    pub fn page(&self, service: &str, action: &'static str, outcome: PageOutcome) {
        self.pages
            .get_or_create(&page_labels(service, action, outcome))
            .inc();
    }

    /// An attempt at a page to `service` (a configured one) failed and is tried again.
    pub fn page_retry(&self, service: &str) {
        (self.page_retries)
            .get_or_create(&ServiceLabel {
                service: service.to_owned(),
            })
            .inc();
    }

    /// Creates at zero each policy's step series (the outcomes its targets can have) and each
    /// stop reason's.
    pub fn known_escalations<'a>(&self, policies: impl IntoIterator<Item = &'a EscalationPolicy>) {
        for p in policies {
            for target in p.steps.iter().flat_map(|s| &s.notify) {
                for outcome in StepOutcome::of(target) {
                    let _ = (self.escalation_steps)
                        .get_or_create(&step_labels(&p.name, target, *outcome));
                }
            }
        }
        for why in StopReason::ALL {
            let _ = self.escalation_stops.get_or_create(&ReasonLabel {
                reason: why.as_str(),
            });
        }
    }

    /// One target of a step of `policy` (a configured one: the label stays bounded).
    pub fn escalation_step(&self, policy: &str, target: &Notify, outcome: StepOutcome) {
        (self.escalation_steps)
            .get_or_create(&step_labels(policy, target, outcome))
            .inc();
    }

    /// A step was taken `late` after it was due.
    pub fn escalation_step_late(&self, late: Duration) {
        self.escalation_lateness.observe(late.as_secs_f64());
    }

    pub fn escalation_stopped(&self, why: StopReason) {
        (self.escalation_stops)
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
    }

    /// Escalations under way, as the store counts them now.
    pub fn escalations_active(&self, n: u64) {
        (self.escalations_active).set(i64::try_from(n).unwrap_or(i64::MAX));
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

fn command_labels(command: &str, outcome: &'static str) -> CommandLabels {
    CommandLabels {
        command: command.to_owned(),
        outcome,
    }
}

fn page_labels(service: &str, action: &'static str, outcome: PageOutcome) -> PageLabels {
    PageLabels {
        service: service.to_owned(),
        action,
        outcome: outcome.as_str(),
    }
}

fn step_labels(policy: &str, target: &Notify, outcome: StepOutcome) -> StepLabels {
    StepLabels {
        policy: policy.to_owned(),
        target: target_kind(target),
        outcome: outcome.as_str(),
    }
}

fn platform_label(platform: Platform) -> PlatformLabel {
    PlatformLabel {
        platform: platform.to_string(),
    }
}
