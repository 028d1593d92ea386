//! The audit store through its real interface, one suite run against both backends:
//! SQLite on a temp file, and Postgres on a fresh schema per test (skipped with a reason
//! when Postgres is unreachable, a failure with `CI=true`).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use opsbot::domain::Platform;
use opsbot::domain::{
    AuditEntry, AuditRecord, ChainBreak, ChainBreakKind, ChainVerifier, Outcome, RequestId,
};
use opsbot::ports::{Clock, Epoch, FakeClock, Store};
use opsbot::store::{PostgresStore, SqliteStore};

use support::{Backend, on_both_backends};

on_both_backends! {
    write_probe_answers => sqlite_write_probe_answers, postgres_write_probe_answers;
    appends_read_back_equal => sqlite_appends_read_back_equal, postgres_appends_read_back_equal;
    concurrent_appends_form_one_chain => sqlite_concurrent_appends_form_one_chain, postgres_concurrent_appends_form_one_chain;
    altered_record_is_detected => sqlite_altered_record_is_detected, postgres_altered_record_is_detected;
    deleted_record_is_detected => sqlite_deleted_record_is_detected, postgres_deleted_record_is_detected;
    database_refuses_update_and_delete => sqlite_database_refuses_update_and_delete, postgres_database_refuses_update_and_delete;
    control_characters_do_not_fail_append => sqlite_control_characters_do_not_fail_append, postgres_control_characters_do_not_fail_append;
    old_event_ids_are_forgotten => sqlite_old_event_ids_are_forgotten, postgres_old_event_ids_are_forgotten;
    old_resolved_alerts_and_their_groups_are_forgotten => sqlite_old_resolved_alerts_and_their_groups_are_forgotten, postgres_old_resolved_alerts_and_their_groups_are_forgotten;
    empty_alert_ingest_is_a_no_op => sqlite_empty_alert_ingest_is_a_no_op, postgres_empty_alert_ingest_is_a_no_op;
    firing_alerts_are_counted_by_severity => sqlite_firing_alerts_are_counted_by_severity, postgres_firing_alerts_are_counted_by_severity;
    an_alert_is_stored_as_delivered_episode_by_episode => sqlite_an_alert_is_stored_as_delivered_episode_by_episode, postgres_an_alert_is_stored_as_delivered_episode_by_episode;
    a_refused_delivery_fails_alone => sqlite_a_refused_delivery_fails_alone, postgres_a_refused_delivery_fails_alone;
    a_lease_has_one_holder_and_each_new_one_a_larger_epoch => sqlite_a_lease_has_one_holder_and_each_new_one_a_larger_epoch, postgres_a_lease_has_one_holder_and_each_new_one_a_larger_epoch;
    holders_racing_for_a_free_lease_get_one_epoch => sqlite_holders_racing_for_a_free_lease_get_one_epoch, postgres_holders_racing_for_a_free_lease_get_one_epoch;
}

const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// `holder` asks for the `leader` lease at `clock`'s time.
async fn lease(store: &dyn Store, holder: &str, clock: &FakeClock) -> Option<Epoch> {
    store
        .acquire_or_renew("leader", holder, LEASE_TTL, clock.now())
        .await
        .expect("lease statement")
}

