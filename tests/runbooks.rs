//! Runbooks end to end through the router: requests, approvals by command and by reaction,
//! deny, cancel, expiry, break-glass, dry-run, timeouts, secrets, and a changed runbook.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use opsbot::domain::{EventPayload, Outcome, RunId, RunState};
use opsbot::ports::FakeClock;
use support::{TestApp, event, person};

/// alice (sre, deployer; may break glass), bob and dave (sre-lead), carol (viewer).
fn people() -> String {
    let people = [
        person("alice", &["sre", "deployer"], &["console:alice"]),
        person("bob", &["sre-lead"], &["console:bob"]),
        person("dave", &["sre-lead"], &["console:dave"]),
        person("carol", &["viewer"], &["console:carol"]),
    ];
    format!(
        "\n[approvals]\nbreak_glass_roles = [\"sre\"]\n{}",
        people.concat()
    )
}

/// A runbook running `./act.sh {service} --to={to}` with a secret, `approvals` from sre-lead.
fn runbook(approvals: u32, extra_approval: &str, timeout: &str) -> String {
    format!(
        r#"
name = "rollback"
summary = "Roll back"
roles = ["deployer", "sre"]
[[args]]
name = "service"
kind = "choice"
choices = ["api", "web"]
[[args]]
name = "to"
kind = "string"
pattern = 'v\d+'
required = false
[approval]
approvals = {approvals}
approver_roles = ["sre-lead"]
expires_after = "10m"
{extra_approval}
[action]
kind = "exec"
argv = ["./act.sh", "{{service}}", "--to={{to}}"]
secrets = ["DEPLOY_TOKEN"]
timeout = "{timeout}"
"#
    )
}

const TOKEN: &str = "tok-9f8e7d6c5b4a";

fn env_with_token() -> opsbot::ports::EnvLookup {
    Arc::new(|name| (name == "DEPLOY_TOKEN").then(|| TOKEN.to_owned()))
}

fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The default action script: records each run in runs.log and prints its arguments and token.
fn counting_script(dir: &Path) {
    script(
        dir,
        "act.sh",
        "echo run >> runs.log\necho \"rolled back $1 $2 using $DEPLOY_TOKEN\"",
    );
}

