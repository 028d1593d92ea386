//! Outbound pacing per platform and channel (teloxide's `Throttle` idea, as a wrapper around
//! any `ChatOutbound`): messages to one channel leave at most once per platform interval, in
//! arrival order, while other channels proceed in parallel. Urgent messages (P1 incidents,
//! critical alerts) overtake routine ones waiting for the same channel. A platform's
//! `Retry-After` holds the whole channel and the message is sent again afterwards, as it is
//! after a transport error or 5xx (after 1, 2 and 4 s); an edit
//! that is overtaken by a newer edit of the same message while waiting is dropped, so only
//! the latest text is sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::domain::Platform;
use crate::metrics::Metrics;
use crate::ports::{ChatOutbound, OutboundError, OutboundMessage, OutboundTarget, Priority, Sent};

/// The minimum spacing between two messages in one channel, per platform's published limits
/// (Slack about 1/s per channel, Discord 5 per 5 s, Telegram about 20/min in a group).
pub fn default_spacing(platform: Platform) -> Duration {
    match platform {
        Platform::Console => Duration::ZERO,
        Platform::Slack | Platform::Discord => Duration::from_secs(1),
        Platform::Telegram => Duration::from_secs(3),
    }
}

/// How many times one message is sent again after the platform answered `Retry-After`
/// before the error is handed back to the caller.
const RETRIES_AFTER_429: usize = 4;
/// Waits before sending again after the platform was unavailable (a transport error, a 5xx);
/// then the error is handed back.
const UNAVAILABLE_BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// A longer `Retry-After` (Telegram flood waits can be minutes) is handed back at once rather
/// than waited out here, so callers that send in turn are not stalled behind one channel; the
/// channel itself stays held back for the whole wait.
const LONGEST_WAIT_HELD: Duration = Duration::from_secs(30);

type ChannelKey = (Platform, String);

struct Channel {
    /// Routine messages line up here first (FIFO), so at most one of them at a time competes
    /// with urgent ones for `send`.
    routine: tokio::sync::Mutex<()>,
    /// The right to send next, holding when the channel is next free.
    send: tokio::sync::Mutex<Instant>,
    /// Urgent messages waiting for `send`; a routine message steps back while any wait.
    urgent_waiting: AtomicUsize,
}

/// Counts an urgent message as waiting for as long as it lives, even if its future is dropped.
struct UrgentWaiting<'a>(&'a AtomicUsize);

impl<'a> UrgentWaiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for UrgentWaiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The channels written to, and the size at which idle ones are next looked for.
struct Channels {
    by_key: HashMap<ChannelKey, Arc<Channel>>,
    prune_at: usize,
}

/// The minimum spacing between two messages in one channel of a platform.
type Spacing = Box<dyn Fn(Platform) -> Duration + Send + Sync>;

pub struct Throttled {
    inner: Arc<dyn ChatOutbound>,
    spacing: Spacing,
    channels: Mutex<Channels>,
    /// Latest edit generation per message, so older queued edits can step aside.
    edits: Mutex<HashMap<(ChannelKey, String), u64>>,
    next_generation: Mutex<u64>,
    metrics: Option<Arc<Metrics>>,
}

/// Channels tracked before idle ones are forgotten (one entry per channel ever written to
/// would grow without bound with Telegram private chats).
const PRUNE_AT: usize = 1024;

/// Forgets channels nobody is sending to whose spacing has run out: a message to them
/// later may go at once anyway.
fn prune_idle(channels: &mut HashMap<ChannelKey, Arc<Channel>>) {
    let now = Instant::now();
    channels.retain(|_, channel| {
        // Handed out only under the map's lock, so an entry held by nobody else is idle and
        // its lock free.
        let in_use = Arc::strong_count(channel) > 1;
        in_use
            || channel
                .send
                .try_lock()
                .map_or(true, |next_free| *next_free > now)
    });
}

/// Longest part of an undeliverable message's text that goes into the log.
const LOGGED_TEXT_CHARS: usize = 2000;

