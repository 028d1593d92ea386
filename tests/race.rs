//! Approval races and restarts across replicas: two `App` instances (two routers, two pools)
//! on one database stand in for two opsbot replicas. The runbook's action is a script that
//! appends one line per execution to a file, so the tests count real process starts.
//!
//! Postgres tests use a fresh schema each (selected through the URL, see
//! `support::postgres_schema_url`); they print a skip when Postgres is unreachable, and fail
//! instead with `CI=true`.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use opsbot::domain::{EventPayload, Outcome, RunId, RunState};
use opsbot::ports::{Clock, FakeClock};
use opsbot::router::Response;
use opsbot::router::runbook::LEASE;
use support::{TestApp, TestAppBuilder, event};
use tempfile::TempDir;

/// Everyone who may approve `/deploy`; racers cycle through them, so each approves several
/// times (on both replicas).
const APPROVERS: [&str; 5] = ["bob", "dave", "erin", "frank", "grace"];
/// Concurrent `/approve N` commands per race, alternating between the two replicas.
const RACERS: usize = 30;
/// What only the reply that ran the action says ("already ran (succeeded)" is not it).
const RESULT: &str = "/deploy succeeded";

/// alice requests; bob, dave, erin, frank and grace are sre-leads. Limits are generous so
/// the race is decided by the store, never by the rate limiter.
fn config() -> String {
    let mut c = String::from(
        r#"
[limits]
global = "100000/s"
per_user = "100000/s"

[builtins]
status_roles = ["sre", "sre-lead", "deployer"]
audit_roles = ["sre", "sre-lead"]

[[people]]
name = "alice"
roles = ["sre", "deployer"]
identities = ["console:alice"]
"#,
    );
    for who in APPROVERS {
        c.push_str(&format!(
            "\n[[people]]\nname = \"{who}\"\nroles = [\"sre-lead\"]\nidentities = [\"console:{who}\"]\n"
        ));
    }
    c
}

/// A script that records each execution as one line in a log file, shared by the replicas.
struct Counter {
    dir: TempDir,
    script: PathBuf,
    log: PathBuf,
}

impl Counter {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = support::write_executable(
            dir.path(),
            "count.sh",
            "#!/bin/sh\necho \"ran as pid $$\" >> \"$1\"\necho \"counted one run\"\n",
        );
        let log = std::path::absolute(dir.path().join("executions.log")).expect("absolute");
        Self { dir, script, log }
    }

    /// `/deploy`: one approval from sre-lead, then runs the script with the log as argument.
    fn runbook(&self) -> String {
        format!(
            r#"
name = "deploy"
summary = "Deploy (counts its executions)"
roles = ["deployer"]
channels = ["ops"]
{}[action]
kind = "exec"
argv = ['{}', '{}']
timeout = "30s"
"#,
            support::one_lead_approval!(),
            self.script.display(),
            self.log.display()
        )
    }

    fn executions(&self) -> Vec<String> {
        match std::fs::read_to_string(&self.log) {
            Ok(s) => s.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("reading {}: {e}", self.log.display()),
        }
    }

    fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("shared.db").display())
    }
}

/// One replica on `database_url`, with its own config folder and (optionally) a fake clock.
async fn replica(counter: &Counter, database_url: &str, clock: Option<Arc<FakeClock>>) -> TestApp {
    on(counter, database_url, clock).spawn().await
}

fn on(counter: &Counter, database_url: &str, clock: Option<Arc<FakeClock>>) -> TestAppBuilder {
    TestApp::builder()
        .config(&config())
        .command("deploy.toml", &counter.runbook())
        .database(database_url)
        .clock(clock)
}

/// Another router on `first`'s store: one process alone may open a SQLite file, so SQLite's
/// "replicas" are routers sharing its one store (what two Postgres replicas share is the
/// database itself).
async fn beside(
    first: &TestApp,
    counter: &Counter,
    database_url: &str,
    clock: Option<Arc<FakeClock>>,
) -> TestApp {
    let builder = on(counter, database_url, clock);
    if database_url.starts_with("sqlite:") {
        builder.store(first.store.clone()).spawn().await
    } else {
        builder.spawn().await
    }
}

fn text(r: &Response) -> &str {
    r.reply.as_ref().map_or("", |r| r.text.as_str())
}

async fn request(app: &TestApp) -> RunId {
    let r = app.say("alice", "/deploy").await;
    let id = r
        .pending_run
        .unwrap_or_else(|| panic!("/deploy should create a request: {:?}", text(&r)));
    assert!(text(&r).contains(&format!("Request #{id}")), "{}", text(&r));
    id
}

