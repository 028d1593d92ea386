//! Discord through serenity. Slash commands arrive over the gateway (or, optionally, signed
//! on `POST /discord/interactions`), are acknowledged at once with a deferred response, rebuilt
//! into command text for the router, and answered by editing that response; an approval request
//! is that edited response, so ✅ / ❌ reactions on it (gateway `MESSAGE_REACTION_ADD`) reach the
//! run; its Approve / Deny buttons (and any message's action buttons) carry their command as the
//! `custom_id`, and a press runs it as the presser. The bot's own channel messages go through `DiscordApi`, the `ChatOutbound` behind the
//! paced outbound. Identities are `discord:<user id>`.

mod commands;
mod gateway;
mod interactions;
mod mentions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serenity::all::{
    ApplicationId, ButtonStyle, ChannelId, Command, CommandDataOptionValue, CommandInteraction,
    ComponentInteraction, CreateActionRow, CreateAttachment, CreateButton,
    CreateInteractionResponse, CreateInteractionResponseMessage, CreateMessage, EditAttachments,
    EditInteractionResponse, EditMessage, GuildId, HttpError, InteractionId, MessageId,
    MessageReference, MessageReferenceKind, Reaction, ReactionType, User, UserId,
};
use serenity::builder::Builder as _;
use serenity::http::{Http, HttpBuilder};
use serenity::interactions_endpoint::Verifier;

pub use gateway::spawn_gateway;
pub use interactions::interactions;

use super::inbound::{Answer, InChannel, Inbound, STORE_UNREACHABLE};
use super::markup;
use crate::config::DiscordConfig;
use crate::domain::{ChannelRef, EventPayload, InboundEvent, Platform, RunId, UserRef};
use crate::ports::{
    ChatAction, ChatOutbound, OutboundError, OutboundMessage, OutboundTarget, Sent,
};

/// Where the REST API lives unless a test (or an API proxy) says otherwise.
pub const DEFAULT_API: &str = "https://discord.com";
/// Discord's limit on a message's text, in characters.
const MAX_CONTENT: usize = 2000;
/// How much of an over-long text is shown in the message itself; the rest is attached.
const HEAD_CHARS: usize = 1500;
const ATTACHMENT: &str = "output.txt";
/// Discord's limits on a button's `custom_id` (characters) and on buttons in one action row.
const MAX_CUSTOM_ID: usize = 100;
const MAX_ROW_BUTTONS: usize = 5;
/// Serenity drops a 429's `Retry-After` when its own rate limiter is off (API proxy, tests);
/// this is how long the channel is held back then. With the rate limiter on (discord.com),
/// serenity waits out 429s itself and they never reach us.
const RETRY_AFTER_UNKNOWN: Duration = Duration::from_secs(1);
/// Edits of a deferred response tried again after "Unknown Webhook" (0.1 + 0.2 + 0.4 + 0.8 s
/// of waiting).
const DEFERRAL_RETRIES: usize = 4;
/// Discord's error code for an interaction response it does not know (yet).
const UNKNOWN_WEBHOOK: isize = 10015;

/// The serenity REST client as configured: against discord.com with serenity's own rate
/// limiter, or against `api_url` (a proxy or a test fake) without it, since serenity ignores
/// the proxy while its limiter is on.
pub fn build_http(cfg: &DiscordConfig) -> Http {
    let mut builder = HttpBuilder::new(cfg.bot_token.expose_secret())
        .application_id(ApplicationId::new(cfg.application_id));
    let api = cfg.api_url.trim_end_matches('/');
    if api != DEFAULT_API {
        builder = builder.proxy(api).ratelimiter_disabled(true);
    }
    builder.build()
}

/// Discord's REST API, as the `ChatOutbound` for `Platform::Discord`.
pub struct DiscordApi {
    http: Arc<Http>,
    replies: InteractionReplies,
}

