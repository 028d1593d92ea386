//! What `opsbot check-config` finds beyond what loading refuses: mistakes that would fail
//! only later (a runbook's program missing, requests nobody can approve, a console user
//! nobody knows), each a warning naming the file and line, and with `--connect` whether the
//! store and Redis can really be reached.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;
use serde::Deserialize;
use toml::Spanned;

use crate::catalog::{ActionSpec, Catalog, CommandSpec, ExecSpec, Segment};
use crate::config::{Config, LimiterBackend};
use crate::domain::{Platform, UserRef, exec_location, line_col};

/// Where PATH lookups go when opsbot's own environment has no PATH.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Every warning about `config` (read from `path`, whose text is `src`) and its catalogue;
/// `env` is the environment runbooks would take variables from.
pub fn warnings(
    config: &Config,
    path: &Path,
    src: &str,
    catalog: &Catalog,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut found = people_warnings(config, path, src);
    found.extend(break_glass_gaps(config, catalog));
    found.extend(unconfigured_schedule_platforms(config, path, catalog));
    for spec in catalog.iter() {
        found.extend(approval_warning(config, spec));
        for (action, line) in spec.actions() {
            if let ActionSpec::Exec(exec) = action {
                found.extend(program_warning(spec, (exec, line), &config.base_dir, env));
            }
            found.extend(unset_variables(spec, (action, line), env));
        }
    }
    found
}

/// A schedule (or the daily report) that reports to a platform opsbot has no credentials
/// for: its start, result and approval request could never be posted.
fn unconfigured_schedule_platforms(config: &Config, path: &Path, catalog: &Catalog) -> Vec<String> {
    let configured = |p: Platform| match p {
        Platform::Console => true,
        Platform::Slack => config.slack.is_some(),
        Platform::Discord => config.discord.is_some(),
        Platform::Telegram => config.telegram.is_some(),
    };
    let why = |p: Platform| {
        format!(
            "it reports to {p}, which is not configured ([{p}] is missing), so its posts would fail"
        )
    };
    let mut found: Vec<String> = (catalog.iter())
        .filter_map(|spec| {
            let s = spec.schedule.as_ref().filter(|s| !configured(s.platform))?;
            Some(format!(
                "{}:{}: [schedule]: {}",
                spec.source.display(),
                s.line,
                why(s.platform)
            ))
        })
        .collect();
    if let Some(r) = config.report.as_ref().filter(|r| !configured(r.platform)) {
        found.push(format!("{}: [report]: {}", path.display(), why(r.platform)));
    }
    found
}

/// The keys of the config file whose line a warning names.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Spots {
    console: ConsoleSpots,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConsoleSpots {
    user: Option<Spanned<String>>,
}

/// An empty `[[people]]` (nobody may run anything but the open built-ins), and a console
/// user who is not one of the people (the console could only ask for help).
fn people_warnings(config: &Config, path: &Path, src: &str) -> Vec<String> {
    let mut found = Vec::new();
    if config.directory.people().next().is_none() {
        found.push(format!(
            "{}: [[people]] is empty, so nobody may run anything but /help, /whoami and /version; add a [[people]] entry with roles and identities for each person",
            path.display()
        ));
    }
    let Some(user) = &config.console.user else {
        return found;
    };
    let identity = UserRef::new(Platform::Console, user.clone());
    if config.directory.resolve(&identity).person().is_none() {
        let spots: Spots = toml::from_str(src).unwrap_or_default();
        let at = match spots.console.user {
            Some(u) => format!("{}:{}", path.display(), line_col(src, u.span().start).0),
            None => path.display().to_string(),
        };
        found.push(format!(
            "{at}: console.user {user:?} is not a person: no [[people]] entry has the identity \"console:{user}\", so the console may only run /help and /whoami; add it to that person's identities"
        ));
    }
    found
}

/// Commands whose approval nobody can skip: with break-glass configured, someone must hold
/// both a role that runs the command and a break-glass role, or `--break-glass` is refused
/// to everyone at the moment it is needed.
fn break_glass_gaps(config: &Config, catalog: &Catalog) -> Vec<String> {
    let glass = &config.approvals.break_glass_roles;
    if glass.is_empty() {
        return Vec::new();
    }
    catalog
        .iter()
        .filter(|spec| spec.approval.is_some())
        .filter(|spec| {
            !config
                .directory
                .people()
                .any(|p| p.has_any_role(&spec.roles) && p.has_any_role(glass))
        })
        .map(|spec| {
            format!(
                "{}: nobody can both run /{} and break glass (approvals.break_glass_roles), so --break-glass can never be used for it",
                spec.source.display(),
                spec.name
            )
        })
        .collect()
}

