//! Policy, start-up and tooling: realistic input documents (a read, a model registration, a Production promotion
//! with full registry facts, as `policies/README.md` describes them). Every bundle is self-tested on them before it
//! serves, and the benchmark evaluates them.

use serde_json::{json, Map, Value};

use super::input::{self, RequestFacts};
use crate::auth::Principal;
use crate::mlflow::routes::{Operation, Resource};

/// One request as the policy phase would see it, kept in parts so that building the input can be measured too.
pub struct Sample {
    /// Short name, used in self-test failures and benchmark ids.
    pub name: &'static str,
    principal: Principal,
    operation: Operation,
    method: &'static str,
    path: &'static str,
    query: Map<String, Value>,
    body: Option<Map<String, Value>>,
    resource: Value,
}

impl Sample {
    fn request(&self) -> RequestFacts<'_> {
        RequestFacts {
            method: self.method,
            path: self.path,
            query: &self.query,
            body: self.body.as_ref(),
            workspace: None,
        }
    }

    /// The input document, built as the gate builds it for a request.
    pub fn document(&self) -> Value {
        self.document_as(&self.principal)
    }

    /// The input document of this request made by someone else.
    fn document_as(&self, principal: &Principal) -> Value {
        input::build(principal, &self.operation, &self.request(), self.resource.clone())
    }

    /// The input document as the request path builds it for regorus: exactly the per-request work before
    /// evaluation.
    pub fn input(&self) -> regorus::Value {
        input::build_rego(&self.principal, &self.operation, &self.request(), &self.resource)
    }
}

/// The realistic samples: a read, a CreateModelVersion, a Production TransitionModelVersionStage by CI.
pub fn all() -> Vec<Sample> {
    vec![read(), create_model_version(), production_transition(), artifact_upload(), search_results()]
}

/// One input a bundle is self-tested on.
pub struct SelfTest {
    /// Which sample.
    pub name: String,
    /// The input document.
    pub input: regorus::Value,
    /// Whether the decision must be well formed; otherwise only evaluation errors and panics refuse the bundle.
    pub strict: bool,
}

/// What a bundle is self-tested on: the minimal read of [`input::sample`] (no registry facts at all) must yield a
/// well-formed decision; the realistic samples must evaluate without an error (a builtin regorus lacks, a runtime
/// error, the time limit), which regorus reports only when a rule using it is evaluated.
pub fn self_test_inputs() -> Vec<SelfTest> {
    let mut inputs = vec![SelfTest { name: "minimal read".into(), input: input::sample(), strict: true }];
    inputs.extend(all().iter().map(|s| SelfTest { name: s.name.into(), input: s.input(), strict: false }));
    inputs
}

/// What the bytecode VM must agree with the interpreter on before a bundle runs on it: the self-test inputs, then
/// every realistic sample as each kind of principal (an engineer, CI, a reviewer, on-call, an admin, nobody), and
/// with its registry facts degraded (no source run, a failing metric, no approvals, a foreign creator), so that
/// denials and their reasons are compared too.
pub fn differential_inputs() -> Vec<SelfTest> {
    let mut inputs = self_test_inputs();
    let who: [(&str, &[&str]); 6] = [
        ("dave", &[]),
        ("ci-bot", &["mlflow-ci"]),
        ("bob", &["ml-senior"]),
        ("carol", &["ml-oncall"]),
        ("root", &["mlflow-admin", "ml-senior"]),
        ("", &[]),
    ];
    type Change = fn(&mut Value);
    let degrade: [(&str, Change); 12] = [
        ("as is", |_| {}),
        ("no source run", |r| r["source_run"] = Value::Null),
        // Missing keys: where regorus' VM and interpreter have been seen to differ.
        ("no metrics", |r| r["source_run"]["metrics"] = json!({})),
        ("no tags", |r| r["source_run"]["tags"] = json!({})),
        ("failing metric", |r| r["source_run"]["metrics"]["val_auc"] = json!(0.71)),
        ("no approvals", |r| r["approvals"] = json!([])),
        ("was in production", |r| r["model_version"]["was_in_production"] = json!(true)),
        // Artifact writes: registered files, someone else's run, a location nobody owns.
        ("registered files", |r| {
            r["artifact"]["registered_versions"] =
                json!([{"name": "fraud-detector", "version": "7", "relation": "under"}])
        }),
        ("foreign owner", |r| r["artifact"]["owner"] = json!("mallory")),
        ("unowned location", |r| r["artifact"] = json!({"kind": "unknown", "owned": false, "registered_versions": []})),
        // Resource permissions: someone else's model, and an explicit deny of every sample principal's group.
        ("foreign model", |r| {
            if let Some(owner) = r.pointer_mut("/permissions/chain/0/owner") {
                *owner = json!("mallory");
            }
        }),
        ("no permissions", |r| {
            if let Some(groups) = r.pointer_mut("/permissions/chain/0/grants/groups") {
                *groups = json!({"ml-engineers": "NO_PERMISSIONS", "mlflow-ci": "NO_PERMISSIONS",
                    "ml-senior": "NO_PERMISSIONS"});
            }
        }),
    ];
    for sample in all() {
        for (sub, groups) in who {
            for (what, change) in degrade {
                let mut doc = sample.document_as(&principal(sub, groups));
                if let Some(resource) = doc.get_mut("resource").filter(|r| r.is_object()) {
                    change(resource);
                }
                let name = format!("{} by {sub:?}, {what}", sample.name);
                inputs.push(SelfTest { name, input: input::to_rego(&doc), strict: false });
            }
        }
    }
    inputs
}