impl DiscordApi {
    pub fn new(cfg: &DiscordConfig) -> Self {
        Self {
            http: Arc::new(build_http(cfg)),
            replies: InteractionReplies::default(),
        }
    }
}

/// How long an interaction token may edit its response (Discord allows 15 minutes).
const INTERACTION_TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);

/// Interaction tokens of the slash-command answers that are approval requests, by message
/// id. While fresh, such a message is edited with its token: that works for every install,
/// while the channel endpoint needs the bot user to see the channel. Per process; another
/// replica, or a later edit, uses the channel endpoint.
#[derive(Clone, Default)]
struct InteractionReplies(Arc<std::sync::Mutex<HashMap<String, (String, std::time::Instant)>>>);

impl InteractionReplies {
    fn remember(&self, message: MessageId, token: &str) {
        let now = std::time::Instant::now();
        let mut replies = self.0.lock().expect("interaction replies poisoned");
        replies.retain(|_, (_, until)| *until > now);
        replies.insert(
            message.to_string(),
            (token.to_owned(), now + INTERACTION_TOKEN_LIFETIME),
        );
    }

    fn token(&self, message_id: &str) -> Option<String> {
        let replies = self.0.lock().expect("interaction replies poisoned");
        replies
            .get(message_id)
            .filter(|(_, until)| *until > std::time::Instant::now())
            .map(|(token, _)| token.clone())
    }
}

/// `message` as an edit of either kind of Discord message (their builders share no trait):
/// text (long text attached), buttons, no pings. The text decides the attachments: an earlier
/// long version's file goes away; the same for buttons that no longer apply.
macro_rules! edit_of {
    ($builder:ident, $message:expr) => {{
        let (text, ticks) = mentions::rendered(&$message);
        let (content, file) = body(&text, &ticks);
        $builder::new()
            .content(content)
            .allowed_mentions(mentions::allowed(&$message))
            .attachments(
                file.into_iter()
                    .fold(EditAttachments::new(), EditAttachments::add),
            )
            .components(buttons(&$message.actions).into_iter().collect())
    }};
}

/// An edit of an interaction response (with its token).
fn interaction_edit(message: &OutboundMessage) -> EditInteractionResponse {
    edit_of!(EditInteractionResponse, message)
}

/// An edit of a channel message.
fn message_edit(message: &OutboundMessage) -> EditMessage {
    edit_of!(EditMessage, message)
}

fn snowflake(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().filter(|n| *n != 0)
}

fn channel_of(to: &OutboundTarget) -> Result<ChannelId, OutboundError> {
    snowflake(&to.channel_id)
        .map(ChannelId::new)
        .ok_or_else(|| {
            OutboundError::Undeliverable(format!("{:?} is not a Discord channel id", to.channel_id))
        })
}

/// Text for one message: as is when it fits, else a head that says the full text is attached.
/// Never cut silently; a code span (delimited by `ticks`) or block cut open is closed, so the
/// rest of a link in it cannot link.
fn split_long(text: &str, ticks: &str) -> Option<String> {
    let total = text.chars().count();
    if total <= MAX_CONTENT {
        return None;
    }
    let cut = text
        .char_indices()
        .nth(HEAD_CHARS)
        .map_or(text.len(), |(i, _)| i);
    let mut head = &text[..cut];
    if let Some(nl) = head.rfind('\n').filter(|nl| *nl > cut / 2) {
        head = &head[..nl];
    }
    // Backticks at the cut may be half a delimiter: dropped, and the span closed if open.
    let mut content = head.trim_end_matches('`').to_owned();
    if markup::cut_inside_span(&content, ticks) {
        content.push_str(ticks);
    }
    if content.matches("```").count() % 2 == 1 {
        content.push_str("\n```");
    }
    content.push_str(&format!(
        "\n… ({total} characters in all; the full text is attached as {ATTACHMENT})"
    ));
    Some(content)
}

