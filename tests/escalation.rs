//! Escalation policies end to end, on a fake clock: a critical alert routed to a policy
//! [primary at 0m, secondary at 5m, page at 15m] pings the primary on Slack at once, the
//! secondary after 5 minutes and pages after 15; `/ack` acknowledges the page and stops
//! the steps, and so do a silence and a resolution. The state is in the store: a restarted
//! app continues from the stored step, and on Postgres two replicas sweeping at once take
//! each step once.

#[path = "support/slack.rs"]
mod slack_support;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use opsbot::domain::{AlertId, EscalationSubject};
use opsbot::ports::{FakeClock, OutboundError, Page, PageAction, Pager};
use support::{Outbound, RecordingOutbound, TestApp, TestAppBuilder, person};

const GROUP: &str = "{}:{alertname=\"DiskFull\"}";

const POLICY: &str = r#"
[builtins]
alerts_roles = ["sre"]
responder_roles = ["sre"]

[[oncall.schedules]]
name = "sre"
time_zone = "Europe/Berlin"
[[oncall.schedules.layers]]
name = "primary"
people = ["alice", "bob"]
shift = "weekly"
handoff = "09:00"
start = "2026-11-23"
[[oncall.schedules.layers]]
name = "secondary"
people = ["bob", "alice"]
shift = "weekly"
handoff = "09:00"
start = "2026-11-23"

[[escalation.policies]]
name = "critical"
steps = [
  { after = "0m", notify = "schedule:sre" },
  { after = "5m", notify = "schedule:sre/secondary" },
  { after = "15m", notify = "page:pagerduty-sre" },
]
[[paging.services]]
name = "pagerduty-sre"
kind = "pagerduty"
routing_key = "R0123456789ABCDEF0123456789ABCDE"
"#;

/// Critical groups go to `channel` on `platform` and escalate; the rest only go there.
fn routes(platform: &str, channel: &str) -> String {
    format!(
        "[alerts]\nalertmanager_token = \"am-token-abc123\"\n\
         default_route = {{ platform = \"{platform}\", channel = \"{channel}\" }}\n\
         [[alerts.routes]]\nmatchers = [\"severity=critical\"]\nplatform = \"{platform}\"\n\
         channel = \"{channel}\"\nescalation = \"critical\"\n"
    )
}

fn people(slack: bool) -> String {
    let ids = |console: &'static str, slack_id: &'static str| -> Vec<&'static str> {
        if slack {
            vec![console, slack_id]
        } else {
            vec![console]
        }
    };
    [
        person("alice", &["sre"], &ids("console:alice", "slack:UALICE01")),
        person("bob", &["sre"], &ids("console:bob", "slack:UBOB01")),
    ]
    .concat()
}

/// Monday 23 November 2026, 12:00 in Berlin: alice's first week as primary, bob secondary.
fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T11:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn alert(status: &str) -> String {
    serde_json::json!({
        "receiver": "opsbot",
        "status": status,
        "alerts": [{
            "status": status,
            "labels": { "alertname": "DiskFull", "instance": "db-1", "severity": "critical" },
            "annotations": { "summary": "disk full" },
            "startsAt": "2026-11-23T10:59:00Z",
            "endsAt": if status == "resolved" { "2026-11-23T12:00:00Z" } else { "0001-01-01T00:00:00Z" },
            "fingerprint": "0123456789abcdef"
        }],
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": GROUP,
        "truncatedAlerts": 0
    })
    .to_string()
}

/// A paging service that records each page: (service, action, dedup key).
#[derive(Default)]
struct FakePager(Mutex<Vec<(String, PageAction, String)>>);

#[async_trait]
impl Pager for FakePager {
    async fn page(
        &self,
        service: &str,
        action: PageAction,
        page: &Page,
    ) -> Result<(), OutboundError> {
        let mut pages = self.0.lock().unwrap();
        pages.push((service.to_owned(), action, page.dedup_key.clone()));
        Ok(())
    }
}

