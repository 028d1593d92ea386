//! Turns untrusted command text into a [`ParsedCommand`]: `/name[@bot] words...` with
//! shell-like quoting (no expansion of any kind), `--flag value` / `--flag=value`, and hard
//! length limits. It never panics, whatever the input (checked by property tests).

use std::fmt;

/// Longest command text accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 4000;
/// Most words after the command name.
pub const MAX_WORDS: usize = 32;
/// Longest single word, in bytes.
pub const MAX_WORD_BYTES: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedCommand {
    /// Lower-cased command name without `/` or `@bot`.
    pub name: String,
    pub words: Vec<Word>,
    /// The text after the command name, for the audit record.
    pub arg_text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Word {
    Positional(String),
    Flag { name: String, value: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    NotACommand,
    TooLong,
    TooManyWords,
    WordTooLong,
    UnclosedQuote,
    ControlCharacter,
    BadName(String),
    OtherBot(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => write!(f, "empty command; try /help"),
            ParseError::NotACommand => write!(f, "commands start with /; try /help"),
            ParseError::TooLong => write!(f, "command is longer than {MAX_INPUT_BYTES} bytes"),
            ParseError::TooManyWords => write!(f, "command has more than {MAX_WORDS} arguments"),
            ParseError::WordTooLong => {
                write!(f, "an argument is longer than {MAX_WORD_BYTES} bytes")
            }
            ParseError::UnclosedQuote => write!(f, "a quote is not closed"),
            ParseError::ControlCharacter => write!(f, "command contains control characters"),
            ParseError::BadName(n) => write!(f, "{n:?} is not a command name; try /help"),
            ParseError::OtherBot(b) => write!(f, "that command is addressed to @{b}, not to me"),
        }
    }
}

/// Parses `input`; `bot_name` is this bot's own name, so `/status@bot_name` is accepted.
pub fn parse(input: &str, bot_name: &str) -> Result<ParsedCommand, ParseError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(ParseError::TooLong);
    }
    if input
        .chars()
        .any(|c| c.is_control() && !matches!(c, ' ' | '\t' | '\n' | '\r'))
    {
        return Err(ParseError::ControlCharacter);
    }
    let input = input.trim();
    if input.is_empty() {
        return Err(ParseError::Empty);
    }
    let head_end = input.find(char::is_whitespace).unwrap_or(input.len());
    let (head, rest) = input.split_at(head_end);
    let head = head.strip_prefix('/').ok_or(ParseError::NotACommand)?;
    let (name, bot) = match head.split_once('@') {
        Some((n, b)) => (n, Some(b)),
        None => (head, None),
    };
    if let Some(bot) = bot
        && !bot.eq_ignore_ascii_case(bot_name)
    {
        return Err(ParseError::OtherBot(truncate(bot, 64)));
    }
    let valid_name = (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        return Err(ParseError::BadName(truncate(name, 64)));
    }
    let tokens = tokenize(rest)?;
    if tokens.len() > MAX_WORDS {
        return Err(ParseError::TooManyWords);
    }
    Ok(ParsedCommand {
        name: name.to_ascii_lowercase(),
        words: words(tokens),
        arg_text: rest.trim().to_owned(),
    })
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

struct Token {
    text: String,
    /// A token with any quoted part is never a flag: `"--force"` is a value.
    quoted: bool,
}

fn tokenize(s: &str) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(tokens);
        }
        let mut text = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                // Chat clients "smarten" quotes; treat them like plain double quotes.
                '"' | '\u{201C}' | '\u{201D}' => {
                    quoted = true;
                    double_quoted(&mut chars, &mut text)?;
                }
                '\'' | '\u{2018}' | '\u{2019}' => {
                    quoted = true;
                    single_quoted(&mut chars, &mut text)?;
                }
                other => text.push(other),
            }
            if text.len() > MAX_WORD_BYTES {
                return Err(ParseError::WordTooLong);
            }
        }
        tokens.push(Token { text, quoted });
        if tokens.len() > MAX_WORDS {
            return Err(ParseError::TooManyWords);
        }
    }
}

/// Reads a single-quoted part, its opening quote already taken, into `text` as it stands.
fn single_quoted(
    chars: &mut impl Iterator<Item = char>,
    text: &mut String,
) -> Result<(), ParseError> {
    for c in chars {
        match c {
            '\'' | '\u{2018}' | '\u{2019}' => return Ok(()),
            other => text.push(other),
        }
    }
    Err(ParseError::UnclosedQuote)
}

