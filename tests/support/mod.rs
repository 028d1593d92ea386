//! Shared test harness: the app under test ([`TestApp`]), fakes, fixtures (people, runbooks,
//! recorded deliveries), the external services tests need, and waiting with a deadline.
#![allow(dead_code)]

use std::path::Path;

mod app;
mod backends;
mod logs;
mod outbound;
mod proxy;
mod serve;
mod wait;
// Each test binary uses a different part of the harness.
#[allow(unused_imports)]
pub use app::{COUNTING_ACT, TestApp, TestAppBuilder, event};
#[allow(unused_imports)]
pub(crate) use backends::{Backend, on_both_backends};
#[allow(unused_imports)] // only the platform tests capture logs
pub use logs::Captured;
#[allow(unused_imports)]
pub use outbound::{Outbound, RecordingOutbound};
#[allow(unused_imports)]
pub use proxy::Proxy;
#[allow(unused_imports)]
pub use serve::{Serve, replica_config, wait_for_line};
#[allow(unused_imports)]
pub use wait::{WAIT, eventually, satisfies};

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

/// A `[[people]]` entry: `name` with `roles`, known by `identities` (`platform:id`).
pub fn person(name: &str, roles: &[&str], identities: &[&str]) -> String {
    let list = |items: &[&str]| {
        let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
        quoted.join(", ")
    };
    format!(
        "\n[[people]]\nname = \"{name}\"\nroles = [{}]\nidentities = [{}]\n",
        list(roles),
        list(identities)
    )
}

/// alice (deployer, may request /rollback) and bob (sre-lead, may approve and ack alerts),
/// known on a chat platform as `alice` and `bob` (`platform:id`), and the built-ins they use.
pub fn deployer_and_lead(alice: &str, bob: &str) -> String {
    format!(
        "\n[builtins]\nstatus_roles = [\"deployer\", \"sre-lead\"]\nresponder_roles = [\"sre-lead\"]\n{}{}",
        person("alice", &["deployer"], &[alice]),
        person("bob", &["sre-lead"], &[bob])
    )
}

/// A connection to the SQLite file of an app (or `opsbot` run) in `dir`, from outside it:
/// to break the store underneath the app, or change what it wrote.
pub async fn sqlite_in(dir: &Path) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", dir.join("opsbot.db").display());
    sqlx::SqlitePool::connect(&url)
        .await
        .expect("open the app's SQLite file")
}

/// Runs one statement on `pool`.
pub async fn exec(pool: &sqlx::SqlitePool, sql: &'static str) {
    sqlx::query(sql)
        .execute(pool)
        .await
        .expect("run the statement");
}

/// The `[approval]` table most runbooks here share: one approval from an sre-lead, within
/// 10 minutes. A macro so that runbook constants can be `concat!`ed around it.
macro_rules! one_lead_approval {
    () => {
        "[approval]\napprovals = 1\napprover_roles = [\"sre-lead\"]\nexpires_after = \"10m\"\n"
    };
}
#[allow(unused_imports)]
pub(crate) use one_lead_approval;

/// An optional `to` argument: a release like v1.2.3.
macro_rules! version_arg {
    () => {
        "[[args]]\nname = \"to\"\nkind = \"string\"\npattern = 'v\\d+\\.\\d+\\.\\d+'\nrequired = false\n"
    };
}
#[allow(unused_imports)]
pub(crate) use version_arg;

pub const ROLLBACK: &str = concat!(
    r#"
name = "rollback"
summary = "Roll a service back"
roles = ["deployer", "sre"]
channels = ["ops", "incident-*"]
[[args]]
name = "service"
kind = "choice"
choices = ["api", "worker", "web"]
"#,
    version_arg!(),
    one_lead_approval!(),
    r#"[action]
kind = "exec"
argv = ["./rollback.sh", "{service}", "{to}"]
timeout = "60s"
"#
);

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

/// `host:port` of the test Postgres, from its URL: what a [`Proxy`] forwards to.
pub fn postgres_addr() -> String {
    let url = url::Url::parse(&postgres_url()).expect("a Postgres URL");
    let host = url.host_str().unwrap_or("127.0.0.1");
    format!("{host}:{}", url.port().unwrap_or(5432))
}

