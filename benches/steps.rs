//! Step overhead of multi-step runbooks: from one step's start to the next one's, for steps
//! that do next to nothing themselves (`message` steps), so what is measured is opsbot's own
//! work between steps: the step's claim in `run_steps`, its start audited, its end recorded,
//! the progress queued. Target (issue 16): p99 under 20 ms on SQLite and on Postgres.
//!
//! The app is the real one (`App::build` from a TOML config). `/walk` is a command of
//! `OPSBOT_BENCH_STEPS` (default 25) message steps needing no approval, run from the console
//! `OPSBOT_BENCH_RUNS` times (default 40; 3 without `--bench`, as under `cargo test
//! --benches`); each gap is read from the stored steps' start times (microseconds).
//! Postgres: `OPSBOT_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432`), in a
//! database created for the run and dropped after it; unreachable, SQLite only.

#[path = "support/bench_db.rs"]
mod bench_db;

use std::time::Duration;

use bench_db::{UNLIMITED, drop_database, fresh_database, knob};
use opsbot::app::App;
use opsbot::config::Config;
use opsbot::domain::{ChannelRef, EventPayload, InboundEvent, Platform, UserRef};

const TARGET_P99: Duration = Duration::from_millis(20);

const PEOPLE: &str = r#"
[[people]]
name = "alice"
roles = ["sre"]
identities = ["console:alice"]
"#;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let runs: usize = knob("OPSBOT_BENCH_RUNS", if bench { 40 } else { 3 });
    let steps: usize = knob("OPSBOT_BENCH_STEPS", 25);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = format!("sqlite://{}", dir.path().join("steps.db").display());
        measure("SQLite", &sqlite, runs, steps).await;
        let server: String = knob(
            "OPSBOT_BENCH_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432".to_owned(),
        );
        let address = server.rsplit('@').next().unwrap_or("127.0.0.1:5432");
        if tokio::net::TcpStream::connect(address).await.is_err() {
            println!("Postgres at {server} is not reachable: measured on SQLite only");
            return;
        }
        let name = format!("steps_bench_{}", uuid::Uuid::new_v4().simple());
        let url = fresh_database(&server, &name).await;
        measure("Postgres", &url, runs, steps).await;
        drop_database(&server, &name).await;
    });
}

/// Runs `/walk` `runs` times on a fresh app at `database_url` and prints the gaps between
/// consecutive steps' starts.
async fn measure(backend: &str, database_url: &str, runs: usize, steps: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let commands = dir.path().join("commands");
    std::fs::create_dir_all(&commands).expect("commands dir");
    let mut walk =
        String::from("name = \"walk\"\nsummary = \"many small steps\"\nroles = [\"sre\"]\n");
    for i in 0..steps {
        walk.push_str(&format!(
            "\n[[steps]]\nname = \"s{i}\"\nkind = \"message\"\ntext = \"step {i}\"\n"
        ));
    }
    std::fs::write(commands.join("walk.toml"), walk).expect("write runbook");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\ndatabase_url = \"{database_url}\"\n[catalog]\ndir = \"commands\"\n{UNLIMITED}{PEOPLE}"
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).expect("write config");
    let config = Config::from_toml(&path, &text, &[]).expect("bench config is valid");
    let app = App::build(config).await.expect("app builds");
    let walk = InboundEvent::new(
        UserRef::new(Platform::Console, "alice"),
        ChannelRef::id_only("ops"),
        EventPayload::Command("/walk".into()),
    );
    let mut gaps = Vec::with_capacity(runs * steps);
    // A fresh store numbers the runs 1, 2, … in the order they are asked for.
    for n in 1..=runs {
        let reply = app.router.handle(&walk).await;
        let text = reply.reply.map(|r| r.text).unwrap_or_default();
        assert!(text.contains("succeeded"), "/walk must succeed: {text}");
        let id = opsbot::domain::RunId(n as i64);
        let mut starts: Vec<_> = (app.store.run_steps(id).await.expect("steps"))
            .into_iter()
            .map(|s| (s.idx, s.started_at))
            .collect();
        starts.sort();
        assert_eq!(starts.len(), steps, "every step recorded once");
        gaps.extend(
            starts
                .windows(2)
                .map(|w| (w[1].1 - w[0].1).to_std().unwrap_or_default()),
        );
    }
    gaps.sort();
    let p = |q: f64| gaps[((gaps.len() as f64 * q).ceil() as usize).clamp(1, gaps.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "step start -> next step start ({backend}, {runs} runs of {steps} message steps): \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms [target p99 < {} ms: {}]; load {}",
        ms(p(0.50)),
        ms(p(0.90)),
        ms(p(0.99)),
        ms(*gaps.last().expect("gaps")),
        TARGET_P99.as_millis(),
        if p(0.99) < TARGET_P99 {
            "met"
        } else {
            "MISSED"
        },
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
    );
}
