//! Escalation timing (issue 15), in two parts.
//!
//! **Queries**: the sweeper's per-second escalation queries (steps due, queued pages due,
//! stopped escalations' pages to close) with 10,000 escalations under way across 100
//! policies, due over the next hour, each second's due steps taken as the sweeper would
//! (about three a second), on SQLite and on Postgres. Target: p99 < 20 ms.
//!
//! **End to end**: the app itself (`App::build_with`, its HTTP intake, alert delivery,
//! outbox deliverer and sweeper, on SQLite, the real clock) with `ESC_ALERTS` (10,000) firing
//! critical alerts in `ESC_GROUPS` (1,000) groups, delivered to `/hooks/alertmanager` at
//! `ESC_GROUP_RATE` (100) groups/s, routed by a `team` label to one of 100 policies
//! [person at 0m, again at `ESC_SECOND_STEP` (60) s]. Measured for each group's second step:
//! its due time (its escalation's start + the delay) → its message reaching the chat (a fake
//! that notes the wall-clock time of each post). Target: every step within 2 s (p99 and max).
//!
//! `cargo bench --bench escalation`. Knobs: those above and `OPSBOT_BENCH_POSTGRES_URL`
//! (the server, default `postgres://postgres@127.0.0.1:5432`; a database is created for the
//! run and dropped after it; unreachable: SQLite only). Without `--bench`
//! (`cargo test --benches`): 100 alerts in 10 groups, a 3 s second step. Exits non-zero if a
//! step never arrived or arrived twice; a latency miss only prints MISSED.

#[path = "support/bench_db.rs"]
mod bench_db;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use bench_db::{drop_database, fresh_database, knob};
use opsbot::app::{App, Overrides};
use opsbot::config::Config;
use opsbot::domain::EscalationSubject;
use opsbot::ports::{ChatOutbound, OutboundMessage, OutboundTarget, Sent};

const QUERY_P99: Duration = Duration::from_millis(20);
const STEP_WITHIN: Duration = Duration::from_secs(2);
const POLICIES: usize = 100;
const TOKEN: &str = "am-token-abc123";

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ok = rt.block_on(async {
        let queries = if bench { 10_000 } else { 1_000 };
        time_queries_on_both(queries).await;
        let e2e = EndToEnd {
            alerts: knob("ESC_ALERTS", if bench { 10_000 } else { 100 }),
            groups: knob("ESC_GROUPS", if bench { 1_000 } else { 10 }),
            group_rate: knob("ESC_GROUP_RATE", 100.0),
            second: Duration::from_secs(knob("ESC_SECOND_STEP", if bench { 60 } else { 3 })),
        };
        e2e.run().await
    });
    if !ok {
        std::process::exit(1);
    }
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    let n = sorted.len();
    if n == 0 {
        return Duration::ZERO;
    }
    sorted[((n as f64 * p).ceil() as usize).clamp(1, n) - 1]
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "MISSED" }
}

async fn time_queries_on_both(escalations: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("queries.db").display());
    time_queries("SQLite", &url, escalations).await;
    let server: String = knob(
        "OPSBOT_BENCH_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432".to_owned(),
    );
    let reachable = tokio::net::TcpStream::connect(
        server
            .rsplit('@')
            .next()
            .unwrap_or("127.0.0.1:5432")
            .trim_start_matches("postgres://"),
    )
    .await
    .is_ok();
    if !reachable {
        println!("Postgres at {server} is not reachable: queries timed on SQLite only");
        return;
    }
    let name = format!("escalation_bench_{}", uuid::Uuid::new_v4().simple());
    let url = fresh_database(&server, &name).await;
    time_queries("Postgres", &url, escalations).await;
    drop_database(&server, &name).await;
}

