//! What a Telegram message pings: the people the core mentioned, as `text_mention` entities
//! (offsets and lengths in UTF-16 code units, as the Bot API counts), and nobody else. The
//! text is sent without a parse mode, so outside text is never markup; Telegram still links
//! `@username` by itself, so an `@` in outside text is followed by a word joiner (invisible)
//! that keeps it from being read as a username. Telegram also links URLs, bare domains and
//! email addresses by itself; each link-looking span (`Segment::Link`) gets a `code` entity,
//! and Telegram makes no link that meets another entity, so the text stays exactly as it was
//! (readable, copyable) and shows in monospace.

use teloxide::types::{MessageEntity, User, UserId};

use crate::domain::{MentionOf, Segment, link_spans, segments};
use crate::ports::OutboundMessage;

const WORD_JOINER: &str = "@\u{2060}";

/// The text to send and its entities: mentions, and `code` over link-looking text.
pub(super) fn rendered(message: &OutboundMessage) -> (String, Vec<MessageEntity>) {
    let mut text = String::with_capacity(message.text.len());
    let mut entities = Vec::new();
    for s in segments(&message.text, &message.mentions) {
        let offset = text.encode_utf16().count();
        match s {
            Segment::Mention(name, MentionOf::User(id)) if let Ok(id) = id.parse::<u64>() => {
                text.push_str(name);
                let length = name.encode_utf16().count();
                entities.push(MessageEntity::text_mention(
                    person(id, name),
                    offset,
                    length,
                ));
            }
            // Telegram shows no ``` block as code: the text is sent without a parse mode.
            Segment::Link { text: link, .. } => {
                let shown = link.replace('@', WORD_JOINER);
                text.push_str(&shown);
                entities.push(MessageEntity::code(offset, shown.encode_utf16().count()));
            }
            // Telegram has no user groups; the name stays plain (and inert).
            Segment::Mention(t, _) | Segment::Text(t) => {
                text.push_str(&t.replace('@', WORD_JOINER))
            }
        }
    }
    (text, entities)
}

/// The message's text with no mention at all, for where entities cannot go (a file's
/// caption, a cut edit): every `@`, the mentions' own included, kept from reading as a
/// username, so a name never pings whoever holds it on Telegram.
pub(super) fn unmentioned(message: &OutboundMessage) -> String {
    message.text.replace('@', WORD_JOINER)
}

/// A `code` entity over each link-looking span of `text` as it is sent (a caption, a cut
/// edit: text carrying no mention), so Telegram links none of them.
pub(super) fn unlinked(text: &str) -> Vec<MessageEntity> {
    let (mut units, mut at) = (0, 0);
    link_spans(text)
        .into_iter()
        .map(|r| {
            units += text[at..r.start].encode_utf16().count();
            let length = text[r.clone()].encode_utf16().count();
            let entity = MessageEntity::code(units, length);
            (units, at) = (units + length, r.end);
            entity
        })
        .collect()
}

/// The user a mention points at: Telegram needs only the id; the rest is display.
fn person(id: u64, name: &str) -> User {
    User {
        id: UserId(id),
        is_bot: false,
        first_name: name.trim_start_matches('@').to_owned(),
        last_name: None,
        username: None,
        language_code: None,
        is_premium: false,
        added_to_attachment_menu: false,
    }
}

#[cfg(test)]
mod tests {
    use teloxide::types::MessageEntityKind;

    use super::*;

    fn shown(text: &str, e: &MessageEntity) -> String {
        let units: Vec<u16> = text.encode_utf16().collect();
        String::from_utf16(&units[e.offset..e.offset + e.length]).unwrap()
    }

    #[test]
    fn links_get_code_entities_beside_mentions_and_the_text_is_unchanged() {
        let mut m =
            OutboundMessage::text("🔥 see https://evil.example/login, mail ops@x.example — ");
        m.push_mention("alice", Some(MentionOf::User("4242".into())));
        let (text, entities) = rendered(&m);
        assert!(text.starts_with("🔥 see https://evil.example/login, mail ops@\u{2060}x.example"));
        let kinds: Vec<_> = entities
            .iter()
            .map(|e| (&e.kind, shown(&text, e)))
            .collect();
        assert!(
            matches!(kinds[0], (MessageEntityKind::Code, ref s) if s == "https://evil.example/login"),
            "{kinds:?}"
        );
        assert!(
            matches!(kinds[1], (MessageEntityKind::Code, ref s) if s == "ops@\u{2060}x.example"),
            "{kinds:?}"
        );
        assert!(
            matches!(kinds[2], (MessageEntityKind::TextMention { .. }, ref s) if s == "@alice"),
            "{kinds:?}"
        );
        let caption = "é tg://resolve?domain=x and www.y.example";
        let spans: Vec<_> = unlinked(caption)
            .iter()
            .map(|e| shown(caption, e))
            .collect();
        assert_eq!(spans, ["tg://resolve?domain=x", "www.y.example"]);
    }

    #[test]
    fn a_mention_after_an_emoji_is_offset_in_utf16_units() {
        let mut m = OutboundMessage::text("🔥 api down (label @everyone) — ");
        m.push_mention("alice", Some(MentionOf::User("4242".into())));
        let (text, entities) = rendered(&m);
        assert!(!text.contains("@everyone"), "{text}");
        let e = &entities[0];
        let prefix: String = text.chars().take_while(|_| true).collect();
        let units: Vec<u16> = prefix.encode_utf16().collect();
        let shown = String::from_utf16(&units[e.offset..e.offset + e.length]).unwrap();
        assert_eq!(shown, "@alice");
        // The fire emoji is 2 UTF-16 units but 1 char: offsets must count units.
        assert_eq!(e.offset, text.encode_utf16().count() - "@alice".len());
        match &e.kind {
            MessageEntityKind::TextMention { user } => assert_eq!(user.id, UserId(4242)),
            other => panic!("{other:?}"),
        }
    }
}
