//! Telegram through teloxide: updates arrive by `getUpdates` long polling (default) or by
//! webhook (`POST /telegram/webhook`, `X-Telegram-Bot-Api-Secret-Token` checked in constant
//! time). Commands are `bot_command` entities at the start of a message (`/status@opsbot` in
//! groups; commands addressed to another bot are ignored, and while opsbot does not know its
//! own name yet such commands are refused so that Telegram delivers them again);
//! `message_reaction` updates feed
//! approvals and alert acks; inline-keyboard presses run the button's command as the person
//! who pressed it. Updates are deduplicated by `update_id` in the store, so a webhook retry
//! or a replayed poll never acts twice.

mod mentions;
mod receive;

pub use receive::{receive_webhooks, register_webhook, run};

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use teloxide::payloads::{
    EditMessageCaptionSetters, EditMessageTextSetters, GetUpdatesSetters, SendDocumentSetters,
    SendMessageSetters, SetWebhookSetters,
};
use teloxide::prelude::Requester;
use teloxide::types::{
    AllowedUpdate, CallbackQuery, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile,
    MaybeAnonymousUser, Message, MessageEntity, MessageEntityKind, MessageId,
    MessageReactionUpdated, ReactionType, ReplyParameters, Update, UpdateKind,
};
use teloxide::{ApiError, Bot, RequestError};
use tokio_util::sync::CancellationToken;

use super::Backoff;
use super::inbound::{InChannel, Inbound};
use crate::config::TelegramDelivery;
use crate::domain::{ChannelRef, EventPayload, InboundEvent, Platform, UserRef};
use crate::liveness::{AdapterState, Liveness};
use crate::ports::{ChatOutbound, OutboundError, OutboundMessage, OutboundTarget, Sent};

/// Telegram's limit for one message's text, in UTF-16 code units (as Telegram counts).
const MAX_TEXT_UNITS: usize = 4096;
/// Telegram's limit for a document caption, in UTF-16 code units.
const MAX_CAPTION_UNITS: usize = 1024;
/// How long one `getUpdates` call waits for updates.
const POLL_TIMEOUT_SECS: u32 = 20;

/// The update kinds opsbot asks for. Telegram sends `message_reaction` only when it is listed
/// here explicitly (and only in chats where the bot is an administrator).
pub const ALLOWED_UPDATES: [AllowedUpdate; 3] = [
    AllowedUpdate::Message,
    AllowedUpdate::CallbackQuery,
    AllowedUpdate::MessageReaction,
];

/// The Bot API client (and where it points: Telegram, or a local fake in tests).
pub struct TelegramApi {
    bot: Bot,
    /// Kept to scrub it from error text: teloxide's errors carry the request URL, which
    /// contains the token.
    token: SecretString,
}

impl TelegramApi {
    pub fn new(api_url: &str, token: &SecretString) -> Result<Self, String> {
        let url = reqwest::Url::parse(api_url)
            .map_err(|e| format!("telegram.api_url is not a URL: {e}"))?;
        Ok(Self {
            bot: Bot::new(token.expose_secret()).set_api_url(url),
            token: token.clone(),
        })
    }

    /// Error text safe for logs: the token never appears in it.
    fn describe(&self, e: &RequestError) -> String {
        let text = match e {
            RequestError::Network(net) => unreachable(net, &self.bot.api_url()),
            other => other.to_string(),
        };
        redact_token(&text.replace(self.token.expose_secret(), "<token>"))
    }

