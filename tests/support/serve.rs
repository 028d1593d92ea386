//! Real `opsbot serve` processes, for tests that need several (replicas on one database) or
//! a process to kill: started with JSON logs, their HTTP address read from their log, and
//! killed (SIGKILL) when dropped so a failed test leaves none behind. A failing test prints
//! the last lines each of its replicas logged.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Log lines of a replica kept for a failing test to show.
const KEPT_LINES: usize = 300;

/// Reads `reader` line by line on a thread and sends each line `want` accepts.
pub fn wait_for_line(
    reader: impl std::io::Read + Send + 'static,
    want: impl Fn(&str) -> bool + Send + 'static,
) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(reader)
            .lines()
            .map_while(Result::ok)
        {
            if want(&line) {
                let _ = tx.send(line);
            }
        }
    });
    rx
}

/// One `opsbot serve`, serving HTTP at `addr`.
pub struct Serve {
    pub child: Child,
    pub addr: String,
    /// Its latest log lines (up to [`KEPT_LINES`]).
    log: Arc<Mutex<std::collections::VecDeque<String>>>,
}

impl Serve {
    /// Starts `opsbot serve --config CONFIG` and waits (up to `within`) for it to log the
    /// address it serves HTTP on.
    pub fn start(config: &Path, within: Duration) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_opsbot"))
            .args(["serve", "--config", config.to_str().expect("UTF-8 path")])
            .env_remove("OPSBOT_CONFIG")
            .env("OPSBOT_LOG__FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start opsbot serve");
        let log = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let kept = log.clone();
        let serving = wait_for_line(child.stderr.take().expect("stderr"), move |l| {
            let mut kept = kept.lock().unwrap();
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            kept.push_back(l.to_owned());
            l.contains("opsbot serving HTTP")
        });
        let line = serving
            .recv_timeout(within)
            .expect("opsbot serve logs its address");
        let first: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        let addr = first["addr"].as_str().expect("addr in the log").to_owned();
        Serve { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What `/readyz` answers now.
    pub async fn readyz(&self) -> String {
        let response = reqwest::get(self.url("/readyz"))
            .await
            .expect("GET /readyz");
        response.text().await.expect("readyz body")
    }

    /// SIGTERM: a graceful shutdown.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Waits (up to `within`) for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for opsbot serve") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "opsbot serve still running after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGSTOP: the process is frozen where it is, holding whatever it held.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }

    /// `kill -9`: the process gets no chance to clean up (or release anything).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!(
                "--- last {} log lines of opsbot serve at {}:",
                log.len(),
                self.addr
            );
            for line in log.iter() {
                eprintln!("{line}");
            }
        }
    }
}

/// Replica `name`'s folder under `dir`, with an empty `commands/` catalogue, and its
/// `config.toml`: HTTP on a free port, the store at `database_url`, no console, then `rest`.
pub fn replica_config(dir: &Path, name: &str, database_url: &str, rest: &str) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(folder.join("commands")).expect("replica folder");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\ndatabase_url = \"{database_url}\"\n\
         [catalog]\ndir = \"commands\"\n[console]\nenabled = false\n{rest}"
    );
    let path = folder.join("config.toml");
    std::fs::write(&path, text).expect("replica config");
    path
}
