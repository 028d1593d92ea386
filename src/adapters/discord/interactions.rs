//! `POST /discord/interactions`, for applications that set an Interactions Endpoint URL: the
//! Ed25519 signature (`X-Signature-Ed25519` over `X-Signature-Timestamp` + body) and the
//! timestamp's freshness (the same 5-minute window as signed hooks) are checked before
//! anything is parsed (401 and nothing else on failure), interactions from a server other than
//! the configured `guild_id` are refused as on the gateway, PING is answered with PONG,
//! and a slash command is answered at once with a deferred response (type 5) and worked on
//! afterwards, its answer edited into the original response over REST. A button press is
//! answered with a deferred update (type 6: the message stays) and its command run afterwards.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serenity::all::{Interaction, InteractionId};

use super::DiscordState;
use crate::hooks::SIGNATURE_WINDOW_SECS;

/// Interaction callback types.
const PONG: u8 = 1;
const CHANNEL_MESSAGE: u8 = 4;
const DEFERRED_CHANNEL_MESSAGE: u8 = 5;
const DEFERRED_UPDATE_MESSAGE: u8 = 6;
/// Message flag: shown only to the person who invoked the interaction.
const EPHEMERAL: u64 = 1 << 6;

fn callback(kind: u8) -> Response {
    Json(serde_json::json!({ "type": kind })).into_response()
}

/// Whether `X-Signature-Timestamp` (Unix seconds, covered by the signature) is within the
/// replay window of `now`: a captured request cannot be sent again later, which is also why
/// stored interaction ids may be forgotten after a day.
fn fresh(timestamp: &str, now: DateTime<Utc>) -> bool {
    timestamp
        .parse::<i64>()
        .is_ok_and(|t| now.timestamp().abs_diff(t) <= SIGNATURE_WINDOW_SECS.unsigned_abs())
}

/// The answer to an interaction from a server other than the configured one: nothing is
/// recorded or run, and only the person who asked sees why.
fn refused_here() -> Response {
    Json(serde_json::json!({
        "type": CHANNEL_MESSAGE,
        "data": { "content": "opsbot does not take commands from this server.", "flags": EPHEMERAL },
    }))
    .into_response()
}

/// Records the interaction: true if it was not seen before; a 503 when the store cannot say.
async fn first(state: &DiscordState, id: InteractionId) -> Result<bool, Response> {
    state.first_delivery(id).await.map_err(|e| {
        tracing::error!(error = %e, "could not record a Discord interaction; not running it");
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    })
}

/// Answers with callback `kind` at once and, unless the interaction was seen before (a
/// replay), does `work` afterwards.
async fn acknowledge<F, W>(state: DiscordState, id: InteractionId, kind: u8, work: W) -> Response
where
    W: FnOnce(DiscordState) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    match first(&state, id).await {
        Ok(new) => {
            if new {
                let inbound = state.inbound.clone();
                inbound.spawn(work(state));
            }
            callback(kind)
        }
        Err(refused) => refused,
    }
}

pub async fn interactions(
    State(state): State<DiscordState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(verifier) = &state.verifier else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let header = |name: &str| crate::hooks::header(&headers, name);
    let now = state.inbound.router().clock().now();
    let verified = match (
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
    ) {
        (Some(signature), Some(timestamp)) => {
            fresh(timestamp, now) && verifier.verify(signature, timestamp, &body).is_ok()
        }
        _ => false,
    };
    if !verified {
        tracing::warn!("refused a Discord interaction with a missing, bad or stale signature");
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let interaction: Interaction = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "could not read a signed Discord interaction");
            return (StatusCode::BAD_REQUEST, "not an interaction").into_response();
        }
    };
    let guild = match &interaction {
        Interaction::Command(cmd) => cmd.guild_id,
        Interaction::Component(press) => press.guild_id,
        _ => None,
    };
    if state.foreign(guild) {
        tracing::debug!(guild = ?guild, "refused a Discord interaction from another server");
        return refused_here();
    }
    // A request seen before (a replay) is acknowledged and not handled again.
    match interaction {
        Interaction::Ping(_) => callback(PONG),
        Interaction::Command(cmd) => {
            acknowledge(state, cmd.id, DEFERRED_CHANNEL_MESSAGE, |s| async move {
                s.answer(cmd, None).await
            })
            .await
        }
        Interaction::Component(press) => {
            acknowledge(state, press.id, DEFERRED_UPDATE_MESSAGE, |s| async move {
                s.press(press, None).await
            })
            .await
        }
        // opsbot sends no modals and no autocomplete options.
        other => {
            tracing::debug!(kind = ?other.kind(), "ignoring an unsupported Discord interaction");
            (StatusCode::BAD_REQUEST, "unsupported interaction").into_response()
        }
    }
}
