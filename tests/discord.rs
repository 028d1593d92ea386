//! The Discord adapter through the real serenity crate against a local fake Discord: REST
//! (recording every call) and a WebSocket gateway that says HELLO, takes IDENTIFY, sends READY
//! and then whatever dispatches a test pushes. Interactions-endpoint requests carry real
//! Ed25519 signatures.

mod support;

#[path = "support/discord.rs"]
mod discord_support;

use discord_support::*;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use opsbot::config::Config;
use opsbot::domain::Platform;
use serde_json::{Value, json};
use support::TestApp;

/// alice (deployer) and bob (sre-lead) on Discord.
fn team() -> String {
    support::deployer_and_lead(&format!("discord:{ALICE}"), &format!("discord:{BOB}"))
}

const RUNBOOK: &str = concat!(
    r#"
name = "rollback"
summary = "Roll a service back to its previous release"
roles = ["deployer"]
channels = ["ops"]
[[args]]
name = "service"
kind = "choice"
choices = ["api", "worker"]
"#,
    support::version_arg!(),
    support::one_lead_approval!(),
    r#"[action]
kind = "exec"
argv = ["./act.sh", "{service}"]
timeout = "10s"
"#
);

/// A runbook without approval whose output is 3000 characters.
const CHATTY: &str = r#"
name = "dump"
summary = "Print a lot"
roles = ["deployer"]
[action]
kind = "exec"
argv = ["./dump.sh"]
timeout = "10s"
"#;

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn discord_section(fake: &FakeDiscord, gateway: bool) -> String {
    let public_key = hex::encode(signing_key().verifying_key().to_bytes());
    format!(
        "[discord]\nbot_token = \"test-bot-token-0123456789\"\napplication_id = {APP_ID}\n\
         guild_id = {GUILD}\napi_url = \"{}\"\npublic_key = \"{public_key}\"\ngateway = {gateway}\n",
        fake.base
    )
}

/// The app with `config` and `commands`; `act.sh` counts its runs, `dump.sh` prints 3000
/// characters.
async fn spawn_bot(config: &str, commands: &[(&str, &str)]) -> TestApp {
    let line = "x".repeat(99);
    let dump = format!("#!/bin/sh\nfor i in $(seq 30); do echo {line}; done\n");
    let mut app = TestApp::builder()
        .config(config)
        .script("act.sh", support::COUNTING_ACT)
        .script("dump.sh", &dump);
    for (name, body) in commands {
        app = app.command(name, body);
    }
    app.spawn().await
}

/// The fake, and the team (alice deployer, bob sre-lead) on Discord with `commands`.
async fn team_with_discord(gateway: bool, commands: &[(&str, &str)]) -> (FakeDiscord, TestApp) {
    let fake = fake_discord().await;
    let bot = spawn_bot(
        &format!("{}{}", team(), discord_section(&fake, gateway)),
        commands,
    )
    .await;
    (fake, bot)
}

/// As [`team_with_discord`] over the interactions endpoint, with every alert group routed to
/// the channel.
async fn team_with_alerts(commands: &[(&str, &str)]) -> (FakeDiscord, TestApp) {
    let fake = fake_discord().await;
    let config = format!(
        "{}{}{}",
        team(),
        discord_section(&fake, false),
        support::alerts_routed_to("discord", CHANNEL)
    );
    let bot = spawn_bot(&config, commands).await;
    (fake, bot)
}

fn interaction(id: &str, user_id: &str, name: &str, options: Value) -> Value {
    json!({
        "id": id, "application_id": APP_ID, "type": 2,
        "data": { "id": "1200000000000000012", "name": name, "type": 1, "options": options },
        "guild_id": GUILD,
        "channel": { "id": CHANNEL, "name": "ops", "type": 0 },
        "channel_id": CHANNEL,
        "member": member(user_id, if user_id == ALICE { "alice" } else { "someone" }),
        "token": format!("token-{id}"), "version": 1, "locale": "en-US", "guild_locale": "en-US",
        "entitlements": [], "attachment_size_limit": 8388608
    })
}

/// Approve / Deny as opsbot renders them for request `run`: one action row, the command as the
/// `custom_id`, Success (3) and Danger (4).
fn approval_buttons(run: u32) -> Value {
    json!([{ "type": 1, "components": [
        { "type": 2, "style": 3, "disabled": false, "label": "Approve", "custom_id": format!("/approve {run}") },
        { "type": 2, "style": 4, "disabled": false, "label": "Deny", "custom_id": format!("/deny {run}") }
    ]}])
}

/// A MESSAGE_COMPONENT interaction: `user_id` pressed the button `custom_id` on `message_id`.
fn press(id: &str, user_id: &str, custom_id: &str, message_id: &str) -> Value {
    let mut pressed = message(message_id, CHANNEL, "Request #1");
    pressed["components"] = approval_buttons(1);
    json!({
        "id": id, "application_id": APP_ID, "type": 3,
        "data": { "custom_id": custom_id, "component_type": 2 },
        "guild_id": GUILD,
        "channel": { "id": CHANNEL, "name": "ops", "type": 0 },
        "channel_id": CHANNEL,
        "member": member(user_id, "presser"),
        "message": pressed,
        "token": format!("token-{id}"), "version": 1, "locale": "en-US", "guild_locale": "en-US",
        "app_permissions": "2248473465835073", "entitlements": [], "attachment_size_limit": 8388608
    })
}