    fn outbound_error(&self, e: RequestError) -> OutboundError {
        match &e {
            RequestError::RetryAfter(wait) => OutboundError::RetryAfter(wait.duration()),
            RequestError::MigrateToChatId(id) => OutboundError::Undeliverable(format!(
                "the group became supergroup {id}; update the channel id"
            )),
            // Removed from the chat, or never in it: someone must add the bot back.
            RequestError::Api(
                ApiError::ChatNotFound
                | ApiError::BotBlocked
                | ApiError::BotKicked
                | ApiError::BotKickedFromSupergroup
                | ApiError::BotKickedFromChannel
                | ApiError::NotEnoughRightsToPostMessages,
            ) => OutboundError::NotInChannel(self.describe(&e)),
            RequestError::Api(
                ApiError::GroupDeactivated
                | ApiError::UserDeactivated
                | ApiError::CantTalkWithBots
                | ApiError::InvalidToken,
            ) => OutboundError::Undeliverable(self.describe(&e)),
            RequestError::Network(_) | RequestError::Io(_) => {
                OutboundError::Unavailable(self.describe(&e))
            }
            _ => OutboundError::Failed(self.describe(&e)),
        }
    }

    async fn answer_callback(&self, query: &CallbackQuery) {
        if let Err(e) = self.bot.answer_callback_query(query.id.clone()).await {
            tracing::debug!(error = %self.describe(&e), "could not answer a Telegram button press");
        }
    }
}

/// reqwest's "error sending request for url (...)" names neither the cause nor the fix, and
/// its URL holds the token: name the host and the innermost cause instead.
fn unreachable(e: &reqwest::Error, api: &reqwest::Url) -> String {
    // teloxide strips the URL from its errors; the configured API URL is where it went.
    let url = e.url().unwrap_or(api);
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => "its address".to_owned(),
    };
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let cause = if e.is_timeout() {
        "no answer in time".to_owned()
    } else {
        cause.to_string()
    };
    format!(
        "cannot reach the Telegram Bot API at {host} (telegram.api_url): {cause}; check DNS, the network and any proxy between opsbot and it"
    )
}

fn chat_id(to: &OutboundTarget) -> Result<ChatId, OutboundError> {
    to.channel_id.parse::<i64>().map(ChatId).map_err(|_| {
        OutboundError::Undeliverable(format!("{:?} is not a Telegram chat id", to.channel_id))
    })
}

fn reply_to(to: &OutboundTarget) -> Option<ReplyParameters> {
    let id = to.thread.as_deref()?.parse::<i32>().ok()?;
    Some(ReplyParameters::new(MessageId(id)).allow_sending_without_reply())
}

fn keyboard(message: &OutboundMessage) -> Option<InlineKeyboardMarkup> {
    if message.actions.is_empty() {
        return None;
    }
    let row = message
        .actions
        .iter()
        .map(|a| InlineKeyboardButton::callback(a.label.clone(), a.command.clone()));
    Some(InlineKeyboardMarkup::new([row]))
}