fn runs_logged(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn app_with(approvals: u32, extra: &str, timeout: &str) -> TestApp {
    app_for(&people(), &runbook(approvals, extra, timeout), None).await
}

/// An app with `people`, the rollback command file `cmd`, the test secret in its environment,
/// an optional fake clock, and the counting `act.sh` in place.
async fn app_for(people: &str, cmd: &str, clock: Option<Arc<FakeClock>>) -> TestApp {
    let app = TestApp::builder()
        .config(people)
        .command("rollback.toml", cmd)
        .clock(clock)
        .env(env_with_token())
        .spawn()
        .await;
    counting_script(app.dir.path());
    app
}

async fn text(app: &TestApp, who: &str, line: &str) -> String {
    app.reply(who, line).await
}

async fn react(
    app: &TestApp,
    who: &str,
    emoji: &str,
    message: &str,
    added: bool,
) -> opsbot::router::Response {
    let payload = EventPayload::Reaction {
        emoji: emoji.into(),
        message_id: message.into(),
        added,
    };
    app.router.handle(&event(who, "ops", payload)).await
}

/// alice requests `/rollback api`; the approval message is bound to chat message `msg-1`.
async fn request(app: &TestApp) -> RunId {
    let r = app.say("alice", "/rollback api").await;
    assert_eq!(r.outcome, Some(Outcome::Ok));
    let id = r.pending_run.expect("an approval request");
    let reply = r.reply.unwrap().text;
    assert!(
        reply.contains(&format!(
            "Request #{id}: /rollback service=api requested by alice"
        )),
        "{reply}"
    );
    assert!(
        reply.contains("approval(s) from sre-lead, expires in 10m"),
        "{reply}"
    );
    assert!(
        reply.contains("./act.sh api\n"),
        "the exact argv is shown: {reply}"
    );
    app.router.bind_message(id, "msg-1").await.unwrap();
    id
}

async fn state(app: &TestApp, id: RunId) -> RunState {
    app.store.run(id).await.unwrap().unwrap().state
}

#[tokio::test]
async fn approval_by_reaction_runs_once_and_reports_output() {
    let app = app_with(1, "", "30s").await;
    let id = request(&app).await;
    assert_eq!(
        runs_logged(app.dir.path()),
        0,
        "nothing runs before approval"
    );

    // The requester cannot approve (she lacks the approver role and asked herself).
    let r = react(&app, "alice", "✅", "msg-1", true).await;
    assert_eq!(r.outcome, Some(Outcome::Denied));
    // A viewer cannot approve.
    let r = react(&app, "carol", ":white_check_mark:", "msg-1", true).await;
    assert_eq!(r.outcome, Some(Outcome::Denied));
    assert!(
        r.reply
            .unwrap()
            .text
            .contains("needs one of the roles sre-lead; you have viewer")
    );
    assert_eq!(state(&app, id).await, RunState::Pending);

    // bob approves with a skin-toned thumbs up: it runs, once, and the output comes back.
    let r = react(&app, "bob", "👍🏽", "msg-1", true).await;
    assert_eq!(r.outcome, Some(Outcome::Ok));
    let reply = r.reply.unwrap().text;
    assert!(reply.starts_with(&format!("Approved by bob (1/1), running /rollback service=api…\n✅ #{id} /rollback service=api succeeded (exit 0)")), "{reply}");
    assert!(
        reply.contains("rolled back api  using [REDACTED]"),
        "{reply}"
    );
    assert!(!reply.contains(TOKEN));
    assert_eq!(runs_logged(app.dir.path()), 1);
    assert_eq!(state(&app, id).await, RunState::Succeeded);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("opsbot_runs_finished_total{kind=\"succeeded\"} 1"),
        "{metrics}"
    );

    // A second approval, a replayed reaction, or /approve: nothing runs again.
    for r in [
        react(&app, "dave", "✅", "msg-1", true).await,
        react(&app, "bob", "👍🏽", "msg-1", true).await,
        app.say("bob", &format!("/approve {id}")).await,
    ] {
        assert!(r.reply.unwrap().text.contains("already ran (succeeded)"));
    }
    assert_eq!(runs_logged(app.dir.path()), 1);

    // Reactions elsewhere are ordinary chat: no reply, no audit.
    let r = react(&app, "bob", "✅", "some-other-message", true).await;
    assert_eq!((r.outcome, r.reply.is_none()), (None, true));

    // Every step is in the audit log, and the secret is nowhere in it.
    let audit = app.store.recent_audit(20).await.unwrap();
    let commands: Vec<(String, Outcome)> = audit
        .iter()
        .rev()
        .map(|r| (r.entry.command.clone(), r.entry.outcome))
        .collect();
    assert_eq!(commands[0], ("rollback".into(), Outcome::Ok));
    assert!(commands.contains(&("approve".into(), Outcome::Denied)));
    assert!(audit.iter().any(|r| {
        r.entry
            .detail
            .starts_with(&format!("approved and ran #{id}: succeeded"))
    }));
    assert!(
        audit
            .iter()
            .all(|r| !format!("{:?}", r.entry).contains(TOKEN))
    );
}

#[tokio::test]
async fn requester_cannot_approve_own_request_unless_the_file_allows_it() {
    let cmd = runbook(1, "", "30s").replace(
        "approver_roles = [\"sre-lead\"]",
        "approver_roles = [\"sre\"]",
    );
    let app = app_for(&people(), &cmd, None).await;
    let id = app.say("alice", "/rollback api").await.pending_run.unwrap();
    let r = app.say("alice", &format!("/approve {id}")).await;
    assert_eq!(r.outcome, Some(Outcome::Denied));
    assert!(
        r.reply
            .unwrap()
            .text
            .contains("you requested #1, so you cannot approve it")
    );

    let allowed = cmd.replace(
        "expires_after = \"10m\"",
        "expires_after = \"10m\"\nallow_self_approval = true",
    );
    let app = app_for(&people(), &allowed, None).await;
    let id = app.say("alice", "/rollback api").await.pending_run.unwrap();
    assert!(
        text(&app, "alice", &format!("/approve {id}"))
            .await
            .contains("succeeded")
    );
}

#[tokio::test]
async fn n_of_m_counts_each_approver_once_and_removed_reactions_retract() {
    let app = app_with(2, "", "30s").await;
    let id = request(&app).await;
    let r = react(&app, "bob", "✅", "msg-1", true).await;
    assert!(
        r.reply
            .unwrap()
            .text
            .contains("bob approved #1 (1/2); waiting for 1 more from sre-lead")
    );
    assert!(
        text(&app, "bob", &format!("/approve {id}"))
            .await
            .contains("You already approved #1 (1/2)")
    );
    // bob takes his reaction back before anything ran.
    let r = react(&app, "bob", "✅", "msg-1", false).await;
    assert!(r.reply.unwrap().text.contains("Approval of #1 withdrawn"));
    assert!(
        text(&app, "dave", &format!("/approve {id}"))
            .await
            .contains("dave approved #1 (1/2)")
    );
    assert_eq!(runs_logged(app.dir.path()), 0);
    let reply = text(&app, "bob", &format!("/approve {id}")).await;
    assert!(
        reply.starts_with("Approved by bob (2/2)") && reply.contains("succeeded"),
        "{reply}"
    );
    assert_eq!(runs_logged(app.dir.path()), 1);
}