impl FakePager {
    fn pages(&self) -> Vec<(String, PageAction, String)> {
        self.0.lock().unwrap().clone()
    }
}

fn subject() -> EscalationSubject {
    EscalationSubject::AlertGroup(GROUP.into())
}

/// Waits until the group's escalation is under way (`true`) or stopped (`false`).
async fn escalating(app: &TestApp, yes: bool) {
    let what = if yes {
        "the escalation to start"
    } else {
        "the escalation to stop"
    };
    support::eventually(what, support::WAIT, async || {
        let active = app.store.active_escalation(&subject()).await.unwrap();
        active.is_some() == yes
    })
    .await;
}

async fn fingerprint(app: &TestApp) -> String {
    let a = app
        .store
        .alert(AlertId(1))
        .await
        .unwrap()
        .expect("alert #1");
    a.incoming.fingerprint
}

/// The escalation posts recorded, in order.
fn steps(m: &[Outbound]) -> Vec<String> {
    m.iter()
        .filter_map(|x| match x {
            Outbound::Post { text, .. } if text.starts_with("🚨 Escalation") => {
                Some(text.clone())
            }
            _ => None,
        })
        .collect()
}

/// A fake clock at [`start`], a fake pager and a recording chat.
fn fakes() -> (Arc<FakeClock>, Arc<FakePager>, Arc<RecordingOutbound>) {
    (
        Arc::new(FakeClock::new(start())),
        Arc::new(FakePager::default()),
        Arc::new(RecordingOutbound::default()),
    )
}

/// Fires the alert, waits for its escalation to start and sweeps: its first step is posted.
async fn first_step(app: &TestApp, chat: &RecordingOutbound) -> Vec<Outbound> {
    support::deliver_alerts(&app.url(""), alert("firing")).await;
    escalating(app, true).await;
    app.router.sweep().await.unwrap();
    chat.wait_until("the first step", |m| steps(m).len() == 1)
        .await
}

fn builder(
    clock: &Arc<FakeClock>,
    pager: &Arc<FakePager>,
    chat: &Arc<RecordingOutbound>,
) -> TestAppBuilder {
    TestApp::builder()
        .config(&format!(
            "{}{POLICY}{}",
            people(false),
            routes("console", "ops")
        ))
        .clock(clock.clone())
        .pager(pager.clone())
        .outbound(chat.clone())
}

/// An app on `config` alone, with the fakes.
async fn with_config(
    config: &str,
    clock: &Arc<FakeClock>,
    pager: &Arc<FakePager>,
    chat: &Arc<RecordingOutbound>,
) -> TestApp {
    TestApp::builder()
        .config(config)
        .clock(clock.clone())
        .pager(pager.clone())
        .outbound(chat.clone())
        .spawn()
        .await
}

/// A new app on `first`'s store, which then goes away (one process alone may open the
/// SQLite file): nothing of `first`'s memory carries over.
async fn successor(
    first: TestApp,
    clock: &Arc<FakeClock>,
    pager: &Arc<FakePager>,
    chat: &Arc<RecordingOutbound>,
) -> TestApp {
    let second = builder(clock, pager, chat)
        .store(first.store.clone())
        .spawn()
        .await;
    drop(first);
    second
}

