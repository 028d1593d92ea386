//! Slack over HTTP, through slack-morphism: slash commands (`POST /slack/commands`) and the
//! Events API (`POST /slack/events`, reactions feed approvals and alert acks). Every request's
//! `X-Slack-Signature` is verified (v0, 5-minute window, constant time) before anything is
//! parsed; failures are 401 and change nothing. Requests are acknowledged at once and worked
//! on afterwards, so Slack's 3-second limit never causes a redelivery; redeliveries that do
//! come are dropped by event id (stored, so they hold across restarts and replicas).
//! `socket` receives the same over Slack Socket Mode, for installs without a public endpoint.

pub mod manifest;
pub mod socket;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use secrecy::{ExposeSecret, SecretString};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use slack_morphism::signature_verifier::SlackEventSignatureVerifier;

use super::inbound::{Answer, InChannel, Inbound, STORE_UNREACHABLE};
use super::markup::{code_span, cut_inside_span, push_apart};
use crate::domain::{
    ChannelRef, EventPayload, InboundEvent, MentionOf, Platform, RunId, Segment, UserRef,
    Visibility, segments,
};
use crate::ports::{
    ChatAction, ChatOutbound, OutboundError, OutboundMessage, OutboundTarget, Sent, StoreError,
};

type Connector = SlackClientHyperConnector<HttpsConnector<HttpConnector>>;

/// The Slack Web API client (and where it points: Slack, or a local fake in tests).
pub struct SlackApi {
    client: SlackClient<Connector>,
    token: SlackApiToken,
    /// Channel names by id, as `conversations.info` reported them, and when.
    names: std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
}

/// How long a looked-up channel name is trusted (channels are rarely renamed).
const CHANNEL_NAME_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

impl SlackApi {
    /// `api_url` is Slack's (`https://slack.com/api`) or a test fake's.
    pub fn new(api_url: &str, bot_token: &SecretString) -> Result<Self, String> {
        // https_or_http: the default connector refuses plain http, which local fakes speak.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load TLS roots: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let connector = SlackClientHyperConnector::with_connector(https)
            .with_slack_api_url(api_url.trim_end_matches('/'));
        Ok(Self {
            client: SlackClient::new(connector),
            token: SlackApiToken::new(SlackApiTokenValue(bot_token.expose_secret().to_owned())),
            names: std::sync::Mutex::default(),
        })
    }

    /// The channel's name (for allow-lists by name), from a cache or `conversations.info`;
    /// `None` when Slack cannot say (missing `channels:read`, unreachable): the id stands in.
    pub async fn channel_name(&self, id: &str) -> Option<String> {
        if let Some((name, at)) = self.names.lock().expect("channel names poisoned").get(id)
            && at.elapsed() < CHANNEL_NAME_TTL
        {
            return Some(name.clone());
        }
        let req = SlackApiConversationsInfoRequest::new(SlackChannelId(id.to_owned()));
        let session = self.client.open_session(&self.token);
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            session.conversations_info(&req),
        );
        let name = match lookup.await {
            Ok(Ok(info)) => info.channel.name?,
            Ok(Err(e)) => {
                tracing::debug!(channel = id, error = %e, "could not look up a Slack channel name");
                return None;
            }
            Err(_) => return None,
        };
        self.names
            .lock()
            .expect("channel names poisoned")
            .insert(id.to_owned(), (name.clone(), std::time::Instant::now()));
        Some(name)
    }
}

fn slack_error(e: SlackClientError) -> OutboundError {
    match e {
        SlackClientError::RateLimitError(r) => {
            OutboundError::RetryAfter(r.retry_after.unwrap_or(std::time::Duration::from_secs(1)))
        }
        // A private channel the bot is not in looks like no channel at all.
        SlackClientError::ApiError(api)
            if matches!(api.code.as_str(), "channel_not_found" | "not_in_channel") =>
        {
            OutboundError::NotInChannel(api.code)
        }
        SlackClientError::ApiError(api) if api.code == "is_archived" => {
            OutboundError::Undeliverable(api.code)
        }
        SlackClientError::ApiError(api)
            if matches!(
                api.code.as_str(),
                "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout"
            ) =>
        {
            OutboundError::Unavailable(api.code)
        }
        SlackClientError::HttpError(http) if http.status_code.is_server_error() => {
            OutboundError::Unavailable(format!("HTTP {}", http.status_code))
        }
        SlackClientError::HttpProtocolError(e) => OutboundError::Unavailable(e.to_string()),
        other => OutboundError::Failed(other.to_string()),
    }
}

