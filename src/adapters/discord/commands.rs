//! Slash commands: the catalogue and the built-ins as Discord application commands (runbook
//! arguments become string options, with choices where the command file restricts them), and
//! the way back: an invoked command's options rebuilt into the text a user would have typed,
//! so the router parses Discord commands exactly like every other platform's.

use serenity::all::{CommandOptionType, CreateCommand, CreateCommandOption};

use crate::catalog::{ArgKind, Catalog, CommandSpec};
use crate::router::builtins::{self, BUILTINS, BuiltinSpec};

/// Discord's limits on application commands.
const MAX_NAME: usize = 32;
const MAX_DESCRIPTION: usize = 100;
const MAX_OPTIONS: usize = 25;
const MAX_CHOICES: usize = 25;
const MAX_CHOICE_LEN: usize = 100;
/// Per application (or per guild) and type.
const MAX_COMMANDS: usize = 100;

/// Options every runbook gets besides its own arguments (the router's flags).
const DRY_RUN: &str = "dry-run";
const BREAK_GLASS: &str = "break-glass";

/// Whether Discord accepts `name` as a command or option name (`^[-_a-z0-9]{1,32}$`, the
/// subset opsbot uses).
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn description(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(no description)".into();
    }
    if text.chars().count() <= MAX_DESCRIPTION {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_DESCRIPTION - 1).collect();
    cut.push('…');
    cut
}

/// A built-in as a slash command: its table row's params become string options.
fn builtin_command(b: &BuiltinSpec) -> CreateCommand {
    let mut cmd = CreateCommand::new(b.name).description(description(b.summary));
    for o in b.params {
        cmd = cmd.add_option(
            CreateCommandOption::new(CommandOptionType::String, o.name, o.description)
                .required(o.required),
        );
    }
    cmd
}

/// The runbook as a slash command, or why it cannot be one.
fn runbook_command(spec: &CommandSpec) -> Result<CreateCommand, String> {
    if !valid_name(&spec.name) {
        return Err(format!(
            "{:?} is not a valid Discord command name",
            spec.name
        ));
    }
    if spec.args.len() + 2 > MAX_OPTIONS {
        return Err(format!(
            "it has {} arguments; Discord allows {}",
            spec.args.len(),
            MAX_OPTIONS - 2
        ));
    }
    let mut cmd = CreateCommand::new(&spec.name).description(description(&spec.summary));
    // Discord wants required options first; the router takes required ones positionally anyway.
    let (required, optional): (Vec<_>, Vec<_>) = spec.args.iter().partition(|a| a.required);
    for arg in required.into_iter().chain(optional) {
        if !valid_name(&arg.name) || arg.name == DRY_RUN || arg.name == BREAK_GLASS {
            return Err(format!(
                "argument {:?} cannot be a Discord option",
                arg.name
            ));
        }
        let help = arg.help.clone().unwrap_or_else(|| match &arg.kind {
            ArgKind::Choice(_) => arg.name.clone(),
            ArgKind::String { .. } => format!("{} (text)", arg.name),
            ArgKind::Int { min, max } => format!("{} (a whole number, {min} to {max})", arg.name),
            ArgKind::Duration => format!("{} (a duration like 30s, 10m, 2h)", arg.name),
        });
        let mut option =
            CreateCommandOption::new(CommandOptionType::String, &arg.name, description(&help))
                .required(arg.required);
        if let ArgKind::Choice(choices) = &arg.kind
            && choices.len() <= MAX_CHOICES
            && choices
                .iter()
                .all(|c| (1..=MAX_CHOICE_LEN).contains(&c.chars().count()))
        {
            for c in choices {
                option = option.add_string_choice(c, c);
            }
        }
        cmd = cmd.add_option(option);
    }
    Ok(cmd
        .add_option(
            CreateCommandOption::new(
                CommandOptionType::Boolean,
                DRY_RUN,
                "show exactly what would run; run nothing",
            )
            .required(false),
        )
        .add_option(
            CreateCommandOption::new(
                CommandOptionType::String,
                BREAK_GLASS,
                "run at once without approval (break-glass roles only): the reason",
            )
            .required(false),
        ))
}

/// Every command to register: the built-ins, then each runbook Discord can represent (the
/// rest are skipped with a warning; they still work on other platforms).
pub fn slash_commands(catalog: &Catalog) -> Vec<CreateCommand> {
    let mut out: Vec<CreateCommand> = BUILTINS.iter().map(builtin_command).collect();
    for spec in catalog.iter() {
        if out.len() >= MAX_COMMANDS {
            tracing::warn!(command = %spec.name, "Discord allows {MAX_COMMANDS} slash commands; not registering the rest");
            break;
        }
        match runbook_command(spec) {
            Ok(cmd) => out.push(cmd),
            Err(why) => {
                tracing::warn!(command = %spec.name, file = %spec.source.display(), "not registered as a Discord slash command: {why}")
            }
        }
    }
    out
}

/// An option value as Discord delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionValue {
    Text(String),
    Flag(bool),
}

