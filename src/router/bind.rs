//! Binds parsed words to a runbook's declared arguments and validates each value
//! (choices, anchored patterns, integer ranges, durations) before anything can run.
//! No value may start with `-`, so an argument can never turn into a flag downstream, and
//! none may hide text from an approver (control, bidi and zero-width characters). Integers
//! are bound in their canonical form (`+05` is `5`).

use std::sync::LazyLock;

use regex::Regex;

use crate::catalog::{
    ActionSpec, ArgKind, ArgSpec, CommandSpec, Procedure, StepKind, WaitFor, WaitTarget,
};
use crate::domain::{BoundArgs, parse_duration};

use super::parse::Word;

pub fn bind(spec: &CommandSpec, words: &[Word]) -> Result<BoundArgs, String> {
    let usage = || format!("usage: {}", spec.usage());
    let mut values: Vec<Option<String>> = vec![None; spec.args.len()];
    let mut next_positional = 0;
    for word in words {
        match word {
            Word::Positional(v) => {
                // Positional words fill required arguments in order; optional ones are `--name value`.
                let Some(slot) = (next_positional..spec.args.len())
                    .find(|&i| spec.args[i].required && values[i].is_none())
                else {
                    return Err(format!("too many arguments; {}", usage()));
                };
                values[slot] = Some(v.clone());
                next_positional = slot + 1;
            }
            Word::Flag { name, value } => {
                let Some(i) = spec.args.iter().position(|a| &a.name == name) else {
                    return Err(format!("unknown option --{name}; {}", usage()));
                };
                let Some(value) = value else {
                    return Err(format!("--{name} needs a value; {}", usage()));
                };
                if values[i].is_some() {
                    return Err(format!("{name} is given twice"));
                }
                values[i] = Some(value.clone());
            }
        }
    }
    let mut bound = Vec::new();
    for (arg, value) in spec.args.iter().zip(values) {
        let Some(value) = value else {
            if arg.required {
                return Err(format!("missing {}; {}", arg.name, usage()));
            }
            continue;
        };
        let value = check_value(arg, &value)?;
        if in_url(spec, &arg.name) && (value == "." || value == "..") {
            return Err(format!(
                "{} may not be {value:?}: in a URL path that would name another path",
                arg.name
            ));
        }
        bound.push((arg.name.clone(), value));
    }
    Ok(BoundArgs(bound))
}

/// Binds arguments given by name (a `[schedule]`'s `args`), validated as typed ones are.
pub fn bind_named(spec: &CommandSpec, args: &[(String, String)]) -> Result<BoundArgs, String> {
    let words: Vec<Word> = (args.iter())
        .map(|(name, value)| Word::Flag {
            name: name.clone(),
            value: Some(value.clone()),
        })
        .collect();
    bind(spec, &words)
}

/// Whether `{name}` appears in an HTTP action's URL. Percent-encoding cannot keep `.` and
/// `..` literal there: the URL library resolves `%2E%2E` like `..` (as WHATWG URLs do).
fn in_url(spec: &CommandSpec, name: &str) -> bool {
    (spec.actions().into_iter()).any(|(action, _)| match action {
        ActionSpec::Http(http) => http.url.args().any(|a| a == name),
        ActionSpec::Exec(_) => false,
    }) || waits_on_url_with(spec, name)
}

/// Whether `{name}` appears in a `wait_for` step's URL (see [`in_url`]).
fn waits_on_url_with(spec: &CommandSpec, name: &str) -> bool {
    let Procedure::Steps(w) = &spec.procedure else {
        return false;
    };
    (w.steps.iter().chain(&w.on_failure)).any(|s| match &s.kind {
        StepKind::WaitFor(WaitFor {
            target: WaitTarget::Url(url),
            ..
        }) => url.args().any(|a| a == name),
        StepKind::Action(_)
        | StepKind::WaitFor(_)
        | StepKind::Message(_)
        | StepKind::Approval(_) => false,
    })
}

/// Control (Cc), format (Cf: bidi overrides and isolates, zero-width characters, BOM) and
/// line/paragraph separators: they can fake lines or reorder and hide text in what
/// approvers are shown.
static HIDDEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]").expect("valid class"));

