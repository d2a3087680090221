//! The default bundle's `data.gate.facts` declarations are sound: for every RPC it declares, the policy decides the
//! same on the narrowed `input.resource` (only the declared facts, as the gate now looks up) as on every fact, for
//! each kind of caller and for ordinary and reserved tag keys. An RPC declared without a case here fails the test.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use mlflow_gate::auth::Principal;
use mlflow_gate::mlflow::routes;
use mlflow_gate::pipeline::enrich::needs::declared_by;
use mlflow_gate::pipeline::enrich::{Fact, Needs};
use mlflow_gate::policy::{input, Bundle};
use serde_json::{json, Map, Value};

/// Every fact the enrichment can produce, with values that rules would react to (a protected alias held, a
/// Production version with history, approvals, a verified lineage).
fn every_fact(target: &Map<String, Value>) -> Value {
    json!({
        "registered_model": {"name": "fraud-detector", "created_by": "bob", "aliases": {"champion": "1"},
            "latest_versions": {"Production": "1"}, "tags": {"mlflow_gate.created_by": "bob"}},
        "alias_holder": {"alias": "champion", "version": "1"},
        "model_version": {"name": "fraud-detector", "version": "1", "current_stage": "Production",
            "source": "runs:/r1/model", "run_id": "r1", "status": "READY", "aliases": ["champion"],
            "created_by": "bob", "stage_history": [{"stage": "Production", "by": "ci", "at": 1}],
            "was_in_production": true, "tags": {}},
        "approvals": [{"by": "carol", "at": 1}],
        "open_requests": [],
        "source_run": {"run_id": "r1", "experiment_id": "1", "artifact_uri": "mlflow-artifacts:/1/r1/artifacts",
            "status": "FINISHED", "user_id": "bob", "lifecycle_stage": "active",
            "metrics": {"val_auc": 0.9}, "params": {}, "tags": {"mlflow.user": "bob", "data_version": "1",
            "git_commit": "abc"}},
        "source_matches_run": true,
        "lineage": {"verified": true, "kind": "run", "run_owner": "bob", "logged_model_creator": null, "reason": null},
        "target": target,
    })
}

/// The resource as the gate builds it when it looks up only `needs`.
fn narrowed(full: &Value, needs: Needs) -> Value {
    let mut out = full.clone();
    let Some(m) = out.as_object_mut() else { return out };
    let drop = |m: &mut Map<String, Value>, keys: &[&str]| keys.iter().for_each(|k| drop(m.remove(*k)));
    if !needs.has(Fact::RegisteredModel) {
        drop(m, &["registered_model", "alias_holder"]);
    }
    if !needs.has(Fact::ModelVersion) {
        drop(m, &["model_version", "approvals", "open_requests", "activity"]);
    }
    if !needs.has(Fact::SourceRun) {
        drop(m, &["source_run", "lineage", "source_matches_run"]);
    }
    out
}

fn principal(sub: &str, groups: &[&str]) -> Principal {
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    Principal {
        sub: sub.into(),
        issuer: common::ISSUER.into(),
        claims: json!({"sub": sub, "groups": groups}),
        groups,
        via: mlflow_gate::auth::Via::Bearer,
    }
}

