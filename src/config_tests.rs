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
