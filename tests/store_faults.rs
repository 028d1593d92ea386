//! Issue 14's fault proofs, with two real `opsbot serve` replicas on one Postgres schema and
//! one fake Slack: a store that refuses to record group messages for 30 s while groups
//! change, and Postgres unreachable for 30 s (behind a proxy the test cuts) during alert
//! intake and chat traffic. Afterwards every group has exactly one message, showing its
//! final state, and both replicas serve again without a restart.
//!
//! Each test takes at least [`FAULT_LASTS`]: the issue asks for a 30 s fault.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::time::Instant;

/// How long each fault is held (issue 14: "for 30 s"); the tests are this slow on purpose.
const FAULT_LASTS: Duration = Duration::from_secs(30);
/// Waits that span a fault's end: a new leader's lease, retries backing off, a claim
/// going stale (60 s) if a replica ever had to wait for one.
const RECOVERY: Duration = Duration::from_secs(90);
const SECRET: &str = "faults-slack-signing-secret";

/// One call the fake Slack answered: the method (or `respond/N`), its body, the `ts` given.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    body: serde_json::Value,
    ts: String,
}

#[derive(Clone, Default)]
struct Slack {
    calls: Arc<Mutex<Vec<Call>>>,
    /// While true, `chat.postMessage` is recorded but answered only once it turns false.
    hold_posts: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Slack {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

/// A fake Slack Web API (`/api/{method}`) and `response_url` target (`/respond/{n}`) on
/// 127.0.0.1:0; the Nth `chat.*` call gets `ts` 1700000000.00000N.
async fn fake_slack(slack: Slack) -> String {
    use axum::extract::{Path, State};
    async fn api(
        State(slack): State<Slack>,
        Path(method): Path<String>,
        body: String,
    ) -> axum::Json<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let ts = {
            let mut calls = slack.calls.lock().unwrap();
            let n = calls
                .iter()
                .filter(|c| c.method.starts_with("chat."))
                .count()
                + 1;
            let ts = format!("1700000000.{n:06}");
            calls.push(Call {
                method: method.clone(),
                body: v.clone(),
                ts: ts.clone(),
            });
            ts
        };
        if method == "chat.postMessage" {
            let mut held = slack.hold_posts.subscribe();
            let _ = held.wait_for(|h| !h).await;
        }
        axum::Json(serde_json::json!({
            "ok": true, "channel": v["channel"], "ts": ts,
            "message": { "ts": ts, "text": v["text"] },
        }))
    }
    async fn respond(
        State(slack): State<Slack>,
        Path(n): Path<String>,
        body: String,
    ) -> axum::Json<serde_json::Value> {
        slack.calls.lock().unwrap().push(Call {
            method: format!("respond/{n}"),
            body: serde_json::from_str(&body).unwrap_or_default(),
            ts: String::new(),
        });
        axum::Json(serde_json::json!({ "ok": true }))
    }
    let app = axum::Router::new()
        .route("/api/{method}", axum::routing::post(api))
        .route("/respond/{n}", axum::routing::post(respond))
        .with_state(slack);
    support::serve_fake(app).await
}

/// Replica `name`'s config in its own folder under `dir`: the store at `database_url`, a
/// 2 s lease, Slack at `slack`, every alert group to `CALERTS`.
fn replica_config(
    dir: &std::path::Path,
    name: &str,
    database_url: &str,
    slack: &str,
) -> std::path::PathBuf {
    let rest = format!(
        "[cluster]\nlease_secs = 2\n\
         [slack]\nsigning_secret = \"{SECRET}\"\nbot_token = \"xoxb-t\"\napi_url = \"{slack}/api\"\n{}",
        support::alerts_routed_to("slack", "CALERTS")
    );
    support::replica_config(dir, name, database_url, &rest)
}

/// Two replicas, each on its `database_url`, once one of them leads; and which one.
async fn two_replicas(
    dir: &std::path::Path,
    database_urls: [&str; 2],
    slack: &str,
) -> (Vec<support::Serve>, usize) {
    let replicas: Vec<support::Serve> = ["a", "b"]
        .iter()
        .zip(database_urls)
        .map(|(name, url)| {
            let config = replica_config(dir, name, url, slack);
            support::Serve::start(&config, support::WAIT)
        })
        .collect();
    let leader = support::the_leader(&replicas, support::WAIT).await;
    (replicas, leader)
}

/// A recorded Alertmanager delivery made about group `name` (an alert name of its own, and
/// fingerprints of its own), so that one fixture gives several groups.
fn delivery(fixture: &str, name: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&support::am_fixture(fixture)).unwrap();
    let suffix: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    for alert in v["alerts"].as_array_mut().unwrap() {
        alert["labels"]["alertname"] = name.into();
        let fingerprint = format!("{}{suffix}", alert["fingerprint"].as_str().unwrap());
        alert["fingerprint"] = fingerprint.into();
    }
    v["groupLabels"]["alertname"] = name.into();
    v["commonLabels"]["alertname"] = name.into();
    v["groupKey"] = format!("{{}}:{{alertname=\"{name}\"}}").into();
    v.to_string()
}

