//! The gateway connection (serenity `Client`): registers the slash commands once ready, and
//! feeds slash commands, button presses and reactions to [`DiscordState`]. A gateway that cannot connect never
//! stops opsbot: serenity retries the connection itself, and if the client gives up opsbot
//! rebuilds it with capped backoff; a rejected token or intents are logged once and not retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serenity::all::{
    ChannelId, ClientBuilder, Context, EventHandler, GatewayError, GatewayIntents, GuildId,
    Interaction, Reaction, Ready, UserId,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{DiscordState, build_http};
use crate::adapters::Backoff;
use crate::config::DiscordConfig;
use crate::liveness::{AdapterState, Liveness};

/// Enough for commands, reactions in guilds and DMs; none of them is privileged.
fn intents() -> GatewayIntents {
    GatewayIntents::GUILDS
        | GatewayIntents::GUILD_MESSAGE_REACTIONS
        | GatewayIntents::DIRECT_MESSAGE_REACTIONS
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A client that ran this long before stopping was healthy; the backoff starts over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

struct Handler {
    state: DiscordState,
    /// Commands are registered once per process (READY comes again after every re-identify).
    registered: AtomicBool,
    /// The bot's own user id, learnt from READY, so its reaction hints are not taken as votes.
    bot: AtomicU64,
    liveness: Arc<Liveness>,
}

impl Handler {
    /// A reaction added (or removed) in one of our channels, as a vote.
    async fn reaction(&self, ctx: &Context, reaction: Reaction, added: bool) {
        let _answering = self.state.inbound.answering();
        if self.state.foreign(reaction.guild_id) {
            return;
        }
        let name = cached_channel_name(ctx, reaction.guild_id, reaction.channel_id);
        self.state.reaction(reaction, added, self.bot(), name).await;
    }

    fn bot(&self) -> Option<UserId> {
        match self.bot.load(Ordering::Relaxed) {
            0 => None,
            id => Some(UserId::new(id)),
        }
    }
}

/// The channel's name if the cache has its guild (from GUILD_CREATE, which the GUILDS intent
/// brings); channel allow-lists match names.
fn cached_channel_name(
    ctx: &Context,
    guild: Option<GuildId>,
    channel: ChannelId,
) -> Option<String> {
    let guild = ctx.cache.guild(guild?)?;
    guild.channels.get(&channel).map(|c| c.name.clone())
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        self.bot.store(ready.user.id.get(), Ordering::Relaxed);
        self.liveness.set_adapter("discord", AdapterState::Up);
        tracing::info!(bot = %ready.user.name, guilds = ready.guilds.len(), "Discord gateway connected");
        if self.registered.swap(true, Ordering::SeqCst) {
            return;
        }
        match self.state.register_commands(self.state.guild).await {
            Ok(n) => tracing::info!(
                commands = n,
                scope = %self.state.guild.map_or("global".to_owned(), |g| format!("guild {g}")),
                "registered Discord slash commands"
            ),
            Err(e) => {
                // Try again at the next READY; commands registered earlier keep working.
                self.registered.store(false, Ordering::SeqCst);
                tracing::error!(error = %e, "could not register Discord slash commands");
            }
        }
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let _answering = self.state.inbound.answering();
        let (guild, channel) = match &interaction {
            Interaction::Command(cmd) => (cmd.guild_id, cmd.channel_id),
            Interaction::Component(press) => (press.guild_id, press.channel_id),
            _ => return,
        };
        if self.state.foreign(guild) {
            return;
        }
        let name = cached_channel_name(&ctx, guild, channel);
        match interaction {
            Interaction::Command(cmd) => self.state.gateway_command(cmd, name).await,
            Interaction::Component(press) => self.state.gateway_press(press, name).await,
            _ => {}
        }
    }

    async fn reaction_add(&self, ctx: Context, reaction: Reaction) {
        self.reaction(&ctx, reaction, true).await;
    }

    async fn reaction_remove(&self, ctx: Context, reaction: Reaction) {
        self.reaction(&ctx, reaction, false).await;
    }
}

/// Runs the gateway until `shutdown`, reconnecting as needed; never returns an error.
pub fn spawn_gateway(
    state: DiscordState,
    cfg: &DiscordConfig,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let status = {
        let liveness = liveness.clone();
        move |state| liveness.set_adapter("discord", state)
    };
    status(AdapterState::Connecting);
    let handler = Arc::new(Handler {
        state,
        registered: AtomicBool::new(false),
        bot: AtomicU64::new(0),
        liveness,
    });
    let cfg = cfg.clone();
    tokio::spawn(async move {
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            let started = Instant::now();
            let built = ClientBuilder::new_with_http(build_http(&cfg), intents())
                .event_handler_arc(handler.clone())
                .await;
            let stopped = match built {
                Ok(mut client) => {
                    let shards = client.shard_manager.clone();
                    tokio::select! {
                        r = client.start() => r,
                        _ = shutdown.cancelled() => {
                            shards.shutdown_all().await;
                            return;
                        }
                    }
                }
                Err(e) => Err(e),
            };
            match stopped {
                Err(serenity::Error::Gateway(
                    e @ (GatewayError::InvalidAuthentication
                    | GatewayError::InvalidGatewayIntents
                    | GatewayError::DisallowedGatewayIntents),
                )) => {
                    // Retrying cannot fix a revoked token or missing intents; say so once.
                    tracing::error!(
                        error = %e,
                        "Discord refused the bot's login; the Discord gateway stays off until the \
                         config is fixed and opsbot restarted (HTTP and other adapters keep running)"
                    );
                    status(AdapterState::Off(format!("login refused: {e}")));
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_secs = backoff.delay().as_secs(), "Discord gateway stopped; reconnecting");
                    status(AdapterState::Retrying(e.to_string()));
                }
                Ok(()) => {
                    tracing::warn!(
                        retry_in_secs = backoff.delay().as_secs(),
                        "Discord gateway closed; reconnecting"
                    );
                    status(AdapterState::Retrying("gateway closed".into()));
                }
            }
            if started.elapsed() >= HEALTHY_RUN {
                backoff.reset();
            }
            if backoff.wait(&shutdown).await.is_err() {
                return;
            }
        }
    })
}