/// One tick's queries, timed over 300 simulated seconds.
async fn time_queries(backend: &str, url: &str, escalations: usize) {
    let url = secrecy::SecretString::from(url.to_owned());
    let store = opsbot::store::connect(&url, 8, opsbot::store::Access::Exclusive)
        .await
        .expect("open the store");
    let now = Utc::now();
    for i in 0..escalations {
        let subject = EscalationSubject::AlertGroup(format!("group-{i}"));
        let due = now + chrono::Duration::seconds(i as i64 % 3600 + 1);
        let policy = format!("policy-{}", i % POLICIES);
        (store.start_escalation(&subject, &policy, now, due))
            .await
            .expect("start");
    }
    let mut times = Vec::new();
    for second in 0..300 {
        let at = now + chrono::Duration::seconds(second);
        let t = Instant::now();
        let due = store.due_escalations(at, 500).await.expect("due");
        store.due_pages(at, 100).await.expect("pages due");
        store.pages_to_close(100).await.expect("pages to close");
        times.push(t.elapsed());
        // As the sweeper would: each due step taken, the next an hour on.
        for e in due {
            let next = Some(at + chrono::Duration::hours(1));
            (store.claim_escalation_step(e.id, e.next_step, next, &[], &[], at))
                .await
                .expect("claim");
        }
    }
    times.sort();
    let p99 = pct(&times, 0.99);
    println!(
        "queries, {backend}: {escalations} escalations under way; one tick's queries p50 {:?}, p99 {p99:?}, max {:?}: {} (target p99 < {QUERY_P99:?})",
        pct(&times, 0.50),
        times[times.len() - 1],
        verdict(p99 < QUERY_P99),
    );
}

/// The chat: notes the wall-clock time each group's second step reached it.
#[derive(Default)]
struct FakeChat {
    second_steps: Mutex<HashMap<String, Vec<DateTime<Utc>>>>,
}

#[async_trait]
impl ChatOutbound for FakeChat {
    async fn send(&self, _: &OutboundTarget, message: &OutboundMessage) -> Sent {
        let at = Utc::now();
        // "🚨 Escalation 2/2 (p7): 10 alerts of Load17 firing, …" (its group's alert name).
        if message.text.starts_with("🚨 Escalation 2/2")
            && let Some(group) = (message.text.split_whitespace()).find(|w| w.starts_with("Load"))
        {
            let mut seen = self.second_steps.lock().unwrap();
            seen.entry(group.to_owned()).or_default().push(at);
        }
        Ok(format!("m-{}", message.text.len()))
    }

    async fn edit(&self, _: &OutboundTarget, _: &str, _: &OutboundMessage) -> Sent<()> {
        Ok(())
    }
}

struct EndToEnd {
    alerts: usize,
    groups: usize,
    group_rate: f64,
    second: Duration,
}