/// One group's messages as the fake Slack saw them: the `ts` of each post, and the text
/// the group's message shows last (its post or last edit).
#[derive(Debug)]
struct Shown {
    posts: Vec<String>,
    last: Option<String>,
    edits_elsewhere: usize,
}

/// What the fake Slack shows for group `name`: posts are told apart by the group's name in
/// their text, edits by the `ts` they change.
fn shown(calls: &[Call], name: &str) -> Shown {
    let names = |c: &Call| {
        c.body["text"].as_str().is_some_and(|t| {
            t.lines().next().is_some_and(|h| {
                h.ends_with(&format!(" {name}")) || h.contains(&format!(" {name}:"))
            })
        })
    };
    let mut shown = Shown {
        posts: Vec::new(),
        last: None,
        edits_elsewhere: 0,
    };
    for c in calls {
        let text = c.body["text"].as_str().map(str::to_owned);
        match c.method.as_str() {
            "chat.postMessage" if names(c) => {
                shown.posts.push(c.ts.clone());
                shown.last = text;
            }
            "chat.update" if shown.posts.iter().any(|ts| c.body["ts"] == ts.as_str()) => {
                shown.last = text;
            }
            "chat.update" if names(c) => shown.edits_elsewhere += 1,
            _ => {}
        }
    }
    shown
}

/// Waits until every group in `want` (name → headline) has one message whose last text
/// starts with its headline, and returns what Slack shows for each.
async fn wait_for_final(
    slack: &Slack,
    want: &BTreeMap<&str, String>,
    within: Duration,
) -> BTreeMap<String, Shown> {
    support::eventually(
        "each group's message to show its final state",
        within,
        async || {
            let calls = slack.calls();
            let shown: BTreeMap<String, Shown> = want
                .keys()
                .map(|n| (n.to_string(), shown(&calls, n)))
                .collect();
            support::satisfies(shown, |s| {
                want.iter().all(|(n, headline)| {
                    s[*n]
                        .last
                        .as_deref()
                        .is_some_and(|t| t.starts_with(headline.as_str()))
                })
            })
        },
    )
    .await
}

/// Every group had one message, and only that message was edited.
fn assert_one_message_each(shown: &BTreeMap<String, Shown>, slack: &Slack) {
    for (name, s) in shown {
        assert_eq!(
            s.posts.len(),
            1,
            "group {name} posted once: {s:?}\n{:#?}",
            slack.calls()
        );
        assert_eq!(
            s.edits_elsewhere,
            0,
            "group {name}: only its message edited: {:#?}",
            slack.calls()
        );
    }
}

const FIRING_ONE: &str = "🔥 FIRING 1 · resolved 0 ·";
const MIXED: &str = "🔥 FIRING 2 · resolved 1 ·";

/// The final headlines: `cpu*` groups from `01`/`02` (one alert), `disk*` from `03`/`04`.
fn headline(start: &str, name: &str) -> String {
    match start {
        "resolved" => format!("✅ RESOLVED · {name}: all 1 resolved"),
        other => format!("{other} {name}"),
    }
}

