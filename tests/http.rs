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