/// The first `max` characters of `text`, marked when cut.
/// Replaces whatever follows `/bot` in a Bot API URL up to the next `/` (the token, even if
/// the configured one differs from what reached the URL, e.g. by surrounding whitespace).
fn redact_token(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("/bot") {
        out.push_str(&rest[..at + 4]);
        let after = &rest[at + 4..];
        let end = after.find(['/', ' ', ')']).unwrap_or(after.len());
        out.push_str("<token>");
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// The start of `text` within `max` UTF-16 units, marked when cut.
/// The caption of a text sent as a file: its beginning, and where the rest is.
fn caption_of(text: &str) -> String {
    head(text, MAX_CAPTION_UNITS - 40) + "\n(full text attached)"
}

fn head(text: &str, max: usize) -> String {
    if utf16_len(text) <= max {
        return text.to_owned();
    }
    let mut units = 0;
    let mut cut = 0;
    for (i, c) in text.char_indices() {
        units += c.len_utf16();
        // One unit is kept for the ellipsis.
        if units > max.saturating_sub(1) {
            break;
        }
        cut = i + c.len_utf8();
    }
    format!("{}…", &text[..cut])
}

#[async_trait::async_trait]
impl ChatOutbound for TelegramApi {
    async fn send(&self, to: &OutboundTarget, message: &OutboundMessage) -> Sent {
        let chat = chat_id(to)?;
        let (text, entities) = mentions::rendered(message);
        let sent = if utf16_len(&text) <= MAX_TEXT_UNITS {
            let mut req = self.bot.send_message(chat, text);
            if !entities.is_empty() {
                req = req.entities(entities);
            }
            if let Some(reply) = reply_to(to) {
                req = req.reply_parameters(reply);
            }
            if let Some(markup) = keyboard(message) {
                req = req.reply_markup(markup);
            }
            req.await
        } else {
            // Too long for one message: the full text as a file, its start as the caption.
            // Mentions are not carried into a file's caption: the names stay plain there.
            let text = mentions::unmentioned(message);
            let caption = caption_of(&text);
            let file = InputFile::memory(text.into_bytes()).file_name("output.txt");
            let code = mentions::unlinked(&caption);
            let mut req = self.bot.send_document(chat, file).caption(caption);
            if !code.is_empty() {
                req = req.caption_entities(code);
            }
            if let Some(reply) = reply_to(to) {
                req = req.reply_parameters(reply);
            }
            if let Some(markup) = keyboard(message) {
                req = req.reply_markup(markup);
            }
            req.await
        };
        sent.map(|m| m.id.0.to_string())
            .map_err(|e| self.outbound_error(e))
    }

    async fn edit(&self, to: &OutboundTarget, id: &str, message: &OutboundMessage) -> Sent<()> {
        let chat = chat_id(to)?;
        let id = id.parse::<i32>().map_err(|_| {
            OutboundError::Undeliverable(format!("{id:?} is not a Telegram message id"))
        })?;
        // An edit without a keyboard removes the one the message had.
        let (mut shown, mut entities) = mentions::rendered(message);
        if utf16_len(&shown) > MAX_TEXT_UNITS {
            // Cut: its mentions are not carried (a cut entity would point past the text).
            shown = head(&mentions::unmentioned(message), MAX_TEXT_UNITS);
            entities = mentions::unlinked(&shown);
        }
        let mut req = self.bot.edit_message_text(chat, MessageId(id), shown);
        if !entities.is_empty() {
            req = req.entities(entities);
        }
        if let Some(markup) = keyboard(message) {
            req = req.reply_markup(markup);
        }
        match req.await {
            // Telegram refuses an edit that changes nothing; the message already says it.
            Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            // A message sent as a file has a caption, not text: edit that (and its keyboard).
            Err(RequestError::Api(ApiError::Unknown(why)))
                if why.contains("no text in the message") =>
            {
                let caption = caption_of(&mentions::unmentioned(message));
                let code = mentions::unlinked(&caption);
                let mut req = self
                    .bot
                    .edit_message_caption(chat, MessageId(id))
                    .caption(caption);
                if !code.is_empty() {
                    req = req.caption_entities(code);
                }
                if let Some(markup) = keyboard(message) {
                    req = req.reply_markup(markup);
                }
                match req.await {
                    Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
                    Err(e) => Err(self.outbound_error(e)),
                }
            }
            Err(e) => Err(self.outbound_error(e)),
            Ok(_) => Ok(()),
        }
    }
}

/// Turns Telegram updates into router events and delivers the answers.
#[derive(Clone)]
pub struct TelegramInbound {
    inbound: Inbound,
    api: Arc<TelegramApi>,
    outbound: Arc<dyn ChatOutbound>,
    /// Learned from `getMe` at start; until then commands addressed `@somebot` are not taken.
    username: Arc<OnceLock<String>>,
    delivery: TelegramDelivery,
}

/// Why an update could not be taken now; Telegram is to deliver it again later.
#[derive(Debug, thiserror::Error)]
pub enum NotTaken {
    #[error("could not record Telegram update {0}")]
    NotRecorded(u32),
    /// A command addressed `/cmd@somebot` before `getMe` told us which bot we are: taking it
    /// now would mistake our own commands for another bot's and drop them.
    #[error(
        "Telegram update {0} is a command for a bot by name, and opsbot's own is not known yet"
    )]
    NameUnknown(u32),
}

