//! The console adapter on the shared inbound path: its replies on its output, and an
//! approval request bound to its request number, so `:react EMOJI N` approves it.

mod support;

use opsbot::adapters::console::Console;
use opsbot::adapters::inbound::Inbound;
use opsbot::domain::RunState;
use support::{TestApp, WAIT, eventually};

#[tokio::test]
async fn a_reaction_on_the_request_number_approves_a_console_request() {
    let people = support::deployer_and_lead("console:alice", "console:bob");
    let app = TestApp::builder()
        .config(&people)
        .command("rollback.toml", support::ROLLBACK_NEEDING_ONE_LEAD)
        .script("act.sh", support::COUNTING_ACT)
        .spawn()
        .await;
    let console = Console::new(
        Inbound::new(app.router.clone(), app.store.clone()),
        "alice",
        "ops",
    );

    let mut output = Vec::new();
    console
        .run(&b"/rollback api\n"[..], &mut output)
        .await
        .unwrap();
    let asked = String::from_utf8_lossy(&output).into_owned();
    let id: i64 = asked
        .split('#')
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no request number in {asked:?}"));
    assert_eq!(
        app.store.run(id.into()).await.unwrap().unwrap().state,
        RunState::Pending
    );

    let mut output = Vec::new();
    let lines = format!(":as bob\n:react 👍 {id}\n");
    console.run(lines.as_bytes(), &mut output).await.unwrap();
    assert!(
        String::from_utf8_lossy(&output).contains("(now acting as console:bob)"),
        "{}",
        String::from_utf8_lossy(&output)
    );
    eventually("the request to leave pending", WAIT, async || {
        let state = app.store.run(id.into()).await.unwrap().unwrap().state;
        (state != RunState::Pending).then_some(state)
    })
    .await;
}