/// Reads a double-quoted part, its opening quote already taken, into `text`: `\"` and `\\`
/// stand for themselves, any other backslash is kept. Refuses an over-long word as it goes,
/// so an unclosed quote cannot make it read the whole message.
fn double_quoted(
    chars: &mut impl Iterator<Item = char>,
    text: &mut String,
) -> Result<(), ParseError> {
    loop {
        match chars.next() {
            None => return Err(ParseError::UnclosedQuote),
            Some('"' | '\u{201C}' | '\u{201D}') => return Ok(()),
            Some('\\') => match chars.next() {
                Some(e @ ('"' | '\\')) => text.push(e),
                Some(other) => {
                    text.push('\\');
                    text.push(other);
                }
                None => return Err(ParseError::UnclosedQuote),
            },
            Some(other) => text.push(other),
        }
        if text.len() > MAX_WORD_BYTES {
            return Err(ParseError::WordTooLong);
        }
    }
}

fn is_flag(t: &Token) -> bool {
    !t.quoted && t.text.len() > 2 && t.text.starts_with("--")
}

fn words(tokens: Vec<Token>) -> Vec<Word> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut iter = tokens.into_iter().peekable();
    let mut only_positional = false;
    while let Some(t) = iter.next() {
        if only_positional {
            out.push(Word::Positional(t.text));
        } else if !t.quoted && t.text == "--" {
            only_positional = true;
        } else if is_flag(&t) {
            let body = &t.text[2..];
            let word = match body.split_once('=') {
                Some((name, value)) => Word::Flag {
                    name: name.to_owned(),
                    value: Some(value.to_owned()),
                },
                None => Word::Flag {
                    name: body.to_owned(),
                    value: iter.next_if(|n| !is_flag(n)).map(|n| n.text),
                },
            };
            out.push(word);
        } else {
            out.push(Word::Positional(t.text));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<ParsedCommand, ParseError> {
        parse(s, "opsbot")
    }

    fn pos(s: &str) -> Word {
        Word::Positional(s.into())
    }

    #[test]
    fn simple_commands() {
        let c = p("/status").unwrap();
        assert_eq!(c.name, "status");
        assert!(c.words.is_empty());
        let c = p("  /Status@OpsBot db ").unwrap();
        assert_eq!(
            (c.name.as_str(), c.words.clone()),
            ("status", vec![pos("db")])
        );
    }

    #[test]
    fn quotes_and_flags() {
        let c =
            p(r#"/incident open P1 "checkout down" --to v1.4.2 --force --x=1 -- --lit"#).unwrap();
        assert_eq!(
            c.words,
            vec![
                pos("open"),
                pos("P1"),
                pos("checkout down"),
                Word::Flag {
                    name: "to".into(),
                    value: Some("v1.4.2".into())
                },
                Word::Flag {
                    name: "force".into(),
                    value: None
                },
                Word::Flag {
                    name: "x".into(),
                    value: Some("1".into())
                },
                pos("--lit"),
            ]
        );
        let c = p("/x \u{201C}smart quotes\u{201D} 'it''s' \"a\\\"b\" \"--quoted\"").unwrap();
        assert_eq!(
            c.words,
            vec![
                pos("smart quotes"),
                pos("its"),
                pos("a\"b"),
                pos("--quoted")
            ]
        );
    }

    #[test]
    fn bad_input_is_explained() {
        assert_eq!(p(""), Err(ParseError::Empty));
        assert_eq!(p("status"), Err(ParseError::NotACommand));
        assert_eq!(p("/x \"open"), Err(ParseError::UnclosedQuote));
        assert_eq!(
            p("/status@otherbot"),
            Err(ParseError::OtherBot("otherbot".into()))
        );
        assert_eq!(p("/st$tus"), Err(ParseError::BadName("st$tus".into())));
        assert_eq!(p("/x \u{0}"), Err(ParseError::ControlCharacter));
        assert_eq!(
            p(&format!("/x {}", "a".repeat(5000))),
            Err(ParseError::TooLong)
        );
        assert_eq!(
            p(&format!("/x {}", "a ".repeat(40))),
            Err(ParseError::TooManyWords)
        );
        assert_eq!(
            p(&format!("/x {}", "a".repeat(600))),
            Err(ParseError::WordTooLong)
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse(&s, "opsbot");
        }

        #[test]
        fn never_panics_on_command_like_input(s in r#"/[a-z@]{0,6}( ["'\-\\a-z=\u{201C}]{0,12}){0,40}"#) {
            let _ = parse(&s, "opsbot");
        }

        #[test]
        fn quoted_words_survive(words in proptest::collection::vec("[a-zA-Z0-9 ._:-]{1,20}", 0..10)) {
            let text = words.iter().map(|w| format!("\"{w}\"")).collect::<Vec<_>>().join(" ");
            let c = parse(&format!("/cmd {text}"), "opsbot").unwrap();
            let got: Vec<Word> = words.iter().map(|w| Word::Positional(w.clone())).collect();
            prop_assert_eq!(c.words, got);
        }
    }
}
