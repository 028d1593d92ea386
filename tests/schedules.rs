//! Scheduled runs with a fake clock: a slot fires once at its time (also with two
//! schedulers on one Postgres), DST in Europe/Berlin, missed slots within and beyond the
//! grace, a scheduled command that needs approval, pause and resume, `/schedules`, and the
//! daily report.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use opsbot::domain::{
    AlertSource, AlertStatus, ChannelRef, EventPayload, InboundEvent, IncomingAlert, Platform,
    RunId, RunState, UserRef,
};
use opsbot::ports::{Clock, FakeClock};
use support::{Outbound, RecordingOutbound, TEAM, TestApp};

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// `/backup` of `db` every night at 03:00 Berlin time, reporting to COPS on Slack.
fn backup(cron: &str, extra: &str) -> String {
    let action = format!(
        "[action]\nkind = \"exec\"\nargv = [\"./act.sh\", \"{{target}}\"]\ntimeout = \"10s\"\n{extra}"
    );
    backup_doing(cron, &action)
}

/// `/backup TARGET` doing `procedure` (its `[action]` or `[[steps]]`), run for `db` by a
/// schedule at `cron` Berlin time, reporting to COPS on Slack.
fn backup_doing(cron: &str, procedure: &str) -> String {
    format!(
        r#"name = "backup"
summary = "Back up the database"
roles = ["sre"]
[[args]]
name = "target"
kind = "choice"
choices = ["db", "files"]
{procedure}
[schedule]
cron = "{cron}"
timezone = "Europe/Berlin"
platform = "slack"
channel = "COPS"
roles = ["sre"]
args = {{ target = "db" }}
grace = "10m"
"#
    )
}

/// An app with `config` (people and grants included) and `command` as `backup.toml`, whose
/// bot posts are recorded.
async fn app_with(
    command: String,
    config: &str,
    clock: &Arc<FakeClock>,
) -> (TestApp, Arc<RecordingOutbound>) {
    let chat = Arc::new(RecordingOutbound::default());
    let app = TestApp::builder()
        .config(config)
        .command("backup.toml", &command)
        .script("act.sh", support::COUNTING_ACT)
        .clock(clock.clone())
        .outbound(chat.clone())
        .spawn()
        .await;
    (app, chat)
}

fn posts(chat: &RecordingOutbound) -> Vec<String> {
    (chat.messages().into_iter())
        .filter_map(|m| match m {
            Outbound::Post { channel, text, .. } => Some(format!("{channel}: {text}")),
            Outbound::Edit { .. } => None,
        })
        .collect()
}

/// The posts once the start notice and the result are both in, the notice first (they are
/// queued apart, so delivered in either order).
async fn start_and_result(chat: &RecordingOutbound) -> Vec<String> {
    chat.wait_until("the start and the result", |m| m.len() >= 2)
        .await;
    let mut texts = posts(chat);
    texts.sort_by_key(|t| !t.contains('⏰'));
    texts
}

/// Ticks the scheduler and waits for what it started (the run, its posts).
async fn tick(app: &TestApp) -> usize {
    let fired = app.scheduler.tick().await;
    app.wait_idle().await;
    fired
}

#[tokio::test]
async fn a_slot_fires_once_at_its_time_as_the_schedule_and_is_audited() {
    // 02:59:59 CET, 1 December 2026: the slot is a second away.
    let clock = Arc::new(FakeClock::new(at("2026-12-01T01:59:59Z")));
    let (app, chat) = app_with(backup("0 3 * * *", ""), TEAM, &clock).await;
    assert_eq!(tick(&app).await, 0, "not yet");
    clock.advance(Duration::from_secs(1));
    assert_eq!(tick(&app).await, 1);
    clock.advance(Duration::from_secs(30));
    assert_eq!(tick(&app).await, 0, "a slot fires once");
    assert_eq!(app.runs(), 1);
    let texts = start_and_result(&chat).await;
    assert_eq!(
        texts[0],
        "COPS: ⏰ Scheduled run of /backup (Tue 01 Dec 03:00 CET) starting as schedule:backup."
    );
    assert!(texts[1].starts_with("COPS: "), "{texts:?}");
    assert!(texts[1].contains("rolled back db"), "{texts:?}");
    assert_eq!(texts.len(), 2, "{texts:?}");
    let audit = app.store.recent_audit(10).await.unwrap();
    let record = audit.iter().find(|r| r.entry.command == "backup").unwrap();
    assert_eq!(record.entry.actor, "slack:schedule:backup");
    assert_eq!(record.entry.channel, "slack:COPS");
    assert_eq!(record.entry.outcome.as_str(), "ok");
}

