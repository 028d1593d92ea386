//! Telegram with several `opsbot serve` replicas on one Postgres schema, against the fake Bot
//! API: one replica polls (no 409s), another takes over when it dies or stops, a decided
//! notice is posted once, and in webhook mode one replica registers the webhook while any
//! replica answers updates.

mod support;
#[path = "support/telegram.rs"]
mod telegram_fake;

use std::sync::Arc;
use std::time::Duration;

use telegram_fake::*;

/// Two `opsbot serve` replicas on one fresh Postgres schema polling one fake bot, once one
/// of them (the leader) polls.
struct Replicas {
    fake: Arc<Fake>,
    leader: support::Serve,
    /// The other replica, and the name the fake knows its calls by.
    follower: (&'static str, support::Serve),
    schema: String,
    _dir: tempfile::TempDir,
}

impl Replicas {
    /// `None` (after saying why) without Postgres, outside CI.
    async fn start(lease_secs: u64) -> Option<Replicas> {
        let polling = |f: &Fake| {
            let pollers = f.pollers.lock().unwrap();
            (pollers.len() >= 3).then(|| pollers[0])
        };
        let replicas = Self::start_as(lease_secs, "", polling).await?;
        let pollers: std::collections::BTreeSet<_> =
            (replicas.fake.pollers.lock().unwrap().iter().copied()).collect();
        assert_eq!(pollers.len(), 1, "only the leader polls: {pollers:?}");
        Some(replicas)
    }

    /// Replicas with `telegram` lines `extra`, once `leader` names the replica leading.
    async fn start_as(
        lease_secs: u64,
        extra: &str,
        leader: impl FnMut(&Fake) -> Option<&'static str>,
    ) -> Option<Replicas> {
        let schema = support::fresh_postgres_schema().await?;
        let fake = Arc::new(Fake::default());
        let dir = tempfile::tempdir().unwrap();
        let mut replicas = Vec::new();
        for name in ["a", "b"] {
            let base = fake_telegram_for(&fake, name).await;
            let config = replica_config(dir.path(), name, &base, &schema, lease_secs, extra);
            replicas.push((name, support::Serve::start(&config, support::WAIT)));
        }
        let leader = fake.wait_until("the leader at work", leader).await;
        let i = replicas
            .iter()
            .position(|(name, _)| *name == leader)
            .unwrap();
        let (_, leader) = replicas.remove(i);
        let follower = replicas.pop().unwrap();
        Some(Replicas {
            fake,
            leader,
            follower,
            schema,
            _dir: dir,
        })
    }

    /// Waits for `replica` to have pinged the heartbeat `n` times; how many times the other
    /// replica has by then.
    async fn heartbeats(&self, replica: &'static str, n: usize) -> usize {
        self.fake
            .wait_until("heartbeat pings", |f| {
                let pings = f.heartbeats.lock().unwrap();
                let mine = pings.iter().filter(|p| **p == replica).count();
                (mine >= n).then_some(pings.len() - mine)
            })
            .await
    }

    /// Waits for the follower to poll; how long that took from `since`.
    async fn follower_polls(&self, since: std::time::Instant) -> Duration {
        let name = self.follower.0;
        self.fake
            .wait_until("the other replica polling", |f| {
                f.pollers.lock().unwrap().contains(&name).then_some(())
            })
            .await;
        since.elapsed()
    }

    async fn cleanup(self) {
        drop((self.leader, self.follower));
        support::drop_postgres_schema(&self.schema).await;
    }
}

/// Two `opsbot serve` replicas on one Postgres schema polling one bot: one replica polls
/// (Telegram would end the other's polls with 409s) and pings the heartbeat; after a kill -9
/// of that leader the other takes over both within the lease time, and a command sent then
/// is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_polls_and_another_takes_over_when_it_is_killed() {
    let Some(mut replicas) = Replicas::start(2).await else {
        return;
    };
    let (fake, follower) = (replicas.fake.clone(), &replicas.follower.1);
    assert!(replicas.leader.readyz().await.contains(" leader (epoch 1)"));
    let leader = fake.pollers.lock().unwrap()[0];
    assert_eq!(
        replicas.heartbeats(leader, 3).await,
        0,
        "the leader pings alone"
    );
    let standby = follower.readyz().await;
    assert!(
        standby.starts_with("ready\n")
            && standby.contains(" follower\n")
            && standby.contains("adapter telegram: standby"),
        "{standby}"
    );

    replicas.leader.kill();
    let took = replicas.follower_polls(std::time::Instant::now()).await;
    assert!(
        took < Duration::from_secs(6),
        "taken over after {took:?} (lease 2 s)"
    );
    let follower = &replicas.follower.1;
    let ready = follower.readyz().await;
    assert!(
        ready.contains(" leader (epoch 2)\nleading for: "),
        "{ready}"
    );
    replicas.heartbeats(replicas.follower.0, 1).await;
    let metrics = reqwest::get(follower.url("/metrics")).await.unwrap();
    assert!(metrics.text().await.unwrap().contains("opsbot_leader 1\n"));

