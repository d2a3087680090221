//! Artifact writes against a recording upstream: the location's owner is looked up before anything is forwarded,
//! a failed look-up denies with 503, and a location MLflow does not confirm is refused to non-admins.

mod common;

use common::*;
use http::{Method, StatusCode};

/// Method, path, headers, body.
type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>);

const PUT_PATH: &str = "/api/2.0/mlflow-artifacts/artifacts/1/0123456789abcdef/artifacts/model/MLmodel";

#[tokio::test]
async fn failed_owner_lookup_denies_an_artifact_write_with_503_and_forwards_nothing() {
    let (gate, upstream, keys) = gate_with_recorder(Behaviour { fail_gets: true, ..Behaviour::default() }).await;
    for token in [keys.token("alice", &[]), keys.token("root", &["mlflow-admin"])] {
        let a = Req::put(gate.url(PUT_PATH)).token(&token).body("flavors: {}").send().await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.message());
        assert!(a.message().contains("looking up"), "{}", a.message());
    }
    assert_eq!(upstream.hits(PUT_PATH), 0);
    assert_eq!(upstream.mutations(), 0);
    gate.stop().await;
}

#[tokio::test]
async fn an_unconfirmed_location_is_refused_to_engineers_on_every_artifact_route() {
    // The recorder answers `{}` to every look-up: no run, logged model or trace confirms the location.
    let (gate, upstream, keys) = gate_with_recorder(Behaviour::default()).await;
    let alice = keys.token("alice", &[]);
    let json = [("content-type", "application/json")];
    let cases: [Case; 6] = [
        (Method::PUT, PUT_PATH, &[], Some("x")),
        (Method::DELETE, "/ajax-api/2.0/mlflow-artifacts/artifacts/1/0123456789abcdef/artifacts", &[], None),
        (
            Method::POST,
            "/api/2.0/mlflow-artifacts/mpu/create/1/0123456789abcdef/artifacts",
            &json,
            Some(r#"{"path":"MLmodel","num_parts":1}"#),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/artifacts/presigned-upload-url",
            &json,
            Some(r#"{"run_id":"0123456789abcdef","path":"MLmodel"}"#),
        ),
        (Method::POST, "/ajax-api/2.0/mlflow/upload-artifact?run_uuid=0123456789abcdef&path=MLmodel", &[], Some("x")),
        (Method::POST, "/ajax-api/2.0/mlflow/upload-artifact?run_id=0123456789abcdef&path=MLmodel", &[], Some("x")),
    ];
    for (method, path, headers, body) in cases {
        let a = Req::new(method.clone(), gate.url(path)).token(&alice).headers(headers).maybe_body(body).send().await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{method} {path}: {}", a.message());
        assert_eq!(a.json()["error_code"], "PERMISSION_DENIED");
    }
    assert_eq!(upstream.mutations(), 0);
    gate.stop().await;
}
