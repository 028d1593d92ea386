//! Leadership: which replica of a cluster does the work that must happen once (Telegram long
//! polling, the Discord gateway, scheduled health checks, the heartbeat, sweeps). An
//! [`Election`] holds the store's `leader` lease, renewing it every third of its ttl, and
//! publishes on a [`LeaderGate`] whether this replica leads; [`run_while_leader`] starts work
//! when leadership is gained and cancels it when it is lost. Names only the ports.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ports::{Clock, Epoch, LeaseStore};

/// The one lease replicas elect their leader with.
pub const LEASE_NAME: &str = "leader";

/// Where this replica stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Another replica leads (or none can be reached): leader-only work is stopped here.
    Follower,
    /// This replica leads for the term `epoch`.
    Leader { epoch: Epoch },
}

impl Leadership {
    pub fn epoch(self) -> Option<Epoch> {
        match self {
            Leadership::Leader { epoch } => Some(epoch),
            Leadership::Follower => None,
        }
    }
}

impl std::fmt::Display for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leadership::Leader { epoch } => write!(f, "leader (epoch {epoch})"),
            Leadership::Follower => f.write_str("follower"),
        }
    }
}

/// Whether this replica leads now, and every change of it.
#[derive(Clone)]
pub struct LeaderGate {
    rx: watch::Receiver<Leadership>,
    /// When leadership last changed (for "leading for" in `/readyz`).
    since: Since,
    /// Keeps a fixed gate's channel open (see [`LeaderGate::always`]).
    _fixed: Option<Arc<watch::Sender<Leadership>>>,
}

impl LeaderGate {
    /// Always the leader: for a store only one process may use (SQLite), where there is no
    /// one to elect and no lease traffic is needed.
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(Leadership::Leader { epoch: Epoch(1) });
        Self {
            rx,
            since: Since::now(),
            _fixed: Some(Arc::new(tx)),
        }
    }

    pub fn current(&self) -> Leadership {
        *self.rx.borrow()
    }

    /// How long this replica has led, if it leads.
    pub fn leading_for(&self) -> Option<Duration> {
        self.current().epoch()?;
        Some(self.since.elapsed())
    }

    /// Waits until leadership differs from `from`; `None` once it can no longer change.
    async fn changed_from(&mut self, from: Leadership) -> Option<Leadership> {
        match self.rx.wait_for(|now| *now != from).await {
            Ok(now) => Some(*now),
            Err(_) => None,
        }
    }
}

/// When something last changed, shared by whoever changes it and those who read it.
#[derive(Clone)]
struct Since(Arc<std::sync::Mutex<Instant>>);

impl Since {
    fn now() -> Self {
        Self(Arc::new(std::sync::Mutex::new(Instant::now())))
    }

    fn reset(&self) {
        *self.0.lock().expect("since poisoned") = Instant::now();
    }

    fn elapsed(&self) -> Duration {
        self.0.lock().expect("since poisoned").elapsed()
    }
}

/// Holds (or waits for) the leader lease for this replica, named `holder`.
pub struct Election {
    store: Arc<dyn LeaseStore>,
    clock: Arc<dyn Clock>,
    holder: String,
    ttl: Duration,
    tx: watch::Sender<Leadership>,
    since: Since,
}

impl Election {
    /// An election not started yet, and the gate it will publish on (a follower until then).
    pub fn new(
        store: Arc<dyn LeaseStore>,
        clock: Arc<dyn Clock>,
        holder: String,
        ttl: Duration,
    ) -> (Self, LeaderGate) {
        let (tx, rx) = watch::channel(Leadership::Follower);
        let since = Since::now();
        let gate = LeaderGate {
            rx,
            since: since.clone(),
            _fixed: None,
        };
        let election = Self {
            store,
            clock,
            holder,
            ttl,
            tx,
            since,
        };
        (election, gate)
    }

    /// Starts electing. The task ends after `shutdown`, having stopped leader-only work (the
    /// gate says follower) and then released the lease, so a successor takes over at once.
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    /// How long before its lease can have expired for the others a leader steps down: the
    /// time its work gets to stop, and room for the replicas' clocks to drift apart.
    fn margin(&self) -> Duration {
        self.ttl / 6
    }

