//! Paging: the real `HttpPager` against fakes speaking PagerDuty's Events API v2 and ntfy
//! (bodies, headers, what is retried and what is not, secrets kept out of Debug and logs,
//! metrics and `/readyz`), and `/page` through the router: the person (or a schedule's
//! primary) mentioned natively in Slack, outside text in the reason inert, their phone paged
//! through their own service, a person without one only mentioned, and the role gate.

#[path = "support/paging.rs"]
mod paging_support;
#[path = "support/slack.rs"]
mod slack_support;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use opsbot::config::Config;
use opsbot::domain::{ChannelRef, EventPayload, InboundEvent, Platform, UserRef};
use opsbot::liveness::Liveness;
use opsbot::metrics::Metrics;
use opsbot::paging::HttpPager;
use opsbot::ports::{FakeClock, OutboundError, Page, PageAction, PageSeverity, Pager};
use paging_support::Fake;
use support::{Captured, TestApp};

const ROUTING_KEY: &str = "R0UT1NGkey0123456789abcdef012345";
const NTFY_TOKEN: &str = "tk_n0tify-token-abcdef";
const TOPIC: &str = "ops-oncall-9f3k2";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The pager as the app builds it, from `services` (TOML) parsed like the config file.
struct Rig {
    pager: HttpPager,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    config: Config,
}

fn rig(services: &str) -> Rig {
    let config = Config::from_toml(Path::new("paging.toml"), services, &[]).expect("valid config");
    let metrics = Arc::new(Metrics::new());
    let liveness = Arc::new(Liveness::default());
    let clock = Arc::new(FakeClock::new(at("2026-12-01T10:00:00Z")));
    let pager = HttpPager::new(
        config.paging.services.clone(),
        metrics.clone(),
        liveness.clone(),
        clock,
    );
    Rig {
        pager,
        metrics,
        liveness,
        config,
    }
}

fn pagerduty_service(base: &str) -> String {
    format!(
        "[[paging.services]]\nname = \"pd-sre\"\nkind = \"pagerduty\"\nurl = \"{base}\"\nrouting_key = \"{ROUTING_KEY}\"\n"
    )
}

fn ntfy_service(base: &str) -> String {
    format!(
        "[[paging.services]]\nname = \"ntfy-bob\"\nkind = \"ntfy\"\nurl = \"{base}/{TOPIC}\"\ntoken = \"{NTFY_TOKEN}\"\n"
    )
}

fn page(severity: PageSeverity) -> Page {
    Page {
        dedup_key: "fp-3a9c".into(),
        summary: "HighLatency on api: p99 2.4s".into(),
        source: "api".into(),
        severity,
    }
}

fn count(metrics: &Metrics, service: &str, action: &str, outcome: &str) -> String {
    let series = format!(
        "opsbot_pages_total{{service=\"{service}\",action=\"{action}\",outcome=\"{outcome}\"}}"
    );
    value(metrics, &series)
}

fn retries(metrics: &Metrics, service: &str) -> String {
    value(
        metrics,
        &format!("opsbot_page_retries_total{{service=\"{service}\"}}"),
    )
}

/// The value of one series in the metrics text.
fn value(metrics: &Metrics, series: &str) -> String {
    let line = format!("{series} ");
    let text = metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in\n{text}"))
        .to_owned()
}