async fn a_lease_has_one_holder_and_each_new_one_a_larger_epoch(b: &Backend) {
    let store = b.store();
    let store = &*store;
    let clock = FakeClock::new(Utc::now());
    assert_eq!(
        lease(store, "a", &clock).await,
        Some(Epoch(1)),
        "a free lease"
    );
    assert_eq!(lease(store, "b", &clock).await, None, "held by a");
    clock.advance(LEASE_TTL / 2);
    assert_eq!(
        lease(store, "a", &clock).await,
        Some(Epoch(1)),
        "renewing keeps the epoch"
    );
    // The renewal counts from its own time: b is still refused after the first term's end.
    clock.advance(LEASE_TTL * 3 / 4);
    assert_eq!(lease(store, "b", &clock).await, None, "renewed by a");
    clock.advance(LEASE_TTL);
    assert_eq!(
        lease(store, "b", &clock).await,
        Some(Epoch(2)),
        "expired: b takes over"
    );
    assert_eq!(lease(store, "a", &clock).await, None, "a lost it");
    assert!(
        !store.release("leader", "a", Epoch(1)).await.unwrap(),
        "a stale holder cannot release its successor's lease"
    );
    assert!(
        !store.release("leader", "b", Epoch(1)).await.unwrap(),
        "wrong epoch"
    );
    assert_eq!(lease(store, "a", &clock).await, None, "still b's");
    assert!(store.release("leader", "b", Epoch(2)).await.unwrap());
    assert_eq!(
        lease(store, "a", &clock).await,
        Some(Epoch(3)),
        "released: taken at once, with the next epoch"
    );
    clock.advance(LEASE_TTL * 2);
    assert_eq!(
        lease(store, "a", &clock).await,
        Some(Epoch(4)),
        "a lapsed lease is a new term even for its last holder"
    );
    assert_eq!(
        store
            .acquire_or_renew("other", "b", LEASE_TTL, clock.now())
            .await
            .unwrap(),
        Some(Epoch(1)),
        "each lease name is its own"
    );
}

async fn holders_racing_for_a_free_lease_get_one_epoch(b: &Backend) {
    let store = b.store();
    let clock = Arc::new(FakeClock::new(Utc::now()));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (store, clock) = (store.clone(), clock.clone());
        tasks.spawn(async move { (i, lease(&*store, &format!("r{i}"), &clock).await) });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let (i, Some(epoch)) = joined.expect("lease task") {
            winners.push((i, epoch));
        }
    }
    assert_eq!(winners.len(), 1, "one holder at a time: {winners:?}");
    assert_eq!(winners[0].1, Epoch(1));
}

fn firing(fingerprint: &str, labels: &[(&str, &str)]) -> opsbot::domain::IncomingAlert {
    opsbot::domain::IncomingAlert {
        source: opsbot::domain::AlertSource::Webhook,
        fingerprint: fingerprint.into(),
        group_key: "g".into(),
        status: opsbot::domain::AlertStatus::Firing,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        annotations: Default::default(),
        starts_at: Utc::now(),
        ends_at: None,
        generator_url: None,
    }
}

/// Deliveries that arrive together are stored together (one write), yet each is atomic and
/// answered on its own: one the database refuses fails only its sender, and an alert in
/// several deliveries is stored once.
async fn a_refused_delivery_fails_alone(b: &Backend) {
    let refuse = match b {
        Backend::Sqlite { .. } => vec![
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON alerts WHEN NEW.fingerprint = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        ],
        Backend::Postgres { .. } => vec![
            "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
             IF NEW.fingerprint = 'poison' THEN RAISE EXCEPTION 'refused'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON alerts \
             FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
        ],
    };
    for sql in refuse {
        b.exec(sql).await.unwrap();
    }
    let store = b.store();
    let deliveries: Vec<_> = (0..20)
        .map(|d| {
            let store = store.clone();
            let n = d.to_string();
            let mut alerts: Vec<_> = (0..5).map(|a| firing(&format!("d{d}-a{a}"), &[])).collect();
            alerts.push(firing("shared", &[("n", &n)]));
            if d == 7 {
                alerts.push(firing("poison", &[]));
            }
            tokio::spawn(async move { store.ingest_alerts(&alerts, Utc::now()).await })
        })
        .collect();
    for (d, delivery) in deliveries.into_iter().enumerate() {
        let stored = delivery.await.unwrap();
        assert_eq!(stored.is_err(), d == 7, "delivery {d}: {stored:?}");
    }
    let alerts = store.active_alerts(1000).await.unwrap();
    let fingerprints: std::collections::BTreeSet<&str> = alerts
        .iter()
        .map(|a| a.incoming.fingerprint.as_str())
        .collect();
    assert_eq!(alerts.len(), 19 * 5 + 1, "{fingerprints:?}");
    assert!(fingerprints.contains("shared"));
    assert!(
        !fingerprints
            .iter()
            .any(|f| f.starts_with("d7-") || *f == "poison")
    );
}