impl TelegramInbound {
    pub fn new(
        inbound: Inbound,
        api: Arc<TelegramApi>,
        outbound: Arc<dyn ChatOutbound>,
        delivery: TelegramDelivery,
    ) -> Self {
        Self {
            inbound,
            api,
            outbound,
            username: Arc::new(OnceLock::new()),
            delivery,
        }
    }

    /// Whether updates arrive at `POST /telegram/webhook` (else the route is not mounted).
    pub fn serves_webhook(&self) -> bool {
        matches!(self.delivery, TelegramDelivery::Webhook { .. })
    }

    /// Takes one update: records its id (a repeat is ignored), then handles it in the
    /// background so the caller (webhook or poller) is never held up by the work.
    pub async fn take(&self, update: Update) -> Result<(), NotTaken> {
        let id = update.id.0;
        if self.username.get().is_none() && addressed_to_a_bot(&update) {
            return Err(NotTaken::NameUnknown(id));
        }
        match self
            .inbound
            .first_delivery(Platform::Telegram, &id.to_string())
            .await
        {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(_) => return Err(NotTaken::NotRecorded(id)),
        }
        let this = self.clone();
        self.inbound.spawn(async move { this.handle(update).await });
        Ok(())
    }

    async fn handle(&self, update: Update) {
        let events = match update.kind {
            UpdateKind::Message(msg) => self.command(&msg).into_iter().collect(),
            UpdateKind::CallbackQuery(query) => {
                // Stops the button's spinner at once; the answer comes as a message.
                self.api.answer_callback(&query).await;
                button_press(&query).into_iter().collect()
            }
            UpdateKind::MessageReaction(reaction) => reactions(&reaction),
            _ => Vec::new(),
        };
        // In order: a reaction swap (👍 -> 👎) is a removal then an addition.
        for ev in events {
            self.inbound
                .answer(&ev, &InChannel(self.outbound.as_ref()))
                .await;
        }
    }

    /// A message that starts with a command for this bot; `None` for anything else.
    fn command(&self, msg: &Message) -> Option<InboundEvent> {
        let (name, rest) = leading_command(msg.text()?, msg.entities()?)?;
        let name = match name.split_once('@') {
            None => name,
            Some((name, to)) => {
                let ours = self
                    .username
                    .get()
                    .is_some_and(|me| me.eq_ignore_ascii_case(to));
                if !ours {
                    return None;
                }
                name
            }
        };
        let user = msg.from.as_ref()?;
        Some(event(
            &user.id.0.to_string(),
            &user.full_name(),
            &msg.chat,
            msg.id,
            EventPayload::Command(format!("{name}{rest}")),
        ))
    }

    /// Whether a webhook request carries the configured secret token.
    fn authentic(&self, headers: &HeaderMap) -> bool {
        let TelegramDelivery::Webhook {
            secret: expected, ..
        } = &self.delivery
        else {
            return false;
        };
        let Some(got) = headers
            .get("x-telegram-bot-api-secret-token")
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        crate::hooks::same(got.as_bytes(), expected.expose_secret().as_bytes())
    }
}

/// The `bot_command` entity a message starts with, as (command, rest of the text). Offsets
/// and lengths come from the sender in UTF-16 units and are not trusted: one that ends inside
/// a character (half of an emoji's surrogate pair) or past the text makes it no command,
/// rather than a panic that would lose the update.
fn leading_command<'t>(text: &'t str, entities: &[MessageEntity]) -> Option<(&'t str, &'t str)> {
    let first = entities.first()?;
    if first.offset != 0 || first.length == 0 || first.kind != MessageEntityKind::BotCommand {
        return None;
    }
    Some(text.split_at(byte_offset(text, first.length)?))
}

