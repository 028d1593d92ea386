//! The config loader's own rules: defaults, file:line errors, env overrides, secrets.

use super::*;

fn load(src: &str) -> Result<Config, ConfigError> {
    Config::from_toml(Path::new("opsbot.toml"), src, &[])
}

/// The message a config that must be refused is refused with.
fn load_err(src: &str) -> String {
    load(src).unwrap_err().to_string()
}

#[test]
fn empty_config_uses_safe_defaults() {
    let c = load("").unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.directory.people().len(), 0);
    assert!(c.builtins.status_roles.is_empty());
}

#[test]
fn the_leader_lease_defaults_to_10s_and_refuses_what_cannot_work() {
    assert_eq!(load("").unwrap().cluster.lease_secs, 10);
    assert_eq!(
        load("[cluster]\nlease_secs = 2\n")
            .unwrap()
            .cluster
            .lease_secs,
        2
    );
    for bad in [0, 1, 601] {
        let msg = load_err(&format!("[cluster]\nlease_secs = {bad}\n"));
        assert!(
            msg.contains("cluster.lease_secs must be between 2 and 600"),
            "{msg}"
        );
    }
    let env = vec![("OPSBOT_CLUSTER__LEASE_SECS".to_owned(), "4".to_owned())];
    let c = Config::from_toml(Path::new("c.toml"), "", &env).unwrap();
    assert_eq!(c.cluster.lease(), std::time::Duration::from_secs(4));
}

#[test]
fn unknown_key_names_file_and_line() {
    let msg = load_err("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n");
    assert!(msg.starts_with("opsbot.toml:3:"), "{msg}");
    assert!(msg.contains("listn"), "{msg}");
}

#[test]
fn bad_values_are_explained() {
    let msg = load_err("[limits]\nper_user = \"lots\"\n");
    assert!(
        msg.contains("opsbot.toml:2") && msg.contains("rate"),
        "{msg}"
    );
    let msg = load_err("[[people]]\nname = \"a\"\nidentities = [\"U1\"]\n");
    assert!(msg.contains("platform:user_id"), "{msg}");
    let msg = load_err("[[checks]]\nname = \"x\"\nkind = \"tcp\"\n");
    assert!(msg.contains("needs address"), "{msg}");
}

#[test]
fn env_overrides_win_and_keep_types() {
    let env = vec![
        (
            "OPSBOT_SERVER__LISTEN".to_owned(),
            "127.0.0.1:9999".to_owned(),
        ),
        ("OPSBOT_STORE__MAX_CONNECTIONS".to_owned(), "3".to_owned()),
        ("OPSBOT_UNRELATED".to_owned(), "x".to_owned()),
    ];
    let c = Config::from_toml(
        Path::new("c.toml"),
        "[server]\nlisten = \"127.0.0.1:1\"\n",
        &env,
    )
    .unwrap();
    assert_eq!(c.server.listen.port(), 9999);
    assert_eq!(c.store.max_connections, 3);
    let env = vec![("OPSBOT_SERVER__NOPE".to_owned(), "1".to_owned())];
    let msg = Config::from_toml(Path::new("c.toml"), "", &env)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("OPSBOT_SERVER__NOPE") && msg.contains("nope"),
        "{msg}"
    );
}

#[test]
fn empty_or_short_shared_secrets_are_refused() {
    let msg = load_err("[alerts]\nalertmanager_token = \"\"\n");
    assert!(
        msg.contains("alerts.alertmanager_token must be at least"),
        "{msg}"
    );
    assert!(load("[alerts]\nwebhook_secret = \"short\"\n").is_err());
    // A numeric secret from the environment stays a string and is never echoed.
    let env = vec![(
        "OPSBOT_ALERTS__WEBHOOK_SECRET".to_owned(),
        "847362519934".to_owned(),
    )];
    let c = Config::from_toml(Path::new("c.toml"), "", &env).unwrap();
    assert!(c.alerts.webhook_secret.is_some());
}

