//! Command-file validation: every mistake names the file and line; the shipped runbooks load.

use std::path::PathBuf;

use opsbot::catalog::Catalog;
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
    ] {
        assert!(catalog.get(name).is_some(), "{name} is shipped");
    }
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
