//! The HTTP endpoints over real HTTP: `/healthz`, `/readyz`, `/metrics`, and what the server
//! does with clients that hold connections (raw TCP, so a test can send half a request).

mod support;

use std::time::Duration;

use support::{TEAM, TestApp, WAIT, eventually, satisfies};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "am-token-0123456789";

/// How long a test waits for the server to answer or close: far beyond the short limits the
/// tests configure, far below the 10 s/30 s defaults a regression would fall back to.
const PROMPTLY: Duration = Duration::from_secs(3);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr).await.expect("connect")
}

/// Everything the server sends until it closes the connection; `None` if it is still open
/// after [`PROMPTLY`].
async fn until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        // A reset also means the server let go.
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            received.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(PROMPTLY, read).await.ok()?;
    Some(String::from_utf8_lossy(&received).into_owned())
}

/// Sends `head` (a request's start line and headers, no body), then what comes back.
async fn send_head(app: &TestApp, head: &str) -> Option<String> {
    let mut stream = connect(app).await;
    let head = format!("{head}\r\nHost: opsbot\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    until_closed(&mut stream).await
}

/// An Alertmanager POST that declares a `length`-byte body and never sends it.
fn am_head(token: &str, length: usize) -> String {
    format!(
        "POST /hooks/alertmanager HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}"
    )
}

#[tokio::test]
async fn healthz_readyz_and_metrics_answer() {
    let app = TestApp::builder().config(TEAM).spawn().await;
    let client = reqwest::Client::new();
    let r = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("store: ok"));

    app.say("alice", "/whoami").await;
    app.say("carol", "/audit").await;
    app.say("alice", "/definitely-not-a-command").await;
    let r = client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let body = r.text().await.unwrap();
    assert!(
        body.contains(r#"opsbot_commands_total{command="whoami",outcome="ok"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"opsbot_commands_total{command="audit",outcome="denied"} 1"#),
        "{body}"
    );
    // Unknown names are folded into one label so chatter cannot blow up cardinality.
    assert!(
        body.contains(r#"opsbot_commands_total{command="unknown",outcome="invalid"} 1"#),
        "{body}"
    );
    assert!(
        body.contains("opsbot_command_duration_seconds_bucket"),
        "{body}"
    );
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let app = TestApp::builder().config(TEAM).spawn().await;
    let r = reqwest::get(app.url("/admin")).await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_connection_that_sends_no_headers_is_closed() {
    let app = TestApp::builder()
        .server("header_read_timeout = \"200ms\"")
        .spawn()
        .await;
    let mut idle = connect(&app).await;
    assert!(
        until_closed(&mut idle).await.is_some(),
        "an idle connection is closed after header_read_timeout"
    );
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: op")
        .await
        .unwrap();
    assert!(
        until_closed(&mut slow).await.is_some(),
        "so is one whose headers never end"
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408() {
    let app = TestApp::builder()
        .server("request_timeout = \"200ms\"")
        .config(&format!("[alerts]\nalertmanager_token = \"{TOKEN}\"\n"))
        .spawn()
        .await;
    let answer = send_head(&app, &am_head(TOKEN, 1000))
        .await
        .expect("answered within the request timeout");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""status":408"#), "{answer}");
}

#[tokio::test]
async fn a_wrong_bearer_token_is_refused_before_the_body_is_read() {
    let app = TestApp::builder()
        .config(&format!("[alerts]\nalertmanager_token = \"{TOKEN}\"\n"))
        .spawn()
        .await;
    // Under the body limit (the server would wait for it) and far over it (it would be 413):
    // either way the token is wrong, and that is all the answer may depend on.
    for length in [4096, 1 << 30] {
        let answer = send_head(&app, &am_head("wrong-token-0123456789", length))
            .await
            .expect("answered without waiting for the body");
        assert!(answer.starts_with("HTTP/1.1 401"), "{length}: {answer}");
    }
}

#[tokio::test]
async fn connections_over_the_limit_get_503_and_healthz_answers_once_they_go() {
    let app = TestApp::builder()
        .server("max_connections = 4")
        .spawn()
        .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&app).await);
    }
    let answer = send_head(&app, "GET /healthz HTTP/1.1")
        .await
        .expect("refused at once");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#""status":503"#), "{answer}");

    drop(held);
    eventually("/healthz to answer again", WAIT, async || {
        let answer = send_head(&app, "GET /healthz HTTP/1.1").await;
        satisfies(answer, |a| {
            a.as_deref().is_some_and(|a| a.starts_with("HTTP/1.1 200"))
        })
    })
    .await;
}

#[tokio::test]
async fn readyz_fails_while_the_store_refuses_writes() {
    let app = TestApp::builder().spawn().await;
    app.wait_for_readyz("store: ok").await;
    let pool = support::sqlite_in(app.dir.path()).await;
    support::exec(&pool, "CREATE TRIGGER no_probe BEFORE INSERT ON store_probe BEGIN SELECT RAISE(ABORT, 'disk full'); END;").await;
    let body = app.wait_for_readyz("store: writes failing").await;
    assert!(body.starts_with("not ready\n"), "{body}");
    assert_eq!(
        reqwest::get(app.url("/readyz")).await.unwrap().status(),
        503
    );

    support::exec(&pool, "DROP TRIGGER no_probe").await;
    let body = app.wait_for_readyz("store: ok").await;
    assert!(body.starts_with("ready\n"), "{body}");
}

/// `line` is in `body`, or the test fails showing the whole body.
fn has(body: &str, line: &str) {
    assert!(body.contains(line), "{line} missing from:\n{body}");
}

#[tokio::test]
async fn known_series_are_at_zero_before_their_first_event() {
    let app = TestApp::builder()
        .config(TEAM)
        .config("[console]\nenabled = true\nuser = \"alice\"\n")
        .config("[slack]\nsigning_secret = \"slack-secret-0123456789\"\nbot_token = \"xoxb-test-token\"\napi_url = \"http://127.0.0.1:9/api/\"\n")
        .command("rollback.toml", support::ROLLBACK)
        .spawn()
        .await;
    let body = app.metrics().await;
    for line in [
        r#"opsbot_commands_total{command="whoami",outcome="ok"} 0"#,
        r#"opsbot_commands_total{command="rollback",outcome="denied"} 0"#,
        r#"opsbot_commands_total{command="unknown",outcome="invalid"} 0"#,
        r#"opsbot_command_duration_seconds_count{command="status"} 0"#,
        r#"opsbot_runs_finished_total{kind="timed_out"} 0"#,
        r#"opsbot_runbook_duration_seconds_count{command="rollback",outcome="failed"} 0"#,
        r#"opsbot_outbound_failures_total{kind="undeliverable"} 0"#,
        r#"opsbot_messages_not_delivered_total{platform="slack"} 0"#,
        r#"opsbot_webhook_refused_total{endpoint="alertmanager",reason="token"} 0"#,
        r#"opsbot_webhook_refused_total{endpoint="alert",reason="signature"} 0"#,
        // Slack receives on its HTTP routes from the start; the console is not read here.
        r#"opsbot_adapter_up{platform="slack"} 1"#,
        r#"opsbot_adapter_up{platform="console"} 0"#,
        "opsbot_audit_append_failures_total 0",
    ] {
        has(&body, line);
    }
    has(
        &body,
        &format!(
            r#"opsbot_build_info{{version="{}""#,
            env!("CARGO_PKG_VERSION")
        ),
    );
    assert!(!body.contains(r#"platform="telegram""#), "{body}");
}

#[tokio::test]
async fn a_runbooks_duration_is_observed_by_how_it_ended() {
    let app = TestApp::builder()
        .config(TEAM)
        .command(
            "restart.toml",
            "name = \"restart\"\nsummary = \"Restart\"\nroles = [\"sre\"]\n[action]\nkind = \"exec\"\nargv = [\"./act.sh\", \"x\"]\ntimeout = \"30s\"\n",
        )
        .script("act.sh", support::COUNTING_ACT)
        .spawn()
        .await;
    let reply = app.reply("alice", "/restart").await;
    assert!(reply.contains("rolled back x"), "{reply}");
    let body = app.metrics().await;
    has(
        &body,
        r#"opsbot_runbook_duration_seconds_count{command="restart",outcome="succeeded"} 1"#,
    );
    has(&body, r#"opsbot_runs_finished_total{kind="succeeded"} 1"#);
}

#[tokio::test]
async fn refused_webhooks_are_counted_by_endpoint_and_reason() {
    let app = TestApp::builder()
        .config(&format!(
            "[alerts]\nalertmanager_token = \"{TOKEN}\"\nwebhook_secret = \"hook-secret-0123456789\"\nmax_body_bytes = 1024\n"
        ))
        .spawn()
        .await;
    let client = reqwest::Client::new();
    let am = |token: &str, body: String| {
        client
            .post(app.url("/hooks/alertmanager"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(
        am("wrong-token-0123", "{}".into()).await.unwrap().status(),
        401
    );
    assert_eq!(am(TOKEN, "{not json".into()).await.unwrap().status(), 400);
    assert_eq!(am(TOKEN, "x".repeat(4096)).await.unwrap().status(), 413);
    let unsigned = client
        .post(app.url("/hooks/alert"))
        .header(
            "x-opsbot-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header("x-opsbot-signature", "v1=00")
        .body(r#"{"key":"k","status":"firing"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let body = app.metrics().await;
    for reason in ["token", "bad_json", "too_large"] {
        has(
            &body,
            &format!(
                r#"opsbot_webhook_refused_total{{endpoint="alertmanager",reason="{reason}"}} 1"#
            ),
        );
    }
    has(
        &body,
        r#"opsbot_webhook_refused_total{endpoint="alert",reason="signature"} 1"#,
    );
    has(
        &body,
        r#"opsbot_webhook_refused_total{endpoint="alert",reason="bad_json"} 0"#,
    );
}

#[tokio::test]
async fn metrics_listen_serves_metrics_apart_from_the_public_listener() {
    let app = TestApp::builder()
        .server("metrics_listen = \"127.0.0.1:0\"")
        .spawn()
        .await;
    let metrics_addr = app.metrics_addr.expect("a metrics listener");
    assert_ne!(metrics_addr, app.addr);
    let public = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(public.status(), 404, "not on the public listener");
    let own = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    has(&own.text().await.unwrap(), "opsbot_build_info{");
    let healthz = reqwest::get(format!("http://{metrics_addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(healthz.status(), 404, "only /metrics there");
}

/// A refused audit append withholds the action and is counted, so it can be alerted on
/// (deploy/prometheus/opsbot-rules.yaml).
#[tokio::test]
async fn a_refused_audit_append_is_counted() {
    let app = TestApp::builder().config(TEAM).spawn().await;
    let db = support::sqlite_in(app.dir.path()).await;
    support::exec(
        &db,
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .await;
    let reply = app.reply("alice", "/whoami").await;
    assert!(
        reply.contains("could not record this request in the audit log"),
        "{reply}"
    );
    assert!(
        app.metrics()
            .await
            .contains("opsbot_audit_append_failures_total 1"),
        "counted"
    );
}