fn body(text: &str, ticks: &str) -> (String, Option<CreateAttachment>) {
    match split_long(text, ticks) {
        None => (text.to_owned(), None),
        Some(head) => (
            head,
            Some(CreateAttachment::bytes(
                text.as_bytes().to_vec(),
                ATTACHMENT,
            )),
        ),
    }
}

/// The actions as one row of buttons whose `custom_id` is the command; none if there are no
/// actions. A command too long for a `custom_id` gets no button (a cut command would run
/// something else); it can still be typed.
fn buttons(actions: &[ChatAction]) -> Option<CreateActionRow> {
    let row: Vec<CreateButton> = actions
        .iter()
        .filter(|a| a.command.chars().count() <= MAX_CUSTOM_ID)
        .take(MAX_ROW_BUTTONS)
        .map(|a| {
            CreateButton::new(a.command.clone())
                .label(a.label.clone())
                .style(if a.danger {
                    ButtonStyle::Danger
                } else {
                    ButtonStyle::Success
                })
        })
        .collect();
    (!row.is_empty()).then_some(CreateActionRow::Buttons(row))
}

/// A serenity error for logs: never its URL, which for interaction webhooks holds the token.
fn describe(e: &serenity::Error) -> String {
    match e {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => format!(
            "{} {} (Discord code {}: {})",
            r.method, r.status_code, r.error.code, r.error.message
        ),
        serenity::Error::Http(HttpError::Request(re)) => {
            let what = if re.is_timeout() {
                "timed out"
            } else if re.is_connect() {
                "could not connect"
            } else {
                "transport error"
            };
            format!("request to Discord failed: {what}")
        }
        other => other.to_string(),
    }
}

/// Discord's JSON error codes for a channel the bot may not see or post in.
const MISSING_ACCESS: isize = 50001;
const MISSING_PERMISSIONS: isize = 50013;
const UNKNOWN_CHANNEL: isize = 10003;

fn outbound_error(e: serenity::Error) -> OutboundError {
    let (status, code) = match &e {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => {
            (Some(r.status_code.as_u16()), Some(r.error.code))
        }
        _ => (None, None),
    };
    match status {
        Some(429) => OutboundError::RetryAfter(RETRY_AFTER_UNKNOWN),
        // The bot cannot see or write in the channel: the requester must let it in.
        Some(403 | 404)
            if matches!(
                code,
                Some(MISSING_ACCESS | MISSING_PERMISSIONS | UNKNOWN_CHANNEL)
            ) =>
        {
            OutboundError::NotInChannel(describe(&e))
        }
        // Unknown channel or message, missing access or permissions: retrying will not help.
        Some(403 | 404) => OutboundError::Undeliverable(describe(&e)),
        Some(500..=599) => OutboundError::Unavailable(describe(&e)),
        None if matches!(e, serenity::Error::Http(HttpError::Request(_))) => {
            OutboundError::Unavailable(describe(&e))
        }
        _ => OutboundError::Failed(describe(&e)),
    }
}

#[async_trait::async_trait]
impl ChatOutbound for DiscordApi {
    async fn send(&self, to: &OutboundTarget, message: &OutboundMessage) -> Sent {
        let channel = channel_of(to)?;
        let (text, ticks) = mentions::rendered(message);
        let (content, file) = body(&text, &ticks);
        let mut msg = CreateMessage::new()
            .content(content)
            .allowed_mentions(mentions::allowed(message));
        if let Some(file) = file {
            msg = msg.add_file(file);
        }
        if let Some(row) = buttons(&message.actions) {
            msg = msg.components(vec![row]);
        }
        // A thread here is the message this one answers (an approval request).
        if let Some(reply_to) = to.thread.as_deref().and_then(snowflake) {
            msg = msg.reference_message(
                MessageReference::new(MessageReferenceKind::Default, channel)
                    .message_id(MessageId::new(reply_to))
                    .fail_if_not_exists(false),
            );
        }
        channel
            .send_message(&*self.http, msg)
            .await
            .map(|m| m.id.to_string())
            .map_err(outbound_error)
    }

