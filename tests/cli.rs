//! The `opsbot` binary end to end: `chat` piped, `check-config`, `audit` and `audit --verify`.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{ROLLBACK, Serve, TEAM, eventually, satisfies, wait_for_line};

/// How long a spawned `opsbot serve` may take to start, answer or stop.
const SLOW: std::time::Duration = std::time::Duration::from_secs(30);

fn opsbot(args: &[&str], stdin: &[u8]) -> Output {
    opsbot_with_env(args, &[], stdin)
}

/// Runs opsbot with extra environment variables, feeding `stdin`, and waits for it.
fn opsbot_with_env(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsbot"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("OPSBOT_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run opsbot");
    // A command that never reads stdin (check-config) may exit before the write: then the
    // pipe is closed, which is not the test's concern.
    match child.stdin.take().unwrap().write_all(stdin) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        written => written.unwrap(),
    }
    child.wait_with_output().expect("opsbot finishes")
}

/// `opsbot chat --as alice` with `config` and extra environment, fed `stdin`; its stdout
/// and stderr once it has finished.
fn chat_as_alice(config: &Path, env: &[(&str, &str)], stdin: &[u8]) -> (String, String) {
    let config = config.to_str().unwrap();
    let out = opsbot_with_env(&["chat", "--as", "alice", "--config", config], env, stdin);
    (text(&out.stdout), text(&out.stderr))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A config in a temp dir whose health checks probe a listener this test holds open.
fn setup(dir: &Path, listener_port: u16) -> PathBuf {
    std::fs::create_dir_all(dir.join("commands")).unwrap();
    std::fs::write(dir.join("commands/rollback.toml"), ROLLBACK).unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\ndatabase_url = \"sqlite://{}\"\n[console]\nchannel = \"ops\"\n{TEAM}\n\
         [[checks]]\nname = \"port\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{listener_port}\"\n\
         [[checks]]\nname = \"script\"\nkind = \"exec\"\nargv = [\"true\"]\n",
        dir.join("opsbot.db").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn chat_answers_whoami_status_and_help_for_each_kind_of_user() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = setup(dir.path(), listener.local_addr().unwrap().port());
    let cfg = config.to_str().unwrap();

    let out = opsbot(
        &["chat", "--as", "alice", "--config", cfg],
        b"/whoami\n/status\n/help\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("You are alice (console:alice). Roles: deployer, sre."),
        "{stdout}"
    );
    assert!(stdout.contains("Overall: UP (2/2 checks up)"), "{stdout}");
    assert!(
        stdout.contains("/rollback <api|worker|web>") && stdout.contains("/audit"),
        "{stdout}"
    );

    let out = opsbot(
        &["chat", "--as", "carol", "--config", cfg],
        b"/whoami\n/status\n/rollback api\n/audit\n",
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Roles: viewer."), "{stdout}");
    assert!(stdout.contains("Overall: UP"), "{stdout}");
    assert!(
        stdout.contains("/rollback needs one of the roles deployer, sre; you have viewer."),
        "{stdout}"
    );
    assert!(stdout.contains("/audit needs one of the roles"), "{stdout}");

    let out = opsbot(
        &["chat", "--as", "mallory", "--config", cfg],
        b"/whoami\n/status\n/help\n",
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("You are console:mallory; I don't know you"),
        "{stdout}"
    );
    assert!(
        stdout.contains("I don't know console:mallory, so only /help and /whoami are open to you."),
        "{stdout}"
    );
    assert!(!stdout.contains("Overall:"), "{stdout}");
}

#[test]
fn chat_survives_garbage_input_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = setup(dir.path(), listener.local_addr().unwrap().port());
    let mut input = b"/whoami \xff\xfe\n".to_vec();
    input.extend_from_slice(&vec![b'a'; 100_000]);
    input.extend_from_slice(b"\n\n   \n/whoami\n/whoami"); // last line without a newline
    let out = opsbot(
        &[
            "chat",
            "--as",
            "alice",
            "--config",
            config.to_str().unwrap(),
        ],
        &input,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("not valid UTF-8"), "{stdout}");
    assert!(stdout.contains("longer than 4000 bytes"), "{stdout}");
    assert_eq!(stdout.matches("You are alice").count(), 2, "{stdout}");
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = opsbot(
        &[
            "check-config",
            "--config",
            &format!("{root}/config.example.toml"),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).starts_with("ok:"));
    assert!(
        !text(&out.stdout).contains("warning:"),
        "{}",
        text(&out.stdout)
    );
}

/// With break-glass configured, a command nobody can both run and break glass for is named.
#[test]
fn check_config_warns_when_nobody_can_break_glass_for_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1);
    let mut text_cfg = std::fs::read_to_string(&config).unwrap();
    // bob (sre-lead) may break glass but not run /rollback; alice may run it but not break glass.
    text_cfg.push_str("\n[approvals]\nbreak_glass_roles = [\"sre-lead\"]\n");
    std::fs::write(&config, text_cfg).unwrap();
    let out = opsbot(&["check-config", "--config", config.to_str().unwrap()], b"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "a warning, not a refusal: {stdout}");
    assert!(
        stdout.contains("warning: ")
            && stdout.contains("rollback.toml: nobody can both run /rollback and break glass"),
        "{stdout}"
    );
}

