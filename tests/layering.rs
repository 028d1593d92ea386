//! The layering invariants from ARCHITECTURE.md: the core never names an edge crate, and
//! inside the crate imports point down (domain <- catalog <- actions/router; ports name only
//! the domain; the store and the adapters are never named by the core).

use std::path::Path;

const CORE: &[&str] = &["src/domain", "src/catalog", "src/router", "src/actions"];
const EDGE_CRATES: &[&str] = &[
    "sqlx",
    "redis",
    "axum",
    "serenity",
    "teloxide",
    "slack_morphism",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_modules_do_not_import_edge_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in CORE {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(!files.is_empty());
    let mut offences = Vec::new();
    for file in files {
        let src = std::fs::read_to_string(&file).unwrap();
        for (n, line) in src.lines().enumerate() {
            for krate in EDGE_CRATES {
                let used = line.contains(&format!("{krate}::"))
                    || line.trim_start().starts_with(&format!("use {krate}"));
                if used {
                    offences.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "core imports an edge crate:\n{}",
        offences.join("\n")
    );
}

/// Each area of `src/` and the crate modules it may name (besides itself). Anything not listed
/// (store, adapters, config, app, http, hooks, ...) is out of bounds for it.
const MAY_NAME: &[(&str, &[&str])] = &[
    ("src/domain", &["domain"]),
    ("src/catalog", &["domain", "catalog"]),
    ("src/ports", &["domain", "ports"]),
    (
        "src/actions",
        &["domain", "catalog", "ports", "actions", "metrics"],
    ),
    (
        "src/router",
        &["domain", "catalog", "ports", "actions", "router", "metrics"],
    ),
    ("src/store", &["domain", "ports", "store", "periodic"]),
    ("src/periodic.rs", &[]),
    // The core side of leadership: it runs on the ports alone.
    ("src/leader.rs", &["ports"]),
];

/// The crate modules a line names (`crate::x` or `$crate::x`), comments excluded.
fn crate_modules(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("crate::")
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn imports_inside_the_crate_point_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut offences = Vec::new();
    for (area, allowed) in MAY_NAME {
        let path = root.join(area);
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else {
            files.push(path);
        }
        assert!(!files.is_empty(), "{area} has no Rust files");
        for file in files {
            let src = std::fs::read_to_string(&file).unwrap();
            for (n, line) in src.lines().enumerate() {
                for module in crate_modules(line) {
                    if !allowed.contains(&module.as_str()) {
                        offences.push(format!(
                            "{}:{}: {area} names crate::{module}: {}",
                            file.display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "an import points up or sideways:\n{}",
        offences.join("\n")
    );
}

/// Adapters reach the store only through the ports they need (the delivery log), never the
/// whole `Store`: audit writes and run transitions belong to the router.
#[test]
fn adapters_do_not_hold_the_store() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/adapters"), &mut files);
    let offences: Vec<String> = files
        .iter()
        .flat_map(|file| {
            let src = std::fs::read_to_string(file).unwrap();
            src.lines()
                .enumerate()
                .filter(|(_, l)| {
                    l.contains("dyn Store")
                        || l.contains("ports::Store;")
                        || l.contains("ports::Store>")
                })
                .map(|(n, l)| format!("{}:{}: {}", file.display(), n + 1, l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offences.is_empty(),
        "an adapter names the Store:\n{}",
        offences.join("\n")
    );
}
