//! Names and tags a client may not write are refused before anything reaches MLflow: not the request, not even the
//! gate's own look-ups (a recording upstream proves it).

mod common;

use common::{gate_with_recorder, Behaviour, Req};
use http::StatusCode;

#[tokio::test]
async fn hidden_characters_in_names_and_nested_reserved_tags_reach_nothing() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let alice = keys.token("alice", &[]);
    let cases = [
        (
            "/api/2.0/mlflow/registered-models/alias",
            r#"{"name": "m", "alias": "champion\n", "version": "1"}"#,
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "/ajax-api/2.0/mlflow/registered-models/create",
            r#"{"name": "fraud-detector "}"#,
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "/api/2.0/mlflow/registered-models/rename",
            r#"{"name": "m", "newName": "m\u0000"}"#,
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "/api/2.0/mlflow/model-versions/create",
            r#"{"name": "\u200bm", "source": "s"}"#,
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "/api/3.0/mlflow/traces",
            r#"{"trace": {"trace_info": {"trace_id": "tr-1", "tags": {"mlflow_gate.created_by": "ci-bot"}}}}"#,
            403,
            "PERMISSION_DENIED",
        ),
        ("/api/3.0/mlflow/datasets/create", r#"{"name": "d", "tags": "{\"x\": NaN}"}"#, 400, "INVALID_PARAMETER_VALUE"),
    ];
    for (path, body, status, code) in cases {
        let answer = Req::post(gate.url(path)).token(&alice).json(body).send().await;
        assert_eq!(answer.status.as_u16(), status, "{path}: {}", answer.message());
        assert_eq!(answer.json()["error_code"], code, "{path}");
    }
    assert_eq!(upstream.count(), 0, "the upstream saw a request");
    // A look-alike of a protected alias is not refused here: it reaches the policy (with its enrichment look-ups).
    let answer = Req::post(gate.url("/api/2.0/mlflow/registered-models/alias"))
        .token(&alice)
        .json(r#"{"name": "m", "alias": "Champion", "version": "1"}"#)
        .send()
        .await;
    assert_ne!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.message());
    gate.stop().await;
}
