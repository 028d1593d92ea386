//! Startup wiring: builds the store, limiter, catalogue, health checks and router from a
//! validated config, and runs the `serve` and `chat` modes with graceful shutdown.
//! This is the only place that knows which backend sits behind each port.

use std::net::SocketAddr;
use std::sync::Arc;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actions::alerts::{AlertRoute, AlertRouting, AlertService, Escalation};
use crate::actions::health::{HealthChecks, HealthMonitor};
use crate::adapters::PlatformOutbound;
use crate::adapters::console::{Console, ConsoleOutbound};
use crate::adapters::discord::{DiscordApi, DiscordState};
use crate::adapters::inbound::Inbound;
use crate::adapters::slack::{SlackApi, SlackState};
use crate::adapters::telegram::{TelegramApi, TelegramInbound};
use crate::adapters::throttle::{Throttled, default_spacing};
use crate::catalog::{Catalog, CatalogErrors};
use crate::config::{Config, LimiterBackend, SlackReceive};
use crate::domain::{Platform, ResponseTargets};
use crate::hooks::HookState;
use crate::http::{self, HttpState, ServerLimits};
use crate::leader::{Election, LeaderGate, Leadership, run_while_leader};
use crate::limiter::{MemoryLimiter, RedisLimiter};
use crate::liveness::{AdapterState, Liveness};
use crate::metrics::Metrics;
use crate::notify::{AlertmanagerSilences, SignedWebhook};
use crate::outbox::{Deliverer, OutboxSignal};
use crate::ports::{
    ChatOutbound, Clock, EnvLookup, GroupNotifier, OutboundTarget, RateLimiter, SilenceSync, Store,
    StoreError, SystemClock,
};
use crate::router::authz::BuiltinAccess;
use crate::router::{ApprovalSettings, GlobalLimits, Router, RouterDeps};
use crate::runner::ProcessRunner;
use crate::store::Access;
use crate::sweeper::Sweeper;

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
        })
        .collect();
    AlertRouting {
        routes,
        default: a
            .default_route
            .as_ref()
            .map(|d| target(d.platform, &d.channel)),
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
}