/// Runs `sql` (several statements) in `schema`.
async fn exec_in(schema: &str, sql: &str) {
    let db = sqlx::PgPool::connect(&support::postgres_schema_url(schema))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
}

/// Postgres refuses to store any group's message id (and that a group was delivered): a
/// chat post succeeds, recording it fails. Intake, claims and the leader's lease still work.
const REFUSE_DELIVERY_RECORDS: &str = "
CREATE FUNCTION refuse_delivery_records() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the test refuses % on %', TG_OP, TG_TABLE_NAME; END $$;
CREATE TRIGGER refuse_messages BEFORE INSERT OR UPDATE ON alert_messages
    FOR EACH ROW EXECUTE FUNCTION refuse_delivery_records();
CREATE TRIGGER refuse_delivered BEFORE UPDATE ON alert_groups
    FOR EACH ROW WHEN (NEW.delivered IS DISTINCT FROM OLD.delivered)
    EXECUTE FUNCTION refuse_delivery_records();
";

const ACCEPT_DELIVERY_RECORDS: &str = "
DROP TRIGGER refuse_messages ON alert_messages;
DROP TRIGGER refuse_delivered ON alert_groups;
DROP FUNCTION refuse_delivery_records();
";

/// Rows of `alert_messages` (group key → message id, last text) and how many groups are
/// still pending delivery.
async fn recorded(schema: &str) -> (BTreeMap<String, (String, String)>, i64) {
    let db = sqlx::PgPool::connect(&support::postgres_schema_url(schema))
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT group_key, message_id, last_text FROM alert_messages")
            .fetch_all(&db)
            .await
            .unwrap();
    let (pending,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM alert_groups WHERE version > delivered")
            .fetch_one(&db)
            .await
            .unwrap();
    db.close().await;
    (
        rows.into_iter().map(|(g, m, t)| (g, (m, t))).collect(),
        pending,
    )
}

/// Four groups posted, then changed twice, delivered alternately to the two replicas at
/// `url(n)`; each state waited for in Slack. Returns each group's final headline.
async fn groups_change(
    slack: &Slack,
    url: impl Fn(usize) -> String,
) -> BTreeMap<&'static str, String> {
    let (cpu, disk) = (["HighCPUX0", "HighCPUX1"], ["DiskFullX0", "DiskFullX1"]);
    for (n, name) in cpu.iter().enumerate() {
        support::deliver_alerts(&url(n), delivery("01-firing-single.json", name)).await;
    }
    for (n, name) in disk.iter().enumerate() {
        support::deliver_alerts(&url(n), delivery("03-firing-grouped-3.json", name)).await;
    }
    let firing: BTreeMap<&str, String> = cpu
        .iter()
        .map(|n| (*n, headline(FIRING_ONE, n)))
        .chain(
            disk.iter()
                .map(|n| (*n, headline("🔥 FIRING 3 · resolved 0 ·", n))),
        )
        .collect();
    wait_for_final(slack, &firing, support::WAIT).await;

    // Changes while the ids are still refused: each is an edit of the message posted.
    support::deliver_alerts(&url(1), delivery("02-resolved-single.json", cpu[0])).await;
    support::deliver_alerts(&url(0), delivery("02-resolved-single.json", cpu[1])).await;
    for (n, name) in disk.iter().enumerate() {
        let body = delivery("04-grouped-mixed-firing-resolved.json", name);
        support::deliver_alerts(&url(n + 1), body).await;
    }
    let mut want: BTreeMap<&str, String> = cpu
        .iter()
        .map(|n| (*n, headline("resolved", n)))
        .chain(disk.iter().map(|n| (*n, headline(MIXED, n))))
        .collect();
    wait_for_final(slack, &want, support::WAIT).await;
    // And one fires again.
    support::deliver_alerts(&url(0), delivery("01-firing-single.json", cpu[0])).await;
    want.insert(cpu[0], headline(FIRING_ONE, cpu[0]));
    wait_for_final(slack, &want, support::WAIT).await;
    want
}