/// Every field of a delivered alert reads back as delivered; a resolved alert keeps its first
/// resolution time when resolved again and loses its acknowledgement when it fires again
/// (a new episode); each delivery marks each of its groups changed once, a delivery larger
/// than one statement's worth (SQLite: 1,000 alerts) too.
async fn an_alert_is_stored_as_delivered_episode_by_episode(b: &Backend) {
    use opsbot::domain::AlertStatus;
    let store = b.store();
    let at = |s: i64| chrono::DateTime::from_timestamp_micros(1_790_000_000_000_000 + s).unwrap();
    let mut a = firing("a", &[("severity", "critical"), ("quote", "it's \"x\"")]);
    a.group_key = "g1".into();
    a.annotations = [("summary".to_owned(), "disk {full}".to_owned())].into();
    a.starts_at = at(-5);
    a.generator_url = Some("http://prom/graph?g0.expr=up".into());
    let mut other = firing("b", &[]);
    other.group_key = "g2".into();
    store
        .ingest_alerts(&[a.clone(), other], at(1))
        .await
        .unwrap();
    let read = |group: &'static str| {
        let store = store.clone();
        async move { store.alerts_in_group(group).await.unwrap().remove(0) }
    };
    let first = read("g1").await;
    assert_eq!(first.incoming, a);
    assert_eq!((first.first_seen, first.last_seen), (at(1), at(1)));
    assert_eq!((first.resolved_at, &first.acked_by), (None, &None));
    assert!(store.ack_alert(first.id, "alice", at(2)).await.unwrap());

    let mut resolved = a.clone();
    resolved.status = AlertStatus::Resolved;
    resolved.ends_at = Some(at(3));
    store
        .ingest_alerts(&[resolved.clone()], at(3))
        .await
        .unwrap();
    store
        .ingest_alerts(&[resolved.clone()], at(4))
        .await
        .unwrap();
    let again = read("g1").await;
    assert_eq!(again.incoming, resolved);
    assert_eq!((again.resolved_at, again.last_seen), (Some(at(3)), at(4)));
    assert_eq!(
        again.acked_by.as_deref(),
        Some("alice"),
        "resolving keeps the ack"
    );

    store.ingest_alerts(&[a.clone()], at(5)).await.unwrap();
    let refired = read("g1").await;
    assert_eq!(refired.id, first.id);
    assert_eq!(refired.incoming, a);
    assert_eq!((refired.first_seen, refired.last_seen), (at(1), at(5)));
    assert_eq!(
        (refired.resolved_at, refired.acked_by, refired.acked_at),
        (None, None, None)
    );

    let many: Vec<_> = (0..1500)
        .map(|i| {
            let mut alert = firing(&format!("many-{i:04}"), &[]);
            alert.group_key = if i % 2 == 0 { "g1" } else { "g3" }.into();
            alert
        })
        .collect();
    store.ingest_alerts(&many, at(6)).await.unwrap();
    assert_eq!(store.alerts_in_group("g3").await.unwrap().len(), 750);
    let versions = store.pending_groups(10).await.unwrap();
    let versions: Vec<(&str, i64)> = versions.iter().map(|(g, v)| (g.as_str(), *v)).collect();
    assert_eq!(versions, [("g1", 5), ("g2", 1), ("g3", 1)]);
}

/// Firing alerts in all and by severity, in one query: 3 critical, 2 warning, 1 without a
/// severity, 1 with a 100-character one; resolved alerts are not counted.
async fn firing_alerts_are_counted_by_severity(b: &Backend) {
    use opsbot::domain::{AlertSource, AlertStatus, IncomingAlert};
    let long = "s".repeat(100);
    let severities = [
        Some("critical"),
        Some("critical"),
        Some("critical"),
        Some("warning"),
        Some("warning"),
        None,
        Some(long.as_str()),
    ];
    let mut alerts: Vec<IncomingAlert> = severities
        .iter()
        .enumerate()
        .map(|(i, severity)| IncomingAlert {
            source: AlertSource::Webhook,
            fingerprint: format!("f{i}"),
            group_key: "g".into(),
            status: AlertStatus::Firing,
            labels: severity
                .map(|s| ("severity".to_owned(), s.to_owned()))
                .into_iter()
                .collect(),
            annotations: Default::default(),
            starts_at: Utc::now(),
            ends_at: None,
            generator_url: None,
        })
        .collect();
    let mut resolved = alerts[0].clone();
    resolved.fingerprint = "resolved".into();
    resolved.status = AlertStatus::Resolved;
    alerts.push(resolved);
    let store = b.store();
    store.ingest_alerts(&alerts, Utc::now()).await.unwrap();
    let count = store.firing_count(3).await.unwrap();
    assert_eq!(count.total, 7);
    let by: Vec<(&str, u64)> = count
        .by_severity
        .iter()
        .map(|(s, n)| (s.as_str(), *n))
        .collect();
    assert_eq!(by[..2], [("critical", 3), ("warning", 2)]);
    assert_eq!(by.len(), 3, "the three most common: {by:?}");
    assert_eq!(by[2].1, 1);
    assert!(["none", &long[..40]].contains(&by[2].0), "{by:?}");
}

