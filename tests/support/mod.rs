//! Shared test harness: builds the real application on a temp SQLite file (or a fresh
//! Postgres schema), binds 127.0.0.1:0, and offers helpers to talk to it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use opsbot::app::{App, Overrides};
use opsbot::config::Config;
use opsbot::domain::{ChannelRef, EventPayload, InboundEvent, Platform, UserRef};
use opsbot::ports::Store;
use opsbot::router::{Response, Router};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// People and grants most tests use: alice (sre, deployer), bob (sre-lead), carol (viewer).
pub const TEAM: &str = r#"
[builtins]
status_roles = ["viewer", "sre", "sre-lead", "deployer"]
audit_roles = ["sre", "sre-lead"]

[[people]]
name = "alice"
roles = ["sre", "deployer"]
identities = ["console:alice", "slack:UALICE"]

[[people]]
name = "bob"
roles = ["sre-lead"]
identities = ["console:bob"]

[[people]]
name = "carol"
roles = ["viewer"]
identities = ["console:carol"]
"#;

pub const ROLLBACK: &str = r#"
name = "rollback"
summary = "Roll a service back"
roles = ["deployer", "sre"]
channels = ["ops", "incident-*"]
[[args]]
name = "service"
kind = "choice"
choices = ["api", "worker", "web"]
[[args]]
name = "to"
kind = "string"
pattern = 'v\d+\.\d+\.\d+'
required = false
[approval]
approvals = 1
approver_roles = ["sre-lead"]
expires_after = "10m"
[action]
kind = "exec"
argv = ["./rollback.sh", "{service}", "{to}"]
timeout = "60s"
"#;

pub struct TestApp {
    pub router: Arc<Router>,
    pub store: Arc<dyn Store>,
    pub alerts: Arc<opsbot::actions::alerts::AlertService>,
    pub addr: SocketAddr,
    pub dir: TempDir,
    /// The app's periodic sweep (tests run it by hand), posting through the app's outbound.
    pub sweeper: opsbot::sweeper::Sweeper,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Writes `commands` (file name, TOML) into a temp catalogue and starts the app with
/// `config` (TOML appended to a base that sets the store, catalogue and a port-0 listener).
pub async fn spawn_app(config: &str, commands: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("opsbot.db");
    spawn_app_with_store(config, commands, &format!("sqlite://{}", db.display()), dir).await
}

pub async fn spawn_app_with_store(
    config: &str,
    commands: &[(&str, &str)],
    database_url: &str,
    dir: TempDir,
) -> TestApp {
    spawn_app_full(config, commands, database_url, dir, Overrides::default()).await
}

/// Like [`spawn_app`], with a fake clock and environment.
pub async fn spawn_app_with(
    config: &str,
    commands: &[(&str, &str)],
    overrides: Overrides,
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("opsbot.db");
    spawn_app_full(
        config,
        commands,
        &format!("sqlite://{}", db.display()),
        dir,
        overrides,
    )
    .await
}

pub async fn spawn_app_full(
    config: &str,
    commands: &[(&str, &str)],
    database_url: &str,
    dir: TempDir,
    overrides: Overrides,
) -> TestApp {
    let cmd_dir = dir.path().join("commands");
    std::fs::create_dir_all(&cmd_dir).expect("commands dir");
    for (name, body) in commands {
        std::fs::write(cmd_dir.join(name), body).expect("write command file");
    }
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\ndatabase_url = \"{database_url}\"\n[catalog]\ndir = \"commands\"\n{config}"
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).expect("write config");
    let config = Config::from_toml(&path, &text, &[]).expect("test config is valid");
    let app = App::build_with(config, overrides)
        .await
        .expect("app builds");
    let listener = app.bind().await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    app.spawn_adapters(&shutdown);
    tokio::spawn(opsbot::http::serve(
        listener,
        app.http_state(),
        shutdown.clone(),
    ));
    TestApp {
        router: app.router.clone(),
        store: app.store.clone(),
        alerts: app.alerts.clone(),
        addr,
        dir,
        sweeper: app.sweeper(),
        shutdown,
    }
}

impl TestApp {
    /// `who` says `text` in console channel `channel`.
    pub async fn say_in(&self, who: &str, channel: &str, text: &str) -> Response {
        self.router
            .handle(&event(who, channel, EventPayload::Command(text.to_owned())))
            .await
    }

