//! The command line: `serve`, `chat`, `check-config`, `migrate` and `audit`. Each subcommand
//! loads the config, refuses clearly on any error, and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app::{App, load_catalog};
use crate::config::Config;
use crate::domain::ChainVerifier;
use crate::ports::Store;

#[derive(Parser, Debug)]
#[command(
    name = "opsbot",
    version,
    about = "Chat-ops: runbooks, health checks, alerts and incidents from chat"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct ConfigArg {
    /// Config file.
    #[arg(long, short, default_value = "config.toml", env = "OPSBOT_CONFIG")]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the bot: HTTP endpoints and every configured adapter.
    Serve(ConfigArg),
    /// Talk to the bot from this terminal (or a pipe), one command per line.
    ///
    /// Besides commands: `:as NAME` switches who you are, `:react EMOJI ID` and
    /// `:unreact EMOJI ID` react on request ID's message (e.g. `:react ✅ 12` approves #12).
    Chat {
        /// Console identity to act as (console:NAME).
        #[arg(long = "as", value_name = "NAME")]
        as_user: String,
        /// Channel name to act in (default: console.channel from the config).
        #[arg(long)]
        channel: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate the config and every command file; exit non-zero naming each problem.
    CheckConfig(ConfigArg),
    /// Apply database migrations and exit.
    Migrate(ConfigArg),
    /// Print the postmortem draft (markdown) of an incident.
    Postmortem {
        /// Incident number.
        id: i64,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the Slack app manifest (JSON): every built-in and runbook as a slash command, the
    /// scopes and events opsbot uses, its request URLs. Print and apply it again after adding a runbook.
    SlackManifest {
        /// Public base URL of `opsbot serve` (default: https://OPSBOT_HOST, or none in Socket Mode).
        #[arg(long, value_name = "https://host")]
        url: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print recent audit records, newest first, or verify the hash chain.
    Audit {
        /// How many records to print.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Check the whole chain and report the first altered or missing record.
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A blocking stdin read (the console adapter) would otherwise hold the process open forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(arg: &ConfigArg) -> anyhow::Result<Config> {
    Ok(Config::load(&arg.config)?)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(arg) => serve(&arg).await,
        Command::Chat {
            as_user,
            channel,
            config,
        } => chat(&config, &as_user, channel.as_deref()).await,
        Command::CheckConfig(arg) => check_config(&arg),
        Command::Migrate(arg) => {
            let config = load(&arg)?;
            crate::store::connect(&config.store.database_url, config.store.max_connections).await?;
            println!("ok: migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Postmortem { id, config } => postmortem(&config, id).await,
        Command::SlackManifest { url, config } => {
            let manifest =
                crate::adapters::slack::manifest::for_config(&load(&config)?, url.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            limit,
            verify,
            config,
        } => {
            let config = load(&config)?;
            let store =
                crate::store::connect(&config.store.database_url, config.store.max_connections)
                    .await?;
            if verify {
                verify_audit(store.as_ref()).await
            } else {
                print_audit(store.as_ref(), limit).await
            }
        }
    }
}

async fn serve(arg: &ConfigArg) -> anyhow::Result<ExitCode> {
    let config = load(arg)?;
    crate::telemetry::init(&config.log, None).map_err(anyhow::Error::msg)?;
    App::build(config).await?.serve().await?;
    Ok(ExitCode::SUCCESS)
}

async fn chat(arg: &ConfigArg, as_user: &str, channel: Option<&str>) -> anyhow::Result<ExitCode> {
    let config = load(arg)?;
    // Keep the terminal for the conversation; only warnings go to stderr.
    let level = std::env::var("RUST_LOG").ok();
    crate::telemetry::init(&config.log, Some(level.as_deref().unwrap_or("warn")))
        .map_err(anyhow::Error::msg)?;
    App::build(config).await?.chat(as_user, channel).await?;
    Ok(ExitCode::SUCCESS)
}

fn check_config(arg: &ConfigArg) -> anyhow::Result<ExitCode> {
    let config = load(arg)?;
    let catalog = load_catalog(&config, &|name| std::env::var(name).ok())?;
    crate::probes::build_checks(&config.checks).map_err(anyhow::Error::msg)?;
    println!(
        "ok: {} is valid; {} people, {} health checks, {} commands in {}; store: {}",
        arg.config.display(),
        config.directory.people().len(),
        config.checks.len(),
        catalog.len(),
        config.catalog_dir().display(),
        config.store_location()
    );
    for warning in break_glass_gaps(&config, &catalog) {
        println!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Commands whose approval nobody can skip: with break-glass configured, someone must hold
/// both a role that runs the command and a break-glass role, or `--break-glass` is refused
/// to everyone at the moment it is needed.
fn break_glass_gaps(config: &Config, catalog: &crate::catalog::Catalog) -> Vec<String> {
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

async fn postmortem(arg: &ConfigArg, id: i64) -> anyhow::Result<ExitCode> {
    let app = App::build(load(arg)?).await?;
    let Some(incident) = app.store.incident(id.into()).await? else {
        eprintln!("error: there is no incident #{id}");
        return Ok(ExitCode::FAILURE);
    };
    print!(
        "{}",
        app.router.incidents().postmortem_for(&incident).await?
    );
    Ok(ExitCode::SUCCESS)
}

/// Walks the whole audit chain and reports the first altered or missing record.
async fn verify_audit(store: &dyn Store) -> anyhow::Result<ExitCode> {
    let mut verifier = ChainVerifier::default();
    loop {
        let page = store.audit_after(verifier.last_seq(), 1000).await?;
        if page.is_empty() {
            break;
        }
        for rec in &page {
            if let Err(brk) = verifier.check(rec) {
                println!("audit chain BROKEN: {brk}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    println!(
        "audit chain intact: {} records verified",
        verifier.checked()
    );
    Ok(ExitCode::SUCCESS)
}

async fn print_audit(store: &dyn Store, limit: u32) -> anyhow::Result<ExitCode> {
    for r in store.recent_audit(limit).await? {
        let e = &r.entry;
        let args = if e.args.is_empty() {
            String::new()
        } else {
            format!(" {}", e.args)
        };
        let detail = if e.detail.is_empty() {
            String::new()
        } else {
            format!(" — {}", e.detail)
        };
        println!(
            "#{} {} {} {} {} /{}{} [{}]{}",
            r.seq,
            e.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            e.outcome,
            e.actor,
            e.channel,
            e.command,
            args,
            e.request_id,
            detail
        );
    }
    Ok(ExitCode::SUCCESS)
}
