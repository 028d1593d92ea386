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
use crate::config::{Config, LimiterBackend, TelegramMode};
use crate::domain::{Platform, ResponseTargets};
use crate::hooks::HookState;
use crate::http::{self, HttpState};
use crate::limiter::{MemoryLimiter, RedisLimiter};
use crate::liveness::{AdapterState, Liveness};
use crate::metrics::Metrics;
use crate::notify::{AlertmanagerSilences, SignedWebhook};
use crate::ports::{
    ChatOutbound, Clock, EnvLookup, GroupNotifier, OutboundTarget, RateLimiter, SilenceSync, Store,
    StoreError, SystemClock,
};
use crate::router::authz::BuiltinAccess;
use crate::router::{ApprovalSettings, GlobalLimits, Router, RouterDeps};
use crate::runner::ProcessRunner;
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
    /// Where the bot's own messages go (alert groups, sweep notices).
    outbound: Arc<dyn ChatOutbound>,
    slack: Option<SlackState>,
    telegram: Option<TelegramInbound>,
    discord: Option<DiscordState>,
    health: Arc<HealthChecks>,
    clock: Arc<dyn Clock>,
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

/// Loads and validates the command catalogue named by the config.
pub fn load_catalog(config: &Config) -> Result<Catalog, CatalogErrors> {
    Catalog::load_dir(&config.catalog_dir(), &crate::router::builtins::NAMES)
}

/// Replacements for the ports tests need to control; `None` keeps the real one.
#[derive(Default)]
pub struct Overrides {
    pub clock: Option<Arc<dyn Clock>>,
    pub env: Option<EnvLookup>,
    /// Where the bot's own messages (alert groups) go; default: the console.
    pub outbound: Option<Arc<dyn ChatOutbound>>,
}

impl App {
    pub async fn build(config: Config) -> Result<App, StartupError> {
        Self::build_with(config, Overrides::default()).await
    }

