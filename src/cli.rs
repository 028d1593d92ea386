//! The command line: `serve`, `chat`, `check-config`, `migrate` and `audit`. Each subcommand
//! loads the config, refuses clearly on any error, and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app::{App, load_catalog};
use crate::config::Config;
use crate::domain::ChainVerifier;
use crate::ports::Store;
use crate::store::Access;
use crate::telemetry::Plan;

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
    /// Validate the config and every command file; exit non-zero naming each problem, and
    /// warn about what would fail later (a runbook's missing program, requests nobody can
    /// approve).
    CheckConfig {
        /// Also open the store (and Redis, when it holds the rate limits), as `serve` would.
        #[arg(long)]
        connect: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
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
    let runtime = match runtime() {
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

/// The async runtime: one worker thread unless `TOKIO_WORKER_THREADS` asks for more.
///
/// A bot spends its time waiting; its heavy lifting happens in other threads (SQLite's, the
/// runbooks' processes). With a worker per core, every request woke an idle worker to steal
/// the task it spawned, and those wake-ups were most of the CPU a Slack command cost
/// (598 → 383 µs per command at 1,000/s with one worker, docs/benchmarks.md).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    builder.enable_all().build()
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
        Command::CheckConfig { connect, config } => check_config(&config, connect).await,
        Command::Migrate(arg) => {
            let config = load(&arg)?;
            init_logs(&config, true)?;
            let (url, max) = (&config.store.database_url, config.store.max_connections);
            // Exclusive: the schema must not change under a running `serve`.
            crate::store::connect(url, max, Access::Exclusive).await?;
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
            init_logs(&config, true)?;
            let (url, max) = (&config.store.database_url, config.store.max_connections);
            // A reader: verifying the chain must work while `serve` runs.
            let store = crate::store::connect(url, max, Access::Shared).await?;
            if verify {
                verify_audit(store.as_ref()).await
            } else {
                print_audit(store.as_ref(), limit).await
            }
        }
    }
}

/// Installs logging; `quiet` when the terminal carries a conversation or the command's own
/// output (see `telemetry::Plan`).
fn init_logs(config: &Config, quiet: bool) -> anyhow::Result<Plan> {
    let plan = Plan::new(
        &config.log,
        config.log_file(),
        quiet,
        crate::telemetry::rust_log(),
    );
    plan.install(config.log.format)
        .map_err(anyhow::Error::msg)?;
    Ok(plan)
}

async fn serve(arg: &ConfigArg) -> anyhow::Result<ExitCode> {
    let config = load(arg)?;
    // Someone typing to the console would see log lines between the replies.
    let console = &config.console;
    let interactive = console.enabled
        && console.user.is_some()
        && std::io::IsTerminal::is_terminal(&std::io::stdin());
    let plan = init_logs(&config, interactive)?;
    if let Some(notice) = plan.notice().filter(|_| interactive) {
        eprintln!("{notice}");
    }
    App::build(config).await?.serve().await?;
    Ok(ExitCode::SUCCESS)
}

async fn chat(arg: &ConfigArg, as_user: &str, channel: Option<&str>) -> anyhow::Result<ExitCode> {
    let config = load(arg)?;
    // Keep the terminal for the conversation.
    init_logs(&config, true)?;
    App::build(config).await?.chat(as_user, channel).await?;
    Ok(ExitCode::SUCCESS)
}

async fn check_config(arg: &ConfigArg, connect: bool) -> anyhow::Result<ExitCode> {
    let config = load(arg)?;
    let env = |name: &str| std::env::var(name).ok();
    let catalog = load_catalog(&config, &env)?;
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
    // Loading read the file a moment ago; warnings only need it for their line numbers.
    let src = std::fs::read_to_string(&arg.config).unwrap_or_default();
    for warning in crate::preflight::warnings(&config, &arg.config, &src, &catalog, &env) {
        println!("warning: {warning}");
    }
    if connect {
        for reached in crate::preflight::connect(&config).await? {
            println!("ok: {reached}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn postmortem(arg: &ConfigArg, id: i64) -> anyhow::Result<ExitCode> {
    let config = load(arg)?;
    init_logs(&config, true)?;
    let app = App::build_reader(config).await?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_runtime_has_one_worker_unless_the_environment_asks_for_more() {
        let runtime = super::runtime().expect("a runtime");
        let workers = runtime.metrics().num_workers();
        match std::env::var("TOKIO_WORKER_THREADS") {
            Ok(n) => assert_eq!(workers.to_string(), n),
            Err(_) => assert_eq!(workers, 1),
        }
    }
}
