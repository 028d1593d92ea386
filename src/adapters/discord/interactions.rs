//! `POST /discord/interactions`, for applications that set an Interactions Endpoint URL: the
//! Ed25519 signature (`X-Signature-Ed25519` over `X-Signature-Timestamp` + body) is checked
//! before anything is parsed (401 and nothing else on failure), PING is answered with PONG,
//! and a slash command is answered at once with a deferred response (type 5) and worked on
//! afterwards, its answer edited into the original response over REST. A button press is
//! answered with a deferred update (type 6: the message stays) and its command run afterwards.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serenity::all::{Interaction, InteractionId};

use super::DiscordState;

/// Interaction callback types.
const PONG: u8 = 1;
const DEFERRED_CHANNEL_MESSAGE: u8 = 5;
const DEFERRED_UPDATE_MESSAGE: u8 = 6;

fn callback(kind: u8) -> Response {
    Json(serde_json::json!({ "type": kind })).into_response()
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
    let verified = match (
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
    ) {
        (Some(signature), Some(timestamp)) => verifier.verify(signature, timestamp, &body).is_ok(),
        _ => false,
    };
    if !verified {
        tracing::warn!("refused a Discord interaction with a missing or bad signature");
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let interaction: Interaction = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "could not read a signed Discord interaction");
            return (StatusCode::BAD_REQUEST, "not an interaction").into_response();
        }
    };
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