    pub async fn build_with(config: Config, overrides: Overrides) -> Result<App, StartupError> {
        let catalog = load_catalog(&config)?;
        let checks = crate::probes::build_checks(&config.checks).map_err(StartupError::Config)?;
        let store =
            crate::store::connect(&config.store.database_url, config.store.max_connections).await?;
        let limiter: Arc<dyn RateLimiter> = match &config.limits.backend {
            LimiterBackend::Memory => Arc::new(MemoryLimiter::new()),
            LimiterBackend::Redis { url } => Arc::new(
                RedisLimiter::connect(url.expose_secret(), "opsbot:rl:")
                    .await
                    .map_err(|e| StartupError::Limiter(e.0))?,
            ),
        };
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(HealthChecks::new(checks));
        let clock: Arc<dyn Clock> = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let slack_api = match &config.slack {
            Some(s) => Some(Arc::new(
                SlackApi::new(&s.api_url, &s.bot_token).map_err(StartupError::Config)?,
            )),
            None => None,
        };
        let telegram_api = match &config.telegram {
            Some(t) => Some(Arc::new(
                TelegramApi::new(&t.api_url, &t.bot_token).map_err(StartupError::Config)?,
            )),
            None => None,
        };
        let discord_api = config
            .discord
            .as_ref()
            .map(|d| Arc::new(DiscordApi::new(d)));
        let outbound: Arc<dyn ChatOutbound> = match overrides.outbound {
            Some(o) => o,
            None => {
                let mut platforms = PlatformOutbound::default()
                    .with(Platform::Console, Arc::new(ConsoleOutbound::default()));
                if let Some(api) = &slack_api {
                    platforms = platforms.with(Platform::Slack, api.clone());
                }
                if let Some(api) = &telegram_api {
                    platforms = platforms.with(Platform::Telegram, api.clone());
                }
                if let Some(api) = &discord_api {
                    platforms = platforms.with(Platform::Discord, api.clone());
                }
                let telegram_interval = config.telegram.as_ref().map(|t| t.send_interval.0);
                let spacing = move |platform| match (platform, telegram_interval) {
                    (Platform::Telegram, Some(interval)) => interval,
                    _ => default_spacing(platform),
                };
                Arc::new(Throttled::new(Arc::new(platforms), spacing).with_metrics(metrics.clone()))
            }
        };
        let notifiers: Vec<Arc<dyn GroupNotifier>> = config
            .alerts
            .webhooks
            .iter()
            .map(|w| {
                Arc::new(SignedWebhook::new(w.url.clone(), w.secret.clone()))
                    as Arc<dyn GroupNotifier>
            })
            .collect();
        let alerts = AlertService::start(
            store.clone(),
            metrics.clone(),
            outbound.clone(),
            notifiers,
            clock.clone(),
            alert_routing(&config),
        );
        let l = &config.limits;
        let router = Router::new(RouterDeps {
            bot_name: config.bot.name.clone(),
            catalog: Arc::new(catalog),
            directory: Arc::new(config.directory.clone()),
            access: BuiltinAccess {
                status: config.builtins.status_roles.clone(),
                audit: config.builtins.audit_roles.clone(),
                alerts: config.builtins.alerts_roles.clone(),
                respond: config.builtins.responder_roles.clone(),
            },
            alerts: alerts.clone(),
            silence_sync: config
                .alerts
                .alertmanager_url
                .as_deref()
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
            store: store.clone(),
            clock: clock.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            runner: Arc::new(ProcessRunner::new().map_err(StartupError::Config)?),
            outbound: outbound.clone(),
            approvals: ApprovalSettings {
                approve_emoji: config.approvals.approve_emoji.clone(),
                deny_emoji: config.approvals.deny_emoji.clone(),
                break_glass_roles: config.approvals.break_glass_roles.clone(),
            },
            env: overrides
                .env
                .unwrap_or_else(|| Arc::new(|name| std::env::var(name).ok())),
            base_dir: config.base_dir.clone(),
        });
        let router = Arc::new(router);
        let inbound = Inbound::new(router.clone(), store.clone());
        let slack = match (&config.slack, slack_api) {
            (Some(cfg), Some(api)) => Some(SlackState::new(
                inbound.clone(),
                api,
                outbound.clone(),
                &cfg.signing_secret,
            )),
            _ => None,
        };
        let telegram = match (&config.telegram, telegram_api) {
            (Some(cfg), Some(api)) => Some(TelegramInbound::new(
                inbound.clone(),
                api,
                outbound.clone(),
                cfg.webhook_secret.clone(),
            )),
            _ => None,
        };
        let discord = match (&config.discord, discord_api) {
            (Some(cfg), Some(api)) => {
                let hints = [
                    config.approvals.approve_emoji.first(),
                    config.approvals.deny_emoji.first(),
                ];
                let hints: Vec<String> = hints.into_iter().flatten().cloned().collect();
                Some(
                    DiscordState::new(inbound.clone(), &api, outbound.clone(), cfg, &hints)
                        .map_err(StartupError::Config)?,
                )
            }
            _ => None,
        };
        Ok(App {
            config,
            router,
            store,
            metrics,
            alerts,
            liveness: Arc::new(Liveness::default()),
            outbound,
            slack,
            telegram,
            discord,
            health,
            clock,
        })
    }

    /// The periodic sweep, posting its notices through this app's outbound.
    pub fn sweeper(&self) -> Sweeper {
        Sweeper::new(self.router.clone(), self.outbound.clone())
    }

    pub fn http_state(&self) -> HttpState {
        HttpState {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            hooks: HookState {
                alerts: self.alerts.clone(),
                alertmanager_token: self.config.alerts.alertmanager_token.clone(),
                webhook_secret: self.config.alerts.webhook_secret.clone(),
                clock: self.clock.clone(),
            },
            max_body_bytes: self.config.alerts.max_body_bytes,
            liveness: self.liveness.clone(),
            telegram: self
                .telegram
                .clone()
                .filter(|_| self.telegram_mode() == Some(TelegramMode::Webhook)),
            slack: self.slack.clone(),
            discord: self.discord.clone().filter(|d| d.serves_interactions()),
        }
    }

    fn telegram_mode(&self) -> Option<TelegramMode> {
        self.config.telegram.as_ref().map(|t| t.mode)
    }

