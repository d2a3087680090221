use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
[upstream]
url = "http://127.0.0.1:5000"
[[auth.issuers]]
issuer = "https://idp.example"
audiences = ["mlflow"]
algorithms = ["RS256", "ES256"]
jwks_file = "keys/jwks.json"
groups_claim = "realm_access.roles"
[policy]
dir = "policies"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/gate/gate.toml"))
}

fn err_of(text: &str) -> String {
    parse(text).err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn good_config_resolves_paths_against_the_config_directory() {
    let c = parse(GOOD).ok();
    let c = c.as_ref();
    assert_eq!(c.map(|c| c.policy.dir.clone()), Some(PathBuf::from("/etc/gate/policies")));
    let issuer = c.and_then(|c| c.auth.issuers.first());
    assert_eq!(issuer.map(|i| i.keys.clone()), Some(KeySource::JwksFile("/etc/gate/keys/jwks.json".into())));
    assert_eq!(issuer.map(|i| i.groups_claim.clone()), Some(vec!["realm_access".to_string(), "roles".to_string()]));
    assert_eq!(c.map(|c| c.upstream.host_header.clone()), Some("127.0.0.1:5000".to_string()));
}

#[test]
fn unknown_key_is_named_with_its_position() {
    let e = err_of(&GOOD.replace("listen =", "lisen ="));
    assert!(e.starts_with("/etc/gate/gate.toml:") && e.contains("lisen") && e.contains("line 3"), "{e}");
}

#[test]
fn errors_name_the_key_at_fault() {
    let cases = [
        (GOOD.replace("\"RS256\", \"ES256\"", "\"HS256\""), "auth.issuers[0].algorithms"),
        (GOOD.replace("jwks_file = \"keys/jwks.json\"", ""), "auth.issuers[0]"),
        (
            GOOD.replace("jwks_file = \"keys/jwks.json\"", "jwks_file = \"k\"\njwks_url = \"https://x/jwks\""),
            "auth.issuers[0]",
        ),
        (GOOD.replace("http://127.0.0.1:5000", "ftp://x"), "upstream.url"),
        (GOOD.replace("http://127.0.0.1:5000", "http://127.0.0.1:5000/mlflow"), "upstream.url"),
        (GOOD.replace("127.0.0.1:8080", "localhost"), "server.listen"),
        (GOOD.replace("[\"mlflow\"]", "[]"), "auth.issuers[0].audiences"),
        (GOOD.replace("realm_access.roles", "realm_access..roles"), "auth.issuers[0].groups_claim"),
        (GOOD.replace("[policy]\ndir = \"policies\"", ""), "policy"),
        (format!("{GOOD}engine = \"vm\"\n"), "policy.engine"),
    ];
    for (text, key) in cases {
        let e = err_of(&text);
        assert!(e.contains(&format!(": {key}:")), "expected key {key} in {e:?}");
    }
}

#[test]
fn duplicate_issuers_are_refused() {
    let text = format!("{GOOD}\n[[auth.issuers]]\nissuer = \"https://idp.example\"\naudiences = [\"m\"]\nalgorithms = [\"RS256\"]\njwks_url = \"https://idp.example/jwks\"\n");
    assert!(err_of(&text).contains("auth.issuers[0].issuer"));
}

const HOOKS: &str = r#"
[webhook_delivery]
spool_dir = "spool"
initial_backoff_ms = 10
max_backoff_ms = 100

[[webhooks]]
url = "https://hooks.example/mlflow"
events = ["MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "POLICY_DENIED"]
model_name = "fraud-detector"
secret_env = "FRAUD_HOOK_SECRET"

[[webhooks]]
url = "http://127.0.0.1:9000/hook"
events = ["MODEL_VERSION_CREATED"]
"#;

#[test]
fn webhooks_are_parsed_with_defaults_and_stable_ids() {
    let c = parse(&format!("{GOOD}{HOOKS}")).ok();
    let d = c.as_ref().map(|c| c.webhook_delivery.clone());
    assert_eq!(d.as_ref().and_then(|d| d.spool_dir.clone()), Some(PathBuf::from("/etc/gate/spool")));
    assert_eq!(d.as_ref().map(|d| (d.max_attempts, d.timeout, d.concurrency)), Some((12, secs(None, 10), 4)));
    let hooks = c.map(|c| c.webhooks).unwrap_or_default();
    assert_eq!(hooks.len(), 2);
    let ids: Vec<&str> = hooks.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, [webhook_id("https://hooks.example/mlflow", 0), webhook_id("http://127.0.0.1:9000/hook", 1)]);
    assert!(ids.iter().all(|id| id.len() == 16) && ids.first() != ids.get(1));
    assert!(hooks.iter().all(|h| h.verify_tls));
    assert_eq!(hooks.first().and_then(|h| h.model_name.clone()), Some("fraud-detector".to_string()));
}

#[test]
fn no_webhooks_need_no_spool() {
    let c = parse(GOOD).ok();
    assert!(c.is_some_and(|c| c.webhooks.is_empty() && c.webhook_delivery.spool_dir.is_none()));
}

#[test]
fn webhook_errors_name_the_key_at_fault() {
    let all = format!("{GOOD}{HOOKS}");
    let cases = [
        (all.replace("\"POLICY_DENIED\"", "\"MODEL_DELETED\""), "webhooks[0].events"),
        (all.replace("[\"MODEL_VERSION_CREATED\"]", "[]"), "webhooks[1].events"),
        (all.replace("spool_dir = \"spool\"", ""), "webhook_delivery.spool_dir"),
        (all.replace("max_backoff_ms = 100", "max_backoff_ms = 5"), "webhook_delivery.max_backoff_ms"),
        (all.replace("http://127.0.0.1:9000/hook", "ftp://x/hook"), "webhooks[1].url"),
        (all.replace("https://hooks.example/mlflow", "https://u:p@hooks.example/"), "webhooks[0].url"),
        (all.replace("\"FRAUD_HOOK_SECRET\"", "\"\""), "webhooks[0].secret_env"),
        (all.replace("model_name = \"fraud-detector\"", "model_name = \"\""), "webhooks[0].model_name"),
        (
            all.replace("model_name = \"fraud-detector\"", "verify_tls = false\nca_file = \"ca.pem\""),
            "webhooks[0].ca_file",
        ),
        (all.replace("secret_env = \"FRAUD_HOOK_SECRET\"", "secret = \"inline\""), "secret"),
        (all.replace("initial_backoff_ms = 10", "retries = 3"), "retries"),
    ];
    for (text, key) in cases {
        let e = err_of(&text);
        assert!(e.contains(key) && e.starts_with("/etc/gate/gate.toml: "), "expected key {key} in {e:?}");
    }
    let e = err_of(&all.replace("\"POLICY_DENIED\"", "\"MODEL_DELETED\""));
    assert!(e.contains("MODEL_DELETED") && e.contains("MODEL_VERSION_CREATED"), "names the bad and the known: {e}");
}

/// GOOD with a second issuer (the `[[auth.issuers]]` table goes before `[policy]`), plus `extra` keys on it.
fn two_issuers(first_extra: &str, second_extra: &str) -> String {
    GOOD.replace("groups_claim = \"realm_access.roles\"\n", &format!("groups_claim = \"realm_access.roles\"\n{first_extra}\n"))
        .replace(
            "[policy]",
            &format!(
                "[[auth.issuers]]\nissuer = \"https://ci.example\"\naudiences = [\"mlflow\"]\nalgorithms = [\"RS256\"]\njwks_file = \"ci.json\"\n{second_extra}\n[policy]"
            ),
        )
}

#[test]
fn subjects_are_folded_by_default_and_qualified_for_every_issuer_but_the_first() {
    let c = parse(&two_issuers("", "")).ok();
    let rules: Vec<SubjectRule> = c.iter().flat_map(|c| c.auth.issuers.iter().map(|i| i.subject.clone())).collect();
    assert_eq!(
        rules,
        vec![
            SubjectRule { fold: true, prefix: String::new() },
            SubjectRule { fold: true, prefix: "https://ci.example#".into() }
        ]
    );
    assert_eq!(rules.first().map(|r| r.identity("Ａlice")), Some("alice".to_string()));
    assert_eq!(rules.get(1).map(|r| r.identity("Alice")), Some("https://ci.example#alice".to_string()));
    let exact = parse(&two_issuers("subject_normalization = \"exact\"", "subject_prefix = \"ci:\"")).ok();
    let rules: Vec<SubjectRule> = exact.iter().flat_map(|c| c.auth.issuers.iter().map(|i| i.subject.clone())).collect();
    assert_eq!(rules.first().map(|r| r.identity("Alice")), Some("Alice".to_string()));
    assert_eq!(rules.get(1).map(|r| r.identity("Bob")), Some("ci:bob".to_string()));
}

#[test]
fn two_issuers_cannot_share_a_subject_space() {
    for (first, second, key) in [
        ("", "subject_prefix = \"\"", "auth.issuers[1].subject_prefix"),
        ("subject_prefix = \"a:\"", "subject_prefix = \"a:b\"", "auth.issuers[1].subject_prefix"),
        ("subject_prefix = \"ci:x\"", "subject_prefix = \"ci:\"", "auth.issuers[1].subject_prefix"),
        ("subject_normalization = \"lower\"", "", "auth.issuers[0].subject_normalization"),
    ] {
        let e = err_of(&two_issuers(first, second));
        assert!(e.contains(key), "{first} / {second}: {e}");
    }
    // The unqualified issuer may be any one of them.
    assert!(parse(&two_issuers("subject_prefix = \"idp:\"", "subject_prefix = \"\"")).is_ok());
}

#[test]
fn policy_engine_defaults_to_auto_and_can_be_forced_to_the_interpreter() {
    use crate::config::EngineChoice;
    assert_eq!(parse(GOOD).ok().map(|c| c.policy.engine), Some(EngineChoice::Auto));
    let forced = parse(&format!("{GOOD}engine = \"interpreter\"\n")).ok();
    assert_eq!(forced.map(|c| c.policy.engine), Some(EngineChoice::Interpreter));
}

#[test]
fn an_audit_log_without_a_key_is_refused_with_how_to_make_one() {
    let e = err_of(&format!("{GOOD}[audit]\nsink = \"file\"\nfile = \"audit.log\"\n"));
    assert!(e.contains("audit.key_file: missing") && e.contains("head -c 32 /dev/urandom | base64"), "{e}");
    let both = format!("{GOOD}[audit]\nsink = \"stdout\"\nkey_file = \"k\"\nkey_env = \"K\"\n");
    assert!(err_of(&both).contains("not both"));
    let zero = format!("{GOOD}[audit]\nsink = \"stdout\"\nkey_env = \"K\"\ncheckpoint_interval_secs = 0\n");
    assert!(err_of(&zero).contains("audit.checkpoint_interval_secs"));
}

#[test]
fn audit_key_and_checkpoint_settings_have_defaults() {
    let c = parse(&format!("{GOOD}[audit]\nsink = \"file\"\nfile = \"audit.log\"\nkey_file = \"audit.key\"\n")).ok();
    let a = c.and_then(|c| c.audit);
    assert_eq!(a.as_ref().map(|a| a.key.clone()), Some(crate::audit::KeySource::File("/etc/gate/audit.key".into())));
    assert_eq!(a.as_ref().map(|a| a.checkpoint_every_records), Some(1000));
    assert_eq!(a.map(|a| a.checkpoint_interval), Some(Duration::from_secs(60)));
}

#[test]
fn overload_limits_have_defaults_and_refuse_zero() {
    let c = parse(GOOD).ok();
    let load = c.as_ref().map(|c| c.server.load.clone());
    assert_eq!(load.as_ref().map(|l| l.max_read_body_bytes), Some(64 * 1024));
    assert_eq!(load.as_ref().map(|l| l.max_buffered_body_bytes), Some(64 << 20));
    assert_eq!(load.as_ref().map(|l| l.max_connections), Some(256));
    assert_eq!(load.as_ref().map(|l| l.body_idle_timeout), Some(Duration::from_secs(10)));
    let e = err_of(&GOOD.replace("[upstream]", "max_connections = 0\n[upstream]"));
    assert!(e.contains("server.max_connections") && e.contains("greater than 0"), "{e}");
    let e = err_of(&GOOD.replace("[upstream]", "body_idle_timeout_secs = 0\n[upstream]"));
    assert!(e.contains("server.body_idle_timeout_secs"), "{e}");
    let e = err_of(&GOOD.replace("[upstream]", "http2_stream_window_bytes = 10\n[upstream]"));
    assert!(e.contains("server.http2_stream_window_bytes"), "{e}");
}