#[test]
fn check_config_names_the_broken_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1);
    let broken = ROLLBACK.replace("kind = \"choice\"", "kind = \"choise\"");
    std::fs::write(dir.path().join("commands/rollback.toml"), broken).unwrap();
    std::fs::write(dir.path().join("commands/zz-empty-roles.toml"), "name = \"status\"\nsummary = \"x\"\n[action]\nkind = \"exec\"\nargv = [\"x\"]\ntimeout = \"1s\"\n").unwrap();
    let out = opsbot(&["check-config", "--config", config.to_str().unwrap()], b"");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("rollback.toml:8:"), "{stderr}");
    assert!(
        stderr.contains("choise") && stderr.contains("choice"),
        "{stderr}"
    );
    assert!(
        stderr.contains("zz-empty-roles.toml:1: name \"status\" is a built-in command"),
        "{stderr}"
    );

    // The same files stop `chat` (and `serve`) from starting.
    let out = opsbot(
        &[
            "chat",
            "--as",
            "alice",
            "--config",
            config.to_str().unwrap(),
        ],
        b"/whoami\n",
    );
    assert!(!out.status.success());
    assert!(text(&out.stdout).is_empty());
    assert!(text(&out.stderr).contains("rollback.toml:8:"));
}

#[test]
fn unreadable_or_invalid_config_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = opsbot(
        &["check-config", "--config", missing.to_str().unwrap()],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nope.toml: cannot read config"),
        "{}",
        text(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, b"[server]\nlisten = \"\xff\"\n").unwrap();
    let out = opsbot(&["check-config", "--config", bad.to_str().unwrap()], b"");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("bad.toml"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(&bad, "[server]\nlisten = \"127.0.0.1:1\"\n[[people]]\nname = \"x\"\nroles = [\"Admin\"]\nidentities = []\n").unwrap();
    let out = opsbot(&["check-config", "--config", bad.to_str().unwrap()], b"");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.toml:5:") && stderr.contains("role \"Admin\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn audit_lists_newest_first_and_verify_finds_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = setup(dir.path(), listener.local_addr().unwrap().port());
    let cfg = config.to_str().unwrap();
    let out = opsbot(&["migrate", "--config", cfg], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    opsbot(
        &["chat", "--as", "alice", "--config", cfg],
        b"/whoami\n/nope\n/help\n/status\n",
    );

    let out = opsbot(&["audit", "--limit", "2", "--config", cfg], b"");
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("#4 ") && lines[0].contains("/status"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("#3 ") && lines[1].contains("/help"),
        "{lines:?}"
    );

    let out = opsbot(&["audit", "--verify", "--config", cfg], b"");
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        "audit chain intact: 4 records verified"
    );

    let pool = support::sqlite_in(dir.path()).await;
    support::exec(&pool, "DROP TRIGGER audit_log_no_update").await;
    support::exec(&pool, "UPDATE audit_log SET outcome = 'ok' WHERE seq = 2").await;
    let out = opsbot(&["audit", "--verify", "--config", cfg], b"");
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("record #2 was altered"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn json_logs_carry_request_ids_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = setup(dir.path(), port);
    let mut text_cfg = std::fs::read_to_string(&config).unwrap();
    text_cfg.push_str(&format!(
        "[[checks]]\nname = \"db\"\nkind = \"postgres\"\nurl = \"postgres://monitor:hunter2-secret@127.0.0.1:{port}/app\"\ntimeout = \"3s\"\n"
    ));
    std::fs::write(&config, text_cfg).unwrap();
    let (stdout, stderr) = chat_as_alice(
        &config,
        &[("OPSBOT_LOG__FORMAT", "json"), ("RUST_LOG", "info")],
        b"/status\n/whoami\n",
    );
    assert!(
        stdout.contains("Overall: DEGRADED") && stdout.contains("db      postgres  down"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("hunter2") && !stderr.contains("hunter2"),
        "secret leaked:\n{stdout}\n{stderr}"
    );
    let handled: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
        })
        .filter(|v| v["message"] == "command handled")
        .collect();
    assert_eq!(handled.len(), 2, "{stderr}");
    for v in handled {
        let id = v["span"]["request_id"].as_str().unwrap_or_default();
        assert_eq!(id.len(), 12, "request id in every command log line: {v}");
    }
}

#[tokio::test]
async fn serve_answers_http_and_console_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1);
    let mut text_cfg = std::fs::read_to_string(&config).unwrap();
    text_cfg = text_cfg.replace(
        "[console]\n",
        "[console]\nenabled = true\nuser = \"alice\"\n",
    );
    std::fs::write(&config, text_cfg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsbot"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("OPSBOT_LOG__FORMAT", "json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let serving = wait_for_line(child.stderr.take().unwrap(), |l| {
        l.contains("opsbot serving HTTP")
    });
    let replies = wait_for_line(child.stdout.take().unwrap(), |l| l.starts_with("You are"));
    let line = serving.recv_timeout(SLOW).expect("serve logs its address");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = v["addr"].as_str().unwrap().to_owned();

    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"/whoami\n").unwrap();
    let reply = replies.recv_timeout(SLOW).expect("console reply");
    assert_eq!(
        reply,
        "You are alice (console:alice). Roles: deployer, sre."
    );

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = eventually("serve to stop on SIGTERM", SLOW, async || {
        child.try_wait().unwrap()
    })
    .await;
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