#[tokio::test]
async fn a_slot_in_the_skipped_dst_hour_fires_when_the_clock_resumes() {
    // 29 March 2026 in Berlin: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 never comes.
    let clock = Arc::new(FakeClock::new(at("2026-03-29T00:59:59Z")));
    let (app, chat) = app_with(backup("30 2 * * *", ""), TEAM, &clock).await;
    assert_eq!(tick(&app).await, 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(tick(&app).await, 1);
    let texts = start_and_result(&chat).await;
    assert_eq!(
        texts[0],
        "COPS: ⏰ Scheduled run of /backup (Sun 29 Mar 03:00 CEST) starting as schedule:backup."
    );
    // The same wall-clock time the next day is a day later, in summer time.
    clock.advance(Duration::from_secs(23 * 3600 + 30 * 60 - 1));
    assert_eq!(tick(&app).await, 0, "02:29:59 CEST");
    clock.advance(Duration::from_secs(1));
    assert_eq!(tick(&app).await, 1, "02:30 CEST on 30 March");
}

#[tokio::test]
async fn a_missed_slot_fires_once_within_the_grace_and_is_announced_skipped_beyond_it() {
    let clock = Arc::new(FakeClock::new(at("2026-11-30T02:00:00Z")));
    let (app, chat) = app_with(backup("0 3 * * *", ""), TEAM, &clock).await;
    assert_eq!(tick(&app).await, 1, "on time");
    // Down over the next slot; back 5 minutes after it (grace 10m): it runs, once.
    clock.advance(Duration::from_secs(24 * 3600 + 300));
    let restarted = TestApp::builder()
        .config(TEAM)
        .command("backup.toml", &backup("0 3 * * *", ""))
        .script("act.sh", support::COUNTING_ACT)
        .clock(clock.clone())
        .outbound(chat.clone())
        .store(app.store.clone())
        .spawn()
        .await;
    assert_eq!(tick(&restarted).await, 1, "within the grace");
    assert_eq!(tick(&app).await, 0, "claimed once, whichever process asks");
    // Down for two more nights, back 30 minutes after the second slot: announced, not run.
    clock.advance(Duration::from_secs(2 * 24 * 3600 + 25 * 60));
    assert_eq!(tick(&restarted).await, 0);
    assert_eq!(tick(&restarted).await, 0);
    chat.wait_until("the skipped notice", |m| {
        m.iter()
            .any(|o| matches!(o, Outbound::Post { text, .. } if text.contains("skipped")))
    })
    .await;
    let skipped: Vec<String> = (posts(&chat).into_iter())
        .filter(|t| t.contains("skipped"))
        .collect();
    assert_eq!(
        skipped,
        [
            "COPS: ⏭ Scheduled run of /backup due Thu 03 Dec 03:00 CET was skipped: opsbot was not running then, and it is more than 10m late (2 runs were missed in all). The next run is on schedule."
        ]
    );
    assert_eq!(app.runs() + restarted.runs(), 2);
}

#[tokio::test]
async fn a_scheduled_command_that_needs_approval_opens_a_request_in_its_channel() {
    let approval =
        "[approval]\napprovals = 1\napprover_roles = [\"sre-lead\"]\nexpires_after = \"1h\"\n";
    let clock = Arc::new(FakeClock::new(at("2026-12-01T02:00:00Z")));
    let team = TEAM.replace("[\"console:bob\"]", "[\"console:bob\", \"slack:UBOB\"]");
    let (app, chat) = app_with(backup("0 3 * * *", approval), &team, &clock).await;
    assert_eq!(tick(&app).await, 1);
    let log = chat.wait_until("the request", |m| m.len() >= 2).await;
    let request = posts(&chat)
        .into_iter()
        .find(|t| t.contains("Request #1"))
        .unwrap_or_else(|| panic!("{log:?}"));
    assert!(
        request.starts_with("COPS: Request #1: /backup target=db requested by schedule:backup — needs 1 approval(s) from sre-lead"),
        "{request}"
    );
    let run = app.store.run(RunId(1)).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Pending);
    assert!(run.message_id.is_some(), "bound, so a reaction finds it");
    assert_eq!(app.runs(), 0, "nothing ran");
    assert!(
        posts(&chat).contains(&"COPS: ⏰ Scheduled run of /backup (Tue 01 Dec 03:00 CET) as schedule:backup needs approval; its request follows.".to_owned()),
        "{:?}",
        posts(&chat)
    );
    let id = run.message_id.unwrap();
    assert_eq!(chat.buttons_on(&id), ["/approve 1", "/deny 1"]);
    // An approver lets it run; its result goes to the schedule's channel.
    let approve = EventPayload::Command("/approve 1".into());
    let in_cops = ChannelRef::id_only("COPS");
    let bob = InboundEvent::new(UserRef::new(Platform::Slack, "UBOB"), in_cops, approve);
    let approved = app.router.handle(&bob).await.reply.unwrap().text;
    assert!(approved.contains("Approved by bob"), "{approved}");
    app.wait_idle().await;
    assert_eq!(app.runs(), 1);
    chat.wait_until("the result", |m| {
        m.iter().any(|o| matches!(o, Outbound::Post { channel, text, .. } if channel == "COPS" && text.contains("rolled back db")))
    })
    .await;
}

