//! Runbooks of several steps end to end: steps run in order against a local service whose
//! health endpoint comes up only after the restart step, the progress message is edited as
//! they move, a failed verification runs the rollback steps, a step's timeout kills its
//! process group, and the catalogue refuses broken step files naming file and line.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opsbot::catalog::Catalog;
use opsbot::domain::{EventPayload, Platform, RunId, RunState, StepState};
use opsbot::ports::FakeClock;
use opsbot::router::runbook::LEASE;
use support::{Outbound, RecordingOutbound, TestApp, person};

/// A service whose `/health/api` answers 200 once the file `up` exists in the folder set in
/// the returned slot (the app's, known only once it is built), 503 before.
async fn service() -> (std::net::SocketAddr, Arc<Mutex<Option<PathBuf>>>) {
    let dir: Arc<Mutex<Option<PathBuf>>> = Arc::default();
    let seen = dir.clone();
    let health = move || {
        let up = (seen.lock().unwrap().as_ref()).is_some_and(|d| d.join("up").exists());
        async move {
            if up {
                (axum::http::StatusCode::OK, "ok")
            } else {
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting")
            }
        }
    };
    let server = axum::Router::new().route("/health/api", axum::routing::get(health));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server).await });
    (addr, dir)
}

/// `/restart api`: restart (exec), wait for health, smoke check (http), announce (message);
/// on failure, roll back. `approval` is the `[approval]` table, if any.
fn restart_file(addr: std::net::SocketAddr, approval: &str, restart_timeout: &str) -> String {
    format!(
        r#"
name = "restart"
summary = "Restart a service"
roles = ["deployer"]
[[args]]
name = "service"
kind = "choice"
choices = ["api"]
{approval}
[[steps]]
name = "restart"
kind = "exec"
argv = ["./restart.sh", "{{service}}"]
timeout = "{restart_timeout}"

[[steps]]
name = "wait-healthy"
kind = "wait_for"
url = "http://{addr}/health/{{service}}"
interval = "50ms"
deadline = "1s"

[[steps]]
name = "smoke"
kind = "http"
method = "GET"
url = "http://{addr}/health/{{service}}"
expect_status = 200
timeout = "5s"

[[steps]]
name = "announce"
kind = "message"
text = "{{service}} restarted"

[[on_failure]]
name = "rollback"
kind = "exec"
argv = ["./rollback.sh"]
timeout = "5s"
"#
    )
}

const ROLLBACK: &str = "#!/bin/sh\necho rolled back >> rollback.log\necho undone\n";

async fn console_app(restart: &str, restart_timeout: &str) -> TestApp {
    console_app_at(restart, restart_timeout, None).await
}

async fn console_app_at(
    restart: &str,
    restart_timeout: &str,
    clock: Option<Arc<FakeClock>>,
) -> TestApp {
    console_app_on(restart, restart_timeout, clock, None).await
}

/// The console app, on the Postgres database `database` when given.
async fn console_app_on(
    restart: &str,
    restart_timeout: &str,
    clock: Option<Arc<FakeClock>>,
    database: Option<&str>,
) -> TestApp {
    let (addr, dir) = service().await;
    let mut builder = TestApp::builder();
    if let Some(url) = database {
        builder = builder.database(url);
    }
    let app = builder
        .clock(clock)
        .config(&person("alice", &["deployer"], &["console:alice"]))
        .command("restart.toml", &restart_file(addr, "", restart_timeout))
        .script("restart.sh", restart)
        .script("rollback.sh", ROLLBACK)
        .spawn()
        .await;
    *dir.lock().unwrap() = Some(app.dir.path().to_owned());
    app
}

/// Where each step's line is in `text`, in the order given; panics naming a missing one.
fn in_order(text: &str, lines: &[&str]) {
    let mut from = 0;
    for line in lines {
        let at = text[from..]
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} after byte {from} in:\n{text}"));
        from += at + line.len();
    }
}

