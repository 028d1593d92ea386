//! What a Discord message pings: exactly the people the core mentioned, nobody else. Outside
//! text (arguments, alert labels, script output) is made inert: `@everyone`, `@here` and
//! `<@…>`/`<#…>` in it get a zero-width space so they neither ping nor render as a mention,
//! and `allowed_mentions` lists the mentioned users alone (never everyone, never roles).

use serenity::all::{CreateAllowedMentions, UserId};

use crate::domain::{MentionOf, Segment, segments};
use crate::ports::OutboundMessage;

const ZWSP: &str = "\u{200B}";

/// The message's text with its mentions as `<@id>` and everything else inert.
pub(super) fn rendered(message: &OutboundMessage) -> String {
    segments(&message.text, &message.mentions)
        .into_iter()
        .map(|s| match s {
            Segment::Mention(_, MentionOf::User(id)) if snowflake(id).is_some() => {
                format!("<@{id}>")
            }
            // Discord has no user groups to ping; the name stays plain.
            Segment::Mention(text, _) | Segment::Text(text) => inert(text),
        })
        .collect()
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
        let text = rendered(&m);
        assert!(text.ends_with("on call: <@80351110224678912>"), "{text}");
        for raw in ["<@111>", "@everyone", "@here", "<#222>"] {
            assert!(!text.contains(raw), "{raw} left live in {text}");
        }
        let json = serde_json::to_value(allowed(&m)).unwrap();
        assert_eq!(json["users"], serde_json::json!(["80351110224678912"]));
        assert_eq!(json["parse"], serde_json::json!([]));
    }
}