/// A scheduled run of steps shows its progress as one started in chat does: its answer is
/// posted in the schedule's channel and bound as the run's progress message, the steps'
/// claims and ends edit it through the outbox, and the result follows.
#[tokio::test]
async fn a_scheduled_run_of_steps_posts_its_progress_and_edits_it_as_the_steps_move() {
    let steps = "[[steps]]\nname = \"dump\"\nkind = \"exec\"\nargv = [\"./hold.sh\", \"{target}\"]\ntimeout = \"30s\"\n\
        [[steps]]\nname = \"announce\"\nkind = \"message\"\ntext = \"{target} backed up\"\n";
    let clock = Arc::new(FakeClock::new(at("2026-12-01T02:00:00Z")));
    let chat = Arc::new(RecordingOutbound::default());
    let app = TestApp::builder()
        .config(TEAM)
        .command("backup.toml", &backup_doing("0 3 * * *", steps))
        .script(
            "hold.sh",
            "#!/bin/sh\nwhile [ ! -f go ]; do sleep 0.01; done\necho dumped $1\n",
        )
        .clock(clock.clone())
        .outbound(chat.clone())
        .spawn()
        .await;
    // Not `tick`: waiting for the in-flight work would wait for the held step.
    assert_eq!(app.scheduler.tick().await, 1);
    let bound = support::eventually("the progress message bound", support::WAIT, async || {
        let run = app.store.run(RunId(1)).await.unwrap();
        run.and_then(|r| r.message_id)
    })
    .await;
    let progress = chat.messages().into_iter().find_map(|m| match m {
        Outbound::Post { channel, id, text } if id == bound => Some((channel, text)),
        _ => None,
    });
    let (channel, text) = progress.expect("the bound message was posted");
    assert_eq!(channel, "COPS");
    assert!(
        text.starts_with("Request #1: /backup target=db requested by schedule:backup — running"),
        "{text}"
    );
    assert!(text.contains("dump") && text.contains("announce"), "{text}");
    std::fs::write(app.dir.path().join("go"), "").unwrap();
    app.wait_idle().await;
    let edited = |needle: &'static str| {
        let bound = bound.clone();
        move |m: &[Outbound]| {
            m.iter().any(|o| {
                matches!(o, Outbound::Edit { id, text, .. } if *id == bound && text.contains(needle))
            })
        }
    };
    chat.wait_until("the progress edited as dump ended", edited("✅ dump ("))
        .await;
    chat.wait_until(
        "the progress edited as announce ended",
        edited("✅ announce"),
    )
    .await;
    chat.wait_until("the result", |m| {
        m.iter().any(|o| {
            matches!(o, Outbound::Post { channel, text, .. }
                if channel == "COPS" && text.contains("#1 /backup target=db succeeded"))
        })
    })
    .await;
    assert_eq!(
        app.store.run(RunId(1)).await.unwrap().unwrap().state,
        RunState::Succeeded
    );
}