#[tokio::test]
async fn deny_ends_the_request_by_command_or_reaction() {
    let app = app_with(1, "", "30s").await;
    let id = request(&app).await;
    let r = react(&app, "dave", "❌", "msg-1", true).await;
    assert_eq!(
        r.reply.unwrap().text,
        format!("Request #{id} denied by dave; nothing will run.")
    );
    assert!(
        text(&app, "bob", &format!("/approve {id}"))
            .await
            .contains("was denied; nothing will run")
    );
    assert_eq!(state(&app, id).await, RunState::Denied);

    let id = app.say("alice", "/rollback web").await.pending_run.unwrap();
    assert!(
        text(&app, "carol", &format!("/deny {id}"))
            .await
            .contains("needs an approver role")
    );
    assert!(
        text(&app, "bob", &format!("/deny {id}"))
            .await
            .contains("denied by bob")
    );
    assert_eq!(runs_logged(app.dir.path()), 0);
}

#[tokio::test]
async fn only_the_requester_can_cancel() {
    let app = app_with(1, "", "30s").await;
    let id = request(&app).await;
    assert!(
        text(&app, "bob", &format!("/cancel {id}"))
            .await
            .contains("only alice (who requested #1) can cancel it")
    );
    assert_eq!(
        text(&app, "alice", &format!("/cancel {id}")).await,
        format!("Request #{id} cancelled by alice; nothing will run.")
    );
    assert!(
        text(&app, "bob", &format!("/approve {id}"))
            .await
            .contains("was cancelled")
    );
    assert!(
        text(&app, "bob", "/approve 99")
            .await
            .contains("there is no request #99")
    );
    assert_eq!(runs_logged(app.dir.path()), 0);
}

/// `/cancel` of a running single action (not a run of steps) by its requester kills its
/// process group within a second, ends the run `cancelled` with that result, and audits how
/// it ended; the cancel itself is audited as the requester's command.
#[tokio::test]
async fn cancel_of_a_running_action_kills_its_processes_and_ends_it_cancelled() {
    let file = "name = \"drain\"\nsummary = \"Drain a queue\"\nroles = [\"deployer\"]\n\
        [action]\nkind = \"exec\"\nargv = [\"./drain.sh\"]\ntimeout = \"60s\"\n";
    let app = Arc::new(
        TestApp::builder()
            .config(&people())
            .command("drain.toml", file)
            .script(
                "drain.sh",
                "#!/bin/sh\nsleep 60 &\necho $! > child.pid\nsleep 60\necho drained\n",
            )
            .spawn()
            .await,
    );
    let running = support::running_with_child(&app, "alice", "/drain").await;
    assert!(
        text(&app, "bob", "/cancel 1")
            .await
            .contains("only alice (who requested #1) can cancel it")
    );
    let asked = text(&app, "alice", "/cancel 1").await;
    assert!(
        asked.starts_with("Cancelling run #1: its action is stopped (everything it started is killed) and nothing more runs"),
        "{asked}"
    );
    let reply = running.await.unwrap();
    assert!(
        reply.starts_with("⏹ #1 /drain was cancelled after")
            && reply.contains("everything it started was killed")
            && reply.contains("cancelled by alice"),
        "{reply}"
    );
    assert!(!reply.contains("drained"), "{reply}");
    let run = app.store.run(RunId(1)).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Cancelled);
    support::wait_child_gone(app.dir.path()).await;
    let audit = app.store.recent_audit(10).await.unwrap();
    let details: Vec<&str> = audit.iter().map(|r| r.entry.detail.as_str()).collect();
    let ended = (audit.iter()).find(|r| r.entry.detail.starts_with("run #1 cancelled"));
    assert_eq!(
        ended.map(|r| r.entry.outcome),
        Some(Outcome::Failed),
        "{details:?}"
    );
    let cancel =
        (audit.iter()).find(|r| r.entry.command == "cancel" && r.entry.outcome == Outcome::Ok);
    let cancel = cancel.unwrap_or_else(|| panic!("the cancel audited: {details:?}"));
    assert_eq!(cancel.entry.actor, "console:alice");
    assert!(
        cancel.entry.detail.contains("cancel of running #1"),
        "{details:?}"
    );
}

