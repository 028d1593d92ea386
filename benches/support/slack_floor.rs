//! The floor for `slack_ack`: the least a server can do per Slack slash command while keeping
//! opsbot's guarantees, written with the same crates and runtime settings, so opsbot's CPU per
//! command can be compared with what the work itself costs on this machine.
//!
//! Per command, as opsbot does it: read the body, check the timestamp window and the v0
//! HMAC-SHA256 signature, parse the form, answer 200; then, in a task: store the `trigger_id`
//! (replay protection, committed to SQLite before anything runs), append a hash-chained
//! audit record (committed), POST the answer to `response_url` (JSON), and write one log
//! line. What it leaves out is everything that is opsbot's own: the command catalogue,
//! roles, rate limits, escaping, metrics, request timeouts and connection limits.
//!
//! Started by the bench re-executing itself: `slack_ack --floor-server PORT DB LOG SECRET`.
//! `SLACK_FLOOR_SKIP` (comma-separated `db`, `post`) leaves out the two SQLite commits or the
//! `response_url` POST, to show what each costs.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

struct Floor {
    secret: Vec<u8>,
    db: sqlx::SqlitePool,
    /// Chain head (seq, hash): one writer, as in opsbot.
    head: tokio::sync::Mutex<(i64, String)>,
    http: reqwest::Client,
    log: Mutex<std::fs::File>,
    skip_db: bool,
    skip_post: bool,
}

#[derive(serde::Deserialize)]
struct Slash {
    trigger_id: String,
    user_id: String,
    channel_id: String,
    command: String,
    text: String,
    response_url: String,
}

/// Runs the floor server until killed. `args`: port, database path, log path, secret.
pub fn main(args: &[String]) {
    let [port, db, log, secret] = args else {
        panic!("usage: --floor-server PORT DB LOG SECRET");
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(port, db, log, secret));
}

async fn serve(port: &str, db: &str, log: &str, secret: &str) {
    let options = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let db = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("open SQLite");
    for ddl in [
        "CREATE TABLE events (event_id TEXT PRIMARY KEY, received_at BIGINT NOT NULL)",
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL, \
         channel TEXT NOT NULL, command TEXT NOT NULL, args TEXT NOT NULL, outcome TEXT NOT NULL, \
         prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
    ] {
        sqlx::query(ddl).execute(&db).await.expect("schema");
    }
    let floor = Arc::new(Floor {
        secret: secret.as_bytes().to_vec(),
        db,
        head: tokio::sync::Mutex::new((0, "0".repeat(64))),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client"),
        log: Mutex::new(std::fs::File::create(log).expect("log file")),
        skip_db: skipped("db"),
        skip_post: skipped("post"),
    });
    let app = axum::Router::new()
        .route("/readyz", get(|| async { "ready" }))
        .route("/slack/commands", post(command))
        .with_state(floor);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("bind");
    axum::serve(listener, app).await.expect("serve");
}

fn skipped(part: &str) -> bool {
    std::env::var("SLACK_FLOOR_SKIP").is_ok_and(|s| s.split(',').any(|p| p.trim() == part))
}

async fn command(State(f): State<Arc<Floor>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if !signed(&f.secret, &headers, &body) {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(slash) = serde_urlencoded::from_bytes::<Slash>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    tokio::spawn(async move {
        if let Err(e) = run(&f, slash).await {
            eprintln!("floor: {e}");
        }
    });
    StatusCode::OK
}

fn signed(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(ts), Some(sig)) = (
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
    ) else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    if ts.parse::<i64>().map_or(true, |t| (now - t).abs() > 300) {
        return false;
    }
    let Some(sig) = sig.strip_prefix("v0=").and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(b"v0:");
    mac.update(ts.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

async fn run(f: &Floor, s: Slash) -> Result<(), Box<dyn std::error::Error>> {
    if !f.skip_db {
        store(f, &s).await?;
    }
    if !f.skip_post {
        let answer = "No health checks are configured.";
        f.http
            .post(&s.response_url)
            .json(&serde_json::json!({ "response_type": "ephemeral", "text": answer }))
            .send()
            .await?
            .error_for_status()?;
    }
    writeln!(
        f.log.lock().expect("log lock"),
        "INFO command handled trigger_id={} user={} command={} outcome=ok",
        s.trigger_id,
        s.user_id,
        s.command
    )?;
    Ok(())
}

/// The trigger id, then the audit record: two commits, as in opsbot.
async fn store(f: &Floor, s: &Slash) -> Result<(), Box<dyn std::error::Error>> {
    let now = chrono::Utc::now().timestamp_micros();
    let first = sqlx::query("INSERT INTO events VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(&s.trigger_id)
        .bind(now)
        .execute(&f.db)
        .await?
        .rows_affected()
        == 1;
    if !first {
        return Err("a replayed trigger id".into());
    }
    {
        let mut head = f.head.lock().await;
        let seq = head.0 + 1;
        let actor = format!("slack:{}", s.user_id);
        let hash = hex::encode(
            Sha256::new()
                .chain_update(head.1.as_bytes())
                .chain_update(seq.to_be_bytes())
                .chain_update(actor.as_bytes())
                .chain_update(s.channel_id.as_bytes())
                .chain_update(s.command.as_bytes())
                .chain_update(s.text.as_bytes())
                .finalize(),
        );
        sqlx::query("INSERT INTO audit VALUES ($1, $2, $3, $4, $5, $6, 'ok', $7, $8)")
            .bind(seq)
            .bind(now)
            .bind(&actor)
            .bind(&s.channel_id)
            .bind(&s.command)
            .bind(&s.text)
            .bind(&head.1)
            .bind(&hash)
            .execute(&f.db)
            .await?;
        *head = (seq, hash);
    }
    Ok(())
}