/// Slack's limit for a section block's text; longer messages go out without buttons (every
/// button is also a command people can type).
const SECTION_TEXT_MAX: usize = 3000;

/// Slack's limit for a message's `text` (it truncates beyond it); opsbot cuts first and says so.
const TEXT_MAX: usize = 40_000;

/// `parse` for every message opsbot posts or edits: Slack leaves the text as sent (its own
/// markup is still read), linking no bare URL in it.
const NO_PARSING: &str = "none";

/// Prefix of the `action_id` of opsbot's buttons; the command itself travels in `value`.
const ACTION_ID_PREFIX: &str = "opsbot_command_";

/// `text` as Slack shows it literally. opsbot's messages are plain text that quotes outside
/// text (arguments, alert labels, script output), and Slack reads `<!channel>`, `<@U1>` and
/// `<https://x|label>` in `text` and mrkdwn as pings and links: escaping `&`, `<` and `>`
/// (Slack's documented escaping) keeps them inert. The core never means Slack markup; its
/// mentions are rendered by [`markup`] alone.
fn literal(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The message's text as Slack markup: literal text, the message's own mentions as `<@U…>`
/// (a person) or `<!subteam^S…>` (a user group), and link-looking text as inline code (mrkdwn
/// has single-backtick code only), unless it is in a ```` ``` ```` block already. Slack links
/// bare URLs itself, on its server; besides the code, messages are posted with `parse: none`
/// and their section text `verbatim`, which turn that off. Every message opsbot sends to
/// Slack passes through here.
fn markup(message: &OutboundMessage) -> String {
    let mut out = String::with_capacity(message.text.len());
    for s in segments(&message.text, &message.mentions) {
        let piece = match s {
            Segment::Text(t)
            | Segment::Link {
                text: t,
                fenced: true,
            } => literal(t),
            Segment::Link {
                text,
                fenced: false,
            } => code_span("`", &literal(text)),
            Segment::Mention(_, MentionOf::User(id)) => format!("<@{id}>"),
            Segment::Mention(_, MentionOf::Group(id)) => format!("<!subteam^{id}>"),
        };
        push_apart(&mut out, &piece);
    }
    out
}

/// `escaped` within `max` characters, cut with an ellipsis; an escape or a mention cut in
/// half is dropped rather than shown as text, and a code span cut open is closed.
fn within(escaped: String, max: usize) -> String {
    if escaped.chars().count() <= max {
        return escaped;
    }
    let cut = escaped
        .char_indices()
        .nth(max.saturating_sub(2))
        .map_or(escaped.len(), |(i, _)| i);
    let mut head = &escaped[..cut];
    if let Some(amp) = head.rfind('&')
        && !head[amp..].contains(';')
    {
        head = &head[..amp];
    }
    if let Some(open) = head.rfind('<')
        && !head[open..].contains('>')
    {
        head = &head[..open];
    }
    let head = head.trim_end_matches('`');
    let close = if cut_inside_span(head, "`") { "`" } else { "" };
    format!("{head}{close}…")
}

/// The message as Slack content: its literal text (the notification and screen-reader
/// fallback), and as Block Kit that text with one button per action when it fits a section.
fn content(message: &OutboundMessage) -> (SlackMessageContent, Option<Vec<SlackBlock>>) {
    let text = within(markup(message), TEXT_MAX);
    let blocks = blocks(&text, &message.actions);
    (SlackMessageContent::new().with_text(text), blocks)
}

/// `text` (already literal) and one button per action as Block Kit; none without actions.
fn blocks(text: &str, actions: &[ChatAction]) -> Option<Vec<SlackBlock>> {
    if actions.is_empty() || text.chars().count() > SECTION_TEXT_MAX {
        return None;
    }
    // verbatim: Slack does not link URLs or channel names in the text by itself.
    let section = SlackSectionBlock::new().with_text(SlackBlockText::MarkDown(
        SlackBlockMarkDownText::new(text.to_owned()).with_verbatim(true),
    ));
    let buttons = actions
        .iter()
        .enumerate()
        .map(|(i, action)| {
            let button =
                SlackBlockButtonElement::new(SlackBlockPlainTextOnly::from(action.label.as_str()))
                    .with_action_id(SlackActionId(format!("{ACTION_ID_PREFIX}{i}")))
                    .with_value(action.command.clone());
            let button = match action.danger {
                true => button.with_style(SlackBlockButtonStyle::Danger),
                false => button.with_style(SlackBlockButtonStyle::Primary),
            };
            SlackActionBlockElement::Button(button)
        })
        .collect();
    Some(vec![section.into(), SlackActionsBlock::new(buttons).into()])
}

#[async_trait::async_trait]
impl ChatOutbound for SlackApi {
    async fn send(&self, to: &OutboundTarget, message: &OutboundMessage) -> Sent {
        let (mut content, blocks) = content(message);
        if let Some(blocks) = blocks {
            content = content.with_blocks(blocks);
        }
        let mut req =
            SlackApiChatPostMessageRequest::new(SlackChannelId(to.channel_id.clone()), content);
        req.thread_ts = to.thread.as_ref().map(|t| SlackTs(t.clone()));
        // No processing of the text (Slack would link bare URLs in it), no previews.
        req.parse = Some(NO_PARSING.into());
        req.unfurl_links = Some(false);
        req.unfurl_media = Some(false);
        let session = self.client.open_session(&self.token);
        session
            .chat_post_message(&req)
            .await
            .map(|r| r.ts.0)
            .map_err(slack_error)
    }

    async fn edit(&self, to: &OutboundTarget, id: &str, message: &OutboundMessage) -> Sent<()> {
        // chat.update keeps the previous blocks unless given new ones; an empty list removes
        // buttons that no longer apply (an alert acked since).
        let (content, blocks) = content(message);
        let mut req = SlackApiChatUpdateRequest::new(
            SlackChannelId(to.channel_id.clone()),
            content.with_blocks(blocks.unwrap_or_default()),
            SlackTs(id.to_owned()),
        );
        req.parse = Some(NO_PARSING.into());
        let session = self.client.open_session(&self.token);
        session
            .chat_update(&req)
            .await
            .map(|_| ())
            .map_err(slack_error)
    }
}

#[derive(Clone)]
pub struct SlackState {
    pub inbound: Inbound,
    pub api: Arc<SlackApi>,
    /// Channel posts go through the paced outbound (`adapters::throttle`), like every other
    /// message the bot sends; `response_url` answers do not count against channel limits.
    pub outbound: Arc<dyn ChatOutbound>,
    pub verifier: SlackEventSignatureVerifier,
    /// `slack.command_prefix`: slash commands arrive as `/{prefix}status`.
    command_prefix: Arc<str>,
}

impl SlackState {
    pub fn new(
        inbound: Inbound,
        api: Arc<SlackApi>,
        outbound: Arc<dyn ChatOutbound>,
        signing_secret: &SecretString,
    ) -> Self {
        Self {
            inbound,
            api,
            outbound,
            verifier: SlackEventSignatureVerifier::new(&SlackSigningSecret::new(
                signing_secret.expose_secret().to_owned(),
            )),
            command_prefix: Arc::from(""),
        }
    }

    pub fn with_command_prefix(mut self, prefix: &str) -> Self {
        self.command_prefix = Arc::from(prefix);
        self
    }

    /// The command as opsbot knows it: `/ops-status` is `/status` under prefix `ops-`.
    fn unprefixed<'a>(&self, command: &'a str) -> std::borrow::Cow<'a, str> {
        match command
            .strip_prefix('/')
            .and_then(|c| c.strip_prefix(&*self.command_prefix))
        {
            Some(name) if !self.command_prefix.is_empty() => format!("/{name}").into(),
            _ => command.into(),
        }
    }

    /// Checks `X-Slack-Signature` over the raw body; `None` means refuse with 401.
    fn verified<'a>(&self, headers: &HeaderMap, body: &'a Bytes) -> Option<&'a str> {
        let header = |name: &str| crate::hooks::header(headers, name);
        let signature = header(SlackEventSignatureVerifier::SLACK_SIGNED_HASH_HEADER)?;
        let timestamp = header(SlackEventSignatureVerifier::SLACK_SIGNED_TIMESTAMP)?;
        let body = std::str::from_utf8(body).ok()?;
        match self.verifier.verify(signature, body, timestamp) {
            Ok(()) => Some(body),
            Err(e) => {
                tracing::warn!(error = %e, "refused a Slack request with a bad or stale signature");
                None
            }
        }
    }
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "bad signature").into_response()
}

