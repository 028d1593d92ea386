//! Issue 14's proof that a runbook result decided before the leader dies is posted exactly
//! once: two real `opsbot serve` replicas on one Postgres schema and one fake Slack. The
//! follower takes the approval and runs the request while the leader is frozen (so nobody
//! delivers), the result is in the outbox, the leader is killed with SIGKILL, and the
//! follower, leading now, posts the result once in the request's thread.

#[path = "support/slack.rs"]
mod slack_support;
mod support;

use std::time::{Duration, Instant};

use slack_support::{Seen, count_texts, reaction_callback, wait_for};

const SECRET: &str = "failover-slack-signing-secret";
/// Long enough that the frozen leader's lease outlives the approval and the run; short
/// enough that the follower takes over soon after the kill.
const LEASE_SECS: u64 = 4;

/// Replica `name`'s config in its own folder under `dir`: the schema's store, Slack at
/// `slack`, alice (deployer) and bob (sre-lead), and `/rollback` running `./act.sh`.
fn replica_config(
    dir: &std::path::Path,
    name: &str,
    schema: &str,
    slack: &str,
) -> std::path::PathBuf {
    let store = support::postgres_schema_url(schema);
    config_in(dir, name, &store, slack, support::COUNTING_ACT)
}

/// As [`replica_config`], with the store at `store` and `act` as `./act.sh`.
fn config_in(
    dir: &std::path::Path,
    name: &str,
    store: &str,
    slack: &str,
    act: &str,
) -> std::path::PathBuf {
    let rest = format!(
        "[cluster]\nlease_secs = {LEASE_SECS}\n{}\n\
         [slack]\nsigning_secret = \"{SECRET}\"\nbot_token = \"xoxb-failover\"\napi_url = \"{slack}/api/\"\n",
        support::deployer_and_lead("slack:UALICE", "slack:UBOB"),
    );
    let config = support::replica_config(dir, name, store, &rest);
    let folder = dir.join(name);
    support::write(
        &folder.join("commands"),
        "rollback.toml",
        support::ROLLBACK_NEEDING_ONE_LEAD,
    );
    support::write_executable(&folder, "act.sh", act);
    config
}

/// POSTs `body` to `url`, signed as Slack signs it.
async fn signed(url: String, body: &str, content_type: &str) -> u16 {
    slack_support::signed_with(SECRET, url, body, content_type).await
}

/// The state of request #1 and of the outbox rows carrying its result, in `schema`.
async fn stored(db: &sqlx::PgPool) -> (String, Vec<String>) {
    let (run,): (String,) = sqlx::query_as("SELECT state FROM runs WHERE id = 1")
        .fetch_one(db)
        .await
        .unwrap();
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT state FROM outbox WHERE body LIKE '%succeeded%' ORDER BY id")
            .fetch_all(db)
            .await
            .unwrap();
    (run, rows.into_iter().map(|(s,)| s).collect())
}

