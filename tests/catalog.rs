//! Command-file validation: every mistake names the file and line; the shipped runbooks load.

use std::path::PathBuf;

use opsbot::catalog::{Catalog, Procedure};
use opsbot::router::builtins::NAMES;

fn errors(src: &str) -> String {
    Catalog::from_sources(
        &[(PathBuf::from("commands/x.toml"), src.to_owned())],
        &NAMES,
    )
    .expect_err("the file is invalid")
    .to_string()
}

const BASE: &str = "name = \"x\"\nsummary = \"does x\"\nroles = [\"sre\"]\n";
const ACTION: &str = "[action]\nkind = \"exec\"\nargv = [\"/bin/x\", \"{a}\"]\ntimeout = \"10s\"\n";

/// The real runbooks, and the harmless demo of each that the example config loads.
#[test]
fn shipped_runbooks_and_their_demos_are_valid() {
    for folder in ["commands", "examples/demo"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(folder);
        let catalog = Catalog::load_dir(&dir, &NAMES).expect(folder);
        shipped(&catalog);
    }
}

fn shipped(catalog: &Catalog) {
    for name in [
        "restart",
        "rollback",
        "scale",
        "clear-cache",
        "kill-idle-sessions",
        "backup",
        "maintenance",
        "deploy",
        "restore",
        "drain-queue",
    ] {
        assert!(catalog.get(name).is_some(), "{name} is shipped");
    }
}

/// Each demo keeps its runbook's arguments, roles, channels, limits, approval and step names,
/// so what a team tries on the example config is what it will run.
#[test]
fn each_demo_matches_its_runbook() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let real = Catalog::load_dir(&root.join("commands"), &NAMES).unwrap();
    let demo = Catalog::load_dir(&root.join("examples/demo"), &NAMES).unwrap();
    let shape = |c: &opsbot::catalog::CommandSpec| {
        let steps = match &c.procedure {
            Procedure::Single(_) => vec!["[action]".to_owned()],
            Procedure::Steps(w) => (w.steps.iter().chain(&w.on_failure))
                .map(|s| s.name.clone())
                .collect(),
        };
        let (args, roles, channels) = (&c.args, &c.roles, &c.channels);
        let approval = (c.approval.as_ref()).map(|a| {
            (
                a.approvals,
                &a.approver_roles,
                a.allow_self_approval,
                a.expires_after,
            )
        });
        let limits = &c.limits;
        format!("{args:?} {roles:?} {channels:?} {limits:?} {approval:?} {steps:?}")
    };
    for spec in real.iter() {
        let twin = demo
            .get(&spec.name)
            .unwrap_or_else(|| panic!("no demo of {}", spec.name));
        assert_eq!(shape(twin), shape(spec), "the demo of {}", spec.name);
    }
    assert_eq!(real.len(), demo.len(), "a demo for each runbook, no more");
}

/// The variants in commands/examples/ (not loaded by default) pass `opsbot check-config`.
#[test]
fn example_variants_pass_check_config() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("commands/examples");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let folder = entry.unwrap().path();
        if !folder.is_dir() {
            continue;
        }
        let config = dir.path().join("config.toml");
        let text = format!(
            "[store]\ndatabase_url = \"sqlite://{}\"\n[catalog]\ndir = \"{}\"\n",
            dir.path().join("opsbot.db").display(),
            folder.display()
        );
        std::fs::write(&config, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_opsbot"))
            .args(["check-config", "--config", config.to_str().unwrap()])
            .env_remove("OPSBOT_CONFIG")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {said}", folder.display());
        assert!(said.contains("is valid; "), "{said}");
        checked.push(folder.file_name().unwrap().to_string_lossy().into_owned());
    }
    checked.sort();
    assert_eq!(checked, ["docker-compose", "pm2", "systemd"]);
}