#[tokio::test]
async fn expired_requests_say_so_and_cannot_be_approved() {
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let cmd = runbook(1, "", "30s");
    let app = app_for(&people(), &cmd, Some(clock.clone())).await;
    let first = request(&app).await;
    let second = app.say("alice", "/rollback web").await.pending_run.unwrap();
    clock.advance(Duration::from_secs(9 * 60));
    assert!(
        app.router.sweep().await.unwrap().is_empty(),
        "not expired yet"
    );
    clock.advance(Duration::from_secs(2 * 60));
    // Approving after expiry is refused and says so.
    let reply = text(&app, "bob", &format!("/approve {first}")).await;
    assert!(
        reply.contains("expired at") && reply.contains("can no longer be approved"),
        "{reply}"
    );
    // The sweeper announces the other one in its channel.
    let notices = app.router.sweep().await.unwrap();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].channel_id, "ops");
    assert!(notices[0].text.contains(&format!(
        "Request #{second} (/rollback service=web) expired"
    )));
    assert_eq!(state(&app, second).await, RunState::Expired);
    assert_eq!(runs_logged(app.dir.path()), 0);
    // Queued in the outbox with the expiry itself, once, whatever happens to this process.
    let pool = support::sqlite_in(app.dir.path()).await;
    let queued: Vec<(String, String)> = sqlx::query_as("SELECT channel_id, body FROM outbox")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].0, "ops");
    assert!(
        queued[0].1.contains(&format!("Request #{second} (")),
        "{queued:?}"
    );
    app.router.sweep().await.unwrap();
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "a later sweep queues nothing more");
}

