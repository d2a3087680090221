use super::*;
use crate::mlflow::routes::classify;

#[test]
fn every_artifact_writing_route_and_spelling_is_governed() {
    let writes = [
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/f", "UploadArtifact"),
        ("PUT", "/ajax-api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/f", "UploadArtifact"),
        ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/f", "DeleteArtifact"),
        ("DELETE", "/ajax-api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/f", "DeleteArtifact"),
        ("POST", "/api/2.0/mlflow-artifacts/mpu/create/1/r/artifacts", "CreateMultipartUpload"),
        ("POST", "/ajax-api/2.0/mlflow-artifacts/mpu/create/1/r/artifacts", "CreateMultipartUpload"),
        ("POST", "/api/2.0/mlflow-artifacts/mpu/complete/1/r/artifacts", "CompleteMultipartUpload"),
        ("POST", "/ajax-api/2.0/mlflow-artifacts/mpu/complete/1/r/artifacts", "CompleteMultipartUpload"),
        ("POST", "/api/2.0/mlflow-artifacts/mpu/abort/1/r/artifacts", "AbortMultipartUpload"),
        ("POST", "/ajax-api/2.0/mlflow-artifacts/mpu/abort/1/r/artifacts", "AbortMultipartUpload"),
        ("POST", "/api/2.0/mlflow/artifacts/presigned-upload-url", "CreatePresignedUploadUrl"),
        ("POST", "/ajax-api/2.0/mlflow/artifacts/presigned-upload-url", "CreatePresignedUploadUrl"),
        ("POST", "/ajax-api/2.0/mlflow/upload-artifact", "UploadRunArtifact"),
    ];
    for (method, path, rpc) in writes {
        let op = classify(method, path);
        assert_eq!(op.as_ref().map(|o| o.rpc), Some(rpc), "{method} {path}");
        assert!(op.as_ref().is_some_and(governs), "{method} {path} must be governed");
    }
    for (method, path) in [
        ("GET", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/f"),
        ("GET", "/api/2.0/mlflow-artifacts/presigned/1/r/artifacts/f"),
        ("POST", "/api/2.0/mlflow/artifacts/presigned-download-url"),
    ] {
        assert!(classify(method, path).is_some_and(|op| !governs(&op)), "{method} {path} is a read");
    }
}

#[test]
fn the_artifact_resource_has_no_other_mutating_route() {
    let governed = [
        "UploadArtifact",
        "DeleteArtifact",
        "CreateMultipartUpload",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "CreatePresignedUploadUrl",
        "UploadRunArtifact",
    ];
    for (method, path, rpc, read_only) in crate::mlflow::routes::all_routes() {
        let concrete = path.replace("<path:artifact_path>", "1/r/artifacts/f").replace("<model_id>", "m-1");
        let Some(op) = classify(method, &concrete) else { continue };
        if op.resource == Resource::Artifact && !read_only {
            assert!(governed.contains(&rpc), "{method} {path} ({rpc}) writes artifacts but is not governed");
        }
    }
}

#[test]
fn encoded_slashes_and_dot_segments_never_reach_resolution() {
    use crate::mlflow::canon::canonicalize;
    for bad in [
        "/api/2.0/mlflow-artifacts/artifacts/1%252Fr%252Fartifacts%252FMLmodel",
        "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/model/..%2FMLmodel",
        "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/%2e%2e/x",
        "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a%5Cb",
    ] {
        let uri: http::Uri = bad.parse().unwrap_or_default();
        assert!(canonicalize(&uri, http::Version::HTTP_11).is_err(), "{bad}");
    }
    // One level of %2F decodes to a real separator, as uvicorn routes it: the path is judged as decoded.
    let uri: http::Uri = "/api/2.0/mlflow-artifacts/artifacts/1%2Fr%2Fartifacts%2FMLmodel".parse().unwrap_or_default();
    let target = canonicalize(&uri, http::Version::HTTP_11).ok();
    let op = target.as_ref().and_then(|t| classify("PUT", &t.path));
    let param = op.and_then(|o| o.path_params.first().map(|(_, v)| v.clone()));
    assert_eq!(param.as_deref(), Some("1/r/artifacts/MLmodel"));
}

#[test]
fn paths_mlflow_would_read_differently_are_problems() {
    for bad in ["/abs", "a%2Fb", "a\\b", "a//b", "a/./b", "a/../b", "..", "a#b", "a/", "a\u{1}b"] {
        assert!(path_problem(bad).is_some(), "{bad:?}");
    }
    for good in ["MLmodel", "model/MLmodel", "a b/é.txt"] {
        assert_eq!(path_problem(good), None, "{good:?}");
    }
}

#[test]
fn locations_are_compared_in_one_spelling() {
    assert_eq!(normalize("mlflow-artifacts:/1/r/artifacts/"), "mlflow-artifacts:/1/r/artifacts");
    assert_eq!(normalize("mlflow-artifacts://host:5000/1/r/artifacts"), "mlflow-artifacts:/1/r/artifacts");
    assert_eq!(normalize("http://h:5000/api/2.0/mlflow-artifacts/artifacts/1/r"), "mlflow-artifacts:/1/r");
    assert_eq!(normalize("file:///tmp/mlruns/1/r/artifacts"), "/tmp/mlruns/1/r/artifacts");
    assert_eq!(normalize("s3://bucket/1/r/artifacts/"), "s3://bucket/1/r/artifacts");
    assert!(within_exact("mlflow-artifacts:/1/r/artifacts/m", "mlflow-artifacts:/1/r/artifacts"));
    assert!(!within_exact("mlflow-artifacts:/1/r10/artifacts", "mlflow-artifacts:/1/r1"));
    assert!(within("mlflow-artifacts:/1/r/artifacts/MODEL/MLmodel", "mlflow-artifacts:/1/r/artifacts/model"));
    assert!(!within_exact("mlflow-artifacts:/1/r/artifacts/MODEL", "mlflow-artifacts:/1/r/artifacts/model"));
}

#[test]
fn candidates_come_from_the_layout_and_are_bounded() {
    let c = |l: &str| candidates(l).into_iter().map(|(k, id)| (k.as_str(), id)).collect::<Vec<_>>();
    assert_eq!(
        c("mlflow-artifacts:/1/abc/artifacts/model/MLmodel"),
        vec![("run", "abc".into()), ("run", "MLmodel".into())]
    );
    assert_eq!(c("mlflow-artifacts:/1/models/m-9/artifacts/MLmodel")[0], ("logged_model", "m-9".into()));
    assert_eq!(c("mlflow-artifacts:/1/traces/tr-9/artifacts/traces.json")[0], ("trace", "tr-9".into()));
    assert_eq!(c("mlflow-artifacts:/workspaces/team/1/abc/artifacts/x")[0], ("run", "abc".into()));
    // Deleting a parent directory: the last segment is a candidate.
    assert_eq!(c("mlflow-artifacts:/1/abc"), vec![("run", "abc".into())]);
    assert_eq!(c("mlflow-artifacts:/1/models/m-9"), vec![("logged_model", "m-9".into())]);
    assert!(c("mlflow-artifacts:/1").is_empty());
    assert!(c("s3://bucket/1/abc/artifacts").is_empty());
    assert_eq!(c("mlflow-artifacts:/a/artifacts/b/artifacts/c/artifacts/d/artifacts/e").len(), MAX_CANDIDATES);
}

#[test]
fn multipart_uploads_write_the_basename_of_the_body_path_into_the_route_directory() {
    let w = proxied_write(Some("1/r/artifacts/model"), Some("MLmodel"));
    assert_eq!(w.location.as_deref(), Some("mlflow-artifacts:/1/r/artifacts/model/MLmodel"));
    assert!(proxied_write(Some("1/r/artifacts"), Some("..")).problem.is_some());
    assert!(proxied_write(None, None).problem.is_some());
}

#[test]
fn the_logged_model_creator_is_the_gates_stamp() {
    let info = serde_json::json!({"model_id": "m-1", "tags": [{"key": "mlflow_gate.created_by", "value": "alice"},
        {"key": "mlflow.user", "value": "mallory"}]});
    assert_eq!(logged_model_creator(&info).as_deref(), Some("alice"));
    assert_eq!(logged_model_creator(&serde_json::json!({"tags": [{"key": "mlflow.user", "value": "x"}]})), None);
}