#[tokio::test]
async fn pagerduty_gets_trigger_acknowledge_and_resolve_as_events_v2() {
    let fake = Fake::default();
    let base = paging_support::pagerduty(fake.clone()).await;
    let rig = rig(&pagerduty_service(&base));
    // Every series is there at zero before the first page.
    assert_eq!(count(&rig.metrics, "pd-sre", "resolve", "failed"), "0");
    assert_eq!(retries(&rig.metrics, "pd-sre"), "0");

    for action in [
        PageAction::Trigger,
        PageAction::Acknowledge,
        PageAction::Resolve,
    ] {
        let sent = rig
            .pager
            .page("pd-sre", action, &page(PageSeverity::Critical))
            .await;
        assert!(sent.is_ok(), "{action:?}: {sent:?}");
    }
    let seen = fake.wait_for(3).await;
    assert!(seen.iter().all(|r| r.path == "/v2/enqueue"));
    assert!(
        seen.iter()
            .all(|r| r.header("content-type") == Some("application/json"))
    );
    let trigger = seen[0].json();
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], "fp-3a9c");
    assert_eq!(
        trigger["payload"],
        serde_json::json!({"summary": "HighLatency on api: p99 2.4s", "source": "api", "severity": "critical"})
    );
    for (r, action) in seen[1..].iter().zip(["acknowledge", "resolve"]) {
        let event = r.json();
        assert_eq!(event["event_action"], action);
        assert_eq!(event["dedup_key"], "fp-3a9c");
        assert!(event.get("payload").is_none(), "{event}");
    }
    assert_eq!(count(&rig.metrics, "pd-sre", "trigger", "sent"), "1");
    assert_eq!(count(&rig.metrics, "pd-sre", "acknowledge", "sent"), "1");
    assert_eq!(count(&rig.metrics, "pd-sre", "resolve", "sent"), "1");
    let state = rig.liveness.pagers();
    assert_eq!(state.len(), 1);
    assert_eq!(
        state[0].1.to_string(),
        "ok (last page 2026-12-01T10:00:00Z)"
    );
}

#[tokio::test]
async fn a_400_is_never_retried_and_shows_as_failing() {
    let fake = Fake::default();
    let base = paging_support::pagerduty(fake.clone()).await;
    let rig = rig(&pagerduty_service(&base));
    fake.fail_next(&[400]);

    let sent = rig
        .pager
        .page("pd-sre", PageAction::Trigger, &page(PageSeverity::Error))
        .await;
    assert!(
        matches!(sent, Err(OutboundError::Undeliverable(_))),
        "{sent:?}"
    );
    assert_eq!(fake.seen().len(), 1, "a 400 is not sent again");
    assert_eq!(count(&rig.metrics, "pd-sre", "trigger", "rejected"), "1");
    assert_eq!(count(&rig.metrics, "pd-sre", "trigger", "sent"), "0");
    assert_eq!(
        rig.liveness.pagers()[0].1.to_string(),
        "failing (last failure 2026-12-01T10:00:00Z: undeliverable: answered HTTP 400)"
    );
}

#[tokio::test]
async fn an_event_pagerduty_would_refuse_is_refused_by_the_fake_too() {
    // The fake checks what PagerDuty checks, so the adapter's bodies are proven valid above.
    let fake = Fake::default();
    let base = paging_support::pagerduty(fake.clone()).await;
    let rig = rig(&pagerduty_service(&base).replace(ROUTING_KEY, "too-short-routing-key"));
    let sent = rig
        .pager
        .page("pd-sre", PageAction::Trigger, &page(PageSeverity::Info))
        .await;
    assert!(matches!(sent, Err(OutboundError::Undeliverable(_))));
}

#[tokio::test(start_paused = true)]
async fn a_429_and_a_500_are_retried_with_backoff_then_the_page_goes_through() {
    let fake = Fake::default();
    let base = paging_support::pagerduty(fake.clone()).await;
    let rig = rig(&pagerduty_service(&base));
    fake.fail_next(&[429, 500]);

    let started = tokio::time::Instant::now();
    let sent = rig
        .pager
        .page("pd-sre", PageAction::Trigger, &page(PageSeverity::Critical))
        .await;
    assert!(sent.is_ok(), "{sent:?}");
    assert_eq!(fake.seen().len(), 3);
    // 0.5 s after the 429, 1 s after the 500 (tokio's paused clock).
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(count(&rig.metrics, "pd-sre", "trigger", "sent"), "1");
    assert_eq!(count(&rig.metrics, "pd-sre", "trigger", "failed"), "0");
    assert_eq!(retries(&rig.metrics, "pd-sre"), "2");
}