fn reaction(user_id: &str, message_id: &str, emoji: &str) -> Value {
    json!({
        "user_id": user_id, "channel_id": CHANNEL, "message_id": message_id, "guild_id": GUILD,
        "member": member(user_id, "reactor"), "emoji": { "id": null, "name": emoji },
        "burst": false, "type": 0
    })
}

#[test]
fn the_fakes_payloads_are_what_serenity_reads() {
    use serenity::all::{Interaction, Message, Reaction};
    let i: Interaction = serde_json::from_value(interaction(
        "1",
        ALICE,
        "rollback",
        json!([{ "name": "service", "type": 3, "value": "api" }]),
    ))
    .unwrap();
    let cmd = i.command().unwrap();
    assert_eq!(cmd.user.id.to_string(), ALICE);
    assert_eq!(cmd.channel.unwrap().name.as_deref(), Some("ops"));
    let i: Interaction = serde_json::from_value(press("2", BOB, "/approve 1", "42")).unwrap();
    let pressed = i.message_component().unwrap();
    assert_eq!(pressed.user.id.to_string(), BOB);
    assert_eq!(pressed.data.custom_id, "/approve 1");
    assert_eq!(pressed.message.id.to_string(), "42");
    assert_eq!(pressed.message.components[0].components.len(), 2);
    let r: Reaction = serde_json::from_value(reaction(BOB, "42", "✅")).unwrap();
    assert_eq!(r.user_id.unwrap().to_string(), BOB);
    let _: Message = serde_json::from_value(message("1", CHANNEL, "hi")).unwrap();
}

#[tokio::test]
async fn rollback_requested_by_slash_command_runs_once_after_an_approvers_reaction() {
    let (fake, bot) = team_with_discord(true, &[("rollback.toml", RUNBOOK)]).await;
    let original = request_rollback_on_the_gateway(&fake, &bot, "1100000000000000011").await;
    let deferred = fake
        .wait_for("the deferred callback", |c| {
            c.path
                .ends_with("/interactions/1100000000000000011/token-1100000000000000011/callback")
        })
        .await;
    assert_eq!(deferred.body["type"], 5, "deferred channel message");
    assert_eq!(original.method, "PATCH");
    assert!(original.path.starts_with(&format!(
        "/api/v10/webhooks/{APP_ID}/token-1100000000000000011/"
    )));
    assert!(
        content_of(&original).contains("Request #1: /rollback service=api requested by alice"),
        "{original:?}"
    );
    let approval = original.answered_id.unwrap();
    fake.wait_for("the bot's ✅ hint on the request", |c| {
        c.method == "PUT" && c.path.contains(&format!("/messages/{approval}/reactions/"))
    })
    .await;

    // The bot's own hint reaction, the requester's and a stranger's do not approve.
    fake.push("MESSAGE_REACTION_ADD", reaction(BOT, &approval, "✅"));
    fake.push("MESSAGE_REACTION_ADD", reaction(ALICE, &approval, "✅"));
    fake.push("MESSAGE_REACTION_ADD", reaction(STRANGER, &approval, "✅"));
    // Bob's ✅ from another server the bot is in is not from the configured guild: ignored.
    let mut elsewhere = reaction(BOB, &approval, "✅");
    elsewhere["guild_id"] = json!("999999999999999999");
    fake.push("MESSAGE_REACTION_ADD", elsewhere);
    wait("the refusals", || {
        let alice = fake.posts_containing("needs one of the roles sre-lead");
        let stranger = fake.posts_containing(&format!("I don't know discord:{STRANGER}"));
        (!alice.is_empty() && !stranger.is_empty()).then_some(())
    })
    .await;
    assert_eq!(bot.runs(), 0, "nothing ran");

    fake.push("MESSAGE_REACTION_ADD", reaction(BOB, &approval, "✅"));
    let result = wait("the run's output in the channel", || {
        fake.posts_containing("succeeded").into_iter().next()
    })
    .await;
    assert_eq!(result.path, format!("/api/v10/channels/{CHANNEL}/messages"));
    assert!(
        content_of(&result).contains("rolled back api"),
        "{result:?}"
    );
    assert_eq!(
        result.body["message_reference"]["message_id"], approval,
        "answers the approval request"
    );
    assert_eq!(bot.runs(), 1, "ran exactly once");
    assert!(
        fake.posts_containing(&format!("discord:{BOT}")).is_empty(),
        "the bot's own reaction was not taken as a vote"
    );
    bot.wait_idle().await;
    let audit = bot.store.recent_audit(20).await.unwrap();
    let mut bobs: Vec<_> = audit
        .iter()
        .filter(|r| r.entry.actor == format!("discord:{BOB}"))
        .map(|r| r.entry.command.as_str())
        .collect();
    // Oldest first, the run's start, then his approval (answered once the run started) and
    // how the run ended, in either order; the other server's ✅ left no trace.
    bobs.reverse();
    assert_eq!(bobs[0], "rollback", "{bobs:?}");
    bobs[1..].sort_unstable();
    assert_eq!(bobs, ["rollback", "approve", "rollback"]);
}