fn entry(n: usize) -> AuditEntry {
    AuditEntry {
        request_id: RequestId::new(),
        // The wall clock has sub-microsecond precision; the store keeps microseconds.
        at: Utc::now(),
        actor: format!("console:user{n}"),
        channel: "console:ops".into(),
        command: "rollback".into(),
        args: format!("api --to v1.{n}.0 — ünïcode ✓"),
        outcome: Outcome::ALL[n % Outcome::ALL.len()],
        detail: format!("detail for #{n}"),
    }
}

async fn append_n(store: &dyn Store, n: usize) -> Vec<AuditRecord> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(store.append_audit(entry(i)).await.expect("append"));
    }
    out
}

/// Reads the whole log in pages through `audit_after` and verifies it.
async fn verify(store: &dyn Store) -> Result<u64, ChainBreak> {
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let page = store.audit_after(after, 64).await.expect("read audit page");
        let Some(last) = page.last() else {
            return Ok(verifier.checked());
        };
        after = last.seq;
        for rec in &page {
            verifier.check(rec)?;
        }
    }
}

async fn write_probe_answers(b: &Backend) {
    let store = b.store();
    store.probe_write().await.expect("first probe");
    store
        .probe_write()
        .await
        .expect("the probe rewrites its row");
}

/// Alertmanager sends `"alerts": []` at times; an empty multi-row insert is a syntax error.
async fn empty_alert_ingest_is_a_no_op(b: &Backend) {
    let store = b.store();
    store
        .ingest_alerts(&[], Utc::now())
        .await
        .expect("nothing to store");
    assert!(store.active_alerts(10).await.unwrap().is_empty());
}

async fn appends_read_back_equal(b: &Backend) {
    let store = b.store();
    assert!(store.recent_audit(10).await.unwrap().is_empty());
    assert!(store.audit_after(0, 10).await.unwrap().is_empty());

    let appended = append_n(&*store, 5).await;
    let seqs: Vec<i64> = appended.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    for pair in appended.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "each record chains to the one before"
        );
    }

    // Newest first, limited.
    let recent = store.recent_audit(3).await.unwrap();
    let expected: Vec<AuditRecord> = appended.iter().rev().take(3).cloned().collect();
    assert_eq!(
        recent, expected,
        "recent_audit returns what append returned"
    );
    let all_recent = store.recent_audit(100).await.unwrap();
    assert_eq!(
        all_recent,
        appended.iter().rev().cloned().collect::<Vec<_>>()
    );

    // Oldest first, paged.
    assert_eq!(store.audit_after(0, 2).await.unwrap(), appended[0..2]);
    assert_eq!(store.audit_after(2, 2).await.unwrap(), appended[2..4]);
    assert_eq!(store.audit_after(4, 2).await.unwrap(), appended[4..5]);
    assert!(store.audit_after(5, 2).await.unwrap().is_empty());

    assert_eq!(verify(&*store).await, Ok(5));
}

async fn concurrent_appends_form_one_chain(b: &Backend) {
    const TASKS: usize = 20;
    const EACH: usize = 10;
    let store = b.store();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let mut seqs = Vec::with_capacity(EACH);
            for i in 0..EACH {
                let rec = store
                    .append_audit(entry(t * EACH + i))
                    .await
                    .expect("append");
                seqs.push(rec.seq);
            }
            seqs
        });
    }
    let mut seqs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let task_seqs = joined.expect("append task");
        // One task's appends are committed in the order it made them.
        assert!(task_seqs.windows(2).all(|w| w[0] < w[1]), "{task_seqs:?}");
        seqs.extend(task_seqs);
    }
    seqs.sort_unstable();
    let total = (TASKS * EACH) as i64;
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "no gaps, no duplicates"
    );
    assert_eq!(verify(&*store).await, Ok(total as u64));
}

