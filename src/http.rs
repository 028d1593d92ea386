//! The HTTP server (axum): `/healthz` (process is up), `/readyz` (store writable, loops and
//! adapters alive, paging services' last results, leader or follower) and `/metrics` (OpenMetrics text), alert intake under `/hooks/*` (see
//! `hooks`) and the chat platforms' endpoints; every request is answered within
//! `server.request_timeout`. With `server.metrics_listen`, `/metrics` has a listener of its
//! own instead (`serve_metrics`). Connections are accepted and limited in `serve`.

mod serve;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use serve::ServerLimits;

use crate::adapters::{discord, slack, telegram};
use crate::hooks::HookState;
use crate::metrics::{Metrics, Refusal, Webhook};
use crate::ports::Store;

/// Largest request body a chat platform's endpoint accepts.
const PLATFORM_MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
pub struct HttpState {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub hooks: HookState,
    pub liveness: Arc<crate::liveness::Liveness>,
    /// Whether this replica leads, and its name among replicas, shown by `/readyz`.
    pub leader: crate::leader::LeaderGate,
    pub replica: Arc<str>,
    pub telegram: Option<telegram::TelegramInbound>,
    pub slack: Option<slack::SlackState>,
    /// Set when `discord.public_key` is configured: serves `/discord/interactions`.
    pub discord: Option<discord::DiscordState>,
    /// Largest accepted request body (webhooks).
    pub max_body_bytes: usize,
    pub limits: ServerLimits,
    /// Whether this listener serves `/metrics` (not when `server.metrics_listen` gives it
    /// one of its own).
    pub metrics_route: bool,
}

pub fn routes(state: HttpState) -> Router {
    let store = Arc::new(StoreCheck::new(state.store.clone()));
    let counted =
        |endpoint| middleware::from_fn_with_state((endpoint, state.metrics.clone()), count_refused);
    let hooks = Router::new()
        .route(
            "/hooks/alertmanager",
            post(crate::hooks::alertmanager).layer(counted(Webhook::Alertmanager)),
        )
        .route(
            "/hooks/alert",
            post(crate::hooks::generic).layer(counted(Webhook::Alert)),
        )
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state.hooks.clone());
    let mut app = Router::new().route("/healthz", get(healthz)).route(
        "/readyz",
        get(move |State(state): State<HttpState>| readyz(state, store.clone())),
    );
    if state.metrics_route {
        app = app.route("/metrics", get(metrics));
    }
    let mut app = app.with_state(state.clone()).merge(hooks);
    if let Some(telegram) = state.telegram {
        let routes = Router::new().route("/telegram/webhook", post(telegram::webhook));
        app = app.merge(platform(
            routes,
            telegram,
            Webhook::Telegram,
            &state.metrics,
        ));
    }
    if let Some(slack) = state.slack {
        let routes = Router::new()
            .route("/slack/commands", post(slack::command))
            .route("/slack/events", post(slack::events))
            .route("/slack/interactivity", post(slack::interactivity));
        app = app.merge(platform(routes, slack, Webhook::Slack, &state.metrics));
    }
    if let Some(discord) = state.discord {
        let routes = Router::new().route("/discord/interactions", post(discord::interactions));
        app = app.merge(platform(routes, discord, Webhook::Discord, &state.metrics));
    }
    app.layer(middleware::from_fn_with_state(
        state.limits.request,
        answer_within,
    ))
}

/// Only `/metrics`, for the listener `server.metrics_listen` names.
pub fn metrics_routes(state: HttpState) -> Router {
    let limit = state.limits.request;
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(middleware::from_fn_with_state(limit, answer_within))
}

/// Answers 408 when a request is not done in time, typically because its body is not
/// arriving; without it a client that declares a body and never sends one holds a task.
async fn answer_within(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => crate::hooks::reply(
            StatusCode::REQUEST_TIMEOUT,
            "the request was not completed in time",
        ),
    }
}

/// A chat platform's inbound routes with their state. Their requests are small; the body
/// limit stops anyone who can reach the endpoint from making opsbot buffer more; what they
/// refuse is counted.
fn platform<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    state: S,
    endpoint: Webhook,
    metrics: &Arc<Metrics>,
) -> Router {
    routes
        .layer(DefaultBodyLimit::max(PLATFORM_MAX_BODY))
        .layer(middleware::from_fn_with_state(
            (endpoint, metrics.clone()),
            count_refused,
        ))
        .with_state(state)
}

/// Counts what an endpoint refused in `opsbot_webhook_refused_total`, from the status it
/// answered: one place for the alert hooks and every chat platform alike (the layer is
/// `from_fn_with_state((endpoint, metrics), count_refused)`).
async fn count_refused(
    State((endpoint, metrics)): State<(Webhook, Arc<Metrics>)>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let reason = match response.status() {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Some(endpoint.refusals()[0]),
        StatusCode::PAYLOAD_TOO_LARGE => Some(Refusal::TooLarge),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Some(Refusal::BadJson),
        _ => None,
    };
    if let Some(reason) = reason {
        metrics.webhook_refused(endpoint, reason);
    }
    response
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = state.limits;
    serve::accept_loop(listener, routes(state), limits, shutdown).await;
    Ok(())
}