#[tokio::test(start_paused = true)]
async fn a_service_still_failing_after_the_attempts_is_reported_failed() {
    let fake = Fake::default();
    let base = paging_support::pagerduty(fake.clone()).await;
    let rig = rig(&pagerduty_service(&base));
    fake.fail_next(&[503; 10]);

    let sent = rig
        .pager
        .page("pd-sre", PageAction::Resolve, &page(PageSeverity::Critical))
        .await;
    assert!(
        matches!(sent, Err(OutboundError::RetryAfter(_))),
        "{sent:?}"
    );
    assert_eq!(fake.seen().len(), opsbot::paging::ATTEMPTS as usize);
    assert_eq!(count(&rig.metrics, "pd-sre", "resolve", "failed"), "1");
}

#[tokio::test(start_paused = true)]
async fn a_service_that_cannot_be_reached_is_retried_then_reported_failed() {
    // A port nothing listens on: every attempt is a transport error.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let rig = rig(&pagerduty_service(&base));
    let sent = rig
        .pager
        .page("pd-sre", PageAction::Trigger, &page(PageSeverity::Critical))
        .await;
    assert!(matches!(sent, Err(OutboundError::Failed(_))), "{sent:?}");
    assert_eq!(count(&rig.metrics, "pd-sre", "trigger", "failed"), "1");
    let state = rig.liveness.pagers()[0].1.to_string();
    assert!(state.starts_with("failing (last failure"), "{state}");
    assert!(!state.contains(&base), "{state}");
}

#[tokio::test]
async fn ntfy_gets_the_text_with_title_priority_tags_and_the_token() {
    let fake = Fake::with_token(NTFY_TOKEN);
    let base = paging_support::ntfy(fake.clone()).await;
    let rig = rig(&ntfy_service(&base));

    let severities = [
        (PageSeverity::Critical, "5"),
        (PageSeverity::Error, "4"),
        (PageSeverity::Warning, "3"),
        (PageSeverity::Info, "2"),
    ];
    for (severity, _) in severities {
        let sent = rig
            .pager
            .page("ntfy-bob", PageAction::Trigger, &page(severity))
            .await;
        assert!(sent.is_ok(), "{sent:?}");
    }
    for action in [PageAction::Acknowledge, PageAction::Resolve] {
        let sent = rig
            .pager
            .page("ntfy-bob", action, &page(PageSeverity::Critical))
            .await;
        assert!(sent.is_ok(), "{sent:?}");
    }
    let seen = fake.wait_for(6).await;
    for (r, (_, priority)) in seen.iter().zip(severities) {
        assert_eq!(r.path, format!("/{TOPIC}"));
        assert_eq!(r.body, "HighLatency on api: p99 2.4s");
        assert_eq!(r.header("title"), Some("opsbot page"));
        assert_eq!(r.header("priority"), Some(priority));
        assert_eq!(r.header("tags"), Some("rotating_light"));
        let bearer = format!("Bearer {NTFY_TOKEN}");
        assert_eq!(r.header("authorization"), Some(bearer.as_str()));
    }
    // Acknowledged and resolved arrive as quiet notifications of their own.
    assert_eq!(seen[4].body, "Acknowledged: HighLatency on api: p99 2.4s");
    assert_eq!(seen[5].body, "Resolved: HighLatency on api: p99 2.4s");
    for r in &seen[4..] {
        assert_eq!(r.header("priority"), Some("2"));
        assert_eq!(r.header("tags"), Some("white_check_mark"));
    }
    assert_eq!(count(&rig.metrics, "ntfy-bob", "trigger", "sent"), "4");
}

