//! Slack Socket Mode, for installs that cannot expose an HTTP endpoint: opsbot asks
//! `apps.connections.open` (with the app-level `xapp-` token) for a WebSocket URL, connects
//! out, acknowledges envelopes (`{"envelope_id": ...}`) and handles them exactly as the HTTP
//! endpoints do (`on_command`, `on_event_callback`, `on_interaction`). Commands and button
//! presses are acknowledged at once; an Events API envelope only once its event id is stored,
//! so a store failure leaves it unacknowledged and Slack delivers it again (over HTTP that is
//! a 503).
//!
//! A small client of our own rather than slack-morphism's listener: that one retries a
//! rejected token forever at a fixed interval and has no hook for the connection state,
//! which `/readyz` shows as adapter "slack socket". slack-morphism still provides the Web API
//! call and the payload types (its envelope types are not exported, hence `Envelope`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use slack_ws::tungstenite::Message;
use slack_ws::{MaybeTlsStream, WebSocketStream};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{SlackState, on_command, on_event_callback, on_interaction};
use crate::adapters::Backoff;
use crate::liveness::{AdapterState, Liveness};

/// The adapter's name in `/readyz`.
pub const ADAPTER: &str = "slack socket";

/// How often opsbot pings Slack; a connection silent for two of these is taken as lost.
const PING_EVERY: Duration = Duration::from_secs(30);

/// Limit for `apps.connections.open` plus the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// `apps.connections.open` errors that no retry will fix.
const FATAL_CODES: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "not_allowed_token_type",
    "missing_scope",
];

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A Socket Mode message; the payloads are what the HTTP endpoints receive.
#[allow(clippy::large_enum_variant)] // one short-lived value per message
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Envelope {
    Hello {},
    Disconnect {
        #[serde(default)]
        reason: String,
    },
    SlashCommands {
        payload: SlackCommandEvent,
    },
    EventsApi {
        payload: SlackPushEventCallback,
    },
    Interactive {
        payload: SlackInteractionEvent,
    },
}

/// What every envelope carries, and its acknowledgement carries back.
#[derive(serde::Deserialize, serde::Serialize)]
struct Ack {
    envelope_id: String,
}

enum ConnectError {
    /// The app token was refused: stop, a config fix is needed.
    Fatal(String),
    Retry(String),
}

/// Why a connection ended.
enum Ended {
    Shutdown,
    /// Slack asked us to reconnect (`disconnect` message: refresh, maintenance).
    Disconnect(String),
    Lost(String),
}

/// Keeps a Socket Mode connection open until shutdown, reconnecting with a capped backoff;
/// stops (adapter "off") only when Slack refuses the app token.
pub async fn run(
    state: SlackState,
    app_token: SecretString,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
) {
    let status = |s| liveness.set_adapter(ADAPTER, s);
    status(AdapterState::Connecting);
    let token = SlackApiToken::new(SlackApiTokenValue(app_token.expose_secret().to_owned()));
    let mut backoff = Backoff::default();
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = tokio::time::timeout(CONNECT_TIMEOUT, connect(&state, &token)) => {
                c.unwrap_or_else(|_| Err(ConnectError::Retry("connecting timed out".into())))
            }
        };
        let why = match connected {
            Ok(mut socket) => match session(&mut socket, &state, &status, &shutdown).await {
                Ended::Shutdown => return,
                Ended::Disconnect(reason) => {
                    tracing::info!(%reason, "Slack asked for a reconnection");
                    status(AdapterState::Connecting);
                    backoff.reset();
                    continue;
                }
                Ended::Lost(why) => {
                    // A connection that was up starts the backoff afresh.
                    backoff.reset();
                    why
                }
            },
            Err(ConnectError::Fatal(why)) => {
                tracing::error!(error = %why, "Slack refused the app token (slack.app_token); Socket Mode is off");
                status(AdapterState::Off(why));
                return;
            }
            Err(ConnectError::Retry(why)) => why,
        };
        tracing::warn!(error = %why, "Slack Socket Mode connection failed; retrying");
        status(AdapterState::Retrying(why));
        if backoff.wait(&shutdown).await.is_err() {
            return;
        }
    }
}

