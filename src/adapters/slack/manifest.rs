//! The Slack app manifest, generated from what the code and the catalogue use so that it always
//! matches: one slash command per built-in and per runbook, the bot scopes of every Web API
//! method and event the adapter uses, and the request URLs of its routes (none in Socket Mode).
//! `opsbot slack-manifest` prints it; a new runbook needs it printed and applied again.

use serde_json::{Value, json};

use crate::catalog::Catalog;
use crate::router::builtins::BUILTINS;

/// The bot scopes, each with the calls and events that need it.
pub const SCOPES: &[(&str, &str)] = &[
    ("commands", "slash commands"),
    (
        "chat:write",
        "replies, approval requests, alert group messages (chat.postMessage, chat.update)",
    ),
    (
        "reactions:read",
        "reaction_added / reaction_removed for approvals and acks",
    ),
    (
        "channels:read",
        "public channel names for allow-lists (conversations.info)",
    ),
    (
        "groups:read",
        "private channel names for allow-lists (conversations.info)",
    ),
];

/// The Events API subscriptions the adapter handles.
pub const BOT_EVENTS: &[&str] = &["reaction_added", "reaction_removed"];

/// Slack's limit for a slash command's description and usage hint.
const DESCRIPTION_MAX: usize = 100;

/// Where Slack reaches opsbot: its public base URL (`https://host`), or Socket Mode.
pub enum Delivery<'a> {
    Http { base_url: &'a str },
    SocketMode,
}

/// The manifest (JSON, which Slack accepts like YAML) for bot `name` serving `catalog`, each
/// command named `/{prefix}{name}`.
pub fn manifest(name: &str, catalog: &Catalog, delivery: &Delivery, prefix: &str) -> Value {
    let url = |path: &str| match delivery {
        Delivery::Http { base_url } => Some(format!("{}{path}", base_url.trim_end_matches('/'))),
        Delivery::SocketMode => None,
    };
    let builtins = BUILTINS
        .iter()
        .map(|b| (b.name.to_owned(), b.summary.to_owned(), hint(b.usage)));
    let mut runbooks: Vec<_> = catalog.iter().collect();
    runbooks.sort_by(|a, b| a.name.cmp(&b.name));
    let runbooks = runbooks
        .into_iter()
        .map(|r| (r.name.clone(), r.summary.clone(), hint(&r.usage())));
    let commands: Vec<Value> = builtins
        .chain(runbooks)
        .map(|(command, summary, usage)| {
            let mut c = json!({
                "command": format!("/{prefix}{command}"),
                "description": clip(&summary),
                "should_escape": false,
            });
            if let Some(u) = url("/slack/commands") {
                c["url"] = u.into();
            }
            if !usage.is_empty() {
                c["usage_hint"] = clip(&usage).into();
            }
            c
        })
        .collect();
    let mut interactivity = json!({ "is_enabled": true });
    let mut events = json!({ "bot_events": BOT_EVENTS });
    if let Some(u) = url("/slack/interactivity") {
        interactivity["request_url"] = u.into();
    }
    if let Some(u) = url("/slack/events") {
        events["request_url"] = u.into();
    }
    json!({
        "_metadata": { "major_version": 1, "minor_version": 1 },
        "display_information": {
            "name": name,
            "description": "Run runbooks, health checks, alerts and incidents from Slack",
        },
        "features": {
            "bot_user": { "display_name": name, "always_online": true },
            "slash_commands": commands,
        },
        "oauth_config": {
            "scopes": { "bot": SCOPES.iter().map(|(s, _)| *s).collect::<Vec<_>>() },
        },
        "settings": {
            "interactivity": interactivity,
            "event_subscriptions": events,
            "org_deploy_enabled": false,
            "socket_mode_enabled": matches!(delivery, Delivery::SocketMode),
            "token_rotation_enabled": false,
        },
    })
}

/// A usage line without its `/name`: what Slack shows after the command.
fn hint(usage: &str) -> String {
    usage
        .split_once(' ')
        .map_or(String::new(), |(_, rest)| rest.trim().to_owned())
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(DESCRIPTION_MAX - 1) {
        None => text.to_owned(),
        Some((i, _)) => format!("{}…", &text[..i]),
    }
}

/// Where the URLs of a placeholder manifest point until replaced.
pub const PLACEHOLDER_URL: &str = "https://OPSBOT_HOST";

/// The manifest for `config`: Socket Mode when `[slack]` uses it and no `base_url` is given,
/// else the routes under `base_url` (or [`PLACEHOLDER_URL`]).
pub fn for_config(
    config: &crate::config::Config,
    base_url: Option<&str>,
) -> Result<Value, crate::catalog::CatalogErrors> {
    let catalog = Catalog::load_dir(&config.catalog_dir(), &crate::router::builtins::NAMES)?;
    let socket = config
        .slack
        .as_ref()
        .is_some_and(|s| matches!(s.receive, crate::config::SlackReceive::SocketMode { .. }));
    let delivery = match base_url {
        None if socket => Delivery::SocketMode,
        url => Delivery::Http {
            base_url: url.unwrap_or(PLACEHOLDER_URL),
        },
    };
    let prefix = config
        .slack
        .as_ref()
        .map_or("", |s| s.command_prefix.as_str());
    Ok(manifest(&config.bot.name, &catalog, &delivery, prefix))
}