fn results(seen: &Seen) -> Vec<serde_json::Value> {
    (seen.lock().unwrap().iter())
        .filter(|(m, v)| {
            m == "chat.postMessage" && v["text"].as_str().is_some_and(|t| t.contains("succeeded"))
        })
        .map(|(_, v)| v.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_decided_before_the_leader_is_killed_is_posted_once_by_the_next_leader() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let seen = Seen::default();
    let slack = slack_support::fake_web_api(None, seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut replicas: Vec<support::Serve> = ["a", "b"]
        .iter()
        .map(|name| {
            let config = replica_config(dir.path(), name, &schema, &slack);
            support::Serve::start(&config, support::WAIT)
        })
        .collect();
    let led = support::the_leader(&replicas, support::WAIT).await;
    let follower = 1 - led;
    let db = sqlx::PgPool::connect(&support::postgres_schema_url(&schema))
        .await
        .unwrap();

    // Alice asks on the follower; the request is its answer, posted at once.
    let follower_url = |path: &str| replicas[follower].url(path);
    let ts = request_rollback(&follower_url, &slack, &seen, async || {
        let bound: Option<(Option<String>,)> =
            sqlx::query_as("SELECT message_id FROM runs WHERE id = 1")
                .fetch_optional(&db)
                .await
                .unwrap();
        bound.and_then(|(m,)| m)
    })
    .await;

    // The leader freezes: nothing is delivered. Bob approves on the follower, which runs it.
    replicas[led].freeze();
    let approve = reaction_callback("EvFailover", "UBOB", &ts).to_string();
    assert_eq!(
        signed(follower_url("/slack/events"), &approve, "application/json").await,
        200
    );
    let decided = support::eventually("the result stored and queued", support::WAIT, async || {
        support::satisfies(stored(&db).await, |(run, rows)| {
            run == "succeeded" && !rows.is_empty()
        })
    })
    .await;
    assert_eq!(decided.1, ["pending"], "queued once, not delivered yet");
    assert!(results(&seen).is_empty(), "nobody posted it yet");
    let ack = wait_for(&seen, "the approver's acknowledgement", |l| {
        l.iter().any(|(_, v)| {
            v["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("Approved by bob"))
        })
    })
    .await;
    assert!(
        !ack.iter().any(|(_, v)| v["text"]
            .as_str()
            .is_some_and(|t| t.contains("rolled back api"))),
        "the acknowledgement does not carry the result"
    );

    // kill -9 of the frozen leader: the follower takes over delivery and posts it.
    let killed = Instant::now();
    replicas[led].kill();
    let within = Duration::from_secs(LEASE_SECS) + support::WAIT;
    let posted = support::eventually("the result posted by the new leader", within, async || {
        support::satisfies(results(&seen), |r| !r.is_empty())
    })
    .await;
    let took = killed.elapsed();
    let result = &posted[0];
    assert_eq!(result["channel"], "COPS");
    assert_eq!(result["thread_ts"], ts.as_str(), "in reply to the request");
    assert!(
        result["text"].as_str().unwrap().contains("rolled back api"),
        "{result}"
    );
    let delivered = support::eventually("the result marked delivered", support::WAIT, async || {
        support::satisfies(stored(&db).await.1, |rows| rows == &["done"])
    })
    .await;
    assert_eq!(delivered, ["done"]);
    assert!(replicas[follower].readyz().await.contains(" leader (epoch"));
    // Delivered and marked: nobody alive holds it any more, so this count is final.
    assert_eq!(results(&seen).len(), 1, "posted exactly once");
    assert_eq!(count_texts(&seen, "rolled back api"), 1);
    eprintln!("kill -9 of the leader to the result posted by the next: {took:?}");
    db.close().await;
    drop(replicas);
    support::drop_postgres_schema(&schema).await;
}

/// Alice asks for `/rollback api` at `url`; waits for the approval request to be posted and
/// bound (`bound` reads its message id from the store); returns that id (its `ts`).
async fn request_rollback(
    url: &impl Fn(&str) -> String,
    slack: &str,
    seen: &Seen,
    mut bound: impl AsyncFnMut() -> Option<String>,
) -> String {
    let slash = slack_support::slash(slack, "UALICE", "/rollback", "api", 1);
    let form = "application/x-www-form-urlencoded";
    assert_eq!(signed(url("/slack/commands"), &slash, form).await, 200);
    wait_for(seen, "the approval request", |l| {
        l.iter().any(|(m, v)| {
            m == "chat.postMessage" && v["text"].as_str().is_some_and(|t| t.contains("Request #1"))
        })
    })
    .await;
    support::eventually(
        "the request bound to its message",
        support::WAIT,
        async || bound().await,
    )
    .await
}

/// SIGTERM while an approved request runs: `serve` lets the run finish and posts its result
/// before it exits, rather than leaving it queued for its next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_finished_during_a_graceful_shutdown_is_posted_before_exit() {
    let seen = Seen::default();
    let slack = slack_support::fake_web_api(None, seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("one");
    let store = format!("sqlite://{}", folder.join("opsbot.db").display());
    // Long enough to be running when the signal comes; well inside the 10 s grace.
    let act = "#!/bin/sh\necho started > started\nsleep 1\necho rolled back $1\n";
    let config = config_in(dir.path(), "one", &store, &slack, act);
    let mut serve = support::Serve::start(&config, support::WAIT);
    let url = |path: &str| serve.url(path);
    let db = support::sqlite_in(&folder).await;
    let ts = request_rollback(&url, &slack, &seen, async || {
        let bound: Option<Option<String>> =
            sqlx::query_scalar("SELECT message_id FROM runs WHERE id = 1")
                .fetch_optional(&db)
                .await
                .unwrap();
        bound.flatten()
    })
    .await;
    db.close().await;

    let approve = reaction_callback("EvShutdown", "UBOB", &ts).to_string();
    assert_eq!(
        signed(url("/slack/events"), &approve, "application/json").await,
        200
    );
    support::eventually("the run started", support::WAIT, async || {
        folder.join("started").exists()
    })
    .await;
    serve.terminate();
    let status = serve.wait_exit(support::WAIT).await;
    assert!(status.success(), "{status}");
    let posted = results(&seen);
    assert_eq!(posted.len(), 1, "posted before exit: {posted:?}");
    assert_eq!(
        posted[0]["thread_ts"],
        ts.as_str(),
        "in reply to the request"
    );
}
