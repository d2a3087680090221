//! MLflow workspaces at the gate: the `X-MLFLOW-WORKSPACE` header is validated once, and every call the gate makes
//! for a request (registry look-ups, the logged-model look-up, workflow and stage-history writes, the forwarded
//! request) carries that request's workspace; the logged-model cache never answers for another workspace.

mod common;

use common::*;
use http::StatusCode;

const WS: &str = "x-mlflow-workspace";
const ALIAS: &str = "/api/2.0/mlflow/registered-models/alias";
const COMMENT: &str = "/api/2.0/mlflow/comments/create";
/// The gate percent-encodes the id as a path segment.
const LOGGED_MODEL: &str = "/api/2.0/mlflow/logged-models/m%2Dabc123";

/// A version whose source is a logged model of its run, so that enrichment looks up the version, the model, the run
/// and the logged model.
fn registry() -> Behaviour {
    Behaviour {
        answers: vec![
            (
                "/api/2.0/mlflow/model-versions/get",
                r#"{"model_version": {"name": "m", "version": "1", "current_stage": "None", "run_id": "r1",
                    "source": "models:/m-abc123", "model_id": "m-abc123"}}"#,
            ),
            (
                "/api/2.0/mlflow/runs/get",
                r#"{"run": {"info": {"run_id": "r1", "user_id": "alice",
                    "artifact_uri": "mlflow-artifacts:/1/r1/artifacts"}, "data": {}}}"#,
            ),
            (LOGGED_MODEL, r#"{"model": {"info": {"model_id": "m-abc123", "source_run_id": "r1"}}}"#),
        ],
        ..Behaviour::default()
    }
}

async fn post(gate: &GateHandle, keys: &Keys, path: &str, workspace: Option<&str>, body: &str) -> Answer {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(w) = workspace {
        headers.push((WS, w));
    }
    Req::post(gate.url(path)).token(&keys.token("alice", &[])).headers(&headers).body(body).send().await
}

#[expect(clippy::unwrap_used, reason = "test helper: see clippy.toml")]
fn workspaces_seen(upstream: &Recorder) -> Vec<(String, Vec<String>)> {
    let seen = upstream.seen.lock().unwrap();
    seen.iter()
        .map(|s| {
            let values = s.headers.get_all(WS).iter().map(|v| v.to_str().unwrap_or("?").to_string()).collect();
            (s.uri.split('?').next().unwrap_or_default().to_string(), values)
        })
        .collect()
}

#[tokio::test]
async fn every_lookup_and_write_for_a_workspace_request_carries_its_workspace() {
    let (gate, upstream, keys) = gate_with_recorder(registry()).await;
    let alias = post(&gate, &keys, ALIAS, Some("team"), r#"{"name":"m","alias":"candidate","version":"1"}"#).await;
    assert_eq!(alias.status, StatusCode::OK, "{:?}", alias.body);
    let comment = post(&gate, &keys, COMMENT, Some("team"), r#"{"name":"m","version":"1","comment":"ok"}"#).await;
    assert_eq!(comment.status, StatusCode::OK, "{:?}", comment.body);

    let seen = workspaces_seen(&upstream);
    let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    for expected in [
        "/api/2.0/mlflow/registered-models/get",
        "/api/2.0/mlflow/model-versions/get",
        "/api/2.0/mlflow/runs/get",
        LOGGED_MODEL,
        ALIAS,
        "/api/2.0/mlflow/model-versions/set-tag",
    ] {
        assert!(paths.contains(&expected), "{expected} not called; saw {paths:?}");
    }
    // The alias move's history and the comment are both tag writes.
    assert_eq!(upstream.hits("/api/2.0/mlflow/model-versions/set-tag"), 2);
    for (path, values) in &seen {
        assert_eq!(values, &["team"], "{path} was sent in workspace {values:?}");
    }
    // The gate's own calls carry the request id the client got back, for MLflow's logs.
    let id = alias.headers["x-mlflow-gate-request-id"].to_str().unwrap().to_string();
    let lookup = upstream.seen.lock().unwrap().iter().find(|s| s.uri.contains("registered-models/get")).cloned();
    assert_eq!(lookup.unwrap().headers["x-mlflow-gate-request-id"], id.as_str());
    gate.stop().await;
}

#[tokio::test]
async fn a_logged_model_cached_for_one_workspace_is_looked_up_again_for_another() {
    let (gate, upstream, keys) = gate_with_recorder(registry()).await;
    let body = r#"{"name":"m","alias":"candidate","version":"1"}"#;
    for _ in 0..2 {
        assert_eq!(post(&gate, &keys, ALIAS, Some("team"), body).await.status, StatusCode::OK);
    }
    assert_eq!(upstream.hits(LOGGED_MODEL), 1, "the second look-up in the same workspace is cached");
    assert_eq!(post(&gate, &keys, ALIAS, Some("default"), body).await.status, StatusCode::OK);
    assert_eq!(post(&gate, &keys, ALIAS, None, body).await.status, StatusCode::OK);
    let lookups: Vec<Vec<String>> =
        workspaces_seen(&upstream).into_iter().filter(|(p, _)| p == LOGGED_MODEL).map(|(_, w)| w).collect();
    assert_eq!(lookups, [vec!["team".to_string()], vec!["default".to_string()], vec![]]);
    gate.stop().await;
}

#[tokio::test]
async fn an_invalid_or_repeated_workspace_header_is_400_and_reaches_nothing() {
    let (gate, upstream, keys) = gate_with_recorder(registry()).await;
    let token = keys.token("alice", &[]);
    let body = r#"{"name":"m","alias":"candidate","version":"1"}"#;
    // (Padding is stripped by HTTP parsing itself; the unit tests cover it.)
    let cases: [&[&str]; 7] = [&["Team"], &[""], &["t"], &["api"], &["team,default"], &["te_am"], &["team", "team"]];
    for values in cases {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(values.iter().map(|v| (WS, *v)));
        let a = Req::post(gate.url(ALIAS)).token(&token).headers(&headers).body(body).send().await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{values:?}");
        assert_eq!(a.json()["error_code"], "INVALID_PARAMETER_VALUE", "{values:?}");
        assert!(a.message().contains("X-MLFLOW-WORKSPACE"), "{}", a.message());
    }
    // Public routes are forwarded with the header too, so it is validated there as well.
    let health = Req::get(gate.url("/health")).header(WS, "Team").send().await;
    assert_eq!(health.status, StatusCode::BAD_REQUEST);
    assert_eq!(upstream.count(), 0, "nothing may reach MLflow with a workspace the gate did not evaluate");
    gate.stop().await;
}