/// An event from Slack user `user` in channel `channel_id`. Events carry no channel name;
/// `dispatch` looks it up (the id stands in meanwhile).
fn event(user: &str, channel_id: &str, payload: EventPayload) -> InboundEvent {
    InboundEvent::new(
        UserRef::new(Platform::Slack, user),
        ChannelRef::id_only(channel_id),
        payload,
    )
}

/// Routes `ev` and delivers the answer, in a task of its own: the caller has already
/// acknowledged (or is about to), within Slack's 3 seconds.
fn dispatch(state: &SlackState, ev: InboundEvent, response_url: Option<SlackResponseUrl>) {
    let state = state.clone();
    state
        .inbound
        .clone()
        .spawn(async move { route(&state, ev, response_url).await });
}

/// Names the channel when the event named only its id, routes `ev` and delivers the answer.
async fn route(state: &SlackState, mut ev: InboundEvent, response_url: Option<SlackResponseUrl>) {
    // Events and button presses name only the channel id; allow-lists may use its name.
    if ev.channel.name == ev.channel.id
        && let Some(name) = state.api.channel_name(&ev.channel.id).await
    {
        ev.channel.name = name;
    }
    let answer = SlackAnswer {
        state,
        response_url: response_url.as_ref(),
    };
    state.inbound.answer(&ev, &answer).await;
}