impl Throttled {
    pub fn new(
        inner: Arc<dyn ChatOutbound>,
        spacing: impl Fn(Platform) -> Duration + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            spacing: Box::new(spacing),
            channels: Mutex::new(Channels {
                by_key: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
            edits: Mutex::new(HashMap::new()),
            next_generation: Mutex::new(0),
            metrics: None,
        }
    }

    /// Counts messages given up on in `/metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A message that could not be delivered even after retries is never dropped silently:
    /// it is logged with its text and counted.
    fn gave_up(&self, to: &OutboundTarget, text: &str, error: &OutboundError) {
        if let Some(metrics) = &self.metrics {
            metrics.message_not_delivered(&to.platform.to_string());
        }
        let text: String = text.chars().take(LOGGED_TEXT_CHARS).collect();
        tracing::error!(platform = %to.platform, channel = %to.channel_id, %error, %text, "could not deliver a message");
    }

    fn channel(&self, key: &ChannelKey) -> Arc<Channel> {
        let mut channels = self.channels.lock().expect("throttle map poisoned");
        if channels.by_key.len() >= channels.prune_at && !channels.by_key.contains_key(key) {
            prune_idle(&mut channels.by_key);
            // If most are busy, scanning again for every new channel would cost more than
            // the memory it saves: wait until the map has doubled.
            channels.prune_at = PRUNE_AT.max(2 * channels.by_key.len());
        }
        channels
            .by_key
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Channel {
                    routine: tokio::sync::Mutex::new(()),
                    send: tokio::sync::Mutex::new(Instant::now()),
                    urgent_waiting: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    /// Waits until the channel is free and it is this message's turn.
    async fn turn(channel: &Channel, priority: Priority) -> tokio::sync::MutexGuard<'_, Instant> {
        let yields_to_urgent =
            || priority == Priority::Routine && channel.urgent_waiting.load(Ordering::SeqCst) > 0;
        loop {
            let next_free = channel.send.lock().await;
            if !yields_to_urgent() {
                tokio::time::sleep_until(*next_free).await;
                if !yields_to_urgent() {
                    return next_free;
                }
            }
            // An urgent message is queued on `send` (the lock is fair): let it go first.
            drop(next_free);
            tokio::task::yield_now().await;
        }
    }

    /// Waits for the channel's turn and runs `send`, unless `skip` says (before or after the
    /// wait) that it is no longer needed; books the channel's next slot; sends again after a
    /// `Retry-After`, a bounded number of times.
    async fn paced<T, F>(
        &self,
        to: &OutboundTarget,
        priority: Priority,
        skip: impl Fn() -> bool,
        send: impl Fn() -> F,
    ) -> Result<Option<T>, OutboundError>
    where
        F: std::future::Future<Output = Result<T, OutboundError>>,
    {
        let channel = self.channel(&(to.platform, to.channel_id.clone()));
        let (_routine, _urgent) = match priority {
            Priority::Routine => (Some(channel.routine.lock().await), None),
            Priority::Urgent => (None, Some(UrgentWaiting::new(&channel.urgent_waiting))),
        };
        let mut retries = 0;
        let mut unavailable = UNAVAILABLE_BACKOFF.iter();
        loop {
            if skip() {
                return Ok(None);
            }
            let mut next_free = Self::turn(&channel, priority).await;
            if skip() {
                return Ok(None);
            }
            let result = send().await;
            match result {
                // The platform said how long to back off: the whole channel honours it.
                Err(OutboundError::RetryAfter(wait)) => {
                    *next_free = Instant::now() + wait;
                    if retries == RETRIES_AFTER_429 || wait > LONGEST_WAIT_HELD {
                        return Err(OutboundError::RetryAfter(wait));
                    }
                    retries += 1;
                    tracing::info!(platform = %to.platform, channel = %to.channel_id, wait_ms = wait.as_millis() as u64, "platform rate limit: sending again after Retry-After");
                }
                // A blip on the platform's side: this channel backs off, then sends again.
                Err(OutboundError::Unavailable(why)) => {
                    let Some(wait) = unavailable.next() else {
                        *next_free = Instant::now() + (self.spacing)(to.platform);
                        return Err(OutboundError::Unavailable(why));
                    };
                    *next_free = Instant::now() + *wait;
                    tracing::warn!(platform = %to.platform, channel = %to.channel_id, error = %why, wait_ms = wait.as_millis() as u64, "platform unavailable: sending again");
                }
                other => {
                    *next_free = Instant::now() + (self.spacing)(to.platform);
                    return other.map(Some);
                }
            }
        }
    }
}

#[async_trait]
impl ChatOutbound for Throttled {
    async fn send(&self, to: &OutboundTarget, message: &OutboundMessage) -> Sent {
        let sent = self
            .paced(
                to,
                message.priority,
                || false,
                || self.inner.send(to, message),
            )
            .await
            .inspect_err(|e| self.gave_up(to, &message.text, e))?;
        Ok(sent.expect("posts are never skipped"))
    }

    async fn edit(&self, to: &OutboundTarget, id: &str, message: &OutboundMessage) -> Sent<()> {
        let key = ((to.platform, to.channel_id.clone()), id.to_owned());
        let generation = {
            let mut next = self.next_generation.lock().expect("generation poisoned");
            *next += 1;
            *next
        };
        self.edits
            .lock()
            .expect("edit map poisoned")
            .insert(key.clone(), generation);
        // A newer text for this message queued behind us is the only one worth sending.
        let overtaken = || {
            self.edits
                .lock()
                .expect("edit map poisoned")
                .get(&key)
                .is_some_and(|g| *g > generation)
        };
        let result = self
            .paced(to, message.priority, overtaken, || {
                self.inner.edit(to, id, message)
            })
            .await;
        {
            let mut edits = self.edits.lock().expect("edit map poisoned");
            if edits.get(&key) == Some(&generation) {
                edits.remove(&key);
            }
        }
        result
            .inspect_err(|e| self.gave_up(to, &message.text, e))
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, Instant)>>);

    #[async_trait]
    impl ChatOutbound for Recorder {
        async fn send(&self, to: &OutboundTarget, message: &OutboundMessage) -> Sent {
            self.record(to, message);
            Ok("m".into())
        }

        async fn edit(&self, to: &OutboundTarget, _: &str, message: &OutboundMessage) -> Sent<()> {
            self.record(to, message);
            Ok(())
        }
    }

    impl Recorder {
        fn record(&self, to: &OutboundTarget, message: &OutboundMessage) {
            let entry = (to.channel_id.clone(), message.text.clone(), Instant::now());
            self.0.lock().unwrap().push(entry);
        }

        /// The texts delivered, in order.
        fn texts(&self) -> Vec<String> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|(_, t, _)| t.clone())
                .collect()
        }
    }

    /// Waits for every spawned send or edit to finish.
    async fn all_done<T>(tasks: Vec<tokio::task::JoinHandle<T>>) {
        for task in tasks {
            task.await.unwrap();
        }
    }

    fn slack(channel: &str) -> OutboundTarget {
        OutboundTarget {
            platform: Platform::Slack,
            channel_id: channel.into(),
            thread: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_channel_is_paced_others_are_not() {
        let rec = Arc::new(Recorder::default());
        let t = Arc::new(Throttled::new(rec.clone(), default_spacing));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (ch, text) in [("A", "a1"), ("A", "a2"), ("B", "b1"), ("A", "a3")] {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                t.send(&slack(ch), &OutboundMessage::text(text))
                    .await
                    .unwrap()
            }));
            tokio::task::yield_now().await;
        }
        all_done(tasks).await;
        let log = rec.0.lock().unwrap().clone();
        let at = |text: &str| log.iter().find(|(_, t, _)| t == text).unwrap().2 - start;
        assert_eq!(at("a1"), Duration::ZERO);
        assert_eq!(at("a2"), Duration::from_secs(1));
        assert_eq!(at("a3"), Duration::from_secs(2));
        assert_eq!(at("b1"), Duration::ZERO, "another channel is not held up");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_channels_are_forgotten_but_pacing_holds() {
        let rec = Arc::new(Recorder::default());
        let t = Throttled::new(rec.clone(), default_spacing);
        let tracked = || t.channels.lock().unwrap().by_key.len();
        for i in 0..PRUNE_AT {
            t.send(&slack(&format!("C{i}")), &OutboundMessage::text("hi"))
                .await
                .unwrap();
        }
        assert_eq!(tracked(), PRUNE_AT);
        tokio::time::advance(Duration::from_secs(2)).await;
        let start = Instant::now();
        t.send(&slack("busy"), &OutboundMessage::text("1"))
            .await
            .unwrap();
        assert_eq!(
            tracked(),
            1,
            "channels idle past their spacing are forgotten"
        );

        for i in 1..PRUNE_AT {
            t.send(&slack(&format!("D{i}")), &OutboundMessage::text("hi"))
                .await
                .unwrap();
        }
        t.send(&slack("another"), &OutboundMessage::text("hi"))
            .await
            .unwrap();
        assert_eq!(
            tracked(),
            PRUNE_AT + 1,
            "channels still inside their spacing are kept"
        );
        t.send(&slack("busy"), &OutboundMessage::text("2"))
            .await
            .unwrap();
        let sent_at = rec.0.lock().unwrap().last().unwrap().2;
        assert_eq!(sent_at - start, Duration::from_secs(1), "still paced");
    }

    #[tokio::test(start_paused = true)]
    async fn queued_edits_of_one_message_collapse_to_the_latest() {
        let rec = Arc::new(Recorder::default());
        let t = Arc::new(Throttled::new(rec.clone(), default_spacing));
        t.send(&slack("A"), &OutboundMessage::text("first"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for text in ["edit 1", "edit 2", "edit 3"] {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                t.edit(&slack("A"), "m", &OutboundMessage::text(text))
                    .await
                    .unwrap()
            }));
            tokio::task::yield_now().await;
        }
        all_done(tasks).await;
        assert_eq!(rec.texts(), vec!["first", "edit 3"]);
        assert!(t.edits.lock().unwrap().is_empty(), "nothing left behind");
    }

    /// Answers `Retry-After: 30s` (or `fail`, when set) to the first `limited` sends, then
    /// records like `Recorder`.
    struct Limited {
        limited: Mutex<usize>,
        rec: Recorder,
        fail: Option<fn() -> OutboundError>,
    }

    impl Limited {
        fn new(limited: usize) -> Self {
            Self {
                limited: Mutex::new(limited),
                rec: Recorder::default(),
                fail: None,
            }
        }

        fn unavailable(limited: usize) -> Self {
            Self {
                fail: Some(|| OutboundError::Unavailable("HTTP 503".into())),
                ..Self::new(limited)
            }
        }
    }

    #[async_trait]
    impl ChatOutbound for Limited {
        async fn send(&self, to: &OutboundTarget, message: &OutboundMessage) -> Sent {
            {
                let mut left = self.limited.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    return Err(self
                        .fail
                        .map_or(OutboundError::RetryAfter(Duration::from_secs(30)), |fail| {
                            fail()
                        }));
                }
            }
            self.rec.send(to, message).await
        }
        async fn edit(&self, _: &OutboundTarget, _: &str, _: &OutboundMessage) -> Sent<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_the_channel_and_the_message_is_sent_again() {
        let limited = Arc::new(Limited::new(1));
        let t = Arc::new(Throttled::new(limited.clone(), default_spacing));
        let start = Instant::now();
        let first = tokio::spawn({
            let t = t.clone();
            async move { t.send(&slack("A"), &OutboundMessage::text("x")).await }
        });
        tokio::task::yield_now().await;
        let second = tokio::spawn({
            let t = t.clone();
            async move { t.send(&slack("A"), &OutboundMessage::text("y")).await }
        });
        first.await.unwrap().expect("delivered after the wait");
        second.await.unwrap().expect("delivered after the first");
        let log = limited.rec.0.lock().unwrap().clone();
        let sent: Vec<_> = log
            .iter()
            .map(|(_, t, at)| (t.as_str(), *at - start))
            .collect();
        assert_eq!(
            sent,
            vec![
                ("x", Duration::from_secs(30)),
                ("y", Duration::from_secs(31))
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_that_stays_rate_limited_is_returned_as_an_error_not_dropped() {
        let limited = Arc::new(Limited::new(usize::MAX));
        let t = Throttled::new(limited, default_spacing);
        let metrics = Arc::new(Metrics::new());
        let t = t.with_metrics(metrics.clone());
        let err = t
            .send(&slack("A"), &OutboundMessage::text("x"))
            .await
            .unwrap_err();
        assert!(matches!(err, OutboundError::RetryAfter(_)));
        assert!(
            metrics
                .encode()
                .contains("opsbot_messages_not_delivered_total{platform=\"slack\"} 1"),
            "{}",
            metrics.encode()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_platform_is_tried_again_with_growing_waits() {
        let flaky = Arc::new(Limited::unavailable(2));
        let t = Throttled::new(flaky.clone(), default_spacing);
        let start = Instant::now();
        t.send(&slack("A"), &OutboundMessage::text("x"))
            .await
            .unwrap();
        let log = flaky.rec.0.lock().unwrap().clone();
        assert_eq!(log.len(), 1, "sent once it worked");
        assert_eq!(log[0].2 - start, Duration::from_secs(1 + 2));

        let down = Arc::new(Limited::unavailable(usize::MAX));
        let metrics = Arc::new(Metrics::new());
        let t = Throttled::new(down, default_spacing).with_metrics(metrics.clone());
        let start = Instant::now();
        let err = t
            .send(&slack("A"), &OutboundMessage::text("x"))
            .await
            .unwrap_err();
        assert!(matches!(err, OutboundError::Unavailable(_)));
        assert_eq!(Instant::now() - start, Duration::from_secs(1 + 2 + 4));
        assert!(
            metrics
                .encode()
                .contains("opsbot_messages_not_delivered_total{platform=\"slack\"} 1"),
            "given up on: logged and counted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn urgent_messages_overtake_routine_ones_waiting_for_the_channel() {
        let rec = Arc::new(Recorder::default());
        let t = Arc::new(Throttled::new(rec.clone(), default_spacing));
        let mut tasks = Vec::new();
        for (text, urgent) in [("r1", false), ("r2", false), ("r3", false), ("P1", true)] {
            let t = t.clone();
            let mut message = OutboundMessage::text(text);
            if urgent {
                message = message.urgent();
            }
            tasks.push(tokio::spawn(async move {
                t.send(&slack("A"), &message).await.unwrap()
            }));
            tokio::task::yield_now().await;
        }
        all_done(tasks).await;
        let order = rec.texts();
        // r1 left at once; r2 was already waiting for its slot when P1 arrived.
        assert_eq!(order[0], "r1");
        assert!(
            order.iter().position(|t| t == "P1") < order.iter().position(|t| t == "r3"),
            "{order:?}"
        );
        assert_eq!(order.len(), 4, "nothing lost: {order:?}");
    }
}