    pub async fn say(&self, who: &str, text: &str) -> Response {
        self.say_in(who, "ops", text).await
    }

    /// The reply text, or "" when the reply was withheld.
    pub async fn reply(&self, who: &str, text: &str) -> String {
        self.say(who, text)
            .await
            .reply
            .map(|r| r.text)
            .unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

pub fn event(who: &str, channel: &str, payload: EventPayload) -> InboundEvent {
    InboundEvent {
        platform: Platform::Console,
        workspace: None,
        channel: ChannelRef {
            id: channel.to_owned(),
            name: channel.to_owned(),
        },
        thread: None,
        user: UserRef::new(Platform::Console, who),
        display_name: who.to_owned(),
        payload,
        event_id: None,
        reply_handle: None,
        received_at: Utc::now(),
    }
}

/// Whether external services must be present: with `CI=true`, a missing service fails the test.
pub fn services_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Base URL of the test Postgres (`OPSBOT_TEST_POSTGRES_URL`, default the local trust-auth server).
pub fn postgres_url() -> String {
    std::env::var("OPSBOT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// URL of the test Redis (`OPSBOT_TEST_REDIS_URL`, default the local server).
pub fn redis_url() -> String {
    std::env::var("OPSBOT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Creates a fresh schema for one test and returns its name, or `None` (after saying why)
/// when Postgres is unreachable outside CI. In CI an unreachable Postgres panics.
pub async fn fresh_postgres_schema() -> Option<String> {
    use sqlx::Connection;
    let url = postgres_url();
    match sqlx::PgConnection::connect(&url).await {
        Ok(mut conn) => {
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut conn)
                .await
                .expect("create test schema");
            Some(schema)
        }
        Err(e) => unavailable("Postgres", &url, &e.to_string()),
    }
}

/// Reports an unreachable service: a failure in CI, a printed skip elsewhere.
pub fn unavailable<T>(service: &str, url: &str, why: &str) -> Option<T> {
    if services_required() {
        panic!("{service} at {url} is unreachable and CI=true requires it: {why}");
    }
    eprintln!(
        "SKIPPED: {service} at {url} is unreachable ({why}); set CI=true to make this a failure"
    );
    None
}

pub fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).expect("write file");
}

/// Drops a schema made by [`fresh_postgres_schema`] once a test has passed with it.
pub async fn drop_postgres_schema(schema: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&postgres_url())
        .await
        .expect("connect to drop test schema");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut conn)
        .await
        .expect("drop test schema");
}

/// A `database_url` for a whole app (`App::build`) pinned to `schema`: sqlx reads
/// `options=-c search_path=...` from the URL's query, so every pooled connection (and the
/// migrations) use that schema. Appends to any query the base URL already has.
pub fn postgres_schema_url(schema: &str) -> String {
    let base = postgres_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// Writes an executable (mode 0755) script `name` into `dir` and returns its absolute path.
pub fn write_executable(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::path::absolute(dir.join(name)).expect("absolute script path");
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make script executable");
    path
}

/// A chat platform that records what the bot posted and edited, for assertions.
#[derive(Default)]
pub struct RecordingOutbound {
    pub log: std::sync::Mutex<Vec<Outbound>>,
    /// When set, every delivery fails this way (to test retries).
    pub fail_with_retry_after: std::sync::Mutex<Option<std::time::Duration>>,
    /// Texts of the posts sent with urgent priority.
    pub urgent: std::sync::Mutex<Vec<String>>,
    /// The commands of the buttons each message carries now (by message id).
    pub buttons: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    Post {
        channel: String,
        id: String,
        text: String,
    },
    Edit {
        channel: String,
        id: String,
        text: String,
    },
}

impl RecordingOutbound {
    pub fn messages(&self) -> Vec<Outbound> {
        self.log.lock().unwrap().clone()
    }

    /// The commands behind the buttons message `id` shows now.
    pub fn buttons_on(&self, id: &str) -> Vec<String> {
        self.buttons
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    fn record_buttons(&self, id: &str, message: &opsbot::ports::OutboundMessage) {
        let commands = message.actions.iter().map(|a| a.command.clone()).collect();
        self.buttons.lock().unwrap().insert(id.to_owned(), commands);
    }

    /// Waits (polling, with a deadline) until `pred` holds for the recorded messages.
    pub async fn wait_until(
        &self,
        what: &str,
        pred: impl Fn(&[Outbound]) -> bool,
    ) -> Vec<Outbound> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let msgs = self.messages();
            if pred(&msgs) {
                return msgs;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; got {msgs:#?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

#[async_trait::async_trait]
impl opsbot::ports::ChatOutbound for RecordingOutbound {
    async fn send(
        &self,
        to: &opsbot::ports::OutboundTarget,
        message: &opsbot::ports::OutboundMessage,
    ) -> Result<String, opsbot::ports::OutboundError> {
        if message.priority == opsbot::ports::Priority::Urgent {
            self.urgent.lock().unwrap().push(message.text.clone());
        }
        let id = self.post(to, &message.text).await?;
        self.record_buttons(&id, message);
        Ok(id)
    }

    async fn post(
        &self,
        to: &opsbot::ports::OutboundTarget,
        text: &str,
    ) -> Result<String, opsbot::ports::OutboundError> {
        if let Some(d) = *self.fail_with_retry_after.lock().unwrap() {
            return Err(opsbot::ports::OutboundError::RetryAfter(d));
        }
        let mut log = self.log.lock().unwrap();
        let id = format!("m{}", log.len() + 1);
        log.push(Outbound::Post {
            channel: to.channel_id.clone(),
            id: id.clone(),
            text: text.to_owned(),
        });
        Ok(id)
    }

    async fn edit(
        &self,
        to: &opsbot::ports::OutboundTarget,
        message_id: &str,
        message: &opsbot::ports::OutboundMessage,
    ) -> Result<(), opsbot::ports::OutboundError> {
        if let Some(d) = *self.fail_with_retry_after.lock().unwrap() {
            return Err(opsbot::ports::OutboundError::RetryAfter(d));
        }
        self.record_buttons(message_id, message);
        self.log.lock().unwrap().push(Outbound::Edit {
            channel: to.channel_id.clone(),
            id: message_id.to_owned(),
            text: message.text.clone(),
        });
        Ok(())
    }
}

/// A recorded Alertmanager delivery (copied from the shared fixtures into `tests/fixtures`).
pub fn am_fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/alertmanager")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// `/rollback SERVICE` (deployers; service `api`) needing one approval from an sre-lead,
/// running `./act.sh SERVICE` in the app's folder.
pub const ROLLBACK_NEEDING_ONE_LEAD: &str = r#"
name = "rollback"
summary = "Roll back"
roles = ["deployer"]
[[args]]
name = "service"
kind = "choice"
choices = ["api"]
[approval]
approvals = 1
approver_roles = ["sre-lead"]
expires_after = "10m"
[action]
kind = "exec"
argv = ["./act.sh", "{service}"]
timeout = "10s"
"#;

const PLATFORM_AM_TOKEN: &str = "am-token-abc123";

/// An `[alerts]` table sending every alert group to `channel` on `platform`.
pub fn alerts_routed_to(platform: &str, channel: &str) -> String {
    format!(
        "[alerts]\nalertmanager_token = \"{PLATFORM_AM_TOKEN}\"\n\
         default_route = {{ platform = \"{platform}\", channel = \"{channel}\" }}\n"
    )
}

/// Delivers a recorded Alertmanager webhook (`fixture`) to the app at `base`
/// (`http://host:port`, configured with `alerts_routed_to`) and checks it was accepted.
pub async fn fire_alerts(base: &str, fixture: &str) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/hooks/alertmanager"))
        .bearer_auth(PLATFORM_AM_TOKEN)
        .body(am_fixture(fixture))
        .send()
        .await
        .expect("deliver the alert");
    assert_eq!(resp.status(), 200, "alert accepted");
}

/// Waits (polling, with a deadline) until request `run` is bound to its chat message.
pub async fn wait_for_run_message(app: &TestApp, run: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let bound = app.store.run(run).await.expect("load run");
        if bound.is_some_and(|r| r.message_id.is_some()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "request #{run} never bound to a message"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Serves a fake platform or upstream on 127.0.0.1 (a free port); returns its base URL.
pub async fn serve_fake(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a fake server");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}
