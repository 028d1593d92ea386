//! An alert group message whose id the store refuses, in a test binary of its own: the check
//! reads opsbot's warnings through the thread-local log capture, which missed every one of
//! them in about 4 runs of 10 while the other tests of tests/alerts.rs ran beside it in one
//! process, and never alone.

mod support;

use std::sync::Arc;

use support::{Outbound, RecordingOutbound, TestApp, WAIT, eventually, satisfies};

/// With the disk full, a group message that was posted but whose id could not be stored must
/// not be posted again at each retry (it was: 92 posts for 4 groups in 45 s); storing the id
/// is what is retried, and once the store takes it, the one message is the group's.
#[tokio::test]
async fn a_posted_group_message_whose_id_cannot_be_stored_is_not_posted_again() {
    let (logs, _capturing) = support::Captured::start("warn");
    let chat = Arc::new(RecordingOutbound::default());
    let app = TestApp::builder()
        .config(&support::alerts_routed_to("console", "ops"))
        .outbound(chat.clone())
        .spawn()
        .await;
    let pool = support::sqlite_in(app.dir.path()).await;
    support::exec(&pool, "CREATE TRIGGER no_messages BEFORE INSERT ON alert_messages BEGIN SELECT RAISE(ABORT, 'disk full'); END;").await;
    support::fire_alerts(&app.url(""), "01-firing-single.json").await;
    let retries = |text: &String| {
        text.matches("alert notification failed; will retry")
            .count()
    };
    // The loop retries on its own backoff; a loaded machine (CI, parallel builds) has taken
    // longer than `WAIT` for two attempts.
    eventually(
        "two failed attempts to store the id",
        WAIT * 3,
        async || satisfies(logs.text(), |t| retries(t) >= 2),
    )
    .await;
    support::exec(&pool, "DROP TRIGGER no_messages").await;
    eventually("the message id to be stored", WAIT, async || {
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alert_messages")
            .fetch_one(&pool)
            .await
            .unwrap();
        satisfies(stored, |n| *n == 1)
    })
    .await;
    let posts = chat
        .messages()
        .into_iter()
        .filter(|m| matches!(m, Outbound::Post { .. }))
        .count();
    assert_eq!(posts, 1, "{:?}", chat.messages());
}
