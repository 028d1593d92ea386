//! Alert group messages with two real `opsbot serve` replicas on one Postgres schema and one
//! fake Slack: the leader alone posts, one message per group whichever replica (or both)
//! received the delivery, and it edits that message for changes stored by the follower.

#[path = "support/slack.rs"]
mod slack_support;
mod support;

use std::time::Duration;

use slack_support::{Seen, wait_for};

/// How long the fake Slack takes to answer `chat.postMessage`: a post in flight on one
/// replica while the other looks for the group's message (a real post takes 100+ ms).
const POST_TAKES: Duration = Duration::from_millis(300);

/// A fake Slack Web API on 127.0.0.1:0 recording every call (method, JSON body) in `seen`;
/// the Nth `chat.*` call gets `ts` 1700000000.00000N, and posts are answered slowly.
async fn slow_slack(seen: Seen) -> String {
    use axum::extract::{Path, State};
    async fn api(
        State(seen): State<Seen>,
        Path(method): Path<String>,
        body: String,
    ) -> axum::Json<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let ts = {
            let mut log = seen.lock().unwrap();
            log.push((method.clone(), v.clone()));
            let n = log.iter().filter(|(m, _)| m.starts_with("chat.")).count();
            format!("1700000000.{n:06}")
        };
        if method == "chat.postMessage" {
            tokio::time::sleep(POST_TAKES).await;
        }
        axum::Json(serde_json::json!({
            "ok": true,
            "channel": v["channel"],
            "ts": ts,
            "message": { "ts": ts, "text": v["text"] },
        }))
    }
    let app = axum::Router::new()
        .route("/api/{method}", axum::routing::post(api))
        .with_state(seen);
    support::serve_fake(app).await
}

/// A replica `name`'s config in its own folder under `dir`: Slack's Web API at `slack`,
/// every alert group to channel `CALERTS`, the store in Postgres `schema`, a 2 s lease.
fn replica_config(
    dir: &std::path::Path,
    name: &str,
    slack: &str,
    schema: &str,
) -> std::path::PathBuf {
    let rest = format!(
        "[cluster]\nlease_secs = 2\n\
         [slack]\nsigning_secret = \"slack-signing-secret-123\"\nbot_token = \"xoxb-t\"\n\
         api_url = \"{slack}/api\"\n{}",
        support::alerts_routed_to("slack", "CALERTS")
    );
    support::replica_config(dir, name, &support::postgres_schema_url(schema), &rest)
}

/// The chat calls the fake Slack saw with `method`.
fn calls<'a>(log: &'a [(String, serde_json::Value)], method: &str) -> Vec<&'a serde_json::Value> {
    log.iter()
        .filter(|(m, _)| m == method)
        .map(|(_, v)| v)
        .collect()
}

/// Alertmanager HA (or a retry landing elsewhere) delivers one group to both replicas at
/// once: one `chat.postMessage`; the group resolved, delivered to the follower alone: a
/// `chat.update` of that message by the leader, and still no second post.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_per_group_across_replicas_edited_for_the_followers_changes() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let seen = Seen::default();
    let slack = slow_slack(seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let replicas: Vec<support::Serve> = ["a", "b"]
        .iter()
        .map(|name| {
            let config = replica_config(dir.path(), name, &slack, &schema);
            support::Serve::start(&config, support::WAIT)
        })
        .collect();
    let follower = 1 - support::the_leader(&replicas, support::WAIT).await;

    let (a, b) = (replicas[0].url(""), replicas[1].url(""));
    tokio::join!(
        support::fire_alerts(&a, "01-firing-single.json"),
        support::fire_alerts(&b, "01-firing-single.json"),
    );
    wait_for(&seen, "the group's message", |l| {
        !calls(l, "chat.postMessage").is_empty()
    })
    .await;
    // The fake numbers `chat.*` calls: the post was the first.
    let ts = "1700000000.000001";

    support::fire_alerts(&replicas[follower].url(""), "02-resolved-single.json").await;
    let log = wait_for(&seen, "the message edited to resolved", |l| {
        calls(l, "chat.update")
            .iter()
            .any(|u| u["text"].as_str().is_some_and(|t| t.contains("RESOLVED")))
    })
    .await;
    let posts = calls(&log, "chat.postMessage");
    assert_eq!(posts.len(), 1, "one message for the group: {log:?}");
    assert!(
        calls(&log, "chat.update").iter().all(|u| u["ts"] == ts),
        "every edit is of that message: {log:?}"
    );
    drop(replicas);
    support::drop_postgres_schema(&schema).await;
}