/// [`postgres_schema_url`] reaching the server through `via` (a [`Proxy`]).
pub fn postgres_schema_url_via(schema: &str, via: std::net::SocketAddr) -> String {
    let mut url = url::Url::parse(&postgres_schema_url(schema)).expect("a Postgres URL");
    url.set_host(Some(&via.ip().to_string())).expect("a host");
    url.set_port(Some(via.port())).expect("a port");
    url.to_string()
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

/// A recorded Alertmanager delivery (copied from the shared fixtures into `tests/fixtures`).
pub fn am_fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/alertmanager")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// `/rollback SERVICE` (deployers; service `api`) needing one approval from an sre-lead,
/// running `./act.sh SERVICE` in the app's folder.
pub const ROLLBACK_NEEDING_ONE_LEAD: &str = concat!(
    r#"
name = "rollback"
summary = "Roll back"
roles = ["deployer"]
[[args]]
name = "service"
kind = "choice"
choices = ["api"]
"#,
    one_lead_approval!(),
    r#"[action]
kind = "exec"
argv = ["./act.sh", "{service}"]
timeout = "10s"
"#
);

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
    deliver_alerts(base, am_fixture(fixture)).await;
}

/// Delivers Alertmanager webhook `body` to the app at `base` and checks it was accepted.
pub async fn deliver_alerts(base: &str, body: String) {
    assert_eq!(alerts_answer(base, body).await, 200, "alert accepted");
}

/// Delivers Alertmanager webhook `body` to the app at `base`; the HTTP status it answered.
pub async fn alerts_answer(base: &str, body: String) -> u16 {
    let resp = reqwest::Client::new()
        .post(format!("{base}/hooks/alertmanager"))
        .bearer_auth(PLATFORM_AM_TOKEN)
        .body(body)
        .send()
        .await
        .expect("deliver the alert");
    resp.status().as_u16()
}

/// Outside text that chat platforms would read as pings and a disguised link.
pub const INJECTION: &str =
    "<!channel> <!here> <@U1> <https://evil.example|Approve> @everyone @here <@123>";

/// Outside text that chat platforms would make links of by themselves: a URL, a masked
/// link, an email address, a `tg://` link and a bare domain.
pub const LINKS: &str = "see https://evil.example/login [x](https://masked.example) ops@evil.example tg://resolve?domain=evil evil.example";

/// The spans of `LINKS` that must reach every platform in its non-linking form, in order.
pub const LINKED: [&str; 5] = [
    "https://evil.example/login",
    "https://masked.example",
    "ops@evil.example",
    "tg://resolve?domain=evil",
    "evil.example",
];

/// `LINKS` as Slack mrkdwn and Discord markdown show it outside a code block: each link an
/// inline code span.
pub const LINKS_AS_CODE: &str = "see `https://evil.example/login` [x](`https://masked.example`) `ops@evil.example` `tg://resolve?domain=evil` `evil.example`";

/// Asserts that nothing of `LINKS` in markdown `text` is outside code: with code spans and
/// ``` blocks taken out (the text holds no other backticks), no address is left.
pub fn assert_no_bare_link(text: &str) {
    let outside: String = text.split('`').step_by(2).collect();
    for raw in ["://", "evil.ex", "masked.ex"] {
        assert!(!outside.contains(raw), "{raw} outside code in {text}");
    }
}

/// `/note TEXT` (deployers; any text) needing one approval from an sre-lead, running
/// `./act.sh TEXT`: an approval request that quotes what the requester typed.
pub const NOTE_NEEDING_ONE_LEAD: &str = concat!(
    r#"
name = "note"
summary = "Leave a note"
roles = ["deployer"]
[[args]]
name = "text"
kind = "string"
"#,
    one_lead_approval!(),
    r#"[action]
kind = "exec"
argv = ["./act.sh", "{text}"]
timeout = "10s"
"#
);

/// An Alertmanager delivery of one firing alert whose name, instance label and summary all
/// carry `text`.
pub fn alert_carrying(text: &str) -> String {
    alert_with(text, text, text)
}