fn principal(sub: &str, groups: &[&str]) -> Principal {
    Principal {
        sub: sub.into(),
        issuer: "https://idp.example".into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        claims: json!({
            "iss": "https://idp.example", "sub": sub, "aud": "mlflow", "groups": groups,
            "iat": 1_795_700_000u64, "exp": 1_795_703_600u64, "email": format!("{sub}@example.com"),
        }),
        via: crate::auth::Via::Bearer,
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

const RUN: &str = "4f1c2a9e0b7d4c3e8a6f5b2d1c0e9f8a";

fn registered_model() -> Value {
    json!({
        "name": "fraud-detector",
        "tags": {"team": "risk"},
        "aliases": {"champion": "6"},
        "latest_versions": {"Production": "6", "Staging": "7"},
        "created_by": "alice",
    })
}

fn source_run() -> Value {
    json!({
        "run_id": RUN, "experiment_id": "1", "artifact_uri": format!("mlflow-artifacts:/1/{RUN}/artifacts"),
        "status": "FINISHED",
        "metrics": {"val_auc": 0.91, "val_loss": 0.21},
        "params": {"C": "1.0", "max_iter": "200"},
        "tags": {"data_version": "v3", "git_commit": "9c37091", "mlflow.user": "alice"},
    })
}

/// The permission facts of the registered model (`input.resource.permissions`): alice created it; a reviewer group
/// was granted READ.
fn model_permissions() -> Value {
    json!({"workspace": null, "anchor": "registered_model", "exists": true, "problem": null, "chain": [
        {"type": "registered_model", "id": "fraud-detector", "name": "fraud-detector", "owner": "alice",
            "grants": {"users": {}, "groups": {"ml-senior": "READ"}}}]})
}

/// The second decision of a runs search: which results of the page the caller may read (two of alice's runs, one
/// of an experiment that denies her group, one of a model whose creator she is).
fn search_results() -> Sample {
    let chain = |owner: &str, groups: Value| {
        json!([{"type": "run", "id": RUN, "name": "train", "owner": owner, "grants": {"users": {}, "groups": {}}},
            {"type": "experiment", "id": "1", "name": "fraud", "owner": owner,
                "grants": {"users": {}, "groups": groups}}])
    };
    let body = json!({"experiment_ids": ["1"], "max_results": 4});
    Sample {
        name: "search results",
        principal: principal("alice", &["ml-engineers"]),
        operation: Operation::plain("SearchRuns", true, Resource::Run),
        method: "POST",
        path: "/api/2.0/mlflow/runs/search",
        query: Map::new(),
        body: Some(object(body)),
        resource: json!({"permissions": {"workspace": null, "candidates": [
            chain("alice", json!({})), chain("bob", json!({})),
            chain("bob", json!({"ml-engineers": "NO_PERMISSIONS"})), model_permissions()["chain"].clone()]}}),
    }
}

/// GetRegisteredModel by an engineer.
fn read() -> Sample {
    let query = crate::mlflow::params::query_map(&[("name".into(), "fraud-detector".into())]);
    Sample {
        name: "read",
        principal: principal("alice", &["ml-engineers"]),
        operation: Operation::plain("GetRegisteredModel", true, Resource::RegisteredModel),
        method: "GET",
        path: "/api/2.0/mlflow/registered-models/get",
        query,
        body: None,
        resource: json!({"target": {"name": "fraud-detector"}, "registered_model": registered_model(),
            "permissions": model_permissions()}),
    }
}

/// CreateModelVersion from a finished run, by an engineer.
fn create_model_version() -> Sample {
    let source = format!("mlflow-artifacts:/1/{RUN}/artifacts/model");
    let body = json!({"name": "fraud-detector", "source": source, "run_id": RUN});
    Sample {
        name: "create model version",
        principal: principal("alice", &["ml-engineers"]),
        operation: Operation::plain("CreateModelVersion", false, Resource::ModelVersion),
        method: "POST",
        path: "/api/2.0/mlflow/model-versions/create",
        query: Map::new(),
        body: Some(object(body.clone())),
        resource: json!({
            "target": body,
            "registered_model": registered_model(),
            "permissions": model_permissions(),
            "source_run": source_run(),
            "source_matches_run": true,
            "lineage": {"verified": true, "kind": "run", "run_owner": "alice", "logged_model_creator": null,
                "reason": null},
        }),
    }
}

/// TransitionModelVersionStage to Production by CI, of an approved Staging version that passes its gate.
fn production_transition() -> Sample {
    let body =
        json!({"name": "fraud-detector", "version": "7", "stage": "Production", "archive_existing_versions": true});
    Sample {
        name: "production transition",
        principal: principal("ci-bot", &["mlflow-ci"]),
        operation: Operation::plain("TransitionModelVersionStage", false, Resource::ModelVersion),
        method: "POST",
        path: "/api/2.0/mlflow/model-versions/transition-stage",
        query: Map::new(),
        body: Some(object(body.clone())),
        resource: json!({
            "target": body,
            "registered_model": registered_model(),
            "permissions": model_permissions(),
            "model_version": {
                "name": "fraud-detector", "version": "7", "current_stage": "Staging",
                "source": format!("runs:/{RUN}/model"), "run_id": RUN, "model_id": "m-0a1b2c3d",
                "status": "READY", "tags": {"validated": "true"}, "aliases": ["challenger"],
                "created_by": "alice",
                "stage_history": [{"stage": "Staging", "by": "ci-bot", "at": 1_795_700_000_000u64}],
                "was_in_production": false,
            },
            "source_run": source_run(),
            "source_matches_run": true,
            "lineage": {"verified": true, "kind": "run", "run_owner": "alice", "logged_model_creator": null,
                "reason": null},
            "approvals": [{"approver": "bob", "stage": "Production", "at": 1_795_700_100_000u64, "valid": true}],
        }),
    }
}

/// An engineer uploads a file into her own run's artifact directory (a proxied-store PUT), with the artifact facts.
fn artifact_upload() -> Sample {
    let path = format!("1/{RUN}/artifacts/plots/roc.png");
    Sample {
        name: "artifact upload",
        principal: principal("alice", &["ml-engineers"]),
        operation: Operation {
            path_params: vec![("artifact_path", path.clone())],
            ..Operation::plain("UploadArtifact", false, Resource::Artifact)
        },
        method: "PUT",
        path: "/api/2.0/mlflow-artifacts/artifacts/1/4f1c2a9e0b7d4c3e8a6f5b2d1c0e9f8a/artifacts/plots/roc.png",
        query: Map::new(),
        body: None,
        resource: json!({
            "target": {"artifact_path": path},
            "artifact": {
                "operation": "write", "location": format!("mlflow-artifacts:/{path}"), "path_problem": null,
                "kind": "run", "owned": true, "id": RUN, "experiment_id": "1",
                "entity_location": format!("mlflow-artifacts:/1/{RUN}/artifacts"), "owner": "alice",
                "frozen": false, "registered_versions": [],
            },
        }),
    }
}