/// Alice asks for a rollback with a slash command; the approval request's id once bound.
async fn request_rollback_on_the_gateway(fake: &FakeDiscord, bot: &TestApp, id: &str) -> Call {
    fake.wait_ready().await;
    fake.push(
        "INTERACTION_CREATE",
        interaction(
            id,
            ALICE,
            "rollback",
            json!([{ "name": "service", "type": 3, "value": "api" }]),
        ),
    );
    let original = fake
        .wait_for("the approval request", |c| {
            c.path.ends_with("/messages/@original") && content_of(c).contains("Request #1")
        })
        .await;
    let approval = original.answered_id.clone().unwrap();
    let store = &bot.store;
    support::eventually("the approval message to be bound", SLOW, async || {
        let bound = store.run_by_message(Platform::Discord, CHANNEL, &approval);
        bound.await.unwrap().is_some()
    })
    .await;
    original
}

/// The rollback's output arrives in the channel as a reply to the approval request, the
/// request loses its buttons, and once the app has finished all it started (every delivery
/// of the press included) the script has run only once.
async fn assert_ran_once_in_reply_to(fake: &FakeDiscord, bot: &TestApp, approval: &str) {
    // The request was a slash command's answer: edited with that interaction's token,
    // which works even where the bot user cannot see the channel.
    let retired = fake
        .wait_for("the request's buttons removed", |c| {
            c.method == "PATCH"
                && c.path.ends_with("/messages/@original")
                && content_of(c).contains("approved by")
        })
        .await;
    assert_eq!(retired.body["components"], json!([]), "{:?}", retired.body);
    assert!(
        content_of(&retired).contains("approved by bob"),
        "{:?}",
        retired.body
    );
    let result = wait("the run's output in the channel", || {
        fake.posts_containing("succeeded").into_iter().next()
    })
    .await;
    assert!(
        content_of(&result).contains("rolled back api"),
        "{result:?}"
    );
    assert_eq!(result.body["message_reference"]["message_id"], approval);
    bot.wait_idle().await;
    assert_eq!(bot.runs(), 1, "ran exactly once");
}

#[tokio::test]
async fn approval_buttons_refuse_the_requester_and_run_once_for_an_approver() {
    let (fake, bot) = team_with_discord(true, &[("rollback.toml", RUNBOOK)]).await;
    let original = request_rollback_on_the_gateway(&fake, &bot, "1100000000000000041").await;
    assert_eq!(original.body["components"], approval_buttons(1));
    let approval = original.answered_id.unwrap();

    // Alice presses Approve on her own request: acknowledged (deferred update), refused.
    fake.push(
        "INTERACTION_CREATE",
        press("1100000000000000042", ALICE, "/approve 1", &approval),
    );
    let ack = fake
        .wait_for("the deferred update", |c| {
            c.path
                .ends_with("/interactions/1100000000000000042/token-1100000000000000042/callback")
        })
        .await;
    assert_eq!(ack.method, "POST");
    assert_eq!(ack.body["type"], 6, "deferred update: the message stays");
    let refusal = wait("the refusal", || {
        fake.posts_containing("approving #1 needs one of the roles sre-lead")
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        refusal.body["message_reference"]["message_id"], approval,
        "answers the approval request"
    );
    assert_eq!(bot.runs(), 0, "nothing ran");

    // Bob presses Approve; the same interaction delivered again (another session) is dropped.
    for _ in 0..2 {
        fake.push(
            "INTERACTION_CREATE",
            press("1100000000000000043", BOB, "/approve 1", &approval),
        );
    }
    // A later event on the same gateway session: once it is answered, the redelivery before
    // it has been dispatched as well, so waiting for the app to go idle covers it too.
    fake.push("MESSAGE_REACTION_ADD", reaction(STRANGER, &approval, "✅"));
    wait("the answer to the later event", || {
        let stranger = fake.posts_containing(&format!("I don't know discord:{STRANGER}"));
        stranger.into_iter().next()
    })
    .await;
    assert_ran_once_in_reply_to(&fake, &bot, &approval).await;
    let acks = fake
        .calls()
        .iter()
        .filter(|c| c.path.contains("/interactions/1100000000000000043/"))
        .count();
    assert_eq!(acks, 1, "the redelivery was not acknowledged or run again");
    let audit = bot.store.recent_audit(20).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.entry.actor == format!("discord:{BOB}") && r.entry.command == "approve")
    );
}

