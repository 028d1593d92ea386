//! The layering invariant from ARCHITECTURE.md: the core never names an edge crate.

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
