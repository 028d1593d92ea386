//! For `benches/slack_ack.rs`: the servers under load, as child processes. `opsbot serve` (the
//! release binary) with a temp config, on its own SQLite file or, for replicas, on one shared
//! Postgres database (made for the run, dropped after it) with the rate limits in Redis; or the
//! floor server (`slack_floor.rs`, this bench re-executed). Also reads a process's CPU time and
//! RSS from `/proc`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const SECRET: &str = "slack-ack-bench-signing-secret";
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Where replicas keep what they share: one Postgres database and one Redis.
pub struct Shared {
    pub database_url: String,
    pub redis_url: String,
}

pub struct Opsbot {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
    _dir: TempDir,
}

impl Opsbot {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, then SIGKILL if it has not stopped within `grace`.
    pub fn stop(&mut self, grace: Duration) -> String {
        if let Ok(Some(status)) = self.child.try_wait() {
            return format!("had already exited ({status})");
        }
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return format!("stopped on SIGTERM ({status})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        format!("did not stop within {grace:?} of SIGTERM; killed")
    }
}

impl Drop for Opsbot {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn user_id(u: usize) -> String {
    format!("U0LOAD{u:03}")
}

/// A free loopback port: bind :0, read the port, drop the socket. Racy (another process may
/// take it before opsbot binds), which is acceptable for a bench; `serve` then fails to start
/// and the readiness wait says so.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `[store]` and `[limits]`: SQLite in `dir` and in-process limits, or what replicas share.
fn store_and_limits(dir: &Path, shared: Option<&Shared>) -> String {
    let (database_url, limiter) = match shared {
        None => (
            format!("sqlite://{}", dir.join("opsbot.db").display()),
            "backend = \"memory\"".to_owned(),
        ),
        Some(s) => (
            s.database_url.clone(),
            format!("backend = \"redis\"\nredis_url = \"{}\"", s.redis_url),
        ),
    };
    format!(
        "[store]\ndatabase_url = \"{database_url}\"\n[limits]\n{limiter}\n\
         global = \"1000000/s\"\nper_user = \"1000000/s\"\nper_channel = \"1000000/s\"\n\
         per_command = \"1000000/s\"\n"
    )
}

pub fn start_opsbot(
    fake_slack: &str,
    users: usize,
    log_level: &str,
    shared: Option<&Shared>,
) -> Opsbot {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("commands")).expect("commands dir");
    let port = free_port();
    let people: String = (0..users)
        .map(|u| {
            format!(
                "[[people]]\nname = \"load{u}\"\nroles = [\"sre\"]\nidentities = [\"slack:{}\"]\n\n",
                user_id(u)
            )
        })
        .collect();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_grace = "5s"
[log]
format = "text"
level = "{log_level}"
{store}
[catalog]
dir = "commands"
[console]
enabled = false
[builtins]
status_roles = ["sre"]
[slack]
signing_secret = "{SECRET}"
bot_token = "xoxb-slack-ack-bench"
api_url = "{fake_slack}/api/"

{people}"#,
        store = store_and_limits(dir.path(), shared),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).expect("write config");
    let log = dir.path().join("opsbot.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_opsbot"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file);
    // Overrides from the caller's environment would change what is measured.
    for (k, _) in std::env::vars() {
        if k.starts_with("OPSBOT_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd.spawn().expect("start opsbot serve");
    Opsbot {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    }
}

/// The floor server (`support/slack_floor.rs`): this bench binary re-executed.
pub fn start_floor() -> Opsbot {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let log = dir.path().join("floor.log");
    let child = Command::new(std::env::current_exe().expect("own executable"))
        .arg("--floor-server")
        .arg(port.to_string())
        .arg(dir.path().join("floor.db"))
        .arg(&log)
        .arg(SECRET)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the floor server");
    Opsbot {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    }
}

/// Pids of the Postgres server processes serving the database at `database_url` (the
/// server runs on this machine, so their CPU time is in `/proc`).
pub async fn backends(database_url: &str) -> Vec<String> {
    use sqlx::Connection as _;
    let Ok(mut c) = sqlx::PgConnection::connect(database_url).await else {
        return Vec::new();
    };
    let q = "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()";
    let pids: Vec<i32> = sqlx::query_scalar(q)
        .fetch_all(&mut c)
        .await
        .unwrap_or_default();
    pids.iter().map(i32::to_string).collect()
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `/readyz` until it answers 200; panics with opsbot's log on exit or deadline.
pub async fn wait_ready(bot: &mut Opsbot, client: &reqwest::Client) -> Duration {
    let start = Instant::now();
    let url = format!("{}/readyz", bot.base);
    loop {
        if let Ok(Some(status)) = bot.child.try_wait() {
            panic!(
                "opsbot serve exited ({status}) before it was ready; log:\n{}",
                tail(&bot.log, 30)
            );
        }
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return start.elapsed();
        }
        if start.elapsed() > READY_DEADLINE {
            panic!(
                "opsbot serve not ready after {READY_DEADLINE:?}; log:\n{}",
                tail(&bot.log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (user + system CPU time, threads) of a process.
pub fn cpu_time(pid: &str) -> (Duration, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15, num_threads 20.
    let field = |n: usize| {
        f.get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = field(14) + field(15);
    (Duration::from_nanos(ticks * 1_000_000_000 / hz), field(20))
}

/// `VmRSS` and `VmHWM` (peak RSS) in KiB.
pub fn rss_kib(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}
