//! Startup wiring: builds the store, limiter, catalogue, health checks and router from a
//! validated config, and runs the `serve` and `chat` modes with graceful shutdown.
//! This is the only place that knows which backend sits behind each port; [`leading`] runs
//! what only the leader runs and [`chat`] wires the chat platforms.

mod chat;
mod leading;
mod schedules;

use chat::*;
use leading::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actions::alerts::{AlertRoute, AlertRouting, AlertService, Escalation};
use crate::actions::escalation::{EscalationPorts, EscalationSettings, Escalations};
use crate::actions::health::{HealthChecks, HealthMonitor};
use crate::actions::oncall::{OnCall, ScheduleEntry};
use crate::actions::schedules::Schedules;
use crate::adapters::PlatformOutbound;
use crate::adapters::console::{Console, ConsoleOutbound};
use crate::adapters::discord::{DiscordApi, DiscordState};
use crate::adapters::inbound::Inbound;
use crate::adapters::slack::{SlackApi, SlackState};
use crate::adapters::telegram::{TelegramApi, TelegramInbound};
use crate::adapters::throttle::{Throttled, default_spacing};
use crate::catalog::{Catalog, CatalogErrors};
use crate::config::{Config, LimiterBackend, SlackReceive};
use crate::domain::{Directory, Platform};
use crate::hooks::HookState;
use crate::http::{self, HttpState, ServerLimits};
use crate::leader::{Election, LeaderGate, Leadership, run_while_leader};
use crate::limiter::{MemoryLimiter, RedisLimiter};
use crate::liveness::{AdapterState, Liveness};
use crate::metrics::Metrics;
use crate::notify::{AlertmanagerSilences, SignedWebhook};
use crate::outbox::{Deliverer, OutboxSignal};
use crate::paging::HttpPager;
use crate::ports::{
    ChatOutbound, Clock, EnvLookup, GroupNotifier, OutboundTarget, Pager, RateLimiter, SilenceSync,
    Store, StoreError, SystemClock,
};
use crate::router::authz::BuiltinAccess;
use crate::router::{ApprovalSettings, GlobalLimits, Router, RouterDeps};
use crate::runner::ProcessRunner;
use crate::scheduler::Scheduler;
use crate::store::Access;
use crate::sweeper::Sweeper;
use schedules::{report_name_free, schedules};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid command files:\n{0}")]
    Catalog(CatalogErrors),
    #[error("invalid config: {0}")]
    Config(String),
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error("cannot connect to the Redis rate limiter: {0}")]
    Limiter(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl From<CatalogErrors> for StartupError {
    fn from(e: CatalogErrors) -> Self {
        StartupError::Catalog(e)
    }
}

/// A fully wired opsbot, ready to serve.
pub struct App {
    pub config: Config,
    pub router: Arc<Router>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub alerts: Arc<AlertService>,
    pub liveness: Arc<Liveness>,
    /// The path every adapter hands its events to (the console too).
    pub inbound: Inbound,
    /// Where the bot's own messages go (alert groups, sweep notices).
    outbound: Arc<dyn ChatOutbound>,
    adapters: Adapters,
    health: Arc<HealthChecks>,
    clock: Arc<dyn Clock>,
    /// Whether this replica leads: it alone runs the work that must happen once per cluster.
    leader: LeaderGate,
    /// The election on Postgres, until [`App::start_election`] starts it (SQLite has none:
    /// its one process always leads).
    election: std::sync::Mutex<Option<Election>>,
    /// This process's name among replicas (`hostname:pid:random`).
    replica: Arc<str>,
    /// Wakes this process's outbox deliverer when something is queued here.
    outbox: OutboxSignal,
}

/// The `[alerts]` routes as the alert service uses them.
fn alert_routing(config: &Config) -> AlertRouting {
    let a = &config.alerts;
    let target = |platform, channel: &String| OutboundTarget {
        platform,
        channel_id: channel.clone(),
        thread: None,
    };
    let routes = a
        .routes
        .iter()
        .map(|r| AlertRoute {
            matchers: r.matchers.clone(),
            target: target(r.platform, &r.channel),
            continue_matching: r.continue_matching,
            escalation: r.escalation.clone(),
        })
        .collect();
    AlertRouting {
        routes,
        default: a
            .default_route
            .as_ref()
            .map(|d| target(d.platform, &d.channel)),
        default_escalation: (a.default_route.as_ref()).and_then(|d| d.escalation.clone()),
        max_listed: a.max_listed,
    }
}

/// Loads and validates the command catalogue named by the config, with the secrets it reads
/// from the environment (`env`).
pub fn load_catalog(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Catalog, CatalogErrors> {
    let catalog = Catalog::load_dir(&config.catalog_dir(), &crate::router::builtins::NAMES)?;
    catalog.check_secrets(env)?;
    let checks: Vec<&str> = config.checks.iter().map(|c| c.name.as_str()).collect();
    catalog.check_health_refs(&checks)?;
    catalog.check_schedule_args(&|spec, args| {
        crate::router::bind::bind_named(spec, args).map(|_| ())
    })?;
    report_name_free(config, &catalog)?;
    Ok(catalog)
}

/// Replacements for the ports tests need to control; `None` keeps the real one.
#[derive(Default)]
pub struct Overrides {
    pub clock: Option<Arc<dyn Clock>>,
    pub env: Option<EnvLookup>,
    /// Where the bot's own messages (alert groups) go; default: the console.
    pub outbound: Option<Arc<dyn ChatOutbound>>,
    /// This store instead of opening `store.database_url`: two routers on one SQLite store,
    /// which one process alone may open.
    pub store: Option<Arc<dyn Store>>,
    /// How `store.database_url` is opened: as its one user (`serve`, `chat`) or a reader.
    pub access: Access,
    /// Where `/page` and escalation steps send pages instead of the `[[paging.services]]`.
    pub pager: Option<Arc<dyn Pager>>,
}

/// The parts most others are built on.
struct Core {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    outbound: Arc<dyn ChatOutbound>,
    /// Wakes this process's outbox deliverer; the router's producers hold a clone.
    outbox: OutboxSignal,
    /// `/readyz`'s view of the loops, adapters and paging services.
    liveness: Arc<Liveness>,
    /// Pages through the `[[paging.services]]`.
    pager: Arc<dyn Pager>,
}

impl App {
    pub async fn build(config: Config) -> Result<App, StartupError> {
        Self::build_with(config, Overrides::default()).await
    }

    pub async fn build_with(config: Config, overrides: Overrides) -> Result<App, StartupError> {
        let env = (overrides.env).unwrap_or_else(|| Arc::new(|name| std::env::var(name).ok()));
        let catalog = load_catalog(&config, &*env)?;
        let checks = crate::probes::build_checks(&config.checks).map_err(StartupError::Config)?;
        let store = match overrides.store {
            Some(store) => store,
            None => {
                let (url, max) = (&config.store.database_url, config.store.max_connections);
                crate::store::connect(url, max, overrides.access).await?
            }
        };
        let limiter = rate_limiter(&config.limits.backend).await?;
        let metrics = Arc::new(Metrics::new());
        metrics.known(
            crate::router::builtins::NAMES
                .into_iter()
                .chain(catalog.iter().map(|spec| spec.name.as_str())),
            catalog.iter().map(|spec| spec.name.as_str()),
            &chat_platforms(&config),
        );
        let apis = Apis::new(&config)?;
        let outbound = (overrides.outbound)
            .unwrap_or_else(|| platform_outbound(&config, &apis, metrics.clone()));
        let clock: Arc<dyn Clock> = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let liveness = Arc::new(Liveness::default());
        let pager: Arc<dyn Pager> = match overrides.pager {
            Some(pager) => pager,
            None => Arc::new(HttpPager::new(
                config.paging.services.clone(),
                metrics.clone(),
                liveness.clone(),
                clock.clone(),
            )),
        };
        let core = Core {
            store,
            metrics,
            clock,
            outbound,
            outbox: OutboxSignal::default(),
            liveness,
            pager,
        };
        let replica: Arc<str> = replica_name().into();
        let alerts = alert_service(&config, &core, &replica);
        let directory = Arc::new(config.directory.clone());
        let oncall = Arc::new(oncall(&config, &core, directory.clone()));
        let escalations = escalations(&config, &core, oncall.clone(), directory);
        alerts.escalate_with(escalations.clone());
        let health = Arc::new(HealthChecks::new(checks));
        let schedules = Arc::new(schedules(&config, &catalog, &core, &health, &replica));
        let deps = router_deps(
            &config,
            &core,
            catalog,
            Services {
                alerts: alerts.clone(),
                oncall,
                escalations,
                health: health.clone(),
                schedules,
            },
            limiter,
            env,
        );
        let router = Arc::new(Router::new(deps?));
        let inbound = Inbound::new(router.clone(), core.store.clone());
        let adapters = Adapters::new(&config, apis, &inbound, &core.outbound)?;
        let (leader, election) = leadership(&config, &core, &replica);
        // A reader beside a running `serve` (its SQLite gate says "leader") leaves delivery
        // to that `serve`.
        if overrides.access == Access::Exclusive {
            spawn_alert_delivery(&alerts, &leader);
        }
        Ok(App {
            config,
            router,
            store: core.store,
            metrics: core.metrics,
            alerts,
            liveness: core.liveness,
            inbound,
            outbound: core.outbound,
            adapters,
            health,
            clock: core.clock,
            leader,
            election: std::sync::Mutex::new(election),
            replica,
            outbox: core.outbox,
        })
    }

    /// An app for a command that reads beside a running `serve` (`postmortem`): its SQLite
    /// store is opened without the lock `serve` holds.
    pub async fn build_reader(config: Config) -> Result<App, StartupError> {
        let overrides = Overrides {
            access: Access::Shared,
            ..Overrides::default()
        };
        Self::build_with(config, overrides).await
    }

    /// The periodic sweep, queuing its notices for this app's deliverer.
    pub fn sweeper(&self) -> Sweeper {
        Sweeper::new(self.router.clone(), self.outbox.clone())
    }

    /// The scheduler's loop, running due command slots through this app's router.
    pub fn scheduler(&self) -> Scheduler {
        Scheduler::new(
            self.router.clone(),
            self.store.clone(),
            self.outbound.clone(),
            self.clock.clone(),
            self.outbox.clone(),
        )
    }

    /// The outbox's deliverer, posting through this app's outbound.
    pub fn deliverer(&self) -> Deliverer {
        Deliverer::new(
            self.store.clone(),
            self.outbound.clone(),
            self.clock.clone(),
            self.outbox.clone(),
            self.metrics.clone(),
        )
    }

    pub fn http_state(&self) -> HttpState {
        let a = &self.adapters;
        HttpState {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            hooks: HookState {
                alerts: self.alerts.clone(),
                alertmanager_token: self.config.alerts.alertmanager_token.clone(),
                webhook_secret: self.config.alerts.webhook_secret.clone(),
                clock: self.clock.clone(),
            },
            metrics_route: self.config.server.metrics_listen.is_none(),
            max_body_bytes: self.config.alerts.max_body_bytes,
            limits: self.server_limits(),
            liveness: self.liveness.clone(),
            leader: self.leader.clone(),
            replica: self.replica.clone(),
            telegram: a.telegram.clone().filter(|t| t.serves_webhook()),
            slack: a.slack.clone(),
            discord: a.discord.clone().filter(|d| d.serves_interactions()),
        }
    }

    fn server_limits(&self) -> ServerLimits {
        let s = &self.config.server;
        ServerLimits {
            header_read: s.header_read_timeout.0,
            request: s.request_timeout.0,
            max_connections: s.max_connections,
        }
    }

    /// Binds the configured HTTP address.
    pub async fn bind(&self) -> Result<TcpListener, StartupError> {
        let addr = self.config.server.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })
    }

    /// Binds `server.metrics_listen`, when set: `/metrics` is served there alone.
    pub async fn bind_metrics(&self) -> Result<Option<TcpListener>, StartupError> {
        let Some(addr) = self.config.server.metrics_listen else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Some(listener))
    }

    /// Serves `/metrics` on its own listener (from [`App::bind_metrics`]) until `shutdown`.
    pub fn spawn_metrics(&self, listener: TcpListener, shutdown: &CancellationToken) {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving /metrics on its own listener");
        }
        tokio::spawn(http::serve_metrics(
            listener,
            self.http_state(),
            shutdown.clone(),
        ));
    }

    /// `opsbot serve`: HTTP plus every configured adapter, until Ctrl-C or SIGTERM.
    pub async fn serve(self) -> Result<(), StartupError> {
        let listener = self.bind().await?;
        let metrics_listener = self.bind_metrics().await?;
        let shutdown = CancellationToken::new();
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: self.config.server.listen,
            source,
        })?;
        tracing::info!(
            %addr,
            commands = self.router.catalog().len(),
            store = self.config.store_location(),
            replica = %self.replica,
            "opsbot serving HTTP"
        );
        let http = tokio::spawn(http::serve(listener, self.http_state(), shutdown.clone()));
        if let Some(listener) = metrics_listener {
            self.spawn_metrics(listener, &shutdown);
        }
        // Stopped last, after the commands in flight have finished and their results have
        // been delivered: this replica keeps leading (and delivering) until then.
        let finishing = CancellationToken::new();
        let election = self.start_election(&finishing);
        self.spawn_adapters(&shutdown);
        self.spawn_outbox(&finishing);
        self.spawn_sweeper(&shutdown);
        self.spawn_scheduler(&shutdown);
        tokio::spawn(crate::memory::trim_forever(shutdown.clone()));
        self.spawn_health(&shutdown);
        self.spawn_console();
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
        let grace = self.config.server.shutdown_grace.0;
        let deadline = tokio::time::Instant::now() + grace;
        if tokio::time::timeout_at(deadline, http).await.is_err() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "HTTP server did not stop within the grace period"
            );
        }
        self.drain(deadline).await;
        self.flush_outbox(deadline).await;
        finishing.cancel();
        // Released at once, so another replica need not wait for the lease to lapse.
        if let Some(election) = election {
            let _ = tokio::time::timeout_at(deadline, election).await;
        }
        Ok(())
    }

    /// On the leader, waits (until `deadline`) for the outbox to be delivered, so the results
    /// of commands that finished during shutdown are posted now rather than by the next leader
    /// (which, on SQLite, is this process's next start).
    async fn flush_outbox(&self, deadline: tokio::time::Instant) {
        if self.leader.current() == Leadership::Follower {
            return;
        }
        let mut logged = false;
        loop {
            let pending = match self.store.outbox_depth().await {
                Ok(depth) => depth.pending,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the outbox at shutdown; leaving what is queued to the next leader");
                    return;
                }
            };
            if pending == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    pending,
                    "shutdown grace period over; the next leader delivers the messages still queued"
                );
                return;
            }
            if !logged {
                tracing::info!(pending, "delivering queued messages before stopping");
                logged = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The console on stdin in `serve`, when enabled with a user.
    fn spawn_console(&self) {
        let c = &self.config.console;
        let Some(user) = c.user.as_ref().filter(|_| c.enabled) else {
            if self.adapters.none() {
                tracing::info!(
                    "no chat platform is configured (console disabled or without a user); serving HTTP only"
                )
            }
            return;
        };
        let console = Console::new(self.inbound.clone(), user, &c.channel);
        tracing::info!(user = %user, "console adapter reading commands from stdin");
        self.liveness.set_adapter("console", AdapterState::Up);
        tokio::spawn(async move {
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            if let Err(e) = console.run(stdin, tokio::io::stdout()).await {
                tracing::warn!(error = %e, "console adapter stopped");
            }
            tracing::info!("console input closed; still serving HTTP");
        });
    }

    /// Waits (until `deadline`) for commands already acknowledged to the platforms to be
    /// answered: they will not be delivered again, so leaving early would lose the answer.
    /// Runbooks still running at the deadline are cut off; their requests are marked
    /// interrupted by the next sweep (here or on another replica), never run again.
    async fn drain(&self, deadline: tokio::time::Instant) {
        let in_flight = self.router.in_flight();
        in_flight.close();
        if in_flight.is_empty() {
            return;
        }
        tracing::info!(
            in_flight = in_flight.len(),
            "waiting for acknowledged commands to be answered"
        );
        if tokio::time::timeout_at(deadline, in_flight.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                abandoned = in_flight.len(),
                "shutdown grace period over; abandoning commands still being answered"
            );
        }
    }

    /// `opsbot chat`: the console on stdin/stdout until end of input. HTTP is served alongside
    /// (health checks may probe it); if the port is taken, chat goes on without it.
    pub async fn chat(self, name: &str, channel: Option<&str>) -> Result<(), StartupError> {
        let shutdown = CancellationToken::new();
        let http = match self.bind().await {
            Ok(listener) => Some(tokio::spawn(http::serve(
                listener,
                self.http_state(),
                shutdown.clone(),
            ))),
            Err(e) => {
                tracing::warn!("{}", chat_without_http(&e));
                None
            }
        };
        match self.bind_metrics().await {
            Ok(Some(listener)) => self.spawn_metrics(listener, &shutdown),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "/metrics unavailable in this chat session"),
        }
        // Notices for other platforms' channels go there, not to this terminal. On Postgres,
        // chat takes no part in the election (it would stop the leader's polling while it
        // led), so sweeps and the outbox are left to the `serve` replicas.
        self.spawn_outbox(&shutdown);
        self.spawn_sweeper(&shutdown);
        self.spawn_scheduler(&shutdown);
        let channel = channel.unwrap_or(&self.config.console.channel);
        let console = Console::new(self.inbound.clone(), name, channel);
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            eprintln!("opsbot console as {name} in #{channel}; type /help, Ctrl-D to quit.");
        }
        let stdin = tokio::io::BufReader::new(tokio::io::stdin());
        let result = console.run(stdin, tokio::io::stdout()).await;
        shutdown.cancel();
        if let Some(http) = http {
            let _ = tokio::time::timeout(self.config.server.shutdown_grace.0, http).await;
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "console input failed");
        }
        Ok(())
    }
}

