//! Outbound pacing per platform and channel (teloxide's `Throttle` idea, as a wrapper around
//! any `ChatOutbound`): messages to one channel leave at most once per platform interval, in
//! arrival order, while other channels proceed in parallel; an edit that is overtaken by a
//! newer edit of the same message while waiting is dropped, so only the latest text is sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::domain::Platform;
use crate::ports::{ChatOutbound, OutboundError, OutboundTarget};

/// The minimum spacing between two messages in one channel, per platform's published limits
/// (Slack about 1/s per channel, Discord 5 per 5 s, Telegram about 20/min in a group).
pub fn default_spacing(platform: Platform) -> Duration {
    match platform {
        Platform::Console => Duration::ZERO,
        Platform::Slack | Platform::Discord => Duration::from_secs(1),
        Platform::Telegram => Duration::from_secs(3),
    }
}

type ChannelKey = (Platform, String);

pub struct Throttled {
    inner: Arc<dyn ChatOutbound>,
    spacing: fn(Platform) -> Duration,
    /// One FIFO lock per channel; holding it is the right to send next.
    channels: Mutex<HashMap<ChannelKey, Arc<tokio::sync::Mutex<Instant>>>>,
    /// Latest edit generation per message, so older queued edits can step aside.
    edits: Mutex<HashMap<(ChannelKey, String), u64>>,
    next_generation: Mutex<u64>,
}

impl Throttled {
    pub fn new(inner: Arc<dyn ChatOutbound>, spacing: fn(Platform) -> Duration) -> Self {
        Self {
            inner,
            spacing,
            channels: Mutex::new(HashMap::new()),
            edits: Mutex::new(HashMap::new()),
            next_generation: Mutex::new(0),
        }
    }

    fn slot(&self, key: &ChannelKey) -> Arc<tokio::sync::Mutex<Instant>> {
        self.channels
            .lock()
            .expect("throttle map poisoned")
            .entry(key.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Instant::now())))
            .clone()
    }

    /// Waits for the channel's turn and runs `send`, unless `skip` says (before or after the
    /// wait) that it is no longer needed; then books the channel's next slot.
    async fn paced<T, F>(
        &self,
        to: &OutboundTarget,
        skip: impl Fn() -> bool,
        send: impl FnOnce() -> F,
    ) -> Result<Option<T>, OutboundError>
    where
        F: std::future::Future<Output = Result<T, OutboundError>>,
    {
        let slot = self.slot(&(to.platform, to.channel_id.clone()));
        let mut next_free = slot.lock().await;
        if skip() {
            return Ok(None);
        }
        tokio::time::sleep_until(*next_free).await;
        if skip() {
            return Ok(None);
        }
        let result = send().await;
        let wait = match &result {
            // The platform said how long to back off: the whole channel honours it.
            Err(OutboundError::RetryAfter(d)) => *d,
            _ => (self.spacing)(to.platform),
        };
        *next_free = Instant::now() + wait;
        result.map(Some)
    }
}

#[async_trait]
impl ChatOutbound for Throttled {
    async fn post(&self, to: &OutboundTarget, text: &str) -> Result<String, OutboundError> {
        let sent = self
            .paced(to, || false, || self.inner.post(to, text))
            .await?;
        Ok(sent.expect("posts are never skipped"))
    }

    async fn edit(
        &self,
        to: &OutboundTarget,
        message_id: &str,
        text: &str,
    ) -> Result<(), OutboundError> {
        let key = ((to.platform, to.channel_id.clone()), message_id.to_owned());
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
            .paced(to, overtaken, || self.inner.edit(to, message_id, text))
            .await;
        // The last edit of a message forgets it, so the map holds only messages in flight.
        let mut edits = self.edits.lock().expect("edit map poisoned");
        if edits.get(&key) == Some(&generation) {
            edits.remove(&key);
        }
        result.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, Instant)>>);

    #[async_trait]
    impl ChatOutbound for Recorder {
        async fn post(&self, to: &OutboundTarget, text: &str) -> Result<String, OutboundError> {
            self.0
                .lock()
                .unwrap()
                .push((to.channel_id.clone(), text.to_owned(), Instant::now()));
            Ok("m".into())
        }

        async fn edit(
            &self,
            to: &OutboundTarget,
            _: &str,
            text: &str,
        ) -> Result<(), OutboundError> {
            self.0
                .lock()
                .unwrap()
                .push((to.channel_id.clone(), text.to_owned(), Instant::now()));
            Ok(())
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
                t.post(&slack(ch), text).await.unwrap()
            }));
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        let log = rec.0.lock().unwrap().clone();
        let at = |text: &str| log.iter().find(|(_, t, _)| t == text).unwrap().2 - start;
        assert_eq!(at("a1"), Duration::ZERO);
        assert_eq!(at("a2"), Duration::from_secs(1));
        assert_eq!(at("a3"), Duration::from_secs(2));
        assert_eq!(at("b1"), Duration::ZERO, "another channel is not held up");
    }

    #[tokio::test(start_paused = true)]
    async fn queued_edits_of_one_message_collapse_to_the_latest() {
        let rec = Arc::new(Recorder::default());
        let t = Arc::new(Throttled::new(rec.clone(), default_spacing));
        t.post(&slack("A"), "first").await.unwrap();
        let mut tasks = Vec::new();
        for text in ["edit 1", "edit 2", "edit 3"] {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                t.edit(&slack("A"), "m", text).await.unwrap()
            }));
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        let texts: Vec<String> = rec
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t, _)| t.clone())
            .collect();
        assert_eq!(texts, vec!["first", "edit 3"]);
        assert!(t.edits.lock().unwrap().is_empty(), "nothing left behind");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_the_channel_back() {
        struct Limited;
        #[async_trait]
        impl ChatOutbound for Limited {
            async fn post(&self, _: &OutboundTarget, _: &str) -> Result<String, OutboundError> {
                Err(OutboundError::RetryAfter(Duration::from_secs(30)))
            }
            async fn edit(
                &self,
                _: &OutboundTarget,
                _: &str,
                _: &str,
            ) -> Result<(), OutboundError> {
                Ok(())
            }
        }
        let t = Throttled::new(Arc::new(Limited), default_spacing);
        let start = Instant::now();
        assert!(t.post(&slack("A"), "x").await.is_err());
        assert!(t.post(&slack("A"), "y").await.is_err());
        assert_eq!(Instant::now() - start, Duration::from_secs(30));
    }
}