/// A request that fewer people can approve than it needs waits until it expires.
fn approval_warning(config: &Config, spec: &CommandSpec) -> Option<String> {
    let approval = spec.approval.as_ref()?;
    let approvers = config
        .directory
        .people()
        .filter(|p| p.has_any_role(&approval.approver_roles))
        .count();
    let roles = approval
        .approver_roles
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let at = format!("{}:{}", spec.source.display(), approval.line);
    let needed = approval.approvals as usize;
    if approvers == 0 {
        Some(format!(
            "{at}: approval: no person has an approver role ({roles}), so requests for /{} can never be approved; give someone one of them in [[people]]",
            spec.name
        ))
    } else if approvers < needed {
        Some(format!(
            "{at}: approval: /{} needs {needed} approvals but only {approvers} person(s) have an approver role ({roles}), so its requests can never be approved",
            spec.name
        ))
    } else {
        None
    }
}

/// A program that is not there (or may not be run) fails only after someone approved it.
fn program_warning(
    spec: &CommandSpec,
    (exec, line): (&ExecSpec, usize),
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    // A program chosen by an argument is known only when it runs.
    let [Segment::Literal(written)] = exec.argv.first()?.0.as_slice() else {
        return None;
    };
    let at = format!("{}:{line}", spec.source.display());
    let (dir, program) = exec_location(written, exec.workdir.as_deref(), base);
    if !dir.is_dir() {
        return Some(format!(
            "{at}: action: workdir {} is not a folder, so /{} would fail after approval",
            dir.display(),
            spec.name
        ));
    }
    let problem = if program.contains('/') {
        file_problem(Path::new(&program))
    } else {
        let path = (exec.env.iter().any(|n| n == "PATH"))
            .then(|| env("PATH"))
            .flatten()
            .or_else(|| env("PATH"))
            .unwrap_or_else(|| DEFAULT_PATH.into());
        on_path(&program, &path)
            .err()
            .map(|()| format!("is not on PATH ({path})"))
    };
    problem.map(|why| {
        format!(
            "{at}: action: program {written:?} {why}, so /{} would fail only after approval",
            spec.name
        )
    })
}

/// Why `path` cannot be run, if it cannot.
fn file_problem(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Err(_) => Some(format!("does not exist (looked for {})", path.display())),
        Ok(m) if !m.is_file() => Some(format!("is not a file ({})", path.display())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Some(format!("is not executable (chmod +x {})", path.display()))
        }
        Ok(_) => None,
    }
}

fn on_path(program: &str, path: &str) -> Result<PathBuf, ()> {
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| file_problem(candidate).is_none())
        .ok_or(())
}

/// Variables a command file passes through or needs as secrets that are not set here.
fn unset_variables(
    spec: &CommandSpec,
    (action, line): (&ActionSpec, usize),
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let (passed, secrets): (&[String], &[String]) = match action {
        ActionSpec::Exec(e) => (&e.env, &e.secrets),
        ActionSpec::Http(h) => (&[], &h.secrets),
    };
    let unset = |name: &&String| env(name).is_none_or(|v| v.is_empty());
    let at = format!("{}:{line}", spec.source.display());
    let mut found: Vec<String> = secrets
        .iter()
        .filter(unset)
        .map(|name| format!(
            "{at}: action: secret {name} is not set in this environment, so /{} will refuse to run until it is set where opsbot runs",
            spec.name
        ))
        .collect();
    let missing: Vec<&str> = passed.iter().filter(unset).map(String::as_str).collect();
    if !missing.is_empty() {
        let (is, it) = if missing.len() == 1 {
            ("is", "it")
        } else {
            ("are", "them")
        };
        found.push(format!(
            "{at}: action: env {} {is} not set in this environment, so /{} would run without {it}; set {it} where opsbot runs",
            missing.join(", "),
            spec.name
        ));
    }
    found
}

/// `check-config --connect`: opens the store (applying migrations, as `serve` would) and
/// connects to Redis when it holds the rate limits; the error says the real cause.
pub async fn connect(config: &Config) -> anyhow::Result<Vec<String>> {
    let mut reached = Vec::new();
    crate::store::connect(
        &config.store.database_url,
        config.store.max_connections,
        crate::store::Access::Shared,
    )
    .await
    .map_err(|e| {
        let why = match e {
            crate::ports::StoreError::Unavailable(why) => why,
            other => format!("{:#}", anyhow::Error::new(other)),
        };
        anyhow::anyhow!("cannot open the store ({}): {why}", config.store_location())
    })?;
    reached.push(format!("store reachable: {}", config.store_location()));
    if let LimiterBackend::Redis { url } = &config.limits.backend {
        crate::limiter::RedisLimiter::connect(url.expose_secret(), "opsbot:rl:")
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to Redis (limits.redis_url): {}", e.0))?;
        reached.push("Redis reachable (limits.redis_url)".into());
    }
    Ok(reached)
}
