//! The registry's history endpoint in front of a recording upstream: hundreds of versions are read with one
//! `model-versions/search` page (never one `model-versions/get` per version), and the timeline answers "what held
//! the alias at T" from the per-entry history tags.

mod common;

use common::{gate_with_recorder, Behaviour, Req};
use http::StatusCode;
use serde_json::{json, Value};

const VERSIONS: u64 = 300;

/// Version v held champion from 10*v until 10*(v+1); each entry in its own tag, as the gate writes them.
fn search_answer() -> &'static str {
    let versions: Vec<Value> = (1..=VERSIONS)
        .map(|v| {
            let entry = json!({"alias": "champion", "by": "ci-bot", "at": v * 10, "request_id": format!("d{v}")});
            json!({"name": "m", "version": v.to_string(), "tags": [
                {"key": format!("mlflow_gate.history.{:013}-{v:016x}", v * 10), "value": entry.to_string()},
                {"key": "team", "value": "fraud"}]})
        })
        .collect();
    Box::leak(json!({ "model_versions": versions }).to_string().into_boxed_str())
}

#[tokio::test]
async fn the_history_of_hundreds_of_versions_is_one_search_and_answers_what_held_the_alias_at_a_time() {
    let behaviour =
        Behaviour { answers: vec![("/api/2.0/mlflow/model-versions/search", search_answer())], ..Behaviour::default() };
    let (gate, upstream, keys) = gate_with_recorder(behaviour).await;
    let alice = keys.token("alice", &[]);

    let all = Req::get(gate.url("/api/2.0/mlflow/registry-history/get?name=m")).token(&alice).send().await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.message());
    let body = all.json();
    assert_eq!(body["versions_read"], VERSIONS);
    let periods = body["periods"].as_array().cloned().unwrap_or_default();
    assert_eq!(periods.len() as u64, VERSIONS);
    assert_eq!(periods[0]["until"], 20);
    assert_eq!(periods[299]["until"], Value::Null);
    assert_eq!(upstream.hits("/api/2.0/mlflow/model-versions/search"), 1);
    assert_eq!(upstream.hits("/api/2.0/mlflow/model-versions/get"), 0);
    let search = upstream.last_to("/api/2.0/mlflow/model-versions/search");
    assert!(search.uri.contains("filter=name%3D%27m%27"), "{}", search.uri);

    let at = Req::get(gate.url("/api/2.0/mlflow/registry-history/get?name=m&alias=CHAMPION&at=1505"))
        .token(&alice)
        .send()
        .await;
    assert_eq!(at.status, StatusCode::OK, "{}", at.message());
    let held: Vec<Value> = at.json()["periods"].as_array().cloned().unwrap_or_default();
    assert_eq!(held.len(), 1);
    assert_eq!((held[0]["version"].clone(), held[0]["decision_id"].clone()), (json!("150"), json!("d150")));

    let bad = Req::get(gate.url("/api/2.0/mlflow/registry-history/get?name=m&at=yesterday")).token(&alice).send().await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.message().contains("at must be milliseconds since the epoch or RFC 3339"), "{}", bad.message());
    gate.stop().await;
}