/// Why `chat` goes on without HTTP, and what that changes: health checks of that address
/// now reach whatever holds it (usually a running `opsbot serve`), not this session.
fn chat_without_http(e: &StartupError) -> String {
    let addr = match e {
        StartupError::Bind { addr, .. } => addr.to_string(),
        _ => "server.listen".into(),
    };
    let why = match e {
        StartupError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
            format!("{addr} is already in use, probably by a running `opsbot serve`")
        }
        StartupError::Bind { source, .. } => format!("cannot listen on {addr}: {source}"),
        other => other.to_string(),
    };
    format!(
        "{why}: this chat session serves no HTTP, so /status checks of {addr} reach that process, not this one (set another server.listen, e.g. OPSBOT_SERVER__LISTEN=127.0.0.1:0, to have both)"
    )
}

async fn rate_limiter(backend: &LimiterBackend) -> Result<Arc<dyn RateLimiter>, StartupError> {
    Ok(match backend {
        LimiterBackend::Memory => Arc::new(MemoryLimiter::new()),
        LimiterBackend::Redis { url } => Arc::new(
            RedisLimiter::connect(url.expose_secret(), "opsbot:rl:")
                .await
                .map_err(|e| StartupError::Limiter(e.0))?,
        ),
    })
}

fn alert_service(config: &Config, core: &Core, replica: &str) -> Arc<AlertService> {
    let notifiers: Vec<Arc<dyn GroupNotifier>> = (config.alerts.webhooks.iter())
        .map(|w| {
            Arc::new(SignedWebhook::new(w.url.clone(), w.secret.clone())) as Arc<dyn GroupNotifier>
        })
        .collect();
    AlertService::start(
        core.store.clone(),
        core.metrics.clone(),
        core.outbound.clone(),
        notifiers,
        core.clock.clone(),
        alert_routing(config),
        replica,
    )
}

