//! Runs rendered actions at the edge: processes (no shell, cleared environment, own process
//! group killed as a whole on timeout or exit, output capped) and HTTP requests (reqwest).

use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::domain::ActionKind;
use crate::ports::{ActionOutcome, ActionRunner};

/// How long output is still read after the program itself has exited.
const PIPE_DRAIN: Duration = Duration::from_millis(500);

/// Output kept per run; the rest is dropped and the result says so.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

pub struct ProcessRunner {
    http: reqwest::Client,
}

impl ProcessRunner {
    pub fn new() -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("opsbot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Self { http })
    }
}

#[async_trait]
impl ActionRunner for ProcessRunner {
    async fn run(&self, action: &ActionKind) -> ActionOutcome {
        let started = Instant::now();
        let mut outcome = match action {
            ActionKind::Exec {
                argv,
                workdir,
                env,
                timeout,
            } => run_process(argv, workdir.as_deref(), env, *timeout).await,
            ActionKind::Http {
                method,
                url,
                headers,
                body,
                timeout,
                expect_status,
            } => {
                self.run_http(
                    method,
                    url.expose_secret(),
                    headers,
                    body.as_ref(),
                    *timeout,
                    *expect_status,
                )
                .await
            }
        };
        outcome.duration = started.elapsed();
        outcome
    }
}

fn failed(output: String) -> ActionOutcome {
    ActionOutcome {
        code: None,
        success: false,
        timed_out: false,
        output,
        truncated: false,
        duration: Duration::ZERO,
    }
}

async fn run_process(
    argv: &[String],
    workdir: Option<&std::path::Path>,
    env: &[(String, secrecy::SecretString)],
    timeout: Duration,
) -> ActionOutcome {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v.expose_secret())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Own process group, so a timeout can kill everything the runbook started.
    cmd.as_std_mut().process_group(0);
    die_with_parent(&mut cmd);
    if let Some(dir) = workdir {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start {}: {e}", argv[0])),
    };
    // Killed on every way out of this function, a cancelled (dropped) run included.
    let group = GroupGuard(child.id().map(|p| p as i32));
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return failed("cannot capture output".into());
    };
    let mut output = Vec::new();
    let mut truncated = false;
    let collect = async {
        let (mut out_done, mut err_done) = (false, false);
        let (mut a, mut b) = ([0u8; 8192], [0u8; 8192]);
        let mut exited = None;
        // Once the program exits, whatever it left running may hold the pipes open for
        // hours; read what is already there for a moment, then stop.
        let drain = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(drain);
        while !(out_done && err_done) {
            let chunk = tokio::select! {
                r = stdout.read(&mut a), if !out_done => match r { Ok(0) | Err(_) => { out_done = true; None } Ok(n) => Some(&a[..n]) },
                r = stderr.read(&mut b), if !err_done => match r { Ok(0) | Err(_) => { err_done = true; None } Ok(n) => Some(&b[..n]) },
                status = child.wait(), if exited.is_none() => {
                    exited = Some(status);
                    drain.as_mut().reset(tokio::time::Instant::now() + PIPE_DRAIN);
                    None
                }
                _ = &mut drain, if exited.is_some() => break,
            };
            if let Some(chunk) = chunk {
                let room = OUTPUT_LIMIT.saturating_sub(output.len());
                if chunk.len() > room {
                    truncated = true;
                }
                output.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
        }
        match exited {
            Some(status) => status,
            None => child.wait().await,
        }
    };
    let result = tokio::time::timeout(timeout, collect).await;
    // Whether it finished or not, nothing the runbook started may outlive it.
    drop(group);
    let text = String::from_utf8_lossy(&output).into_owned();
    match result {
        Ok(Ok(status)) => ActionOutcome {
            code: status.code(),
            success: status.success(),
            timed_out: false,
            output: text,
            truncated,
            duration: Duration::ZERO,
        },
        Ok(Err(e)) => failed(format!("waiting for the process failed: {e}")),
        Err(_) => ActionOutcome {
            code: None,
            success: false,
            timed_out: true,
            output: text,
            truncated,
            duration: Duration::ZERO,
        },
    }
}

/// The process group a run started; killed as a whole when dropped.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.filter(|p| *p > 0) {
            // SAFETY: kill(2) with a negative pid signals the process group we created; it has
            // no memory-safety preconditions. An already-gone group just returns ESRCH.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Asks the kernel to kill the runbook's process when opsbot dies (kill -9, OOM), so chat's
/// "interrupted" is true: without it the program ran on to the end with nobody watching.
/// Linux only. The signal follows the thread that spawned the child; that is a tokio worker,
/// which lives as long as the runtime. What the program itself started in the background is
/// in its process group, which only opsbot kills: a supervisor that outlives opsbot would be
/// needed for those (see ARCHITECTURE.md).
fn die_with_parent(cmd: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id();
        // SAFETY: runs in the forked child before exec; prctl(2), getppid(2) and _exit(2) are
        // async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.as_std_mut().pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // opsbot died between fork and prctl: the signal will never come.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
}

impl ProcessRunner {
    async fn run_http(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, secrecy::SecretString)],
        body: Option<&secrecy::SecretString>,
        timeout: Duration,
        expect_status: Option<u16>,
    ) -> ActionOutcome {
        let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
            return failed(format!("invalid method {method}"));
        };
        let mut req = self.http.request(method, url).timeout(timeout);
        for (k, v) in headers {
            req = req.header(k, v.expose_secret());
        }
        if let Some(b) = body {
            req = req.body(b.expose_secret().to_owned());
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let success =
                    expect_status.map_or((200..300).contains(&status), |want| want == status);
                let bytes = resp.bytes().await.unwrap_or_default();
                let truncated = bytes.len() > OUTPUT_LIMIT;
                let text =
                    String::from_utf8_lossy(&bytes[..bytes.len().min(OUTPUT_LIMIT)]).into_owned();
                ActionOutcome {
                    code: Some(i32::from(status)),
                    success,
                    timed_out: false,
                    output: text,
                    truncated,
                    duration: Duration::ZERO,
                }
            }
            Err(e) if e.is_timeout() => ActionOutcome {
                timed_out: true,
                ..failed(String::new())
            },
            Err(e) => {
                let cause = std::iter::successors(std::error::Error::source(&e), |s| s.source())
                    .last()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "request failed".into());
                failed(format!("request failed: {cause}"))
            }
        }
    }
}