#[tokio::test]
async fn ntfy_without_the_topics_token_is_rejected_not_retried() {
    let fake = Fake::with_token(NTFY_TOKEN);
    let base = paging_support::ntfy(fake.clone()).await;
    let rig = rig(&ntfy_service(&base).replace(NTFY_TOKEN, "tk_some-other-token"));
    let sent = rig
        .pager
        .page(
            "ntfy-bob",
            PageAction::Trigger,
            &page(PageSeverity::Critical),
        )
        .await;
    assert!(
        matches!(sent, Err(OutboundError::Undeliverable(_))),
        "{sent:?}"
    );
    assert_eq!(fake.seen().len(), 1);
    assert_eq!(count(&rig.metrics, "ntfy-bob", "trigger", "rejected"), "1");
}

#[tokio::test]
async fn a_webhook_service_gets_signed_json() {
    let fake = Fake::default();
    // Any URL path takes a POST: the ntfy fake records it.
    let base = paging_support::ntfy(fake.clone()).await;
    let secret = "webhook-signing-secret-42";
    let rig = rig(&format!(
        "[[paging.services]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{base}/pages\"\nsecret = \"{secret}\"\n"
    ));
    let sent = rig
        .pager
        .page(
            "hook",
            PageAction::Acknowledge,
            &page(PageSeverity::Warning),
        )
        .await;
    assert!(sent.is_ok(), "{sent:?}");
    let r = &fake.wait_for(1).await[0];
    assert_eq!(
        r.json(),
        serde_json::json!({"action": "acknowledge", "dedup_key": "fp-3a9c", "summary": "HighLatency on api: p99 2.4s", "source": "api", "severity": "warning"})
    );
    let ts: i64 = r.header("x-opsbot-timestamp").unwrap().parse().unwrap();
    let expected = opsbot::hooks::sign(secret.as_bytes(), ts, r.body.as_bytes());
    assert_eq!(r.header("x-opsbot-signature"), Some(expected.as_str()));
}

#[tokio::test]
async fn an_unknown_service_is_undeliverable_and_not_counted() {
    let rig = rig("");
    let sent = rig
        .pager
        .page("nope", PageAction::Trigger, &page(PageSeverity::Critical))
        .await;
    assert!(matches!(sent, Err(OutboundError::Undeliverable(_))));
    assert!(!rig.metrics.encode().contains("service=\"nope\""));
}

#[tokio::test]
async fn routing_keys_tokens_and_topics_never_print_in_debug_or_logs() {
    let (logs, _guard) = Captured::start("debug");
    let pd = Fake::default();
    let ntfy = Fake::with_token(NTFY_TOKEN);
    let pd_base = paging_support::pagerduty(pd.clone()).await;
    let ntfy_base = paging_support::ntfy(ntfy.clone()).await;
    let rig = rig(&format!(
        "{}{}",
        pagerduty_service(&pd_base),
        ntfy_service(&ntfy_base)
    ));
    pd.fail_next(&[500, 400]);
    ntfy.fail_next(&[401]);
    let _ = (rig.pager)
        .page("pd-sre", PageAction::Trigger, &page(PageSeverity::Critical))
        .await;
    let _ = (rig.pager)
        .page(
            "ntfy-bob",
            PageAction::Trigger,
            &page(PageSeverity::Critical),
        )
        .await;
    let _ = (rig.pager)
        .page(
            "ntfy-bob",
            PageAction::Resolve,
            &page(PageSeverity::Critical),
        )
        .await;

    let debug = format!("{:?}", rig.config);
    let logged = logs.text();
    assert!(logged.contains("page failed"), "{logged}");
    let states: String = (rig.liveness.pagers().iter())
        .map(|(n, s)| format!("{n}: {s}\n"))
        .collect();
    for secret in [ROUTING_KEY, NTFY_TOKEN, TOPIC] {
        assert!(!debug.contains(secret), "{secret} in Debug: {debug}");
        assert!(!logged.contains(secret), "{secret} logged: {logged}");
        assert!(!states.contains(secret), "{secret} in /readyz: {states}");
    }
}

// ---- /page through the router ----

const PEOPLE: &str = r#"
[builtins]
page_roles = ["sre"]