#[tokio::test]
async fn steps_run_in_order_and_the_result_lists_each() {
    let app = console_app("#!/bin/sh\necho restarting $1\ntouch up\n", "10s").await;
    let dry = app.reply("alice", "/restart api --dry-run").await;
    in_order(
        &dry,
        &[
            "1. restart: ./restart.sh api",
            "2. wait-healthy: wait for GET http://",
            "3. smoke: GET http://",
            "4. announce: post \"api restarted\"",
            "on failure:",
            "1. rollback: ./rollback.sh",
        ],
    );
    assert!(
        !app.dir.path().join("up").exists(),
        "a dry run runs nothing"
    );

    let reply = app.reply("alice", "/restart api").await;
    assert!(
        reply.starts_with("✅ #1 /restart service=api succeeded in"),
        "{reply}"
    );
    in_order(
        &reply,
        &[
            "✅ restart (",
            "✅ wait-healthy (",
            "✅ smoke (",
            "✅ announce (",
            "▫️ rollback",
        ],
    );
    let steps = app.store.run_steps(RunId(1)).await.unwrap();
    let names: Vec<(&str, StepState)> = steps.iter().map(|s| (s.name.as_str(), s.state)).collect();
    assert_eq!(
        names,
        [
            ("restart", StepState::Succeeded),
            ("wait-healthy", StepState::Succeeded),
            ("smoke", StepState::Succeeded),
            ("announce", StepState::Succeeded),
        ]
    );
    assert!(
        steps[0]
            .result
            .as_ref()
            .unwrap()
            .output
            .contains("restarting api")
    );
    assert!(!app.dir.path().join("rollback.log").exists());
    let run = app.store.run(RunId(1)).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.current_step.as_deref(), Some("announce"));
    // Each step's start is its own audit record, before how the run ended.
    let audit = app.store.recent_audit(10).await.unwrap();
    let details: Vec<&str> = audit.iter().map(|r| r.entry.detail.as_str()).collect();
    for (i, name) in ["restart", "wait-healthy", "smoke", "announce"]
        .iter()
        .enumerate()
    {
        let line = format!("run #1 step {} ({name}) started", i + 1);
        assert!(details.contains(&line.as_str()), "{line}: {details:?}");
    }
}

#[tokio::test]
async fn a_failed_verification_rolls_back_and_reports_both() {
    // The restart "works" but the service never comes up.
    let app = console_app("#!/bin/sh\necho restarting\n", "10s").await;
    failed_verification_rolls_back(&app).await;
}

#[tokio::test]
async fn postgres_a_failed_verification_rolls_back_and_reports_both() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let url = support::postgres_schema_url(&schema);
    let app = console_app_on("#!/bin/sh\necho restarting\n", "10s", None, Some(&url)).await;
    failed_verification_rolls_back(&app).await;
}

async fn failed_verification_rolls_back(app: &TestApp) {
    let reply = app.reply("alice", "/restart api").await;
    assert!(
        reply.starts_with("❌ #1 /restart service=api failed at step wait-healthy after"),
        "{reply}"
    );
    assert!(reply.contains("; rolled back:"), "{reply}");
    in_order(
        &reply,
        &[
            "✅ restart (",
            "❌ wait-healthy (",
            "not up within 1s; last: HTTP 503",
            "⏭️ smoke",
            "⏭️ announce",
            "on failure:",
            "↩ rollback (",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(app.dir.path().join("rollback.log")).unwrap(),
        "rolled back\n"
    );
    let steps = app.store.run_steps(RunId(1)).await.unwrap();
    let names: Vec<(&str, bool, StepState)> = steps
        .iter()
        .map(|s| (s.name.as_str(), s.rollback, s.state))
        .collect();
    assert_eq!(
        names,
        [
            ("restart", false, StepState::Succeeded),
            ("wait-healthy", false, StepState::Failed),
            ("rollback", true, StepState::Succeeded),
        ]
    );
    assert_eq!(
        app.store.run(RunId(1)).await.unwrap().unwrap().state,
        RunState::Failed
    );
}

#[tokio::test]
async fn a_step_timeout_kills_its_process_group_and_rolls_back() {
    let app = console_app(
        "#!/bin/sh\nsleep 30 &\necho $! > child.pid\necho started\nsleep 30\n",
        "1s",
    )
    .await;
    let started = Instant::now();
    let reply = app.reply("alice", "/restart api").await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        reply.starts_with("❌ #1 /restart service=api failed at step restart"),
        "{reply}"
    );
    in_order(
        &reply,
        &[
            "❌ restart (",
            "timed out; everything it started was killed",
            "↩ rollback (",
        ],
    );
    assert_eq!(
        app.store.run(RunId(1)).await.unwrap().unwrap().state,
        RunState::TimedOut
    );
    support::wait_child_gone(app.dir.path()).await;
}

