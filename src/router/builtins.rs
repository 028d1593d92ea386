//! The built-in commands (help, whoami, status, audit): their names, usage and argument
//! binding. Running them is in `router::mod`, next to the rest of the pipeline.

use super::parse::Word;

/// Built-in commands. Closed: adding one makes the compiler list every place to update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    Help,
    Whoami,
    Status,
    Audit,
    Approve,
    Deny,
    Cancel,
}

/// A built-in with its arguments bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuiltinCall {
    Help { topic: Option<String> },
    Whoami,
    Status { check: Option<String> },
    Audit { limit: u32 },
    Approve { run: i64 },
    Deny { run: i64 },
    Cancel { run: i64 },
}

pub const AUDIT_DEFAULT: u32 = 10;
pub const AUDIT_MAX: u32 = 100;

impl Builtin {
    pub const ALL: [Builtin; 7] = [
        Builtin::Help,
        Builtin::Whoami,
        Builtin::Status,
        Builtin::Audit,
        Builtin::Approve,
        Builtin::Deny,
        Builtin::Cancel,
    ];

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Help => "help",
            Builtin::Whoami => "whoami",
            Builtin::Status => "status",
            Builtin::Audit => "audit",
            Builtin::Approve => "approve",
            Builtin::Deny => "deny",
            Builtin::Cancel => "cancel",
        }
    }

    pub fn usage(self) -> &'static str {
        match self {
            Builtin::Help => "/help [COMMAND]",
            Builtin::Whoami => "/whoami",
            Builtin::Status => "/status [CHECK]",
            Builtin::Audit => "/audit [N]",
            Builtin::Approve => "/approve ID",
            Builtin::Deny => "/deny ID",
            Builtin::Cancel => "/cancel ID",
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Builtin::Help => "list the commands you may run here, or explain one",
            Builtin::Whoami => "show who opsbot thinks you are and your roles",
            Builtin::Status => "run the health checks (all, or one by name)",
            Builtin::Audit => "show the newest audit records (default 10, at most 100)",
            Builtin::Approve => "approve a pending runbook request (approvers only)",
            Builtin::Deny => "deny a pending runbook request (approvers only)",
            Builtin::Cancel => "cancel your own pending runbook request",
        }
    }

    pub fn bind(self, words: &[Word]) -> Result<BuiltinCall, String> {
        let usage = || format!("usage: {}", self.usage());
        let mut positional = Vec::new();
        for w in words {
            match w {
                Word::Positional(p) => positional.push(p.as_str()),
                Word::Flag { name, .. } => {
                    return Err(format!("unknown option --{name}; {}", usage()));
                }
            }
        }
        let at_most_one = |v: &[&str]| -> Result<Option<String>, String> {
            match v {
                [] => Ok(None),
                [one] => Ok(Some((*one).to_owned())),
                _ => Err(format!("too many arguments; {}", usage())),
            }
        };
        Ok(match self {
            Builtin::Help => BuiltinCall::Help {
                topic: at_most_one(&positional)?
                    .map(|t| t.trim_start_matches('/').to_ascii_lowercase()),
            },
            Builtin::Whoami => {
                at_most_one(&positional)?.map_or(Ok(()), |_| {
                    Err(format!("/whoami takes no arguments; {}", usage()))
                })?;
                BuiltinCall::Whoami
            }
            Builtin::Status => BuiltinCall::Status {
                check: at_most_one(&positional)?,
            },
            Builtin::Audit => {
                let limit = match at_most_one(&positional)? {
                    None => AUDIT_DEFAULT,
                    Some(n) => match n.parse::<u32>() {
                        Ok(n) if (1..=AUDIT_MAX).contains(&n) => n,
                        _ => {
                            return Err(format!(
                                "N must be a number from 1 to {AUDIT_MAX}; {}",
                                usage()
                            ));
                        }
                    },
                };
                BuiltinCall::Audit { limit }
            }
            Builtin::Approve | Builtin::Deny | Builtin::Cancel => {
                let raw = at_most_one(&positional)?
                    .ok_or_else(|| format!("which request? {}", usage()))?;
                let run = raw
                    .trim_start_matches('#')
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{raw:?} is not a request number; {}", usage()))?;
                match self {
                    Builtin::Approve => BuiltinCall::Approve { run },
                    Builtin::Deny => BuiltinCall::Deny { run },
                    _ => BuiltinCall::Cancel { run },
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Position in `ALL`. The match is exhaustive, so a new variant fails to compile here
    /// until it is given a place, and the test below then demands it be listed in `ALL`.
    fn position(b: Builtin) -> usize {
        match b {
            Builtin::Help => 0,
            Builtin::Whoami => 1,
            Builtin::Status => 2,
            Builtin::Audit => 3,
            Builtin::Approve => 4,
            Builtin::Deny => 5,
            Builtin::Cancel => 6,
        }
    }

    #[test]
    fn all_lists_every_builtin_once_and_names_round_trip() {
        for (i, b) in Builtin::ALL.into_iter().enumerate() {
            assert_eq!(position(b), i);
            assert_eq!(Builtin::from_name(b.name()), Some(b));
            assert!(crate::catalog::RESERVED_NAMES.contains(&b.name()));
        }
    }
}