/// `opsbot serve` with the console as alice and a `/slow` runbook that writes its pid to
/// `started` and then waits until the file `go` exists (or the test's folder is gone, so a
/// failed test leaves no process behind).
struct SlowServe {
    child: std::process::Child,
    started: PathBuf,
    go: PathBuf,
    _dir: tempfile::TempDir,
}

fn serve_with_a_slow_runbook() -> SlowServe {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1);
    let text_cfg = std::fs::read_to_string(&config).unwrap().replace(
        "[console]\n",
        "[console]\nenabled = true\nuser = \"alice\"\n",
    );
    std::fs::write(&config, text_cfg).unwrap();
    let (started, go) = (dir.path().join("started"), dir.path().join("go"));
    support::write_executable(
        dir.path(),
        "slow.sh",
        &format!(
            "#!/bin/sh\necho $$ > '{}.tmp' && mv '{0}.tmp' '{0}'\nwhile [ -f '{0}' ] && [ ! -f '{}' ]; do sleep 0.05; done\necho finished the slow work\n",
            started.display(),
            go.display()
        ),
    );
    std::fs::write(
        dir.path().join("commands/slow.toml"),
        "name = \"slow\"\nsummary = \"Waits for go\"\nroles = [\"sre\"]\n\
         [action]\nkind = \"exec\"\nargv = [\"./slow.sh\"]\ntimeout = \"60s\"\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_opsbot"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    SlowServe {
        child,
        started,
        go,
        _dir: dir,
    }
}

#[tokio::test]
async fn sigterm_waits_for_a_command_being_answered() {
    let SlowServe {
        mut child,
        started,
        go,
        _dir,
    } = serve_with_a_slow_runbook();
    let replies = wait_for_line(child.stdout.take().unwrap(), |l| l.contains("finished"));
    let draining = wait_for_line(child.stderr.take().unwrap(), |l| {
        l.contains("waiting for acknowledged commands to be answered")
    });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"/slow\n").unwrap();
    eventually("the runbook to start", SLOW, async || started.exists()).await;

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Only once opsbot is shutting down does the runbook get to finish.
    draining
        .recv_timeout(SLOW)
        .expect("serve waits for the command in flight");
    std::fs::write(&go, "").unwrap();
    let reply = replies
        .recv_timeout(SLOW)
        .expect("the answer is still delivered after SIGTERM");
    assert!(reply.contains("finished the slow work"), "{reply}");
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

/// kill -9 of opsbot (or the OOM killer) mid-run: the runbook's process dies with it rather
/// than running on unwatched while chat is told the run was interrupted.
#[tokio::test]
async fn a_runbook_process_dies_with_opsbot() {
    let mut slow = serve_with_a_slow_runbook();
    let mut stdin = slow.child.stdin.take().unwrap();
    stdin.write_all(b"/slow\n").unwrap();
    let pid = eventually("the runbook to start", SLOW, async || {
        std::fs::read_to_string(&slow.started).ok()
    })
    .await;
    let pid = pid.trim().to_owned();
    slow.child.kill().unwrap();
    slow.child.wait().unwrap();
    // A process that died but was not reaped yet (a zombie) counts as gone.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(") ")
                .next()
                .is_some_and(|s| !s.starts_with('Z'))
        })
    };
    eventually(
        "the runbook's process to die with opsbot",
        SLOW,
        async || !alive(),
    )
    .await;
    std::fs::write(&slow.go, "").unwrap();
}

/// [`setup`] plus `/leak`, which runs `./leak.sh` with the secret `LEAKY_TOKEN` (line 4:
/// `[action]`).
fn setup_with_leak(dir: &Path) -> PathBuf {
    let config = setup(dir, 1);
    std::fs::write(
        dir.join("commands/leak.toml"),
        "name = \"leak\"\nsummary = \"prints its secret\"\nroles = [\"sre\"]\n[action]\nkind = \"exec\"\nargv = [\"./leak.sh\"]\nsecrets = [\"LEAKY_TOKEN\"]\ntimeout = \"10s\"\n",
    )
    .unwrap();
    config
}