#[tokio::test]
async fn pause_and_resume_are_role_gated_stored_and_audited() {
    let clock = Arc::new(FakeClock::new(at("2026-12-01T01:00:00Z")));
    let team = TEAM.replace(
        "[builtins]\n",
        "[builtins]\nschedule_roles = [\"sre-lead\"]\n",
    );
    let (app, _chat) = app_with(backup("0 3 * * *", ""), &team, &clock).await;
    let denied = app.reply("alice", "/schedule pause backup").await;
    assert_eq!(
        denied,
        "/schedule needs one of the roles sre-lead; you have deployer, sre."
    );
    let paused = app.reply("bob", "/schedule pause backup").await;
    assert_eq!(
        paused,
        "⏸ Schedule backup paused by bob: its runs are skipped until /schedule resume backup."
    );
    let listed = app.reply("bob", "/schedules").await;
    assert!(listed.contains("⏸ paused by bob"), "{listed}");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(tick(&app).await, 0, "paused at 03:00");
    let resumed = app.reply("bob", "/schedule resume backup").await;
    assert_eq!(
        resumed,
        "▶️ Schedule backup resumed by bob; next run Wed 02 Dec 03:00 CET."
    );
    assert_eq!(tick(&app).await, 0, "the paused slot does not run late");
    clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(tick(&app).await, 1, "the next one does");
    let audit = app.store.recent_audit(20).await.unwrap();
    let changes: Vec<(String, String, String)> = (audit.iter().rev())
        .filter(|r| r.entry.command == "schedule")
        .map(|r| {
            (
                r.entry.actor.clone(),
                r.entry.outcome.as_str().to_owned(),
                r.entry.detail.clone(),
            )
        })
        .collect();
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert_eq!(changes[0].1, "denied");
    assert_eq!(
        changes[1],
        ("console:bob".into(), "ok".into(), "paused backup".into())
    );
    assert_eq!(
        changes[2],
        ("console:bob".into(), "ok".into(), "resumed backup".into())
    );
}

#[tokio::test]
async fn schedules_lists_each_with_its_next_run_in_its_zone() {
    let clock = Arc::new(FakeClock::new(at("2026-12-01T12:00:00Z")));
    let report = "\n[report]\ncron = \"0 9 * * 1-5\"\ntimezone = \"America/New_York\"\nplatform = \"slack\"\nchannel = \"CREPORTS\"\n";
    let (app, _chat) = app_with(backup("0 3 * * *", ""), &format!("{TEAM}{report}"), &clock).await;
    assert_eq!(
        app.reply("alice", "/schedules").await,
        "⏰ Schedules:\n  backup `0 3 * * *` (Europe/Berlin) → slack:COPS, next Wed 02 Dec 03:00 CET\n  daily-report `0 9 * * 1-5` (America/New_York) → slack:CREPORTS, next Tue 01 Dec 09:00 EST"
    );
}

