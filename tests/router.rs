//! The router pipeline through its real interface: an inbound event in, a reply and an
//! audit record out, on the real app (SQLite store, memory limiter).

mod support;

use opsbot::domain::{EventPayload, Outcome};
use support::{ROLLBACK, TEAM, TestApp, event};

async fn last_audit(app: &support::TestApp) -> opsbot::domain::AuditRecord {
    app.store.recent_audit(1).await.unwrap().remove(0)
}

#[tokio::test]
async fn whoami_names_the_person_and_roles() {
    let app = TestApp::builder().config(TEAM).spawn().await;
    assert_eq!(
        app.reply("alice", "/whoami").await,
        "You are alice (console:alice). Roles: deployer, sre."
    );
    let rec = last_audit(&app).await;
    assert_eq!(rec.entry.actor, "console:alice");
    assert_eq!(rec.entry.command, "whoami");
    assert_eq!(rec.entry.outcome, Outcome::Ok);
}

#[tokio::test]
async fn anyone_may_ask_which_version_runs_and_help_offers_it() {
    let app = TestApp::builder().config(TEAM).spawn().await;
    let r = app.say("mallory", "/version").await;
    assert_eq!(r.outcome, Some(Outcome::Ok));
    let text = r.reply.unwrap().text;
    assert!(
        text.starts_with(concat!("opsbot ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let rec = last_audit(&app).await;
    assert_eq!(
        (rec.entry.command.as_str(), rec.entry.actor.as_str()),
        ("version", "console:mallory")
    );
    let help = app.reply("mallory", "/help").await;
    assert!(
        help.contains("/version — show which opsbot version is running"),
        "{help}"
    );
    let r = app.say("alice", "/version please").await;
    assert_eq!(r.outcome, Some(Outcome::Invalid));
    assert_eq!(
        r.reply.unwrap().text,
        "/version takes no arguments; usage: /version"
    );
}

#[tokio::test]
async fn help_lists_only_what_the_asker_may_run_here() {
    let app = TestApp::builder()
        .config(TEAM)
        .command("rollback.toml", ROLLBACK)
        .spawn()
        .await;
    let alice = app.reply("alice", "/help").await;
    assert!(
        alice.contains("/status") && alice.contains("/audit") && alice.contains("/rollback"),
        "{alice}"
    );
    let carol = app.reply("carol", "/help").await;
    assert!(
        carol.contains("/status") && !carol.contains("/audit") && !carol.contains("/rollback"),
        "{carol}"
    );
    let stranger = app.reply("mallory", "/help").await;
    assert!(
        stranger.contains("/whoami") && !stranger.contains("/status"),
        "{stranger}"
    );
    // Outside its allowed channels, rollback is not offered even to alice.
    let elsewhere = app
        .say_in("alice", "random", "/help")
        .await
        .reply
        .unwrap()
        .text;
    assert!(!elsewhere.contains("/rollback"), "{elsewhere}");
    let topic = app.reply("carol", "/help rollback").await;
    assert!(
        topic.contains("/rollback <api|worker|web>") && topic.contains("sre-lead"),
        "{topic}"
    );
}

#[tokio::test]
async fn unknown_people_may_only_ask_who_they_are_and_for_help() {
    let app = TestApp::builder()
        .config(TEAM)
        .command("rollback.toml", ROLLBACK)
        .spawn()
        .await;
    let r = app.say("mallory", "/whoami").await;
    assert_eq!(r.outcome, Some(Outcome::Ok));
    assert!(r.reply.unwrap().text.contains("I don't know you"));
    for cmd in ["/status", "/audit", "/rollback api"] {
        let r = app.say("mallory", cmd).await;
        assert_eq!(r.outcome, Some(Outcome::Denied), "{cmd}");
        assert!(
            r.reply.unwrap().text.contains("only /help and /whoami"),
            "{cmd}"
        );
        let rec = last_audit(&app).await;
        assert_eq!(
            (rec.entry.actor.as_str(), rec.entry.outcome),
            ("console:mallory", Outcome::Denied)
        );
    }
}

#[tokio::test]
async fn roles_and_channels_are_enforced_and_denials_audited() {
    let app = TestApp::builder()
        .config(TEAM)
        .command("rollback.toml", ROLLBACK)
        .spawn()
        .await;
    let r = app.say("carol", "/rollback api").await;
    assert_eq!(r.outcome, Some(Outcome::Denied));
    assert_eq!(
        r.reply.unwrap().text,
        "/rollback needs one of the roles deployer, sre; you have viewer."
    );
    let r = app.say("carol", "/audit").await;
    assert_eq!(r.outcome, Some(Outcome::Denied));
    let r = app.say_in("alice", "random", "/rollback api").await;
    assert_eq!(r.outcome, Some(Outcome::Denied));
    assert_eq!(
        r.reply.unwrap().text,
        "/rollback may not run in #random; ask in #ops, #incident-*."
    );
    let r = app
        .say_in("alice", "incident-42", "/rollback api --to v1.2.3")
        .await;
    assert_eq!(r.outcome, Some(Outcome::Ok));
    assert!(r.reply.unwrap().text.contains("service=api to=v1.2.3"));
    let rec = last_audit(&app).await;
    assert_eq!(rec.entry.channel, "console:incident-42");
    assert_eq!(rec.entry.args, "api --to v1.2.3");
}

#[tokio::test]
async fn bad_arguments_are_explained_and_audited_as_invalid() {
    let app = TestApp::builder()
        .config(TEAM)
        .command("rollback.toml", ROLLBACK)
        .spawn()
        .await;
    let cases = [
        ("/rollback", "missing service"),
        ("/rollback db", "service must be one of api, worker, web"),
        (
            "/rollback api --to latest",
            "does not have the expected format",
        ),
        (
            "/rollback api --to v1.2.3x",
            "does not have the expected format",
        ),
        ("/rollback api web", "too many arguments"),
        ("/rollback api --force yes", "unknown option --force"),
        ("/rollback -rf", "service must be one of"),
        ("/status a b", "too many arguments"),
        ("/status nosuchcheck", "no check named"),
        ("/audit 0", "N must be a number"),
        ("/whoami extra", "takes no arguments"),
        ("/nope", "I don't know /nope"),
        ("/rollback \"api", "quote is not closed"),
        ("/status@otherbot", "addressed to @otherbot"),
    ];
    for (text, expected) in cases {
        let r = app.say("alice", text).await;
        assert_eq!(r.outcome, Some(Outcome::Invalid), "{text}");
        let reply = r.reply.unwrap().text;
        assert!(reply.contains(expected), "{text}: {reply}");
        assert!(
            !reply.contains('\n'),
            "one-line explanation for {text}: {reply}"
        );
        let rec = last_audit(&app).await;
        assert_eq!(rec.entry.outcome, Outcome::Invalid, "{text}");
    }
}

#[tokio::test]
async fn oversized_and_non_utf8_input_is_refused_and_audited() {
    let app = TestApp::builder().config(TEAM).spawn().await;
    let big = format!("/status {}", "x".repeat(10_000));
    let r = app.say("alice", &big).await;
    assert_eq!(r.outcome, Some(Outcome::Invalid));
    assert!(r.reply.unwrap().text.contains("longer than"));
    let rec = last_audit(&app).await;
    assert!(rec.entry.args.len() <= 500, "audit keeps a bounded excerpt");

    let r = app
        .router
        .handle(&event(
            "alice",
            "ops",
            EventPayload::Undecodable { byte_len: 7 },
        ))
        .await;
    assert_eq!(r.outcome, Some(Outcome::Invalid));
    assert!(r.reply.unwrap().text.contains("not valid UTF-8"));

    let r = app.say("alice", "/status \u{0}\u{7}").await;
    assert_eq!(r.outcome, Some(Outcome::Invalid));
    assert!(
        last_audit(&app)
            .await
            .entry
            .args
            .chars()
            .all(|c| !c.is_control())
    );
}

#[tokio::test]
async fn chatter_is_not_a_command_and_is_not_audited() {
    let app = TestApp::builder().config(TEAM).spawn().await;
    let r = app.say("alice", "hello there").await;
    assert_eq!(r.outcome, None);
    assert!(r.reply.unwrap().text.contains("commands start with /"));
    assert!(app.store.recent_audit(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn rate_limits_reply_once_then_stay_quiet_and_are_audited() {
    let config = format!("{TEAM}\n[limits]\nper_user = \"2/hour\"\n");
    let app = TestApp::builder().config(&config).spawn().await;
    for _ in 0..2 {
        assert_eq!(app.say("alice", "/whoami").await.outcome, Some(Outcome::Ok));
    }
    let limited = app.say("alice", "/whoami").await;
    assert_eq!(limited.outcome, Some(Outcome::Limited));
    let text = limited.reply.unwrap().text;
    assert!(
        text.starts_with("Slow down") && text.contains("Try again in"),
        "{text}"
    );
    // Further hits inside the window are audited but not answered: no flood.
    let again = app.say("alice", "/whoami").await;
    assert_eq!(again.outcome, Some(Outcome::Limited));
    assert!(again.reply.is_none());
    // Other people are unaffected.
    assert_eq!(app.say("bob", "/whoami").await.outcome, Some(Outcome::Ok));
    let outcomes: Vec<Outcome> = app
        .store
        .recent_audit(10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.entry.outcome)
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == Outcome::Limited).count(),
        2
    );
}

#[tokio::test]
async fn unauthorized_attempts_do_not_burn_rate_limits() {
    let config = format!("{TEAM}\n[limits]\nglobal = \"2/hour\"\n");
    let app = TestApp::builder()
        .config(&config)
        .command("rollback.toml", ROLLBACK)
        .spawn()
        .await;
    for _ in 0..5 {
        assert_eq!(
            app.say("carol", "/rollback api").await.outcome,
            Some(Outcome::Denied)
        );
        assert_eq!(
            app.say("alice", "/nope").await.outcome,
            Some(Outcome::Invalid)
        );
    }
    assert_eq!(app.say("alice", "/whoami").await.outcome, Some(Outcome::Ok));
    assert_eq!(app.say("bob", "/whoami").await.outcome, Some(Outcome::Ok));
    assert_eq!(
        app.say("bob", "/whoami").await.outcome,
        Some(Outcome::Limited)
    );
}

#[tokio::test]
async fn per_command_file_limits_apply() {
    let limited = ROLLBACK.replace(
        "[approval]",
        "[rate_limit]\nper_user = \"1/hour\"\n[approval]",
    );
    let app = TestApp::builder()
        .config(TEAM)
        .command("rollback.toml", &limited)
        .spawn()
        .await;
    assert_eq!(
        app.say("alice", "/rollback api").await.outcome,
        Some(Outcome::Ok)
    );
    let r = app.say("alice", "/rollback web").await;
    assert_eq!(r.outcome, Some(Outcome::Limited));
    assert!(r.reply.unwrap().text.contains("/rollback per person"));
    assert_eq!(app.say("alice", "/whoami").await.outcome, Some(Outcome::Ok));
}

#[tokio::test]
async fn status_runs_checks_and_audit_shows_records() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = format!(
        "{TEAM}\n[[checks]]\nname = \"local\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ntimeout = \"2s\"\n\
         [[checks]]\nname = \"truthy\"\nkind = \"exec\"\nargv = [\"true\"]\n"
    );
    let app = TestApp::builder().config(&config).spawn().await;
    let status = app.reply("carol", "/status").await;
    assert!(
        status.starts_with("Overall: UP (2/2 checks up)"),
        "{status}"
    );
    let one = app.reply("carol", "/status truthy").await;
    assert!(
        one.starts_with("Overall: UP (1/1 checks up)") && !one.contains("local"),
        "{one}"
    );
    drop(listener);
    let down = app.reply("carol", "/status local").await;
    assert!(down.starts_with("Overall: DOWN"), "{down}");
    let audit = app.reply("bob", "/audit 3").await;
    assert!(
        audit.contains("console:carol") && audit.contains("/status local"),
        "{audit}"
    );
}

#[tokio::test]
async fn audit_failure_withholds_the_answer_and_gives_a_request_id() {
    let app = TestApp::builder().config(TEAM).spawn().await;
    // Make the audit table unwritable from underneath the running app.
    let pool = support::sqlite_in(app.dir.path()).await;
    support::exec(&pool, "CREATE TRIGGER block_insert BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;").await;
    let r = app.say("alice", "/whoami").await;
    assert_eq!(r.outcome, Some(Outcome::Failed));
    let reply = r.reply.unwrap();
    assert!(
        reply
            .text
            .contains(&format!("request id {}", reply.request_id)),
        "{}",
        reply.text
    );
    assert!(
        !reply.text.contains("disk on fire"),
        "internal error text must not reach chat"
    );
    assert!(!reply.text.contains("You are alice"));
}