#[test]
fn secrets_from_env_never_reach_chat_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup_with_leak(dir.path());
    support::write_executable(
        dir.path(),
        "leak.sh",
        "#!/bin/sh\necho \"token=$LEAKY_TOKEN\"\necho \"again $LEAKY_TOKEN\" >&2\nexit 1\n",
    );
    let (stdout, stderr) = chat_as_alice(
        &config,
        &[("LEAKY_TOKEN", "sekret-value-123"), ("RUST_LOG", "debug")],
        b"/leak --dry-run\n/leak\n/audit 5\n",
    );
    assert!(
        stdout.contains("token=[REDACTED]") && stdout.contains("again [REDACTED]"),
        "{stdout}"
    );
    assert!(stdout.contains("failed (exit 1)"), "{stdout}");
    // `/audit` shows how the run ended, with its detail.
    assert!(stdout.contains("run #1 failed (exit 1) after"), "{stdout}");
    assert!(
        !stdout.contains("sekret-value-123"),
        "secret in chat:\n{stdout}"
    );
    assert!(
        !stderr.contains("sekret-value-123"),
        "secret in logs:\n{stderr}"
    );
    // Text logs into a pipe (journald, a container, a file) carry no colour codes.
    assert!(
        !stderr.is_empty() && !stderr.contains('\u{1b}'),
        "{stderr:?}"
    );
}

#[test]
fn a_secret_too_short_to_redact_stops_opsbot_naming_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup_with_leak(dir.path());
    let config = config.to_str().unwrap();
    let out = opsbot_with_env(
        &["check-config", "--config", config],
        &[("LEAKY_TOKEN", "q%w")],
        b"",
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "leak.toml:4: action: secret LEAKY_TOKEN is 3 characters; secrets need at least 8"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("q%w"), "{stderr}");
    let out = opsbot_with_env(
        &["check-config", "--config", config],
        &[("LEAKY_TOKEN", "long-enough-1")],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test]
async fn serve_schedules_checks_raises_alerts_and_pings_its_heartbeat() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pings = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = pings.clone();
    let app = axum::Router::new().route(
        "/ping",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hb = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = closed.local_addr().unwrap().port();
    drop(closed);

    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), dead_port);
    let mut text_cfg = std::fs::read_to_string(&config).unwrap();
    text_cfg.push_str(&format!(
        "[health]\nevery = \"100ms\"\nfail_after = 2\nheartbeat_url = \"http://{hb}/ping\"\nheartbeat_every = \"100ms\"\n\
         [alerts]\ndefault_route = {{ platform = \"console\", channel = \"ops\" }}\n"
    ));
    std::fs::write(&config, text_cfg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsbot"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let fired = wait_for_line(child.stdout.take().unwrap(), |l| {
        l.contains("HealthCheckFailed")
    });
    let line = fired
        .recv_timeout(SLOW)
        .expect("a health-check alert is posted");
    assert!(line.starts_with("[#ops message a1] 🔥 FIRING 1"), "{line}");
    eventually("two heartbeat pings", SLOW, async || {
        satisfies(pings.load(Ordering::SeqCst), |n| *n >= 2)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}

/// Started from another folder (or by a service manager with no working directory), opsbot
/// uses the database beside its config, where `sqlite://opsbot.db` says it is.
#[test]
fn a_relative_sqlite_path_means_beside_the_config_wherever_opsbot_starts() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1);
    let text_cfg = std::fs::read_to_string(&config).unwrap();
    let absolute = format!("sqlite://{}", dir.path().join("opsbot.db").display());
    std::fs::write(&config, text_cfg.replace(&absolute, "sqlite://opsbot.db")).unwrap();
    let run = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_opsbot"))
            .args(args)
            .current_dir(elsewhere.path())
            .env_remove("OPSBOT_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    };
    let config = config.to_str().unwrap();
    let checked = run(&["check-config", "--config", config], b"");
    let store = dir.path().join("opsbot.db");
    assert!(
        text(&checked.stdout).contains(&format!("store: SQLite file {}", store.display())),
        "{}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
    run(&["chat", "--as", "alice", "--config", config], b"/whoami\n");
    let verified = run(&["audit", "--verify", "--config", config], b"");
    assert!(
        text(&verified.stdout).contains("1 record"),
        "{}{}",
        text(&verified.stdout),
        text(&verified.stderr)
    );
    assert!(store.exists());
    assert!(!elsewhere.path().join("opsbot.db").exists());
}

/// `opsbot chat --as WHO` on `config.example.toml` as shipped (its store in a temp dir, not
/// beside the config in the repository), fed `stdin`; stdout, and stderr for messages.
fn chat_on_the_example(who: &str, stdin: &[u8]) -> (String, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("demo.db").display());
    let config = format!("{root}/config.example.toml");
    let out = opsbot_with_env(
        &["chat", "--as", who, "--config", &config],
        &[("OPSBOT_STORE__DATABASE_URL", &db)],
        stdin,
    );
    (text(&out.stdout), text(&out.stderr))
}

/// The README's scripted approval, on the example config as shipped: the demo `/rollback`
/// runs and only says what it would do (the real one would roll production back with the
/// user's KUBECONFIG).
#[test]
fn the_example_configs_rollback_is_a_harmless_demo() {
    let (stdout, stderr) =
        chat_on_the_example("alice", "/rollback api\n:as bob\n:react ✅ 1\n".as_bytes());
    assert!(
        stdout.contains(
            "demo, nothing was changed. The real runbook would run: kubectl rollout undo deployment/api"
        ),
        "{stdout}{stderr}"
    );
}

