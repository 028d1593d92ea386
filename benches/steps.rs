//! Step overhead of multi-step runbooks: from one step's start to the next one's, for steps
//! that do next to nothing themselves (`message` steps), so what is measured is opsbot's own
//! work between steps: the step's claim in `run_steps` with the edit of the run's progress
//! message queued in the same transaction, its start audited, its end recorded with the next
//! edit and the message step's post. Target (issue 16): p99 under 20 ms on SQLite and on
//! Postgres.
//!
//! The app is the real one (`App::build_with` from a TOML config), its outbox's deliverer
//! running against a chat that answers at once and counts the edits it gets. `/walk` is a
//! command of `OPSBOT_BENCH_STEPS` (default 25) message steps needing no approval, asked on
//! Slack (so it runs as a chat-started run does: in the background, its answer bound as its
//! progress message, as the Slack adapter binds it) `OPSBOT_BENCH_RUNS` times (default 40; 3
//! without `--bench`, as under `cargo test --benches`). Each gap is read from the stored
//! steps' start times (microseconds); only the gaps after the progress message was bound
//! count (the first steps of a run may start before it is).
//! Postgres: `OPSBOT_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432`), in a
//! database created for the run and dropped after it; unreachable, SQLite only.

#[path = "support/bench_db.rs"]
mod bench_db;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bench_db::{UNLIMITED, drop_database, fresh_database, knob};
use chrono::{DateTime, Utc};
use opsbot::app::{App, Overrides};
use opsbot::config::Config;
use opsbot::domain::{ChannelRef, EventPayload, InboundEvent, Platform, RunId, RunState, UserRef};
use opsbot::ports::{ChatOutbound, OutboundError, OutboundMessage, OutboundTarget};
use tokio_util::sync::CancellationToken;

const TARGET_P99: Duration = Duration::from_millis(20);

const PEOPLE: &str = r#"
[[people]]
name = "alice"
roles = ["sre"]
identities = ["slack:UALICE"]
"#;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let runs: usize = knob("OPSBOT_BENCH_RUNS", if bench { 40 } else { 3 });
    let steps: usize = knob("OPSBOT_BENCH_STEPS", 25);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = format!("sqlite://{}", dir.path().join("steps.db").display());
        measure("SQLite", &sqlite, runs, steps).await;
        let server: String = knob(
            "OPSBOT_BENCH_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432".to_owned(),
        );
        let address = server.rsplit('@').next().unwrap_or("127.0.0.1:5432");
        if tokio::net::TcpStream::connect(address).await.is_err() {
            println!("Postgres at {server} is not reachable: measured on SQLite only");
            return;
        }
        let name = format!("steps_bench_{}", uuid::Uuid::new_v4().simple());
        let url = fresh_database(&server, &name).await;
        measure("Postgres", &url, runs, steps).await;
        drop_database(&server, &name).await;
    });
}

/// The chat: answers every post and edit at once, counting the edits.
#[derive(Default)]
struct Chat {
    edits: AtomicUsize,
}

#[async_trait]
impl ChatOutbound for Chat {
    async fn send(&self, _: &OutboundTarget, _: &OutboundMessage) -> Result<String, OutboundError> {
        Ok("posted".into())
    }

    async fn edit(
        &self,
        _: &OutboundTarget,
        _: &str,
        _: &OutboundMessage,
    ) -> Result<(), OutboundError> {
        self.edits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The app at `database_url` in `dir` with `/walk` of `steps` message steps, its outbox
/// delivering to `chat` until `shutdown`.
async fn walk_app(
    dir: &std::path::Path,
    database_url: &str,
    steps: usize,
    chat: Arc<Chat>,
    shutdown: &CancellationToken,
) -> App {
    let commands = dir.join("commands");
    std::fs::create_dir_all(&commands).expect("commands dir");
    let mut walk =
        String::from("name = \"walk\"\nsummary = \"many small steps\"\nroles = [\"sre\"]\n");
    for i in 0..steps {
        walk.push_str(&format!(
            "\n[[steps]]\nname = \"s{i}\"\nkind = \"message\"\ntext = \"step {i}\"\n"
        ));
    }
    std::fs::write(commands.join("walk.toml"), walk).expect("write runbook");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\ndatabase_url = \"{database_url}\"\n[catalog]\ndir = \"commands\"\n{UNLIMITED}{PEOPLE}"
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, &text).expect("write config");
    let config = Config::from_toml(&path, &text, &[]).expect("bench config is valid");
    let overrides = Overrides {
        outbound: Some(chat),
        ..Overrides::default()
    };
    let app = App::build_with(config, overrides)
        .await
        .expect("app builds");
    app.start_election(shutdown);
    app.spawn_outbox(shutdown);
    app
}

/// Asks for `/walk` on Slack, binds its answer as its progress message (as the adapter does
/// once it has posted it) and waits for it to end; the run, and when it was bound.
async fn walk_once(app: &App, n: usize) -> (RunId, DateTime<Utc>) {
    let walk = InboundEvent::new(
        UserRef::new(Platform::Slack, "UALICE"),
        ChannelRef::id_only("COPS"),
        EventPayload::Command("/walk".into()),
    );
    let response = app.router.handle(&walk).await;
    let id = response.progress_run.unwrap_or_else(|| {
        let text = response.reply.map(|r| r.text).unwrap_or_default();
        panic!("/walk must run in the background with a progress message: {text}")
    });
    app.router
        .bind_progress(id, &format!("progress-{n}"))
        .await
        .expect("bind the progress message");
    let bound = Utc::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let run = app.store.run(id).await.expect("run").expect("stored");
        match run.state {
            RunState::Approved | RunState::Running => {}
            RunState::Succeeded => return (id, bound),
            other => panic!("/walk #{id} must succeed; it ended {other}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/walk #{id} never ended"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs `/walk` `runs` times on a fresh app at `database_url` and prints the gaps between
/// consecutive steps' starts (those after the run's progress message was bound).
async fn measure(backend: &str, database_url: &str, runs: usize, steps: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let chat = Arc::new(Chat::default());
    let shutdown = CancellationToken::new();
    let app = walk_app(dir.path(), database_url, steps, chat.clone(), &shutdown).await;
    let mut gaps = Vec::with_capacity(runs * steps);
    for n in 1..=runs {
        let (id, bound) = walk_once(&app, n).await;
        let mut starts: Vec<_> = (app.store.run_steps(id).await.expect("steps"))
            .into_iter()
            .map(|s| (s.idx, s.started_at))
            .collect();
        starts.sort();
        assert_eq!(starts.len(), steps, "every step recorded once");
        gaps.extend(
            (starts.windows(2))
                .filter(|w| w[0].1 >= bound)
                .map(|w| (w[1].1 - w[0].1).to_std().unwrap_or_default()),
        );
    }
    shutdown.cancel();
    assert!(
        !gaps.is_empty(),
        "no step started after its progress message was bound"
    );
    gaps.sort();
    let p = |q: f64| gaps[((gaps.len() as f64 * q).ceil() as usize).clamp(1, gaps.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "step start -> next step start, progress edit queued ({backend}, {runs} runs of {steps} \
         message steps, {} gaps after binding, {} edits delivered): p50 {:.2} ms, p90 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms [target p99 < {} ms: {}]; load {}",
        gaps.len(),
        chat.edits.load(Ordering::Relaxed),
        ms(p(0.50)),
        ms(p(0.90)),
        ms(p(0.99)),
        ms(*gaps.last().expect("gaps")),
        TARGET_P99.as_millis(),
        if p(0.99) < TARGET_P99 {
            "met"
        } else {
            "MISSED"
        },
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
    );
}