async fn send_ack(socket: &mut Socket, ack: &Ack) -> Result<(), slack_ws::tungstenite::Error> {
    let ack = serde_json::to_string(ack).expect("an ack serialises");
    socket.send(Message::text(ack)).await
}

/// `apps.connections.open`, then the WebSocket handshake with the URL it returns.
async fn connect(state: &SlackState, token: &SlackApiToken) -> Result<Socket, ConnectError> {
    let opened = state
        .api
        .client
        .open_session(token)
        .apps_connections_open(&SlackApiAppsConnectionOpenRequest::new())
        .await
        .map_err(|e| match e {
            SlackClientError::ApiError(api) if FATAL_CODES.contains(&api.code.as_str()) => {
                ConnectError::Fatal(format!("apps.connections.open: {}", api.code))
            }
            other => ConnectError::Retry(format!("apps.connections.open: {other}")),
        })?;
    // The URL carries a connection ticket: it is not logged.
    let (socket, _) = slack_ws::connect_async(opened.url.0.as_str())
        .await
        .map_err(|e| ConnectError::Retry(format!("WebSocket handshake: {e}")))?;
    Ok(socket)
}

/// Reads envelopes until the connection ends; `Up` once Slack says `hello`.
async fn session(
    socket: &mut Socket,
    state: &SlackState,
    status: &impl Fn(AdapterState),
    shutdown: &CancellationToken,
) -> Ended {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_heard = Instant::now();
    // Acknowledgements of events, sent once their ids are recorded.
    let (acks, mut recorded) = tokio::sync::mpsc::unbounded_channel::<Ack>();
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = socket.close(None).await;
                return Ended::Shutdown;
            }
            Some(ack) = recorded.recv() => {
                if let Err(e) = send_ack(socket, &ack).await {
                    return Ended::Lost(e.to_string());
                }
                continue;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > PING_EVERY * 2 {
                    return Ended::Lost("Slack stopped answering pings".into());
                }
                if let Err(e) = socket.send(Message::Ping(Default::default())).await {
                    return Ended::Lost(e.to_string());
                }
                continue;
            }
            frame = socket.next() => frame,
        };
        last_heard = Instant::now();
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => return Ended::Lost("connection closed".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Ended::Lost(e.to_string()),
        };
        let envelope = serde_json::from_str::<Envelope>(text.as_str());
        // Everything but an event is acknowledged before anything else, even when it is not
        // one we know, so Slack does not redeliver it.
        let ack = serde_json::from_str::<Ack>(text.as_str()).ok();
        if let Some(ack) = &ack
            && !matches!(envelope, Ok(Envelope::EventsApi { .. }))
            && let Err(e) = send_ack(socket, ack).await
        {
            return Ended::Lost(e.to_string());
        }
        match envelope {
            Ok(Envelope::Hello {}) => {
                tracing::info!("Slack Socket Mode connected");
                status(AdapterState::Up);
            }
            Ok(Envelope::Disconnect { reason }) => {
                let _ = socket.close(None).await;
                return Ended::Disconnect(reason);
            }
            Ok(Envelope::SlashCommands { payload }) => on_command(state, payload),
            Ok(Envelope::Interactive { payload }) => on_interaction(state, payload),
            Ok(Envelope::EventsApi { payload }) => {
                let (state, acks) = (state.clone(), acks.clone());
                state.inbound.clone().spawn(async move {
                    match on_event_callback(&state, payload).await {
                        Ok(()) => {
                            if let Some(ack) = ack {
                                // The connection may be gone: Slack then delivers it again
                                // and the stored id makes that a no-op.
                                let _ = acks.send(ack);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not record a Slack event id; not acknowledged, so Slack delivers it again")
                        }
                    }
                });
            }
            Err(e) => tracing::debug!(error = %e, "ignoring an unrecognised Socket Mode message"),
        }
    }
}