#[test]
fn declared_rpcs_decide_the_same_without_the_facts_they_do_not_read() {
    let bundle = Bundle::load(&common::policies_dir(), "data.mlflow_gate.decision", Duration::from_secs(1)).unwrap();
    let declared = declared_by(&bundle);
    let cases: Vec<(&str, &str, Value)> = vec![
        ("POST", "/api/2.0/mlflow/registered-models/create", json!({"name": "fraud-detector"})),
        ("PATCH", "/api/2.0/mlflow/registered-models/update", json!({"name": "fraud-detector", "description": "d"})),
        (
            "POST",
            "/api/2.0/mlflow/registered-models/set-tag",
            json!({"name": "fraud-detector", "key": "team", "value": "x"}),
        ),
        (
            "POST",
            "/api/2.0/mlflow/registered-models/set-tag",
            json!({"name": "fraud-detector", "key": "mlflow_gate.created_by", "value": "x"}),
        ),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete-tag", json!({"name": "fraud-detector", "key": "team"})),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete", json!({"name": "fraud-detector"})),
        ("POST", "/api/2.0/mlflow/registered-models/rename", json!({"name": "fraud-detector", "new_name": "n"})),
        (
            "PATCH",
            "/api/2.0/mlflow/model-versions/update",
            json!({"name": "fraud-detector", "version": "1", "description": "d"}),
        ),
        (
            "POST",
            "/api/2.0/mlflow/model-versions/set-tag",
            json!({"name": "fraud-detector", "version": "1", "key": "team", "value": "x"}),
        ),
        (
            "POST",
            "/api/2.0/mlflow/model-versions/set-tag",
            json!({"name": "fraud-detector", "version": "1", "key": "mlflow_gate.stage_history", "value": "[]"}),
        ),
        (
            "DELETE",
            "/api/2.0/mlflow/model-versions/delete-tag",
            json!({"name": "fraud-detector", "version": "1", "key": "team"}),
        ),
    ];
    let callers = [
        principal("alice", &[]),
        principal("bob", &[]),
        principal("admin", &["mlflow-admin"]),
        principal("ci", &["mlflow-ci"]),
        principal("carol", &["ml-senior"]),
        principal("oncall", &["ml-oncall"]),
    ];
    let mut covered = BTreeSet::new();
    let mut narrowed_cases = 0;
    for (method, path, body) in &cases {
        let op = routes::classify(method, path).unwrap_or_else(|| panic!("{method} {path} is not a route"));
        covered.insert(op.rpc.to_string());
        let needs = declared.needs(&op);
        let body = body.as_object().cloned().unwrap_or_default();
        let full = every_fact(&body);
        let narrow = narrowed(&full, needs);
        if narrow != full {
            narrowed_cases += 1;
        }
        let query = Map::new();
        let facts = input::RequestFacts { method, path, query: &query, body: Some(&body), workspace: None };
        for who in &callers {
            let decide = |resource: &Value| {
                mlflow_gate::policy::evaluate(&bundle, input::build_rego(who, &op, &facts, resource)).unwrap()
            };
            let (with_all, with_declared) = (decide(&full), decide(&narrow));
            assert_eq!(
                (with_all.allow, &with_all.reasons),
                (with_declared.allow, &with_declared.reasons),
                "{} for {}: the declared facts {needs:?} change the decision",
                op.rpc,
                who.sub
            );
        }
    }
    let declared_rpcs: BTreeSet<String> = declared.rpcs().map(str::to_owned).collect();
    let missing: Vec<_> = declared_rpcs.difference(&covered).collect();
    assert!(missing.is_empty(), "declared in data.gate.facts without a case here: {missing:?}");
    assert!(narrowed_cases > 0, "the default bundle narrows nothing");
}

#[tokio::test]
async fn a_tag_write_makes_no_look_up_and_an_alias_delete_still_does() {
    let (gate, upstream, keys) = common::gate_with_recorder(common::Behaviour::default()).await;
    let token = keys.token("alice", &[]);
    let tag = common::Req::post(gate.url("/api/2.0/mlflow/registered-models/set-tag"))
        .token(&token)
        .json(r#"{"name":"fraud-detector","key":"team","value":"risk"}"#)
        .send()
        .await;
    assert_eq!(tag.status, http::StatusCode::OK, "{}", tag.message());
    assert_eq!(upstream.hits("/api/2.0/mlflow/registered-models/set-tag"), 1);
    // One look-up: the model's owner and grants for the permission check; none for the registry facts, which the
    // policy does not read for a tag write.
    assert_eq!(upstream.hits("/api/2.0/mlflow/registered-models/get"), 1, "the policy reads no registry fact for it");
    // A second EDIT-level write of a single gate takes the model's permission link from the cache (a tag write
    // changes nothing in it, so it was not dropped).
    let again = common::Req::post(gate.url("/api/2.0/mlflow/registered-models/set-tag"))
        .token(&token)
        .json(r#"{"name":"fraud-detector","key":"team","value":"fraud"}"#)
        .send()
        .await;
    assert_eq!(again.status, http::StatusCode::OK, "{}", again.message());
    assert_eq!(upstream.hits("/api/2.0/mlflow/registered-models/get"), 1, "the link came from the cache");
    // DeleteRegisteredModelAlias is not declared: the policy reads the model's aliases, so the gate looks them up.
    let _ = common::Req::delete(gate.url("/api/2.0/mlflow/registered-models/alias"))
        .token(&token)
        .json(r#"{"name":"fraud-detector","alias":"champion"}"#)
        .send()
        .await;
    // One more: the registry facts' (the aliases the policy reads); the permission check's link (EDIT) is cached.
    assert_eq!(upstream.hits("/api/2.0/mlflow/registered-models/get"), 2);
    // A MANAGE-level write (renaming the model) looks its link up afresh.
    let _ = common::Req::post(gate.url("/api/2.0/mlflow/registered-models/rename"))
        .token(&token)
        .json(r#"{"name":"fraud-detector","new_name":"fraud-detector-2"}"#)
        .send()
        .await;
    assert_eq!(upstream.hits("/api/2.0/mlflow/registered-models/get"), 3, "a MANAGE check is never cached");
    gate.stop().await;
}
