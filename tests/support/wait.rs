//! Waiting for something the app does in the background: one polling loop with a deadline,
//! so a test never sleeps a fixed time and a timeout always says what it was waiting for.

use std::fmt::Debug;
use std::time::Duration;

/// How long most waits may take: far beyond a healthy run, short enough to fail clearly.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often a probe is asked again.
const POLL: Duration = Duration::from_millis(5);

/// What a probe answers: done (with a value), or not yet (with what it saw, for the panic).
pub trait Probe {
    type Value;
    type Seen: Debug;
    fn check(self) -> Result<Self::Value, Self::Seen>;
}

/// `true` once the condition holds.
impl Probe for bool {
    type Value = ();
    type Seen = bool;
    fn check(self) -> Result<(), bool> {
        if self { Ok(()) } else { Err(false) }
    }
}

/// `Some(value)` once there is one.
impl<T> Probe for Option<T> {
    type Value = T;
    type Seen = Option<()>;
    fn check(self) -> Result<T, Option<()>> {
        self.ok_or(None)
    }
}

/// `Ok(value)` once there is one; `Err(state)` names what was observed meanwhile.
impl<T, S: Debug> Probe for Result<T, S> {
    type Value = T;
    type Seen = S;
    fn check(self) -> Result<T, S> {
        self
    }
}

/// Asks `probe` every few milliseconds until it is done and returns its value; after
/// `deadline`, panics naming `what` and the last state the probe observed.
pub async fn eventually<P: Probe>(
    what: &str,
    deadline: Duration,
    mut probe: impl AsyncFnMut() -> P,
) -> P::Value {
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        match probe().await.check() {
            Ok(value) => return value,
            Err(seen) if tokio::time::Instant::now() >= give_up => {
                panic!("timed out after {deadline:?} waiting for {what}; last saw {seen:#?}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// `Ok(value)` when `pred` holds for it, else `Err(value)`: a probe whose timeout shows the
/// value it last looked at.
pub fn satisfies<T>(value: T, pred: impl FnOnce(&T) -> bool) -> Result<T, T> {
    if pred(&value) { Ok(value) } else { Err(value) }
}