/// The byte index `units` UTF-16 code units into `text`, if that is a character boundary
/// within it.
fn byte_offset(text: &str, units: usize) -> Option<usize> {
    let mut seen = 0;
    for (at, c) in text.char_indices() {
        if seen >= units {
            return (seen == units).then_some(at);
        }
        seen += c.len_utf16();
    }
    (seen == units).then_some(text.len())
}

/// Whether `update` is a message starting with a command addressed to a bot by name.
fn addressed_to_a_bot(update: &Update) -> bool {
    let UpdateKind::Message(msg) = &update.kind else {
        return false;
    };
    let command = msg
        .text()
        .zip(msg.entities())
        .and_then(|(text, entities)| leading_command(text, entities));
    command.is_some_and(|(name, _)| name.contains('@'))
}

fn event(
    user_id: &str,
    display_name: &str,
    chat: &teloxide::types::Chat,
    thread: MessageId,
    payload: EventPayload,
) -> InboundEvent {
    // Chat titles and usernames are set by users (anyone can create a group called
    // "prod-ops"), so channel allow-lists match Telegram chats by id only.
    InboundEvent::new(
        UserRef::new(Platform::Telegram, user_id),
        ChannelRef::id_only(chat.id.0.to_string()),
        payload,
    )
    .in_thread(Some(thread.0.to_string()))
    .with_display_name(display_name)
}

/// An inline-keyboard press: the button's command, as the person who pressed it.
fn button_press(query: &CallbackQuery) -> Option<InboundEvent> {
    let command = query.data.as_deref()?;
    if !command.starts_with('/') {
        return None;
    }
    let message = query.message.as_ref()?;
    Some(event(
        &query.from.id.0.to_string(),
        &query.from.full_name(),
        message.chat(),
        message.id(),
        EventPayload::Command(command.to_owned()),
    ))
}

/// A reaction change as the emoji removed, then the emoji added. Anonymous reactions (on
/// behalf of a chat) name no person, so they are not turned into events.
fn reactions(update: &MessageReactionUpdated) -> Vec<InboundEvent> {
    let MaybeAnonymousUser::User(user) = &update.actor else {
        return Vec::new();
    };
    let emoji = |list: &[ReactionType]| -> Vec<String> {
        list.iter().filter_map(|r| r.emoji().cloned()).collect()
    };
    let (old, new) = (emoji(&update.old_reaction), emoji(&update.new_reaction));
    let removed = old.iter().filter(|e| !new.contains(e)).map(|e| (e, false));
    let added = new.iter().filter(|e| !old.contains(e)).map(|e| (e, true));
    removed
        .chain(added)
        .map(|(emoji, added)| {
            event(
                &user.id.0.to_string(),
                &user.full_name(),
                &update.chat,
                update.message_id,
                EventPayload::Reaction {
                    emoji: emoji.clone(),
                    message_id: update.message_id.0.to_string(),
                    added,
                },
            )
        })
        .collect()
}