#[tokio::test]
async fn a_signed_button_press_gets_a_deferred_update_then_runs_once() {
    let (fake, bot) = team_with_discord(false, &[("rollback.toml", RUNBOOK)]).await;
    let body = interaction(
        "1100000000000000051",
        ALICE,
        "rollback",
        json!([{ "name": "service", "type": 3, "value": "api" }]),
    )
    .to_string();
    let resp = post_signed(&bot, &body).await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({ "type": 5 }));
    let original = fake
        .wait_for("the approval request", |c| {
            c.path.ends_with("/messages/@original") && content_of(c).contains("Request #1")
        })
        .await;
    assert_eq!(original.body["components"], approval_buttons(1));
    let approval = original.answered_id.unwrap();
    fake.wait_for("the bot's hint on the request", |c| {
        c.method == "PUT" && c.path.contains(&format!("/messages/{approval}/reactions/"))
    })
    .await;

    let body = press("1100000000000000052", BOB, "/approve 1", &approval).to_string();
    for _ in 0..2 {
        let started = Instant::now();
        let resp = post_signed(&bot, &body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.unwrap(), json!({ "type": 6 }));
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    assert_ran_once_in_reply_to(&fake, &bot, &approval).await;
}

#[tokio::test]
async fn alert_groups_carry_ack_buttons_that_go_away_once_pressed() {
    let (fake, bot) = team_with_alerts(&[]).await;
    support::fire_alerts(&bot.base(), "01-firing-single.json").await;
    let id = bot.store.active_alerts(1).await.unwrap()[0].id;
    let group = fake
        .wait_for("the group message", |c| content_of(c).contains("FIRING"))
        .await;
    assert_eq!(
        group.body["components"],
        json!([{ "type": 1, "components": [
            { "type": 2, "style": 3, "disabled": false, "label": format!("Ack #{id}"), "custom_id": format!("/ack {id}") }
        ]}])
    );
    let group_id = group.answered_id.unwrap();

    let body = press("1100000000000000061", BOB, &format!("/ack {id}"), &group_id).to_string();
    let resp = post_signed(&bot, &body).await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({ "type": 6 }));
    let edit = fake
        .wait_for("the group message edited", |c| {
            c.method == "PATCH" && c.path.ends_with(&format!("/messages/{group_id}"))
        })
        .await;
    assert!(
        content_of(&edit).contains("(acked by bob)"),
        "{:?}",
        edit.body
    );
    assert_eq!(
        edit.body["components"],
        json!([]),
        "an empty list, so Discord drops the old button"
    );
    let acked = bot.store.alert(id).await.unwrap().unwrap();
    assert_eq!(
        acked.acked_by.as_deref(),
        Some("bob"),
        "acked as the presser"
    );
}

#[tokio::test]
async fn channel_messages_with_actions_carry_one_row_of_buttons() {
    use opsbot::adapters::discord::DiscordApi;
    use opsbot::ports::{ChatAction, ChatOutbound, OutboundMessage, OutboundTarget};
    let fake = fake_discord().await;
    let config = Config::from_toml(
        std::path::Path::new("opsbot.toml"),
        &discord_section(&fake, false),
        &[],
    )
    .unwrap();
    let api = DiscordApi::new(config.discord.as_ref().unwrap());
    let to = OutboundTarget {
        platform: Platform::Discord,
        channel_id: CHANNEL.into(),
        thread: None,
    };
    let action = |label: &str, command: String, danger| ChatAction {
        label: label.into(),
        command,
        danger,
    };
    let message = OutboundMessage::text("Request #7").with_actions(vec![
        action("Approve", "/approve 7".into(), false),
        action("Too long", format!("/note {}", "x".repeat(100)), false),
        action("Deny", "/deny 7".into(), true),
    ]);
    api.send(&to, &message).await.unwrap();
    api.send(&to, &opsbot::ports::OutboundMessage::text("plain"))
        .await
        .unwrap();
    let posts = fake.calls();
    assert_eq!(
        posts[0].body["components"],
        json!([{ "type": 1, "components": [
            { "type": 2, "style": 3, "disabled": false, "label": "Approve", "custom_id": "/approve 7" },
            { "type": 2, "style": 4, "disabled": false, "label": "Deny", "custom_id": "/deny 7" }
        ]}]),
        "the over-long command gets no button rather than a cut one"
    );
    assert_eq!(content_of(&posts[0]), "Request #7");
    assert!(
        posts[1]
            .body
            .get("components")
            .is_none_or(|c| c == &json!([])),
        "{:?}",
        posts[1].body
    );
}

#[tokio::test]
async fn slash_commands_are_registered_in_the_guild_with_choices_and_safe_intents() {
    let (fake, _bot) = team_with_discord(true, &[("rollback.toml", RUNBOOK)]).await;
    let put = fake
        .wait_for("command registration", |c| {
            c.method == "PUT" && c.path.ends_with("/commands")
        })
        .await;
    assert_eq!(
        put.path,
        format!("/api/v10/applications/{APP_ID}/guilds/{GUILD}/commands")
    );
    let commands = put.body.as_array().unwrap();
    let by_name = |n: &str| commands.iter().find(|c| c["name"] == n).cloned();
    let rollback = by_name("rollback").expect("the runbook is registered");
    assert_eq!(
        rollback["description"],
        "Roll a service back to its previous release"
    );
    let service = &rollback["options"][0];
    assert_eq!(service["name"], "service");
    assert_eq!(service["required"], true);
    assert_eq!(
        service["choices"],
        json!([{ "name": "api", "value": "api" }, { "name": "worker", "value": "worker" }])
    );
    assert_eq!(rollback["options"][1]["name"], "to");
    assert_eq!(rollback["options"][1]["required"], false);
    for builtin in opsbot::router::builtins::NAMES {
        assert!(by_name(builtin).is_some(), "{builtin} is registered");
    }
    assert_eq!(by_name("approve").unwrap()["options"][0]["required"], true);
    assert_eq!(
        by_name("version").expect("/version is registered")["description"],
        "show which opsbot version is running"
    );
    let identify = wait("IDENTIFY", || {
        fake.state.identified.lock().unwrap().first().cloned()
    })
    .await;
    // GUILDS | GUILD_MESSAGE_REACTIONS | DIRECT_MESSAGE_REACTIONS; nothing privileged.
    assert_eq!(identify["intents"], 1 | (1 << 10) | (1 << 13));
    assert_eq!(identify["token"], "Bot test-bot-token-0123456789");
}