/// An Alertmanager delivery of one firing alert `LinkCheck` on instance `evil.example:9100`
/// whose summary is `text` (its line short enough to be shown whole, acks included).
pub fn alert_summarised(text: &str) -> String {
    alert_with("LinkCheck", "evil.example:9100", text)
}

/// How the addresses `alert_summarised` adds (its instance, and the source Alertmanager
/// gives) are shown on Slack and Discord: as code.
pub const ALERT_ADDRESSES_AS_CODE: [&str; 2] = [
    "LinkCheck `evil.example:9100`: ",
    " · source: `http://prometheus.example:9090/graph`",
];

/// An Alertmanager delivery of one firing alert with these name, instance label and summary.
fn alert_with(alertname: &str, instance: &str, summary: &str) -> String {
    serde_json::json!({
        "receiver": "opsbot",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": alertname, "instance": instance, "severity": "critical" },
            "annotations": { "summary": summary },
            "startsAt": "2026-11-23T10:53:46Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example:9090/graph",
            "fingerprint": "0123456789abcdef"
        }],
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": "{}:{alertname=\"Injected\"}",
        "truncatedAlerts": 0
    })
    .to_string()
}

/// Waits until request `run` is bound to its chat message.
pub async fn wait_for_run_message(app: &TestApp, run: impl Into<opsbot::domain::RunId>) {
    let run = run.into();
    let what = format!("request #{run} to be bound to a message");
    eventually(&what, WAIT, async || {
        let bound = app.store.run(run).await.expect("load run");
        bound.is_some_and(|r| r.message_id.is_some())
    })
    .await
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

/// Waits until request #1 is cancelled because its approval request could not be posted,
/// checks its audit record, and returns that record's request id.
pub async fn assert_request_withdrawn_unposted(app: &TestApp) -> String {
    let store = &app.store;
    eventually("the request to be cancelled", WAIT, async || {
        let run = store.run(opsbot::domain::RunId(1)).await.unwrap();
        run.is_some_and(|r| r.state == opsbot::domain::RunState::Cancelled)
    })
    .await;
    // The withdrawal is audited just after the request moves to cancelled: wait for it.
    let entry = eventually("the withdrawal audited", WAIT, async || {
        let audit = app.store.recent_audit(1).await.unwrap();
        let entry = audit[0].entry.clone();
        satisfies(entry, |e| {
            e.detail.contains("could not be posted in the channel")
        })
    })
    .await;
    app.wait_idle().await;
    entry.request_id.to_string()
}

/// `logged` has a warning naming `request_id` and saying `fix`.
pub fn assert_warned(logged: &str, request_id: &str, fix: &str) {
    assert!(
        logged.contains("WARN") && logged.contains(request_id) && logged.contains(fix),
        "{logged}"
    );
}

/// Waits (up to `within`) until exactly one of `replicas` leads, as `/readyz` says; its index.
pub async fn the_leader(replicas: &[Serve], within: std::time::Duration) -> usize {
    eventually("one replica to lead", within, async || {
        let mut states = Vec::new();
        for r in replicas {
            states.push(r.readyz().await.contains(" leader (epoch"));
        }
        satisfies(states, |s| s.iter().filter(|l| **l).count() == 1)
    })
    .await
    .iter()
    .position(|leads| *leads)
    .unwrap()
}

/// Waits until the process whose id a script wrote to `child.pid` in `dir` is gone (a
/// zombie has no cmdline): what a killed process group leaves of a background child.
pub async fn wait_child_gone(dir: &Path) {
    let pid = std::fs::read_to_string(dir.join("child.pid")).expect("child.pid written");
    let pid = pid.trim().to_owned();
    eventually(&format!("child {pid} to end"), WAIT, async || {
        !std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
    })
    .await;
}

/// `who` types `text` on the console of `app`, answered in a task of its own; returned once
/// the script it runs has written `child.pid` (it has started a background child).
pub async fn running_with_child(
    app: &std::sync::Arc<TestApp>,
    who: &'static str,
    text: &'static str,
) -> tokio::task::JoinHandle<String> {
    let running = tokio::spawn({
        let app = app.clone();
        async move { app.reply(who, text).await }
    });
    eventually("the script's background child", WAIT, async || {
        app.dir.path().join("child.pid").exists()
    })
    .await;
    running
}