/// Refuses a value with a [`HIDDEN`] character, naming `name` and the character.
pub(crate) fn check_visible(name: &str, value: &str) -> Result<(), String> {
    match HIDDEN.find(value).and_then(|m| m.as_str().chars().next()) {
        Some(c) => Err(format!(
            "{name} must not contain control or invisible formatting characters (found U+{:04X})",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// Validates one value (an argument's, or one a step publishes); the value to bind
/// (integers in canonical form).
pub(crate) fn check_value(arg: &ArgSpec, value: &str) -> Result<String, String> {
    let (name, kind) = (arg.name.as_str(), &arg.kind);
    let shown: String = value.chars().take(40).collect();
    if value.is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    check_visible(name, value)?;
    match kind {
        ArgKind::Choice(choices) => {
            if !choices.iter().any(|c| c == value) {
                return Err(format!(
                    "{name} must be one of {}; got {shown:?}",
                    choices.join(", ")
                ));
            }
        }
        ArgKind::String { pattern } => {
            if value.starts_with('-') {
                return Err(format!("{name} must not start with '-'"));
            }
            if let Some(p) = pattern
                && !p.is_match(value)
            {
                // The file's help says what is expected in words; the pattern rarely does.
                let expected = arg
                    .help
                    .as_deref()
                    .map(|help| format!(" ({help})"))
                    .unwrap_or_default();
                return Err(format!(
                    "{name} {shown:?} does not have the expected format{expected}"
                ));
            }
        }
        ArgKind::Int { min, max } => {
            let n: i64 = value
                .parse()
                .map_err(|_| format!("{name} must be a whole number; got {shown:?}"))?;
            if n < *min || n > *max {
                let range = match (*min, *max) {
                    (min, i64::MAX) => format!("at least {min}"),
                    (i64::MIN, max) => format!("at most {max}"),
                    (min, max) => format!("between {min} and {max}"),
                };
                return Err(format!("{name} must be {range}; got {n}"));
            }
            return Ok(n.to_string());
        }
        ArgKind::Duration => {
            parse_duration(value).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::catalog::Catalog;
    use crate::router::parse::parse;

    /// `/x` with one required argument `a` declared by `arg` (TOML lines), used as `use_a`.
    fn spec(arg: &str, action: &str) -> CommandSpec {
        let src = format!(
            "name = \"x\"\nsummary = \"x\"\nroles = [\"sre\"]\n[[args]]\nname = \"a\"\n{arg}\n[action]\n{action}\ntimeout = \"10s\"\n"
        );
        let catalog = Catalog::from_sources(&[(PathBuf::from("x.toml"), src)], &[]).unwrap();
        (**catalog.get("x").unwrap()).clone()
    }

    #[test]
    fn schedule_arguments_the_command_refuses_are_refused_at_load() {
        let src = "name = \"backup\"\nsummary = \"b\"\nroles = [\"sre\"]\n[[args]]\nname = \"target\"\n\
            kind = \"choice\"\nchoices = [\"db\"]\n[action]\nkind = \"exec\"\nargv = [\"/bin/true\", \"{target}\"]\ntimeout = \"1s\"\n\
            [schedule]\ncron = \"0 3 * * *\"\ntimezone = \"UTC\"\nplatform = \"slack\"\nchannel = \"C1\"\n\
            roles = [\"sre\"]\nargs = { target = \"files\" }\n";
        let catalog =
            Catalog::from_sources(&[(PathBuf::from("backup.toml"), src.into())], &[]).unwrap();
        let refused = catalog
            .check_schedule_args(&|spec, args| bind_named(spec, args).map(|_| ()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            refused,
            "backup.toml:12: schedule: args: target must be one of db; got \"files\""
        );
    }

    const ARGV: &str = "kind = \"exec\"\nargv = [\"/bin/x\", \"{a}\"]";
    const ARGV_FLAG: &str = "kind = \"exec\"\nargv = [\"/bin/x\", \"--a={a}\"]";
    const URL: &str = "kind = \"http\"\nurl = \"http://h/items/{a}/purge\"";

    fn bind_line(spec: &CommandSpec, line: &str) -> Result<String, String> {
        let parsed = parse(line, "opsbot").unwrap();
        bind(spec, &parsed.words).map(|b| b.get("a").unwrap().to_owned())
    }

    /// Why `value`, typed as one quoted word, is refused; panics if it binds.
    fn refusal(spec: &CommandSpec, value: &str) -> String {
        match bind_line(spec, &format!("/x \"{value}\"")) {
            Ok(bound) => panic!("{value:?} was bound as {bound:?}"),
            Err(why) => why,
        }
    }

    #[test]
    fn integers_are_bound_in_canonical_form() {
        let s = spec("kind = \"int\"", ARGV);
        assert_eq!(bind_line(&s, "/x +5").unwrap(), "5");
        assert_eq!(bind_line(&s, "/x 05").unwrap(), "5");
        assert_eq!(bind_line(&s, "/x 0").unwrap(), "0");
    }

    #[test]
    fn an_integer_that_starts_an_argv_item_is_never_negative() {
        let s = spec("kind = \"int\"", ARGV);
        for v in ["-5", &i64::MIN.to_string(), "-0x1"] {
            refusal(&s, v);
        }
        assert_eq!(refusal(&s, "-5"), "a must be at least 0; got -5");
        // Behind `--a=` a negative number is only a number.
        let s = spec("kind = \"int\"", ARGV_FLAG);
        assert_eq!(bind_line(&s, "/x \"-5\"").unwrap(), "-5");
    }

    #[test]
    fn patterns_match_ascii_digits_and_word_characters_only() {
        let s = spec("kind = \"string\"\npattern = 'v\\d+\\.\\d+\\.\\d+'", ARGV);
        assert_eq!(bind_line(&s, "/x v1.2.3").unwrap(), "v1.2.3");
        assert!(bind_line(&s, "/x v١.٢.٣").is_err());
        let s = spec("kind = \"string\"\npattern = '[\\w .]+'", ARGV);
        assert_eq!(bind_line(&s, "/x \"db_1 ok.\"").unwrap(), "db_1 ok.");
        assert!(bind_line(&s, "/x ok٣").is_err());
        assert!(bind_line(&s, "/x \"ok\u{00e9}\"").is_err());
        let s = spec("kind = \"string\"\npattern = '\\p{L}+'", ARGV);
        assert!(
            bind_line(&s, "/x \u{00e9}t\u{00e9}").is_ok(),
            "\\p{{..}} stays Unicode"
        );
    }

    #[test]
    fn a_value_of_the_wrong_format_is_told_what_the_file_expects() {
        let s = spec(
            "kind = \"string\"\npattern = 'v\\d+'\nhelp = \"release tag, e.g. v14\"",
            ARGV,
        );
        assert_eq!(
            refusal(&s, "latest"),
            "a \"latest\" does not have the expected format (release tag, e.g. v14)"
        );
    }

    #[test]
    fn bidi_zero_width_and_format_characters_are_refused_naming_the_argument() {
        let s = spec("kind = \"string\"", ARGV);
        for c in [
            '\u{202E}', '\u{2066}', '\u{200B}', '\u{200F}', '\u{FEFF}', '\u{2060}', '\u{2028}',
        ] {
            assert_eq!(
                refusal(&s, &format!("ok{c}gpj.exe")),
                format!(
                    "a must not contain control or invisible formatting characters (found U+{:04X})",
                    u32::from(c)
                )
            );
        }
        assert_eq!(
            bind_line(&s, "/x \"plain text, ok\"").unwrap(),
            "plain text, ok"
        );
    }

    #[test]
    fn dot_segments_are_refused_in_urls_only() {
        let s = spec("kind = \"string\"", URL);
        for v in [".", ".."] {
            let err = refusal(&s, v);
            assert!(err.contains("would name another path"), "{err}");
        }
        assert_eq!(bind_line(&s, "/x ...").unwrap(), "...");
        let s = spec("kind = \"string\"", ARGV);
        assert_eq!(bind_line(&s, "/x ..").unwrap(), "..");
    }
}
