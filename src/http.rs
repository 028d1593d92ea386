//! The HTTP server (axum): `/healthz` (process is up), `/readyz` (store reachable) and
//! `/metrics` (OpenMetrics text). Platform endpoints and `/hooks/*` will mount here.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::ports::Store;

#[derive(Clone)]
pub struct HttpState {
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
}

pub fn routes(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\nstore: ok\n".to_owned()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: store unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready\nstore: unreachable\n".to_owned(),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready\nstore: timed out\n".to_owned(),
        ),
    }
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