    async fn edit(&self, to: &OutboundTarget, id: &str, message: &OutboundMessage) -> Sent<()> {
        if let Some(token) = self.replies.token(id) {
            match interaction_edit(message).execute(&*self.http, &token).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::debug!(error = %describe(&e), "could not edit an interaction response with its token; trying the channel")
                }
            }
        }
        let channel = channel_of(to)?;
        let id = snowflake(id).map(MessageId::new).ok_or_else(|| {
            OutboundError::Undeliverable(format!("{id:?} is not a Discord message id"))
        })?;
        let edit = message_edit(message);
        channel
            .edit_message(&*self.http, id, edit)
            .await
            .map(|_| ())
            .map_err(outbound_error)
    }
}

/// Everything the gateway handler and the interactions endpoint share.
#[derive(Clone)]
pub struct DiscordState {
    inbound: Inbound,
    http: Arc<Http>,
    /// Shared with `DiscordApi`, which edits approval requests with their tokens.
    replies: InteractionReplies,
    /// Channel posts go through the paced outbound, like every other message the bot sends;
    /// interaction answers (webhook edits) do not count against channel limits.
    outbound: Arc<dyn ChatOutbound>,
    /// Present when `public_key` is configured: the HTTP interactions endpoint is served.
    verifier: Option<Verifier>,
    /// Reactions the bot puts on an approval request, so approvers only have to click.
    hints: Vec<ReactionType>,
    /// The configured `guild_id`: events from other servers are not ours.
    guild: Option<GuildId>,
}

impl DiscordState {
    /// `hints`: the approve and deny emoji to pre-react with (aliases are skipped).
    pub fn new(
        inbound: Inbound,
        api: &DiscordApi,
        outbound: Arc<dyn ChatOutbound>,
        cfg: &DiscordConfig,
        hints: &[String],
    ) -> Result<Self, String> {
        let verifier = match &cfg.public_key {
            None => None,
            Some(hex_key) => {
                let bytes: [u8; 32] = hex::decode(hex_key)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or("discord.public_key must be 64 hex digits")?;
                Some(Verifier::try_new(bytes).map_err(|e| format!("discord.public_key: {e}"))?)
            }
        };
        Ok(Self {
            inbound,
            http: api.http.clone(),
            replies: api.replies.clone(),
            outbound,
            verifier,
            hints: hints
                .iter()
                .filter(|e| !e.is_ascii())
                .map(|e| ReactionType::Unicode(e.clone()))
                .collect(),
            guild: cfg.guild_id.map(GuildId::new),
        })
    }

    /// An event from a server other than the configured `guild_id` (gateway or endpoint): the
    /// bot may have been invited elsewhere, where channel names (and so allow-lists) are
    /// someone else's.
    fn foreign(&self, guild: Option<GuildId>) -> bool {
        matches!((self.guild, guild), (Some(ours), Some(theirs)) if ours != theirs)
    }

    /// Whether `POST /discord/interactions` is served (a public key is configured).
    pub fn serves_interactions(&self) -> bool {
        self.verifier.is_some()
    }

    /// Registers the slash commands: in `guild` (instant; for development) or globally.
    async fn register_commands(&self, guild: Option<GuildId>) -> Result<usize, String> {
        let cmds = commands::slash_commands(self.inbound.router().catalog());
        let n = cmds.len();
        let result = match guild {
            Some(g) => g.set_commands(&*self.http, cmds).await.map(|_| ()),
            None => Command::set_global_commands(&*self.http, cmds)
                .await
                .map(|_| ()),
        };
        result.map(|()| n).map_err(|e| describe(&e))
    }

