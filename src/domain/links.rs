//! Link-looking spans of plain text: what a chat platform would turn into a clickable link
//! by itself (`scheme://…`, `www.…`, bare domains, email addresses, IPv4 addresses). The
//! bot's messages quote outside text (alert labels, arguments, script output) and never mean
//! a link, so every span found here is rendered by the adapters in their platform's
//! non-linking form (a code span, a `code` entity). The detector errs on the side of
//! catching: a false positive only shows a word as code.

use std::ops::Range;

/// Byte ranges of `text` a platform could show as a link, in order, not overlapping.
pub fn link_spans(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for run in runs(text) {
        spans_in(text, run, &mut out);
    }
    out
}

/// Maximal runs of characters a link can be made of. Besides whitespace, a link ends at
/// the characters that delimit one in markup (`<…>`, quotes, backticks) and at the invisible
/// joiners adapters insert to break pings.
fn runs(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let stop = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>' | '"' | '`' | '\u{200B}' | '\u{2060}' | '\u{FEFF}'
            )
    };
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = &text[at..];
        let start = at + rest.find(|c| !stop(c))?;
        let end = text[start..].find(stop).map_or(text.len(), |e| start + e);
        at = end;
        Some(start..end)
    })
}

/// The links in one run of `text`, pushed in order.
fn spans_in(text: &str, run: Range<usize>, out: &mut Vec<Range<usize>>) {
    let s = &text[run.clone()];
    // A URL with a scheme takes the rest of its run; what comes before it may hold others.
    let (bare_end, url) = match scheme_start(s) {
        Some(q) => (q, Some(run.start + q..run.start + trimmed_end(s, q))),
        None => (s.len(), None),
    };
    let mut at = 0;
    while let Some(r) = bare_link(&s[..bare_end], at) {
        at = r.end;
        out.push(run.start + r.start..run.start + r.end);
    }
    out.extend(url.filter(|r| !r.is_empty()));
}

/// Where the first `scheme://` of `s` starts: a letter, then letters, digits, `+`, `-`, `.`.
fn scheme_start(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(p) = s[from..].find("://").map(|p| from + p) {
        let scheme_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.');
        let back = s[..p]
            .char_indices()
            .rev()
            .take_while(|(_, c)| scheme_chars(*c))
            .last()
            .map_or(p, |(i, _)| i);
        if let Some(q) = s[back..p]
            .find(|c: char| c.is_ascii_alphabetic())
            .map(|i| back + i)
        {
            return Some(q);
        }
        from = p + 3;
    }
    None
}

/// The next bare link (domain, `www.`, email, IPv4, with a port and path) in `s` at or after
/// byte `from`.
fn bare_link(s: &str, from: usize) -> Option<Range<usize>> {
    let mut at = from;
    loop {
        let start = at + s[at..].find(host_char)?;
        let end = s[start..]
            .find(|c: char| !host_char(c))
            .map_or(s.len(), |e| start + e);
        if let Some(host) = host_in(s, start..end) {
            return Some(widened(s, host));
        }
        at = end;
        if at >= s.len() {
            return None;
        }
    }
}

fn host_char(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '.'
}

/// The first host name in `s[r]` (a run of letters, digits, `-` and `.`): labels joined by
/// single dots whose last label is a plausible top-level domain (two or more letters), or an
/// IPv4 address.
fn host_in(s: &str, r: Range<usize>) -> Option<Range<usize>> {
    let mut part_start = r.start;
    for part in s[r.clone()].split("..") {
        let lead = part.len() - part.trim_start_matches(['.', '-']).len();
        let body = part
            .trim_start_matches(['.', '-'])
            .trim_end_matches(['.', '-']);
        let start = part_start + lead;
        let labels: Vec<&str> = body.split('.').collect();
        if labels.len() >= 2 && labels.iter().all(|l| !l.is_empty()) {
            let last = labels[labels.len() - 1];
            let tld = (last.chars().count() >= 2 && last.chars().all(char::is_alphabetic))
                || last.starts_with("xn--");
            let ipv4 = labels.len() == 4
                && labels
                    .iter()
                    .all(|l| l.len() <= 3 && l.chars().all(|c| c.is_ascii_digit()));
            if tld || ipv4 {
                return Some(start..start + body.len());
            }
        }
        part_start += part.len() + 2;
    }
    None
}