fn oncall(config: &Config, core: &Core, directory: Arc<Directory>) -> OnCall {
    let schedules = (config.oncall.schedules.iter())
        .map(|s| ScheduleEntry {
            schedule: s.schedule.clone(),
            announce: s.announce.as_ref().map(|t| OutboundTarget {
                platform: t.platform,
                channel_id: t.channel.clone(),
                thread: None,
            }),
        })
        .collect();
    OnCall::new(
        schedules,
        directory,
        core.store.clone(),
        core.clock.clone(),
        core.metrics.clone(),
    )
}

fn escalations(
    config: &Config,
    core: &Core,
    oncall: Arc<OnCall>,
    directory: Arc<Directory>,
) -> Arc<Escalations> {
    let e = &config.escalation;
    Arc::new(Escalations::new(
        EscalationSettings {
            policies: e.policies.iter().map(|p| p.policy.clone()).collect(),
            by_severity: config.incidents.escalation.clone(),
            severities: Arc::new(config.incidents.scheme.clone()),
            slack_groups: e.slack_groups.clone(),
        },
        alert_routing(config),
        EscalationPorts {
            store: core.store.clone(),
            clock: core.clock.clone(),
            oncall,
            directory,
            pager: core.pager.clone(),
            metrics: core.metrics.clone(),
        },
    ))
}

