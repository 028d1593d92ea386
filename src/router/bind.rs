//! Binds parsed words to a runbook's declared arguments and validates each value
//! (choices, anchored patterns, integer ranges, durations) before anything can run.
//! No value may start with `-`, so an argument can never turn into a flag downstream.

use crate::catalog::{ArgKind, CommandSpec};
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
        check_value(&arg.name, &arg.kind, &value)?;
        bound.push((arg.name.clone(), value));
    }
    Ok(BoundArgs(bound))
}

fn check_value(name: &str, kind: &ArgKind, value: &str) -> Result<(), String> {
    let shown: String = value.chars().take(40).collect();
    if value.is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    // A newline or other control character could fake lines in what approvers are shown.
    if value.chars().any(char::is_control) {
        return Err(format!("{name} must not contain control characters"));
    }
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
                return Err(format!(
                    "{name} {shown:?} does not have the expected format"
                ));
            }
        }
        ArgKind::Int { min, max } => {
            let n: i64 = value
                .parse()
                .map_err(|_| format!("{name} must be a whole number; got {shown:?}"))?;
            if n < *min || n > *max {
                return Err(format!("{name} must be between {min} and {max}; got {n}"));
            }
        }
        ArgKind::Duration => {
            parse_duration(value).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    Ok(())
}
