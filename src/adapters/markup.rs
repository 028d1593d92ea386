//! Inline code spans for the platforms whose message text is markdown (Slack mrkdwn, Discord
//! markdown): how link-looking outside text (`domain::Segment::Link`) is shown as code, where
//! neither platform makes a link, without the backticks of the text around it ending the
//! span early or merging with it.

const ZWSP: char = '\u{200B}';

/// The backticks that open and close a code span in the rendering of `text`: the shortest
/// run of backticks that `text` holds nowhere. A span opened by N backticks closes only at a
/// run of exactly N, so no backtick of outside text can end one of ours. Never three, which
/// Discord reads as a code block.
pub(super) fn delimiter(text: &str) -> String {
    let taken = runs(text);
    let n = (1..)
        .find(|n| *n != 3 && !taken.contains(n))
        .expect("some run length is free");
    "`".repeat(n)
}

/// `inner` (holding no backtick) as a code span opened and closed by `ticks`.
pub(super) fn code_span(ticks: &str, inner: &str) -> String {
    format!("{ticks}{inner}{ticks}")
}

/// Appends `piece` to `out`, with a zero-width space between them when both sides are
/// backticks: runs that touch would merge into one of another length.
pub(super) fn push_apart(out: &mut String, piece: &str) {
    if out.ends_with('`') && piece.starts_with('`') {
        out.push(ZWSP);
    }
    out.push_str(piece);
}

/// Whether `head`, a cut rendering, ends inside a code span opened by `ticks`: it holds an
/// odd number of runs of exactly that many backticks.
pub(super) fn cut_inside_span(head: &str, ticks: &str) -> bool {
    runs(head).iter().filter(|n| **n == ticks.len()).count() % 2 == 1
}

/// The lengths of the maximal runs of backticks in `text`.
fn runs(text: &str) -> Vec<usize> {
    text.split(|c| c != '`')
        .map(str::len)
        .filter(|n| *n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delimiter_is_a_run_the_text_does_not_hold_and_never_a_fence() {
        assert_eq!(delimiter("plain"), "`");
        assert_eq!(delimiter("a `b` c"), "``");
        assert_eq!(delimiter("a `b` ``c``"), "````");
        assert_eq!(delimiter("```\nx\n```"), "`");
    }

    #[test]
    fn touching_backticks_are_kept_apart_and_cut_spans_are_seen() {
        let mut out = String::from("x`");
        push_apart(&mut out, "``a``");
        assert_eq!(out, "x`\u{200B}``a``");
        assert!(cut_inside_span("see ``https://ev", "``"));
        assert!(!cut_inside_span("see ``https://ev.example`` and `x", "``"));
    }
}
