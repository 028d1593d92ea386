//! The application under test: [`TestApp::builder`] writes a config, a command catalogue and
//! scripts into a temp folder, builds the real `App` (with any fakes), binds 127.0.0.1:0 and
//! starts HTTP and every configured adapter; [`TestApp`] then talks to it.

use std::net::SocketAddr;
use std::sync::Arc;

use opsbot::app::{App, Overrides};
use opsbot::config::Config;
use opsbot::domain::{ChannelRef, EventPayload, InboundEvent, Platform, UserRef};
use opsbot::ports::{ChatOutbound, EnvLookup, FakeClock, Store};
use opsbot::router::{Response, Router};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::wait::{WAIT, eventually};

/// An `act.sh` that appends a line to `runs.log` per run (see [`TestApp::runs`]) and says
/// `rolled back SERVICE`.
pub const COUNTING_ACT: &str = "#!/bin/sh\necho run >> runs.log\necho rolled back $1\n";

pub struct TestApp {
    pub router: Arc<Router>,
    pub store: Arc<dyn Store>,
    pub alerts: Arc<opsbot::actions::alerts::AlertService>,
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `server.metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub dir: TempDir,
    /// The app's periodic sweep (tests run it by hand), posting through the app's outbound.
    pub sweeper: opsbot::sweeper::Sweeper,
    /// The app's scheduler (tests tick it by hand, with a `FakeClock`).
    pub scheduler: opsbot::scheduler::Scheduler,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What [`TestApp::builder`] collects before [`TestAppBuilder::spawn`].
#[derive(Default)]
pub struct TestAppBuilder {
    config: String,
    server: String,
    commands: Vec<(String, String)>,
    scripts: Vec<(String, String)>,
    database_url: Option<String>,
    overrides: Overrides,
}

impl TestApp {
    /// An app on a fresh SQLite file in its own temp folder, with no commands and a config
    /// that only sets the store, the catalogue folder and a port-0 listener.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }
}

impl TestAppBuilder {
    /// Appends `toml` to the config.
    pub fn config(mut self, toml: &str) -> Self {
        self.config.push_str(toml);
        self
    }

    /// Adds `toml` (keys such as `max_connections = 4`) to the `[server]` section.
    pub fn server(mut self, toml: &str) -> Self {
        self.server.push_str(toml);
        self.server.push('\n');
        self
    }

    /// Adds command file `file` (TOML) to the catalogue.
    pub fn command(mut self, file: &str, toml: &str) -> Self {
        self.commands.push((file.to_owned(), toml.to_owned()));
        self
    }

    /// Writes the executable `name` into the app's folder (where runbooks run).
    pub fn script(mut self, name: &str, body: &str) -> Self {
        self.scripts.push((name.to_owned(), body.to_owned()));
        self
    }

    /// Uses this store instead of the app's own SQLite file (replicas share one).
    pub fn database(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_owned());
        self
    }

    /// Uses this store itself (another app's: two routers on one SQLite store, which only
    /// one process, and so one open store, may hold).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.overrides.store = Some(store);
        self
    }

    /// Stored timestamps come from `clock` (when given) instead of the system clock.
    pub fn clock(mut self, clock: impl Into<Option<Arc<FakeClock>>>) -> Self {
        if let Some(clock) = clock.into() {
            self.overrides.clock = Some(clock);
        }
        self
    }

    /// Runbooks read their secrets from `env` instead of the process environment.
    pub fn env(mut self, env: EnvLookup) -> Self {
        self.overrides.env = Some(env);
        self
    }

    /// Escalation pages go to `pager` (a fake) instead of nowhere.
    pub fn pager(mut self, pager: Arc<dyn opsbot::ports::Pager>) -> Self {
        self.overrides.pager = Some(pager);
        self
    }

    /// The bot's own messages (alert groups) go to `chat` instead of the console.
    pub fn outbound(mut self, chat: Arc<dyn ChatOutbound>) -> Self {
        self.overrides.outbound = Some(chat);
        self
    }

    pub async fn spawn(self) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let cmd_dir = dir.path().join("commands");
        std::fs::create_dir_all(&cmd_dir).expect("commands dir");
        for (name, body) in &self.commands {
            super::write(&cmd_dir, name, body);
        }
        for (name, body) in &self.scripts {
            super::write_executable(dir.path(), name, body);
        }
        let database_url = self
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("opsbot.db").display()));
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}[store]\ndatabase_url = \"{database_url}\"\n[catalog]\ndir = \"commands\"\n{}",
            self.server, self.config
        );
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &text).expect("write config");
        let config = Config::from_toml(&path, &text, &[]).expect("test config is valid");
        let app = App::build_with(config, self.overrides)
            .await
            .expect("app builds");
        start(app, dir).await
    }
}

/// Serves `app` on 127.0.0.1:0 with every configured adapter, until the `TestApp` drops.
async fn start(app: App, dir: TempDir) -> TestApp {
    let listener = app.bind().await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let metrics = app.bind_metrics().await.expect("bind the metrics listener");
    let metrics_addr = metrics
        .as_ref()
        .map(|l| l.local_addr().expect("local addr"));
    if let Some(listener) = metrics {
        app.spawn_metrics(listener, &shutdown);
    }
    app.start_election(&shutdown);
    app.spawn_adapters(&shutdown);
    app.spawn_outbox(&shutdown);
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
        metrics_addr,
        dir,
        sweeper: app.sweeper(),
        scheduler: app.scheduler(),
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

    /// What `/metrics` shows now (on its own listener when there is one).
    pub async fn metrics(&self) -> String {
        let addr = self.metrics_addr.unwrap_or(self.addr);
        let response = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("GET /metrics");
        response.text().await.expect("metrics body")
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many times a script like [`COUNTING_ACT`] has run.
    pub fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("runs.log"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// `/readyz`'s body.
    pub async fn readyz(&self) -> String {
        let resp = reqwest::get(self.url("/readyz"))
            .await
            .expect("GET /readyz");
        resp.text().await.expect("the /readyz body")
    }

    /// Waits until `/readyz` shows `line`; returns the whole body.
    pub async fn wait_for_readyz(&self, line: &str) -> String {
        eventually(&format!("{line:?} in /readyz"), WAIT, async || {
            super::satisfies(self.readyz().await, |body| body.contains(line))
        })
        .await
    }

    /// Waits until nothing the app acknowledged is still being answered: every command,
    /// approval and run it started has finished, so what it has not done by now it won't do.
    pub async fn wait_idle(&self) {
        let in_flight = self.router.in_flight();
        eventually("the app to finish what it started", WAIT, async || {
            super::satisfies(in_flight.len(), |n| *n == 0)
        })
        .await;
    }
}

pub fn event(who: &str, channel: &str, payload: EventPayload) -> InboundEvent {
    InboundEvent::new(
        UserRef::new(Platform::Console, who),
        ChannelRef::id_only(channel),
        payload,
    )
}
