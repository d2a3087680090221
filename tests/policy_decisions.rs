//! The decision cache: a repeated input under the same bundle is answered from the cache; any change of a fact the
//! policy reads (here a grant) is evaluated afresh and decides differently; a reload starts afresh; a bundle that
//! calls an impure builtin (the clock) is evaluated every time.

mod common;

use std::path::Path;
use std::time::Duration;

use mlflow_gate::auth::{Principal, Via};
use mlflow_gate::mlflow::routes::{Operation, Resource};
use mlflow_gate::policy::input::RequestFacts;
use mlflow_gate::policy::{Bundle, DecisionStats, Policy};
use serde_json::{json, Value};

fn ben() -> Principal {
    Principal {
        sub: "ben".into(),
        issuer: "https://idp.example".into(),
        groups: vec!["team-b".into()],
        claims: json!({"sub": "ben"}),
        via: Via::Bearer,
    }
}

/// A read of run r1 of ana's experiment 1, whose experiment grants `grants` to users.
fn run_of_ana(grants: Value) -> Value {
    json!({"target": {}, "permissions": {
        "workspace": null, "anchor": "run", "exists": true, "problem": null,
        "chain": [
            {"type": "run", "id": "r1", "name": "train", "owner": "ana", "grants": {"users": {}, "groups": {}}},
            {"type": "experiment", "id": "1", "name": "exp-a", "owner": "ana", "grants": {"users": grants, "groups": {}}},
        ],
    }})
}

fn decide(policy: &Policy, resource: &Value) -> bool {
    decide_as(policy, &ben(), resource)
}

fn decide_as(policy: &Policy, who: &Principal, resource: &Value) -> bool {
    let op = Operation::plain("GetRun", true, Resource::Run);
    let query = mlflow_gate::mlflow::params::query_map(&[("run_id".into(), "r1".into())]);
    let request =
        RequestFacts { method: "GET", path: "/api/2.0/mlflow/runs/get", query: &query, body: None, workspace: None };
    match policy.decide(who, &op, &request, resource) {
        Ok(decision) => decision.allow,
        Err(e) => panic!("evaluation failed: {e}"),
    }
}

fn load(dir: &Path) -> Bundle {
    match Bundle::load(dir, "data.mlflow_gate.decision", Duration::from_millis(500)) {
        Ok(bundle) => bundle,
        Err(e) => panic!("bundle: {e}"),
    }
}

#[test]
fn a_repeated_input_is_answered_from_the_cache_and_a_changed_grant_is_evaluated() {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let bundle = load(&policies);
    assert_eq!(bundle.impure_builtin(), None, "the default bundle must be cacheable");
    let policy = Policy::new(bundle);
    let readable = run_of_ana(json!({}));
    let hidden = run_of_ana(json!({"ben": "NO_PERMISSIONS"}));
    assert!(decide(&policy, &readable), "an engineer reads a colleague's run by default");
    assert!(decide(&policy, &readable));
    assert_eq!(policy.decision_stats(), DecisionStats { hits: 1, misses: 1, uncacheable: 0 });
    assert!(!decide(&policy, &hidden), "a NO_PERMISSIONS grant is a new input: evaluated, and denied");
    assert!(!decide(&policy, &hidden));
    assert!(decide(&policy, &readable), "the revoked grant's absence is still the earlier input");
    assert_eq!(policy.decision_stats(), DecisionStats { hits: 3, misses: 2, uncacheable: 0 });
}

#[test]
fn a_reload_starts_afresh() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let write = |allow: bool| {
        let text = format!("package mlflow_gate\nimport rego.v1\n\ndecision := {{\"allow\": {allow}}}\n");
        std::fs::write(dir.path().join("p.rego"), text).unwrap_or_else(|e| panic!("{e}"));
    };
    write(true);
    let policy = Policy::new(load(dir.path()));
    let resource = run_of_ana(json!({}));
    assert!(decide(&policy, &resource));
    assert!(decide(&policy, &resource));
    write(false);
    assert!(policy.reload_now().is_ok());
    assert!(!decide(&policy, &resource), "the new bundle decides, not the cached decision of the old one");
    assert_eq!(policy.decision_stats(), DecisionStats { hits: 1, misses: 2, uncacheable: 0 });
}

#[test]
fn a_bundle_that_reads_the_clock_is_evaluated_every_time() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = "package mlflow_gate\nimport rego.v1\n\n# sprintf and input.trace are not impure calls\nx := sprintf(\"%v\", [input.trace])\n\ndecision := {\"allow\": time.now_ns () > 0}\n";
    std::fs::write(dir.path().join("p.rego"), text).unwrap_or_else(|e| panic!("{e}"));
    let bundle = load(dir.path());
    assert_eq!(bundle.impure_builtin(), Some("time.now_ns"));
    let policy = Policy::new(bundle);
    let resource = run_of_ana(json!({}));
    assert!(decide(&policy, &resource));
    assert!(decide(&policy, &resource));
    assert_eq!(policy.decision_stats(), DecisionStats { hits: 0, misses: 0, uncacheable: 2 });

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = "package mlflow_gate\nimport rego.v1\n\n# a comment may say time.now_ns() or trace (x)\nx := sprintf(\"%v # not a comment\", [input.trace]) # print(1)\n\ndecision := {\"allow\": true}\n";
    std::fs::write(dir.path().join("p.rego"), text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        load(dir.path()).impure_builtin(),
        None,
        "sprintf is not print, input.trace is not trace(), comments are not code"
    );
    let text = "package mlflow_gate\nimport rego.v1\n\nx := \"# a string, then code:\" # comment\ny := `raw # \"` \n\nshown if print(x, y)\n\ndecision := {\"allow\": true}\n";
    std::fs::write(dir.path().join("p.rego"), text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(load(dir.path()).impure_builtin(), Some("print"), "a # inside a string does not start a comment");
}