#[test]
fn slack_socket_mode_needs_an_app_level_token() {
    let slack = "[slack]\nsigning_secret = \"8f742231b10e8888abcd\"\nbot_token = \"xoxb-1\"\n";
    let msg = load_err(&format!("{slack}socket_mode = true\n"));
    assert!(msg.contains("needs slack.app_token"), "{msg}");
    let msg = load_err(&format!(
        "{slack}socket_mode = true\napp_token = \"xoxb-secret-9\"\n"
    ));
    assert!(msg.contains("xapp-") && !msg.contains("secret-9"), "{msg}");
    let c = load(&format!(
        "{slack}socket_mode = true\napp_token = \"xapp-1-A1-secret\"\n"
    ))
    .unwrap();
    assert!(!format!("{c:?}").contains("xapp-1"));
    let slack = c.slack.unwrap();
    assert!(matches!(slack.receive, SlackReceive::SocketMode { .. }));
}

#[test]
fn telegram_delivery_is_parsed_with_what_it_needs() {
    let tg = "[telegram]\nbot_token = \"123:abc\"\n";
    let c = load(tg).unwrap();
    assert!(matches!(
        c.telegram.unwrap().delivery,
        TelegramDelivery::Polling
    ));
    let msg = load_err(&format!("{tg}mode = \"webhook\"\n"));
    assert!(msg.starts_with("opsbot.toml:1:"), "{msg}");
    assert!(
        msg.contains("needs telegram.webhook_url (https://...)"),
        "{msg}"
    );
    let url = "webhook_url = \"https://bot.example.com/telegram/webhook\"\n";
    let msg = load_err(&format!(
        "{tg}mode = \"webhook\"\n{url}webhook_secret = \"short\"\n"
    ));
    assert!(
        msg.contains("telegram.webhook_secret must be 12-256"),
        "{msg}"
    );
    let c = load(&format!(
        "{tg}mode = \"webhook\"\n{url}webhook_secret = \"s3cret_token-123\"\n"
    ))
    .unwrap();
    let TelegramDelivery::Webhook { url, .. } = c.telegram.unwrap().delivery else {
        panic!("webhook mode parses as a webhook")
    };
    assert_eq!(url.as_str(), "https://bot.example.com/telegram/webhook");
}

