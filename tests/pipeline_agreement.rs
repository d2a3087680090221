//! `explain` and serving run one pipeline: a table of requests (the workflow routes, a DELETE with its parameters in
//! the query, CORS preflight, public and unknown routes, artifact writes, GraphQL, a workspace header) goes through
//! the gate (in front of the recording upstream) and through `explain`, and both must agree on the operation, the
//! target, the input document the policy saw and the decision.
//!
//! The serving side's input document is made observable by the bundle itself: the test's entrypoint is the
//! default decision plus one shadow-mode entry holding `json.marshal(input)`, which the audit log records.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use http::Method;
use mlflow_gate::config::Config;
use serde_json::{json, Value};

const ECHO_REGO: &str = r#"package echo

import rego.v1

base := data.mlflow_gate.decision

decision := object.union(base, {"would_deny": array.concat(base.would_deny, [json.marshal(input)])})
"#;

const RUN: &str = "4f1c2a9e0b7d4c3e8a6f5b2d1c0e9f8a";

/// A policy directory: the repository's bundle (without its tests) plus the echo entrypoint.
#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn echo_policies(dir: &Path) {
    for entry in std::fs::read_dir(policies_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "data.json" || (name.ends_with(".rego") && !name.ends_with("_test.rego")) {
            std::fs::copy(&path, dir.join(&name)).unwrap();
        }
    }
    std::fs::write(dir.join("echo.rego"), ECHO_REGO).unwrap();
}