#[tokio::test]
async fn the_sweep_forgets_platform_event_ids_after_a_day() {
    use opsbot::domain::Platform;
    use opsbot::ports::Clock as _;
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let cmd = runbook(1, "", "30s");
    let app = app_for(&people(), &cmd, Some(clock.clone())).await;
    let store = &app.store;
    assert!(
        store
            .first_delivery(Platform::Telegram, "7", clock.now())
            .await
            .unwrap()
    );
    clock.advance(Duration::from_secs(23 * 3600));
    assert!(
        store
            .first_delivery(Platform::Telegram, "8", clock.now())
            .await
            .unwrap()
    );
    clock.advance(Duration::from_secs(2 * 3600));
    app.router.sweep().await.unwrap();
    assert!(
        store
            .first_delivery(Platform::Telegram, "7", clock.now())
            .await
            .unwrap(),
        "a day old: forgotten"
    );
    assert!(
        !store
            .first_delivery(Platform::Telegram, "8", clock.now())
            .await
            .unwrap(),
        "two hours old: still recognised"
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let app = app_with(1, "", "1s").await;
    script(
        app.dir.path(),
        "act.sh",
        "sleep 30 &\necho $! > child.pid\necho started\nsleep 30",
    );
    let id = request(&app).await;
    let started = Instant::now();
    let reply = text(&app, "bob", &format!("/approve {id}")).await;
    assert!(
        reply.contains(&format!(
            "⏱️ #{id} /rollback service=api timed out after 1s"
        )),
        "{reply}"
    );
    assert!(reply.contains("started"), "partial output is kept: {reply}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(state(&app, id).await, RunState::TimedOut);
    support::wait_child_gone(app.dir.path()).await;
}

#[tokio::test]
async fn failures_are_reported_with_their_exit_code() {
    let app = app_with(1, "", "30s").await;
    script(
        app.dir.path(),
        "act.sh",
        "echo 'deployment not found' >&2\nexit 3",
    );
    let id = request(&app).await;
    let reply = text(&app, "bob", &format!("/approve {id}")).await;
    assert!(
        reply.contains(&format!("❌ #{id} /rollback service=api failed (exit 3)")),
        "{reply}"
    );
    assert!(reply.contains("deployment not found"), "{reply}");
    assert_eq!(state(&app, id).await, RunState::Failed);
    // The audit log says it failed, not only that it was approved and ran.
    let audit = app.store.recent_audit(5).await.unwrap();
    let ended = audit
        .iter()
        .find(|r| {
            r.entry
                .detail
                .starts_with(&format!("run #{id} failed (exit 3) after "))
        })
        .unwrap_or_else(|| panic!("no outcome record in {audit:#?}"));
    assert_eq!(ended.entry.outcome, Outcome::Failed);
}

#[tokio::test]
async fn dry_run_shows_exactly_what_would_run_and_creates_nothing() {
    let app = app_with(1, "", "30s").await;
    let r = app.say("alice", "/rollback --dry-run web --to v7").await;
    assert_eq!(r.pending_run, None);
    let reply = r.reply.unwrap().text;
    assert!(
        reply.starts_with("Dry run, nothing was requested. /rollback service=web to=v7 would run"),
        "{reply}"
    );
    assert!(
        reply.contains("./act.sh web --to=v7\n  secrets: DEPLOY_TOKEN"),
        "{reply}"
    );
    assert!(!reply.contains(TOKEN));
    assert!(app.store.run(RunId(1)).await.unwrap().is_none());
}

#[tokio::test]
async fn break_glass_runs_at_once_loudly_for_allowed_roles_only() {
    let app = app_with(1, "", "30s").await;
    let reply = text(
        &app,
        "alice",
        "/rollback api --break-glass \"checkout is down\"",
    )
    .await;
    assert!(reply.starts_with("🚨 BREAK-GLASS: alice ran /rollback service=api without approval. Reason: checkout is down"), "{reply}");
    assert!(reply.contains("succeeded"), "{reply}");
    assert_eq!(runs_logged(app.dir.path()), 1);
    let audit = app.store.recent_audit(1).await.unwrap();
    let detail = &audit[0].entry.detail;
    assert!(
        detail.starts_with("break-glass #1: checkout is down; succeeded (exit 0) after "),
        "{detail}"
    );
    assert!(
        text(&app, "alice", "/rollback api --break-glass")
            .await
            .contains("needs a reason")
    );

    let no_glass = TestApp::builder()
        .config(&people().replace("break_glass_roles = [\"sre\"]", ""))
        .command("rollback.toml", &runbook(1, "", "30s"))
        .spawn()
        .await;
    let r = no_glass
        .say("alice", "/rollback api --break-glass now")
        .await;
    assert_eq!(r.outcome, Some(Outcome::Denied));
}

#[tokio::test]
async fn values_never_become_flags_and_optional_items_drop_out() {
    let app = app_with(1, "", "30s").await;
    let r = app.say("alice", "/rollback api --to \"-rf\"").await;
    assert_eq!(r.outcome, Some(Outcome::Invalid));
    let r = app.say("alice", "/rollback \"--help\"").await;
    assert_eq!(r.outcome, Some(Outcome::Invalid));
    let reply = text(&app, "alice", "/rollback api --dry-run").await;
    assert!(
        reply.contains("./act.sh api\n"),
        "--to={{to}} is left out when to is absent: {reply}"
    );
}

#[tokio::test]
async fn a_runbook_changed_after_the_request_does_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("opsbot.db").display());
    let before = runbook(1, "", "30s");
    let on_db = |runbook: &str| {
        TestApp::builder()
            .config(&people())
            .command("rollback.toml", runbook)
            .env(env_with_token())
            .database(&db)
    };
    let first = on_db(&before).spawn().await;
    let id = request(&first).await;
    // opsbot restarts with an edited runbook (now with --force) on the same database.
    let after = before.replace("\"--to={to}\"", "\"--to={to}\", \"--force\"");
    // The same store: one process at a time may open a SQLite file.
    let second = on_db(&after).store(first.store.clone()).spawn().await;
    counting_script(second.dir.path());
    let reply = text(&second, "bob", &format!("/approve {id}")).await;
    assert!(
        reply.contains("changed since request #1 was made, so it will not run"),
        "{reply}"
    );
    assert_eq!(state(&second, id).await, RunState::Cancelled);
    assert_eq!(runs_logged(second.dir.path()), 0);
}

#[tokio::test]
async fn runbooks_without_approval_run_immediately() {
    let cmd = r#"
name = "flush"
summary = "Flush a cache"
roles = ["sre"]
[[args]]
name = "namespace"
kind = "choice"
choices = ["sessions"]
[action]
kind = "exec"
argv = ["./flush.sh", "{namespace}"]
timeout = "10s"
"#;
    let app = TestApp::builder()
        .config(&people())
        .command("flush.toml", cmd)
        .spawn()
        .await;
    script(app.dir.path(), "flush.sh", "echo flushed $1");
    let reply = text(&app, "alice", "/flush sessions").await;
    assert!(
        reply.starts_with("✅ #1 /flush namespace=sessions succeeded (exit 0)"),
        "{reply}"
    );
    assert!(reply.contains("flushed sessions"), "{reply}");
    assert_eq!(
        text(&app, "carol", "/flush sessions").await,
        "/flush needs one of the roles sre; you have viewer."
    );
}