async fn altered_record_is_detected(b: &Backend) {
    let store = b.store();
    let appended = append_n(&*store, 5).await;
    assert_ne!(appended[2].entry.outcome, Outcome::Denied);
    disable_append_only(b).await;
    let changed = b
        .exec("UPDATE audit_log SET outcome = 'denied' WHERE seq = 3")
        .await
        .expect("update with the trigger disabled");
    assert_eq!(changed, 1);
    assert_eq!(
        verify(&*store).await,
        Err(ChainBreak {
            seq: 3,
            kind: ChainBreakKind::Altered
        })
    );
}

async fn deleted_record_is_detected(b: &Backend) {
    let store = b.store();
    append_n(&*store, 5).await;
    disable_append_only(b).await;
    let deleted = b
        .exec("DELETE FROM audit_log WHERE seq = 3")
        .await
        .expect("delete with the trigger disabled");
    assert_eq!(deleted, 1);
    assert_eq!(
        verify(&*store).await,
        Err(ChainBreak {
            seq: 4,
            kind: ChainBreakKind::Missing { expected_seq: 3 }
        })
    );
}

async fn database_refuses_update_and_delete(b: &Backend) {
    let store = b.store();
    let before = append_n(&*store, 3).await;
    for sql in [
        "UPDATE audit_log SET outcome = 'denied' WHERE seq = 2",
        "UPDATE audit_log SET detail = ''",
        "DELETE FROM audit_log WHERE seq = 2",
        "DELETE FROM audit_log",
    ] {
        let err = b
            .exec(sql)
            .await
            .expect_err("the append-only trigger refuses this");
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    if let Backend::Postgres { .. } = b {
        let err = b.exec("TRUNCATE audit_log").await.expect_err("truncate");
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    let after = store.audit_after(0, 10).await.unwrap();
    assert_eq!(after, before, "nothing changed");
    assert_eq!(verify(&*store).await, Ok(3));
    // The log still accepts appends after refusing the tampering.
    assert_eq!(store.append_audit(entry(9)).await.unwrap().seq, 4);
}

async fn control_characters_do_not_fail_append(b: &Backend) {
    let store = b.store();
    let mut nasty = entry(1);
    nasty.actor = "console:mal\0lory".into();
    nasty.args = "api\0--to\u{1b}[31m v1".into();
    nasty.detail = "line one\nline two\0\u{7f}".into();
    nasty.command = "rollback\u{0}".into();
    let rec = store
        .append_audit(nasty)
        .await
        .expect("control characters must not fail the append");
    for field in [
        &rec.entry.actor,
        &rec.entry.channel,
        &rec.entry.command,
        &rec.entry.args,
        &rec.entry.detail,
    ] {
        assert!(!field.contains('\0'), "{field:?}");
    }
    assert!(rec.entry.actor.starts_with("console:mal") && rec.entry.actor.ends_with("lory"));
    // A clean entry in the same log is unaffected, and both read back as returned.
    let clean = store.append_audit(entry(2)).await.unwrap();
    assert_eq!(store.audit_after(0, 10).await.unwrap(), vec![rec, clean]);
    assert_eq!(verify(&*store).await, Ok(2));
}

/// Two replicas (two stores, two pools) on one schema extend one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_replicas_extend_one_chain() {
    let Some(schema) = support::fresh_postgres_schema().await else {
        return;
    };
    let url = support::postgres_url();
    let (a, b) = tokio::join!(
        PostgresStore::connect(&url, 4, Some(&schema)),
        PostgresStore::connect(&url, 4, Some(&schema)),
    );
    two_writers_extend_one_chain([
        Arc::new(a.expect("replica a")),
        Arc::new(b.expect("replica b")),
    ])
    .await;
    support::drop_postgres_schema(&schema).await;
}

/// Two stores on one SQLite file (a `serve` and a reader beside it that writes): each
/// writer's remembered chain head goes stale whenever the other appends, and neither may
/// fork the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sqlite_stores_on_one_file_extend_one_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let a = SqliteStore::open(&url).await.expect("store a");
    let b = SqliteStore::open_shared(&url).await.expect("store b");
    two_writers_extend_one_chain([Arc::new(a), Arc::new(b)]).await;
}