#[test]
fn each_mistake_names_file_and_line() {
    let arg = |body: &str| format!("{BASE}[[args]]\nname = \"a\"\n{body}\n{ACTION}");
    let cases = [
        (
            arg("kind = \"choise\""),
            "commands/x.toml:6: unknown variant `choise`, expected one of `choice`, `string`, `int`, `duration`",
        ),
        (
            arg("kind = \"choice\""),
            "commands/x.toml:4: arg \"a\": kind choice needs non-empty choices",
        ),
        (
            arg("kind = \"string\"\npattern = \"(\""),
            "commands/x.toml:4: arg \"a\": pattern does not compile",
        ),
        (
            arg("kind = \"int\"\nmin = 5\nmax = 1"),
            "arg \"a\": min is greater than max",
        ),
        (
            arg("kind = \"string\"\nchoices = [\"a\"]"),
            "arg \"a\": choices does not apply to this kind",
        ),
        (
            arg("kind = \"string\"\nrequird = false"),
            "commands/x.toml:7: unknown field `requird`",
        ),
        (
            format!("{BASE}{ACTION}"),
            "action: argv uses {a} but no argument (or value published by an earlier step) has that name",
        ),
        (
            format!("name = \"Bad Name\"\nsummary = \"s\"\n{ACTION}"),
            "commands/x.toml:1: name \"Bad Name\" must be",
        ),
        (
            "name = \"help\"\nsummary = \"s\"\n[action]\nkind = \"exec\"\nargv = [\"x\"]\ntimeout = \"1s\"\n"
                .to_owned(),
            "name \"help\" is a built-in command",
        ),
        (
            format!("{BASE}[action]\nkind = \"exec\"\nargv = [\"x\"]\ntimeout = \"soon\"\n"),
            "commands/x.toml:7: duration \"soon\"",
        ),
        (
            format!("{BASE}[action]\nkind = \"exec\"\nargv = []\ntimeout = \"1s\"\n"),
            "kind exec needs argv",
        ),
        (
            format!(
                "{BASE}[[args]]\nname = \"p\"\nkind = \"string\"\n[action]\nkind = \"exec\"\nargv = [\"{{p}}\"]\ntimeout = \"1s\"\n"
            ),
            "argv[0] (the program) must not come from an argument",
        ),
        (
            format!("{BASE}[action]\nkind = \"http\"\nurl = \"ftp://x\"\ntimeout = \"1s\"\n"),
            "kind http needs url",
        ),
        (
            format!(
                "{BASE}[approval]\napprover_roles = []\nexpires_after = \"5m\"\n[action]\nkind = \"exec\"\nargv = [\"x\"]\ntimeout = \"1s\"\n"
            ),
            "commands/x.toml:4: approval: approver_roles must name at least one role",
        ),
        (
            format!(
                "{BASE}[rate_limit]\nper_user = \"often\"\n[action]\nkind = \"exec\"\nargv = [\"x\"]\ntimeout = \"1s\"\n"
            ),
            "commands/x.toml:5: rate \"often\"",
        ),
        (format!("{BASE}[action\n"), "commands/x.toml:4:"),
        ("summary = \"no name\"\n".to_owned(), "missing field `name`"),
    ];
    for (src, expected) in cases {
        let got = errors(&src);
        assert!(
            got.contains(expected),
            "expected {expected:?} in:\n{got}\nfor:\n{src}"
        );
    }
}

#[test]
fn required_args_come_first_and_names_are_unique() {
    let src = format!(
        "{BASE}[[args]]\nname = \"a\"\nkind = \"string\"\nrequired = false\n[[args]]\nname = \"a\"\nkind = \"string\"\n{ACTION}"
    );
    let got = errors(&src);
    assert!(got.contains("arg \"a\" is declared twice"), "{got}");
    assert!(
        got.contains("required arguments must come before optional ones"),
        "{got}"
    );
}

#[test]
fn duplicate_command_names_across_files_are_refused() {
    let src = format!("{BASE}[action]\nkind = \"exec\"\nargv = [\"x\"]\ntimeout = \"1s\"\n");
    let err = Catalog::from_sources(
        &[
            (PathBuf::from("commands/a.toml"), src.clone()),
            (PathBuf::from("commands/b.toml"), src),
        ],
        &NAMES,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("commands/b.toml:1: command \"x\" is already defined in commands/a.toml"),
        "{err}"
    );
}

#[test]
fn a_missing_command_folder_is_an_error() {
    let err = Catalog::load_dir(&PathBuf::from("/nonexistent/commands"), &NAMES)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/commands: cannot read command folder"),
        "{err}"
    );
}

#[test]
fn an_int_that_starts_an_argv_item_may_not_allow_negatives() {
    let err = errors(&format!(
        "{BASE}[[args]]\nname = \"a\"\nkind = \"int\"\nmin = -3\n{ACTION}"
    ));
    assert!(
        err.starts_with(
            "commands/x.toml:4: arg \"a\": min is negative, but {a} starts an argv item"
        ),
        "{err}"
    );
}

/// The nightly schedule `commands/backup.toml` ships commented out loads once uncommented.
#[test]
fn the_nightly_backup_schedule_loads_once_uncommented() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("commands/backup.toml");
    let shipped = std::fs::read_to_string(&path).unwrap();
    let keys = [
        "[schedule]",
        "cron",
        "timezone",
        "platform",
        "channel",
        "roles",
        "args",
        "grace",
    ];
    let enabled: String = shipped
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if keys.iter().any(|k| rest.starts_with(k)) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        enabled.contains("\n[schedule]\ncron = \"0 3 * * *\""),
        "{enabled}"
    );
    let catalog = Catalog::from_sources(&[(path, enabled)], &NAMES).expect("loads");
    assert!(catalog.get("backup").unwrap().schedule.is_some());
}