fn sign(key: &SigningKey, timestamp: &str, body: &str) -> String {
    hex::encode(key.sign(format!("{timestamp}{body}").as_bytes()).to_bytes())
}

async fn post_interaction(bot: &TestApp, body: &str, signature: Option<&str>) -> reqwest::Response {
    post_at(bot, body, &now(), signature).await
}

/// Posts `body` with `X-Signature-Timestamp: timestamp` and, if given, `signature`.
async fn post_at(
    bot: &TestApp,
    body: &str,
    timestamp: &str,
    signature: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(bot.url("/discord/interactions"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        req = req
            .header("x-signature-ed25519", signature)
            .header("x-signature-timestamp", timestamp);
    }
    req.send().await.unwrap()
}

/// Now, as Discord puts it in `X-Signature-Timestamp`.
fn now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

/// Posts `body` signed with the application's key, as Discord does.
async fn post_signed(bot: &TestApp, body: &str) -> reqwest::Response {
    let ts = now();
    post_at(bot, body, &ts, Some(&sign(&signing_key(), &ts, body))).await
}

#[tokio::test]
async fn the_interactions_endpoint_answers_ping_and_refuses_bad_signatures() {
    let (fake, bot) = team_with_discord(false, &[("rollback.toml", RUNBOOK)]).await;
    let ping =
        json!({ "id": "1", "application_id": APP_ID, "type": 1, "token": "t", "version": 1 })
            .to_string();
    let resp = post_signed(&bot, &ping).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({ "type": 1 }));

    let command = interaction(
        "1100000000000000021",
        ALICE,
        "rollback",
        json!([{ "name": "service", "type": 3, "value": "api" }]),
    )
    .to_string();
    let other_key = SigningKey::from_bytes(&[8; 32]);
    // Every request carries this timestamp, so "signed for another second" is another
    // second even when the clock ticks mid-test.
    let at = now();
    let good = sign(&signing_key(), &at, &command);
    let later = (at.parse::<i64>().unwrap() + 1).to_string();
    for (body, signature) in [
        (command.clone(), None),
        (command.clone(), Some("00".repeat(64))),
        (command.clone(), Some(sign(&other_key, &at, &command))),
        (command.replace("api", "worker"), Some(good.clone())),
        (
            command.clone(),
            Some(sign(&signing_key(), &later, &command)),
        ),
    ] {
        let resp = post_at(&bot, &body, &at, signature.as_deref()).await;
        assert_eq!(resp.status(), 401, "signature {signature:?}");
    }
    assert!(
        bot.store.recent_audit(10).await.unwrap().is_empty(),
        "nothing reached the router"
    );
    assert!(fake.calls().is_empty(), "nothing was sent to Discord");
    assert_eq!(bot.runs(), 0);
}

#[tokio::test]
async fn signed_interactions_with_stale_future_or_unreadable_timestamps_are_refused() {
    let (fake, bot) = team_with_discord(false, &[]).await;
    let body = interaction("1100000000000000041", ALICE, "status", json!([])).to_string();
    let now = chrono::Utc::now().timestamp();
    // 2023, six minutes ago, six minutes ahead, the year 2286, and not a number: each
    // correctly signed over its own timestamp.
    let stale = (now - 360).to_string();
    let ahead = (now + 360).to_string();
    for timestamp in ["1700000000", &stale, &ahead, "9999999999", "abc"] {
        let signature = sign(&signing_key(), timestamp, &body);
        let resp = post_at(&bot, &body, timestamp, Some(&signature)).await;
        assert_eq!(resp.status(), 401, "timestamp {timestamp}");
    }
    assert!(bot.store.recent_audit(10).await.unwrap().is_empty());
    assert!(fake.calls().is_empty(), "nothing was sent to Discord");

    // Within the window (a little clock skew either way) it is taken.
    let skewed = (now - 60).to_string();
    let resp = post_at(
        &bot,
        &body,
        &skewed,
        Some(&sign(&signing_key(), &skewed, &body)),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({ "type": 5 }));
}