#[tokio::test]
async fn a_critical_alert_pings_the_primary_then_the_secondary_then_pages_until_acked() {
    let clock = Arc::new(FakeClock::new(start()));
    let seen = slack_support::Seen::default();
    let base = slack_support::fake_web_api(None, seen.clone()).await;
    let pager = Arc::new(FakePager::default());
    let config = format!(
        "{}{POLICY}\n[slack]\nsigning_secret = \"slack-signing-secret-0123\"\n\
         bot_token = \"xoxb-test-token\"\napi_url = \"{base}/api/\"\n{}",
        people(true),
        routes("slack", "COPS"),
    );
    let app = TestApp::builder()
        .config(&config)
        .clock(clock.clone())
        .pager(pager.clone())
        .spawn()
        .await;
    let posts = |l: &[(String, serde_json::Value)]| -> Vec<String> {
        l.iter()
            .filter(|(p, b)| {
                p == "chat.postMessage" && b["text"].as_str().unwrap().starts_with("🚨")
            })
            .map(|(_, b)| b["text"].as_str().unwrap().to_owned())
            .collect()
    };
    support::deliver_alerts(&app.url(""), alert("firing")).await;
    escalating(&app, true).await;
    app.router.sweep().await.unwrap();
    let log = slack_support::wait_for(&seen, "the first step", |l| posts(l).len() == 1).await;
    let first = &posts(&log)[0];
    assert!(
        first.starts_with("🚨 Escalation 1/3 (critical): alert #1 DiskFull [critical]"),
        "{first}"
    );
    assert!(first.ends_with(" <@UALICE01>"), "{first}");
    assert_eq!(first.matches("<@").count(), 1, "only the primary: {first}");

    clock.advance(Duration::from_secs(4 * 60));
    app.router.sweep().await.unwrap();
    clock.advance(Duration::from_secs(60));
    app.router.sweep().await.unwrap();
    let log = slack_support::wait_for(&seen, "the second step", |l| posts(l).len() == 2).await;
    let second = &posts(&log)[1];
    assert!(second.starts_with("🚨 Escalation 2/3"), "{second}");
    assert!(second.ends_with(" <@UBOB01>"), "{second}");
    assert!(pager.pages().is_empty(), "no page before 15m");

    clock.advance(Duration::from_secs(10 * 60));
    app.router.sweep().await.unwrap();
    // The third step's message goes out through the outbox, paced behind the second one on
    // the channel: wait for it, or the count after the ack below races its delivery.
    slack_support::wait_for(&seen, "the third step", |l| posts(l).len() == 3).await;
    let fp = fingerprint(&app).await;
    assert_eq!(
        pager.pages(),
        [("pagerduty-sre".to_owned(), PageAction::Trigger, fp.clone())]
    );

    let ok = app.reply("alice", "/ack 1").await;
    assert!(ok.contains("acknowledged by alice"), "{ok}");
    escalating(&app, false).await;
    app.router.sweep().await.unwrap();
    assert_eq!(
        pager.pages()[1..],
        [("pagerduty-sre".to_owned(), PageAction::Acknowledge, fp)]
    );
    clock.advance(Duration::from_secs(3600));
    app.router.sweep().await.unwrap();
    app.router.sweep().await.unwrap();
    app.wait_idle().await;
    assert_eq!(
        posts(&seen.lock().unwrap()).len(),
        3,
        "no step after the ack"
    );
    assert_eq!(pager.pages().len(), 2, "acknowledged once");

    let audit = app.store.recent_audit(20).await.unwrap();
    let escalated: Vec<&str> = (audit.iter().rev())
        .filter(|r| r.entry.command == "escalate" && r.entry.actor == "opsbot:escalation")
        .map(|r| r.entry.detail.as_str())
        .collect();
    assert_eq!(
        escalated,
        [
            "escalation through critical step 1/3: notified schedule:sre",
            "escalation through critical step 2/3: notified schedule:sre/secondary",
            "escalation through critical step 3/3: notified page:pagerduty-sre",
            "escalation through critical stopped after 3 step(s): acknowledged",
        ]
    );
}

