//! The HTTP endpoints over real HTTP: `/healthz`, `/readyz`, `/metrics`.

mod support;

use support::{TEAM, TestApp};

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