/// Rebuilds `/name args...` as a user would type it, so the router's parser and argument
/// binding apply unchanged: runbook arguments that are required go positionally in file order,
/// optional ones as `--name value`; values are quoted when they need it.
pub fn command_text(catalog: &Catalog, name: &str, options: &[(String, OptionValue)]) -> String {
    let mut text = format!("/{name}");
    let mut push = |word: &str| {
        text.push(' ');
        text.push_str(word);
    };
    let value = |o: &str| options.iter().find(|(n, _)| n == o).map(|(_, v)| v);
    if let Some(b) = builtins::find(name) {
        // Positionally, in the order they are typed; raw ones carry the built-in's own syntax.
        for o in b.params {
            if let Some(OptionValue::Text(v)) = value(o.name) {
                push(&if o.raw { v.clone() } else { quote(v) });
            }
        }
        return text;
    }
    let spec = catalog.get(name);
    let args = spec.map(|s| s.args.as_slice()).unwrap_or_default();
    for arg in args.iter().filter(|a| a.required) {
        if let Some(OptionValue::Text(v)) = value(&arg.name) {
            push(&quote(v));
        }
    }
    for (option, v) in options {
        let known_required = args.iter().any(|a| a.required && &a.name == option);
        match v {
            _ if known_required => {}
            OptionValue::Flag(true) => push(&format!("--{option}")),
            OptionValue::Flag(false) => {}
            OptionValue::Text(v) => {
                push(&format!("--{option}"));
                push(&quote(v));
            }
        }
    }
    text
}

/// Quotes `value` for `router::parse` so it comes back as exactly one word, never a flag.
pub fn quote(value: &str) -> String {
    let is_double = |c: char| matches!(c, '"' | '\u{201C}' | '\u{201D}');
    let is_single = |c: char| matches!(c, '\'' | '\u{2018}' | '\u{2019}');
    let plain = !value.is_empty()
        && !value.starts_with('-')
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\\' || is_double(c) || is_single(c));
    if plain {
        return value.to_owned();
    }
    // Double-quoted runs (with \\ escaped); each double-quote character in its own single-quoted
    // run. The parser joins adjacent quoted runs into one word.
    let mut out = String::new();
    let mut open = false;
    for c in value.chars() {
        if is_double(c) {
            if open {
                out.push('"');
                open = false;
            }
            out.push('\'');
            out.push(c);
            out.push('\'');
            continue;
        }
        if !open {
            out.push('"');
            open = true;
        }
        if c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    if open || out.is_empty() {
        if !open {
            out.push('"');
        }
        out.push('"');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::parse::{Word, parse};

    fn words(text: &str) -> Vec<Word> {
        parse(text, "opsbot").unwrap().words
    }

    #[test]
    fn quoted_values_come_back_as_one_positional_word() {
        for v in [
            "api",
            "checkout down",
            "--force",
            "-x",
            "",
            r#"say "hi""#,
            "it's",
            "back\\slash",
            "“smart” ‘quotes’",
            "tab\there",
            "\"",
        ] {
            let text = format!("/x {}", quote(v));
            assert_eq!(
                words(&text),
                vec![Word::Positional(v.into())],
                "{v:?} -> {text}"
            );
        }
        assert_eq!(quote("api"), "api");
        assert_eq!(quote("checkout down"), "\"checkout down\"");
    }

    #[test]
    fn runbook_options_become_the_typed_command() {
        let catalog = Catalog::from_sources(
            &[(
                "rollback.toml".into(),
                r#"
name = "rollback"
summary = "Roll back"
roles = ["sre"]
[[args]]
name = "service"
kind = "choice"
choices = ["api", "web"]
[[args]]
name = "to"
kind = "string"
required = false
[action]
kind = "exec"
argv = ["./r.sh", "{service}", "{to}"]
timeout = "10s"
"#
                .into(),
            )],
            &builtins::NAMES,
        )
        .unwrap();
        let t = |o: &[(&str, OptionValue)]| {
            let o: Vec<_> = o.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
            command_text(&catalog, "rollback", &o)
        };
        let text = |s: &str| OptionValue::Text(s.into());
        assert_eq!(t(&[("service", text("api"))]), "/rollback api");
        assert_eq!(
            t(&[
                ("to", text("v1.4.2")),
                ("service", text("api")),
                (DRY_RUN, OptionValue::Flag(true)),
                (BREAK_GLASS, text("db is on fire")),
            ]),
            "/rollback api --to v1.4.2 --dry-run --break-glass \"db is on fire\""
        );
        assert_eq!(
            command_text(
                &catalog,
                "incident",
                &[("args".into(), text("open P1 \"checkout down\""))]
            ),
            "/incident open P1 \"checkout down\""
        );
        assert_eq!(
            command_text(&catalog, "approve", &[("id".into(), text("12"))]),
            "/approve 12"
        );
        assert_eq!(command_text(&catalog, "whoami", &[]), "/whoami");
    }

    #[test]
    fn names_discord_refuses_are_detected() {
        assert!(valid_name("clear-cache"));
        assert!(valid_name("kill_idle_sessions"));
        assert!(!valid_name("Rollback"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"x".repeat(33)));
        assert_eq!(description(&"y".repeat(150)).chars().count(), 100);
    }
}
