//! Health probes through their real interface: checks are configured in TOML, built by
//! `build_checks` and run by `HealthChecks`, against local servers bound to 127.0.0.1:0
//! and the test Postgres and Redis (skipped with a reason when unreachable, a failure
//! with `CI=true`).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use opsbot::actions::health::{CheckResult, CheckState, HealthCheck, HealthChecks};
use opsbot::config::Config;
use opsbot::probes::build_checks;
use tokio::time::Instant;

const PASSWORD: &str = "hunter2-Sup3rSecret";

/// Builds the checks from `[[checks]]` TOML, exactly as the app does.
fn checks(toml: &str) -> Vec<HealthCheck> {
    let config = Config::from_toml(Path::new("probes.toml"), toml, &[]).expect("valid config");
    build_checks(&config.checks).expect("checks build")
}

/// Runs one configured check through the health runner.
async fn run(toml: &str) -> CheckResult {
    let mut results = HealthChecks::new(checks(toml)).run(None).await;
    assert_eq!(results.len(), 1);
    results.remove(0)
}

/// The probe's own, untruncated detail (the runner keeps 80 characters).
async fn raw_detail(toml: &str) -> String {
    let check = checks(toml).remove(0);
    check.probe.probe().await.detail
}

fn check_toml(kind: &str, field: &str, value: &str, extra: &str) -> String {
    format!(
        "[[checks]]\nname = \"c\"\nkind = \"{kind}\"\ntimeout = \"5s\"\n{field} = {value}\n{extra}"
    )
}

fn url_check(kind: &str, url: &str, extra: &str) -> String {
    check_toml(kind, "url", &format!("{url:?}"), extra)
}

/// A port nothing listens on: bind one, note it, let it go.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().unwrap().port()
}

/// A tiny HTTP server on 127.0.0.1:0.
async fn http_server() -> SocketAddr {
    let app = Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
        )
        .route(
            "/teapot",
            get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .route("/hang", get(std::future::pending::<&'static str>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind http server");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn http_is_up_on_2xx_and_down_on_500() {
    let addr = http_server().await;
    let up = run(&url_check("http", &format!("http://{addr}/ok"), "")).await;
    assert_eq!((up.state, up.detail.as_str()), (CheckState::Up, "HTTP 200"));
    assert_eq!(up.kind, "http");
    let down = run(&url_check("http", &format!("http://{addr}/fail"), "")).await;
    assert_eq!(
        (down.state, down.detail.as_str()),
        (CheckState::Down, "HTTP 500")
    );
    let missing = run(&url_check("http", &format!("http://{addr}/nope"), "")).await;
    assert_eq!(
        (missing.state, missing.detail.as_str()),
        (CheckState::Down, "HTTP 404")
    );
}

#[tokio::test]
async fn http_expect_status_is_honoured() {
    let addr = http_server().await;
    let teapot = format!("http://{addr}/teapot");
    let r = run(&url_check("http", &teapot, "expect_status = 418")).await;
    assert_eq!((r.state, r.detail.as_str()), (CheckState::Up, "HTTP 418"));
    let r = run(&url_check("http", &teapot, "")).await;
    assert_eq!(r.state, CheckState::Down, "418 is not a 2xx");
    // With expect_status, even a 200 is down if it is not the expected status.
    let ok = format!("http://{addr}/ok");
    let r = run(&url_check("http", &ok, "expect_status = 204")).await;
    assert_eq!((r.state, r.detail.as_str()), (CheckState::Down, "HTTP 200"));
    let fail = format!("http://{addr}/fail");
    let r = run(&url_check("http", &fail, "expect_status = 500")).await;
    assert_eq!(r.state, CheckState::Up);
}

#[tokio::test]
async fn http_connection_refused_is_down_without_the_password() {
    let url = format!(
        "http://monitor:{PASSWORD}@127.0.0.1:{}/healthz",
        closed_port()
    );
    let toml = url_check("http", &url, "");
    let r = run(&toml).await;
    assert_eq!(r.state, CheckState::Down, "{r:?}");
    let detail = raw_detail(&toml).await;
    assert!(detail.starts_with("connection failed"), "{detail}");
    assert!(detail.to_lowercase().contains("refused"), "{detail}");
    assert!(!detail.contains(PASSWORD), "{detail}");
    assert!(!detail.contains(&url), "{detail}");
}

#[tokio::test]
async fn http_without_an_answer_times_out() {
    let addr = http_server().await;
    let toml = format!(
        "[[checks]]\nname = \"slow\"\nkind = \"http\"\ntimeout = \"200ms\"\nurl = \"http://{addr}/hang\"\n"
    );
    let started = Instant::now();
    let r = run(&toml).await;
    assert_eq!(r.state, CheckState::TimedOut, "{r:?}");
    assert!(r.detail.contains("no answer within 200ms"), "{}", r.detail);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn tcp_is_up_when_something_listens_and_down_otherwise() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = run(&check_toml("tcp", "address", &format!("\"{addr}\""), "")).await;
    assert_eq!(r.state, CheckState::Up, "{r:?}");
    assert_eq!(r.kind, "tcp");
    drop(listener);

    let closed = format!("127.0.0.1:{}", closed_port());
    let r = run(&check_toml("tcp", "address", &format!("{closed:?}"), "")).await;
    assert_eq!(r.state, CheckState::Down, "{r:?}");
    assert!(r.detail.starts_with(&closed), "{}", r.detail);
}

fn exec_toml(argv: &[&str], timeout: &str) -> String {
    let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[[checks]]\nname = \"x\"\nkind = \"exec\"\ntimeout = \"{timeout}\"\nargv = [{}]\n",
        argv.join(", ")
    )
}

#[tokio::test]
async fn exec_reports_exit_status_and_first_line() {
    let r = run(&exec_toml(&["true"], "5s")).await;
    assert_eq!((r.state, r.detail.as_str()), (CheckState::Up, "exit 0"));
    let r = run(&exec_toml(&["false"], "5s")).await;
    assert_eq!((r.state, r.detail.as_str()), (CheckState::Down, "exit 1"));
    let r = run(&exec_toml(
        &["sh", "-c", "echo disk 91% full; echo more; exit 2"],
        "5s",
    ))
    .await;
    assert_eq!(
        (r.state, r.detail.as_str()),
        (CheckState::Down, "exit 2: disk 91% full")
    );
    // No shell: metacharacters are plain arguments.
    let r = run(&exec_toml(&["echo", "$HOME;", "false"], "5s")).await;
    assert_eq!(
        (r.state, r.detail.as_str()),
        (CheckState::Up, "exit 0: $HOME; false")
    );
}

#[tokio::test]
async fn exec_of_a_missing_program_is_down() {
    let r = run(&exec_toml(&["/nonexistent/opsbot-check-xyz"], "5s")).await;
    assert_eq!(r.state, CheckState::Down, "{r:?}");
    assert!(
        r.detail
            .starts_with("cannot run /nonexistent/opsbot-check-xyz"),
        "{}",
        r.detail
    );
}

#[tokio::test]
async fn exec_that_overruns_its_timeout_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > '{}'; exec sleep 30", pid_file.display());
    let r = run(&exec_toml(&["sh", "-c", &script], "300ms")).await;
    assert_eq!(r.state, CheckState::TimedOut, "{r:?}");
    let pid = std::fs::read_to_string(&pid_file).expect("the check wrote its pid");
    let stat = format!("/proc/{}/stat", pid.trim());
    // Killed (gone, or a zombie awaiting reaping) soon after the timeout.
    let what = "the timed-out check program to stop running";
    support::eventually(what, Duration::from_secs(5), async || {
        let stat = std::fs::read_to_string(&stat).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        let alive = !stat.is_empty() && !state.starts_with('Z') && !state.starts_with('X');
        if alive { Err(stat.clone()) } else { Ok(()) }
    })
    .await;
}