/// Break-glass works end to end on the example config: bob may both run `/rollback` and skip
/// its approval, loudly, with a reason (the demo runbook runs at once).
#[test]
fn break_glass_works_on_the_example_config() {
    let (stdout, stderr) =
        chat_on_the_example("bob", b"/rollback api --break-glass \"checkout is down\"\n");
    assert!(
        stdout.contains("BREAK-GLASS: bob ran /rollback service=api without approval")
            && stdout.contains("The real runbook would run: kubectl rollout undo deployment/api"),
        "{stdout}{stderr}"
    );
}

/// `chat --help` says how to switch person and react, which scripted approvals need.
#[test]
fn chat_help_explains_as_and_react() {
    let out = opsbot(&["chat", "--help"], b"");
    let help = text(&out.stdout);
    assert!(
        help.contains(":as NAME") && help.contains(":react EMOJI ID"),
        "{help}"
    );
}

/// 1-based line of the first line of `src` that is `line`.
fn line_of(src: &str, line: &str) -> usize {
    src.lines().position(|l| l == line).expect("line in source") + 1
}

/// What would fail only later is named by `check-config`, at its file and line, as a warning.
#[test]
fn check_config_warns_about_what_would_fail_later() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup_with_leak(dir.path());
    let mut cfg = std::fs::read_to_string(&config).unwrap();
    cfg = cfg.replace(
        "channel = \"ops\"\n",
        "channel = \"ops\"\nuser = \"dave\"\n",
    );
    std::fs::write(&config, &cfg).unwrap();
    let unapprovable = ROLLBACK
        .replace("name = \"rollback\"", "name = \"undo\"")
        .replace(
            "approver_roles = [\"sre-lead\"]",
            "approver_roles = [\"dba\"]",
        )
        .replace("./rollback.sh", "./undo.sh")
        .replace(
            "timeout = \"60s\"",
            "env = [\"OPSBOT_TEST_UNSET_VAR\"]\ntimeout = \"60s\"",
        );
    std::fs::write(dir.path().join("commands/undo.toml"), &unapprovable).unwrap();
    std::fs::write(dir.path().join("undo.sh"), "#!/bin/sh\n").unwrap();
    let out = opsbot(&["check-config", "--config", config.to_str().unwrap()], b"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "warnings, not refusals: {stdout}");
    let rollback = dir.path().join("commands/rollback.toml");
    let action = line_of(ROLLBACK, "[action]");
    assert!(
        stdout.contains(&format!(
            "warning: {}:{action}: action: program \"./rollback.sh\" does not exist (looked for {})",
            rollback.display(),
            dir.path().join("./rollback.sh").display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("undo.toml")
            && stdout.contains("program \"./undo.sh\" is not executable (chmod +x"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "undo.toml:{}: approval: no person has an approver role (dba), so requests for /undo can never be approved",
            line_of(&unapprovable, "[approval]")
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "config.toml:{}: console.user \"dave\" is not a person",
            line_of(&cfg, "user = \"dave\"")
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("leak.toml:4: action: secret LEAKY_TOKEN is not set in this environment"),
        "{stdout}"
    );
    assert!(
        stdout.contains("action: env OPSBOT_TEST_UNSET_VAR is not set in this environment, so /undo would run without"),
        "{stdout}"
    );
    assert!(!stdout.contains("[[people]] is empty"), "{stdout}");

    std::fs::write(&config, "[store]\ndatabase_url = \"sqlite://x.db\"\n").unwrap();
    std::fs::remove_dir_all(dir.path().join("commands")).unwrap();
    std::fs::create_dir(dir.path().join("commands")).unwrap();
    let out = opsbot(&["check-config", "--config", config.to_str().unwrap()], b"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("config.toml: [[people]] is empty, so nobody may run anything but /help"),
        "{stdout}"
    );
}

/// A log level `serve` would refuse, or read as a module name and log nothing, stops
/// `check-config` and `serve` alike, with one message that names the line and the fix.
#[test]
fn a_misspelt_log_level_is_refused_by_check_config_and_serve_alike() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1);
    let mut cfg = std::fs::read_to_string(&config).unwrap();
    cfg.push_str("[log]\nlevel = \"warning\"\n");
    std::fs::write(&config, &cfg).unwrap();
    let line = line_of(&cfg, "level = \"warning\"");
    let mut messages = Vec::new();
    for command in ["check-config", "serve"] {
        let out = opsbot(&[command, "--config", config.to_str().unwrap()], b"");
        assert!(!out.status.success(), "{command} refuses");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("config.toml:{line}:"))
                && stderr.contains("\"warning\" is not a tracing level")
                && stderr.contains("write \"warn\""),
            "{stderr}"
        );
        messages.push(stderr);
    }
    assert_eq!(messages[0], messages[1]);
}

#[test]
fn a_missing_config_file_is_named_once_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("config.toml");
    let out = opsbot(&["serve", "--config", missing.to_str().unwrap()], b"");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("there is no such file; copy config.example.toml there")
            && stderr.contains("--config"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("os error"),
        "the cause once, in words: {stderr}"
    );
}