    /// Records the interaction; false when it was handled already (another replica's gateway
    /// session gets the same one).
    async fn first_delivery(&self, id: InteractionId) -> Result<bool, String> {
        self.inbound
            .first_delivery(Platform::Discord, &format!("interaction:{id}"))
            .await
            .map_err(|e| e.to_string())
    }

    /// Records a gateway interaction: true if it is new and should be handled. When the store
    /// is down the person is told (privately) that nothing ran.
    async fn first_on_gateway(&self, id: InteractionId, token: &str) -> bool {
        match self.first_delivery(id).await {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(error = %e, "could not record a Discord interaction; not running it");
                let sorry = CreateInteractionResponse::Message(
                    CreateInteractionResponseMessage::new()
                        .content(STORE_UNREACHABLE)
                        .ephemeral(true),
                );
                if let Err(e) = sorry.execute(&*self.http, (id, token)).await {
                    tracing::warn!(error = %describe(&e), "could not answer a Discord interaction");
                }
                false
            }
        }
    }

    /// A slash command from the gateway: record it, acknowledge it (deferred), then answer.
    async fn gateway_command(&self, cmd: CommandInteraction, channel_name: Option<String>) {
        if !self.first_on_gateway(cmd.id, &cmd.token).await {
            return;
        }
        // Unacknowledged interactions fail after 3 s; one we cannot acknowledge (token gone,
        // or already acknowledged elsewhere) is not run, since nobody could see the result.
        if let Err(e) = cmd.defer(&*self.http).await {
            tracing::warn!(error = %describe(&e), command = %cmd.data.name, "could not acknowledge a Discord command; not running it");
            return;
        }
        self.answer(cmd, channel_name).await;
    }

    /// Runs an acknowledged (deferred) slash command and edits the deferred response with the
    /// reply; an approval request is bound to that message so reactions on it count.
    async fn answer(&self, cmd: CommandInteraction, channel_name: Option<String>) {
        let options: Vec<(String, commands::OptionValue)> = cmd
            .data
            .options
            .iter()
            .filter_map(|o| {
                let v = match &o.value {
                    CommandDataOptionValue::String(s) => commands::OptionValue::Text(s.clone()),
                    CommandDataOptionValue::Boolean(b) => commands::OptionValue::Flag(*b),
                    CommandDataOptionValue::Integer(i) => {
                        commands::OptionValue::Text(i.to_string())
                    }
                    CommandDataOptionValue::Number(n) => commands::OptionValue::Text(n.to_string()),
                    _ => return None,
                };
                Some((o.name.clone(), v))
            })
            .collect();
        let text =
            commands::command_text(self.inbound.router().catalog(), &cmd.data.name, &options);
        let ev = command_event(interaction_origin!(cmd, channel_name), cmd.id, None, text);
        let answer = Deferred {
            state: self,
            cmd: &cmd,
        };
        self.inbound.answer(&ev, &answer).await;
    }

    /// Edits the deferred response to `cmd`. Over the interactions endpoint the deferral is
    /// the HTTP answer, which Discord may not have processed when the edit arrives (404
    /// Unknown Webhook): then the edit is tried again a few times, a little later each time.
    async fn edit_deferred(
        &self,
        cmd: &CommandInteraction,
        edit: EditInteractionResponse,
    ) -> Result<serenity::all::Message, serenity::Error> {
        let mut wait = Duration::from_millis(100);
        for _ in 0..DEFERRAL_RETRIES {
            match cmd.edit_response(&*self.http, edit.clone()).await {
                Err(serenity::Error::Http(HttpError::UnsuccessfulRequest(r)))
                    if r.error.code == UNKNOWN_WEBHOOK =>
                {
                    tracing::debug!("deferred Discord response not there yet; editing again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => return other,
            }
        }
        cmd.edit_response(&*self.http, edit).await
    }

    /// A button press from the gateway: record it, acknowledge it (deferred update: the message
    /// stays as it is), then run the button's command.
    async fn gateway_press(&self, press: ComponentInteraction, channel_name: Option<String>) {
        if !self.first_on_gateway(press.id, &press.token).await {
            return;
        }
        if let Err(e) = press
            .create_response(&*self.http, CreateInteractionResponse::Acknowledge)
            .await
        {
            tracing::warn!(error = %describe(&e), "could not acknowledge a Discord button press; not running it");
            return;
        }
        self.press(press, channel_name).await;
    }

    /// Runs an acknowledged button press: its `custom_id` is the command, run as the person
    /// who pressed it in the message's channel, answered as a reply to that message.
    async fn press(&self, press: ComponentInteraction, channel_name: Option<String>) {
        let command = &press.data.custom_id;
        if !command.starts_with('/') {
            tracing::debug!(custom_id = %command, "ignoring a press on a button opsbot did not make");
            return;
        }
        let thread = Some(press.message.id.to_string());
        let origin = interaction_origin!(press, channel_name);
        let ev = command_event(origin, press.id, thread, command.clone());
        self.inbound.answer(&ev, &InChannelWithHints(self)).await;
    }

    /// Puts the approve/deny reactions on approval request `run`'s message, so approvers
    /// only have to click.
    async fn hint(&self, run: RunId, ev: &InboundEvent, message_id: &str) {
        let (Some(channel), Some(message)) = (snowflake(&ev.channel.id), snowflake(message_id))
        else {
            return;
        };
        for emoji in &self.hints {
            let added = self
                .http
                .create_reaction(ChannelId::new(channel), MessageId::new(message), emoji)
                .await;
            if let Err(e) = added {
                tracing::debug!(run = %run, error = %describe(&e), "could not add a reaction hint");
            }
        }
    }

    /// A reaction from the gateway; the bot's own (its hints) are not votes.
    async fn reaction(
        &self,
        r: Reaction,
        added: bool,
        bot: Option<UserId>,
        channel_name: Option<String>,
    ) {
        let Some(user) = r.user_id else { return };
        if Some(user) == bot {
            return;
        }
        let emoji = match &r.emoji {
            ReactionType::Unicode(s) => s.clone(),
            ReactionType::Custom {
                name: Some(name), ..
            } => name.clone(),
            _ => return,
        };
        let message_id = r.message_id.to_string();
        let ev = event(
            Origin {
                user,
                display: r
                    .member
                    .as_ref()
                    .map_or_else(|| format!("<@{user}>"), |m| display_name(&m.user)),
                channel: r.channel_id,
                channel_name,
                guild: r.guild_id,
            },
            Some(message_id.clone()),
            EventPayload::Reaction {
                emoji,
                message_id,
                added,
            },
            None,
        );
        self.inbound.answer(&ev, &InChannelWithHints(self)).await;
    }
}

/// A slash command's answer: the edit of its deferred response.
struct Deferred<'a> {
    state: &'a DiscordState,
    cmd: &'a CommandInteraction,
}