#[tokio::test]
async fn http_runbooks_send_secrets_but_never_show_them() {
    use axum::{Router, extract::Path as UrlPath, http::HeaderMap, routing::put};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, String)>();
    let server = Router::new().route(
        "/maintenance/{mode}",
        put(
            move |UrlPath(mode): UrlPath<String>, headers: HeaderMap, body: String| {
                let tx = tx.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    tx.send((mode, auth.clone(), body)).unwrap();
                    format!("maintenance set; auth was {auth}")
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server).await });
    let cmd = format!(
        r#"
name = "maintenance"
summary = "Maintenance mode"
roles = ["sre"]
[[args]]
name = "mode"
kind = "choice"
choices = ["on", "off"]
[action]
kind = "http"
method = "PUT"
url = "http://{addr}/maintenance/{{mode}}"
headers = {{ Authorization = "Bearer {{secret:DEPLOY_TOKEN}}" }}
body = '{{"mode": "{{mode}}"}}'
secrets = ["DEPLOY_TOKEN"]
expect_status = 200
timeout = "5s"
"#
    );
    let app = TestApp::builder()
        .config(&people())
        .command("maintenance.toml", &cmd)
        .env(env_with_token())
        .spawn()
        .await;
    let dry = text(&app, "alice", "/maintenance on --dry-run").await;
    assert!(dry.contains(&format!("PUT http://{addr}/maintenance/on\n  Authorization: Bearer {{secret:DEPLOY_TOKEN}}\n  body: {{\"mode\": \"on\"}}")), "{dry}");
    let reply = text(&app, "alice", "/maintenance on").await;
    assert!(
        reply.starts_with("✅ #1 /maintenance mode=on succeeded (HTTP 200)"),
        "{reply}"
    );
    assert!(
        reply.contains("auth was Bearer [REDACTED]") && !reply.contains(TOKEN),
        "{reply}"
    );
    let (mode, auth, body) = rx.recv().await.unwrap();
    assert_eq!(
        (mode.as_str(), auth.as_str(), body.as_str()),
        (
            "on",
            format!("Bearer {TOKEN}").as_str(),
            "{\"mode\": \"on\"}"
        )
    );
}

#[tokio::test]
async fn one_person_counts_once_whichever_identity_they_use() {
    let people = people().replace(
        "identities = [\"console:bob\"]",
        "identities = [\"console:bob\", \"console:bob-phone\"]",
    );
    let cmd = runbook(2, "", "30s");
    let app = app_for(&people, &cmd, None).await;
    let id = request(&app).await;
    assert!(
        text(&app, "bob", &format!("/approve {id}"))
            .await
            .contains("bob approved #1 (1/2)")
    );
    let second = text(&app, "bob-phone", &format!("/approve {id}")).await;
    assert!(second.contains("You already approved #1 (1/2)"), "{second}");
    assert_eq!(runs_logged(app.dir.path()), 0);
}

#[tokio::test]
async fn requests_are_acted_on_only_in_their_own_channel() {
    let app = app_with(1, "", "30s").await;
    let id = request(&app).await;
    for cmd in [format!("/approve {id}"), format!("/deny {id}")] {
        let r = app.say_in("bob", "random", &cmd).await;
        assert_eq!(r.outcome, Some(Outcome::Denied), "{cmd}");
        assert!(
            r.reply
                .unwrap()
                .text
                .contains("was made in #ops; act on it there")
        );
    }
    let r = app
        .say_in("alice", "random", &format!("/cancel {id}"))
        .await;
    assert_eq!(r.outcome, Some(Outcome::Denied));
    assert_eq!(state(&app, id).await, RunState::Pending);
    assert_eq!(runs_logged(app.dir.path()), 0);
}

#[tokio::test]
async fn a_runbook_that_leaves_a_background_process_still_finishes_when_it_exits() {
    let app = app_with(1, "", "20s").await;
    script(app.dir.path(), "act.sh", "sleep 30 &\necho started\nexit 0");
    let id = request(&app).await;
    let started = Instant::now();
    let reply = text(&app, "bob", &format!("/approve {id}")).await;
    assert!(
        reply.contains("succeeded (exit 0)") && reply.contains("started"),
        "{reply}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "did not wait for the leftover child"
    );
}

#[tokio::test]
async fn argument_values_cannot_carry_newlines() {
    let cmd = runbook(1, "", "30s").replace("pattern = 'v\\d+'\n", "");
    let app = app_for(&people(), &cmd, None).await;
    let r = app
        .say("alice", "/rollback api --to \"v1\nfake line\"")
        .await;
    assert_eq!(r.outcome, Some(Outcome::Invalid));
    assert!(
        r.reply.unwrap().text.contains(
            "to must not contain control or invisible formatting characters (found U+000A)"
        )
    );
}