/// `--connect` opens the store as `serve` would, and a failure says the real cause.
#[test]
fn check_config_connect_reports_why_the_store_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1);
    let cfg = config.to_str().unwrap();
    let out = opsbot(&["check-config", "--connect", "--config", cfg], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ok: store reachable: SQLite file"),
        "{}",
        text(&out.stdout)
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let url = format!("postgres://opsbot:pw-not-shown@{addr}/opsbot");
    let env = [("OPSBOT_STORE__DATABASE_URL", url.as_str())];
    let out = opsbot_with_env(&["check-config", "--connect", "--config", cfg], &env, b"");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "connection refused by {addr}: is Postgres running there"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("pool timed out") && !stderr.contains("pw-not-shown"),
        "{stderr}"
    );

    let redis = format!("redis://:pw-not-shown@{addr}");
    let env = [
        ("OPSBOT_LIMITS__BACKEND", "redis"),
        ("OPSBOT_LIMITS__REDIS_URL", redis.as_str()),
    ];
    let out = opsbot_with_env(&["check-config", "--connect", "--config", cfg], &env, b"");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot connect to Redis (limits.redis_url)")
            && stderr.to_lowercase().contains("refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("pw-not-shown"), "{stderr}");
}

/// A wrong database name is named, once, without Postgres's source locations.
#[test]
fn a_wrong_postgres_database_is_named() {
    let base = support::postgres_url();
    let Some((server, _)) = base.rsplit_once('/') else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1);
    let url = format!("{server}/opsbot_no_such_db");
    let env = [("OPSBOT_STORE__DATABASE_URL", url.as_str())];
    let out = opsbot_with_env(
        &[
            "check-config",
            "--connect",
            "--config",
            config.to_str().unwrap(),
        ],
        &env,
        b"",
    );
    let stderr = text(&out.stderr);
    if stderr.contains("connection refused") && !support::services_required() {
        eprintln!("skipped: no Postgres at {server}");
        return;
    }
    assert!(!out.status.success());
    assert!(
        stderr.contains("database \"opsbot_no_such_db\" does not exist on")
            && stderr.contains("createdb opsbot_no_such_db"),
        "{stderr}"
    );
    assert!(!stderr.contains("line"), "{stderr}");
}

/// A runbook that cannot run for want of a secret says which, and the failed attempt does
/// not use up the person's rate limit.
#[test]
fn a_missing_secret_is_named_and_does_not_cost_a_try() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup_with_leak(dir.path());
    let leak = std::fs::read_to_string(dir.path().join("commands/leak.toml")).unwrap();
    let limited = leak.replace("[action]", "[rate_limit]\nper_user = \"1/min\"\n[action]");
    std::fs::write(dir.path().join("commands/leak.toml"), limited).unwrap();
    let (stdout, _) = chat_as_alice(&config, &[], b"/leak\n/leak\n/leak\n");
    let named = "/leak cannot run: secret LEAKY_TOKEN is not set in opsbot's environment; an operator must set it and restart opsbot. Nothing was run (request id ";
    assert_eq!(stdout.matches(named).count(), 3, "{stdout}");
    assert!(
        !stdout.contains("Slow down") && !stdout.contains("Something went wrong"),
        "{stdout}"
    );
}

/// `chat` on a taken port goes on without HTTP and says why, and what that means for /status.
#[test]
fn chat_on_a_taken_port_says_so_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = setup(dir.path(), 1);
    let cfg = std::fs::read_to_string(&config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\""));
    std::fs::write(&config, cfg).unwrap();
    let (stdout, stderr) = chat_as_alice(&config, &[], b"/whoami\n");
    assert!(stdout.contains("You are alice"), "{stdout}");
    assert!(
        stderr.contains(&format!("{addr} is already in use, probably by a running `opsbot serve`: this chat session serves no HTTP")),
        "{stderr}"
    );
}

/// [`setup`] with the console on as alice and `extra` appended to the config.
fn setup_serving_console(dir: &Path, extra: &str) -> PathBuf {
    let config = setup(dir, 1);
    let text_cfg = std::fs::read_to_string(&config).unwrap().replace(
        "[console]\n",
        "[console]\nenabled = true\nuser = \"alice\"\n",
    );
    std::fs::write(&config, format!("{text_cfg}{extra}")).unwrap();
    config
}

/// Sends SIGTERM to `child` and waits for it to exit.
async fn stop(child: &mut std::process::Child) {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    eventually("serve to stop on SIGTERM", SLOW, async || {
        child.try_wait().unwrap()
    })
    .await;
}

#[tokio::test]
async fn serve_takes_rust_log_over_log_level_and_logs_to_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup_serving_console(
        dir.path(),
        "[log]\nlevel = \"warn\"\nfile = \"opsbot.log\"\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsbot"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = dir.path().join("opsbot.log");
    eventually(
        "serve to log its start to log.file at RUST_LOG's level",
        SLOW,
        async || {
            std::fs::read_to_string(&log).is_ok_and(|text| text.contains("opsbot serving HTTP"))
        },
    )
    .await;
    stop(&mut child).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("\x1b["), "no colour codes in a file: {text}");
}