/// The delivery-log key of a slash command. Slash commands carry no event id and Slack never
/// retries them, so a second request with the same `trigger_id` (unique per invocation) is a
/// replay of a captured one within the signature window.
fn command_key(cmd: &SlackCommandEvent) -> String {
    format!("command:{}", cmd.trigger_id.0)
}

/// A slash command (HTTP or Socket Mode): routed, then answered through `response_url`.
fn on_command(state: &SlackState, cmd: SlackCommandEvent) {
    let text = format!(
        "{} {}",
        state.unprefixed(&cmd.command.0),
        cmd.text.clone().unwrap_or_default()
    );
    let ev = InboundEvent::new(
        UserRef::new(Platform::Slack, &cmd.user_id.0),
        ChannelRef::named(&cmd.channel_id.0, cmd.channel_name.clone()),
        EventPayload::Command(text),
    )
    .with_reply_handle(Some(cmd.response_url.0.to_string()))
    .with_event_id(Some(command_key(&cmd)));
    let state = state.clone();
    state.inbound.clone().spawn(async move {
        match state
            .inbound
            .first_delivery(Platform::Slack, &command_key(&cmd))
            .await
        {
            Ok(true) => route(&state, ev, Some(cmd.response_url)).await,
            Ok(false) => {}
            // Unknown whether it ran before: running it could run it twice. The person is told.
            Err(_) => {
                let sorry = OutboundMessage::text(STORE_UNREACHABLE);
                let answer = SlackAnswer {
                    state: &state,
                    response_url: Some(&cmd.response_url),
                };
                if let Err(e) = answer.deliver(&ev, &sorry, None).await {
                    tracing::warn!(error = %e, "could not tell a Slack user that nothing ran");
                }
            }
        }
    });
}