#[tokio::test]
async fn refused_reactions_are_rate_limited_so_toggling_cannot_flood_the_audit_log() {
    let people = format!("[limits]\nper_user = \"3/min\"\n{}", people());
    let app = app_for(&people, &runbook(1, "", "10s"), None).await;
    request(&app).await;
    let before = app.store.recent_audit(100).await.unwrap().len();
    let mut answered = 0;
    for i in 0..20 {
        let r = react(&app, "mallory", "✅", "msg-1", i % 2 == 0).await;
        answered += usize::from(r.reply.is_some());
    }
    assert_eq!(answered, 3, "refusals past the limit get no answer");
    let audited = app.store.recent_audit(100).await.unwrap().len() - before;
    assert_eq!(audited, 3, "only the refusals within the limit are audited");
    // carol's own commands are not used up by someone else's reactions, nor by hers.
    for _ in 0..5 {
        react(&app, "carol", "✅", "msg-1", true).await;
    }
    assert_eq!(app.say("carol", "/whoami").await.outcome, Some(Outcome::Ok));
}

/// A fake HTTP service that records the path (and query) of every request it gets.
async fn recording_server() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let server = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let tx = tx.clone();
        async move {
            tx.send(uri.to_string()).unwrap();
            "done"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server).await });
    (addr, rx)
}

#[tokio::test]
async fn an_http_url_argument_cannot_climb_out_of_its_path_and_the_url_shown_is_the_one_requested()
{
    let (addr, mut requests) = recording_server().await;
    let cmd = format!(
        r#"
name = "purge"
summary = "Purge an item"
roles = ["sre"]
[[args]]
name = "name"
kind = "string"
[action]
kind = "http"
url = "http://{addr}/items/{{name}}/purge"
timeout = "5s"
"#
    );
    let app = TestApp::builder()
        .config(&people())
        .command("purge.toml", &cmd)
        .spawn()
        .await;
    for value in ["..", "."] {
        let r = app.say("alice", &format!("/purge {value}")).await;
        assert_eq!(r.outcome, Some(Outcome::Invalid), "{value}");
        let reply = r.reply.unwrap().text;
        assert!(reply.contains("would name another path"), "{reply}");
    }
    let dry = text(&app, "alice", "/purge \"a b\" --dry-run").await;
    let reply = text(&app, "alice", "/purge \"a b\"").await;
    assert!(reply.contains("succeeded (HTTP 200)"), "{reply}");
    let requested = requests.recv().await.unwrap();
    assert_eq!(requested, "/items/a%20b/purge");
    assert!(
        dry.contains(&format!("\nPOST http://{addr}{requested}\n")),
        "{dry}"
    );
    assert!(
        requests.try_recv().is_err(),
        "only the one request was sent"
    );
}

#[tokio::test]
async fn pattern_digits_are_ascii_digits() {
    let cmd = runbook(1, "", "30s").replace(r"'v\d+'", r"'v\d+\.\d+\.\d+'");
    let app = app_for(&people(), &cmd, None).await;
    let r = app.say("alice", "/rollback api --to v١.٢.٣").await;
    assert_eq!(r.outcome, Some(Outcome::Invalid));
    let reply = r.reply.unwrap().text;
    assert!(
        reply.contains("does not have the expected format"),
        "{reply}"
    );
    let r = app.say("alice", "/rollback api --to v1.2.3").await;
    assert_eq!(r.outcome, Some(Outcome::Ok));
}

#[tokio::test]
async fn encoded_and_case_changed_secrets_are_redacted_from_output() {
    let app = app_with(1, "", "30s").await;
    script(
        app.dir.path(),
        "act.sh",
        "printf '%s\\n' \"$DEPLOY_TOKEN\" | tr a-z A-Z\n\
         printf '%s' \"$DEPLOY_TOKEN\" | base64\n\
         printf 'user:%s' \"$DEPLOY_TOKEN\" | base64\n\
         printf '%s' \"$DEPLOY_TOKEN\" | od -An -tx1 | tr -d ' \\n'; echo\n\
         printf '%s\\n%s\\n' tok-9f8e 7d6c5b4a",
    );
    let id = request(&app).await;
    let reply = text(&app, "bob", &format!("/approve {id}")).await;
    assert!(reply.contains("succeeded (exit 0)"), "{reply}");
    assert_eq!(reply.matches("[REDACTED]").count(), 5, "{reply}");
    for leaked in [
        "TOK-9F8E7D6C5B4A",
        "dG9rLTlmOGU3ZDZjNWI0YQ",
        "746f6b2d",
        "7d6c5b4a",
    ] {
        assert!(!reply.contains(leaked), "{leaked} in {reply}");
    }
}