#[tokio::test]
async fn the_daily_report_shows_health_alerts_incidents_and_runs() {
    let clock = Arc::new(FakeClock::new(at("2026-12-01T05:00:00Z")));
    let report = "\n[report]\ncron = \"0 9 * * *\"\ntimezone = \"Europe/Berlin\"\nplatform = \"slack\"\nchannel = \"CREPORTS\"\n";
    let team = TEAM.replace("[builtins]\n", "[builtins]\nresponder_roles = [\"sre\"]\n");
    let (app, chat) = app_with(backup("0 3 * * *", ""), &format!("{team}{report}"), &clock).await;
    let opened = app
        .reply("alice", "/incident open P1 \"checkout failing\"")
        .await;
    assert!(opened.contains("#1"), "{opened}");
    let ran = app.reply("alice", "/backup files").await;
    assert!(ran.contains("rolled back files"), "{ran}");
    let firing = |fingerprint: &str, severity: &str| IncomingAlert {
        source: AlertSource::Webhook,
        fingerprint: fingerprint.into(),
        group_key: "g".into(),
        status: AlertStatus::Firing,
        labels: [("severity".to_owned(), severity.to_owned())].into(),
        annotations: Default::default(),
        starts_at: clock.now(),
        ends_at: None,
        generator_url: None,
    };
    app.alerts
        .ingest(vec![
            firing("a", "critical"),
            firing("b", "critical"),
            firing("c", "warning"),
        ])
        .await
        .unwrap();
    // 09:00 CET, 3 hours later.
    clock.advance(Duration::from_secs(3 * 3600));
    assert_eq!(tick(&app).await, 0, "the report runs no command");
    let log = chat
        .wait_until("the report", |m| {
            m.iter()
                .any(|o| matches!(o, Outbound::Post { text, .. } if text.contains("Daily report")))
        })
        .await;
    let report = posts(&chat)
        .into_iter()
        .find(|t| t.contains("Daily report"))
        .unwrap_or_else(|| panic!("{log:?}"));
    assert_eq!(
        report,
        "CREPORTS: 📋 Daily report, Tue 01 Dec 09:00 CET\n\
         Health:\n```\nNo health checks are configured.\n```\n\
         Firing alerts: 3 (critical 2, warning 1)\n\
         Open incidents:\n  #1 P1 \"checkout failing\", open 3h, led by alice\n\
         Runs in the last 24 h: 1\n  /backup: 1 succeeded"
    );
    assert_eq!(tick(&app).await, 0);
    app.wait_idle().await;
    let reports = posts(&chat)
        .iter()
        .filter(|t| t.contains("Daily report"))
        .count();
    assert_eq!(reports, 1, "posted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_one_postgres_fire_a_slot_once() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let url = support::postgres_schema_url(&schema);
    let clock = Arc::new(FakeClock::new(at("2026-12-01T02:00:00Z")));
    let mut apps = Vec::new();
    for _ in 0..2 {
        let app = TestApp::builder()
            .config(TEAM)
            .command("backup.toml", &backup("0 3 * * *", ""))
            .script("act.sh", support::COUNTING_ACT)
            .clock(clock.clone())
            .outbound(Arc::new(RecordingOutbound::default()))
            .database(&url)
            .spawn()
            .await;
        apps.push(app);
    }
    for _ in 0..5 {
        let (a, b) = tokio::join!(apps[0].scheduler.tick(), apps[1].scheduler.tick());
        let _ = (a, b);
    }
    for app in &apps {
        app.wait_idle().await;
    }
    assert_eq!(
        apps[0].runs() + apps[1].runs(),
        1,
        "one replica ran it, once"
    );
    drop(apps);
    support::drop_postgres_schema(&schema).await;
}

#[test]
fn a_scheduled_command_may_not_take_the_daily_reports_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("commands")).unwrap();
    let command = backup("0 3 * * *", "").replace("name = \"backup\"", "name = \"daily-report\"");
    std::fs::write(dir.path().join("commands/daily.toml"), command).unwrap();
    let text = "[catalog]\ndir = \"commands\"\n[report]\ncron = \"0 9 * * *\"\ntimezone = \"UTC\"\nplatform = \"slack\"\nchannel = \"C1\"\n";
    let path = dir.path().join("config.toml");
    let config = opsbot::config::Config::from_toml(&path, text, &[]).unwrap();
    let refused = opsbot::app::load_catalog(&config, &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        refused.ends_with("daily.toml:13: schedule: \"daily-report\" is the daily report's schedule ([report] in the config); rename the command"),
        "{refused}"
    );
}
