//! The chat platforms' wiring: which are configured, their API clients, the paced outbound
//! path shared by every poster, and the inbound adapters (Telegram polling and the Discord
//! gateway only on the leader).

use super::*;

impl App {
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
            use crate::adapters::telegram;
            let liveness = self.liveness.clone();
            if inbound.serves_webhook() {
                // Any replica handles webhook updates; one registers the webhook.
                tokio::spawn(telegram::receive_webhooks(
                    inbound.clone(),
                    liveness.clone(),
                    shutdown.clone(),
                ));
                let register = move |token| {
                    telegram::register_webhook(inbound.clone(), liveness.clone(), token)
                };
                self.spawn_leader_only(shutdown, Standby::Adapter("telegram webhook"), register);
            } else {
                let run = move |token| telegram::run(inbound.clone(), liveness.clone(), token);
                self.spawn_leader_only(shutdown, Standby::Adapter("telegram"), run);
            }
        }
        self.spawn_discord(shutdown);
    }

    /// Connects the Discord gateway, on the leader, when Discord is configured with
    /// `gateway = true` (the default). It reconnects by itself and never stops `serve`.
    pub(super) fn spawn_discord(&self, shutdown: &CancellationToken) {
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
}

/// The chat platforms this config receives on: those configured, and the console when
/// `serve` reads it.
pub(super) fn chat_platforms(config: &Config) -> Vec<Platform> {
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

/// The API clients of the configured chat platforms: the outbound sends through them and
/// the adapters answer through them.
pub(super) struct Apis {
    pub(super) slack: Option<Arc<SlackApi>>,
    pub(super) telegram: Option<Arc<TelegramApi>>,
    pub(super) discord: Option<Arc<DiscordApi>>,
}

impl Apis {
    pub(super) fn new(config: &Config) -> Result<Apis, StartupError> {
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
pub(super) fn platform_outbound(
    config: &Config,
    apis: &Apis,
    metrics: Arc<Metrics>,
) -> Arc<dyn ChatOutbound> {
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

/// The receiving side of each configured chat platform.
pub(super) struct Adapters {
    pub(super) slack: Option<SlackState>,
    pub(super) telegram: Option<TelegramInbound>,
    pub(super) discord: Option<DiscordState>,
}

impl Adapters {
    pub(super) fn new(
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

    pub(super) fn none(&self) -> bool {
        self.slack.is_none() && self.telegram.is_none() && self.discord.is_none()
    }
}