    /// Connects the chat platforms that receive by connecting out (Telegram polling or
    /// webhook registration, the Discord gateway, Slack Socket Mode); each retries on its own and never stops
    /// the others or `serve`.
    pub fn spawn_adapters(&self, shutdown: &CancellationToken) {
        if self.slack.is_some() {
            self.liveness.set_adapter("slack", AdapterState::Up);
        }
        if self
            .discord
            .as_ref()
            .is_some_and(|d| d.serves_interactions())
        {
            self.liveness
                .set_adapter("discord interactions", AdapterState::Up);
        }
        if let (Some(state), Some(token)) = (
            &self.slack,
            self.config
                .slack
                .as_ref()
                .filter(|s| s.socket_mode)
                .and_then(|s| s.app_token.clone()),
        ) {
            tokio::spawn(crate::adapters::slack::socket::run(
                state.clone(),
                token,
                self.liveness.clone(),
                shutdown.clone(),
            ));
        }
        if let (Some(inbound), Some(cfg)) = (&self.telegram, &self.config.telegram) {
            tokio::spawn(crate::adapters::telegram::run(
                inbound.clone(),
                cfg.mode,
                cfg.webhook_url.clone(),
                self.liveness.clone(),
                shutdown.clone(),
            ));
        }
        self.spawn_discord(shutdown.clone());
    }

    /// Connects the Discord gateway when Discord is configured with `gateway = true` (the
    /// default). It reconnects by itself and never stops `serve`.
    pub fn spawn_discord(&self, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
        let cfg = self.config.discord.as_ref().filter(|d| d.gateway)?;
        let state = self.discord.clone()?;
        tracing::info!(
            application_id = cfg.application_id,
            "connecting the Discord gateway"
        );
        Some(crate::adapters::discord::spawn_gateway(
            state,
            cfg,
            self.liveness.clone(),
            shutdown,
        ))
    }

    /// Binds the configured HTTP address.
    pub async fn bind(&self) -> Result<TcpListener, StartupError> {
        let addr = self.config.server.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })
    }

    /// `opsbot serve`: HTTP plus every configured adapter, until Ctrl-C or SIGTERM.
    pub async fn serve(self) -> Result<(), StartupError> {
        let listener = self.bind().await?;
        let shutdown = CancellationToken::new();
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: self.config.server.listen,
            source,
        })?;
        tracing::info!(%addr, commands = self.router.catalog().len(), "opsbot serving HTTP");
        let http = tokio::spawn(http::serve(listener, self.http_state(), shutdown.clone()));
        self.spawn_adapters(&shutdown);
        tokio::spawn(self.sweeper().run(self.liveness.clone(), shutdown.clone()));
        if let Some(every) = self.config.health.every {
            let monitor =
                HealthMonitor::new(self.config.health.fail_after, &self.config.health.severity);
            tokio::spawn(monitor_forever(
                self.health.clone(),
                monitor,
                self.alerts.clone(),
                self.clock.clone(),
                every.0,
                self.liveness.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(url) = self.config.health.heartbeat_url.clone() {
            tokio::spawn(heartbeat_forever(
                url,
                self.config.health.heartbeat_every.0,
                self.liveness.clone(),
                shutdown.clone(),
            ));
        }
        let console_user = self
            .config
            .console
            .enabled
            .then(|| self.config.console.user.clone())
            .flatten();
        match &console_user {
            Some(user) => {
                let console = Console::new(self.router.clone(), user, &self.config.console.channel);
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
            None if self.slack.is_none() && self.discord.is_none() && self.telegram.is_none() => {
                tracing::info!(
                    "no chat platform is configured (console disabled or without a user); serving HTTP only"
                )
            }
            None => {}
        }
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
        Ok(())
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
                tracing::warn!(error = %e, "HTTP endpoints unavailable in this chat session");
                None
            }
        };
        // Notices for other platforms' channels go there, not to this terminal.
        tokio::spawn(self.sweeper().run(self.liveness.clone(), shutdown.clone()));
        let channel = channel.unwrap_or(&self.config.console.channel);
        let console = Console::new(self.router.clone(), name, channel);
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
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                match client.get(url.expose_secret()).timeout(every).send().await {
                    Ok(r) if r.status().is_success() => liveness.tick("heartbeat", every),
                    Ok(r) => tracing::warn!(status = r.status().as_u16(), "heartbeat ping rejected"),
                    Err(e) => tracing::warn!(error = %e.without_url(), "heartbeat ping failed"),
                }
            }
        }
    }
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