/// A host widened to the link a platform would make of it: the local part of an email
/// before it, a port and a path after it.
fn widened(s: &str, host: Range<usize>) -> Range<usize> {
    let mut start = host.start;
    if s[..start].ends_with('@') {
        let local = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-');
        let before = &s[..start - 1];
        let from = before
            .char_indices()
            .rev()
            .take_while(|(_, c)| local(*c))
            .last()
            .map(|(i, _)| i);
        if let Some(from) = from {
            start = from;
        }
    }
    let mut end = host.end;
    let rest = &s[end..];
    if let Some(port) = rest.strip_prefix(':') {
        let digits = port.len() - port.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            end += 1 + digits;
        }
    }
    if s[end..].starts_with(['/', '?', '#']) {
        end = trimmed_end(s, start);
    }
    start..end
}

/// The end of the link starting at `start` and running to the end of `s`, without the
/// punctuation that usually follows a link in prose (and closing brackets it did not open).
fn trimmed_end(s: &str, start: usize) -> usize {
    let link = &s[start..];
    let count = |c: char| link.matches(c).count();
    // Brackets opened and closed within the link, kept current as its end is trimmed.
    let mut pairs = [('(', ')', 0, 0), ('[', ']', 0, 0), ('{', '}', 0, 0)];
    for p in &mut pairs {
        (p.2, p.3) = (count(p.0), count(p.1));
    }
    let mut end = s.len();
    while let Some(last) = s[start..end].chars().next_back() {
        let drop = match last {
            '.' | ',' | ';' | ':' | '!' | '?' | '\'' | '*' | '_' | '~' => true,
            _ => match pairs.iter_mut().find(|p| p.1 == last) {
                Some(p) if p.3 > p.2 => {
                    p.3 -= 1;
                    true
                }
                _ => false,
            },
        };
        if !drop {
            break;
        }
        end -= last.len_utf8();
    }
    end
}

#[cfg(test)]
mod tests {
    use super::link_spans;

    fn found(text: &str) -> Vec<&str> {
        link_spans(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn urls_with_a_scheme_are_found_whole_without_trailing_punctuation() {
        assert_eq!(
            found("summary=\"see https://evil.example/login?a=1&b=2.\""),
            ["https://evil.example/login?a=1&b=2"]
        );
        assert_eq!(
            found("open tg://resolve?domain=x,"),
            ["tg://resolve?domain=x"]
        );
        assert_eq!(found("git+ssh://h/x (ok)"), ["git+ssh://h/x"]);
        assert_eq!(
            found("(https://en.wikipedia.org/wiki/A_(b))"),
            ["https://en.wikipedia.org/wiki/A_(b)"]
        );
    }

    #[test]
    fn markup_link_syntax_gives_up_its_url() {
        assert_eq!(
            found("<https://x.example|click>"),
            ["https://x.example|click"]
        );
        assert_eq!(found("[text](https://x.example)"), ["https://x.example"]);
        assert_eq!(found("`https://x.example`"), ["https://x.example"]);
    }

    #[test]
    fn bare_domains_www_emails_and_addresses_are_found() {
        assert_eq!(found("argument evil.example"), ["evil.example"]);
        assert_eq!(found("go to www.evil.example/a."), ["www.evil.example/a"]);
        assert_eq!(found("mail ops@evil.example!"), ["ops@evil.example"]);
        assert_eq!(found("at 10.0.0.1:8080/x"), ["10.0.0.1:8080/x"]);
        assert_eq!(
            found("api.prod.internal:443,db.x.io"),
            ["api.prod.internal:443", "db.x.io"]
        );
        assert_eq!(found("пример.рф"), ["пример.рф"]);
        assert_eq!(found("xn--e1afmkfd.xn--p1ai"), ["xn--e1afmkfd.xn--p1ai"]);
        assert_eq!(
            found("a.example then https://b.example"),
            ["a.example", "https://b.example"]
        );
        assert_eq!(
            found("x.example:https://y.example"),
            ["x.example", "https://y.example"]
        );
    }

    #[test]
    fn ordinary_words_numbers_and_versions_are_left_alone() {
        for text in [
            "e.g. i.e. v1.2.3 took 3.5s at 12:00",
            "Request #3: rollback requested by alice — approved",
            "...and then.. nothing",
            "://nothing here",
            "",
        ] {
            assert_eq!(found(text), Vec::<&str>::new(), "{text}");
        }
    }

    #[test]
    fn the_joiners_that_break_pings_also_end_a_link() {
        assert_eq!(found("ops@\u{2060}evil.example"), ["evil.example"]);
    }

    #[test]
    fn spans_are_ordered_disjoint_and_on_char_boundaries() {
        let text = "🔥 https://ä.example/ü — mail ü@x.example, www.y.example";
        let spans = link_spans(text);
        assert_eq!(spans.len(), 3);
        for w in spans.windows(2) {
            assert!(w[0].end <= w[1].start);
        }
        for r in spans {
            assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
        }
    }
}
