//! The Telegram adapter through teloxide against a local fake Bot API: long polling with
//! explicit `allowed_updates`, `bot_command` entities (`/cmd@bot` in groups), approvals by
//! `message_reaction` and by inline-keyboard buttons, webhook mode with the secret token,
//! duplicate updates, 429s and long output.

mod support;
#[path = "support/telegram.rs"]
mod telegram_fake;

use std::sync::Arc;
use std::time::Duration;

use opsbot::ports::{Clock, FakeClock};
use serde_json::{Value, json};
use support::TestApp;
use telegram_fake::*;

async fn app_with(extra: &str) -> (TestApp, Arc<Fake>) {
    app_with_clock(extra, None).await
}

async fn app_with_clock(extra: &str, clock: Option<Arc<FakeClock>>) -> (TestApp, Arc<Fake>) {
    let (base, fake) = fake_telegram().await;
    (app_against(&base, extra, clock).await, fake)
}

async fn app_against(base: &str, extra: &str, clock: Option<Arc<FakeClock>>) -> TestApp {
    TestApp::builder()
        .config(&config(base, extra))
        .command("rollback.toml", support::ROLLBACK_NEEDING_ONE_LEAD)
        .command("note.toml", support::NOTE_NEEDING_ONE_LEAD)
        .script("act.sh", support::COUNTING_ACT)
        .clock(clock)
        .spawn()
        .await
}

/// Waits for the approval request `request` to be edited without its keyboard, saying `what`.
async fn assert_retired(fake: &Fake, request: i64, what: &str) {
    let retired = fake
        .wait_until("the request edited", |f| {
            f.calls("editMessageText").into_iter().next()
        })
        .await;
    assert_eq!(retired["message_id"], request);
    assert!(retired.get("reply_markup").is_none(), "{retired:#}");
    let text = retired["text"].as_str().unwrap();
    assert!(text.contains(what), "{text}");
}