/// On Slack, an approved run's request message becomes its progress, edited through the
/// outbox as the steps move; the message step is posted, and the result lists each step.
#[tokio::test]
async fn progress_edits_reach_the_chat_and_the_result_lists_each_step() {
    let (addr, dir) = service().await;
    let chat = Arc::new(RecordingOutbound::default());
    let approval =
        "[approval]\napprovals = 1\napprover_roles = [\"sre-lead\"]\nexpires_after = \"10m\"\n";
    let app = TestApp::builder()
        .config(&support::deployer_and_lead("slack:UALICE", "slack:UBOB"))
        .command("restart.toml", &restart_file(addr, approval, "10s"))
        .script("restart.sh", "#!/bin/sh\ntouch up\n")
        .script("rollback.sh", ROLLBACK)
        .outbound(chat.clone())
        .spawn()
        .await;
    *dir.lock().unwrap() = Some(app.dir.path().to_owned());
    let say = async |who: &str, text: &str| {
        let ev = opsbot::domain::InboundEvent::new(
            opsbot::domain::UserRef::new(Platform::Slack, who),
            opsbot::domain::ChannelRef::id_only("COPS"),
            EventPayload::Command(text.to_owned()),
        );
        app.router
            .handle(&ev)
            .await
            .reply
            .map(|r| r.text)
            .unwrap_or_default()
    };
    let asked = say("UALICE", "/restart api").await;
    assert!(
        asked.contains("4. announce: post \"api restarted\""),
        "{asked}"
    );
    app.router.bind_message(RunId(1), "1700.1").await.unwrap();
    let ack = say("UBOB", "/approve 1").await;
    assert!(ack.starts_with("Approved by bob (1/1), running"), "{ack}");

    let result =
        |m: &Outbound| matches!(m, Outbound::Post { text, .. } if text.contains("succeeded in"));
    chat.wait_until("the result", |log| log.iter().any(result))
        .await;
    app.wait_idle().await;
    let log = chat.messages();
    let edits: Vec<&str> = (log.iter())
        .filter_map(|m| match m {
            Outbound::Edit { id, text, .. } if id == "1700.1" => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert!(!edits.is_empty(), "{log:?}");
    let last = edits.last().unwrap();
    assert!(
        last.starts_with("Request #1: /restart service=api requested by alice"),
        "{last}"
    );
    in_order(
        last,
        &[
            "✅ restart (",
            "✅ wait-healthy (",
            "✅ smoke (",
            "✅ announce (",
            "▫️ rollback",
        ],
    );
    let posts: Vec<&str> = (log.iter())
        .filter_map(|m| match m {
            Outbound::Post { text, .. } => Some(text.as_str()),
            Outbound::Edit { .. } => None,
        })
        .collect();
    assert!(
        posts.contains(&"api restarted"),
        "the message step is posted: {posts:?}"
    );
    let result = posts.iter().find(|p| p.contains("succeeded in")).unwrap();
    in_order(
        result,
        &[
            "✅ #1 /restart service=api succeeded in",
            "✅ restart",
            "✅ announce",
        ],
    );
    assert_eq!(
        app.store.run(RunId(1)).await.unwrap().unwrap().state,
        RunState::Succeeded
    );
}

/// A run whose process died during a step is marked interrupted by the sweep, naming the step.
#[tokio::test]
async fn an_interrupted_run_is_announced_at_its_step() {
    let clock = Arc::new(FakeClock::new(chrono::Utc::now()));
    let held = "#!/bin/sh\nwhile [ ! -f go ]; do sleep 0.01; done\n";
    let app = Arc::new(console_app_at(held, "30s", Some(clock.clone())).await);
    let running = tokio::spawn({
        let app = app.clone();
        async move { app.reply("alice", "/restart api").await }
    });
    support::eventually("the restart step to start", support::WAIT, async || {
        let steps = app.store.run_steps(RunId(1)).await.unwrap();
        steps.first().is_some_and(|s| s.state == StepState::Running)
    })
    .await;
    clock.advance(LEASE + Duration::from_secs(1));
    let notices = app.router.sweep().await.unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0]
            .text
            .contains("Request #1 (/restart service=api) was interrupted at step 1 (restart)"),
        "{}",
        notices[0].text
    );
    std::fs::write(app.dir.path().join("go"), "").unwrap();
    let reply = running.await.unwrap();
    assert!(
        reply.contains("stopped"),
        "no step starts after the interruption: {reply}"
    );
    let steps = app.store.run_steps(RunId(1)).await.unwrap();
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(
        app.store.run(RunId(1)).await.unwrap().unwrap().state,
        RunState::Interrupted
    );
}