#[async_trait::async_trait]
impl Answer for Deferred<'_> {
    async fn deliver(
        &self,
        _ev: &InboundEvent,
        message: &OutboundMessage,
        approval: Option<RunId>,
    ) -> Result<Option<String>, OutboundError> {
        let edited = self
            .state
            .edit_deferred(self.cmd, interaction_edit(message))
            .await
            .map_err(outbound_error)?;
        if approval.is_some() {
            self.state.replies.remember(edited.id, &self.cmd.token);
        }
        Ok(Some(edited.id.to_string()))
    }

    /// Drops the "thinking…" placeholder.
    async fn withheld(&self) {
        if let Err(e) = self.cmd.delete_response(&*self.state.http).await {
            tracing::debug!(error = %describe(&e), "could not remove a deferred Discord response");
        }
    }

    async fn bound(&self, ev: &InboundEvent, run: RunId, message_id: &str) {
        self.state.hint(run, ev, message_id).await;
    }
}

/// A reply in the event's channel (as an answer to its message, if any) through the paced
/// outbound, which sends again after a Retry-After, so a 429 does not lose it.
struct InChannelWithHints<'a>(&'a DiscordState);

#[async_trait::async_trait]
impl Answer for InChannelWithHints<'_> {
    async fn deliver(
        &self,
        ev: &InboundEvent,
        message: &OutboundMessage,
        approval: Option<RunId>,
    ) -> Result<Option<String>, OutboundError> {
        InChannel(self.0.outbound.as_ref())
            .deliver(ev, message, approval)
            .await
    }

    async fn bound(&self, ev: &InboundEvent, run: RunId, message_id: &str) {
        self.0.hint(run, ev, message_id).await;
    }
}