fn runs(app: &TestApp) -> usize {
    std::fs::read_to_string(app.dir.path().join("runs.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Waits for the approval request, and for it to be bound to its message (a reaction on a
/// message not bound yet finds no request), and returns its message id and inline keyboard.
async fn approval_request(app: &TestApp, fake: &Fake) -> (i64, Value) {
    let request = fake
        .wait_until("the approval request", |f| {
            // The fake numbers the messages it sends 1001, 1002, ... in order.
            let calls = f.calls.lock().unwrap();
            let sends = calls.iter().filter(|(m, _)| {
                ["sendMessage", "sendDocument", "editMessageText"]
                    .iter()
                    .any(|s| m.eq_ignore_ascii_case(s))
            });
            sends.enumerate().find_map(|(i, (_, body))| {
                let text = body["text"].as_str().unwrap_or_default();
                text.contains("approval(s) from")
                    .then(|| (1001 + i as i64, body["reply_markup"].clone()))
            })
        })
        .await;
    let pool = support::sqlite_in(app.dir.path()).await;
    support::eventually(
        "the request bound to its message",
        support::WAIT,
        async || {
            let bound: Option<i64> =
                sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE message_id = $1")
                    .bind(request.0.to_string())
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            support::satisfies(bound, |n| *n == Some(1))
        },
    )
    .await;
    request
}

#[tokio::test]
async fn polls_with_explicit_allowed_updates_and_answers_a_command_in_its_thread() {
    let (app, fake) = app_with("").await;
    fake.push(command(1, ALICE, "/help"));
    let reply = fake
        .wait_until("the /help answer", |f| {
            f.calls("sendMessage").into_iter().next()
        })
        .await;
    assert_eq!(reply["chat_id"], json!(CHAT));
    assert_eq!(
        reply["reply_parameters"]["message_id"],
        json!(11),
        "answered in reply"
    );
    assert!(reply["text"].as_str().unwrap().contains("rollback"));
    let polls = fake.calls("getUpdates");
    let allowed = &polls[0]["allowed_updates"];
    assert_eq!(
        allowed,
        &json!(["message", "callback_query", "message_reaction"]),
        "message_reaction must be asked for explicitly"
    );
    assert!(
        !fake.calls("deleteWebhook").is_empty(),
        "polling removes a stale webhook"
    );
    let ready = reqwest::get(app.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body = ready.text().await.unwrap();
    assert!(body.contains("adapter telegram: up"), "{body}");
}

#[tokio::test]
async fn a_rejected_token_turns_the_adapter_off_without_stopping_opsbot() {
    let (base, fake) = fake_telegram().await;
    let revoked = config(&base, "").replace(TOKEN, "654321:revoked-token-xyz");
    let app = TestApp::builder().config(&revoked).spawn().await;
    let body = app
        .wait_for_readyz("adapter telegram: off (bot token rejected)")
        .await;
    assert!(body.starts_with("ready"), "{body}");
    assert!(
        fake.calls("getUpdates").is_empty(),
        "no polling with a rejected token"
    );
}

#[tokio::test]
async fn rollback_approved_by_a_reaction_runs_once_and_posts_its_output() {
    let (app, fake) = app_with("").await;
    fake.push(command(1, ALICE, "/rollback@opsbot_test api"));
    let (request, keyboard) = approval_request(&app, &fake).await;
    assert_eq!(
        keyboard["inline_keyboard"][0][0]["callback_data"],
        json!("/approve 1"),
        "an Approve button"
    );
    // The requester's own 👍 and a stranger's do not count.
    fake.push(reaction(2, ALICE, request, &[], &["👍"]));
    fake.push(reaction(3, MALLORY, request, &[], &["👍"]));
    fake.wait_until("two refusals", |f| {
        (f.sent_texts().len() >= 3).then_some(())
    })
    .await;
    assert_eq!(runs(&app), 0);
    // The approver's 👍 runs it; redelivering that update changes nothing.
    fake.push(reaction(4, BOB, request, &[], &["👍"]));
    fake.push(reaction(4, BOB, request, &[], &["👍"]));
    let output = fake
        .wait_for_text("the run's output", "rolled back api")
        .await;
    assert!(
        output.contains("#1 /rollback service=api succeeded"),
        "{output}"
    );
    fake.wait_for_text(
        "the approval's acknowledgement",
        "Approved by bob (1/1), running /rollback service=api; the result will be posted in reply to request #1.",
    )
    .await;
    assert_eq!(runs(&app), 1, "exactly once");
    let reply = fake
        .calls("sendMessage")
        .into_iter()
        .find(|b| b["text"].as_str().unwrap().contains("rolled back api"))
        .unwrap();
    assert_eq!(
        reply["reply_parameters"]["message_id"],
        json!(request),
        "in the approval's thread"
    );
}

#[tokio::test]
async fn the_approve_button_works_like_the_command_for_the_presser() {
    let (app, fake) = app_with("").await;
    fake.push(command(1, ALICE, "/rollback api"));
    let (request, _) = approval_request(&app, &fake).await;
    let press = |update_id: i64, from: u64| button_press(update_id, from, request, "/approve 1");
    fake.push(press(2, ALICE));
    fake.wait_for_text(
        "the requester's refusal",
        "approving #1 needs one of the roles sre-lead",
    )
    .await;
    fake.push(press(3, BOB));
    fake.wait_for_text("the run's output", "rolled back api")
        .await;
    assert_eq!(runs(&app), 1);
    assert_retired(&fake, request, "approved by bob").await;
    assert_eq!(
        fake.calls("answerCallbackQuery").len(),
        2,
        "each press answered"
    );
}

#[tokio::test]
async fn alert_groups_carry_ack_buttons_that_go_away_once_pressed() {
    let (app, fake) = app_with(&support::alerts_routed_to("telegram", &CHAT.to_string())).await;
    support::fire_alerts(&app.url(""), "01-firing-single.json").await;
    let id = app.store.active_alerts(1).await.unwrap()[0].id;
    let group = fake
        .wait_until("the group message", |f| {
            f.calls("sendMessage").into_iter().next()
        })
        .await;
    assert!(
        group["text"].as_str().unwrap().contains("FIRING"),
        "{group:#}"
    );
    let button = &group["reply_markup"]["inline_keyboard"][0][0];
    assert_eq!(button["text"], format!("Ack #{id}"), "{group:#}");
    assert_eq!(button["callback_data"], format!("/ack {id}"));

    // The fake numbers messages from 1001; the group message is the first.
    fake.push(button_press(1, BOB, 1001, &format!("/ack {id}")));
    let edit = fake
        .wait_until("the group message edited", |f| {
            f.calls("editMessageText").into_iter().next()
        })
        .await;
    assert_eq!(edit["message_id"], 1001, "edited in place");
    assert!(
        edit["text"].as_str().unwrap().contains("(acked by bob)"),
        "{edit:#}"
    );
    assert!(
        edit.get("reply_markup").is_none(),
        "no keyboard, so Telegram removes the old one: {edit:#}"
    );
    let acked = app.store.alert(id).await.unwrap().unwrap();
    assert_eq!(
        acked.acked_by.as_deref(),
        Some("bob"),
        "acked as the presser"
    );
}

#[tokio::test]
async fn an_expired_request_says_so_and_loses_its_keyboard() {
    let clock = Arc::new(FakeClock::new(chrono::Utc::now()));
    let (app, fake) = app_with_clock("", Some(clock.clone())).await;
    fake.push(command(1, ALICE, "/rollback api"));
    let (request, keyboard) = approval_request(&app, &fake).await;
    assert!(!keyboard.is_null(), "Approve / Deny to begin with");
    support::wait_for_run_message(&app, 1).await;
    clock.advance(Duration::from_secs(11 * 60));
    let notices = app.router.sweep().await.unwrap();
    assert_eq!(notices.len(), 1, "the expiry is announced");
    assert_retired(
        &fake,
        request,
        "expired without enough approvals; nothing ran.",
    )
    .await;
    assert_eq!(runs(&app), 0);
}

#[tokio::test]
async fn a_request_too_long_for_a_message_is_a_file_whose_caption_and_keyboard_are_updated() {
    let (base, fake) = fake_telegram().await;
    let long = "x".repeat(5000);
    let runbook = support::ROLLBACK_NEEDING_ONE_LEAD.replace(
        r#"argv = ["./act.sh", "{service}"]"#,
        &format!(r#"argv = ["./act.sh", "{{service}}", "{long}"]"#),
    );
    let app = TestApp::builder()
        .config(&config(&base, ""))
        .command("rollback.toml", &runbook)
        .script("act.sh", "#!/bin/sh\necho rolled back $1\n")
        .spawn()
        .await;
    fake.push(command(1, ALICE, "/rollback api"));
    let request = fake
        .wait_until("the request as a file", |f| {
            f.calls("sendDocument").into_iter().next()
        })
        .await;
    let multipart = request["multipart"].as_str().unwrap();
    assert!(multipart.contains("/approve 1"), "the keyboard comes along");
    support::wait_for_run_message(&app, 1).await;

    fake.push(button_press(2, BOB, 1001, "/approve 1"));
    let caption = fake
        .wait_until("the caption updated", |f| {
            f.calls("editMessageCaption").into_iter().next()
        })
        .await;
    assert_eq!(caption["message_id"], 1001);
    assert!(caption.get("reply_markup").is_none(), "{caption:#}");
    let text = caption["caption"].as_str().unwrap();
    assert!(text.contains("approved by bob"), "{text}");
    assert!(text.encode_utf16().count() <= 1024, "a caption's limit");
}

#[tokio::test]
async fn commands_for_another_bot_and_plain_messages_are_ignored() {
    let (_app, fake) = app_with("").await;
    fake.push(command(1, ALICE, "/help@some_other_bot"));
    fake.push(json!({
        "update_id": 2,
        "message": { "message_id": 5, "date": 1_700_000_000, "chat": chat(), "from": person(ALICE), "text": "just chatting" }
    }));
    fake.push(command(3, ALICE, "/whoami@OpsBot_Test"));
    let replies = fake
        .wait_until("the /whoami answer", |f| {
            let texts = f.sent_texts();
            (!texts.is_empty()).then_some(texts)
        })
        .await;
    assert_eq!(
        replies.len(),
        1,
        "only /whoami@ours was answered: {replies:?}"
    );
    assert!(replies[0].contains("alice"), "{replies:?}");
}

#[tokio::test]
async fn a_429_delays_the_reply_but_does_not_lose_it() {
    let (_app, fake) = app_with("").await;
    *fake.rate_limited.lock().unwrap() = 1;
    fake.push(command(1, ALICE, "/help"));
    let started = std::time::Instant::now();
    fake.wait_until("the reply sent again after Retry-After", |f| {
        (f.calls("sendMessage").len() == 2).then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    let texts = fake.sent_texts();
    assert_eq!(
        texts[0], texts[1],
        "the same reply, refused once, then sent"
    );
}

async fn webhook(app: &TestApp, secret: &str, update: &Value) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(app.url("/telegram/webhook"))
        .header("x-telegram-bot-api-secret-token", secret)
        .json(update)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn webhook_mode_checks_the_secret_token_and_ignores_duplicates() {
    let (app, fake) = app_with(&webhook_mode()).await;
    let registered = fake
        .wait_until("setWebhook", |f| f.calls("setWebhook").into_iter().next())
        .await;
    // teloxide sends setWebhook as multipart (it may carry a certificate).
    let form = registered["multipart"].as_str().unwrap();
    assert!(form.contains(WEBHOOK_SECRET), "{form}");
    assert!(
        form.contains(r#"["message","callback_query","message_reaction"]"#),
        "{form}"
    );
    assert!(
        fake.calls("getUpdates").is_empty(),
        "no polling in webhook mode"
    );

    let rollback = command(7, ALICE, "/rollback api");
    assert_eq!(webhook(&app, "wrong-secret-0000", &rollback).await, 401);
    assert_eq!(webhook(&app, "", &rollback).await, 401);
    assert_eq!(webhook(&app, WEBHOOK_SECRET, &rollback).await, 200);
    assert_eq!(
        webhook(&app, WEBHOOK_SECRET, &rollback).await,
        200,
        "a retry is acked"
    );
    let (request, _) = approval_request(&app, &fake).await;
    let approve = reaction(8, BOB, request, &[], &["👍"]);
    assert_eq!(webhook(&app, "nope-nope-nope-nope", &approve).await, 401);
    assert_eq!(webhook(&app, WEBHOOK_SECRET, &approve).await, 200);
    fake.wait_for_text("the run's output", "rolled back api")
        .await;
    assert_eq!(runs(&app), 1);
    let requests = fake
        .sent_texts()
        .iter()
        .filter(|t| t.contains("approval(s) from"))
        .count();
    assert_eq!(requests, 1, "the redelivered update made no second request");
}

#[tokio::test]
async fn a_command_for_the_bot_by_name_waits_until_the_bot_knows_its_name() {
    let (base, fake) = fake_telegram().await;
    fake.me_unavailable
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let app = app_against(&base, &webhook_mode(), None).await;
    fake.wait_until("a failed getMe", |f| f.calls("getMe").into_iter().next())
        .await;
    let status = command(31, ALICE, "/status@opsbot_test");
    assert_eq!(
        webhook(&app, WEBHOOK_SECRET, &status).await,
        503,
        "not taken: Telegram is to deliver it again"
    );
    // Commands without a bot's name do not depend on it.
    let plain = command(32, ALICE, "/whoami");
    assert_eq!(webhook(&app, WEBHOOK_SECRET, &plain).await, 200);

    fake.me_unavailable
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // Telegram's redelivery of the same update.
    support::eventually("the redelivery to be taken", support::WAIT, async || {
        support::satisfies(webhook(&app, WEBHOOK_SECRET, &status).await, |s| *s == 200)
    })
    .await;
    fake.wait_for_text("the answer to /status", "No health checks are configured.")
        .await;
}

#[tokio::test]
async fn debug_logs_never_show_the_bot_token() {
    let (logs, _capturing) = support::Captured::start("debug");
    let (_app, fake) = app_with("").await;
    fake.push(command(41, ALICE, "/status"));
    fake.wait_for_text("the answer to /status", "No health checks are configured.")
        .await;
    let text = logs.text();
    assert!(text.contains("DEBUG"), "debug logs were captured: {text}");
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn long_output_is_sent_as_a_file() {
    let (app, fake) = app_with("").await;
    support::write_executable(
        app.dir.path(),
        "act.sh",
        "#!/bin/sh\ni=0\nwhile [ $i -lt 400 ]; do echo \"line $i of a long rollback log, see https://evil.example/log\"; i=$((i+1)); done\n",
    );
    fake.push(command(1, ALICE, "/rollback api"));
    let (request, _) = approval_request(&app, &fake).await;
    fake.push(reaction(2, BOB, request, &[], &["👍"]));
    let document = fake
        .wait_until("the document", |f| {
            f.calls("sendDocument").into_iter().next()
        })
        .await;
    let multipart = document["multipart"].as_str().unwrap();
    assert!(multipart.contains("output.txt"), "sent as a file");
    assert!(multipart.contains("(full text attached)"), "with a caption");
    // The caption's addresses are code: Telegram links none of them.
    let caption_entities = multipart
        .split("name=\"caption_entities\"")
        .nth(1)
        .expect("caption entities sent");
    assert!(caption_entities.contains(r#""type":"code""#), "{multipart}");
}

/// Asserts that a message the bot sent is plain text quoting `INJECTION`: no parse mode and
/// no entity but `code` over the address, so nothing in it is a mention or a link; each `@`
/// is followed by a word joiner, so Telegram does not read `@everyone` as a username either.
fn assert_plain(sent: &Value) {
    let quoted = support::INJECTION.replace('@', "@\u{2060}");
    assert!(sent["text"].as_str().unwrap().contains(&quoted), "{sent:#}");
    assert!(sent.get("parse_mode").is_none(), "{sent:#}");
    let code = entities(sent, "text", "entities");
    assert!(code.iter().all(|(kind, _)| kind == "code"), "{code:?}");
    assert!(
        code.iter()
            .any(|(_, s)| s == "https://evil.example|Approve"),
        "{code:?}"
    );
}

/// The entities of `sent` (`field` holding them, over its text in `text`): kind and the text
/// each covers, counted in UTF-16 units as Telegram does.
fn entities(sent: &Value, text: &str, field: &str) -> Vec<(String, String)> {
    let units: Vec<u16> = sent[text].as_str().unwrap().encode_utf16().collect();
    let list = sent[field].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|e| {
            let (at, len) = (
                e["offset"].as_u64().unwrap() as usize,
                e["length"].as_u64().unwrap() as usize,
            );
            let shown = String::from_utf16(&units[at..at + len]).unwrap();
            (e["type"].as_str().unwrap().to_owned(), shown)
        })
        .collect()
}

/// Asserts that a message the bot sent quotes `LINKS` (as text, no parse mode) with a `code`
/// entity over each of its addresses, so Telegram links none of them, and no other entity.
fn assert_unlinked(sent: &Value) {
    let text = sent["text"].as_str().unwrap();
    assert!(
        text.contains(&support::LINKS.replace('@', "@\u{2060}")),
        "{sent:#}"
    );
    assert!(sent.get("parse_mode").is_none(), "{sent:#}");
    let code = entities(sent, "text", "entities");
    assert!(code.iter().all(|(kind, _)| kind == "code"), "{code:?}");
    let linked: Vec<String> = support::LINKED
        .iter()
        .map(|l| l.replace('@', "@\u{2060}"))
        .collect();
    let shown: Vec<String> = code.iter().map(|(_, s)| s.clone()).collect();
    assert!(
        shown.windows(linked.len()).any(|w| w == linked.as_slice()),
        "each address of LINKS is one code entity: {shown:?}"
    );
    // Every quote of an address is covered: none is left for Telegram to link.
    let mut units: Vec<u16> = text.encode_utf16().collect();
    for e in sent["entities"].as_array().unwrap() {
        let at = e["offset"].as_u64().unwrap() as usize;
        units[at..at + e["length"].as_u64().unwrap() as usize].fill(u16::from(b' '));
    }
    let uncovered = String::from_utf16(&units).unwrap();
    for raw in ["://", "evil.ex", "masked.ex"] {
        assert!(!uncovered.contains(raw), "{raw} left in {uncovered}");
    }
}

/// What `/note "TEXT"` and the alert delivery `alert` put on Telegram: the approval request
/// and the alert group's message.
async fn note_and_alert(text: &str, alert: String) -> (Value, Value) {
    let (app, fake) = app_with(&support::alerts_routed_to("telegram", &CHAT.to_string())).await;
    fake.push(command(1, ALICE, &format!("/note \"{text}\"")));
    let request = fake
        .wait_until("the approval request", |f| {
            f.calls("sendMessage").into_iter().next()
        })
        .await;
    assert!(
        request["text"].as_str().unwrap().contains("Request #1"),
        "{request:#}"
    );
    support::deliver_alerts(&app.url(""), alert).await;
    let group = fake
        .wait_until("the group message", |f| {
            f.calls("sendMessage").into_iter().nth(1)
        })
        .await;
    (request, group)
}

#[tokio::test]
async fn links_in_arguments_and_alerts_reach_telegram_as_code_entities() {
    let alert = support::alert_summarised(support::LINKS);
    let (request, group) = note_and_alert(support::LINKS, alert).await;
    assert_unlinked(&request);
    assert_unlinked(&group);
    let code: Vec<String> = entities(&group, "text", "entities")
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    for address in ["evil.example:9100", "http://prometheus.example:9090/graph"] {
        assert!(
            code.iter().any(|c| c == address),
            "{address} not code: {code:?}"
        );
    }
}

#[tokio::test]
async fn mentions_and_links_in_arguments_and_alerts_stay_plain_text() {
    let alert = support::alert_carrying(support::INJECTION);
    let (request, group) = note_and_alert(support::INJECTION, alert).await;
    assert_plain(&request);
    assert_plain(&group);
}

#[tokio::test]
async fn an_approval_request_telegram_refuses_as_chat_not_found_is_cancelled_and_logged() {
    let (logs, _capturing) = support::Captured::start("warn");
    let (app, fake) = app_with("").await;
    fake.chat_not_found
        .store(true, std::sync::atomic::Ordering::SeqCst);
    fake.push(command(1, ALICE, "/rollback@opsbot_test api"));
    let request_id = support::assert_request_withdrawn_unposted(&app).await;
    support::assert_warned(&logs.text(), &request_id, "Add opsbot to this chat again");
    assert_eq!(runs(&app), 0);
}

#[tokio::test]
async fn an_escalation_step_mentions_the_person_at_the_utf16_offset_after_the_emoji() {
    let clock = Arc::new(FakeClock::new(chrono::Utc::now()));
    let routed = format!(
        "[alerts]\nalertmanager_token = \"am-token-abc123\"\n\
         default_route = {{ platform = \"telegram\", channel = \"{CHAT}\", escalation = \"tg\" }}\n\
         [[escalation.policies]]\nname = \"tg\"\n\
         steps = [{{ after = \"0m\", notify = \"person:bob\" }}, {{ after = \"5m\", notify = \"person:alice\" }}]\n"
    );
    let (app, fake) = app_with_clock(&routed, Some(clock.clone())).await;
    support::fire_alerts(&app.url(""), "01-firing-single.json").await;
    let escalations = |f: &Fake| -> Vec<Value> {
        (f.calls("sendMessage").into_iter())
            .filter(|b| b["text"].as_str().unwrap_or_default().starts_with("🚨"))
            .collect()
    };
    // The escalation starts once the group's message is posted; sweep until its first step.
    let step = support::eventually("the first step", support::WAIT, async || {
        app.router.sweep().await.unwrap();
        escalations(&fake).into_iter().next().ok_or(())
    })
    .await;
    let text = step["text"].as_str().unwrap();
    assert!(text.ends_with(" @bob"), "{text}");
    let entities = step["entities"].as_array().expect("entities");
    assert_eq!(entities.len(), 1, "only bob: {step:#}");
    let e = &entities[0];
    assert_eq!(e["type"], "text_mention");
    assert_eq!(e["user"]["id"], BOB);
    let at = text.rfind("@bob").unwrap();
    // 🚨 is one char but two UTF-16 units: the offset counts units.
    assert_eq!(e["offset"], text[..at].encode_utf16().count());
    assert_eq!(e["length"], 4);

    // bob presses the step's Ack button: no second step.
    let button = &step["reply_markup"]["inline_keyboard"][0][0];
    let data = button["callback_data"].as_str().unwrap().to_owned();
    assert!(data.starts_with("/ack "), "{step:#}");
    fake.push(button_press(1, BOB, 1002, &data));
    fake.wait_until("the ack", |f| {
        (f.sent_texts().into_iter()).find(|t| t.contains("acknowledged by bob"))
    })
    .await;
    support::eventually("the escalation to stop", support::WAIT, async || {
        let stopped = app
            .store
            .due_escalations(clock.now() + chrono::Duration::hours(1), 10);
        stopped.await.unwrap().is_empty()
    })
    .await;
    clock.advance(Duration::from_secs(10 * 60));
    app.router.sweep().await.unwrap();
    app.wait_idle().await;
    assert_eq!(escalations(&fake).len(), 1, "no step after the ack");
}

/// An approved request whose start the audit log refuses runs nothing, and its channel, told
/// the result follows, is told it did not run instead of waiting for ever.
#[tokio::test]
async fn a_request_whose_start_cannot_be_audited_tells_its_channel_it_did_not_run() {
    let (app, fake) = app_with("").await;
    fake.push(command(1, ALICE, "/rollback@opsbot_test api"));
    let (request, _) = approval_request(&app, &fake).await;
    let db = support::sqlite_in(app.dir.path()).await;
    sqlx::query(
        "CREATE TRIGGER refuse_starts BEFORE INSERT ON audit_log \
         WHEN NEW.detail LIKE 'run #% started%' BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    )
    .execute(&db)
    .await
    .unwrap();
    fake.push(reaction(2, BOB, request, &[], &["👍"]));
    let told = fake
        .wait_until("the channel told", |f| {
            (f.calls("sendMessage").into_iter())
                .find(|b| b["text"].as_str().unwrap().contains("did not run"))
        })
        .await;
    assert_eq!(
        told["reply_parameters"]["message_id"],
        json!(request),
        "in reply to the request"
    );
    let text = told["text"].as_str().unwrap();
    assert!(text.starts_with("❌ Request #1 did not run"), "{text}");
    assert!(
        !text.contains("disk full"),
        "no internal error text: {text}"
    );
    assert_eq!(runs(&app), 0);
    let state: String = sqlx::query_scalar("SELECT state FROM runs WHERE id = 1")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(state, "failed");
}