/// alice requests on replica `a`; then `RACERS` concurrent `/approve N`, alternating between
/// `a` and `b` and cycling through the approvers, all released at once. Exactly one starts
/// the action and reports its result; every other says the request is already approved or ran.
async fn race(a: &TestApp, b: &TestApp, counter: &Counter) -> RunId {
    let id = request(a).await;
    assert_eq!(
        counter.executions().len(),
        0,
        "nothing runs before approval"
    );
    let routers = [a.router.clone(), b.router.clone()];
    let start = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::with_capacity(RACERS);
    for i in 0..RACERS {
        let (router, start) = (routers[i % 2].clone(), start.clone());
        let who = APPROVERS[i % APPROVERS.len()];
        tasks.push(tokio::spawn(async move {
            let ev = event(who, "ops", EventPayload::Command(format!("/approve {id}")));
            start.wait().await;
            (i, who, router.handle(&ev).await)
        }));
    }
    let mut responses = Vec::with_capacity(RACERS);
    for t in tasks {
        responses.push(t.await.expect("approval task panicked"));
    }

    let lines = counter.executions();
    assert_eq!(
        lines.len(),
        1,
        "the action must start exactly once: {lines:?}"
    );
    let winners: Vec<_> = responses
        .iter()
        .filter(|(_, _, r)| text(r).contains(RESULT))
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one reply carries the result; replies: {:#?}",
        responses
            .iter()
            .map(|(i, who, r)| format!("{i} {who}: {}", text(r)))
            .collect::<Vec<_>>()
    );
    let (_, winner, won) = winners[0];
    assert_eq!(won.outcome, Some(Outcome::Ok));
    assert!(
        text(won).contains(&format!("Approved by {winner}"))
            && text(won).contains("counted one run"),
        "{}",
        text(won)
    );
    for (i, who, r) in &responses {
        if std::ptr::eq(r, won) {
            continue;
        }
        let t = text(r);
        assert!(
            r.outcome != Some(Outcome::Failed) && !t.contains("Something went wrong"),
            "racer {i} ({who}) got an error: {t:?}"
        );
        assert!(
            ["already approved", "already ran", "already running"]
                .iter()
                .any(|m| t.contains(m))
                && !t.contains(RESULT),
            "racer {i} ({who}) should be told #{id} is already approved or ran: {t:?}"
        );
    }

    for app in [a, b] {
        let run = app
            .store
            .run(id)
            .await
            .expect("read run")
            .expect("run exists");
        assert_eq!(run.state, RunState::Succeeded);
        let result = run.result.expect("result recorded");
        assert_eq!(result.code, Some(0));
        assert!(
            result.output.contains("counted one run"),
            "{}",
            result.output
        );
    }
    // A late approval on either replica runs nothing.
    for app in [b, a] {
        let late = app.reply("dave", &format!("/approve {id}")).await;
        assert!(late.contains("already ran (succeeded)"), "{late}");
    }
    assert_eq!(counter.executions().len(), 1);
    id
}

/// A request whose process died mid-run (state `running`, lease lapsed) is marked
/// `interrupted` by the next replica's sweep, said so once, and never runs again.
async fn restart_mid_run(counter: &Counter, database_url: &str) -> RunId {
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let first = replica(counter, database_url, Some(clock.clone())).await;
    let id = request(&first).await;
    // The approval and process start as `approve`/`execute` record them; then the process dies.
    move_under_lease(&first, &clock, id, RunState::Pending, RunState::Approved).await;
    move_under_lease(&first, &clock, id, RunState::Approved, RunState::Running).await;
    let second = beside(&first, counter, database_url, Some(clock.clone())).await;
    drop(first);
    let early = second.router.sweep().await.expect("sweep");
    assert!(early.is_empty(), "the lease has not lapsed yet: {early:?}");
    assert_eq!(state(&second, id).await, RunState::Running);

    clock.advance(LEASE + Duration::from_secs(1));
    // Two restarted replicas sweep at once; the request is reported by exactly one of them.
    let third = beside(&second, counter, database_url, Some(clock.clone())).await;
    let (x, y) = tokio::join!(second.router.sweep(), third.router.sweep());
    let notices: Vec<_> = x
        .expect("sweep")
        .into_iter()
        .chain(y.expect("sweep"))
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].text.contains("interrupted") && notices[0].text.contains(&format!("#{id}")),
        "{}",
        notices[0].text
    );
    assert!(
        notices[0].text.contains("while it was running")
            && notices[0].text.contains("its process was stopped with it"),
        "the notice says the run had started: {}",
        notices[0].text
    );
    assert_eq!(notices[0].channel_id, "ops");
    assert_eq!(state(&second, id).await, RunState::Interrupted);
    let audit = second.store.recent_audit(10).await.expect("read audit");
    let interrupted: Vec<_> = audit
        .iter()
        .filter(|r| r.entry.detail.contains(&format!("run #{id} interrupted")))
        .collect();
    assert_eq!(
        interrupted.len(),
        1,
        "the interruption is audited once: {audit:#?}"
    );
    assert_eq!(interrupted[0].entry.outcome, Outcome::Failed);
    assert!(
        second.router.sweep().await.expect("sweep").is_empty(),
        "an interrupted request is reported once"
    );

    let again = second.reply("bob", &format!("/approve {id}")).await;
    assert!(again.contains("already ran (interrupted)"), "{again}");
    assert_eq!(state(&second, id).await, RunState::Interrupted);
    assert!(counter.executions().is_empty(), "nothing may re-run");
    id
}

