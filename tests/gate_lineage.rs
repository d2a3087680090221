//! Lineage across registered models in front of a recording upstream: a copy whose chain of `models:/` sources
//! loops, or leads nowhere, is refused with the reason, and the creation never reaches MLflow.

mod common;

use common::{gate_with_recorder, Behaviour, Req};
use http::StatusCode;

const SELF_COPY: &str = r#"{"model_version": {"name": "m", "version": "1", "source": "models:/m/1", "run_id": "r1",
    "current_stage": "None", "tags": [{"key": "mlflow_gate.created_by", "value": "alice"}]}}"#;

#[tokio::test]
async fn a_copy_whose_sources_loop_is_refused_with_the_reason_and_never_created() {
    let behaviour =
        Behaviour { answers: vec![("/api/2.0/mlflow/model-versions/get", SELF_COPY)], ..Behaviour::default() };
    let (gate, upstream, keys) = gate_with_recorder(behaviour).await;
    let ci = keys.token("ci-bot", &["mlflow-ci"]);
    let body = r#"{"name": "prod.m", "source": "models:/m/1", "run_id": "r1"}"#;
    let a = Req::post(gate.url("/api/2.0/mlflow/model-versions/create")).token(&ci).json(body).send().await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.message());
    assert!(
        a.message().contains("cannot be traced to its run: models:/m/1 leads back to version 1 of m (a loop)"),
        "{}",
        a.message()
    );
    assert_eq!(upstream.mutations(), 0);

    // A stage URI moves: it is not followed.
    let body = r#"{"name": "prod.m", "source": "models:/m/Production"}"#;
    let a = Req::post(gate.url("/api/2.0/mlflow/model-versions/create")).token(&ci).json(body).send().await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.message());
    assert!(a.message().contains("models:/m/Production names no version"), "{}", a.message());
    assert_eq!(upstream.mutations(), 0);
    gate.stop().await;
}