/// `POST /telegram/webhook`: checks the secret token, records the update, answers at once.
pub async fn webhook(
    State(inbound): State<TelegramInbound>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !inbound.authentic(&headers) {
        tracing::warn!("refused a Telegram webhook request without the right secret token");
        return (StatusCode::UNAUTHORIZED, "bad secret token").into_response();
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a Telegram update: {e}"),
            )
                .into_response();
        }
    };
    match inbound.take(update).await {
        Ok(()) => StatusCode::OK.into_response(),
        // Not taken, so not acted on: Telegram delivers it again later.
        Err(e) => {
            tracing::warn!(error = %e, "asked Telegram to deliver an update again");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_appears_in_error_text() {
        let token = SecretString::from("123456:very-secret-token");
        let api = TelegramApi::new("http://127.0.0.1:1", &token).unwrap();
        let e = RequestError::Api(ApiError::Unknown(
            "error sending request for url (http://127.0.0.1:1/bot123456:very-secret-token/GetMe)"
                .into(),
        ));
        let text = api.describe(&e);
        assert!(!text.contains("very-secret-token"), "{text}");
        assert!(text.contains("/bot<token>/GetMe"), "{text}");
        let untrimmed = "error sending request for url (https://api.telegram.org/bot123456:other-token/GetUpdates)";
        let text = api.describe(&RequestError::Api(ApiError::Unknown(untrimmed.into())));
        assert!(!text.contains("other-token"), "{text}");
    }

    #[tokio::test]
    async fn an_unreachable_api_is_named_by_host_and_cause_never_by_url() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let token = SecretString::from("123456:very-secret-token");
        let api = TelegramApi::new(&format!("http://{addr}"), &token).unwrap();
        let e = api.bot.get_me().await.unwrap_err();
        let text = api.describe(&e);
        assert!(
            text.contains(&format!("cannot reach the Telegram Bot API at {addr}"))
                && text.to_lowercase().contains("refused"),
            "{text}"
        );
        assert!(!text.contains("error sending request"), "{text}");
        assert!(
            !text.contains("very-secret-token") && !text.contains("123456"),
            "{text}"
        );
    }

    #[test]
    fn long_text_is_measured_and_cut_in_utf16_units() {
        let emoji = "🔥".repeat(3000); // 6000 UTF-16 units, 3000 chars
        let cut = head(&emoji, MAX_TEXT_UNITS);
        assert!(utf16_len(&cut) <= MAX_TEXT_UNITS);
        assert!(cut.ends_with('…'));
        assert_eq!(head("short", MAX_TEXT_UNITS), "short");
    }

    fn command_entity(offset: usize, length: usize) -> Vec<MessageEntity> {
        vec![MessageEntity::new(
            MessageEntityKind::BotCommand,
            offset,
            length,
        )]
    }

    #[test]
    fn entity_lengths_inside_an_emoji_or_past_the_text_are_no_command() {
        // "/🔥" is 3 UTF-16 units: 2 ends inside the emoji's surrogate pair.
        assert_eq!(leading_command("/🔥 x", &command_entity(0, 2)), None);
        assert_eq!(leading_command("/status", &command_entity(0, 40)), None);
        assert_eq!(
            leading_command("/🔥 x", &command_entity(0, 3)),
            Some(("/🔥", " x"))
        );
        assert_eq!(
            leading_command("/status@opsbot now", &command_entity(0, 14)),
            Some(("/status@opsbot", " now"))
        );
    }

    proptest::proptest! {
        #[test]
        fn any_entity_offsets_give_a_split_of_the_text_or_nothing(
            text in "\\PC{0,12}",
            offset in 0usize..30,
            length in 0usize..30,
        ) {
            let entities = command_entity(offset, length);
            if let Some((name, rest)) = leading_command(&text, &entities) {
                proptest::prop_assert_eq!(format!("{name}{rest}"), text.clone());
                proptest::prop_assert_eq!(name.encode_utf16().count(), length);
            }
        }
    }

    #[test]
    fn a_reaction_swap_is_a_removal_then_an_addition() {
        let update: MessageReactionUpdated = serde_json::from_value(serde_json::json!({
            "chat": { "id": -100, "type": "supergroup", "title": "ops" },
            "message_id": 7,
            "user": { "id": 5, "is_bot": false, "first_name": "Bob" },
            "date": 1_700_000_000,
            "old_reaction": [{ "type": "emoji", "emoji": "👍" }],
            "new_reaction": [{ "type": "emoji", "emoji": "👎" }, { "type": "paid" }],
        }))
        .unwrap();
        let changes: Vec<_> = reactions(&update)
            .into_iter()
            .map(|ev| match ev.payload {
                EventPayload::Reaction { emoji, added, .. } => (emoji, added),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(changes, vec![("👍".into(), false), ("👎".into(), true)]);
    }
}
