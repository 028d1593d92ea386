//! Console load tool: the real `opsbot serve` (release binary, child process) on the shipped
//! `config.example.toml`, its stdin and stdout on a pseudo-terminal as a person at a
//! terminal would have them. Reports:
//!  - idle memory: `VmRSS`, `RssAnon` and `RssFile` from `/proc/<pid>/status` once `/readyz`
//!    answers and the process has been idle for `CONSOLE_IDLE_SECS` (default 3);
//!  - `/whoami` round trips through the terminal, one at a time (write the line, read the
//!    answer): p50 / p90 / p99 / max, and the CPU time opsbot used per command.
//!
//! Run with `cargo bench --bench console`. Targets (issue 12): idle RSS ≤ 20 MB, `/whoami`
//! p50 ≤ 0.25 ms. The example's rate limits (30/min per person) are raised through
//! `OPSBOT_LIMITS__*` so every command is answered rather than refused; the store is a fresh
//! SQLite file in a temp directory (the working directory of the child), HTTP on
//! 127.0.0.1:0. Knobs: `CONSOLE_COMMANDS` (default 5,000), `CONSOLE_IDLE_SECS`.
//! Without `--bench` (e.g. `cargo test --benches`) it sends 50 commands as a smoke test.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const READY_DEADLINE: Duration = Duration::from_secs(30);
const ANSWER: &[u8] = b"You are alice (console:alice). Roles: deployer, sre.";

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let commands: usize = knob("CONSOLE_COMMANDS", if bench { 5_000 } else { 50 });
    let idle = Duration::from_secs(knob("CONSOLE_IDLE_SECS", if bench { 3 } else { 0 }));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let (master, slave) = pty();
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsbot"))
        .args(["serve", "--config", config.to_str().expect("utf-8 path")])
        .current_dir(dir.path())
        .env("OPSBOT_SERVER__LISTEN", "127.0.0.1:0")
        // Absolute: a relative path is taken from the config file's directory, the repository.
        .env(
            "OPSBOT_STORE__DATABASE_URL",
            format!("sqlite://{}", dir.path().join("bench.db").display()),
        )
        .env("OPSBOT_LIMITS__GLOBAL", "1000000/s")
        .env("OPSBOT_LIMITS__PER_USER", "1000000/s")
        .env("OPSBOT_LIMITS__PER_CHANNEL", "1000000/s")
        .env("OPSBOT_LOG__FORMAT", "json")
        // With the console on a terminal, `serve` logs only warnings unless told otherwise;
        // the bench reads the address from the info line (on the stderr pipe, not the pty).
        .env("RUST_LOG", "info")
        .stdin(slave.try_clone().expect("dup pty"))
        .stdout(slave)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start opsbot serve");
    let addr = serving_address(child.stderr.take().expect("stderr"));
    wait_ready(&addr);
    std::thread::sleep(idle);
    let pid = child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or("?".to_owned(), |v| v.trim().to_owned())
    };
    println!(
        "console/idle: VmRSS {} (RssAnon {}, RssFile {}), threads {}",
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("Threads:")
    );

    let mut terminal = File::from(master);
    let mut reader = BufReader::new(terminal.try_clone().expect("dup pty master"));
    let mut line = Vec::new();
    let mut round_trip = || {
        let sent = Instant::now();
        terminal.write_all(b"/whoami\n").expect("type a command");
        loop {
            line.clear();
            reader
                .read_until(b'\n', &mut line)
                .expect("read the answer");
            if line.windows(ANSWER.len()).any(|w| w == ANSWER) {
                return sent.elapsed();
            }
        }
    };
    for _ in 0..commands.min(200) {
        round_trip();
    }
    let cpu_before = cpu_time(pid);
    let mut took: Vec<Duration> = (0..commands).map(|_| round_trip()).collect();
    let cpu = cpu_time(pid) - cpu_before;
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    let p50 = at(0.50);
    println!(
        "console/whoami: {commands} commands one at a time: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms; opsbot CPU {:.0} µs per command",
        ms(p50),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(*took.last().expect("some commands")),
        cpu.as_secs_f64() * 1e6 / commands as f64,
    );
    println!(
        "console/whoami: target p50 ≤ 0.25 ms: {}",
        if p50 <= Duration::from_micros(250) {
            "MET"
        } else {
            "MISSED"
        }
    );
    // SIGTERM: a graceful stop, so the temp directory can go.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
}

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A pseudo-terminal in raw mode (no echo, no line editing), as (master, slave).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors it opened into the two ints; the null pointers
    // ask for no name and default settings. tcgetattr/tcsetattr only read/write `mode`.
    unsafe {
        assert_eq!(
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null()
            ),
            0,
            "openpty"
        );
        let mut mode: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave, &mut mode), 0, "tcgetattr");
        libc::cfmakeraw(&mut mode);
        assert_eq!(libc::tcsetattr(slave, libc::TCSANOW, &mode), 0, "tcsetattr");
        (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave))
    }
}

/// The address from serve's "opsbot serving HTTP" log line; the rest of stderr is drained
/// in the background so opsbot never blocks on a full pipe.
fn serving_address(stderr: impl Read + Send + 'static) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("opsbot serving HTTP")
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(addr) = v["addr"].as_str()
            {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    rx.recv_timeout(READY_DEADLINE)
        .expect("opsbot logs its HTTP address")
}

fn wait_ready(addr: &str) {
    let give_up = Instant::now() + READY_DEADLINE;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    while Instant::now() < give_up {
        let ready = runtime.block_on(async {
            reqwest::get(format!("http://{addr}/readyz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        });
        if ready {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("opsbot did not become ready within {READY_DEADLINE:?}");
}

/// utime + stime of `pid` (`/proc/<pid>/stat` fields 14 and 15, in clock ticks).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let after_name = stat.rsplit_once(") ").expect("stat format").1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}