/// The parts most others are built on.
struct Core {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    outbound: Arc<dyn ChatOutbound>,
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
        let core = Core {
            store,
            metrics,
            clock: overrides.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            outbound,
        };
        let replica: Arc<str> = replica_name().into();
        let alerts = alert_service(&config, &core, &replica);
        let health = Arc::new(HealthChecks::new(checks));
        let deps = router_deps(
            &config,
            &core,
            catalog,
            alerts.clone(),
            limiter,
            health.clone(),
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
            liveness: Arc::new(Liveness::default()),
            inbound,
            outbound: core.outbound,
            adapters,
            health,
            clock: core.clock,
            leader,
            election: std::sync::Mutex::new(election),
            replica,
            outbox: OutboxSignal::default(),
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

    /// Starts electing the leader among the replicas on this store (Postgres; once, later
    /// calls do nothing). The task ends after `shutdown`, once it has released the lease.
    pub fn start_election(&self, shutdown: &CancellationToken) -> Option<JoinHandle<()>> {
        let election = self.election.lock().expect("election poisoned").take()?;
        tracing::info!(
            replica = %self.replica,
            lease_secs = self.config.cluster.lease_secs,
            "electing the leader among the replicas on this store"
        );
        Some(election.spawn(shutdown.clone()))
    }

    /// Runs `work` only while this replica leads (`leader::run_while_leader`); meanwhile
    /// `standby` says what this replica shows for it.
    fn spawn_leader_only<F, Fut>(&self, shutdown: &CancellationToken, standby: Standby, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let liveness = self.liveness.clone();
        let show = move || match standby {
            Standby::Loop(name) => liveness.forget(name),
            Standby::Adapter(name) => liveness.set_adapter(name, AdapterState::Standby),
        };
        if self.leader.current() == Leadership::Follower {
            show();
        }
        let gate = self.leader.clone();
        tokio::spawn(run_while_leader(gate, shutdown.clone(), move |token| {
            let (work, show) = (work(token.clone()), show.clone());
            async move {
                work.await;
                // Stopped, not failed: an adapter that gave up keeps saying why.
                if token.is_cancelled() {
                    show();
                }
            }
        }));
    }

    /// The periodic sweep, queuing its notices for this app's deliverer.
    pub fn sweeper(&self) -> Sweeper {
        Sweeper::new(self.router.clone(), self.outbox.clone())
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

    /// Connects the chat platforms that receive by connecting out (Telegram polling or
    /// webhook registration, the Discord gateway, Slack Socket Mode); each retries on its own and never stops
    /// the others or `serve`. Telegram polling and the Discord gateway run on the leader
    /// alone (Telegram ends all but one poller with 409s; one gateway session per bot is
    /// enough); Slack Socket Mode spreads events over every open connection, and webhooks
    /// reach whichever replica they are sent to.
    pub fn spawn_adapters(&self, shutdown: &CancellationToken) {
        let a = &self.adapters;
        if a.slack.is_some() {
            self.liveness.set_adapter("slack", AdapterState::Up);
        }
        if a.discord.as_ref().is_some_and(|d| d.serves_interactions()) {
            self.liveness
                .set_adapter("discord interactions", AdapterState::Up);
        }
        let socket_mode = self.config.slack.as_ref().map(|s| &s.receive);
        if let (Some(state), Some(SlackReceive::SocketMode { app_token })) = (&a.slack, socket_mode)
        {
            tokio::spawn(crate::adapters::slack::socket::run(
                state.clone(),
                app_token.clone(),
                self.liveness.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(inbound) = a.telegram.clone() {
            let liveness = self.liveness.clone();
            let webhook = inbound.serves_webhook();
            let run = move |token| {
                crate::adapters::telegram::run(inbound.clone(), liveness.clone(), token)
            };
            if webhook {
                tokio::spawn(run(shutdown.clone()));
            } else {
                self.spawn_leader_only(shutdown, Standby::Adapter("telegram"), run);
            }
        }
        self.spawn_discord(shutdown);
    }

    /// Connects the Discord gateway, on the leader, when Discord is configured with
    /// `gateway = true` (the default). It reconnects by itself and never stops `serve`.
    fn spawn_discord(&self, shutdown: &CancellationToken) {
        let Some(cfg) = self.config.discord.clone().filter(|d| d.gateway) else {
            return;
        };
        let Some(state) = self.adapters.discord.clone() else {
            return;
        };
        let liveness = self.liveness.clone();
        self.spawn_leader_only(shutdown, Standby::Adapter("discord"), move |token| {
            tracing::info!(
                application_id = cfg.application_id,
                "connecting the Discord gateway"
            );
            let gateway = crate::adapters::discord::spawn_gateway(
                state.clone(),
                &cfg,
                liveness.clone(),
                token,
            );
            async move {
                let _ = gateway.await;
            }
        });
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
        let election = self.start_election(&shutdown);
        self.spawn_adapters(&shutdown);
        self.spawn_outbox(&shutdown);
        self.spawn_sweeper(&shutdown);
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
        // Released at once, so another replica need not wait for the lease to lapse.
        if let Some(election) = election {
            let _ = tokio::time::timeout_at(deadline, election).await;
        }
        self.drain(deadline).await;
        Ok(())
    }

    /// The outbox's deliverer, on the leader (on SQLite, the one process).
    pub fn spawn_outbox(&self, shutdown: &CancellationToken) {
        let (deliverer, liveness) = (self.deliverer(), self.liveness.clone());
        self.spawn_leader_only(shutdown, Standby::Loop("outbox"), move |token| {
            deliverer.clone().run(liveness.clone(), token)
        });
    }

    /// The periodic sweep, on the leader (on SQLite, the one process).
    fn spawn_sweeper(&self, shutdown: &CancellationToken) {
        let (sweeper, liveness) = (self.sweeper(), self.liveness.clone());
        self.spawn_leader_only(shutdown, Standby::Loop("sweeper"), move |token| {
            sweeper.clone().run(liveness.clone(), token)
        });
    }

    /// The scheduled health checks and the heartbeat ping, when configured, on the leader.
    /// A new leader's monitor starts from the alerts already firing in the store.
    fn spawn_health(&self, shutdown: &CancellationToken) {
        let h = &self.config.health;
        if let Some(every) = h.every {
            let (fail_after, severity) = (h.fail_after, h.severity.clone());
            let (checks, alerts) = (self.health.clone(), self.alerts.clone());
            let (clock, liveness) = (self.clock.clone(), self.liveness.clone());
            let monitor = move |token| {
                let monitor = HealthMonitor::new(fail_after, &severity);
                let (checks, alerts) = (checks.clone(), alerts.clone());
                let (clock, liveness) = (clock.clone(), liveness.clone());
                monitor_forever(checks, monitor, alerts, clock, every.0, liveness, token)
            };
            self.spawn_leader_only(shutdown, Standby::Loop("health scheduler"), monitor);
        }
        if let Some(url) = h.heartbeat_url.clone() {
            let (every, liveness) = (h.heartbeat_every.0, self.liveness.clone());
            self.spawn_leader_only(shutdown, Standby::Loop("heartbeat"), move |token| {
                heartbeat_forever(url.clone(), every, liveness.clone(), token)
            });
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

/// What a replica shows for leader-only work while it does not lead.
#[derive(Clone, Copy)]
enum Standby {
    /// A loop that reports to liveness: forgotten, so not called stalled.
    Loop(&'static str),
    /// A chat adapter: shown on standby.
    Adapter(&'static str),
}

/// How this process takes part in leadership: on SQLite it is the store's one user (the
/// lock says so), so it always leads with no lease traffic; on Postgres it is elected.
fn leadership(config: &Config, core: &Core, replica: &str) -> (LeaderGate, Option<Election>) {
    if config
        .store
        .database_url
        .expose_secret()
        .starts_with("sqlite:")
    {
        return (LeaderGate::always(), None);
    }
    let store: Arc<dyn crate::ports::LeaseStore> = core.store.clone();
    let ttl = config.cluster.lease();
    let (election, gate) = Election::new(store, core.clock.clone(), replica.to_owned(), ttl);
    (gate, Some(election))
}

/// This process's name among replicas: `hostname:pid:random` (the random part tells apart
/// processes that reuse a pid, as containers do).
fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &random[..8])
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

/// The chat platforms this config receives on: those configured, and the console when
/// `serve` reads it.
fn chat_platforms(config: &Config) -> Vec<Platform> {
    let console = config.console.enabled && config.console.user.is_some();
    [
        (Platform::Console, console),
        (Platform::Slack, config.slack.is_some()),
        (Platform::Discord, config.discord.is_some()),
        (Platform::Telegram, config.telegram.is_some()),
    ]
    .into_iter()
    .filter_map(|(platform, on)| on.then_some(platform))
    .collect()
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

/// The API clients of the configured chat platforms: the outbound sends through them and
/// the adapters answer through them.
struct Apis {
    slack: Option<Arc<SlackApi>>,
    telegram: Option<Arc<TelegramApi>>,
    discord: Option<Arc<DiscordApi>>,
}

impl Apis {
    fn new(config: &Config) -> Result<Apis, StartupError> {
        let slack = (config.slack.as_ref())
            .map(|s| SlackApi::new(&s.api_url, &s.bot_token).map(Arc::new))
            .transpose()
            .map_err(StartupError::Config)?;
        let telegram = (config.telegram.as_ref())
            .map(|t| TelegramApi::new(&t.api_url, &t.bot_token).map(Arc::new))
            .transpose()
            .map_err(StartupError::Config)?;
        let discord = (config.discord.as_ref()).map(|d| Arc::new(DiscordApi::new(d)));
        Ok(Apis {
            slack,
            telegram,
            discord,
        })
    }
}

/// Every configured platform (and the console) behind one outbound, paced per platform.
fn platform_outbound(config: &Config, apis: &Apis, metrics: Arc<Metrics>) -> Arc<dyn ChatOutbound> {
    let mut platforms =
        PlatformOutbound::default().with(Platform::Console, Arc::new(ConsoleOutbound::default()));
    if let Some(api) = &apis.slack {
        platforms = platforms.with(Platform::Slack, api.clone());
    }
    if let Some(api) = &apis.telegram {
        platforms = platforms.with(Platform::Telegram, api.clone());
    }
    if let Some(api) = &apis.discord {
        platforms = platforms.with(Platform::Discord, api.clone());
    }
    let telegram_interval = config.telegram.as_ref().map(|t| t.send_interval.0);
    let spacing = move |platform| match (platform, telegram_interval) {
        (Platform::Telegram, Some(interval)) => interval,
        _ => default_spacing(platform),
    };
    Arc::new(Throttled::new(Arc::new(platforms), spacing).with_metrics(metrics))
}

/// Alert group messages are delivered by the leader alone (on SQLite, the one process),
/// whichever replica stored the change; the loop ends when the service is dropped.
fn spawn_alert_delivery(alerts: &Arc<AlertService>, leader: &LeaderGate) {
    let delivery = alerts.delivery();
    let stopped = delivery.stopped();
    tokio::spawn(run_while_leader(leader.clone(), stopped, move |token| {
        delivery.clone().run(token)
    }));
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

/// What the router is given: the config's policies as the router's types, and the ports.
fn router_deps(
    config: &Config,
    core: &Core,
    catalog: Catalog,
    alerts: Arc<AlertService>,
    limiter: Arc<dyn RateLimiter>,
    health: Arc<HealthChecks>,
    env: EnvLookup,
) -> Result<RouterDeps, StartupError> {
    let (l, b, a) = (&config.limits, &config.builtins, &config.approvals);
    Ok(RouterDeps {
        bot_name: config.bot.name.clone(),
        catalog: Arc::new(catalog),
        directory: Arc::new(config.directory.clone()),
        access: BuiltinAccess {
            status: b.status_roles.clone(),
            audit: b.audit_roles.clone(),
            alerts: b.alerts_roles.clone(),
            respond: b.responder_roles.clone(),
        },
        alerts,
        silence_sync: (config.alerts.alertmanager_url.as_deref())
            .map(|url| Arc::new(AlertmanagerSilences::new(url)) as Arc<dyn SilenceSync>),
        escalation: Escalation {
            remind_every: config.alerts.remind_every.map(|d| d.0),
            oncall: config.alerts.oncall_role.clone(),
        },
        response_targets: ResponseTargets {
            p1: config.incidents.p1_ack_within.0,
            p2: config.incidents.p2_ack_within.0,
            p3: config.incidents.p3_ack_within.0,
        },
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
        outbound: core.outbound.clone(),
        approvals: ApprovalSettings {
            approve_emoji: a.approve_emoji.clone(),
            deny_emoji: a.deny_emoji.clone(),
            break_glass_roles: a.break_glass_roles.clone(),
        },
        env,
        base_dir: config.base_dir.clone(),
    })
}

/// The receiving side of each configured chat platform.
struct Adapters {
    slack: Option<SlackState>,
    telegram: Option<TelegramInbound>,
    discord: Option<DiscordState>,
}

impl Adapters {
    fn new(
        config: &Config,
        apis: Apis,
        inbound: &Inbound,
        outbound: &Arc<dyn ChatOutbound>,
    ) -> Result<Adapters, StartupError> {
        let slack = (config.slack.as_ref().zip(apis.slack)).map(|(cfg, api)| {
            SlackState::new(inbound.clone(), api, outbound.clone(), &cfg.signing_secret)
                .with_command_prefix(&cfg.command_prefix)
        });
        let telegram = (config.telegram.as_ref().zip(apis.telegram)).map(|(cfg, api)| {
            TelegramInbound::new(inbound.clone(), api, outbound.clone(), cfg.delivery.clone())
        });
        let discord = match config.discord.as_ref().zip(apis.discord) {
            Some((cfg, api)) => {
                let a = &config.approvals;
                let hints = [a.approve_emoji.first(), a.deny_emoji.first()];
                let hints: Vec<String> = hints.into_iter().flatten().cloned().collect();
                Some(
                    DiscordState::new(inbound.clone(), &api, outbound.clone(), cfg, &hints)
                        .map_err(StartupError::Config)?,
                )
            }
            None => None,
        };
        Ok(Adapters {
            slack,
            telegram,
            discord,
        })
    }

    fn none(&self) -> bool {
        self.slack.is_none() && self.telegram.is_none() && self.discord.is_none()
    }
}

/// Runs the health checks on a schedule and turns state changes into alerts.
async fn monitor_forever(
    checks: Arc<HealthChecks>,
    mut monitor: HealthMonitor,
    alerts: Arc<AlertService>,
    clock: Arc<dyn Clock>,
    every: std::time::Duration,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
) {
    match alerts.firing_fingerprints("check:").await {
        Ok(firing) => monitor.seed_firing(firing.iter().map(|f| &f["check:".len()..])),
        Err(e) => tracing::warn!(error = %e, "could not read firing health-check alerts"),
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let results = checks.run(None).await;
                let changes = monitor.observe(&results, clock.now());
                if !changes.is_empty()
                    && let Err(e) = alerts.ingest(changes.clone()).await
                {
                    tracing::error!(error = %e, "could not store health-check alerts; will retry");
                    monitor.revert(&changes);
                }
                liveness.tick("health scheduler", every);
            }
        }
    }
}

/// Pings the configured heartbeat URL, an external dead-man's switch for opsbot itself.
async fn heartbeat_forever(
    url: secrecy::SecretString,
    every: std::time::Duration,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
) {
    let (client, url, liveness) = (&reqwest::Client::new(), &url, &liveness);
    crate::periodic::every(every, &shutdown, move || async move {
        match client.get(url.expose_secret()).timeout(every).send().await {
            Ok(r) if r.status().is_success() => liveness.tick("heartbeat", every),
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "heartbeat ping rejected"),
            Err(e) => tracing::warn!(error = %e.without_url(), "heartbeat ping failed"),
        }
    })
    .await;
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