/// The store refuses every group message id (and delivered mark) for [`FAULT_LASTS`] while
/// four groups are posted and change, through both replicas; afterwards each group has
/// exactly one message, edited to its final state, whose id the store holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_refusing_message_ids_for_30s_still_leaves_one_message_per_group_in_its_final_state()
{
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let slack = Slack::default();
    let base = fake_slack(slack.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = support::postgres_schema_url(&schema);
    let (replicas, _) = two_replicas(dir.path(), [&url; 2], &base).await;
    let url = |n: usize| replicas[n % 2].url("");

    exec_in(&schema, REFUSE_DELIVERY_RECORDS).await;
    let accept_again = Instant::now() + FAULT_LASTS;
    let want = groups_change(&slack, url).await;
    assert!(
        Instant::now() < accept_again,
        "the changes were made while the store refused"
    );

    tokio::time::sleep_until(accept_again).await;
    exec_in(&schema, ACCEPT_DELIVERY_RECORDS).await;
    let (messages, _) =
        support::eventually("every group recorded delivered", RECOVERY, async || {
            support::satisfies(recorded(&schema).await, |(m, pending)| {
                m.len() == 4 && *pending == 0
            })
        })
        .await;
    let shown = wait_for_final(&slack, &want, support::WAIT).await;
    assert_one_message_each(&shown, &slack);
    for (name, s) in &shown {
        let key = format!("{{}}:{{alertname=\"{name}\"}}");
        let (id, text) = &messages[&key];
        assert_eq!(
            id, &s.posts[0],
            "the store holds group {name}'s one message"
        );
        // Slack shows the addresses in it (the alert's source) as code.
        let shown = s.last.as_ref().map(|t| t.replace('`', ""));
        assert_eq!(Some(text), shown.as_ref(), "and the text it shows");
    }
    drop(replicas);
    support::drop_postgres_schema(&schema).await;
}

/// A signed Slack `/whoami` from `user`, answered at `{base}/respond/{n}`: (body, ts, signature).
fn signed_whoami(base: &str, user: &str, n: usize) -> (String, String, String) {
    let body = serde_urlencoded::to_string([
        ("team_id", "T1"),
        ("channel_id", "COPS"),
        ("channel_name", "ops"),
        ("user_id", user),
        ("command", "/whoami"),
        ("text", ""),
        ("response_url", &format!("{base}/respond/{n}")),
        ("trigger_id", &format!("faults.{n}")),
    ])
    .unwrap();
    let ts = chrono::Utc::now().timestamp().to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    (body, ts, signature)
}

/// Sends command `n` (see [`signed_whoami`]) to `replica`; the HTTP status.
async fn whoami(replica: &support::Serve, base: &str, n: usize) -> u16 {
    let (body, ts, signature) = signed_whoami(base, "UFAULTS", n);
    reqwest::Client::new()
        .post(replica.url("/slack/commands"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// How many answers command `n` got.
fn answers(slack: &Slack, n: usize) -> usize {
    let at = format!("respond/{n}");
    slack.calls().iter().filter(|c| c.method == at).count()
}

/// While Postgres is away: both replicas answer `refused` deliveries 503 (Alertmanager
/// sends them again), ack commands 10 and 11 at once, and say they are not ready.
async fn refused_while_away(replicas: &[support::Serve], base: &str, refused: &[String]) {
    for r in replicas {
        for body in refused {
            assert_eq!(
                support::alerts_answer(&r.url(""), body.clone()).await,
                503,
                "intake refused while Postgres is away"
            );
        }
    }
    for (n, r) in replicas.iter().enumerate() {
        assert_eq!(
            whoami(r, base, 10 + n).await,
            200,
            "a command is acked at once"
        );
    }
    for r in replicas {
        support::eventually(
            "not ready while Postgres is away",
            support::WAIT,
            async || r.readyz().await.starts_with("not ready"),
        )
        .await;
    }
}

/// Once Postgres is back: Alertmanager sends again what was answered 5xx, the group whose
/// post was in flight at the cut changes, and commands 20 and 21 arrive.
async fn sent_after_return(replicas: &[support::Serve], base: &str, refused: &[String]) {
    for (n, body) in refused.iter().enumerate() {
        support::deliver_alerts(&replicas[n % 2].url(""), body.clone()).await;
    }
    support::deliver_alerts(
        &replicas[1].url(""),
        delivery("04-grouped-mixed-firing-resolved.json", "DiskFullX0"),
    )
    .await;
    for (n, r) in replicas.iter().enumerate() {
        assert_eq!(whoami(r, base, 20 + n).await, 200);
    }
}

/// Postgres unreachable for [`FAULT_LASTS`] (a proxy the test cuts) with a group's post in
/// flight at the cut: webhooks answer 503 on both replicas meanwhile; once it is back, both
/// are ready again without a restart, what was refused and sent again is posted once, the
/// post in flight stays the group's one message (edited for a later change), and commands
/// are answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_for_30s_refuses_intake_then_both_replicas_deliver_everything_once() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    // One proxy per replica: the one that did not lead is given Postgres back first, so
    // the group whose post was in flight is taken over by a replica that never saw its id.
    let proxies = [
        support::Proxy::start(&support::postgres_addr()).await,
        support::Proxy::start(&support::postgres_addr()).await,
    ];
    let slack = Slack::default();
    let base = fake_slack(slack.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let urls = proxies
        .each_ref()
        .map(|p| support::postgres_schema_url_via(&schema, p.addr));
    let (replicas, leader) =
        two_replicas(dir.path(), urls.each_ref().map(String::as_str), &base).await;
    let follower = 1 - leader;

    support::deliver_alerts(
        &replicas[1].url(""),
        delivery("01-firing-single.json", "HighCPUX0"),
    )
    .await;
    let mut want = BTreeMap::from([("HighCPUX0", headline(FIRING_ONE, "HighCPUX0"))]);
    wait_for_final(&slack, &want, support::WAIT).await;
    assert_eq!(whoami(&replicas[0], &base, 0).await, 200);

    // A post in flight when Postgres goes: Slack takes it, its id cannot be stored.
    slack.hold_posts.send_replace(true);
    support::deliver_alerts(
        &replicas[0].url(""),
        delivery("03-firing-grouped-3.json", "DiskFullX0"),
    )
    .await;
    support::eventually("the post to be in flight", support::WAIT, async || {
        shown(&slack.calls(), "DiskFullX0").posts.len() == 1
    })
    .await;
    proxies.iter().for_each(support::Proxy::cut);
    let back = Instant::now() + FAULT_LASTS;
    slack.hold_posts.send_replace(false);

    let refused = [
        delivery("02-resolved-single.json", "HighCPUX0"),
        delivery("01-firing-single.json", "HighCPUX1"),
    ];
    refused_while_away(&replicas, &base, &refused).await;
    assert!(
        Instant::now() < back,
        "all of it happened while Postgres was away"
    );
    tokio::time::sleep_until(back).await;
    proxies[follower].restore();
    let now_leads = support::the_leader(&replicas, RECOVERY).await;
    assert_eq!(now_leads, follower, "the replica back first leads");
    proxies[leader].restore();

    for r in &replicas {
        support::eventually("ready again, without a restart", RECOVERY, async || {
            r.readyz().await.starts_with("ready")
        })
        .await;
    }
    sent_after_return(&replicas, &base, &refused).await;
    want.insert("HighCPUX0", headline("resolved", "HighCPUX0"));
    want.insert("HighCPUX1", headline(FIRING_ONE, "HighCPUX1"));
    want.insert("DiskFullX0", headline(MIXED, "DiskFullX0"));
    let shown = wait_for_final(&slack, &want, RECOVERY).await;
    assert_one_message_each(&shown, &slack);
    support::eventually(
        "commands after the return answered",
        support::WAIT,
        async || answers(&slack, 20) == 1 && answers(&slack, 21) == 1,
    )
    .await;
    for n in [0, 10, 11, 20, 21] {
        assert!(
            answers(&slack, n) <= 1,
            "command {n} answered at most once: {:#?}",
            slack.calls()
        );
    }
    drop(replicas);
    support::drop_postgres_schema(&schema).await;
}