[[people]]
name = "alice"
roles = ["sre"]
identities = ["console:alice", "slack:UALICE01"]

[[people]]
name = "bob"
roles = ["sre"]
identities = ["console:bob", "slack:UBOB01"]
page = "ntfy-bob"

[[people]]
name = "carol"
roles = ["viewer"]
identities = ["console:carol", "slack:UCAROL01"]

[[people]]
name = "dave"
roles = ["sre"]
identities = ["console:dave", "slack:UDAVE01"]
page = "pd-sre"

[[oncall.schedules]]
name = "sre"
time_zone = "Europe/Berlin"
[[oncall.schedules.layers]]
name = "primary"
people = ["dave", "alice"]
shift = "weekly"
handoff = "09:00"
start = "2026-03-16"
"#;

struct PageApp {
    app: TestApp,
    slack: slack_support::Seen,
    ntfy: Fake,
    pd: Fake,
}

/// An app with Slack (a fake Web API), bob paged through ntfy and dave through PagerDuty;
/// dave is the sre schedule's primary this week.
async fn page_app() -> PageApp {
    let slack = slack_support::Seen::default();
    let slack_base = slack_support::fake_web_api(None, slack.clone()).await;
    let (ntfy, pd) = (Fake::with_token(NTFY_TOKEN), Fake::default());
    let services = format!(
        "{}{}",
        ntfy_service(&paging_support::ntfy(ntfy.clone()).await),
        pagerduty_service(&paging_support::pagerduty(pd.clone()).await)
    );
    let config = format!(
        "{PEOPLE}{services}\n[slack]\nsigning_secret = \"slack-signing-secret-0123\"\n\
         bot_token = \"xoxb-test-token\"\napi_url = \"{slack_base}/api/\"\n"
    );
    let clock = Arc::new(FakeClock::new(at("2026-03-17T12:00:00Z")));
    let app = TestApp::builder()
        .config(&config)
        .clock(clock)
        .spawn()
        .await;
    PageApp {
        app,
        slack,
        ntfy,
        pd,
    }
}

impl PageApp {
    /// `user` (a Slack id) types `text` in #ops (COPS).
    async fn slack_says(&self, user: &str, text: &str) -> opsbot::router::Response {
        let ev = InboundEvent::new(
            UserRef::new(Platform::Slack, user),
            ChannelRef::named("COPS", Some("ops".into())),
            EventPayload::Command(text.to_owned()),
        );
        self.app.router.handle(&ev).await
    }