    fake.push(command(1, ALICE, "/whoami"));
    fake.wait_for_text("the answer after failover", "You are alice")
        .await;
    // Polled twice more since: the update was confirmed, and nobody answered it again.
    let polls = fake.pollers.lock().unwrap().len();
    fake.wait_until("two more polls", |f| {
        (f.pollers.lock().unwrap().len() >= polls + 2).then_some(())
    })
    .await;
    let answers = fake.sent_texts();
    assert_eq!(answers.len(), 1, "answered once: {answers:?}");
    let conflicts = fake.conflicts.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(conflicts, 0, "no poll was ended by another");
    replicas.cleanup().await;
}

/// A notice queued (decided) while the leader could not post it (frozen, then killed with
/// -9) is posted once, by the replica that takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_decided_before_the_leader_is_killed_is_posted_once_by_the_next() {
    use opsbot::ports::{OutboundMessage, OutboundTarget, OutboxStore, Queued};
    let Some(mut replicas) = Replicas::start(2).await else {
        return;
    };
    let url = support::postgres_url();
    let store = opsbot::store::PostgresStore::connect(&url, 2, Some(&replicas.schema))
        .await
        .expect("connect to the replicas' schema");
    replicas.leader.freeze();
    let notice = Queued {
        to: OutboundTarget {
            platform: opsbot::domain::Platform::Telegram,
            channel_id: CHAT.to_string(),
            thread: None,
        },
        message: OutboundMessage::text("decided before the kill"),
        edit_of: None,
        binds_run: None,
    };
    store.enqueue(&notice, chrono::Utc::now()).await.unwrap();
    replicas.leader.kill();
    let fake = replicas.fake.clone();
    fake.wait_for_text("the notice, from the new leader", "decided before the kill")
        .await;
    support::eventually(
        "the post recorded as delivered",
        support::WAIT,
        async || store.outbox_depth().await.unwrap().pending == 0,
    )
    .await;
    let ready = replicas.follower.1.readyz().await;
    assert!(
        ready.contains(" leader (epoch 2)") && ready.contains("outbox: 0 pending"),
        "{ready}"
    );
    let posts = fake.sent_texts();
    assert_eq!(posts, ["decided before the kill"], "posted once");
    store.pool().close().await;
    replicas.cleanup().await;
}

/// A leader stopped with SIGTERM releases its lease: another replica polls within a third
/// of the lease (its next attempt), not after the whole lease has lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_gracefully_hands_over_before_its_lease_lapses() {
    let Some(replicas) = Replicas::start(12).await else {
        return;
    };
    replicas.leader.terminate();
    let took = replicas.follower_polls(std::time::Instant::now()).await;
    assert!(
        took < Duration::from_secs(8),
        "taken over after {took:?} (lease 12 s)"
    );
    let ready = replicas.follower.1.readyz().await;
    assert!(ready.contains(" leader (epoch 2)"), "{ready}");
    replicas.cleanup().await;
}

/// A replica `name`'s config in its own folder under `dir`: Telegram polling and the
/// heartbeat at `base`, the store in Postgres `schema`, a `lease_secs` leader lease.
fn replica_config(
    dir: &std::path::Path,
    name: &str,
    base: &str,
    schema: &str,
    lease_secs: u64,
    telegram: &str,
) -> std::path::PathBuf {
    let rest = format!(
        "[cluster]\nlease_secs = {lease_secs}\n\
         [health]\nheartbeat_url = \"{base}/heartbeat\"\nheartbeat_every = \"200ms\"\n{}",
        config(base, telegram)
    );
    support::replica_config(dir, name, &support::postgres_schema_url(schema), &rest)
}

/// Two replicas in webhook mode: the leader alone registers the webhook (each new leader
/// again, after a failover), while updates posted to either replica are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_webhook_mode_the_leader_registers_the_webhook_and_any_replica_answers() {
    let registered = |f: &Fake| f.webhook_setters.lock().unwrap().first().copied();
    let Some(mut replicas) = Replicas::start_as(2, &webhook_mode(), registered).await else {
        return;
    };
    let fake = replicas.fake.clone();
    let serves = [&replicas.leader, &replicas.follower.1];
    for (i, serve) in serves.iter().enumerate() {
        let update = command(i as i64 + 1, ALICE, "/whoami");
        let answered = support::eventually("the webhook taken", support::WAIT, async || {
            let status = reqwest::Client::new()
                .post(serve.url("/telegram/webhook"))
                .header("x-telegram-bot-api-secret-token", WEBHOOK_SECRET)
                .json(&update)
                .send()
                .await
                .map(|r| r.status().as_u16());
            support::satisfies(status, |s| matches!(s, Ok(200)))
        });
        answered.await.unwrap();
    }
    fake.wait_until("both answered", |f| {
        let answers = f.sent_texts().into_iter();
        (answers.filter(|t| t.contains("You are alice")).count() == 2).then_some(())
    })
    .await;
    let standby = replicas.follower.1.readyz().await;
    assert!(
        standby.contains("adapter telegram: up")
            && standby.contains("adapter telegram webhook: standby"),
        "{standby}"
    );
    let setters = fake.webhook_setters.lock().unwrap().clone();
    assert_eq!(setters.len(), 1, "one registration: {setters:?}");

    replicas.leader.kill();
    let follower = replicas.follower.0;
    fake.wait_until("the new leader registering", |f| {
        let setters = f.webhook_setters.lock().unwrap();
        (setters.get(1) == Some(&follower)).then_some(())
    })
    .await;
    replicas.cleanup().await;
}