impl EndToEnd {
    fn config(&self, dir: &std::path::Path) -> String {
        let mut c = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\ndatabase_url = \"sqlite://{}\"\n\
             [catalog]\ndir = \"commands\"\n\
             [[people]]\nname = \"alice\"\nroles = [\"sre\"]\nidentities = [\"console:alice\"]\n\
             [alerts]\nalertmanager_token = \"{TOKEN}\"\n\
             default_route = {{ platform = \"console\", channel = \"ops\" }}\n",
            dir.join("bench.db").display()
        );
        for p in 0..POLICIES {
            c.push_str(&format!(
                "[[alerts.routes]]\nmatchers = [\"team=t{p}\"]\nplatform = \"console\"\n\
                 channel = \"ops-{p}\"\nescalation = \"p{p}\"\n"
            ));
        }
        for p in 0..POLICIES {
            c.push_str(&format!(
                "[[escalation.policies]]\nname = \"p{p}\"\nsteps = [\
                 {{ after = \"0m\", notify = \"person:alice\" }}, \
                 {{ after = \"{}s\", notify = \"person:alice\" }}]\n",
                self.second.as_secs()
            ));
        }
        c
    }

    /// Alertmanager's webhook for group `g`: its alerts, all firing and critical.
    fn payload(&self, g: usize) -> String {
        let per = (self.alerts / self.groups).max(1);
        let alerts: Vec<serde_json::Value> = (0..per)
            .map(|k| {
                serde_json::json!({
                    "status": "firing",
                    "labels": { "alertname": format!("Load{g}"), "instance": format!("i{k}"),
                                "severity": "critical", "team": format!("t{}", g % POLICIES) },
                    "annotations": {},
                    "startsAt": Utc::now().to_rfc3339(),
                    "endsAt": "0001-01-01T00:00:00Z",
                    "fingerprint": format!("{g:08x}{k:08x}")
                })
            })
            .collect();
        serde_json::json!({
            "receiver": "opsbot", "status": "firing", "alerts": alerts,
            "groupLabels": { "alertname": format!("Load{g}") }, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager.example:9093",
            "version": "4", "groupKey": format!("{{}}:{{alertname=\"Load{g}\"}}"),
            "truncatedAlerts": 0
        })
        .to_string()
    }

    async fn run(&self) -> bool {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("commands")).expect("commands dir");
        let text = self.config(dir.path());
        let path = dir.path().join("config.toml");
        let config = Config::from_toml(&path, &text, &[]).expect("bench config");
        let chat = Arc::new(FakeChat::default());
        let overrides = Overrides {
            outbound: Some(chat.clone()),
            ..Overrides::default()
        };
        let app = App::build_with(config, overrides).await.expect("app");
        let shutdown = CancellationToken::new();
        let listener = app.bind().await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(opsbot::http::serve(
            listener,
            app.http_state(),
            shutdown.clone(),
        ));
        app.start_election(&shutdown);
        app.spawn_outbox(&shutdown);
        tokio::spawn(app.sweeper().run(app.liveness.clone(), shutdown.clone()));

        let t0 = Instant::now();
        self.deliver(&base, t0).await;
        let intake = t0.elapsed();
        let ok = self.wait_and_report(&app, &chat, intake).await;
        shutdown.cancel();
        ok
    }

    /// Posts each group's webhook at its time (open loop, `group_rate` a second).
    async fn deliver(&self, base: &str, t0: Instant) {
        let client = reqwest::Client::new();
        let url = format!("{base}/hooks/alertmanager");
        let mut posts = tokio::task::JoinSet::new();
        for g in 0..self.groups {
            let at = t0 + Duration::from_secs_f64(g as f64 / self.group_rate);
            tokio::time::sleep_until(at.into()).await;
            let (client, url, body) = (client.clone(), url.clone(), self.payload(g));
            posts.spawn(async move {
                let r = client.post(url).bearer_auth(TOKEN).body(body).send().await;
                r.map(|r| r.status().is_success()).unwrap_or(false)
            });
        }
        let mut refused = 0;
        while let Some(ok) = posts.join_next().await {
            refused += usize::from(!ok.unwrap_or(false));
        }
        assert_eq!(refused, 0, "every webhook is stored");
    }

    async fn wait_and_report(&self, app: &App, chat: &FakeChat, intake: Duration) -> bool {
        let deadline = Instant::now() + self.second + Duration::from_secs(120);
        while chat.second_steps.lock().unwrap().len() < self.groups && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let seen = chat.second_steps.lock().unwrap().clone();
        let mut late = Vec::new();
        let mut twice = 0;
        for g in 0..self.groups {
            let key = format!("{{}}:{{alertname=\"Load{g}\"}}");
            let subject = EscalationSubject::AlertGroup(key);
            let Some(e) = app.store.active_escalation(&subject).await.expect("read") else {
                continue;
            };
            let Some(at) = seen.get(&format!("Load{g}")) else {
                continue;
            };
            twice += usize::from(at.len() > 1);
            let due = e.started_at + chrono::Duration::from_std(self.second).unwrap_or_default();
            late.push((at[0] - due).to_std().unwrap_or_default());
        }
        late.sort();
        let (p99, max) = (pct(&late, 0.99), late.last().copied().unwrap_or_default());
        println!(
            "end to end, SQLite: {} firing alerts in {} groups ({POLICIES} policies) taken in over {intake:.1?}; \
             second step due -> posted: p50 {:?}, p90 {:?}, p99 {p99:?}, max {max:?} for {} of {} groups, {twice} posted twice: {} (target every step within {STEP_WITHIN:?})",
            self.alerts,
            self.groups,
            pct(&late, 0.50),
            pct(&late, 0.90),
            late.len(),
            self.groups,
            verdict(max < STEP_WITHIN),
        );
        late.len() == self.groups && twice == 0
    }
}
