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
    let op = Operation::plain("GetRun", true, Resource::Run);
    let query = mlflow_gate::mlflow::params::query_map(&[("run_id".into(), "r1".into())]);
    let request =
        RequestFacts { method: "GET", path: "/api/2.0/mlflow/runs/get", query: &query, body: None, workspace: None };
    match policy.decide(&ben(), &op, &request, resource) {
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