    async fn run(self, shutdown: CancellationToken) {
        let period = self.ttl / 3;
        // This replica's term: its epoch and, on its own monotonic clock, when it must have
        // stepped down unless renewed (a store that stalls must never leave two leaders).
        let mut term: Option<(Epoch, Instant)> = None;
        loop {
            let started = Instant::now();
            let give_up = term.map_or(started + period, |(_, until)| until);
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => break,
                attempt = self.attempt(give_up) => attempt,
            };
            term = attempt.map(|epoch| (epoch, started + self.ttl - self.margin()));
            let now = term.map_or(Leadership::Follower, |(epoch, _)| Leadership::Leader {
                epoch,
            });
            self.publish(now);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(started + period) => {}
            }
        }
        self.publish(Leadership::Follower);
        if let Some((epoch, _)) = term {
            self.release(epoch, period).await;
        }
    }

    /// One acquire-or-renew, given up at `give_up`; the epoch if this replica holds the lease.
    async fn attempt(&self, give_up: Instant) -> Option<Epoch> {
        let call =
            self.store
                .acquire_or_renew(LEASE_NAME, &self.holder, self.ttl, self.clock.now());
        match tokio::time::timeout_at(give_up, call).await {
            Ok(Ok(epoch)) => epoch,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot renew or take the leader lease");
                None
            }
            Err(_) => {
                tracing::warn!("the store did not answer the leader lease in time");
                None
            }
        }
    }

    /// Sends `now` if it changed, and says so in the log.
    fn publish(&self, now: Leadership) {
        let changed = self.tx.send_if_modified(|was| {
            let changed = *was != now;
            *was = now;
            changed
        });
        if !changed {
            return;
        }
        self.since.reset();
        match now {
            Leadership::Leader { epoch } => tracing::info!(%epoch, "this replica is the leader"),
            Leadership::Follower => tracing::info!("this replica is a follower"),
        }
    }

    async fn release(&self, epoch: Epoch, within: Duration) {
        let release = self.store.release(LEASE_NAME, &self.holder, epoch);
        match tokio::time::timeout(within, release).await {
            Ok(Ok(true)) => tracing::info!(%epoch, "released the leader lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot release the leader lease"),
            Err(_) => tracing::warn!("the store did not answer releasing the leader lease"),
        }
    }
}

