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

use crate::hooks::HookState;
use crate::metrics::Metrics;
use crate::ports::Store;

#[derive(Clone)]
pub struct HttpState {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub hooks: HookState,
    pub liveness: Arc<crate::liveness::Liveness>,
    pub telegram: Option<crate::adapters::telegram::TelegramInbound>,
    pub slack: Option<crate::adapters::slack::SlackState>,
    /// Set when `discord.public_key` is configured: serves `/discord/interactions`.
    pub discord: Option<crate::adapters::discord::DiscordState>,
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
        app = app.merge(
            Router::new()
                .route(
                    "/telegram/webhook",
                    post(crate::adapters::telegram::webhook),
                )
                .layer(DefaultBodyLimit::max(1024 * 1024))
                .with_state(telegram),
        );
    }
    if let Some(slack) = state.slack {
        app = app.merge(
            Router::new()
                .route("/slack/commands", post(crate::adapters::slack::command))
                .route("/slack/events", post(crate::adapters::slack::events))
                .route(
                    "/slack/interactivity",
                    post(crate::adapters::slack::interactivity),
                )
                .layer(DefaultBodyLimit::max(1024 * 1024))
                .with_state(slack),
        );
    }
    if let Some(discord) = state.discord {
        app = app.merge(
            Router::new()
                .route(
                    "/discord/interactions",
                    post(crate::adapters::discord::interactions),
                )
                .layer(DefaultBodyLimit::max(1024 * 1024))
                .with_state(discord),
        );
    }
    app
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