/// Serves [`metrics_routes`] on `listener` until `shutdown` is cancelled.
pub async fn serve_metrics(listener: TcpListener, state: HttpState, shutdown: CancellationToken) {
    let limits = state.limits;
    serve::accept_loop(listener, metrics_routes(state), limits, shutdown).await;
}

/// How long an alert group may wait for chat delivery before `/readyz` reports it.
const NOTIFY_STALL: Duration = Duration::from_secs(120);

async fn healthz() -> &'static str {
    "ok\n"
}

/// How often `/readyz` writes to the store at most: it answers anyone, and one write per
/// request would let anyone load the database.
const STORE_PROBE_EVERY: Duration = Duration::from_secs(1);

/// The store's part of readiness: whether it accepts a write, probed at most once per
/// `STORE_PROBE_EVERY` (concurrent requests share one probe).
struct StoreCheck {
    store: Arc<dyn Store>,
    last: tokio::sync::Mutex<Option<(Instant, &'static str)>>,
}

impl StoreCheck {
    fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// `ok`, or what is wrong.
    async fn status(&self) -> &'static str {
        let mut last = self.last.lock().await;
        if let Some((at, status)) = *last
            && at.elapsed() < STORE_PROBE_EVERY
        {
            return status;
        }
        let probe = self.store.probe_write();
        let status = match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(Ok(())) => "ok",
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the store refuses writes");
                "writes failing"
            }
            Err(_) => "timed out",
        };
        *last = Some((Instant::now(), status));
        status
    }
}

async fn readyz(state: HttpState, store: Arc<StoreCheck>) -> impl IntoResponse {
    let store = store.status().await;
    let stalled = state.liveness.stalled();
    let (waiting, oldest) = state.hooks.alerts.backlog();
    let notifications_stalled = oldest.is_some_and(|age| age > NOTIFY_STALL);
    let ready = store == "ok" && stalled.is_empty() && !notifications_stalled;
    // Leading or following, a replica is as ready as its store: a follower's leader-only
    // loops are stopped on purpose, not stalled.
    let leadership = state.leader.current();
    state.metrics.set_leader(leadership.epoch().is_some());
    let mut body = format!(
        "{}\nstore: {store}\nreplica: {} {leadership}\n",
        if ready { "ready" } else { "not ready" },
        state.replica
    );
    if let Some(leading) = state.leader.leading_for() {
        body.push_str(&format!("leading for: {}s\n", leading.as_secs()));
    }
    if notifications_stalled {
        body.push_str(&format!(
            "alert notifications: stalled ({waiting} group(s) waiting, oldest {}s)\n",
            oldest.unwrap_or_default().as_secs()
        ));
    }
    if let Some((pending, oldest)) = outbox_depth(&state).await {
        body.push_str(&format!(
            "outbox: {pending} pending, oldest {}s\n",
            oldest.as_secs()
        ));
    }
    for (name, secs) in stalled {
        body.push_str(&format!("{name}: stalled ({secs}s since last run)\n"));
    }
    for (name, adapter) in state.liveness.adapters() {
        body.push_str(&format!("adapter {name}: {adapter}\n"));
    }
    for (name, pager) in state.liveness.pagers() {
        body.push_str(&format!("pager {name}: {pager}\n"));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

/// How many messages the outbox holds (the cluster's, from the store) and how long the
/// oldest has waited, also set in the metrics; `None` if the store does not answer in time.
/// Shown, never a reason to be unready: a platform that refuses posts must not take the
/// replica's webhooks out of service.
async fn outbox_depth(state: &HttpState) -> Option<(u64, Duration)> {
    let depth = state.store.outbox_depth();
    let depth = tokio::time::timeout(Duration::from_secs(2), depth)
        .await
        .ok()?
        .ok()?;
    let now = state.hooks.clock.now();
    let age = (depth.oldest)
        .and_then(|t| (now - t).to_std().ok())
        .unwrap_or_default();
    state.metrics.outbox(depth.pending, age);
    Some((depth.pending, age))
}

/// Escalations under way, from the store, into the metrics; left as it was if the store
/// does not answer in time.
async fn escalations_active(state: &HttpState) {
    let count = state.store.active_escalations();
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), count).await {
        state.metrics.escalations_active(n);
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let _ = outbox_depth(&state).await;
    escalations_active(&state).await;
    state.metrics.adapters_up(state.liveness.platforms_up());
    state
        .metrics
        .set_leader(state.leader.current().epoch().is_some());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