#[tokio::test]
async fn an_interaction_from_another_server_is_refused_on_the_endpoint_as_on_the_gateway() {
    let (fake, bot) = team_with_discord(false, &[("rollback.toml", RUNBOOK)]).await;
    // A channel called "ops" in a server the bot was also invited to.
    let mut command = interaction(
        "1100000000000000051",
        ALICE,
        "rollback",
        json!([{ "name": "service", "type": 3, "value": "api" }]),
    );
    command["guild_id"] = json!("999999999999999999");
    let resp = post_signed(&bot, &command.to_string()).await;
    assert_eq!(resp.status(), 200);
    let answer = resp.json::<Value>().await.unwrap();
    assert_eq!(answer["type"], 4, "{answer}");
    assert_eq!(
        answer["data"]["flags"], 64,
        "only the person sees it: {answer}"
    );

    let mut press = press(
        "1100000000000000052",
        BOB,
        "/approve 1",
        "1300000000000000001",
    );
    press["guild_id"] = json!("999999999999999999");
    let resp = post_signed(&bot, &press.to_string()).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["type"], 4);

    bot.wait_idle().await;
    assert!(
        bot.store.recent_audit(10).await.unwrap().is_empty(),
        "nothing ran"
    );
    assert!(fake.calls().is_empty(), "nothing was sent to Discord");
    let recorded = bot
        .store
        .first_delivery(
            Platform::Discord,
            "interaction:1100000000000000051",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    assert!(
        recorded,
        "the refused interaction was not recorded as handled"
    );
}

#[tokio::test]
async fn debug_logs_never_show_the_bot_token_or_an_interaction_token() {
    let (logs, _capturing) = support::Captured::start("debug");
    let (fake, bot) = team_with_discord(false, &[]).await;
    let body = interaction("1100000000000000061", ALICE, "status", json!([])).to_string();
    assert_eq!(post_signed(&bot, &body).await.status(), 200);
    fake.wait_for("the edited original response", |c| {
        c.path
            .contains("/token-1100000000000000061/messages/@original")
    })
    .await;
    bot.wait_idle().await;
    let text = logs.text();
    assert!(text.contains("DEBUG"), "debug logs were captured: {text}");
    assert!(!text.contains("token-1100000000000000061"), "{text}");
    assert!(!text.contains("test-bot-token-0123456789"), "{text}");
}

#[tokio::test]
async fn a_signed_command_is_deferred_then_the_original_response_is_edited() {
    let (fake, bot) =
        team_with_discord(false, &[("rollback.toml", RUNBOOK), ("dump.toml", CHATTY)]).await;
    let body = interaction("1100000000000000031", ALICE, "status", json!([])).to_string();
    let started = Instant::now();
    let resp = post_signed(&bot, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({ "type": 5 }));
    assert!(started.elapsed() < Duration::from_secs(3));
    let edit = fake
        .wait_for("the edited original response", |c| {
            c.path
                == format!(
                    "/api/v10/webhooks/{APP_ID}/token-1100000000000000031/messages/@original"
                )
        })
        .await;
    assert!(
        content_of(&edit).contains("No health checks are configured."),
        "{edit:?}"
    );
    let audit = bot.store.recent_audit(1).await.unwrap();
    assert_eq!(audit[0].entry.actor, format!("discord:{ALICE}"));
    assert_eq!(audit[0].entry.channel, format!("discord:{CHANNEL}"));

    // The same request again (a replay) runs nothing twice.
    let resp = post_signed(&bot, &body).await;
    assert_eq!(resp.status(), 200);

    // 3000 characters of output: a short head in the message, the whole text attached.
    let body = interaction("1100000000000000032", ALICE, "dump", json!([])).to_string();
    let resp = post_signed(&bot, &body).await;
    assert_eq!(resp.status(), 200);
    let edit = fake
        .wait_for("the long answer", |c| {
            c.path
                .contains("/token-1100000000000000032/messages/@original")
        })
        .await;
    assert!(content_of(&edit).chars().count() <= 2000, "{edit:?}");
    assert!(content_of(&edit).contains("attached as output.txt"));
    let (name, file) = &edit.files[0];
    assert_eq!(name, "output.txt");
    assert!(file.chars().count() >= 3000);
    assert_eq!(file.matches(&"x".repeat(99)).count(), 30, "nothing cut");
    let status_answers = fake
        .calls()
        .iter()
        .filter(|c| c.path.contains("/token-1100000000000000031/"))
        .count();
    assert_eq!(status_answers, 1, "the replay was answered once only");
}

#[tokio::test]
async fn an_answer_racing_its_own_deferral_is_edited_again() {
    let (fake, bot) = team_with_discord(false, &[]).await;
    fake.state.unknown_webhook.store(2, Ordering::SeqCst);
    let body = interaction("1100000000000000041", ALICE, "status", json!([])).to_string();
    assert_eq!(post_signed(&bot, &body).await.status(), 200);
    let edit = fake
        .wait_for("the answer after two 404s", |c| {
            c.path
                .ends_with("/token-1100000000000000041/messages/@original")
                && c.answered_id.is_some()
        })
        .await;
    assert!(content_of(&edit).contains("No health checks are configured."));
    let attempts = fake
        .calls()
        .iter()
        .filter(|c| c.path.contains("/token-1100000000000000041/"))
        .count();
    assert_eq!(attempts, 3);
}