#[tokio::test]
async fn a_silence_stops_the_escalation_before_it_pages() {
    let (clock, pager, chat) = fakes();
    let app = builder(&clock, &pager, &chat).spawn().await;
    let m = first_step(&app, &chat).await;
    assert!(steps(&m)[0].ends_with(" @alice"), "{:?}", steps(&m));

    let ok = app
        .reply("alice", "/silence alertname=DiskFull 2h disk swap")
        .await;
    assert!(ok.starts_with("Silence #1"), "{ok}");
    escalating(&app, false).await;
    clock.advance(Duration::from_secs(30 * 60));
    app.router.sweep().await.unwrap();
    app.wait_idle().await;
    assert_eq!(steps(&chat.messages()).len(), 1);
    assert!(pager.pages().is_empty(), "{:?}", pager.pages());
}

#[tokio::test]
async fn a_resolution_stops_the_escalation_and_resolves_its_page() {
    let (clock, pager, chat) = fakes();
    let app = builder(&clock, &pager, &chat).spawn().await;
    support::deliver_alerts(&app.url(""), alert("firing")).await;
    escalating(&app, true).await;
    clock.advance(Duration::from_secs(15 * 60));
    // Long overdue (opsbot was down): every step is taken, in order, none skipped.
    app.router.sweep().await.unwrap();
    let m = chat
        .wait_until("three steps", |m| steps(m).len() == 3)
        .await;
    let texts = steps(&m);
    assert!(
        texts[0].starts_with("🚨 Escalation 1/3") && texts[2].starts_with("🚨 Escalation 3/3"),
        "{texts:?}"
    );
    let fp = fingerprint(&app).await;
    assert_eq!(
        pager.pages(),
        [("pagerduty-sre".to_owned(), PageAction::Trigger, fp.clone())]
    );

    support::deliver_alerts(&app.url(""), alert("resolved")).await;
    escalating(&app, false).await;
    app.router.sweep().await.unwrap();
    assert_eq!(
        pager.pages()[1..],
        [("pagerduty-sre".to_owned(), PageAction::Resolve, fp)]
    );
}

#[tokio::test]
async fn a_restarted_app_continues_from_the_stored_step() {
    let (clock, pager, chat) = fakes();
    let first = builder(&clock, &pager, &chat).spawn().await;
    first_step(&first, &chat).await;
    first.wait_idle().await;

    // A new app on the same store (one process alone may open the SQLite file): nothing of
    // the escalation is in its memory.
    let second = successor(first, &clock, &pager, &chat).await;
    second.router.sweep().await.unwrap();
    clock.advance(Duration::from_secs(5 * 60));
    second.router.sweep().await.unwrap();
    let m = chat
        .wait_until("the second step", |m| steps(m).len() == 2)
        .await;
    assert!(
        steps(&m)[1].starts_with("🚨 Escalation 2/3"),
        "{:?}",
        steps(&m)
    );
    assert!(steps(&m)[1].ends_with(" @bob"), "{:?}", steps(&m));
    second.wait_idle().await;
    assert_eq!(steps(&chat.messages()).len(), 2, "nothing fired twice");
}

#[tokio::test]
async fn postgres_two_replicas_sweeping_at_once_take_each_step_once_and_a_new_one_continues() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let url = support::postgres_schema_url(&schema);
    let (clock, pager, chat) = fakes();
    let a = builder(&clock, &pager, &chat).database(&url).spawn().await;
    let b = builder(&clock, &pager, &chat).database(&url).spawn().await;
    support::deliver_alerts(&a.url(""), alert("firing")).await;
    escalating(&a, true).await;
    for minutes in [0, 5, 10] {
        clock.advance(Duration::from_secs(minutes * 60));
        for _ in 0..3 {
            tokio::join!(a.router.escalate(), b.router.escalate());
        }
    }
    let m = chat
        .wait_until("three steps", |m| steps(m).len() >= 3)
        .await;
    a.wait_idle().await;
    b.wait_idle().await;
    let texts = steps(&chat.messages());
    assert_eq!(texts.len(), 3, "each step once: {texts:?} ({m:?})");
    assert_eq!(pager.pages().len(), 1, "one trigger: {:?}", pager.pages());
    drop((a, b));

    // A replica started later finds the escalation where they left it: stopped by the ack.
    let c = builder(&clock, &pager, &chat).database(&url).spawn().await;
    let ok = c.reply("bob", "/ack 1").await;
    assert!(ok.contains("acknowledged by bob"), "{ok}");
    escalating(&c, false).await;
    c.router.escalate().await;
    assert_eq!(pager.pages()[1].1, PageAction::Acknowledge);
    drop(c);
    support::drop_postgres_schema(&schema).await;
}