/// One process at a time may open a SQLite file as its user; a reader may open it beside it,
/// and once the first is gone the file is free again.
#[tokio::test]
async fn a_second_exclusive_sqlite_store_on_one_file_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("opsbot.db");
    let url = format!("sqlite://{}", db.display());
    let first = SqliteStore::open(&url).await.expect("first store");
    let Err(refused) = SqliteStore::open(&url).await else {
        panic!("a second exclusive store on {url} must be refused");
    };
    let message = refused.to_string();
    assert!(
        message.contains("another opsbot is using the SQLite database")
            && message.contains(&db.display().to_string()),
        "{message}"
    );
    let reader = SqliteStore::open_shared(&url)
        .await
        .expect("a reader beside it");
    drop((first, reader));
    SqliteStore::open(&url)
        .await
        .expect("free again once the first is gone");
}

async fn two_writers_extend_one_chain(replicas: [Arc<dyn Store>; 2]) {
    const TASKS: usize = 20;
    const EACH: usize = 10;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = replicas[t % 2].clone();
        tasks.spawn(async move {
            let mut seqs = Vec::with_capacity(EACH);
            for i in 0..EACH {
                seqs.push(
                    store
                        .append_audit(entry(t * EACH + i))
                        .await
                        .expect("append")
                        .seq,
                );
            }
            seqs
        });
    }
    let mut seqs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        seqs.extend(joined.expect("append task"));
    }
    let unique: BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "a seq was handed out twice");
    let total = (TASKS * EACH) as i64;
    assert_eq!(unique, (1..=total).collect::<BTreeSet<_>>());
    // Either replica reads the same, intact chain.
    assert_eq!(verify(&*replicas[0]).await, Ok(total as u64));
    assert_eq!(
        replicas[0].audit_after(0, 1000).await.unwrap(),
        replicas[1].audit_after(0, 1000).await.unwrap()
    );
}