/// Runs `work` while this replica leads: started (with a child of `shutdown`) when leadership
/// is gained, its token cancelled when leadership is lost or changes term, and awaited before
/// it may start again, so one instance runs at a time. Work that ends by itself is started
/// again only in a later term. Returns after `shutdown`, once the work has stopped.
pub async fn run_while_leader<F, Fut>(
    mut gate: LeaderGate,
    shutdown: CancellationToken,
    mut work: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut now = gate.current();
    loop {
        if now == Leadership::Follower {
            now = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = gate.changed_from(now) => match next {
                    Some(next) => next,
                    None => return shutdown.cancelled().await,
                },
            };
            continue;
        }
        let token = shutdown.child_token();
        let task = tokio::spawn(work(token.clone()));
        let next = tokio::select! {
            _ = shutdown.cancelled() => None,
            next = gate.changed_from(now) => next,
        };
        token.cancel();
        let _ = task.await;
        match next {
            Some(next) => now = next,
            None => return shutdown.cancelled().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::ports::{FakeClock, StoreError};

    /// What the fake store answers to the next acquire-or-renew.
    #[derive(Clone, Copy)]
    enum Answer {
        Grant(i64),
        Refuse,
        Fail,
        /// Never answers (a store that hangs).
        Stall,
    }

    /// A lease store that answers from a script (refusing once it runs out) and records
    /// releases.
    #[derive(Default)]
    struct ScriptedLeases {
        answers: Mutex<VecDeque<Answer>>,
        released: Mutex<Vec<(String, Epoch)>>,
    }

    impl ScriptedLeases {
        fn new(answers: &[Answer]) -> Arc<Self> {
            Arc::new(Self {
                answers: Mutex::new(answers.iter().copied().collect()),
                ..Self::default()
            })
        }
    }

    #[async_trait]
    impl LeaseStore for ScriptedLeases {
        async fn acquire_or_renew(
            &self,
            _name: &str,
            _holder: &str,
            _ttl: Duration,
            _now: DateTime<Utc>,
        ) -> Result<Option<Epoch>, StoreError> {
            let answer = self.answers.lock().unwrap().pop_front();
            match answer.unwrap_or(Answer::Refuse) {
                Answer::Grant(epoch) => Ok(Some(Epoch(epoch))),
                Answer::Refuse => Ok(None),
                Answer::Fail => Err(StoreError::Unavailable("connection reset".into())),
                Answer::Stall => std::future::pending().await,
            }
        }

        async fn release(&self, _: &str, holder: &str, epoch: Epoch) -> Result<bool, StoreError> {
            self.released
                .lock()
                .unwrap()
                .push((holder.to_owned(), epoch));
            Ok(true)
        }
    }

    /// Renewals every 3 s; a stalled leader steps down 7.5 s after its last renewal began.
    const TTL: Duration = Duration::from_secs(9);

    fn elect(
        store: &Arc<ScriptedLeases>,
        shutdown: &CancellationToken,
    ) -> (LeaderGate, JoinHandle<()>) {
        let clock = Arc::new(FakeClock::new(Utc::now()));
        let (election, gate) = Election::new(store.clone(), clock, "host:1:abcd".into(), TTL);
        (gate, election.spawn(shutdown.clone()))
    }

    /// Moves (paused) time to `at` after `start`, letting every task run.
    async fn at(start: Instant, at: Duration) {
        tokio::time::sleep_until(start + at).await;
    }

    const LEADER_1: Leadership = Leadership::Leader { epoch: Epoch(1) };

    #[tokio::test(start_paused = true)]
    async fn a_failed_renewal_steps_down_at_once() {
        let store = ScriptedLeases::new(&[Answer::Grant(1), Answer::Fail]);
        let (start, shutdown) = (Instant::now(), CancellationToken::new());
        let (gate, _task) = elect(&store, &shutdown);
        at(start, Duration::from_millis(10)).await;
        assert_eq!(gate.current(), LEADER_1);
        at(start, Duration::from_millis(2_010)).await;
        assert_eq!(gate.leading_for(), Some(Duration::from_millis(2_010)));
        at(start, Duration::from_millis(3_010)).await;
        assert_eq!(gate.current(), Leadership::Follower);
        assert_eq!(gate.leading_for(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_renewal_steps_down_before_the_lease_can_expire() {
        let store = ScriptedLeases::new(&[Answer::Grant(1), Answer::Stall]);
        let (start, shutdown) = (Instant::now(), CancellationToken::new());
        let (gate, _task) = elect(&store, &shutdown);
        at(start, Duration::from_millis(7_400)).await;
        assert_eq!(gate.current(), LEADER_1, "the lease is good until 9 s");
        at(start, Duration::from_millis(7_600)).await;
        assert_eq!(
            gate.current(),
            Leadership::Follower,
            "stepped down with time to stop before another replica may take over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_the_work_then_releases_the_lease() {
        let store = ScriptedLeases::new(&[Answer::Grant(1), Answer::Grant(1)]);
        let (start, shutdown) = (Instant::now(), CancellationToken::new());
        let (gate, task) = elect(&store, &shutdown);
        at(start, Duration::from_millis(10)).await;
        assert_eq!(gate.current(), LEADER_1);
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(gate.current(), Leadership::Follower);
        assert_eq!(
            *store.released.lock().unwrap(),
            [("host:1:abcd".to_owned(), Epoch(1))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn work_runs_only_while_leading_and_starts_again_in_a_new_term() {
        use Answer::*;
        let store = ScriptedLeases::new(&[Refuse, Grant(1), Fail, Grant(2), Grant(2)]);
        let (start, shutdown) = (Instant::now(), CancellationToken::new());
        let (gate, _task) = elect(&store, &shutdown);
        let (started, stopped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, t) = (started.clone(), stopped.clone());
        tokio::spawn(run_while_leader(gate, shutdown.clone(), move |token| {
            let (s, t) = (s.clone(), t.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                token.cancelled().await;
                t.fetch_add(1, Ordering::SeqCst);
            }
        }));
        let count = |c: &AtomicUsize| c.load(Ordering::SeqCst);
        at(start, Duration::from_millis(10)).await;
        assert_eq!((count(&started), count(&stopped)), (0, 0), "a follower");
        at(start, Duration::from_millis(3_010)).await;
        assert_eq!((count(&started), count(&stopped)), (1, 0), "leading");
        at(start, Duration::from_millis(6_010)).await;
        assert_eq!((count(&started), count(&stopped)), (1, 1), "lost it");
        at(start, Duration::from_millis(9_010)).await;
        assert_eq!((count(&started), count(&stopped)), (2, 1), "leading again");
        at(start, Duration::from_millis(12_010)).await;
        assert_eq!(
            (count(&started), count(&stopped)),
            (2, 1),
            "renewed: still running"
        );
    }
}