#[tokio::test]
async fn an_unacknowledged_p1_incident_escalates_through_its_policy_until_updated() {
    let (clock, pager, chat) = fakes();
    let config = format!(
        "{}{POLICY}\n[[escalation.policies]]\nname = \"sev1\"\nrepeat = 1\nrepeat_after = \"10m\"\n\
         steps = [{{ after = \"0m\", notify = \"schedule:sre\" }}, \
         {{ after = \"5m\", notify = [\"role:sre\", \"page:pagerduty-sre\"] }}]\n\
         [incidents]\nescalation = {{ P1 = \"sev1\" }}\n",
        people(false)
    );
    let app = with_config(&config, &clock, &pager, &chat).await;
    let opened = app.reply("alice", "/incident open P1 db down").await;
    assert!(opened.contains("Incident #1"), "{opened}");

    // Past the 15-minute target: reminded once, and the policy's first step.
    clock.advance(Duration::from_secs(15 * 60));
    let notices = app.router.sweep().await.unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    let m = chat
        .wait_until("the first step", |m| steps(m).len() == 1)
        .await;
    assert_eq!(
        steps(&m)[0],
        "🚨 Escalation 1/4 (sev1): incident #1 (P1 \"db down\") is not acknowledged; \
         /incident update \"...\" to acknowledge. @alice"
    );
    clock.advance(Duration::from_secs(5 * 60));
    app.router.sweep().await.unwrap();
    let m = chat
        .wait_until("the second step", |m| steps(m).len() == 2)
        .await;
    assert!(
        steps(&m)[1].ends_with(" @alice @bob (paging pagerduty-sre)"),
        "{:?}",
        steps(&m)
    );
    assert_eq!(
        pager.pages(),
        [(
            "pagerduty-sre".to_owned(),
            PageAction::Trigger,
            "incident-1".to_owned()
        )]
    );
    // The repeat: the steps again, 10 minutes after the last.
    clock.advance(Duration::from_secs(10 * 60));
    app.router.sweep().await.unwrap();
    chat.wait_until("the repeat", |m| steps(m).len() == 3).await;

    let ok = app.reply("bob", "/incident update \"failing over\"").await;
    assert!(ok.contains("update from bob"), "{ok}");
    app.router.sweep().await.unwrap();
    assert_eq!(
        pager.pages()[1..],
        [(
            "pagerduty-sre".to_owned(),
            PageAction::Acknowledge,
            "incident-1".to_owned()
        )]
    );
    clock.advance(Duration::from_secs(3600));
    app.router.sweep().await.unwrap();
    app.wait_idle().await;
    assert_eq!(steps(&chat.messages()).len(), 3, "nothing after the update");

    let timeline = app.reply("bob", "/incident timeline").await;
    assert!(
        timeline.contains("escalation through sev1 step 1/4: notified schedule:sre"),
        "{timeline}"
    );
    assert!(
        timeline.contains("escalation through sev1 stopped after 3 step(s): acknowledged"),
        "{timeline}"
    );
}