/// A pseudo-terminal: the master end (what a person types into) and the slave end (what
/// opsbot reads as a terminal).
fn pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    }
}

/// Someone typing to `serve`'s console at a terminal sees replies, not log lines between
/// them, and is told once where the logs are.
#[tokio::test]
async fn an_interactive_console_is_not_mixed_with_info_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup_serving_console(dir.path(), "");
    let (mut terminal, console) = pty();
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsbot"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::from(console))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let replies = wait_for_line(child.stdout.take().unwrap(), |l| l.starts_with("You are"));
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    terminal.write_all(b"/whoami\n").unwrap();
    replies.recv_timeout(SLOW).expect("console reply");
    stop(&mut child).await;
    let logs = logs.join().unwrap();
    assert!(
        logs.contains("the console is interactive; only warnings and errors are logged here"),
        "{logs}"
    );
    assert!(
        !logs.contains("opsbot serving HTTP") && !logs.contains("command handled"),
        "no INFO lines on the console's terminal: {logs}"
    );
}

/// Every start runs the migrations; on Postgres their "already exists, skipping" NOTICEs
/// are not logged.
#[tokio::test]
async fn migrations_on_postgres_log_no_notices() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\ndatabase_url = \"{}\"\n",
            support::postgres_schema_url(&schema)
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    for _ in 0..2 {
        let out = opsbot_with_env(&["migrate", "--config", cfg], &[("RUST_LOG", "info")], b"");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("already exists"), "{stderr}");
    }
    support::drop_postgres_schema(&schema).await;
}

/// `opsbot slack-manifest` on the shipped example config, parsed.
fn slack_manifest(extra: &[&str]) -> serde_json::Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let config = format!("{root}/config.example.toml");
    let mut args = vec!["slack-manifest", "--config", &config];
    args.extend_from_slice(extra);
    let out = opsbot(&args, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the manifest is JSON")
}

#[test]
fn slack_manifest_declares_every_command_the_scopes_and_the_request_urls() {
    let manifest = slack_manifest(&["--url", "https://bot.example.com/"]);
    let commands: Vec<&str> = manifest["features"]["slash_commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["url"], "https://bot.example.com/slack/commands", "{c}");
            c["command"].as_str().unwrap()
        })
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    let runbooks = std::fs::read_dir(format!("{root}/commands"))
        .unwrap()
        .filter_map(|f| {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".toml").map(str::to_owned)
        });
    let builtins = opsbot::router::builtins::NAMES
        .iter()
        .map(|n| n.to_string());
    for name in builtins.chain(runbooks) {
        assert!(
            commands.contains(&format!("/{name}").as_str()),
            "/{name} missing: {commands:?}"
        );
    }
    let scopes = &manifest["oauth_config"]["scopes"]["bot"];
    for scope in [
        "commands",
        "chat:write",
        "reactions:read",
        "channels:read",
        "groups:read",
    ] {
        assert!(
            scopes.as_array().unwrap().iter().any(|s| s == scope),
            "{scope}: {scopes}"
        );
    }
    let settings = &manifest["settings"];
    assert_eq!(
        settings["interactivity"]["request_url"],
        "https://bot.example.com/slack/interactivity"
    );
    assert_eq!(
        settings["event_subscriptions"]["request_url"],
        "https://bot.example.com/slack/events"
    );
    assert_eq!(
        settings["event_subscriptions"]["bot_events"],
        serde_json::json!(["reaction_added", "reaction_removed"])
    );
    assert_eq!(settings["socket_mode_enabled"], false);
}

#[test]
fn the_checked_in_slack_manifest_is_the_generated_one() {
    let root = env!("CARGO_MANIFEST_DIR");
    let shipped: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/docs/slack-app-manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        shipped,
        slack_manifest(&[]),
        "regenerate it: opsbot slack-manifest --config config.example.toml > docs/slack-app-manifest.json"
    );
}

