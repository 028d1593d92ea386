//! The HTTP server (axum): `/healthz` (process is up), `/readyz` (store reachable) and
//! `/metrics` (OpenMetrics text), and alert intake under `/hooks/*` (see `hooks`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::adapters::{discord, slack, telegram};
use crate::hooks::HookState;
use crate::metrics::Metrics;
use crate::ports::Store;

/// Largest request body a chat platform's endpoint accepts.
const PLATFORM_MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
pub struct HttpState {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub hooks: HookState,
    pub liveness: Arc<crate::liveness::Liveness>,
    pub telegram: Option<telegram::TelegramInbound>,
    pub slack: Option<slack::SlackState>,
    /// Set when `discord.public_key` is configured: serves `/discord/interactions`.
    pub discord: Option<discord::DiscordState>,
    /// Largest accepted request body (webhooks).
    pub max_body_bytes: usize,
}

pub fn routes(state: HttpState) -> Router {
    let hooks = Router::new()
        .route("/hooks/alertmanager", post(crate::hooks::alertmanager))
        .route("/hooks/alert", post(crate::hooks::generic))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state.hooks.clone());
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(hooks);
    if let Some(telegram) = state.telegram {
        let routes = Router::new().route("/telegram/webhook", post(telegram::webhook));
        app = app.merge(platform(routes, telegram));
    }
    if let Some(slack) = state.slack {
        let routes = Router::new()
            .route("/slack/commands", post(slack::command))
            .route("/slack/events", post(slack::events))
            .route("/slack/interactivity", post(slack::interactivity));
        app = app.merge(platform(routes, slack));
    }
    if let Some(discord) = state.discord {
        let routes = Router::new().route("/discord/interactions", post(discord::interactions));
        app = app.merge(platform(routes, discord));
    }
    app
}

/// A chat platform's inbound routes with their state. Their requests are small; the body
/// limit stops anyone who can reach the endpoint from making opsbot buffer more.
fn platform<S: Clone + Send + Sync + 'static>(routes: Router<S>, state: S) -> Router {
    routes
        .layer(DefaultBodyLimit::max(PLATFORM_MAX_BODY))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, routes(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// How long an alert group may wait for chat delivery before `/readyz` reports it.
const NOTIFY_STALL: Duration = Duration::from_secs(120);

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let store = match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: store unreachable");
            "unreachable".to_owned()
        }
        Err(_) => "timed out".to_owned(),
    };
    let stalled = state.liveness.stalled();
    let (waiting, oldest) = state.hooks.alerts.backlog();
    let notifications_stalled = oldest.is_some_and(|age| age > NOTIFY_STALL);
    let ready = store == "ok" && stalled.is_empty() && !notifications_stalled;
    let mut body = format!(
        "{}\nstore: {store}\n",
        if ready { "ready" } else { "not ready" }
    );
    if notifications_stalled {
        body.push_str(&format!(
            "alert notifications: stalled ({waiting} group(s) waiting, oldest {}s)\n",
            oldest.unwrap_or_default().as_secs()
        ));
    }
    for (name, secs) in stalled {
        body.push_str(&format!("{name}: stalled ({secs}s since last run)\n"));
    }
    for (name, adapter) in state.liveness.adapters() {
        body.push_str(&format!("adapter {name}: {adapter}\n"));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