/// `POST /slack/commands`: verify, acknowledge at once, answer through `response_url`.
pub async fn command(State(state): State<SlackState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(body) = state.verified(&headers, &body) else {
        return unauthorized();
    };
    match serde_urlencoded::from_str::<SlackCommandEvent>(body) {
        Ok(cmd) => {
            on_command(&state, cmd);
            StatusCode::OK.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("not a slash command: {e}")).into_response(),
    }
}

/// How Slack answers: approval requests as channel messages (so reactions reach them),
/// everything else through `response_url` when there is one, else in the channel/thread.
struct SlackAnswer<'a> {
    state: &'a SlackState,
    response_url: Option<&'a SlackResponseUrl>,
}

#[async_trait::async_trait]
impl Answer for SlackAnswer<'_> {
    async fn deliver(
        &self,
        ev: &InboundEvent,
        message: &OutboundMessage,
        approval: Option<RunId>,
    ) -> Result<Option<String>, OutboundError> {
        let (Some(url), None) = (self.response_url, approval) else {
            return InChannel(self.state.outbound.as_ref())
                .deliver(ev, message, approval)
                .await;
        };
        self.state.api.respond(url, message).await.map(|()| None)
    }

    async fn tell_requester(
        &self,
        _ev: &InboundEvent,
        message: &OutboundMessage,
    ) -> Option<Result<(), OutboundError>> {
        let url = self.response_url?;
        let private = message.clone().with_visibility(Visibility::Requester);
        Some(self.state.api.respond(url, &private).await)
    }
}

/// A `response_url` answer. slack-morphism's webhook request has no `response_type`, and
/// without one Slack shows the answer to the asker only: this adds it.
#[derive(serde::Serialize)]
struct ResponseUrlMessage {
    #[serde(flatten)]
    content: SlackMessageContent,
    response_type: &'static str,
    parse: &'static str,
    unfurl_links: bool,
    unfurl_media: bool,
}

impl SlackApi {
    /// Answers a slash command through its `response_url`, in the channel or to the asker only
    /// as the message's visibility says. No buttons: such an answer is never an approval request.
    async fn respond(
        &self,
        url: &SlackResponseUrl,
        message: &OutboundMessage,
    ) -> Result<(), OutboundError> {
        let body = ResponseUrlMessage {
            content: content(message).0,
            response_type: match message.visibility {
                Visibility::Channel => "in_channel",
                Visibility::Requester => "ephemeral",
            },
            parse: NO_PARSING,
            unfurl_links: false,
            unfurl_media: false,
        };
        let span = tracing::debug_span!("Slack response_url");
        let context = SlackClientApiCallContext {
            rate_control_params: None,
            token: None,
            tracing_span: &span,
            is_sensitive_url: true,
        };
        self.client
            .http_api
            .connector
            .http_post_uri::<_, SlackApiPostWebhookMessageResponse>(url.0.clone(), &body, context)
            .await
            .map(|_| ())
            .map_err(slack_error)
    }
}

/// An Events API callback (HTTP or Socket Mode): dropped if its `event_id` was seen before,
/// else reactions feed approvals and acks. `Err` when it is unknown whether the event is new
/// (the store failed): nothing was done, and a redelivery may be asked for.
async fn on_event_callback(
    state: &SlackState,
    cb: SlackPushEventCallback,
) -> Result<(), StoreError> {
    if !state
        .inbound
        .first_delivery(Platform::Slack, &cb.event_id.0)
        .await?
    {
        return Ok(());
    }
    let (user, reaction, item, added) = match cb.event {
        SlackEventCallbackBody::ReactionAdded(r) => (r.user, r.reaction, r.item, true),
        SlackEventCallbackBody::ReactionRemoved(r) => (r.user, r.reaction, r.item, false),
        _ => return Ok(()),
    };
    let SlackReactionsItem::Message(message) = item else {
        return Ok(());
    };
    let Some(channel) = message.origin.channel else {
        return Ok(());
    };
    let ts = message.origin.ts.0;
    let ev = event(
        &user.0,
        &channel.0,
        EventPayload::Reaction {
            emoji: reaction.0,
            message_id: ts.clone(),
            added,
        },
    )
    .in_thread(Some(ts))
    .with_event_id(Some(cb.event_id.0));
    dispatch(state, ev, None);
    Ok(())
}