#[test]
fn slack_manifest_names_commands_with_the_configured_prefix() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(format!("{root}/config.example.toml")).unwrap();
    let config = example.replace(
        "dir = \"examples/demo\"",
        &format!("dir = \"{root}/examples/demo\""),
    ) + "\n[slack]\nsigning_secret = \"8f742231b10e8888abcd99yyyzzz85a5\"\nbot_token = \"xoxb-t\"\ncommand_prefix = \"ops-\"\n";
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let out = opsbot(&["slack-manifest", "--config", path.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let commands = manifest["features"]["slash_commands"].as_array().unwrap();
    for c in commands {
        assert!(c["command"].as_str().unwrap().starts_with("/ops-"), "{c}");
    }
    assert!(commands.iter().any(|c| c["command"] == "/ops-rollback"));
}

/// One process at a time may use a SQLite file: a second `serve` (or a `chat`) on it exits
/// non-zero naming the file, while readers (`audit --verify`, `postmortem`,
/// `check-config --connect`) still work beside the running `serve`.
#[tokio::test]
async fn a_second_process_on_a_sqlite_file_is_refused_and_readers_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1);
    let cfg = config.to_str().unwrap();
    let serve = Serve::start(&config, SLOW);
    let db = dir.path().join("opsbot.db").display().to_string();
    for args in [
        &["serve", "--config", cfg][..],
        &["chat", "--as", "alice", "--config", cfg][..],
        &["migrate", "--config", cfg][..],
    ] {
        let out = opsbot(args, b"/whoami\n");
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} must be refused: {stderr}");
        assert!(
            stderr.contains(&format!("another opsbot is using the SQLite database {db}")),
            "{args:?}: {stderr}"
        );
        assert!(text(&out.stdout).is_empty(), "{args:?} answered nothing");
    }
    let out = opsbot(&["audit", "--verify", "--config", cfg], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("audit chain intact"));
    let out = opsbot(&["check-config", "--connect", "--config", cfg], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = opsbot(&["postmortem", "1", "--config", cfg], b"");
    assert!(
        text(&out.stderr).contains("there is no incident #1"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        reqwest::get(serve.url("/readyz")).await.unwrap().status(),
        200,
        "serve kept serving"
    );
    drop(serve);
    let out = opsbot(&["chat", "--as", "alice", "--config", cfg], b"/whoami\n");
    assert!(
        text(&out.stdout).contains("You are alice"),
        "free once serve is gone: {}",
        text(&out.stderr)
    );
}

/// The example config's `/backup` runs its two demo steps in order through `opsbot chat`
/// and reports each with what it printed.
#[test]
fn the_demo_backup_runs_its_steps_through_the_console() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(format!("{root}/examples"), dir.path().join("examples")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/config.example.toml")).unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, example).unwrap();
    let cfg = path.to_str().unwrap();
    let out = opsbot(
        &["chat", "--as", "alice", "--config", cfg],
        b"/backup app\n",
    );
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("#1 /backup database=app succeeded"), "{said}");
    let dump = said.find("dump (").expect("the dump step reported");
    let prune = said.find("prune (").expect("the prune step reported");
    assert!(dump < prune, "in order: {said}");
    // Each step's output is part of the result, not only its exit status.
    assert!(
        said.contains("dump (")
            && said
                .contains("exit 0: demo, nothing was changed. The real runbook would run: pg_dump"),
        "{said}"
    );
}

/// `scripts/prune-backups.sh`, the retention step of `/backup`: deletes that database's dumps
/// older than the days given, never another database's, and always keeps the newest.
#[test]
fn backup_retention_deletes_old_dumps_but_keeps_the_newest() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let dump = |name: &str, days_old: u32| {
        let path = dir.path().join(format!("{name}.dump"));
        std::fs::write(&path, "x").unwrap();
        let at = format!("{days_old} days ago");
        let touched = Command::new("touch").args(["-d", &at]).arg(&path).status();
        assert!(touched.unwrap().success());
    };
    let prune = |db: &str| {
        let out = Command::new(format!("{root}/scripts/prune-backups.sh"))
            .args([db, "30"])
            .env("BACKUP_DIR", dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let left = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    dump("app-20260901T030000Z", 90);
    dump("app-20261001T030000Z", 60);
    dump("app-20261125T030000Z", 6);
    dump("billing-20260901T030000Z", 90);
    let said = prune("app");
    assert!(said.contains("kept 1 backup(s) of app"), "{said}");
    assert_eq!(
        left(),
        ["app-20261125T030000Z.dump", "billing-20260901T030000Z.dump"]
    );
    // Only old dumps left: the newest of them stays.
    assert!(prune("billing").contains("kept 1 backup(s) of billing"));
    assert_eq!(left().len(), 2);
}

/// A `[schedule]` loading refuses stops `check-config` at its line; one that would report to
/// a platform with no credentials is a warning.
#[test]
fn check_config_refuses_a_bad_schedule_and_warns_of_one_nobody_can_see() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), 1);
    let schedule = "[schedule]\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\nplatform = \"slack\"\nchannel = \"C0OPS\"\nroles = [\"sre\"]\n";
    let nightly = format!(
        "name = \"nightly\"\nsummary = \"x\"\nroles = [\"sre\"]\n[action]\nkind = \"exec\"\nargv = [\"true\"]\ntimeout = \"1s\"\n{schedule}"
    );
    let file = dir.path().join("commands/nightly.toml");
    std::fs::write(&file, nightly.replace("0 3 * * *", "0 25 * * *")).unwrap();
    let out = opsbot(&["check-config", "--config", config.to_str().unwrap()], b"");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("nightly.toml:9: schedule: cron \"0 25 * * *\" is not valid"),
        "{stderr}"
    );
    std::fs::write(&file, &nightly).unwrap();
    let out = opsbot(&["check-config", "--config", config.to_str().unwrap()], b"");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "a warning, not a refusal: {stdout}");
    assert!(
        stdout.contains("nightly.toml:8: [schedule]: it reports to slack, which is not configured ([slack] is missing)"),
        "{stdout}"
    );
}
