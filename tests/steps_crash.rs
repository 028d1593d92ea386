//! Issue 16's proof for a crash mid-run: the real `opsbot serve` (SQLite, the embedded
//! default) and a fake Slack. A four-step `/flow` is started by slash command; while step 2
//! is held, opsbot is killed with SIGKILL and started again. The restarted process announces
//! the run as interrupted at step 2 without running any of it again, and `/retry 1 from 2`
//! runs steps 2, 3 and 4 once each and posts its result once.

#[path = "support/slack.rs"]
mod slack_support;
mod support;

use slack_support::{Seen, signed_with, slash, wait_for};

const SECRET: &str = "steps-crash-signing-secret";

/// `/flow`: four steps, each running `./step.sh N`, which appends N to `steps.log` as it
/// starts; step 2 then waits while the file `hold` exists.
fn flow() -> String {
    let mut file =
        "name = \"flow\"\nsummary = \"Four steps, the second held\"\nroles = [\"deployer\"]\n"
            .to_owned();
    for (n, name) in ["prepare", "hold", "apply", "verify"].iter().enumerate() {
        let n = n + 1;
        file.push_str(&format!(
            "\n[[steps]]\nname = \"{name}\"\nkind = \"exec\"\nargv = [\"./step.sh\", \"{n}\"]\ntimeout = \"60s\"\n"
        ));
    }
    file
}

const STEP: &str = "#!/bin/sh\necho \"$1\" >> steps.log\n\
    if [ \"$1\" = 2 ]; then while [ -f hold ]; do sleep 0.02; done; fi\necho \"step $1 done\"\n";

/// `serve`'s folder under `dir` and its config: SQLite in the folder, Slack at `slack`,
/// alice (deployer) and `/flow`.
fn config(dir: &std::path::Path, slack: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let folder = dir.join("one");
    let store = format!("sqlite://{}", folder.join("opsbot.db").display());
    let rest = format!(
        "{}\n[slack]\nsigning_secret = \"{SECRET}\"\nbot_token = \"xoxb-crash\"\napi_url = \"{slack}/api/\"\n",
        support::deployer_and_lead("slack:UALICE", "slack:UBOB"),
    );
    let config = support::replica_config(dir, "one", &store, &rest);
    support::write(&folder.join("commands"), "flow.toml", &flow());
    support::write_executable(&folder, "step.sh", STEP);
    (folder, config)
}

/// The steps started so far, in order, as the steps wrote them.
fn started(folder: &std::path::Path) -> Vec<String> {
    let log = std::fs::read_to_string(folder.join("steps.log")).unwrap_or_default();
    log.lines().map(str::to_owned).collect()
}

/// Alice types `/COMMAND TEXT` in #ops on the `serve` at `url` (the `n`th command).
async fn alice_types(serve: &support::Serve, slack: &str, command: &str, text: &str, n: u32) {
    let body = slash(slack, "UALICE", command, text, n);
    let form = "application/x-www-form-urlencoded";
    let status = signed_with(SECRET, serve.url("/slack/commands"), &body, form).await;
    assert_eq!(status, 200);
}

/// The texts opsbot posted or answered with (posts, `response_url` answers), oldest first.
fn texts(seen: &Seen) -> Vec<String> {
    texts_in(&seen.lock().unwrap())
}

fn texts_in(log: &[(String, serde_json::Value)]) -> Vec<String> {
    log.iter()
        .filter(|(m, _)| m == "chat.postMessage" || m.starts_with("response_url/"))
        .filter_map(|(_, v)| v["text"].as_str().map(str::to_owned))
        .collect()
}

/// Run `id`'s state and how many step records it has, read from the SQLite file.
async fn stored(db: &sqlx::SqlitePool, id: i64) -> (String, i64) {
    let state: String = sqlx::query_scalar("SELECT state FROM runs WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap();
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM run_steps WHERE run_id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap();
    (state, steps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_step_2_is_announced_interrupted_there_and_retried_from_it_once() {
    let seen = Seen::default();
    let slack = slack_support::fake_web_api(None, seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (folder, config) = config(dir.path(), &slack);
    std::fs::write(folder.join("hold"), "").unwrap();

    let mut first = support::Serve::start(&config, support::WAIT);
    alice_types(&first, &slack, "/flow", "", 1).await;
    support::eventually("step 2 to start", support::WAIT, async || {
        started(&folder) == ["1", "2"]
    })
    .await;
    // The answer is bound as the run's progress message once its post returns, which can be
    // after step 2 starts: wait for the binding, or the kill could come before it.
    let db = support::sqlite_in(&folder).await;
    support::eventually("the progress message bound", support::WAIT, async || {
        let bound: Option<String> = sqlx::query_scalar("SELECT message_id FROM runs WHERE id = 1")
            .fetch_one(&db)
            .await
            .unwrap();
        bound.is_some()
    })
    .await;
    // kill -9 in the middle of step 2 (its claim is stored: the step runs only once claimed).
    first.kill();

    let second = support::Serve::start(&config, support::WAIT);
    let interrupted = |t: &str| t.contains("Request #1 (/flow) was interrupted");
    let log = wait_for(&seen, "the interruption announced", |l| {
        l.iter()
            .any(|(m, v)| m == "chat.postMessage" && v["text"].as_str().is_some_and(interrupted))
    })
    .await;
    let notice = log
        .iter()
        .find_map(|(_, v)| v["text"].as_str().filter(|t| interrupted(t)))
        .unwrap()
        .to_owned();
    assert!(
        notice.contains("interrupted at step 2 (hold)") && notice.contains("/retry 1"),
        "{notice}"
    );
    // Its progress message no longer shows step 2 as under way: ⚠️ where it stopped, and
    // the steps after it as never run.
    let shows_stop = |t: &str| {
        t.contains("✅ prepare")
            && t.contains("⚠️ hold")
            && t.contains("⏭️ apply")
            && t.contains("⏭️ verify")
    };
    wait_for(&seen, "the progress message showing the stop", |l| {
        l.iter()
            .any(|(m, v)| m == "chat.update" && v["text"].as_str().is_some_and(shows_stop))
    })
    .await;
    assert_eq!(stored(&db, 1).await, ("interrupted".into(), 2));
    assert_eq!(started(&folder), ["1", "2"], "nothing ran again on restart");

    // The held step 2 of the killed process (orphaned, still waiting) ends without starting
    // anything; then alice retries from step 2.
    std::fs::remove_file(folder.join("hold")).unwrap();
    alice_types(&second, &slack, "/retry", "1 from 2", 2).await;
    let succeeded = |t: &String| t.contains("#2 /flow succeeded");
    wait_for(&seen, "the retry's result", |l| {
        texts_in(l).iter().any(succeeded)
    })
    .await;
    assert_eq!(stored(&db, 2).await.0, "succeeded");
    assert_eq!(
        started(&folder),
        ["1", "2", "2", "3", "4"],
        "the retry ran steps 2, 3 and 4 once each, and step 1 never again"
    );
    let results: Vec<String> = texts(&seen).into_iter().filter(succeeded).collect();
    assert_eq!(results.len(), 1, "the result is posted once: {results:?}");
    assert_eq!(
        texts(&seen).iter().filter(|t| interrupted(t)).count(),
        1,
        "the interruption is announced once"
    );
    db.close().await;
    drop(second);
}