fn display_name(user: &User) -> String {
    user.global_name
        .clone()
        .unwrap_or_else(|| user.name.clone())
}

/// Who did something, and where.
struct Origin {
    user: UserId,
    display: String,
    channel: ChannelId,
    /// From the payload or the gateway cache; allow-lists by name then match the id only.
    channel_name: Option<String>,
    guild: Option<GuildId>,
}

/// Whoever invoked an interaction (a `CommandInteraction` or `ComponentInteraction`: same
/// fields, no shared trait), in its channel (named by the payload, else `channel_name`).
macro_rules! interaction_origin {
    ($interaction:expr, $channel_name:expr) => {{
        let i = &$interaction;
        Origin {
            user: i.user.id,
            display: display_name(&i.user),
            channel: i.channel_id,
            channel_name: i
                .channel
                .as_ref()
                .and_then(|c| c.name.clone())
                .or($channel_name),
            guild: i.guild_id,
        }
    }};
}
use interaction_origin;

/// A command typed or pressed in interaction `id`, answered under `thread`.
fn command_event(
    origin: Origin,
    id: InteractionId,
    thread: Option<String>,
    text: String,
) -> InboundEvent {
    let event_id = Some(format!("interaction:{id}"));
    event(origin, thread, EventPayload::Command(text), event_id)
}

fn event(
    origin: Origin,
    thread: Option<String>,
    payload: EventPayload,
    event_id: Option<String>,
) -> InboundEvent {
    InboundEvent::new(
        UserRef::new(Platform::Discord, origin.user.to_string()),
        ChannelRef::named(origin.channel.to_string(), origin.channel_name),
        payload,
    )
    .in_workspace(origin.guild.map(|g| g.to_string()))
    .in_thread(thread)
    .with_display_name(origin.display)
    .with_event_id(event_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_keeps_a_head_under_the_limit_and_says_where_the_rest_is() {
        assert_eq!(split_long(&"a".repeat(MAX_CONTENT), "`"), None);
        let text = format!("```\n{}\n```", "line of output\n".repeat(200));
        let head = split_long(&text, "`").unwrap();
        assert!(head.chars().count() <= MAX_CONTENT, "{}", head.len());
        assert!(head.starts_with("```\nline of output"));
        assert_eq!(head.matches("```").count() % 2, 0, "code fence closed");
        assert!(head.ends_with(&format!("the full text is attached as {ATTACHMENT})")));
        let wide = "é".repeat(2500);
        assert!(split_long(&wide, "`").unwrap().chars().count() <= MAX_CONTENT);
    }

    #[test]
    fn a_link_cut_by_the_head_stays_inside_its_code_span() {
        for pad in HEAD_CHARS - 12..HEAD_CHARS + 2 {
            let text = format!(
                "{} ``https://evil.example/{}``",
                "a".repeat(pad),
                "x".repeat(2000)
            );
            let head = split_long(&text, "``").unwrap();
            let (shown, _) = head.split_once('\n').unwrap();
            assert!(!markup::cut_inside_span(shown, "``"), "{pad}: {shown}");
            assert!(!shown.ends_with(" `"), "{pad}: {shown}");
        }
    }
}