fn catalog_errors(files: &[(&str, &str)]) -> String {
    let sources: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(f, s)| (PathBuf::from(f), s.to_string()))
        .collect();
    match Catalog::from_sources(&sources, &[]) {
        Ok(c) => match c.check_health_refs(&["api"]) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

const HEAD: &str = "name = \"x\"\nsummary = \"x\"\nroles = [\"sre\"]\n";

#[test]
fn step_files_are_checked_naming_file_and_line() {
    let step = |name: &str| {
        format!(
            "\n[[steps]]\nname = \"{name}\"\nkind = \"exec\"\nargv = [\"true\"]\ntimeout = \"5s\"\n"
        )
    };
    let twice = format!("{HEAD}{}{}", step("a"), step("a"));
    assert_eq!(
        catalog_errors(&[("twice.toml", &twice)]),
        "twice.toml:11: step \"a\": step names must be unique; this one is used twice"
    );
    let both = format!(
        "{HEAD}[action]\nkind = \"exec\"\nargv = [\"true\"]\ntimeout = \"5s\"\n{}",
        step("a")
    );
    assert_eq!(
        catalog_errors(&[("both.toml", &both)]),
        "both.toml:4: a command has either [action] or [[steps]], not both"
    );
    let empty = format!("{HEAD}steps = []\n");
    assert!(
        catalog_errors(&[("empty.toml", &empty)])
            .starts_with("empty.toml:4: steps must not be empty")
    );
    let neither = HEAD.to_owned();
    assert_eq!(
        catalog_errors(&[("neither.toml", &neither)]),
        "neither.toml:1: a command needs an [action] or [[steps]]"
    );
    let unknown = format!(
        "{HEAD}{}\n[[steps]]\nname = \"wait\"\nkind = \"wait_for\"\ncheck = \"nope\"\ndeadline = \"1m\"\n",
        step("a")
    );
    assert_eq!(
        catalog_errors(&[("unknown.toml", &unknown)]),
        "unknown.toml:11: step \"wait\": health check \"nope\" is not in the config's [[checks]]"
    );
    let known = unknown.replace("\"nope\"", "\"api\"");
    assert_eq!(catalog_errors(&[("known.toml", &known)]), "");
    let misplaced = format!(
        "{HEAD}\n[[steps]]\nname = \"m\"\nkind = \"message\"\ntext = \"hi\"\nargv = [\"x\"]\n"
    );
    assert_eq!(
        catalog_errors(&[("misplaced.toml", &misplaced)]),
        "misplaced.toml:5: step \"m\": argv does not apply to this kind of step"
    );
}

#[test]
fn an_action_refuses_the_keys_only_steps_have() {
    let action = |extra: &str| {
        format!("{HEAD}[action]\nkind = \"exec\"\nargv = [\"true\"]\ntimeout = \"5s\"\n{extra}")
    };
    assert_eq!(
        catalog_errors(&[("named.toml", &action("name = \"a\"\n"))]),
        "named.toml:4: action: name applies only to [[steps]]"
    );
    assert_eq!(
        catalog_errors(&[("text.toml", &action("text = \"hi\"\n"))]),
        "text.toml:4: action: text applies only to [[steps]]"
    );
    let wait = format!(
        "{HEAD}[action]\nkind = \"wait_for\"\ncheck = \"api\"\ndeadline = \"1m\"\ntimeout = \"5s\"\n"
    );
    let errors = catalog_errors(&[("wait.toml", &wait)]);
    assert!(
        errors.contains("wait.toml:4: action: kind wait_for is for [[steps]] only"),
        "{errors}"
    );
    let untimed = format!("{HEAD}[action]\nkind = \"exec\"\nargv = [\"true\"]\n");
    assert_eq!(
        catalog_errors(&[("untimed.toml", &untimed)]),
        "untimed.toml:4: action: timeout is required"
    );
}
