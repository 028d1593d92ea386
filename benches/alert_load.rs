//! Alert intake load tool: Alertmanager webhooks over real HTTP (loopback, reqwest) into the
//! real app (`App::build_with`, SQLite store in a temp dir, `opsbot::http::serve`), with a
//! counting `ChatOutbound` in place of a chat platform.
//!
//! Run with `cargo bench --bench alert_load`. Phases, each on a fresh database:
//!  1. throughput: `OPSBOT_ALERT_TOTAL` alerts (default 100,000) in payloads of 100 alerts
//!     (100 groups x 1,000 alerts, one group per payload as Alertmanager sends them) from C
//!     concurrent connections, for each C in `OPSBOT_ALERT_CONCURRENCY` (default "8,16,32").
//!     Every request must answer 200; prints alerts/s and request latency p50/p99/max and
//!     checks the stored count. Target: >= 20,000 alerts/s.
//!  2. storm: 10,000 distinct alerts in 100 groups (4 deliveries of 25 per group, 32
//!     connections) posted as fast as possible, then waits
//!     (polling, with a deadline) until the notifier has caught up; prints posts (<= 100,
//!     one per group), edits and alerts stored (== 10,000).
//!  3. redelivery: the storm's payloads again; the stored count and the posts must not change.
//!  4. diagnostics (`OPSBOT_ALERT_DIAG=1`, default on under `--bench`): where the time goes,
//!     by calling `Store::ingest_alerts` directly (no HTTP, no JSON) and by timing the JSON
//!     parse alone, plus raw SQL variants of the same upsert on the same schema (SQLite only).
//!
//! Without `--bench` (e.g. `cargo test --benches`) everything runs once at a small size.
//!
//! `OPSBOT_ALERT_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test` measures phase 1 and
//! the diagnostics' direct calls on Postgres instead, each app on a fresh schema (left
//! behind; drop `alert_load_*` schemas afterwards). Phases 2-3 are skipped there: the app
//! here runs no election, so on Postgres it never leads and its notifier never runs. The
//! raw SQL variants speak SQLite and are left out.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opsbot::app::{App, Overrides};
use opsbot::config::Config;
use opsbot::domain::{AlertSource, AlertStatus, IncomingAlert};
use opsbot::ports::{ChatOutbound, OutboundError, OutboundMessage, OutboundTarget, Store};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "alert-load-token";
const ALERTS_PER_REQUEST: usize = 100;
const GROUPS: usize = 100;
const TARGET_ALERTS_PER_SEC: f64 = 20_000.0;
const STORM_ALERTS: usize = 10_000;
/// Each storm group arrives in 4 deliveries of 25, so the notifier has something to coalesce.
const STORM_ALERTS_PER_REQUEST: usize = 25;
/// How long the outbound must see no new post or edit before the notifier counts as idle.
const QUIET: Duration = Duration::from_millis(500);
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Counting chat platform
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Counts {
    next_id: u64,
    /// message id -> group key
    by_id: HashMap<String, String>,
    posts: HashMap<String, u64>,
    edits: HashMap<String, u64>,
    /// Latest text per group.
    last_text: HashMap<String, String>,
    total_posts: u64,
    total_edits: u64,
    last_change: Option<Instant>,
}

/// Counts posts and edits per alert group (the group key is read from the message's
/// trailing "Group {key}. /ack ..." line, and edits are mapped back through the message id).
#[derive(Default)]
struct CountingOutbound {
    counts: Mutex<Counts>,
}

fn group_of(text: &str) -> String {
    text.rfind("\nGroup ")
        .map(|i| &text[i + "\nGroup ".len()..])
        .and_then(|rest| rest.rfind(". /ack").map(|j| rest[..j].to_owned()))
        .unwrap_or_else(|| "<unknown>".to_owned())
}

struct Snapshot {
    posts: u64,
    edits: u64,
    groups: usize,
    max_posts_per_group: u64,
    max_edits_per_group: u64,
    last_text: HashMap<String, String>,
    idle_for: Option<Duration>,
}