/// The audit record of one request, waited for (the audit writer is asynchronous).
async fn audit_record(file: &Path, decision_id: &str) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["decision_id"] == decision_id);
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The input document without its principal (explain's is hypothetical: no token, no issuer).
fn without_principal(input: &Value) -> Value {
    let mut input = input.clone();
    if let Some(o) = input.as_object_mut() {
        o.remove("principal");
    }
    input
}

struct Case {
    method: Method,
    path: String,
    workspace: Option<&'static str>,
    body: Option<String>,
}

fn case(method: Method, path: &str, body: Option<Value>) -> Case {
    Case { method, path: path.to_string(), workspace: None, body: body.map(|b| b.to_string()) }
}

fn cases() -> Vec<Case> {
    let mv = json!({"name": "m", "version": "1", "stage": "Production"});
    vec![
        case(Method::POST, "/api/2.0/mlflow/transition-requests/create", Some(mv.clone())),
        case(Method::POST, "/ajax-api/2.0/mlflow/transition-requests/approve", Some(mv.clone())),
        case(Method::POST, "/api/2.0/mlflow/transition-requests/reject", Some(mv)),
        case(Method::DELETE, "/api/2.0/mlflow/transition-requests/delete?name=m&version=1&stage=Production", None),
        case(Method::GET, "/api/2.0/mlflow/transition-requests/list?name=m&version=1", None),
        case(
            Method::POST,
            "/api/2.0/mlflow/comments/create",
            Some(json!({"name": "m", "version": "1", "comment": "ok"})),
        ),
        case(Method::DELETE, "/api/2.0/mlflow/comments/delete?id=not-a-comment-id", None),
        case(
            Method::POST,
            "/api/2.0/mlflow/model-versions/transition-stage",
            Some(json!({"name": "m", "version": 1, "stage": "staging"})),
        ),
        case(Method::OPTIONS, "/api/2.0/mlflow/registered-models/create", None),
        case(Method::GET, "/health", None),
        case(Method::GET, "/version", None),
        case(Method::POST, "/api/2.0/mlflow/registered-models/obliterate", Some(json!({}))),
        case(Method::GET, "/api/2.0/mlflow/not-a-route?x=1", None),
        case(Method::POST, &format!("/ajax-api/2.0/mlflow/upload-artifact?run_uuid={RUN}&path=plots"), Some(json!({}))),
        case(Method::PUT, &format!("/api/2.0/mlflow-artifacts/artifacts/1/{RUN}/artifacts/x.txt"), Some(json!({}))),
        case(Method::POST, "/graphql", Some(json!({"query": "{ __typename }"}))),
        case(Method::POST, "/api/2.0/mlflow/registered-models/create", Some(json!({"name": "fraud"}))),
        case(
            Method::POST,
            "/api/2.0/mlflow/registered-models/set-tag",
            Some(json!({"name": "m", "key": "mlflow_gate.x", "value": "1"})),
        ),
        Case { workspace: Some("team"), ..case(Method::GET, "/api/2.0/mlflow/experiments/search?max_results=5", None) },
        Case {
            workspace: Some("team"),
            ..case(Method::POST, "/api/2.0/mlflow/registered-models/create", Some(json!({"name": "fraud"})))
        },
        Case { workspace: Some("Team"), ..case(Method::GET, "/api/2.0/mlflow/experiments/search", None) },
    ]
}

#[tokio::test]
async fn explain_and_serving_agree_on_operation_target_input_and_decision() {
    let answers = vec![
        (
            "/api/2.0/mlflow/model-versions/get",
            r#"{"model_version": {"name": "m", "version": "1", "current_stage": "Staging", "run_id": "", "tags": []}}"#,
        ),
        ("/api/2.0/mlflow/registered-models/get", r#"{"registered_model": {"name": "m", "tags": []}}"#),
    ];
    let upstream = Recorder::start(Behaviour { answers, ..Behaviour::default() }).await;
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    echo_policies(&policies);
    let audit = dir.path().join("audit.log");
    let key = dir.path().join("audit.key");
    std::fs::write(&key, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
    let toml = format!(
        "{}entrypoint = \"data.echo.decision\"\n\n[audit]\nsink = \"file\"\nfile = \"{}\"\nkey_file = \"{}\"\n",
        config_toml(upstream.addr, &keys.jwks_path(), &policies, ""),
        audit.display(),
        key.display()
    );
    let config = Config::parse(&toml, Path::new("test-gate.toml")).unwrap();
    let explain_upstream = mlflow_gate::proxy::Upstream::new(&config.upstream).unwrap();
    let p = &config.policy;
    let bundle = mlflow_gate::policy::Bundle::load_with(&p.dir, &p.entrypoint, p.eval_timeout, p.engine).unwrap();
    let gate = GateHandle::start(config).await;
    let token = keys.token("alice", &["ml-engineers"]);
    let principal = mlflow_gate::explain::principal("alice", &["ml-engineers".to_string()]);

    let mut outcomes = Vec::new();
    for c in cases() {
        let label = format!("{} {} (workspace {:?})", c.method, c.path, c.workspace);
        let headers: Vec<(&str, &str)> = c.workspace.map(|w| ("x-mlflow-workspace", w)).into_iter().collect();
        let served = send(c.method.clone(), &gate.url(&c.path), Some(&token), &headers, c.body.as_deref()).await;
        let explained = mlflow_gate::explain::explain_for(
            c.method.as_str(),
            &c.path,
            c.body.as_deref(),
            &principal,
            c.workspace,
            Some(&explain_upstream),
            Some(&bundle),
        )
        .await;
        let id = served.headers["x-mlflow-gate-request-id"].to_str().unwrap().to_string();
        let op = match &explained.operation {
            Err(why) => {
                // Refused before the policy: the gate answers with the same status and never forwards.
                let status = why.split(':').next().unwrap_or_default();
                assert_eq!(status, served.status.as_str(), "{label}: explain {why:?}, gate {}", served.message());
                outcomes.push(format!("refused {status}"));
                continue;
            }
            Ok(op) => op,
        };
        let Some(input) = &explained.input else {
            // Public: forwarded without authentication, never asked of the policy.
            assert!(op.public, "{label}");
            assert!(served.status.is_success(), "{label}: {}", served.status);
            assert!(upstream.hits(c.path.split('?').next().unwrap_or_default()) > 0, "{label}: not forwarded");
            outcomes.push("public".to_string());
            continue;
        };
        let record = audit_record(&audit, &id).await.unwrap_or_else(|| panic!("{label}: no audit record"));
        assert_eq!(record["operation"]["rpc"], op.rpc, "{label}");
        assert_eq!(record["operation"]["resource_type"], op.resource.as_str(), "{label}");
        let echoed = record["would_deny"].as_array().and_then(|w| w.last()).and_then(Value::as_str);
        let seen: Value = serde_json::from_str(echoed.unwrap_or_else(|| panic!("{label}: {record}"))).unwrap();
        assert_eq!(without_principal(&seen), without_principal(input), "{label}: input documents differ");
        assert_eq!(seen["resource"]["target"], input["resource"]["target"], "{label}");
        // The decision on explain's document, with the principal the gate authenticated, is the gate's.
        let mut asked = input.clone();
        asked["principal"] = seen["principal"].clone();
        let decision = mlflow_gate::policy::evaluate(&bundle, mlflow_gate::policy::input::to_rego(&asked)).unwrap();
        let served_allow = record["decision"] == "allow";
        assert_eq!(decision.allow, served_allow, "{label}: {record}");
        assert_eq!(json!(decision.reasons), record["reasons"], "{label}");
        assert_eq!(json!(decision.flags.get("would_deny")), json!(record["would_deny"]), "{label}");
        if !served_allow {
            assert_eq!(served.status, http::StatusCode::FORBIDDEN, "{label}");
        }
        outcomes.push(format!("{} {}", op.rpc, record["decision"]));
    }
    // Every kind of outcome was compared (a table that only hit refusals would prove little).
    let want = [
        "CreateTransitionRequest \"allow\"",
        "ApproveTransitionRequest \"denied\"",
        "RejectTransitionRequest \"denied\"",
        "DeleteTransitionRequest \"denied\"",
        "ListTransitionRequests \"allow\"",
        "CreateComment \"allow\"",
        "refused 404",
        "TransitionModelVersionStage \"denied\"",
        "public",
        "public",
        "public",
        "refused 403",
        "Unknown \"allow\"",
        "UploadRunArtifact \"denied\"",
        "UploadArtifact \"denied\"",
        "GraphQL \"allow\"",
        "CreateRegisteredModel \"allow\"",
        "refused 403",
        "SearchExperiments \"allow\"",
        "CreateRegisteredModel \"allow\"",
        "refused 400",
    ];
    assert_eq!(outcomes, want);
    gate.stop().await;
}
