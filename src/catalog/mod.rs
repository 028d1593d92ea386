//! The command catalogue: loads every `commands/*.toml`, validates it completely and
//! refuses the whole catalogue on any error, naming the file and line. Built-in commands
//! are code (see `router::builtins`); everything here is a data-defined runbook. The
//! built-ins' names are handed in at load (`reserved`), as the catalogue sits below the router.

mod spec;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use spec::{
    ActionSpec, ApprovalSpec, ArgKind, ArgSpec, ChannelPattern, CommandLimits, CommandSpec,
    ExecSpec, HttpSpec, OnCancel, Procedure, Publish, PublishFrom, ScheduleSpec, Segment, StepKind,
    StepSpec, Template, WaitFor, WaitTarget, Workflow,
};

/// Shortest secret value accepted, in bytes. Runbook output is scrubbed of each secret
/// ignoring case and line breaks and in hex and base64 too (`actions::render::redact`); a
/// shorter value would blank out ordinary words and numbers in output, and is short enough to
/// guess. Generated tokens are far longer.
pub const MIN_SECRET_LEN: usize = 8;

/// One problem in one command file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogError {
    pub file: PathBuf,
    /// 1-based line, when the problem has one.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found in the catalogue, so an operator can fix them in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CatalogErrors(pub Vec<CatalogError>);

impl fmt::Display for CatalogErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Whether a command accepts arguments given by name: the router's binder, handed in.
pub type ArgsCheck = dyn Fn(&CommandSpec, &[(String, String)]) -> Result<(), String>;

/// The validated set of data-defined commands.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    commands: BTreeMap<String, Arc<CommandSpec>>,
}

impl Catalog {
    /// Loads `dir/*.toml` in name order. A missing folder is an error: deny when unsure.
    /// A command may not take a `reserved` name (the built-ins', `router::builtins::NAMES`).
    pub fn load_dir(dir: &Path, reserved: &[&str]) -> Result<Catalog, CatalogErrors> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            CatalogErrors(vec![CatalogError {
                file: dir.to_owned(),
                line: None,
                message: format!("cannot read command folder: {e}"),
            }])
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut sources = Vec::with_capacity(files.len());
        let mut errors = Vec::new();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(src) => sources.push((file, src)),
                Err(e) => errors.push(CatalogError {
                    file,
                    line: None,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        match Self::from_sources(&sources, reserved) {
            Ok(c) if errors.is_empty() => Ok(c),
            Ok(_) => Err(CatalogErrors(errors)),
            Err(CatalogErrors(more)) => {
                errors.extend(more);
                Err(CatalogErrors(errors))
            }
        }
    }

    /// Builds a catalogue from `(file name, TOML text)` pairs; see [`Catalog::load_dir`].
    pub fn from_sources(
        sources: &[(PathBuf, String)],
        reserved: &[&str],
    ) -> Result<Catalog, CatalogErrors> {
        let mut commands: BTreeMap<String, Arc<CommandSpec>> = BTreeMap::new();
        let mut errors = Vec::new();
        for (file, src) in sources {
            match spec::parse_command_file(file, src, reserved) {
                Ok(spec) => {
                    if let Some(other) = commands.get(&spec.name) {
                        errors.push(CatalogError {
                            file: file.clone(),
                            line: Some(1),
                            message: format!(
                                "command {:?} is already defined in {}",
                                spec.name,
                                other.source.display()
                            ),
                        });
                    } else {
                        commands.insert(spec.name.clone(), Arc::new(spec));
                    }
                }
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(Catalog { commands })
        } else {
            Err(CatalogErrors(errors))
        }
    }

    /// Refuses secrets (read from the environment through `env`) too short to redact safely
    /// (see [`MIN_SECRET_LEN`]), naming each at its command file's `[action]`. One that is
    /// not set is left to fail, naming it, when a command needs it.
    pub fn check_secrets(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), CatalogErrors> {
        let mut errors = Vec::new();
        for (spec, (action, line)) in (self.commands.values())
            .flat_map(|spec| spec.actions().into_iter().map(move |a| (spec, a)))
        {
            let names = match action {
                ActionSpec::Exec(exec) => &exec.secrets,
                ActionSpec::Http(http) => &http.secrets,
            };
            for name in names {
                let Some(len) = env(name).map(|v| v.len()).filter(|&len| len > 0) else {
                    continue;
                };
                if len < MIN_SECRET_LEN {
                    errors.push(CatalogError {
                        file: spec.source.clone(),
                        line: Some(line),
                        message: format!(
                            "action: secret {name} is {len} characters; secrets need at least {MIN_SECRET_LEN} to be redacted from output safely"
                        ),
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CatalogErrors(errors))
        }
    }

    /// Refuses `wait_for` steps naming a health check the config does not have (`checks`,
    /// the names of its `[[checks]]`), at the step's line.
    pub fn check_health_refs(&self, checks: &[&str]) -> Result<(), CatalogErrors> {
        let mut errors = Vec::new();
        for spec in self.commands.values() {
            let Procedure::Steps(w) = &spec.procedure else {
                continue;
            };
            for step in w.steps.iter().chain(&w.on_failure) {
                let StepKind::WaitFor(WaitFor {
                    target: WaitTarget::Check(name),
                    ..
                }) = &step.kind
                else {
                    continue;
                };
                if !checks.contains(&name.as_str()) {
                    errors.push(CatalogError {
                        file: spec.source.clone(),
                        line: Some(step.line),
                        message: format!(
                            "step {:?}: health check {name:?} is not in the config's [[checks]]",
                            step.name
                        ),
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CatalogErrors(errors))
        }
    }

    /// Refuses a `[schedule]` whose `args` the command's own validation refuses (`bind`, the
    /// router's binder: the catalogue sits below the router), at the schedule's line.
    pub fn check_schedule_args(&self, bind: &ArgsCheck) -> Result<(), CatalogErrors> {
        let errors: Vec<CatalogError> = (self.commands.values())
            .filter_map(|spec| {
                let schedule = spec.schedule.as_ref()?;
                let why = bind(spec, &schedule.args).err()?;
                Some(CatalogError {
                    file: spec.source.clone(),
                    line: Some(schedule.line),
                    message: format!("schedule: args: {why}"),
                })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CatalogErrors(errors))
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<CommandSpec>> {
        self.commands.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<CommandSpec>> {
        self.commands.values()
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
}
