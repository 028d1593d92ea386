//! What a Discord message pings: exactly the people the core mentioned, nobody else. Outside
//! text (arguments, alert labels, script output) is made inert: `@everyone`, `@here` and
//! `<@…>`/`<#…>` in it get a zero-width space so they neither ping nor render as a mention,
//! and `allowed_mentions` lists the mentioned users alone (never everyone, never roles).
//! Link-looking text (`Segment::Link`) outside a code block becomes an inline code span,
//! where Discord neither links it nor reads `[text](url)` as a masked link; inside a code
//! block it is already inert.

use serenity::all::{CreateAllowedMentions, UserId};

use crate::adapters::markup::{code_span, delimiter, push_apart};
use crate::domain::{MentionOf, Segment, segments};
use crate::ports::OutboundMessage;

const ZWSP: &str = "\u{200B}";

/// The message's text with its mentions as `<@id>`, link-looking text as code and everything
/// else inert; and the backticks its code spans are delimited by.
pub(super) fn rendered(message: &OutboundMessage) -> (String, String) {
    let ticks = delimiter(&message.text);
    let mut out = String::with_capacity(message.text.len());
    for s in segments(&message.text, &message.mentions) {
        let piece = match s {
            Segment::Mention(_, MentionOf::User(id)) if snowflake(id).is_some() => {
                format!("<@{id}>")
            }
            // Pings are off inside code, and `allowed_mentions` allows none of outside text.
            Segment::Link {
                text,
                fenced: false,
            } => code_span(&ticks, text),
            // Discord has no user groups to ping; the name stays plain.
            Segment::Mention(text, _) | Segment::Text(text) | Segment::Link { text, .. } => {
                inert(text)
            }
        };
        push_apart(&mut out, &piece);
    }
    (out, ticks)
}

/// Pings for exactly the users the message mentions.
pub(super) fn allowed(message: &OutboundMessage) -> CreateAllowedMentions {
    let users: Vec<UserId> = segments(&message.text, &message.mentions)
        .into_iter()
        .filter_map(|s| match s {
            Segment::Mention(_, MentionOf::User(id)) => snowflake(id).map(UserId::new),
            _ => None,
        })
        .collect();
    CreateAllowedMentions::new()
        .everyone(false)
        .all_users(false)
        .all_roles(false)
        .users(users)
}

fn inert(text: &str) -> String {
    text.replace("@everyone", &format!("@{ZWSP}everyone"))
        .replace("@here", &format!("@{ZWSP}here"))
        .replace("<@", &format!("<{ZWSP}@"))
        .replace("<#", &format!("<{ZWSP}#"))
}

fn snowflake(id: &str) -> Option<u64> {
    id.parse::<u64>().ok().filter(|n| *n != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_mentioned_user_is_pinged_and_outside_text_stays_inert() {
        let mut m = OutboundMessage::text("alert api <@111> @everyone @here <#222> — on call: ");
        m.push_mention("alice", Some(MentionOf::User("80351110224678912".into())));
        let (text, _) = rendered(&m);
        assert!(text.ends_with("on call: <@80351110224678912>"), "{text}");
        for raw in ["<@111>", "@everyone", "@here", "<#222>"] {
            assert!(!text.contains(raw), "{raw} left live in {text}");
        }
        let json = serde_json::to_value(allowed(&m)).unwrap();
        assert_eq!(json["users"], serde_json::json!(["80351110224678912"]));
        assert_eq!(json["parse"], serde_json::json!([]));
    }

    #[test]
    fn links_become_code_spans_that_outside_backticks_cannot_end() {
        let m = OutboundMessage::text(
            "a `see https://evil.example/login` [x](https://y.example) mail ops@z.example\n```\ncurl https://w.example\n```",
        );
        let (text, ticks) = rendered(&m);
        assert_eq!(ticks, "``");
        assert_eq!(
            text,
            "a `see ``https://evil.example/login``` [x](``https://y.example``) mail \
             ``ops@z.example``\n```\ncurl https://w.example\n```"
                .replace("login```", "login``\u{200B}`")
        );
    }
}