/// A request approved but not started when its process died: the notice says nothing ran.
#[tokio::test]
async fn an_approved_request_interrupted_before_it_started_says_nothing_ran() {
    let counter = Counter::new();
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let app = replica(&counter, &counter.sqlite_url(), Some(clock.clone())).await;
    let id = request(&app).await;
    move_under_lease(&app, &clock, id, RunState::Pending, RunState::Approved).await;
    clock.advance(LEASE + Duration::from_secs(1));
    let notices = app.router.sweep().await.expect("sweep");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0]
            .text
            .contains("before it started, so nothing ran"),
        "{}",
        notices[0].text
    );
    assert!(counter.executions().is_empty());
}

/// Moves run `id` from `from` to `to` in the store, with a fresh lease, as approving and
/// starting it do.
async fn move_under_lease(
    app: &TestApp,
    clock: &FakeClock,
    id: RunId,
    from: RunState,
    to: RunState,
) {
    let now = clock.now();
    let lease = now + chrono::Duration::from_std(LEASE).expect("lease fits");
    let moved = app.store.transition(id, from, to, now, Some(lease)).await;
    assert!(moved.expect("transition in store"), "{from} -> {to}");
}

async fn state(app: &TestApp, id: RunId) -> RunState {
    app.store
        .run(id)
        .await
        .expect("read run")
        .expect("run exists")
        .state
}

/// The run's state read straight from `schema`, proving the URL put the tables there.
async fn postgres_state(schema: &str, id: RunId) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&support::postgres_url())
        .await
        .expect("connect to Postgres");
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT state FROM {schema}.runs WHERE id = $1"
    )))
    .bind(id.0)
    .fetch_one(&mut conn)
    .await
    .expect("run row in the test schema")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_approvals_on_two_replicas_execute_once() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let url = support::postgres_schema_url(&schema);
    let counter = Counter::new();
    let a = replica(&counter, &url, None).await;
    let b = replica(&counter, &url, None).await;
    let id = race(&a, &b, &counter).await;
    assert_eq!(postgres_state(&schema, id).await, "succeeded");
    // A second request on the same replicas races the other way round, just as cleanly.
    std::fs::remove_file(&counter.log).expect("reset execution log");
    let id2 = race(&b, &a, &counter).await;
    assert_ne!(id, id2);
    drop((a, b));
    support::drop_postgres_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_approvals_on_two_replicas_execute_once() {
    let counter = Counter::new();
    let url = counter.sqlite_url();
    let a = replica(&counter, &url, None).await;
    let b = beside(&a, &counter, &url, None).await;
    race(&a, &b, &counter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_mid_run_marks_interrupted_and_never_reruns() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let counter = Counter::new();
    let id = restart_mid_run(&counter, &support::postgres_schema_url(&schema)).await;
    assert_eq!(postgres_state(&schema, id).await, "interrupted");
    support::drop_postgres_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_restart_mid_run_marks_interrupted_and_never_reruns() {
    let counter = Counter::new();
    restart_mid_run(&counter, &counter.sqlite_url()).await;
}

/// Guards the helper the Postgres tests rely on: a URL with `options=-c search_path=...`
/// really pins an app's connections (and its migrations) to the schema.
#[tokio::test]
async fn postgres_schema_url_selects_the_schema() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let counter = Counter::new();
    let app = replica(&counter, &support::postgres_schema_url(&schema), None).await;
    let id = request(&app).await;
    assert_eq!(postgres_state(&schema, id).await, "pending");
    drop(app);
    support::drop_postgres_schema(&schema).await;
}