/// A chat app (requests from Slack's `COPS`) whose bot posts land in `chat`, with alice
/// (deployer) and bob (sre-lead); `act.sh` waits for a `go` file when `held`.
async fn chat_app(chat: Arc<support::RecordingOutbound>, held: bool) -> TestApp {
    let act = if held {
        "#!/bin/sh\nwhile [ ! -f go ]; do sleep 0.01; done\necho rolled back $1\n"
    } else {
        "#!/bin/sh\necho rolled back $1\n"
    };
    TestApp::builder()
        .config(&support::deployer_and_lead("slack:UALICE", "slack:UBOB"))
        .command("rollback.toml", support::ROLLBACK_NEEDING_ONE_LEAD)
        .script("act.sh", act)
        .outbound(chat)
        .spawn()
        .await
}

/// `who` (a Slack user) says `text` in `COPS`; the reply's text.
async fn on_slack(app: &TestApp, who: &str, text: &str) -> String {
    let ev = opsbot::domain::InboundEvent::new(
        opsbot::domain::UserRef::new(opsbot::domain::Platform::Slack, who),
        opsbot::domain::ChannelRef::id_only("COPS"),
        EventPayload::Command(text.to_owned()),
    );
    let response = app.router.handle(&ev).await;
    response.reply.map(|r| r.text).unwrap_or_default()
}

fn posts_containing(chat: &support::RecordingOutbound, needle: &str) -> Vec<String> {
    (chat.messages().into_iter())
        .filter_map(|m| match m {
            support::Outbound::Post { text, .. } if text.contains(needle) => Some(text),
            _ => None,
        })
        .collect()
}

/// On a chat platform the approver is told the run started, and the result is posted once,
/// in the channel, by the outbox: not in the approver's answer.
#[tokio::test]
async fn an_approved_runs_result_goes_to_the_channel_through_the_outbox() {
    let chat = Arc::new(support::RecordingOutbound::default());
    let app = chat_app(chat.clone(), false).await;
    let asked = on_slack(&app, "UALICE", "/rollback api").await;
    assert!(
        asked.starts_with("Request #1: /rollback service=api"),
        "{asked}"
    );
    app.router.bind_message(RunId(1), "1700.1").await.unwrap();

    let ack = on_slack(&app, "UBOB", "/approve 1").await;
    assert_eq!(
        ack,
        "Approved by bob (1/1), running /rollback service=api; the result will be posted in reply to request #1."
    );
    chat.wait_until("the result", |_| {
        !posts_containing(&chat, "succeeded").is_empty()
    })
    .await;
    app.wait_idle().await;
    let results = posts_containing(&chat, "rolled back api");
    assert_eq!(results.len(), 1, "posted once: {:?}", chat.messages());
    assert!(
        results[0].starts_with("✅ #1 /rollback service=api succeeded (exit 0)"),
        "{}",
        results[0]
    );
    assert_eq!(state(&app, RunId(1)).await, RunState::Succeeded);
    let audit = app.store.recent_audit(1).await.unwrap();
    assert!(
        audit[0]
            .entry
            .detail
            .starts_with("run #1 succeeded (exit 0)"),
        "how it ended is the newest record: {:?}",
        audit[0].entry
    );
}

/// A run whose lease lapsed while it ran (marked interrupted) cannot record its result, so
/// nothing was queued with it: the result is still posted, saying it was not recorded.
#[tokio::test]
async fn a_result_that_could_not_be_recorded_is_still_posted() {
    let chat = Arc::new(support::RecordingOutbound::default());
    let app = chat_app(chat.clone(), true).await;
    on_slack(&app, "UALICE", "/rollback api").await;
    let ack = on_slack(&app, "UBOB", "/approve 1").await;
    assert!(ack.starts_with("Approved by bob (1/1), running"), "{ack}");
    assert_eq!(state(&app, RunId(1)).await, RunState::Running);
    let now = Utc::now();
    let taken = app.store.transition(
        RunId(1),
        RunState::Running,
        RunState::Interrupted,
        now,
        None,
    );
    assert!(taken.await.unwrap());
    std::fs::write(app.dir.path().join("go"), "").unwrap();

    let posted = chat
        .wait_until("the unrecorded result", |_| {
            !posts_containing(&chat, "could not be recorded").is_empty()
        })
        .await;
    let result = posts_containing(&chat, "rolled back api");
    assert_eq!(result.len(), 1, "{posted:?}");
    assert!(result[0].contains("succeeded"), "{}", result[0]);
    assert_eq!(state(&app, RunId(1)).await, RunState::Interrupted);
}