#[tokio::test]
async fn steps_lateness_and_stops_are_measured_in_metrics() {
    let (clock, pager, chat) = fakes();
    let app = builder(&clock, &pager, &chat).spawn().await;
    let series = [
        r#"opsbot_escalation_steps_total{policy="critical",target="schedule",outcome="nobody_on_call"} 0"#,
        r#"opsbot_escalation_steps_total{policy="critical",target="page",outcome="page_failed"} 0"#,
        r#"opsbot_escalation_stops_total{reason="silenced"} 0"#,
        "opsbot_escalations_active 0",
        "opsbot_escalation_step_lateness_seconds_count 0",
    ];
    let metrics = app.metrics().await;
    for line in series {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
    support::deliver_alerts(&app.url(""), alert("firing")).await;
    escalating(&app, true).await;
    // Swept 15 minutes late: the steps due at 0, 5 and 15 minutes are 15, 10 and 0 late.
    clock.advance(Duration::from_secs(15 * 60));
    app.router.sweep().await.unwrap();
    chat.wait_until("three steps", |m| steps(m).len() == 3)
        .await;
    let metrics = app.metrics().await;
    for line in [
        r#"opsbot_escalation_steps_total{policy="critical",target="schedule",outcome="notified"} 2"#,
        r#"opsbot_escalation_steps_total{policy="critical",target="page",outcome="paged"} 1"#,
        "opsbot_escalations_active 1",
        "opsbot_escalation_step_lateness_seconds_sum 1500.0",
        "opsbot_escalation_step_lateness_seconds_count 3",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
    support::deliver_alerts(&app.url(""), alert("resolved")).await;
    let stopped = r#"opsbot_escalation_stops_total{reason="resolved"} 1"#;
    support::eventually("the stop counted", support::WAIT, async || {
        let metrics = app.metrics().await;
        metrics.contains(stopped) && metrics.contains("opsbot_escalations_active 0")
    })
    .await;
}

#[tokio::test]
async fn an_alert_groups_escalation_stop_is_noted_on_its_incident_timeline() {
    let (clock, pager, chat) = fakes();
    let app = builder(&clock, &pager, &chat).spawn().await;
    // The group is routed to #ops, whose incident its steps and its stop go on.
    let opened = app
        .reply("alice", "/incident open P2 \"disk filling\"")
        .await;
    assert!(opened.contains("Incident #1"), "{opened}");
    first_step(&app, &chat).await;
    let ok = app
        .reply("bob", "/silence alertname=DiskFull 2h disk swap")
        .await;
    assert!(ok.starts_with("Silence #1"), "{ok}");
    escalating(&app, false).await;
    let want = "escalation through critical stopped after 1 step(s): silenced";
    support::eventually("the stop on the timeline", support::WAIT, async || {
        app.reply("bob", "/incident timeline").await.contains(want)
    })
    .await;
    let timeline = app.reply("bob", "/incident timeline").await;
    assert!(
        timeline.contains("escalation through critical step 1/3: notified schedule:sre"),
        "{timeline}"
    );
    assert_eq!(timeline.matches(want).count(), 1, "{timeline}");
}

#[tokio::test]
async fn a_group_walking_a_policy_gets_its_steps_not_the_plain_reminders() {
    let (clock, pager, chat) = fakes();
    let config = format!(
        "{}{POLICY}[alerts]\nalertmanager_token = \"am-token-abc123\"\nremind_every = \"5m\"\n\
         oncall_role = \"sre\"\ndefault_route = {{ platform = \"console\", channel = \"ops\" }}\n\
         [[alerts.routes]]\nmatchers = [\"severity=critical\"]\nplatform = \"console\"\n\
         channel = \"ops\"\nescalation = \"critical\"\n",
        people(false)
    );
    let app = with_config(&config, &clock, &pager, &chat).await;
    first_step(&app, &chat).await;
    for _ in 0..4 {
        clock.advance(Duration::from_secs(6 * 60));
        app.router.sweep().await.unwrap();
    }
    chat.wait_until("the policy's three steps", |m| steps(m).len() == 3)
        .await;
    app.wait_idle().await;
    let reminders: Vec<String> = (chat.messages().iter())
        .filter_map(|m| match m {
            Outbound::Post { text, .. } if text.starts_with("⏰ Reminder") => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert!(reminders.is_empty(), "{reminders:?}");
}

/// A paging service that is down: every page fails as a 503 would (after the pager's own
/// retries), or, `hang`ing, never answers (a process that dies while sending).
#[derive(Default)]
struct DownPager {
    attempts: Mutex<u32>,
    hang: bool,
}

#[async_trait]
impl Pager for DownPager {
    async fn page(&self, _: &str, _: PageAction, _: &Page) -> Result<(), OutboundError> {
        *self.attempts.lock().unwrap() += 1;
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(OutboundError::Unavailable("503 Service Unavailable".into()))
    }
}

impl DownPager {
    fn attempts(&self) -> u32 {
        *self.attempts.lock().unwrap()
    }
}

/// Fires the alert and takes every step at once (15 minutes late), paging through `down`.
async fn steps_taken_while_paging_fails(
    clock: &Arc<FakeClock>,
    pager: &Arc<FakePager>,
    chat: &Arc<RecordingOutbound>,
    down: Arc<DownPager>,
) -> TestApp {
    let app = builder(clock, pager, chat).pager(down).spawn().await;
    support::deliver_alerts(&app.url(""), alert("firing")).await;
    escalating(&app, true).await;
    clock.advance(Duration::from_secs(15 * 60));
    app
}

#[tokio::test]
async fn a_page_that_failed_is_sent_by_the_next_instance_once_due() {
    let (clock, pager, chat) = fakes();
    let down = Arc::new(DownPager::default());
    let first = steps_taken_while_paging_fails(&clock, &pager, &chat, down.clone()).await;
    first.router.sweep().await.unwrap();
    chat.wait_until("three steps", |m| steps(m).len() == 3)
        .await;
    assert_eq!(down.attempts(), 1);
    // Queued, not lost: tried again after its backoff (30 s), not at every tick.
    first.router.sweep().await.unwrap();
    assert_eq!(down.attempts(), 1);
    let fp = fingerprint(&first).await;

    // The next instance on the same store, its pager working, sends it once due, once.
    let second = successor(first, &clock, &pager, &chat).await;
    second.router.sweep().await.unwrap();
    assert!(pager.pages().is_empty(), "{:?}", pager.pages());
    clock.advance(Duration::from_secs(30));
    second.router.sweep().await.unwrap();
    second.router.sweep().await.unwrap();
    assert_eq!(
        pager.pages(),
        [("pagerduty-sre".to_owned(), PageAction::Trigger, fp)]
    );
    assert_eq!(steps(&chat.messages()).len(), 3, "no step again");
    let metrics = second.metrics().await;
    let paged =
        r#"opsbot_escalation_steps_total{policy="critical",target="page",outcome="paged"} 1"#;
    assert!(metrics.contains(paged), "{metrics}");
}

#[tokio::test]
async fn a_page_whose_sender_died_mid_send_is_sent_after_its_hold() {
    let (clock, pager, chat) = fakes();
    let down = Arc::new(DownPager {
        hang: true,
        ..DownPager::default()
    });
    let first = steps_taken_while_paging_fails(&clock, &pager, &chat, down.clone()).await;
    let router = first.router.clone();
    let sweeping = tokio::spawn(async move { router.sweep().await });
    support::eventually("the page being sent", support::WAIT, async || {
        down.attempts() == 1
    })
    .await;
    // The process dies while the page is on its way.
    sweeping.abort();
    let second = successor(first, &clock, &pager, &chat).await;
    second.router.sweep().await.unwrap();
    assert!(pager.pages().is_empty(), "held by the dead sender for now");
    clock.advance(Duration::from_secs(2 * 60));
    second.router.sweep().await.unwrap();
    assert_eq!(pager.pages().len(), 1, "{:?}", pager.pages());
    assert_eq!(pager.pages()[0].1, PageAction::Trigger);
}