#[test]
fn secrets_never_print() {
    let c = load("[store]\ndatabase_url = \"postgres://u:hunter2@db/ops\"\n").unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn checks_parse_into_the_probe_of_their_kind() {
    let c = load(
        "[[checks]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1/\"\nexpect_status = 204\n\
         [[checks]]\nname = \"disk\"\nkind = \"exec\"\nargv = [\"true\"]\ntimeout = \"1s\"\n",
    )
    .unwrap();
    assert!(matches!(
        &c.checks[0].probe,
        CheckProbe::Http {
            expect_status: Some(204),
            ..
        }
    ));
    assert_eq!(c.checks[0].timeout.0, std::time::Duration::from_secs(5));
    assert!(matches!(&c.checks[1].probe, CheckProbe::Exec { argv } if argv == &["true"]));
    assert_eq!(c.checks[1].probe.kind(), "exec");
}

#[test]
fn check_errors_name_the_line_and_the_key() {
    let msg = load_err(
        "[server]\nlisten = \"127.0.0.1:1\"\n[[checks]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"db:5432\"\nurl = \"x\"\n",
    );
    assert!(msg.starts_with("opsbot.toml:3:"), "{msg}");
    assert!(
        msg.contains("check \"db\": url does not apply to kind tcp"),
        "{msg}"
    );
    let msg = load_err("[[checks]]\nname = \"x\"\nkind = \"exec\"\nargv = []\n");
    assert!(msg.contains("kind exec needs argv"), "{msg}");
    let msg = load_err("[[checks]]\nname = \"w\"\nkind = \"http\"\nurl = \"not a url\"\n");
    assert!(msg.contains("check \"w\": url is not valid"), "{msg}");
    let twice = "[[checks]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"h:1\"\n";
    let msg = load_err(&format!("{twice}{twice}"));
    assert!(
        msg.contains("checks[1] (\"a\"): check name is used twice"),
        "{msg}"
    );
}

#[test]
fn people_and_routes_arrive_parsed() {
    let c = load(
        "[[alerts.routes]]\nmatchers = [\"severity=critical\", \"team=~db|infra\"]\nplatform = \"console\"\nchannel = \"ops\"\n\
         [[people]]\nname = \"alice\"\nidentities = [\"console:alice\"]\n",
    )
    .unwrap();
    assert_eq!(c.alerts.routes[0].matchers.len(), 2);
    assert_eq!(c.alerts.routes[0].matchers[1].to_string(), "team=~db|infra");
    assert!(c.directory.person("alice").is_some());
    let msg = load_err(
        "[[alerts.routes]]\nmatchers = [\"sev\"]\nplatform = \"console\"\nchannel = \"ops\"\n",
    );
    assert!(
        msg.starts_with("opsbot.toml:2:") && msg.contains("label=value"),
        "{msg}"
    );
    let person = "[[people]]\nname = \"a\"\nidentities = [\"console:a\"]\n";
    let msg = load_err(&format!("{person}{}", person.replace("\"a\"\n", "\"b\"\n")));
    assert!(
        msg.contains("people: identity console:a is mapped to both"),
        "{msg}"
    );
}

#[test]
fn the_redis_limiter_carries_its_url() {
    let msg = load_err("[limits]\nbackend = \"redis\"\n");
    assert!(msg.starts_with("opsbot.toml:1:"), "{msg}");
    assert!(
        msg.contains("limits.backend = \"redis\" needs limits.redis_url"),
        "{msg}"
    );
    let c = load("[limits]\nbackend = \"redis\"\nredis_url = \"redis://:pw-1234@r\"\n").unwrap();
    assert!(matches!(c.limits.backend, LimiterBackend::Redis { .. }));
    assert!(!format!("{c:?}").contains("pw-1234"));
    assert!(load("").unwrap().limits.global.is_some());
}

#[test]
fn the_environment_may_supply_a_key_the_file_leaves_out() {
    let file = "[limits]\nbackend = \"redis\"\n";
    let c = Config::from_toml(
        Path::new("c.toml"),
        file,
        &env(&[("OPSBOT_LIMITS__REDIS_URL", "redis://127.0.0.1:6379")]),
    )
    .unwrap();
    assert!(matches!(c.limits.backend, LimiterBackend::Redis { .. }));
    // An error the file has by itself keeps its line, whatever the environment sets.
    let msg = Config::from_toml(
        Path::new("c.toml"),
        "[server]\nlisten = \"nowhere\"\n",
        &env(&[("OPSBOT_LOG__LEVEL", "debug")]),
    )
    .unwrap_err()
    .to_string();
    assert!(msg.starts_with("c.toml:2:"), "{msg}");
}

#[test]
fn a_relative_sqlite_path_is_beside_the_config_file() {
    let at = |url: &str| {
        let src = format!("[store]\ndatabase_url = \"{url}\"\n");
        let c = Config::from_toml(Path::new("/etc/opsbot/opsbot.toml"), &src, &[]).unwrap();
        c.store.database_url.expose_secret().to_owned()
    };
    assert_eq!(at("sqlite://opsbot.db"), "sqlite:///etc/opsbot/opsbot.db");
    assert_eq!(
        at("sqlite:data/o.db?mode=rwc"),
        "sqlite:///etc/opsbot/data/o.db?mode=rwc"
    );
    assert_eq!(at("sqlite:///var/lib/o.db"), "sqlite:///var/lib/o.db");
    assert_eq!(at("sqlite::memory:"), "sqlite::memory:");
    assert_eq!(at("postgres://u:p@db/o"), "postgres://u:p@db/o");
}

#[test]
fn the_store_location_shown_carries_no_credentials() {
    let shown = |url: &str| {
        let src = format!("[store]\ndatabase_url = \"{url}\"\n");
        let c = Config::from_toml(Path::new("/etc/opsbot/opsbot.toml"), &src, &[]).unwrap();
        c.store_location()
    };
    assert_eq!(
        shown("sqlite://opsbot.db"),
        "SQLite file /etc/opsbot/opsbot.db"
    );
    assert_eq!(
        shown("postgres://opsbot:hunter2-secret@db.internal:5432/opsbot?sslmode=require"),
        "postgres://db.internal:5432/opsbot"
    );
}

#[test]
fn a_log_level_tracing_would_refuse_or_misread_is_refused_at_its_line() {
    let msg = load_err("[log]\nformat = \"text\"\nlevel = \"warning\"\n");
    assert!(msg.starts_with("opsbot.toml:3:"), "{msg}");
    assert!(
        msg.contains("\"warning\" is not a tracing level") && msg.contains("write \"warn\""),
        "{msg}"
    );
    let msg = load_err("[log]\nlevel = \"opsbot=loud\"\n");
    assert!(
        msg.starts_with("opsbot.toml:2:") && msg.contains("not a valid filter"),
        "{msg}"
    );
    for fine in ["warn", "INFO", "opsbot=debug,sqlx=warn", "opsbot", "off"] {
        let src = format!("[log]\nlevel = {fine:?}\n");
        assert!(load(&src).is_ok(), "{fine}");
    }
}

#[test]
fn slack_tokens_in_each_others_place_are_named() {
    let slack = |bot: &str, app: &str| {
        format!(
            "[slack]\nsigning_secret = \"0123456789abcdef\"\nbot_token = {bot:?}\napp_token = {app:?}\nsocket_mode = true\n"
        )
    };
    let msg = load_err(&slack("xapp-1-A1-2-abc", "xapp-1-A1-2-abc"));
    assert!(msg.starts_with("opsbot.toml:3:"), "{msg}");
    assert!(
        msg.contains(
            "slack.bot_token is an app-level token (xapp-...), which goes in slack.app_token"
        ) && msg.contains("xoxb-"),
        "{msg}"
    );
    assert!(!msg.contains("abc"), "never the token: {msg}");
    let msg = load_err(&slack("xoxb-1-2-abc", "xoxb-1-2-abc"));
    assert!(
        msg.contains("slack.app_token is a bot token (xoxb-...), which goes in slack.bot_token"),
        "{msg}"
    );
}

const PD_KEY: &str = "R0UT1NGkey0123456789abcdef012345";

#[test]
fn paging_services_parse_by_kind_with_pagerdutys_default_url() {
    let c = load(&format!(
        "[[paging.services]]\nname = \"pd-sre\"\nkind = \"pagerduty\"\nrouting_key = \"{PD_KEY}\"\n\
         [[paging.services]]\nname = \"ntfy-bob\"\nkind = \"ntfy\"\nurl = \"https://ntfy.example.com/ops-oncall\"\n\
         [[paging.services]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"https://hooks.example.com/p\"\nsecret = \"webhook-secret-0123\"\n\
         [[people]]\nname = \"bob\"\nidentities = [\"console:bob\"]\npage = \"ntfy-bob\"\n"
    ))
    .unwrap();
    let s = &c.paging.services;
    assert!(
        matches!(&s[0].kind, PagingKind::PagerDuty { url, .. } if url == "https://events.pagerduty.com")
    );
    assert!(matches!(&s[1].kind, PagingKind::Ntfy { token: None, .. }));
    assert_eq!(s[2].kind.as_str(), "webhook");
    let bob = c.directory.person("bob").unwrap();
    assert_eq!(bob.page.as_deref(), Some("ntfy-bob"));
    let debug = format!("{c:?}");
    for secret in [PD_KEY, "ops-oncall", "webhook-secret-0123"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
}

#[test]
fn paging_errors_name_the_line_and_never_the_secret() {
    let msg = load_err(
        "[server]\nlisten = \"127.0.0.1:1\"\n[[paging.services]]\nname = \"pd\"\nkind = \"pagerduty\"\n",
    );
    assert!(msg.starts_with("opsbot.toml:3:"), "{msg}");
    assert!(
        msg.contains("paging service pd: kind = \"pagerduty\" needs routing_key"),
        "{msg}"
    );
    let msg = load_err(
        "[[paging.services]]\nname = \"n\"\nkind = \"ntfy\"\nurl = \"ftp://secret-topic\"\n",
    );
    assert!(msg.starts_with("opsbot.toml:1:"), "{msg}");
    assert!(
        msg.contains("url must be an http:// or https:// URL"),
        "{msg}"
    );
    assert!(!msg.contains("secret-topic"), "{msg}");
    let msg = load_err(
        "[[paging.services]]\nname = \"n\"\nkind = \"ntfy\"\nurl = \"https://ntfy.example.com/\"\n",
    );
    assert!(msg.contains("url must name the topic"), "{msg}");
    let msg = load_err("[[paging.services]]\nname = \"n\"\nkind = \"opsgenie\"\n");
    assert!(
        msg.contains("opsgenie") && msg.contains("pagerduty"),
        "{msg}"
    );
    let msg = load_err(&format!(
        "[[paging.services]]\nname = \"n\"\nkind = \"ntfy\"\nurl = \"https://n.example.com/t\"\nrouting_key = \"{PD_KEY}\"\n"
    ));
    assert!(
        msg.contains("routing_key is not used by kind = \"ntfy\""),
        "{msg}"
    );
    let msg = load_err(
        "[[paging.services]]\nname = \"pd\"\nkind = \"pagerduty\"\nrouting_key = \"short\"\n",
    );
    assert!(
        msg.contains("paging service pd: routing_key must be at least 12 characters"),
        "{msg}"
    );
}

#[test]
fn a_page_service_must_exist_and_be_named_once() {
    let msg =
        load_err("[[people]]\nname = \"bob\"\nidentities = [\"console:bob\"]\npage = \"nope\"\n");
    assert!(
        msg.contains("people: bob's page = \"nope\" is not in [[paging.services]]"),
        "{msg}"
    );
    let service = format!(
        "[[paging.services]]\nname = \"pd\"\nkind = \"pagerduty\"\nrouting_key = \"{PD_KEY}\"\n"
    );
    let msg = load_err(&format!("{service}{service}"));
    assert!(msg.contains("paging: service pd is defined twice"), "{msg}");
}

#[test]
fn an_entry_of_a_list_takes_overrides_by_its_name() {
    let src = "[[paging.services]]\nname = \"pd-sre\"\nkind = \"pagerduty\"\n";
    // A numeric-looking routing key stays a string (and is never quoted back).
    let key = "12345678901234567890123456789012";
    let c = Config::from_toml(
        Path::new("c.toml"),
        src,
        &env(&[("OPSBOT_PAGING__SERVICES__PD_SRE__ROUTING_KEY", key)]),
    )
    .unwrap();
    let PagingKind::PagerDuty { routing_key, .. } = &c.paging.services[0].kind else {
        panic!("{:?}", c.paging.services[0]);
    };
    assert_eq!(routing_key.expose_secret(), key);
    let msg = Config::from_toml(
        Path::new("c.toml"),
        src,
        &env(&[("OPSBOT_PAGING__SERVICES__OTHER__ROUTING_KEY", key)]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains(
            "OPSBOT_PAGING__SERVICES__OTHER__ROUTING_KEY: services has no entry named other"
        ),
        "{msg}"
    );
}
