//! Captures what opsbot would log, through its own filter, on the test's thread (the app's
//! tasks run there too: `#[tokio::test]` is a current-thread runtime), `log` records included.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::util::SubscriberInitExt;

/// Everything logged while the guard lives, as text.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Starts capturing at `level` (as in `log.level`), with opsbot's filter.
    pub fn start(level: &str) -> (Self, tracing::dispatcher::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let guard = tracing_subscriber::fmt()
            .with_env_filter(opsbot::telemetry::filter(level).unwrap())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
            .set_default();
        (captured, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