#[test]
fn a_disabled_cache_evaluates_every_time() {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let policy = Policy::new(load(&policies)).with_decision_cache(0);
    let resource = run_of_ana(json!({}));
    assert!(decide(&policy, &resource));
    assert!(decide(&policy, &resource));
    assert_eq!(policy.decision_stats(), DecisionStats { hits: 0, misses: 0, uncacheable: 2 });
}

fn with_claims(claims: Value) -> Principal {
    Principal { claims, ..ben() }
}

#[test]
fn fresh_tokens_of_one_caller_share_a_decision_when_the_bundle_declares_the_claims_it_reads() {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let bundle = load(&policies);
    assert_eq!(bundle.claims(), Some(&[][..]), "the default bundle reads no claim");
    let policy = Policy::new(bundle);
    let first = with_claims(json!({"sub": "ben", "exp": 1_900_000_000u64, "iat": 1, "jti": "a"}));
    let second = with_claims(json!({"sub": "ben", "exp": 1_900_000_060u64, "iat": 61, "jti": "b"}));
    assert!(decide_as(&policy, &first, &run_of_ana(json!({}))));
    assert!(decide_as(&policy, &second, &run_of_ana(json!({}))));
    assert_eq!(policy.decision_stats(), DecisionStats { hits: 1, misses: 1, uncacheable: 0 });

    // Without the declaration every claim is in the document: two tokens, two evaluations.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = "package mlflow_gate\nimport rego.v1\n\ndecision := {\"allow\": true}\n";
    std::fs::write(dir.path().join("p.rego"), text).unwrap_or_else(|e| panic!("{e}"));
    let policy = Policy::new(load(dir.path()));
    assert!(decide_as(&policy, &first, &run_of_ana(json!({}))));
    assert!(decide_as(&policy, &second, &run_of_ana(json!({}))));
    assert_eq!(policy.decision_stats(), DecisionStats { hits: 0, misses: 2, uncacheable: 0 });
}

#[test]
fn a_declared_claim_is_handed_over_and_the_others_are_not() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("data.json"), r#"{"gate": {"claims": ["email"]}}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    // `input.principal[c]` with c computed is not the word, so the loader lets it through: it sees the narrowed claims.
    let text = "package mlflow_gate\nimport rego.v1\n\nc := concat(\"\", [\"cla\", \"ims\"])\n\ndecision := {\"allow\": true} if {\n\tinput.principal.claims.email == \"ben@example.com\"\n\tcount(input.principal[c]) == 1\n} else := {\"allow\": false}\n";
    std::fs::write(dir.path().join("p.rego"), text).unwrap_or_else(|e| panic!("{e}"));
    let policy = Policy::new(load(dir.path()));
    assert!(decide_as(
        &policy,
        &with_claims(json!({"sub": "ben", "email": "ben@example.com", "exp": 5, "jti": "x"})),
        &run_of_ana(json!({}))
    ));
    assert!(!decide_as(
        &policy,
        &with_claims(json!({"sub": "ben", "email": "eve@example.com"})),
        &run_of_ana(json!({}))
    ));
}

#[test]
fn a_bundle_reading_a_claim_it_does_not_declare_is_refused_with_the_line() {
    let refused = |rego: &str| {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("data.json"), r#"{"gate": {"claims": ["email"]}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let text = format!("package mlflow_gate\nimport rego.v1\n\n# claims in a comment do not count\n{rego}\n");
        std::fs::write(dir.path().join("p.rego"), text).unwrap_or_else(|e| panic!("{e}"));
        Bundle::load(dir.path(), "data.mlflow_gate.decision", Duration::from_millis(500)).err().map(|e| e.to_string())
    };
    let undeclared = refused("decision := {\"allow\": input.principal.claims.groups_v2 == \"x\"}");
    let undeclared = undeclared.unwrap_or_default();
    assert!(undeclared.contains("p.rego:5") && undeclared.contains("\"groups_v2\""), "{undeclared}");
    let whole = refused("decision := {\"allow\": count(input.principal.claims) > 0}").unwrap_or_default();
    assert!(whole.contains("whole or with a computed key") && whole.contains("data.gate.claims"), "{whole}");
    let keyed =
        refused("k := \"email\"\ndecision := {\"allow\": input.principal.claims[k] == \"x\"}").unwrap_or_default();
    assert!(keyed.contains("p.rego:6"), "{keyed}");
    let by_name =
        "decision := {\"allow\": true} if input.principal.claims[\"email\"] == \"x\"\nelse := {\"allow\": false}";
    assert_eq!(refused(by_name), None);
    let bad = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(bad.path().join("data.json"), r#"{"gate": {"claims": "email"}}"#).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(bad.path().join("p.rego"), "package mlflow_gate\nimport rego.v1\n\ndecision := {\"allow\": true}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let err = Bundle::load(bad.path(), "data.mlflow_gate.decision", Duration::from_millis(500)).err();
    assert!(err.is_some_and(|e| e.to_string().contains("must be a list")));
}