    /// The texts of the messages posted to Slack so far.
    fn posts(&self) -> Vec<String> {
        (self.slack.lock().unwrap().iter())
            .filter(|(m, _)| m == "chat.postMessage")
            .map(|(_, b)| b["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn wait_for_posts(&self, n: usize) -> Vec<String> {
        support::eventually(&format!("{n} Slack post(s)"), support::WAIT, async || {
            support::satisfies(self.posts(), |p| p.len() >= n)
        })
        .await
    }
}

fn reply(r: &opsbot::router::Response) -> String {
    r.reply.as_ref().map(|r| r.text.clone()).unwrap_or_default()
}

#[tokio::test]
async fn page_mentions_the_person_in_slack_and_pages_their_phone() {
    let p = page_app().await;
    let r = p
        .slack_says(
            "UALICE01",
            r#"/page @bob "<!channel> @here <@U999> checkout is down""#,
        )
        .await;
    let text = reply(&r);
    assert_eq!(
        text, "Paged bob via ntfy-bob and mentioned them here.",
        "{r:?}"
    );

    let post = &p.wait_for_posts(1).await[0];
    assert!(
        post.starts_with("📟 <@UBOB01>: alice pages you: "),
        "{post}"
    );
    for raw in ["<!channel>", "<!here>", "<@U999>"] {
        assert!(!post.contains(raw), "{raw} reached Slack: {post}");
    }
    assert_eq!(post.matches("<@").count(), 1, "only bob is pinged: {post}");

    let pushed = &p.ntfy.wait_for(1).await[0];
    assert_eq!(pushed.header("priority"), Some("5"));
    assert_eq!(
        pushed.body,
        "alice pages bob from slack #ops: <!channel> @here <@U999> checkout is down"
    );
    assert!(p.pd.seen().is_empty());

    // Audited, counted, shown in /readyz.
    let audit = p.app.store.recent_audit(1).await.unwrap();
    assert_eq!(audit[0].entry.command, "page");
    assert_eq!(audit[0].entry.detail, "paged via ntfy-bob");
    let metrics = p.app.metrics().await;
    assert!(
        metrics.contains(
            "opsbot_pages_total{service=\"ntfy-bob\",action=\"trigger\",outcome=\"sent\"} 1"
        ),
        "{metrics}"
    );
    p.app.wait_for_readyz("pager ntfy-bob: ok (last page").await;
}

#[tokio::test]
async fn page_a_schedule_reaches_its_primary_through_pagerduty() {
    let p = page_app().await;
    let r = p
        .slack_says("UALICE01", "/page sre \"db replica lag\"")
        .await;
    assert_eq!(
        reply(&r),
        "Paged dave via pd-sre and mentioned them here.",
        "{r:?}"
    );
    let post = &p.wait_for_posts(1).await[0];
    assert_eq!(
        post,
        "📟 <@UDAVE01>: alice pages you (on call for sre): db replica lag"
    );
    let event = p.pd.wait_for(1).await[0].json();
    assert_eq!(event["event_action"], "trigger");
    assert_eq!(event["dedup_key"], format!("page-{}", r.request_id));
    assert_eq!(event["payload"]["severity"], "critical");
    assert_eq!(
        event["payload"]["summary"],
        "alice pages dave from slack #ops: db replica lag"
    );
}

#[tokio::test]
async fn a_person_without_a_paging_service_is_only_mentioned() {
    let p = page_app().await;
    let r = p
        .slack_says("UDAVE01", "/page alice \"need a second pair of eyes\"")
        .await;
    assert_eq!(
        reply(&r),
        "Mentioned alice here; they have no paging service, so nothing went to their phone."
    );
    let post = &p.wait_for_posts(1).await[0];
    assert_eq!(
        post,
        "📟 <@UALICE01>: dave pages you: need a second pair of eyes"
    );
    p.app.wait_idle().await;
    assert!(p.ntfy.seen().is_empty() && p.pd.seen().is_empty());
}

#[tokio::test]
async fn page_is_denied_without_a_page_role_and_needs_a_reason() {
    let p = page_app().await;
    let r = p.slack_says("UCAROL01", "/page bob \"wake up\"").await;
    assert_eq!(
        reply(&r),
        "/page needs one of the roles sre; you have viewer."
    );
    let r = p.slack_says("UALICE01", "/page bob").await;
    assert!(reply(&r).starts_with("say why"), "{r:?}");
    let r = p.slack_says("UALICE01", "/page nobody \"x\"").await;
    assert_eq!(
        reply(&r),
        "there is no person or on-call schedule named \"nobody\"."
    );
    p.app.wait_idle().await;
    assert!(p.posts().is_empty(), "{:?}", p.posts());
    assert!(p.ntfy.seen().is_empty() && p.pd.seen().is_empty());
}

#[tokio::test]
async fn page_is_granted_to_nobody_by_default() {
    // Services nothing reaches: the page is refused before them.
    let config = format!(
        "{}{}{}",
        PEOPLE.replace("page_roles = [\"sre\"]", ""),
        ntfy_service("http://127.0.0.1:1"),
        pagerduty_service("http://127.0.0.1:1")
    );
    let app = TestApp::builder().config(&config).spawn().await;
    let text = app.reply("alice", "/page dave \"db down\"").await;
    assert_eq!(text, "/page is not granted to any role.");
}