async fn old_event_ids_are_forgotten(b: &Backend) {
    let store = b.store();
    let t0 = chrono::Utc::now();
    let later = t0 + chrono::Duration::hours(2);
    assert!(
        store
            .first_delivery(Platform::Slack, "Ev1", t0)
            .await
            .unwrap()
    );
    assert!(
        store
            .first_delivery(Platform::Slack, "Ev2", later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .first_delivery(Platform::Slack, "Ev1", later)
            .await
            .unwrap(),
        "a redelivery"
    );
    let forgotten = store
        .forget_deliveries_before(t0 + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(forgotten, 1);
    assert!(
        !store
            .first_delivery(Platform::Slack, "Ev2", later)
            .await
            .unwrap(),
        "kept"
    );
    assert!(
        store
            .first_delivery(Platform::Slack, "Ev1", later)
            .await
            .unwrap(),
        "forgotten, so new again"
    );
}

/// A burst (here one 8 MiB transaction) must not leave the SQLite WAL at its high-water mark
/// for as long as opsbot runs: once checkpointed, the next write truncates it.
#[tokio::test]
async fn the_sqlite_wal_shrinks_after_a_burst() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("audit.db");
    let store = SqliteStore::open(&format!("sqlite://{}", db.display()))
        .await
        .expect("open sqlite store");
    let wal = dir.path().join("audit.db-wal");
    for sql in [
        "CREATE TABLE burst (b BLOB)",
        "INSERT INTO burst VALUES (zeroblob(8388608))",
    ] {
        sqlx::query(sql).execute(store.pool()).await.expect(sql);
    }
    let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(
        size() > 8 << 20,
        "the burst went through the WAL: {}",
        size()
    );
    let mut n = 0;
    support::eventually(
        "the WAL to shrink after checkpoints",
        support::WAIT,
        async || {
            n += 1;
            store.append_audit(entry(n)).await.expect("append");
            (size() <= 4 << 20).then_some(()).ok_or(size())
        },
    )
    .await;
}

/// What an attacker with database access would do first: remove the append-only guard.
async fn disable_append_only(b: &Backend) {
    let statements: &[&str] = match b {
        Backend::Sqlite { .. } => &[
            "DROP TRIGGER audit_log_no_update",
            "DROP TRIGGER audit_log_no_delete",
        ],
        Backend::Postgres { .. } => {
            &["ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete"]
        }
    };
    for sql in statements {
        b.exec(sql).await.expect(sql);
    }
}

/// Alerts resolved before the cutoff are forgotten, with their group's message, post claim
/// and change mark once no alert of the group is left; an alert an incident links to stays,
/// and so do groups with a firing alert or a recent resolution.
async fn old_resolved_alerts_and_their_groups_are_forgotten(b: &Backend) {
    use opsbot::domain::{AlertStatus, Platform};
    let store = b.store();
    let now = Utc::now();
    let old = now - chrono::Duration::days(40);
    let alert = |fingerprint: &str, group: &str, status: AlertStatus| {
        let mut a = firing(fingerprint, &[("alertname", fingerprint)]);
        a.group_key = group.into();
        a.status = status;
        a
    };
    let resolved = AlertStatus::Resolved;
    // "gone": resolved long ago. "linked": the same, but an incident names one of its alerts.
    // "mixed": one old resolution beside a firing alert. "recent": resolved yesterday.
    let long_ago = [
        alert("gone-1", "gone", resolved),
        alert("gone-2", "gone", resolved),
        alert("linked-1", "linked", resolved),
        alert("mixed-1", "mixed", resolved),
    ];
    store.ingest_alerts(&long_ago, old).await.unwrap();
    let lately = [
        alert("mixed-2", "mixed", AlertStatus::Firing),
        alert("recent-1", "recent", resolved),
    ];
    store
        .ingest_alerts(&lately, now - chrono::Duration::days(1))
        .await
        .unwrap();
    for group in ["gone", "linked", "mixed", "recent"] {
        let version = (store.pending_groups(100).await.unwrap().into_iter())
            .find(|(g, _)| g == group)
            .map(|(_, v)| v)
            .unwrap();
        store.group_delivered(group, version).await.unwrap();
        let message = format!("m-{group}");
        (store.set_group_message(group, Platform::Slack, "C1", &message, "text"))
            .await
            .unwrap();
    }
    b.exec(
        "INSERT INTO incidents (title, severity, status, commander, platform, channel_id, \
         opened_by, opened_at) VALUES ('db down', 'P1', 'resolved', 'alice', 'slack', 'C9', 'alice', 0)",
    )
    .await
    .unwrap();
    b.exec(
        "INSERT INTO incident_alerts (incident_id, alert_id) \
         SELECT 1, id FROM alerts WHERE fingerprint = 'linked-1'",
    )
    .await
    .unwrap();

    let forgotten = (store.forget_resolved_before(now - chrono::Duration::days(30)))
        .await
        .unwrap();
    assert_eq!(forgotten, 3, "gone-1, gone-2 and mixed-1");
    let left = |group: &'static str| {
        let store = store.clone();
        async move { store.alerts_in_group(group).await.unwrap().len() }
    };
    assert_eq!(left("gone").await, 0);
    assert_eq!(left("linked").await, 1, "kept for its incident");
    assert_eq!(left("mixed").await, 1, "the firing one");
    assert_eq!(left("recent").await, 1);
    let message = |group: &'static str| {
        let store = store.clone();
        async move {
            let m = store.group_message(group, Platform::Slack, "C1").await;
            m.unwrap().map(|(id, _)| id)
        }
    };
    assert_eq!(message("gone").await, None, "its message forgotten");
    for group in ["linked", "mixed", "recent"] {
        assert_eq!(message(group).await, Some(format!("m-{group}")), "{group}");
    }
    // A new alert in the forgotten group starts it afresh: a change to deliver, no message.
    let again = [alert("gone-3", "gone", AlertStatus::Firing)];
    store.ingest_alerts(&again, now).await.unwrap();
    let pending = store.pending_groups(100).await.unwrap();
    assert!(pending.iter().any(|(g, _)| g == "gone"), "{pending:?}");
    assert_eq!(message("gone").await, None);
}