/// `POST /slack/events`: URL verification, and reactions for approvals and acks.
pub async fn events(State(state): State<SlackState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(body) = state.verified(&headers, &body) else {
        return unauthorized();
    };
    let push: SlackPushEvent = match serde_json::from_str(body) {
        Ok(p) => p,
        // Event types this crate version does not know are not ours to handle; ack them.
        Err(e) => {
            tracing::debug!(error = %e, "ignoring an unrecognised Slack event");
            return StatusCode::OK.into_response();
        }
    };
    match push {
        SlackPushEvent::UrlVerification(v) => v.challenge.into_response(),
        SlackPushEvent::AppRateLimited(_) => StatusCode::OK.into_response(),
        SlackPushEvent::EventCallback(cb) => match on_event_callback(&state, cb).await {
            Ok(()) => StatusCode::OK.into_response(),
            // Unknown whether it is new: let Slack retry rather than risk a double action.
            Err(e) => {
                tracing::error!(error = %e, "could not record a Slack event id");
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
        },
    }
}

/// A button press (HTTP or Socket Mode) runs the button's command as the person who pressed
/// it, in the message's channel and thread. Other interactions are not opsbot's.
fn on_interaction(state: &SlackState, interaction: SlackInteractionEvent) {
    let SlackInteractionEvent::BlockActions(actions) = interaction else {
        return;
    };
    let (Some(user), SlackInteractionActionContainer::Message(container)) =
        (actions.user, actions.container)
    else {
        return;
    };
    let Some(channel) = container.channel_id.or(actions.channel.map(|c| c.id)) else {
        return;
    };
    let commands = actions
        .actions
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.action_id.0.starts_with(ACTION_ID_PREFIX))
        .filter_map(|a| a.value)
        .filter(|v| v.starts_with('/'));
    // Buttons sit on approval requests posted in a thread or at top level: answer there.
    let thread = actions
        .message
        .as_ref()
        .and_then(|m| m.origin.thread_ts.clone())
        .unwrap_or(container.message_ts)
        .0;
    for command in commands {
        let ev = event(&user.id.0, &channel.0, EventPayload::Command(command))
            .in_thread(Some(thread.clone()));
        dispatch(state, ev, None);
    }
}

/// `POST /slack/interactivity`: button presses, acknowledged at once.
pub async fn interactivity(
    State(state): State<SlackState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(body) = state.verified(&headers, &body) else {
        return unauthorized();
    };
    #[derive(serde::Deserialize)]
    struct Form {
        payload: String,
    }
    let parsed = serde_urlencoded::from_str::<Form>(body)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            serde_json::from_str::<SlackInteractionEvent>(&f.payload).map_err(|e| e.to_string())
        });
    match parsed {
        Ok(interaction) => {
            on_interaction(&state, interaction);
            StatusCode::OK.into_response()
        }
        Err(e) => {
            tracing::debug!(error = %e, "ignoring an unrecognised Slack interaction");
            (StatusCode::BAD_REQUEST, "not a Slack interaction").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_escaped_inline_code_beside_mentions() {
        let mut m = OutboundMessage::text(
            "see <https://x.example/?a&b|click> `run`, mail ops@y.example — ",
        );
        m.push_mention("alice", Some(MentionOf::User("U1".into())));
        assert_eq!(
            markup(&m),
            "see &lt;`https://x.example/?a&amp;b|click`&gt; `run`, mail `ops@y.example` — <@U1>"
        );
        let fenced = OutboundMessage::text("```\ncurl https://x.example\n```");
        assert_eq!(markup(&fenced), "```\ncurl https://x.example\n```");
    }

    #[test]
    fn a_code_span_cut_by_the_length_limit_is_closed() {
        let long = format!(
            "{} `https://evil.example/{}`",
            "a".repeat(10),
            "x".repeat(50)
        );
        let cut = within(long, 30);
        assert_eq!(cut, "aaaaaaaaaa `https://evil.exa`…");
        assert_eq!(cut.chars().count(), 30);
    }
}
