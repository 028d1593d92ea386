//! Two real `opsbot serve` replicas on one Postgres schema and one Redis, with signed Slack
//! slash commands spread over both, as a load balancer would: each command is audited once
//! and answered once, and a per-person rate limit holds across the two (issue 14's proof).

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET: &str = "replica-slack-signing-secret";
const USERS: usize = 200;
/// Each person's allowance (`per_user = "5/min"`): every command within it runs.
const PER_USER: usize = 5;
/// People who send one more command than they may.
const OVER: usize = 20;

type Answers = Arc<Mutex<BTreeMap<usize, Vec<String>>>>;

/// The `response_url` target: records every answer by command number.
async fn fake_response_urls(answers: Answers) -> String {
    use axum::extract::{Path, State};
    async fn respond(
        State(answers): State<Answers>,
        Path(n): Path<usize>,
        body: String,
    ) -> axum::Json<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let text = v["text"].as_str().unwrap_or_default().to_owned();
        answers.lock().unwrap().entry(n).or_default().push(text);
        axum::Json(serde_json::json!({ "ok": true }))
    }
    let app = axum::Router::new()
        .route("/respond/{n}", axum::routing::post(respond))
        .with_state(answers);
    support::serve_fake(app).await
}

fn replica_config(
    dir: &std::path::Path,
    name: &str,
    schema: &str,
    slack: &str,
) -> std::path::PathBuf {
    let rest = format!(
        "[limits]\nbackend = \"redis\"\nredis_url = \"{}\"\nglobal = \"100000/s\"\n\
         per_channel = \"100000/s\"\nper_user = \"{PER_USER}/min\"\n\
         [slack]\nsigning_secret = \"{SECRET}\"\nbot_token = \"xoxb-replicas\"\napi_url = \"{slack}/api/\"\n",
        support::redis_url(),
    );
    support::replica_config(dir, name, &support::postgres_schema_url(schema), &rest)
}

fn signed_slash(base: &str, run: &str, user: usize, n: usize) -> (String, String, String) {
    let body = serde_urlencoded::to_string([
        ("team_id", "T1"),
        ("channel_id", "COPS"),
        ("channel_name", "ops"),
        // New people each run: Redis keeps a person's count for a minute.
        ("user_id", &format!("U{run}{user:03}")),
        ("command", "/whoami"),
        ("text", ""),
        ("response_url", &format!("{base}/respond/{n}")),
        ("trigger_id", &format!("{run}.{n}")),
    ])
    .unwrap();
    let ts = chrono::Utc::now().timestamp().to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    (body, ts, signature)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_spread_over_two_replicas_are_audited_and_answered_once_within_one_limit() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    if redis::Client::open(support::redis_url())
        .and_then(|c| c.get_connection().map(drop))
        .is_err()
    {
        support::unavailable::<()>("Redis", &support::redis_url(), "cannot connect");
        return;
    }
    let answers = Answers::default();
    let base = fake_response_urls(answers.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let replicas: Vec<support::Serve> = ["a", "b"]
        .iter()
        .map(|name| {
            let config = replica_config(dir.path(), name, &schema, &base);
            support::Serve::start(&config, support::WAIT)
        })
        .collect();
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase();

    // Every person's allowed commands, then one too many for the first OVER people; each
    // command goes to the replica a round-robin balancer would pick.
    let mut commands: Vec<usize> = (0..USERS).flat_map(|u| [u; PER_USER]).collect();
    commands.extend(0..OVER);
    let client = reqwest::Client::new();
    let statuses: Vec<u16> = futures_util::stream::iter(commands.iter().enumerate())
        .map(|(n, &user)| {
            let (body, ts, signature) = signed_slash(&base, &run, user, n);
            let url = replicas[n % 2].url("/slack/commands");
            let client = client.clone();
            async move {
                client
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-slack-request-timestamp", ts)
                    .header("x-slack-signature", signature)
                    .body(body)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "every command acked");

    let total = commands.len();
    let answered = support::eventually("every command answered", support::WAIT * 4, async || {
        let answers = answers.lock().unwrap().clone();
        support::satisfies(answers, |a| a.len() == total)
    })
    .await;
    let twice: Vec<_> = answered.iter().filter(|(_, a)| a.len() != 1).collect();
    assert!(twice.is_empty(), "answered more than once: {twice:?}");
    let limited = answered
        .values()
        .filter(|a| a[0].starts_with("Slow down"))
        .count();
    assert_eq!(
        limited, OVER,
        "the per-person limit held across both replicas"
    );

    let db = sqlx::PgPool::connect(&support::postgres_schema_url(&schema))
        .await
        .unwrap();
    let audited: Vec<(String, i64)> = sqlx::query_as(
        "SELECT outcome, count(*) FROM audit_log WHERE command = 'whoami' GROUP BY outcome ORDER BY outcome",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            ("limited".to_owned(), OVER as i64),
            ("ok".to_owned(), (USERS * PER_USER) as i64)
        ],
        "each command audited once"
    );
    db.close().await;
    drop(replicas);
    support::drop_postgres_schema(&schema).await;
}