#[tokio::test]
async fn a_429_on_a_channel_post_delays_but_does_not_lose_the_message() {
    let fake = fake_discord().await;
    fake.state.rate_limit_posts.store(1, Ordering::SeqCst);
    let config = format!(
        "{}{}",
        discord_section(&fake, false),
        support::alerts_routed_to("discord", CHANNEL)
    );
    let bot = spawn_bot(&config, &[]).await;
    support::fire_alerts(&bot.base(), "01-firing-single.json").await;
    let delivered = fake
        .wait_for("the alert after the 429", |c| c.answered_id.is_some())
        .await;
    assert_eq!(
        delivered.path,
        format!("/api/v10/channels/{CHANNEL}/messages")
    );
    let posts: Vec<Call> = fake
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2, "one refused, then one delivered: {posts:?}");
    assert_eq!(
        posts[0].body, posts[1].body,
        "the same message, not a duplicate"
    );
}

#[tokio::test]
async fn an_unreachable_gateway_does_not_stop_the_http_server() {
    let fake = fake_discord().await;
    // Nothing listens where the gateway should be: serenity keeps retrying in the background.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    *fake.state.ws_url.lock().unwrap() = format!("ws://{}", dead.local_addr().unwrap());
    drop(dead);
    let config = format!(
        "[discord]\nbot_token = \"test-bot-token-0123456789\"\napplication_id = {APP_ID}\napi_url = \"{}\"\n",
        fake.base
    );
    let bot = spawn_bot(&config, &[]).await;
    fake.wait_for("the gateway URL lookup", |c| c.path == "/api/v10/gateway")
        .await;
    let resp = reqwest::get(bot.url("/healthz")).await.unwrap();
    assert_eq!(resp.status(), 200);
    // No public key: the interactions endpoint does not exist.
    let resp = post_interaction(&bot, "{}", Some("00")).await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn a_rejected_token_is_not_retried_and_the_http_server_stays_up() {
    let fake = fake_discord().await;
    fake.state.reject_token.store(true, Ordering::SeqCst);
    let bot = spawn_bot(&discord_section(&fake, true), &[]).await;
    // The gateway says it gives up (and stops) once Discord refuses the token.
    bot.wait_for_readyz("adapter discord: off (login refused")
        .await;
    assert_eq!(
        fake.state.identified.lock().unwrap().len(),
        1,
        "logged in once, not retried"
    );
    let resp = reqwest::get(bot.url("/healthz")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn invalid_discord_settings_refuse_to_start_with_a_clear_message() {
    let load = |section: &str| {
        Config::from_toml(std::path::Path::new("opsbot.toml"), section, &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let base = "[discord]\nbot_token = \"test-bot-token-0123456789\"\n";
    assert!(load(&format!("{base}application_id = 0\n")).contains("discord.application_id"));
    assert!(
        load(&format!("{base}application_id = 1\npublic_key = \"abc\"\n"))
            .contains("discord.public_key must be the 64 hex digits")
    );
    assert!(
        load(&format!("{base}application_id = 1\nguild_id = 0\n")).contains("discord.guild_id")
    );
    assert!(
        load(&format!(
            "{base}application_id = 1\napi_url = \"discord.com\"\n"
        ))
        .contains("api_url")
    );
    assert!(load(&format!("{base}application_id = 1\nintents = 3\n")).contains("intents"));
    assert!(
        load("[discord]\nbot_token = \"\"\napplication_id = 1\n")
            .contains("discord.bot_token must be at least")
    );
    let ok = Config::from_toml(
        std::path::Path::new("opsbot.toml"),
        &format!("{base}application_id = 1\n"),
        &[],
    )
    .unwrap();
    let d = ok.discord.unwrap();
    assert!(d.gateway && d.guild_id.is_none() && d.api_url == "https://discord.com");
    assert!(
        !format!("{d:?}").contains("test-bot-token"),
        "the token never prints"
    );
}

/// Asserts that a message the bot sent or edited quotes `INJECTION` and pings nobody.
fn assert_quiet(call: &Call) {
    assert!(
        // Shown, with a zero-width space that keeps `@everyone` from reading as a mention,
        // and the address as code, which Discord does not link.
        content_of(call).contains("<`https://evil.example|Approve`> @\u{200B}everyone"),
        "{call:?}"
    );
    assert_eq!(
        call.body["allowed_mentions"]["parse"],
        json!([]),
        "mentions are not parsed: {call:?}"
    );
    for list in ["users", "roles"] {
        let named = &call.body["allowed_mentions"][list];
        assert!(named.as_array().is_none_or(Vec::is_empty), "{call:?}");
    }
}

/// Asserts that a message the bot sent or edited shows `LINKS` with every address as an
/// inline code span (Discord links nothing in code, nor reads `[x](`…`)` as a masked link).
fn assert_unlinked(call: &Call) {
    let content = content_of(call);
    assert!(content.contains(support::LINKS_AS_CODE), "{call:?}");
    support::assert_no_bare_link(content);
}

/// What `/note TEXT` and the alert delivery `alert` put on Discord: the approval request,
/// the alert group's message, and that message's edit once bob acks its alert by button.
async fn note_alert_and_ack(text: &str, alert: String) -> (Call, Call, Call) {
    let (fake, bot) = team_with_alerts(&[("note.toml", support::NOTE_NEEDING_ONE_LEAD)]).await;
    let option = json!([{ "name": "text", "type": 3, "value": text }]);
    let body = interaction("1100000000000000071", ALICE, "note", option).to_string();
    assert_eq!(post_signed(&bot, &body).await.status(), 200);
    let request = fake
        .wait_for("the approval request", |c| {
            c.path
                .contains("/token-1100000000000000071/messages/@original")
        })
        .await;
    assert!(content_of(&request).contains("Request #1"), "{request:?}");

    support::deliver_alerts(&bot.base(), alert).await;
    let group = fake
        .wait_for("the group message", |c| content_of(c).contains("FIRING"))
        .await;
    assert_eq!(group.method, "POST");
    let id = bot.store.active_alerts(1).await.unwrap()[0].id;
    let group_id = group.answered_id.clone().unwrap();
    let body = press("1100000000000000072", BOB, &format!("/ack {id}"), &group_id).to_string();
    assert_eq!(post_signed(&bot, &body).await.status(), 200);
    let edit = fake
        .wait_for("the group message's edit", |c| {
            c.method == "PATCH" && c.path.ends_with(&format!("/messages/{group_id}"))
        })
        .await;
    (request, group, edit)
}

#[tokio::test]
async fn links_in_arguments_and_alerts_reach_discord_as_code() {
    let alert = support::alert_summarised(support::LINKS);
    let (request, group, edit) = note_alert_and_ack(support::LINKS, alert).await;
    assert_unlinked(&request);
    // In the ``` block of what will run, the argument is left as typed: code already.
    let fenced = content_of(&request).split("```").nth(1).unwrap();
    assert!(
        fenced.contains(" https://evil.example/login "),
        "{request:?}"
    );
    assert_unlinked(&group);
    for address in support::ALERT_ADDRESSES_AS_CODE {
        assert!(
            content_of(&group).contains(address),
            "{address} missing: {group:?}"
        );
    }
    assert!(content_of(&edit).contains("(acked by bob)"), "{edit:?}");
    assert_unlinked(&edit);
}

#[tokio::test]
async fn mentions_in_arguments_and_alerts_ping_nobody() {
    let alert = support::alert_carrying(support::INJECTION);
    let (request, group, edit) = note_alert_and_ack(support::INJECTION, alert).await;
    assert_quiet(&request);
    assert_quiet(&group);
    // Its edit, after an ack, is as quiet.
    assert_quiet(&edit);
}

#[tokio::test]
async fn an_approval_request_discord_refuses_with_missing_access_is_cancelled_and_logged() {
    let (logs, _capturing) = support::Captured::start("warn");
    let (fake, bot) = team_with_discord(false, &[("rollback.toml", RUNBOOK)]).await;
    fake.state.missing_access.store(true, Ordering::SeqCst);
    let body = interaction(
        "1100000000000000051",
        ALICE,
        "rollback",
        json!([{ "name": "service", "type": 3, "value": "api" }]),
    )
    .to_string();
    assert_eq!(post_signed(&bot, &body).await.status(), 200);
    let request_id = support::assert_request_withdrawn_unposted(&bot).await;
    support::assert_warned(&logs.text(), &request_id, "View Channel and Send Messages");
}

#[tokio::test]
async fn an_escalation_step_allows_exactly_the_on_call_to_be_mentioned() {
    let fake = fake_discord().await;
    let config = format!(
        "{}{}[alerts]\nalertmanager_token = \"am-token-abc123\"\n\
         default_route = {{ platform = \"discord\", channel = \"{CHANNEL}\", escalation = \"dc\" }}\n\
         [[oncall.schedules]]\nname = \"leads\"\ntime_zone = \"UTC\"\n\
         [[oncall.schedules.layers]]\nname = \"primary\"\npeople = [\"bob\"]\nshift = \"weekly\"\n\
         handoff = \"09:00\"\nstart = \"2026-01-05\"\n\
         [[escalation.policies]]\nname = \"dc\"\nsteps = [{{ after = \"0m\", notify = \"schedule:leads\" }}]\n",
        team(),
        discord_section(&fake, false),
    );
    let bot = spawn_bot(&config, &[]).await;
    support::fire_alerts(&bot.base(), "01-firing-single.json").await;
    let is_step = |c: &Call| c.method == "POST" && content_of(c).starts_with("🚨");
    let step = support::eventually("the escalation step", support::WAIT, async || {
        bot.router.sweep().await.unwrap();
        fake.calls().into_iter().find(is_step).ok_or(())
    })
    .await;
    assert!(
        content_of(&step).ends_with(&format!(" <@{BOB}>")),
        "{step:?}"
    );
    assert_eq!(
        step.body["allowed_mentions"]["users"],
        json!([BOB]),
        "{step:?}"
    );
    assert_eq!(
        step.body["allowed_mentions"]["parse"],
        json!([]),
        "{step:?}"
    );
    bot.router.sweep().await.unwrap();
    bot.wait_idle().await;
    assert_eq!(
        fake.calls().iter().filter(|c| is_step(c)).count(),
        1,
        "a policy without repeat fires once"
    );
}
