//! How updates reach opsbot: long polling on the leader (`getUpdates`, one poller per bot),
//! or webhooks, registered by the leader and served by every replica; both learn the bot's
//! name first and retry with a capped backoff.

use super::*;

/// Long-polls Telegram for updates until shutdown, on the leader: learns the bot's username,
/// then polls. Failures are retried with a capped backoff and never stop the other adapters; a
/// rejected token is reported once and ends the adapter.
pub async fn run(inbound: TelegramInbound, liveness: Arc<Liveness>, shutdown: CancellationToken) {
    let status = |state| liveness.set_adapter("telegram", state);
    if connect(&inbound, &status, &shutdown).await.is_some() {
        poll(&inbound, &status, &shutdown).await;
    }
}

/// Webhook mode on every replica: learns the bot's username (to recognise `/cmd@bot`), after
/// which `/telegram/webhook` handles updates here; registering the webhook is the leader's
/// ([`register_webhook`]).
pub async fn receive_webhooks(
    inbound: TelegramInbound,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
) {
    let status = |state| liveness.set_adapter("telegram", state);
    if connect(&inbound, &status, &shutdown).await.is_some() {
        status(AdapterState::Up);
    }
}

/// Registers the webhook with Telegram, on the leader: once per leadership, so one replica
/// calls `setWebhook` and a new leader registers it again after a failover.
pub async fn register_webhook(
    inbound: TelegramInbound,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
) {
    let status = |state| liveness.set_adapter("telegram webhook", state);
    if let TelegramDelivery::Webhook { url, secret } = &inbound.delivery {
        set_webhook(&inbound, url, secret, &status, &shutdown).await;
    }
}

/// Asks Telegram who the bot is until it answers; `None` on shutdown or a rejected token.
async fn connect(
    inbound: &TelegramInbound,
    status: &impl Fn(AdapterState),
    shutdown: &CancellationToken,
) -> Option<()> {
    status(AdapterState::Connecting);
    let mut backoff = Backoff::default();
    let username = loop {
        match inbound.api.bot.get_me().await {
            Ok(me) => break me.username().to_owned(),
            Err(RequestError::Api(ApiError::InvalidToken)) => {
                tracing::error!("Telegram rejected the bot token; the Telegram adapter is off");
                status(AdapterState::Off("bot token rejected".into()));
                return None;
            }
            Err(e) => {
                let why = inbound.api.describe(&e);
                tracing::warn!(error = %why, "cannot reach Telegram; retrying");
                status(AdapterState::Retrying(why));
                backoff.wait(shutdown).await.ok()?;
            }
        }
    };
    tracing::info!(bot = %username, webhook = inbound.serves_webhook(), "Telegram adapter connected");
    let _ = inbound.username.set(username);
    Some(())
}

async fn set_webhook(
    inbound: &TelegramInbound,
    url: &reqwest::Url,
    secret: &SecretString,
    status: &impl Fn(AdapterState),
    shutdown: &CancellationToken,
) {
    let secret = secret.expose_secret().to_owned();
    let mut backoff = Backoff::default();
    loop {
        let req = inbound
            .api
            .bot
            .set_webhook(url.clone())
            .secret_token(secret.clone())
            .allowed_updates(ALLOWED_UPDATES);
        match req.await {
            Ok(_) => {
                tracing::info!("Telegram webhook registered");
                status(AdapterState::Up);
                return;
            }
            Err(e) => {
                let why = inbound.api.describe(&e);
                tracing::warn!(error = %why, "cannot register the Telegram webhook; retrying");
                status(AdapterState::Retrying(why));
                if backoff.wait(shutdown).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn poll(
    inbound: &TelegramInbound,
    status: &impl Fn(AdapterState),
    shutdown: &CancellationToken,
) {
    let api = &inbound.api;
    // getUpdates is refused while a webhook is set (for example by an earlier deployment).
    if let Err(e) = api.bot.delete_webhook().await {
        tracing::warn!(error = %api.describe(&e), "could not remove a Telegram webhook before polling");
    }
    let mut offset: i32 = 0;
    let mut backoff = Backoff::default();
    let mut up = false;
    loop {
        let req = api
            .bot
            .get_updates()
            .offset(offset)
            .timeout(POLL_TIMEOUT_SECS)
            .allowed_updates(ALLOWED_UPDATES);
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = teloxide::requests::Request::send(req) => r,
        };
        match result {
            Ok(updates) => {
                if !up {
                    status(AdapterState::Up);
                    up = true;
                }
                backoff.reset();
                // Not recorded: ask for it again (the offset confirms only what is behind
                // it), after a pause so a struggling store is not hammered.
                if let Err(e) = take_in_order(inbound, updates, &mut offset).await {
                    status(AdapterState::Retrying(e.to_string()));
                    up = false;
                    if backoff.wait(shutdown).await.is_err() {
                        return;
                    }
                }
            }
            Err(RequestError::Api(ApiError::InvalidToken)) => {
                tracing::error!("Telegram rejected the bot token; the Telegram adapter is off");
                status(AdapterState::Off("bot token rejected".into()));
                return;
            }
            Err(e) => {
                let why = api.describe(&e);
                tracing::warn!(error = %why, "Telegram polling failed; retrying");
                status(AdapterState::Retrying(why));
                up = false;
                if backoff.wait(shutdown).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Takes polled updates in order, moving `offset` past each one taken; stops at the first
/// that cannot be recorded.
async fn take_in_order(
    inbound: &TelegramInbound,
    updates: Vec<Update>,
    offset: &mut i32,
) -> Result<(), NotTaken> {
    for update in updates {
        let next = i32::try_from(update.id.0)
            .unwrap_or(i32::MAX)
            .saturating_add(1);
        inbound.take(update).await?;
        *offset = (*offset).max(next);
    }
    Ok(())
}