impl CountingOutbound {
    fn snapshot(&self) -> Snapshot {
        let c = self.counts.lock().unwrap();
        Snapshot {
            posts: c.total_posts,
            edits: c.total_edits,
            groups: c.posts.len(),
            max_posts_per_group: c.posts.values().copied().max().unwrap_or(0),
            max_edits_per_group: c.edits.values().copied().max().unwrap_or(0),
            last_text: c.last_text.clone(),
            idle_for: c.last_change.map(|t| t.elapsed()),
        }
    }
}

#[async_trait::async_trait]
impl ChatOutbound for CountingOutbound {
    async fn send(
        &self,
        _to: &OutboundTarget,
        message: &OutboundMessage,
    ) -> Result<String, OutboundError> {
        let text = &message.text;
        let group = group_of(text);
        let mut c = self.counts.lock().unwrap();
        c.next_id += 1;
        let id = format!("m{}", c.next_id);
        c.by_id.insert(id.clone(), group.clone());
        *c.posts.entry(group.clone()).or_default() += 1;
        c.last_text.insert(group, text.to_owned());
        c.total_posts += 1;
        c.last_change = Some(Instant::now());
        Ok(id)
    }

    async fn edit(
        &self,
        _to: &OutboundTarget,
        message_id: &str,
        message: &OutboundMessage,
    ) -> Result<(), OutboundError> {
        let mut c = self.counts.lock().unwrap();
        let group = c
            .by_id
            .get(message_id)
            .cloned()
            .unwrap_or_else(|| format!("<unknown message {message_id}>"));
        *c.edits.entry(group.clone()).or_default() += 1;
        c.last_text.insert(group, message.text.clone());
        c.total_edits += 1;
        c.last_change = Some(Instant::now());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The app under test
// ---------------------------------------------------------------------------------------

struct Running {
    app: App,
    chat: Arc<CountingOutbound>,
    url: String,
    dir: TempDir,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The schemas this run made, dropped at its end ([`drop_schemas`]): each phase's 100,000
/// alerts would otherwise stay in the shared database.
static SCHEMAS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

async fn drop_schemas(base: &str) {
    use sqlx::Connection as _;
    let Ok(mut conn) = sqlx::PgConnection::connect(base).await else {
        println!("alert_load: could not connect to drop the bench's schemas");
        return;
    };
    let schemas = std::mem::take(&mut *SCHEMAS.lock().unwrap());
    for schema in schemas {
        let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await
        {
            println!("alert_load: could not drop schema {schema}: {e}");
        }
    }
}

/// A new, empty schema on the Postgres at `base` (each run starts from nothing, as with a
/// fresh SQLite file); the URL that pins a store's connections to it.
async fn fresh_postgres_schema(base: &str) -> String {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to OPSBOT_ALERT_POSTGRES_URL");
    let schema = format!("alert_load_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create bench schema");
    SCHEMAS.lock().unwrap().push(schema.clone());
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

async fn start_app() -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("commands")).expect("commands dir");
    let database_url = match std::env::var("OPSBOT_ALERT_POSTGRES_URL") {
        Ok(base) => fresh_postgres_schema(&base).await,
        Err(_) => format!("sqlite://{}", dir.path().join("opsbot.db").display()),
    };
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
database_url = "{database_url}"
[catalog]
dir = "commands"
[alerts]
alertmanager_token = "{TOKEN}"
default_route = {{ platform = "console", channel = "ops" }}
"#
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).expect("write config");
    let config = Config::from_toml(&path, &text, &[]).expect("bench config is valid");
    let chat = Arc::new(CountingOutbound::default());
    let app = App::build_with(
        config,
        Overrides {
            outbound: Some(chat.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("app builds");
    let listener = app.bind().await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(opsbot::http::serve(
        listener,
        app.http_state(),
        shutdown.clone(),
    ));
    Running {
        app,
        chat,
        url: format!("http://{addr}/hooks/alertmanager"),
        dir,
        shutdown,
    }
}

// ---------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------

/// A bijection on u64 (splitmix64's finaliser): distinct inputs give distinct fingerprints.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const ALERTNAMES: [&str; 10] = [
    "HighCPU",
    "DiskFull",
    "HighMemory",
    "PodCrashLooping",
    "TargetDown",
    "HighLatency",
    "ErrorRateHigh",
    "CertificateExpiring",
    "ReplicationLag",
    "QueueBacklog",
];
const TEAMS: [&str; 4] = ["platform", "payments", "search", "storage"];

fn group_labels(group: usize) -> (String, String, String) {
    let alertname = ALERTNAMES[group % ALERTNAMES.len()].to_owned();
    let cluster = format!("prod-eu-{}", group / ALERTNAMES.len());
    let group_key = format!(
        "{{}}/{{severity=~\"warning|critical\"}}:{{alertname=\"{alertname}\", cluster=\"{cluster}\"}}"
    );
    (alertname, cluster, group_key)
}

/// One Alertmanager (version 4) delivery: alerts `first..first + n` of `group`.
fn payload(group: usize, first: usize, n: usize) -> Vec<u8> {
    let (alertname, cluster, group_key) = group_labels(group);
    let team = TEAMS[group % TEAMS.len()];
    let alerts: Vec<Value> = (first..first + n)
        .map(|i| {
            let fp = mix(((group as u64) << 32) | i as u64);
            let severity = if i % 10 == 0 { "critical" } else { "warning" };
            let instance = format!("node-{i:05}.{cluster}.internal:9100");
            json!({
                "status": "firing",
                "labels": {
                    "alertname": alertname,
                    "cluster": cluster,
                    "instance": instance,
                    "job": "node-exporter",
                    "namespace": format!("ns-{}", i % 37),
                    "pod": format!("{}-{:x}", alertname.to_lowercase(), fp & 0xffff_ffff),
                    "service": format!("svc-{}", i % 53),
                    "severity": severity,
                    "team": team,
                },
                "annotations": {
                    "summary": format!("{alertname} on {instance}"),
                    "description": format!(
                        "{alertname} has been firing for more than 5 minutes on {instance} \
                         in cluster {cluster} (value: {}.{}).",
                        i % 100,
                        i % 7
                    ),
                    "runbook_url": format!(
                        "https://runbooks.example.com/{}",
                        alertname.to_lowercase()
                    ),
                },
                "startsAt": "2026-11-23T10:53:56.183166627Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": format!(
                    "http://prometheus-0.{cluster}.internal:9090/graph?g0.expr=ALERTS%7Balertname%3D%22{alertname}%22%7D&g0.tab=1"
                ),
                "fingerprint": format!("{fp:016x}"),
            })
        })
        .collect();
    let body = json!({
        "receiver": "opsbot",
        "status": "firing",
        "alerts": alerts,
        "groupLabels": { "alertname": alertname, "cluster": cluster },
        "commonLabels": { "alertname": alertname, "cluster": cluster, "job": "node-exporter", "team": team },
        "commonAnnotations": {},
        "externalURL": "http://alertmanager-0.example.com:9093",
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
    });
    serde_json::to_vec(&body).expect("payload serializes")
}

/// `total` alerts as payloads of `per_request` alerts, spread over `GROUPS` groups and
/// interleaved so consecutive requests hit different groups.
fn payloads(total: usize, per_request: usize) -> Vec<Vec<u8>> {
    let requests = total.div_ceil(per_request);
    (0..requests)
        .map(|r| {
            let group = r % GROUPS;
            let chunk = r / GROUPS;
            let n = per_request.min(total - r * per_request);
            payload(group, chunk * per_request, n)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Load generation
// ---------------------------------------------------------------------------------------

struct LoadResult {
    alerts: usize,
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.alerts as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1]
    }

    fn print(&self, label: &str) {
        println!(
            "{label}: {} alerts in {} requests, elapsed {:.3} s, {:.0} alerts/s, {:.0} req/s",
            self.alerts,
            self.requests,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.requests as f64 / self.elapsed.as_secs_f64(),
        );
        println!(
            "{label}: request latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, non-2xx/errors {}",
            ms(self.pct(0.50)),
            ms(self.pct(0.99)),
            ms(self.latencies.iter().max().copied().unwrap_or_default()),
            self.failures.len(),
        );
    }

    fn assert_all_ok(&self, label: &str) {
        if !self.failures.is_empty() {
            let shown: Vec<&String> = self.failures.iter().take(5).collect();
            panic!(
                "{label}: {} of {} requests failed (must all be 200); first: {shown:#?}",
                self.failures.len(),
                self.requests
            );
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Posts every body once from `concurrency` connections (each task sends its next request
/// as soon as the previous answer is read).
async fn post_all(url: &str, bodies: &[Vec<u8>], concurrency: usize) -> LoadResult {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .expect("http client");
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(bodies.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let alerts_per_body: Arc<Vec<usize>> = Arc::new(
        bodies
            .iter()
            .map(|b| {
                // Count without a full parse: every alert has exactly one "fingerprint" key.
                b.windows(b"\"fingerprint\"".len())
                    .filter(|w| *w == b"\"fingerprint\"")
                    .count()
            })
            .collect(),
    );
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let url = url.to_owned();
            let bodies = bodies.clone();
            let next = next.clone();
            let counts = alerts_per_body.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut failures = Vec::new();
                let mut alerts = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let t = Instant::now();
                    let res = client
                        .post(&url)
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match res {
                        Ok(resp) => {
                            let status = resp.status();
                            let text = resp.text().await.unwrap_or_default();
                            lat.push(t.elapsed());
                            let accepted = serde_json::from_str::<Value>(&text)
                                .ok()
                                .and_then(|v| v["accepted"].as_u64());
                            if !status.is_success() {
                                failures.push(format!("request {i}: {status}: {text}"));
                            } else if accepted != Some(counts[i] as u64) {
                                failures.push(format!(
                                    "request {i}: accepted {accepted:?}, sent {}",
                                    counts[i]
                                ));
                            } else {
                                alerts += counts[i];
                            }
                        }
                        Err(e) => failures.push(format!("request {i}: {e}")),
                    }
                }
                (lat, failures, alerts)
            })
        })
        .collect();
    let mut result = LoadResult {
        alerts: 0,
        requests: bodies.len(),
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(bodies.len()),
        failures: Vec::new(),
    };
    for t in tasks {
        let (lat, failures, alerts) = t.await.expect("load task");
        result.latencies.extend(lat);
        result.failures.extend(failures);
        result.alerts += alerts;
    }
    result.elapsed = start.elapsed();
    result
}

async fn stored(store: &Arc<dyn Store>, limit: u32) -> usize {
    store
        .active_alerts(limit)
        .await
        .expect("active_alerts")
        .len()
}

/// Waits until every group's latest message shows all `per_group` alerts firing and the
/// outbound has been quiet for `QUIET`. Returns how long that took, or `None` on timeout.
async fn wait_for_notifier(
    chat: &CountingOutbound,
    groups: usize,
    per_group: usize,
) -> Option<Duration> {
    let start = Instant::now();
    let headline = format!("🔥 FIRING {per_group} · resolved 0 ·");
    loop {
        let s = chat.snapshot();
        let caught_up = s.groups == groups
            && s.last_text.len() == groups
            && s.last_text.values().all(|t| t.starts_with(&headline));
        if caught_up && s.idle_for.is_some_and(|d| d >= QUIET) {
            return Some(
                start
                    .elapsed()
                    .saturating_sub(s.idle_for.unwrap_or_default()),
            );
        }
        if start.elapsed() > CATCH_UP_DEADLINE {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------

async fn throughput(total: usize, concurrency: usize) -> bool {
    let bodies = payloads(total, ALERTS_PER_REQUEST);
    let bytes: usize = bodies.iter().map(|b| b.len()).sum();
    let run = start_app().await;
    let label = format!("throughput C={concurrency}");
    println!(
        "{label}: {} requests x {ALERTS_PER_REQUEST} alerts, {} groups, {:.1} KiB per request",
        bodies.len(),
        GROUPS.min(bodies.len()),
        bytes as f64 / bodies.len() as f64 / 1024.0
    );
    let result = post_all(&run.url, &bodies, concurrency).await;
    result.print(&label);
    result.assert_all_ok(&label);
    let n = stored(&run.app.store, (total * 2) as u32).await;
    println!("{label}: alerts stored {n} (expected {total})");
    assert_eq!(n, total, "{label}: alerts lost or duplicated");
    let met = result.rate() >= TARGET_ALERTS_PER_SEC;
    println!(
        "{label}: target >= {TARGET_ALERTS_PER_SEC:.0} alerts/s: {}",
        if met { "MET" } else { "MISSED" }
    );
    let s = run.chat.snapshot();
    println!(
        "{label}: notifier during the run: {} posts, {} edits ({} groups)",
        s.posts, s.edits, s.groups
    );
    met
}

async fn storm_and_redelivery(total: usize) {
    let per_request = STORM_ALERTS_PER_REQUEST.min(total / GROUPS).max(1);
    let bodies = payloads(total, per_request);
    let per_group = total / GROUPS;
    let run = start_app().await;
    println!(
        "storm: {} requests x {per_request} alerts, {GROUPS} groups of {per_group}",
        bodies.len()
    );
    let result = post_all(&run.url, &bodies, 32).await;
    result.print("storm");
    result.assert_all_ok("storm");
    // Every 2xx came after a commit, so the whole storm is readable right away.
    let committed = stored(&run.app.store, 20_000).await;
    println!("storm: alerts stored right after the last 2xx: {committed}");
    let caught_up = wait_for_notifier(&run.chat, GROUPS, per_group).await;
    let s = run.chat.snapshot();
    let n = stored(&run.app.store, 20_000).await;
    match caught_up {
        Some(d) => println!(
            "storm: notifier caught up (last post/edit) {:.0} ms after the last 2xx",
            ms(d)
        ),
        None => println!(
            "storm: notifier did NOT catch up within {} s",
            CATCH_UP_DEADLINE.as_secs()
        ),
    }
    println!(
        "storm: posts {} (must be <= {GROUPS}, max per group {}), edits {} (max per group {}), \
         groups seen {}, alerts stored {n} (must be {total})",
        s.posts, s.max_posts_per_group, s.edits, s.max_edits_per_group, s.groups
    );
    assert!(caught_up.is_some(), "storm: notifier did not catch up");
    assert_eq!(
        committed, total,
        "storm: not all alerts committed before 2xx"
    );
    assert_eq!(n, total, "storm: alerts lost");
    assert!(
        s.posts <= GROUPS as u64 && s.max_posts_per_group == 1,
        "storm: more than one post per group"
    );

    // Redelivery: Alertmanager resends identical payloads (repeat_interval, retries).
    let again = post_all(&run.url, &bodies, 32).await;
    again.print("redelivery");
    again.assert_all_ok("redelivery");
    let n2 = stored(&run.app.store, 20_000).await;
    // Give the notifier the same quiet period to show any (unwanted) re-post.
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    while chat_idle(&run.chat) < QUIET && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s2 = run.chat.snapshot();
    println!(
        "redelivery: alerts stored {n2} (before {n}), posts {} (+{}), edits {} (+{})",
        s2.posts,
        s2.posts - s.posts,
        s2.edits,
        s2.edits - s.edits
    );
    assert_eq!(n2, n, "redelivery changed the stored count");
    assert_eq!(s2.posts, s.posts, "redelivery re-posted group messages");
    let _ = &run.dir;
}

fn chat_idle(chat: &CountingOutbound) -> Duration {
    chat.counts
        .lock()
        .unwrap()
        .last_change
        .map(|t| t.elapsed())
        .unwrap_or(Duration::MAX)
}

// ---------------------------------------------------------------------------------------
// Diagnostics: where does the time go?
// ---------------------------------------------------------------------------------------

/// The same alerts the hook would build from `body` (what `hooks::alertmanager` does after
/// the token check), for driving the store directly.
fn incoming(body: &[u8]) -> Vec<IncomingAlert> {
    let v: Value = serde_json::from_slice(body).expect("payload parses");
    let group_key = v["groupKey"].as_str().unwrap().to_owned();
    let map = |m: &Value| -> BTreeMap<String, String> {
        m.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    };
    let mut alerts: Vec<IncomingAlert> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| IncomingAlert {
            source: AlertSource::Alertmanager,
            fingerprint: format!("am:{}", a["fingerprint"].as_str().unwrap()),
            group_key: group_key.clone(),
            status: AlertStatus::Firing,
            labels: map(&a["labels"]),
            annotations: map(&a["annotations"]),
            starts_at: a["startsAt"].as_str().unwrap().parse().unwrap(),
            ends_at: None,
            generator_url: a["generatorURL"].as_str().map(str::to_owned),
        })
        .collect();
    alerts.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    alerts
}

/// Calls `Store::ingest_alerts` from `concurrency` tasks: the store's share of the cost.
async fn store_only(batches: &Arc<Vec<Vec<IncomingAlert>>>, concurrency: usize) -> (f64, f64, f64) {
    let run = start_app().await;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let store = run.app.store.clone();
            let batches = batches.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = batches.get(i) else { break };
                    let t = Instant::now();
                    store
                        .ingest_alerts(b, chrono::Utc::now())
                        .await
                        .expect("ingest");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    let alerts: usize = batches.iter().map(Vec::len).sum();
    lat.sort();
    (
        alerts as f64 / elapsed.as_secs_f64(),
        ms(lat[lat.len() / 2]),
        ms(lat[lat.len() - 1]),
    )
}

/// One way of writing the same upserts, for [`sql_variants`].
#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    /// Pool size (the store uses 4).
    conns: u32,
    /// Concurrent writer tasks.
    tasks: usize,
    /// `BEGIN IMMEDIATE` instead of a deferred `BEGIN`.
    immediate: bool,
    /// One multi-row `INSERT .. VALUES (..),(..) ON CONFLICT ..` per 100 alerts instead of
    /// one statement per alert.
    multi_row: bool,
    /// `synchronous = OFF` instead of `NORMAL`.
    sync_off: bool,
    /// Requests (100-alert batches) committed per transaction: > 1 is group commit.
    per_tx: usize,
}

const UPSERT_COLS: &str = "INSERT INTO alerts (fingerprint, source, group_key, status, labels, \
    annotations, starts_at, ends_at, generator_url, first_seen, last_seen, resolved_at) VALUES ";
const UPSERT_TAIL: &str = " ON CONFLICT (fingerprint) DO UPDATE SET \
    group_key = excluded.group_key, labels = excluded.labels, annotations = excluded.annotations, \
    ends_at = excluded.ends_at, generator_url = excluded.generator_url, last_seen = excluded.last_seen, \
    acked_by = CASE WHEN alerts.status = 'resolved' AND excluded.status = 'firing' THEN NULL ELSE alerts.acked_by END, \
    acked_at = CASE WHEN alerts.status = 'resolved' AND excluded.status = 'firing' THEN NULL ELSE alerts.acked_at END, \
    resolved_at = CASE WHEN excluded.status = 'resolved' THEN COALESCE(alerts.resolved_at, excluded.last_seen) END, \
    starts_at = excluded.starts_at, status = excluded.status";

/// `(..10 params..)` tuples for `rows` rows.
fn values_sql(rows: usize) -> String {
    let mut sql = String::from(UPSERT_COLS);
    for j in 0..rows {
        let p = j * 10;
        if j > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${},${},${},${},${},${},${},${},${},${},${},CASE WHEN ${} = 'resolved' THEN ${} END)",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7,
            p + 8,
            p + 9,
            p + 10,
            p + 10,
            p + 4,
            p + 10
        ));
    }
    sql.push_str(UPSERT_TAIL);
    sql
}

fn bind_alert<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    a: &'q IncomingAlert,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    q.bind(&a.fingerprint)
        .bind(a.source.as_str())
        .bind(&a.group_key)
        .bind(a.status.as_str())
        .bind(serde_json::to_string(&a.labels).unwrap())
        .bind(serde_json::to_string(&a.annotations).unwrap())
        .bind(a.starts_at.timestamp_micros())
        .bind(a.ends_at.map(|t| t.timestamp_micros()))
        .bind(&a.generator_url)
        .bind(now)
}

/// Runs one variant on a fresh database with the alerts schema; returns alerts/s.
async fn run_variant(
    dir: &std::path::Path,
    v: Variant,
    batches: &Arc<Vec<Vec<IncomingAlert>>>,
) -> (f64, Duration) {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use std::str::FromStr;

    let db = dir.join(format!("{}.db", v.name.replace(' ', "_")));
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if v.sync_off {
            SqliteSynchronous::Off
        } else {
            SqliteSynchronous::Normal
        })
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(v.conns)
        .connect_with(options)
        .await
        .unwrap();
    let schema = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite/0003_alerts.sql"),
    )
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
        .execute(&pool)
        .await
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..v.tasks)
        .map(|_| {
            let pool = pool.clone();
            let batches = batches.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let one_row = values_sql(1);
                let mut worst = Duration::ZERO;
                loop {
                    let i = next.fetch_add(v.per_tx, Ordering::Relaxed);
                    if i >= batches.len() {
                        break;
                    }
                    let group = &batches[i..(i + v.per_tx).min(batches.len())];
                    let now = chrono::Utc::now().timestamp_micros();
                    let t = Instant::now();
                    let mut tx = if v.immediate {
                        pool.begin_with("BEGIN IMMEDIATE").await.unwrap()
                    } else {
                        pool.begin().await.unwrap()
                    };
                    for b in group {
                        if v.multi_row {
                            let mut q = sqlx::query(sqlx::AssertSqlSafe(values_sql(b.len())));
                            for a in b {
                                q = bind_alert(q, a, now);
                            }
                            q.execute(&mut *tx)
                                .await
                                .unwrap_or_else(|e| panic!("{}: {e}", v.name));
                        } else {
                            for a in b {
                                bind_alert(
                                    sqlx::query(sqlx::AssertSqlSafe(one_row.clone())),
                                    a,
                                    now,
                                )
                                .execute(&mut *tx)
                                .await
                                .unwrap_or_else(|e| panic!("{}: {e}", v.name));
                            }
                        }
                    }
                    tx.commit().await.unwrap();
                    worst = worst.max(t.elapsed());
                }
                worst
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for t in tasks {
        worst = worst.max(t.await.expect("variant task"));
    }
    let elapsed = start.elapsed();
    let alerts: usize = batches.iter().map(Vec::len).sum();
    pool.close().await;
    (alerts as f64 / elapsed.as_secs_f64(), worst)
}

/// Raw SQL variants of the ingest upsert on the same schema (pools opened the way
/// `SqliteStore::open` opens them), to price each design choice.
async fn sql_variants(batches: &Arc<Vec<Vec<IncomingAlert>>>) {
    let base = Variant {
        name: "as today: per-row, deferred, 4 conns, 16 tasks",
        conns: 4,
        tasks: 16,
        immediate: false,
        multi_row: false,
        sync_off: false,
        per_tx: 1,
    };
    let variants = [
        base,
        Variant {
            name: "per-row, BEGIN IMMEDIATE",
            immediate: true,
            ..base
        },
        Variant {
            name: "per-row, synchronous=OFF",
            sync_off: true,
            ..base
        },
        Variant {
            name: "multi-row, 4 conns",
            multi_row: true,
            ..base
        },
        Variant {
            name: "serial (1 task, 1 conn), per-row",
            conns: 1,
            tasks: 1,
            ..base
        },
        Variant {
            name: "serial (1 task, 1 conn), multi-row",
            multi_row: true,
            conns: 1,
            tasks: 1,
            ..base
        },
        Variant {
            name: "serial (1 task, 1 conn), multi-row, 8 requests per tx",
            multi_row: true,
            conns: 1,
            tasks: 1,
            per_tx: 8,
            ..base
        },
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    for v in variants {
        let (rate, worst) = run_variant(dir.path(), v, batches).await;
        println!(
            "diag: raw SQL [{}]: {rate:.0} alerts/s, slowest transaction {:.1} ms (incl. waiting for the pool and the write lock)",
            v.name,
            ms(worst)
        );
    }
}

/// Calls `AlertService::ingest` (store + notifier signals, no HTTP, no JSON) from
/// `concurrency` tasks; returns alerts/s.
async fn service_only(batches: &Arc<Vec<Vec<IncomingAlert>>>, concurrency: usize) -> f64 {
    let run = start_app().await;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let alerts = run.app.alerts.clone();
            let batches = batches.clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = batches.get(i) else { break };
                    alerts.ingest(b.clone()).await.expect("ingest");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let alerts: usize = batches.iter().map(Vec::len).sum();
    alerts as f64 / start.elapsed().as_secs_f64()
}

async fn diagnostics(total: usize) {
    let bodies = payloads(total, ALERTS_PER_REQUEST);
    // JSON parse cost alone (what the handler does before touching the store).
    let start = Instant::now();
    let mut n = 0;
    for b in &bodies {
        let v: Value = serde_json::from_slice(b).expect("parse");
        n += v["alerts"].as_array().map_or(0, Vec::len);
    }
    let parse = start.elapsed();
    println!(
        "diag: JSON parse of {n} alerts ({} requests) on one core: {:.0} ms ({:.0} alerts/s)",
        bodies.len(),
        ms(parse),
        n as f64 / parse.as_secs_f64()
    );
    let batches: Arc<Vec<Vec<IncomingAlert>>> =
        Arc::new(bodies.iter().map(|b| incoming(b)).collect());
    // Label/annotation serialization, done per alert inside the transaction.
    let start = Instant::now();
    let mut len = 0;
    for b in batches.iter() {
        for a in b {
            len += serde_json::to_string(&a.labels).unwrap().len();
            len += serde_json::to_string(&a.annotations).unwrap().len();
        }
    }
    let ser = start.elapsed();
    println!(
        "diag: labels+annotations to JSON for {n} alerts: {:.0} ms ({len} bytes)",
        ms(ser)
    );
    for c in [1, 16] {
        let (rate, p50, max) = store_only(&batches, c).await;
        println!(
            "diag: Store::ingest_alerts direct (no HTTP/JSON/notifier), C={c}: {rate:.0} alerts/s, per 100-alert call p50 {p50:.2} ms, max {max:.1} ms"
        );
    }
    let rate = service_only(&batches, 16).await;
    println!(
        "diag: AlertService::ingest direct (store + notifier, no HTTP/JSON), C=16: {rate:.0} alerts/s"
    );
    if std::env::var("OPSBOT_ALERT_POSTGRES_URL").is_err() {
        sql_variants(&batches).await;
    }
}

// ---------------------------------------------------------------------------------------

/// `/proc/loadavg`'s 1/5/15-minute averages: other work on the machine skews the numbers.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let total = env_or("OPSBOT_ALERT_TOTAL", if bench { 100_000 } else { 2_000 });
    let storm = if bench { STORM_ALERTS } else { 1_000 };
    let concurrency: Vec<usize> = std::env::var("OPSBOT_ALERT_CONCURRENCY")
        .unwrap_or_else(|_| if bench { "8,16,32" } else { "8" }.into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let diag = env_or("OPSBOT_ALERT_DIAG", u8::from(bench)) == 1;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let started = Instant::now();
        println!(
            "alert_load: {} CPUs shared by server and load generator (one tokio runtime); load average before: {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            loadavg()
        );
        if !bench {
            println!("alert_load: quick run without --bench (small sizes): not a measurement");
        }
        let mut met = Vec::new();
        for &c in &concurrency {
            met.push((c, throughput(total, c).await));
        }
        if std::env::var("OPSBOT_ALERT_POSTGRES_URL").is_ok() {
            // The app here never takes part in an election, so on Postgres it never leads
            // and its notifier never runs: the storm's checks could only fail.
            println!("storm: skipped on Postgres (the bench's app does not lead, so no notifier)");
        } else {
            storm_and_redelivery(storm).await;
        }
        if diag {
            diagnostics(total.min(50_000)).await;
        }
        if let Ok(base) = std::env::var("OPSBOT_ALERT_POSTGRES_URL") {
            drop_schemas(&base).await;
        }
        println!(
            "summary: throughput target >= {TARGET_ALERTS_PER_SEC:.0} alerts/s: {}",
            met.iter()
                .map(|(c, m)| format!("C={c} {}", if *m { "MET" } else { "MISSED" }))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "alert_load: total runtime {:.1} s; load average at the end: {}",
            started.elapsed().as_secs_f64(),
            loadavg()
        );
    });
}
