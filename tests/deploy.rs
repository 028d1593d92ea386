//! What can be checked of `deploy/` without a cluster, a container runtime or systemd running:
//! the Kubernetes manifests and Prometheus rules parse and say what docs/deploy.md promises,
//! the config they ship passes `opsbot check-config`, every metric the rules name is one
//! opsbot exports, the Dockerfile copies what exists, and `systemd-analyze verify` accepts the
//! unit.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in the manifests"))
}

const MANIFESTS: &str = "deploy/kubernetes/opsbot.yaml";
const CONFIG_PATH: &str = "/etc/opsbot/config.toml";

#[test]
fn the_manifests_run_two_replicas_ready_on_readyz_with_secrets_from_the_environment() {
    let docs = yaml(MANIFESTS);
    let deployment = kind(&docs, "Deployment");
    assert!(deployment["spec"]["replicas"].as_i64() >= Some(2));
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert!(
        container["envFrom"][0]["secretRef"]["name"]
            .as_str()
            .is_some(),
        "secrets come from a Secret, as environment variables"
    );
    let args: Vec<&str> = container["args"]
        .as_vec()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(args, ["serve", "--config", CONFIG_PATH]);
    assert_eq!(
        container["volumeMounts"][0]["mountPath"].as_str(),
        Some(CONFIG_PATH)
    );

    let labels = &deployment["spec"]["selector"]["matchLabels"];
    let budget = kind(&docs, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"].as_i64(), Some(1));
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&kind(&docs, "Service")["spec"]["selector"], labels);
}

/// Runs `opsbot check-config` on `config` with the shipped runbooks and secrets set as the
/// Kubernetes Secret would set them.
fn check_config(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_opsbot"))
        .args(["check-config", "--config"])
        .arg(config)
        .env("OPSBOT_CATALOG__DIR", repo("commands"))
        .env(
            "OPSBOT_STORE__DATABASE_URL",
            "postgres://opsbot:pw@db.internal/opsbot",
        )
        .env("OPSBOT_LIMITS__REDIS_URL", "redis://redis.internal:6379")
        .env(
            "OPSBOT_ALERTS__ALERTMANAGER_TOKEN",
            "alertmanager-token-0123",
        )
        .env("OPSBOT_SLACK__SIGNING_SECRET", "slack-signing-secret-0123")
        .env("OPSBOT_SLACK__BOT_TOKEN", "xoxb-0123-4567")
        .output()
        .expect("run opsbot check-config")
}

#[test]
fn the_configmap_is_deploy_config_and_passes_check_config() {
    let docs = yaml(MANIFESTS);
    let shipped = kind(&docs, "ConfigMap")["data"]["config.toml"]
        .as_str()
        .expect("config.toml in the ConfigMap")
        .to_owned();
    assert_eq!(
        shipped,
        read("deploy/config.toml"),
        "the ConfigMap is deploy/config.toml, indented"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, shipped).expect("write config");
    let out = check_config(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("store: postgres://"), "{stdout}");
    assert!(!stdout.contains(":pw@"), "the password is never printed");
}

#[test]
fn the_dockerfile_copies_what_exists_runs_as_non_root_and_serves_the_shipped_config() {
    let dockerfile = read("deploy/Dockerfile");
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        if line.contains("--from=") {
            continue;
        }
        let source = line.split_whitespace().nth(1).expect("COPY source");
        assert!(repo(source).exists(), "{line}: {source} is not in the repo");
    }
    assert!(
        dockerfile.contains(&format!("COPY deploy/config.toml {CONFIG_PATH}")),
        "the image carries the config the manifests mount over"
    );
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("USER");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(dockerfile.contains(&format!(r#"CMD ["serve", "--config", "{CONFIG_PATH}"]"#)));
}

#[test]
fn systemd_accepts_the_unit() {
    let has_analyze = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_analyze {
        support::unavailable::<()>("systemd-analyze", "PATH", "not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = read("deploy/opsbot.service")
        .replace("/usr/local/bin/opsbot", env!("CARGO_BIN_EXE_opsbot"));
    let path = dir.path().join("opsbot.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// The metric families opsbot exports (names as written in `# TYPE` lines), with every
/// series it creates at start for a configured command, runbook and platform.
fn exported_families() -> BTreeSet<String> {
    let metrics = opsbot::metrics::Metrics::new();
    metrics.known(["status"], ["rollback"], &[opsbot::domain::Platform::Slack]);
    metrics
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_alerting_rule_names_metrics_opsbot_exports() {
    let docs = yaml("deploy/prometheus/opsbot-rules.yaml");
    let families = exported_families();
    let metric = regex::Regex::new(r"\bopsbot_[a-z_]+").expect("regex");
    let mut alerts = Vec::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule alerts");
            let expr = rule["expr"].as_str().expect("expr");
            assert!(
                matches!(
                    rule["labels"]["severity"].as_str(),
                    Some("critical" | "warning")
                ),
                "{name}: severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name}: summary"
            );
            for m in metric.find_iter(expr).map(|m| m.as_str()) {
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| m.strip_suffix(s))
                    .unwrap_or(m);
                assert!(
                    families.contains(family),
                    "{name}: {m} is not exported (exported: {families:?})"
                );
            }
            alerts.push(name.to_owned());
        }
    }
    for wanted in [
        "OpsbotNoLeader",
        "OpsbotChatAdapterDown",
        "OpsbotAuditAppendFailing",
    ] {
        assert!(alerts.iter().any(|a| a == wanted), "{wanted} is missing");
    }
}