/// The services built before the router, which it holds.
struct Services {
    alerts: Arc<AlertService>,
    oncall: Arc<OnCall>,
    escalations: Arc<Escalations>,
    health: Arc<HealthChecks>,
    schedules: Arc<Schedules>,
}

/// What the router is given: the config's policies as the router's types, and the ports.
fn router_deps(
    config: &Config,
    core: &Core,
    catalog: Catalog,
    services: Services,
    limiter: Arc<dyn RateLimiter>,
    env: EnvLookup,
) -> Result<RouterDeps, StartupError> {
    let (l, b, a) = (&config.limits, &config.builtins, &config.approvals);
    let Services {
        alerts,
        oncall,
        escalations,
        health,
        schedules,
    } = services;
    Ok(RouterDeps {
        bot_name: config.bot.name.clone(),
        catalog: Arc::new(catalog),
        oncall,
        escalations,
        schedules,
        directory: Arc::new(config.directory.clone()),
        access: BuiltinAccess {
            status: b.status_roles.clone(),
            audit: b.audit_roles.clone(),
            alerts: b.alerts_roles.clone(),
            respond: b.responder_roles.clone(),
            oncall: b.oncall_roles.clone(),
            page: b.page_roles.clone(),
            schedule: b.schedule_roles.clone(),
        },
        alerts,
        pager: core.pager.clone(),
        silence_sync: (config.alerts.alertmanager_url.as_deref())
            .map(|url| Arc::new(AlertmanagerSilences::new(url)) as Arc<dyn SilenceSync>),
        escalation: Escalation {
            remind_every: config.alerts.remind_every.map(|d| d.0),
            oncall: config.alerts.oncall_role.clone(),
            schedule: config.alerts.oncall_schedule.clone(),
        },
        severities: Arc::new(config.incidents.scheme.clone()),
        limits: GlobalLimits {
            global: l.global,
            per_user: l.per_user,
            per_channel: l.per_channel,
            per_command: l.per_command,
        },
        limiter,
        store: core.store.clone(),
        clock: core.clock.clone(),
        health,
        metrics: core.metrics.clone(),
        runner: Arc::new(ProcessRunner::new().map_err(StartupError::Config)?),
        outbox: core.outbox.clone(),
        approvals: ApprovalSettings {
            approve_emoji: a.approve_emoji.clone(),
            deny_emoji: a.deny_emoji.clone(),
            break_glass_roles: a.break_glass_roles.clone(),
        },
        env,
        base_dir: config.base_dir.clone(),
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
