//! Giving freed memory back to the kernel. glibc keeps what a burst freed (a 50,000-alert
//! delivery, the group message rendered from it, a long `/alerts` answer) in its arenas, so
//! without this `serve` stays at its peak (over 200 MB) until it restarts.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often freed memory is handed back. A trim of a mostly idle heap costs microseconds.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Trims every [`TRIM_EVERY`] until `shutdown`. Not needed (and a no-op) off glibc.
pub async fn trim_forever(shutdown: CancellationToken) {
    crate::periodic::every(TRIM_EVERY, &shutdown, || async {
        // A trim walks every arena under its lock: off the async workers.
        let _ = tokio::task::spawn_blocking(trim).await;
    })
    .await;
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it takes the arenas' locks
    // itself and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
