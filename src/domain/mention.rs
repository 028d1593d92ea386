//! Mentions in the bot's own messages: who a span of a message's text pings. The text
//! itself stays plain (outside text in it is never markup on any platform); a mention is a
//! byte range of that text holding the fallback (`@alice`) and the platform id it stands
//! for on the platform the message goes to, which each adapter renders natively. Text that a
//! platform would link by itself (`links.rs`) is cut out as well, for the adapter to render
//! in its platform's non-linking form.

use std::ops::Range;

use super::links::link_spans;

/// What a mention pings, as an id on the target platform.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum MentionOf {
    /// One person: a Slack `U…`, a Discord user snowflake, a Telegram user id.
    User(String),
    /// A Slack user group (`S…`), for a role; other platforms have none.
    Group(String),
}

impl MentionOf {
    /// The id, when it is one a platform could issue (letters and digits): ids come from
    /// the config, and one that is not stays plain text rather than becoming markup.
    pub fn id(&self) -> Option<&str> {
        let id = match self {
            MentionOf::User(id) | MentionOf::Group(id) => id,
        };
        (!id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric()))
            .then_some(id.as_str())
    }
}

/// A span of a message's text that pings someone.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mention {
    pub range: Range<usize>,
    pub of: MentionOf,
}

/// A message's text cut at its mentions and links, for an adapter to render: plain text (to
/// escape as the platform needs), mentions (to render natively) and link-looking text (to
/// render so that it does not link). Mentions out of order, overlapping, out of range or with
/// an id no platform issues are left as the plain text they cover.
pub fn segments<'t>(text: &'t str, mentions: &'t [Mention]) -> Vec<Segment<'t>> {
    let mut out = Vec::new();
    let mut at = 0;
    for m in mentions {
        let r = &m.range;
        let valid = r.start >= at
            && r.start < r.end
            && text.is_char_boundary(r.start)
            && text.get(r.clone()).is_some()
            && m.of.id().is_some();
        if !valid {
            continue;
        }
        plain(text, at..r.start, &mut out);
        out.push(Segment::Mention(&text[r.clone()], &m.of));
        at = r.end;
    }
    plain(text, at..text.len(), &mut out);
    out
}

/// `text[range]`, which holds no mention, as text and link segments.
fn plain<'t>(text: &'t str, range: Range<usize>, out: &mut Vec<Segment<'t>>) {
    let piece = &text[range.clone()];
    let mut at = 0;
    // Fence marks before `at`, counted as the piece is walked (a link holds no backtick).
    let mut fences = text[..range.start].matches("```").count();
    for link in link_spans(piece) {
        if link.start > at {
            out.push(Segment::Text(&piece[at..link.start]));
        }
        fences += piece[at..link.start].matches("```").count();
        let fenced = fences % 2 == 1;
        out.push(Segment::Link {
            text: &piece[link.clone()],
            fenced,
        });
        at = link.end;
    }
    if at < piece.len() {
        out.push(Segment::Text(&piece[at..]));
    }
}

/// One piece of a message's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment<'t> {
    Text(&'t str),
    /// The fallback text, and who it pings.
    Mention(&'t str, &'t MentionOf),
    /// Text a platform would make a link of by itself (outside text: the bot never means a
    /// link), and whether it sits inside one of the message's ```` ``` ```` blocks, which Slack
    /// and Discord show as code already.
    Link {
        text: &'t str,
        fenced: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(range: Range<usize>, id: &str) -> Mention {
        Mention {
            range,
            of: MentionOf::User(id.into()),
        }
    }

    #[test]
    fn links_are_cut_out_of_text_and_know_whether_they_are_fenced() {
        let text = "see evil.example\n```\ncurl https://x.example\n```\n@alice";
        let alice = user(text.len() - 6..text.len(), "U1");
        let segs = segments(text, std::slice::from_ref(&alice));
        assert_eq!(
            segs,
            vec![
                Segment::Text("see "),
                Segment::Link {
                    text: "evil.example",
                    fenced: false
                },
                Segment::Text("\n```\ncurl "),
                Segment::Link {
                    text: "https://x.example",
                    fenced: true
                },
                Segment::Text("\n```\n"),
                Segment::Mention("@alice", &alice.of),
            ]
        );
    }

    #[test]
    fn text_is_cut_at_valid_mentions_only() {
        let text = "on call: @alice and @bob";
        let ok = user(9..15, "U1");
        let bad_id = user(20..24, "U<!channel>");
        let segs = segments(text, std::slice::from_ref(&ok));
        assert_eq!(
            segs,
            vec![
                Segment::Text("on call: "),
                Segment::Mention("@alice", &ok.of),
                Segment::Text(" and @bob"),
            ]
        );
        let all = [ok.clone(), bad_id];
        assert_eq!(
            segments(text, &all).len(),
            3,
            "an id with markup stays text"
        );
        let out_of_range = [user(20..99, "U2")];
        assert_eq!(segments(text, &out_of_range), vec![Segment::Text(text)]);
        let inside_a_char = [user(1..3, "U3")];
        assert_eq!(segments("é@x", &inside_a_char), vec![Segment::Text("é@x")]);
    }
}