/// Whether the test Postgres answers; `false` after reporting why (a panic in CI).
async fn postgres_reachable() -> bool {
    use sqlx::Connection;
    let url = support::postgres_url();
    match sqlx::PgConnection::connect(&url).await {
        Ok(conn) => {
            let _ = conn.close().await;
            true
        }
        Err(e) => support::unavailable::<()>("Postgres", &url, &e.to_string()).is_some(),
    }
}

/// `base` with a password set (and optionally another port or database).
fn with_password(base: &str, port: Option<u16>, path: Option<&str>) -> String {
    let mut url = reqwest::Url::parse(base).expect("service url parses");
    url.set_password(Some(PASSWORD)).unwrap();
    if let Some(port) = port {
        url.set_port(Some(port)).unwrap();
    }
    if let Some(path) = path {
        url.set_path(path);
    }
    url.to_string()
}

#[tokio::test]
async fn postgres_is_up_against_the_real_server() {
    if !postgres_reachable().await {
        return;
    }
    let r = run(&url_check("postgres", &support::postgres_url(), "")).await;
    assert_eq!(
        (r.state, r.detail.as_str()),
        (CheckState::Up, "SELECT 1 ok")
    );
    assert_eq!(r.kind, "postgres");
}

#[tokio::test]
async fn postgres_down_details_never_show_the_password() {
    // Nothing listening (the server is not needed for this case).
    let url = with_password(&support::postgres_url(), Some(closed_port()), None);
    let toml = url_check("postgres", &url, "");
    assert_eq!(run(&toml).await.state, CheckState::Down);
    let detail = raw_detail(&toml).await;
    assert!(!detail.is_empty() && !detail.contains(PASSWORD), "{detail}");

    // The server answers, but refuses (unknown database; with password auth configured,
    // a wrong password is refused the same way).
    if !postgres_reachable().await {
        return;
    }
    let url = with_password(
        &support::postgres_url(),
        None,
        Some("/opsbot_no_such_database"),
    );
    let toml = url_check("postgres", &url, "");
    let r = run(&toml).await;
    assert_eq!(r.state, CheckState::Down, "{r:?}");
    let detail = raw_detail(&toml).await;
    assert!(detail.contains("opsbot_no_such_database"), "{detail}");
    assert!(!detail.contains(PASSWORD), "{detail}");
}

#[tokio::test]
async fn redis_is_up_against_the_real_server_and_down_without_it() {
    let url = support::redis_url();
    let down_url = with_password(&url, Some(closed_port()), None);
    let toml = url_check("redis", &down_url, "");
    assert_eq!(run(&toml).await.state, CheckState::Down);
    let detail = raw_detail(&toml).await;
    assert!(!detail.is_empty() && !detail.contains(PASSWORD), "{detail}");

    let target = reqwest::Url::parse(&url).expect("redis url parses");
    let host = target.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = target.port().unwrap_or(6379);
    if let Err(e) = tokio::net::TcpStream::connect((host.as_str(), port)).await {
        support::unavailable::<()>("Redis", &url, &e.to_string());
        return;
    }
    let r = run(&url_check("redis", &url, "")).await;
    assert_eq!((r.state, r.detail.as_str()), (CheckState::Up, "PING ok"));
    assert_eq!(r.kind, "redis");
}
