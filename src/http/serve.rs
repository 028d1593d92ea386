//! The HTTP server's accept loop, in place of `axum::serve`, so that no one who can reach the
//! port can hold it: each connection must send its request headers within a deadline (hyper,
//! HTTP/1), at most `max_connections` are served at once (one more is answered 503 and
//! closed), failed `accept`s (out of file descriptors) back off instead of spinning, and
//! shutdown lets the requests in flight finish.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What one client may take of the server (`[server]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Until a connection's request headers are in (and how long it may sit idle).
    pub header_read: Duration,
    /// From a request's headers to its answer, body included.
    pub request: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Over-limit connections being answered 503 at once; beyond this they are closed unanswered,
/// so refusing cannot itself use up file descriptors.
const MAX_REFUSING: usize = 64;

/// How long a refused connection gets to receive its 503.
const REFUSE_WITHIN: Duration = Duration::from_secs(1);

/// The pause after a failed `accept`, doubling up to the maximum while failures continue.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts and serves connections until `shutdown` is cancelled, then waits for every
/// connection to finish its request in flight.
pub(super) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let serving = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let connections = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            // The client gave up before we got to it: nothing wrong with the listener.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, pause_ms = backoff.as_millis() as u64, "accepting a connection failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        backoff = ACCEPT_BACKOFF_MIN;
        if let Ok(permit) = serving.clone().try_acquire_owned() {
            let conn = serve_connection(stream, app.clone(), limits, shutdown.clone(), permit);
            connections.spawn(conn);
        } else if let Ok(permit) = refusing.clone().try_acquire_owned() {
            connections.spawn(refuse(stream, permit));
        }
    }
    connections.close();
    connections.wait().await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection's requests; holds its place among `max_connections` until closed.
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
    _place: OwnedSemaphorePermit,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            // Finishes the request in flight, then closes; an idle connection closes now.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts and clients that hang up are routine; nothing to act on.
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Answers a connection over the limit with a 503 and closes it.
async fn refuse(mut stream: TcpStream, _place: OwnedSemaphorePermit) {
    let body = r#"{"status":503,"message":"too many connections; retry"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Closing with the request unread would reset the connection, and the client could
        // lose the 503 before reading it: drain until the client closes its side.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSE_WITHIN, answer).await;
}
