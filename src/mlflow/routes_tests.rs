//! Tests of the MLflow route table.

use super::*;
use std::collections::{BTreeSet, HashSet};

fn op(method: &str, path: &str) -> Operation {
    classify(method, path).unwrap_or_else(|| panic!("{method} {path} should classify"))
}

fn params(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Replaces `<x>` by `x1` and `<path:x>` by `a/b/c`.
fn sample(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('>').unwrap_or_else(|| panic!("unclosed < in {template}")) + open;
        out.push_str(if rest[open + 1..close].starts_with("path:") { "a/b/c" } else { "x1" });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Every model-registry and webhook endpoint: (method, path after `/mlflow`, rpc, read_only, resource).
const REGISTRY: &[(&str, &str, &str, bool, Resource)] = &[
    ("POST", "/registered-models/create", "CreateRegisteredModel", false, Resource::RegisteredModel),
    ("POST", "/registered-models/rename", "RenameRegisteredModel", false, Resource::RegisteredModel),
    ("PATCH", "/registered-models/update", "UpdateRegisteredModel", false, Resource::RegisteredModel),
    ("DELETE", "/registered-models/delete", "DeleteRegisteredModel", false, Resource::RegisteredModel),
    ("GET", "/registered-models/get", "GetRegisteredModel", true, Resource::RegisteredModel),
    ("GET", "/registered-models/search", "SearchRegisteredModels", true, Resource::RegisteredModel),
    ("POST", "/registered-models/get-latest-versions", "GetLatestVersions", true, Resource::ModelVersion),
    ("GET", "/registered-models/get-latest-versions", "GetLatestVersions", true, Resource::ModelVersion),
    ("POST", "/model-versions/create", "CreateModelVersion", false, Resource::ModelVersion),
    ("PATCH", "/model-versions/update", "UpdateModelVersion", false, Resource::ModelVersion),
    ("POST", "/model-versions/transition-stage", "TransitionModelVersionStage", false, Resource::ModelVersion),
    ("DELETE", "/model-versions/delete", "DeleteModelVersion", false, Resource::ModelVersion),
    ("GET", "/model-versions/get", "GetModelVersion", true, Resource::ModelVersion),
    ("GET", "/model-versions/search", "SearchModelVersions", true, Resource::ModelVersion),
    ("GET", "/model-versions/get-download-uri", "GetModelVersionDownloadUri", true, Resource::ModelVersion),
    ("POST", "/registered-models/set-tag", "SetRegisteredModelTag", false, Resource::RegisteredModel),
    ("DELETE", "/registered-models/delete-tag", "DeleteRegisteredModelTag", false, Resource::RegisteredModel),
    ("POST", "/model-versions/set-tag", "SetModelVersionTag", false, Resource::ModelVersion),
    ("DELETE", "/model-versions/delete-tag", "DeleteModelVersionTag", false, Resource::ModelVersion),
    ("POST", "/registered-models/alias", "SetRegisteredModelAlias", false, Resource::ModelVersion),
    ("DELETE", "/registered-models/alias", "DeleteRegisteredModelAlias", false, Resource::ModelVersion),
    ("GET", "/registered-models/alias", "GetModelVersionByAlias", true, Resource::ModelVersion),
    ("POST", "/webhooks", "CreateWebhook", false, Resource::Webhook),
    ("GET", "/webhooks", "ListWebhooks", true, Resource::Webhook),
    ("GET", "/webhooks/<webhook_id>", "GetWebhook", true, Resource::Webhook),
    ("PATCH", "/webhooks/<webhook_id>", "UpdateWebhook", false, Resource::Webhook),
    ("DELETE", "/webhooks/<webhook_id>", "DeleteWebhook", false, Resource::Webhook),
    ("POST", "/webhooks/<webhook_id>/test", "TestWebhook", false, Resource::Webhook),
];

#[test]
fn registry_and_webhooks_under_both_spellings_and_not_under_3_0() {
    for &(method, rest, rpc, read_only, resource) in REGISTRY {
        let rest_path = rest.replace("<webhook_id>", "wh-1");
        let expected_params = if rest.contains("<webhook_id>") { params(&[("webhook_id", "wh-1")]) } else { vec![] };
        for prefix in ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow"] {
            let got = op(method, &format!("{prefix}{rest_path}"));
            let want = Operation {
                rpc,
                read_only,
                resource,
                public: false,
                server_side_job: false,
                path_params: expected_params.clone(),
                body: if read_only { BodyClass::Small } else { BodyClass::Large },
                workflow: false,
            };
            assert_eq!(got, want, "{method} {prefix}{rest_path}");
        }
        for prefix in ["/api/3.0/mlflow", "/ajax-api/3.0/mlflow"] {
            assert_eq!(classify(method, &format!("{prefix}{rest_path}")), None, "{method} {prefix}{rest_path}");
        }
    }
}

#[test]
fn artifact_routes_capture_nested_paths() {
    let nested = "0/abc/artifacts/model/MLmodel";
    for prefix in ["/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts"] {
        for (method, middle, rpc, read_only) in [
            ("GET", "/artifacts/", "DownloadArtifact", true),
            ("HEAD", "/artifacts/", "DownloadArtifact", true),
            ("PUT", "/artifacts/", "UploadArtifact", false),
            ("DELETE", "/artifacts/", "DeleteArtifact", false),
            ("POST", "/mpu/create/", "CreateMultipartUpload", false),
            ("POST", "/mpu/complete/", "CompleteMultipartUpload", false),
            ("POST", "/mpu/abort/", "AbortMultipartUpload", false),
            ("GET", "/presigned/", "GetPresignedDownloadUrl", true),
        ] {
            let got = op(method, &format!("{prefix}{middle}{nested}"));
            assert_eq!((got.rpc, got.read_only, got.resource), (rpc, read_only, Resource::Artifact));
            assert_eq!(got.path_params, params(&[("artifact_path", nested)]));
        }
        assert_eq!(op("GET", &format!("{prefix}/artifacts/x")).path_params, params(&[("artifact_path", "x")]));
        let list = op("GET", &format!("{prefix}/artifacts"));
        assert_eq!((list.rpc, list.read_only, list.path_params.len()), ("ListArtifacts", true, 0));
        // No path, a trailing slash, or a method the route does not take.
        assert_eq!(classify("PUT", &format!("{prefix}/artifacts")), None);
        assert_eq!(classify("GET", &format!("{prefix}/artifacts/")), None);
        assert_eq!(classify("PUT", &format!("{prefix}/artifacts/a/")), None);
        assert_eq!(classify("POST", &format!("{prefix}/artifacts/{nested}")), None);
        assert_eq!(classify("GET", &format!("{prefix}/mpu/create/{nested}")), None);
        assert_eq!(classify("POST", &format!("{prefix}/mpu/create")), None);
    }
    let upload = op("POST", "/ajax-api/2.0/mlflow/upload-artifact");
    assert_eq!((upload.rpc, upload.read_only, upload.resource), ("UploadRunArtifact", false, Resource::Artifact));
    let files = op("GET", "/ajax-api/2.0/mlflow/logged-models/m-1/artifacts/files");
    assert_eq!((files.rpc, files.path_params), ("GetLoggedModelArtifact", params(&[("model_id", "m-1")])));
    assert!(!op("POST", "/api/2.0/mlflow/artifacts/presigned-upload-url").read_only);
    assert!(op("POST", "/api/2.0/mlflow/artifacts/presigned-download-url").read_only);
    assert_eq!(op("GET", "/get-artifact").rpc, "GetRunArtifact");
    assert_eq!(op("GET", "/model-versions/get-artifact").rpc, "GetModelVersionArtifact");
}

/// (method, path, rpc, expected path parameters).
type Case = (&'static str, &'static str, &'static str, &'static [(&'static str, &'static str)]);

#[test]
fn template_parameters_are_captured() {
    let cases: &[Case] = &[
        (
            "DELETE",
            "/api/2.0/mlflow/logged-models/m-1/tags/k.v",
            "DeleteLoggedModelTag",
            &[("model_id", "m-1"), ("tag_key", "k.v")],
        ),
        ("PATCH", "/api/2.0/mlflow/traces/tr-1", "EndTrace", &[("request_id", "tr-1")]),
        (
            "PATCH",
            "/api/3.0/mlflow/traces/tr-1/assessments/a-1",
            "UpdateAssessment",
            &[("trace_id", "tr-1"), ("assessment_id", "a-1")],
        ),
        ("DELETE", "/api/3.0/mlflow/datasets/d-1/tags/k", "DeleteDatasetTag", &[("dataset_id", "d-1"), ("key", "k")]),
        (
            "POST",
            "/api/3.0/mlflow/prompt-optimization/jobs/j-1/cancel",
            "CancelPromptOptimizationJob",
            &[("job_id", "j-1")],
        ),
        ("DELETE", "/api/3.0/mlflow/workspaces/team-a", "DeleteWorkspace", &[("workspace_name", "team-a")]),
        ("PATCH", "/ajax-api/3.0/jobs/cancel/j-1", "CancelJob", &[("job_id", "j-1")]),
        ("POST", "/gateway/chat/mlflow/invocations", "GatewayInvocations", &[("endpoint_name", "chat")]),
        (
            "POST",
            "/gateway/gemini/v1beta/models/g:1:generateContent",
            "GatewayGeminiGenerateContent",
            &[("endpoint_name", "g:1")],
        ),
        (
            "POST",
            "/gateway/gemini/v1beta/models/g:streamGenerateContent",
            "GatewayGeminiStreamGenerateContent",
            &[("endpoint_name", "g")],
        ),
        (
            "POST",
            "/gateway/proxy/ep/v1/chat/completions",
            "GatewayRawProxy",
            &[("endpoint_name", "ep"), ("path", "v1/chat/completions")],
        ),
        (
            "GET",
            "/ajax-api/3.0/mlflow/assistant/sessions/s-1/stream",
            "AssistantStreamResponse",
            &[("session_id", "s-1")],
        ),
        ("GET", "/static-files/static/js/main.js", "ServeStaticFile", &[("path", "static/js/main.js")]),
        ("GET", "/build/index.html", "ServeStaticFile", &[("filename", "index.html")]),
        // MCP names and keys may contain `/`; the leftmost `<path:...>` is greedy, as in Starlette.
        (
            "GET",
            "/api/3.0/mlflow/mcp-servers/io.github.acme/server",
            "GetMcpServer",
            &[("name", "io.github.acme/server")],
        ),
        (
            "DELETE",
            "/api/3.0/mlflow/mcp-servers/a/b/versions/1.0/tags/k/x",
            "DeleteMcpServerVersionTag",
            &[("name", "a/b"), ("version", "1.0"), ("key", "k/x")],
        ),
        (
            "DELETE",
            "/api/3.0/mlflow/mcp-servers/a/versions/b/versions/c/tags/k",
            "DeleteMcpServerVersionTag",
            &[("name", "a/versions/b"), ("version", "c"), ("key", "k")],
        ),
        (
            "GET",
            "/api/3.0/mlflow/mcp-servers/a/versions/1/tags",
            "GetMcpServerVersion",
            &[("name", "a"), ("version", "1/tags")],
        ),
        (
            "GET",
            "/api/3.0/mlflow/mcp-servers/a/endpoints/e-1",
            "GetMcpAccessEndpoint",
            &[("name", "a"), ("endpoint_id", "e-1")],
        ),
        (
            "GET",
            "/api/3.0/mlflow/mcp-servers/a/versions/1/endpoints/e-1",
            "GetMcpServerVersion",
            &[("name", "a"), ("version", "1/endpoints/e-1")],
        ),
        (
            "GET",
            "/api/3.0/mlflow/mcp-servers/a/aliases/prod",
            "GetMcpServerVersionByAlias",
            &[("name", "a"), ("alias", "prod")],
        ),
        // Skills (3.18): `@org` is a segment prefix; the first declared match wins.
        (
            "GET",
            "/api/3.0/mlflow/skills/@acme/lint",
            "GetOrganizationSkill",
            &[("organization", "acme"), ("name", "lint")],
        ),
        (
            "GET",
            "/api/3.0/mlflow/skills/@acme/versions",
            "GetOrganizationSkill",
            &[("organization", "acme"), ("name", "versions")],
        ),
        ("GET", "/api/3.0/mlflow/skills/lint/versions", "SearchSkillVersions", &[("name", "lint")]),
        (
            "DELETE",
            "/api/3.0/mlflow/skills/@acme/lint/versions/2/tags/a/b",
            "DeleteOrganizationSkillVersionTag",
            &[("organization", "acme"), ("name", "lint"), ("version", "2"), ("key", "a/b")],
        ),
        ("POST", "/ajax-api/3.0/mlflow/skills/@acme/tags", "SetSkillTag", &[("name", "@acme")]),
    ];
    for &(method, path, rpc, want) in cases {
        let got = op(method, path);
        assert_eq!((got.rpc, got.path_params), (rpc, params(want)), "{method} {path}");
    }
}

/// MLflow 2.22.5 serves four 2.0 spellings of trace/assessment RPCs (each answered by its `_not_implemented`, an
/// empty 404); they classify like their 3.0 spellings, writes as writes.
#[test]
fn mlflow_2_22_trace_and_assessment_spellings_classify_like_their_3_0_routes() {
    let cases: &[Case] = &[
        ("GET", "/traces/tr-1", "GetTraceInfoV3", &[("trace_id", "tr-1")]),
        ("POST", "/traces/{assessment.trace_id}/assessments", "CreateAssessment", &[]),
        (
            "PATCH",
            "/traces/tr-1/assessments/a-1",
            "UpdateAssessment",
            &[("trace_id", "tr-1"), ("assessment_id", "a-1")],
        ),
        (
            "DELETE",
            "/traces/tr-1/assessments/a-1",
            "DeleteAssessment",
            &[("trace_id", "tr-1"), ("assessment_id", "a-1")],
        ),
    ];
    for &(method, path, rpc, want) in cases {
        let (read_only, resource) =
            if method == "GET" { (true, Resource::Trace) } else { (false, Resource::Assessment) };
        for base in ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow"] {
            let got = op(method, &format!("{base}{path}"));
            assert_eq!((got.rpc, got.read_only, got.resource), (rpc, read_only, resource), "{method} {base}{path}");
            assert_eq!(got.path_params, params(want), "{method} {base}{path}");
        }
    }
    // The literal braces are not a parameter: another trace id in their place is no route.
    assert!(classify("POST", "/api/2.0/mlflow/traces/tr-1/assessments").is_none());
    // The 2.0 trace routes that were there before keep their rows.
    assert_eq!(op("GET", "/api/2.0/mlflow/traces/tr-1/info").rpc, "GetTraceInfo");
    assert_eq!(op("PATCH", "/api/2.0/mlflow/traces/tr-1").rpc, "EndTrace");
}

#[test]
fn static_routes_win_and_methods_select_the_route() {
    let cases = [
        ("GET", "/api/3.0/mlflow/traces/get", "GetTrace", vec![]),
        ("GET", "/api/3.0/mlflow/traces/search", "GetTraceInfoV3", params(&[("trace_id", "search")])),
        ("POST", "/api/3.0/mlflow/traces/search", "SearchTracesV3", vec![]),
        ("GET", "/api/2.0/mlflow/logged-models/search", "GetLoggedModel", params(&[("model_id", "search")])),
        ("PATCH", "/api/2.0/mlflow/traces/delete-traces", "EndTrace", params(&[("request_id", "delete-traces")])),
        ("GET", "/api/3.0/mlflow/datasets/search", "SearchEvaluationDatasets", vec![]),
        ("DELETE", "/api/3.0/mlflow/datasets/search", "DeleteDataset", params(&[("dataset_id", "search")])),
        ("GET", "/api/3.0/mlflow/mcp-servers/endpoints", "SearchAllMcpAccessEndpoints", vec![]),
        ("PATCH", "/api/3.0/mlflow/mcp-servers/endpoints", "UpdateMcpServer", params(&[("name", "endpoints")])),
        ("POST", "/api/3.0/mlflow/skills/bulk-register", "BulkRegisterSkills", vec![]),
        ("GET", "/api/3.0/mlflow/skills/bulk-register", "GetSkill", params(&[("name", "bulk-register")])),
        ("GET", "/ajax-api/3.0/jobs/search", "GetJob", params(&[("job_id", "search")])),
        ("POST", "/ajax-api/3.0/jobs/search", "SearchJobs", vec![]),
        ("POST", "/gateway/proxy/mlflow/invocations", "GatewayInvocations", params(&[("endpoint_name", "proxy")])),
    ];
    for (method, path, rpc, want) in cases {
        let got = op(method, path);
        assert_eq!((got.rpc, got.path_params), (rpc, want), "{method} {path}");
    }
}

/// The UI-only routes of the surface doc §1.3 (plus the assistant): served under `/ajax-api` only.
#[test]
fn ajax_only_routes_do_not_match_under_api() {
    let ajax_only = [
        ("GET", "/2.0/mlflow/get-trace-artifact"),
        ("GET", "/3.0/mlflow/get-trace-artifact"),
        ("GET", "/2.0/mlflow/logged-models/m-1/artifacts/files"),
        ("GET", "/2.0/mlflow/metrics/get-history-bulk"),
        ("GET", "/3.0/mlflow/gateway/supported-providers"),
        ("GET", "/3.0/mlflow/gateway/supported-models"),
        ("GET", "/3.0/mlflow/gateway/provider-config"),
        ("GET", "/3.0/mlflow/gateway/secrets/config"),
        ("GET", "/3.0/mlflow/jobs/j-1"),
        ("GET", "/3.0/mlflow/ui-telemetry"),
        ("GET", "/2.0/mlflow/gateway-proxy"),
        ("POST", "/2.0/mlflow/gateway-proxy"),
        ("PATCH", "/3.0/mlflow/jobs/cancel/j-1"),
        ("POST", "/2.0/mlflow/experiments/search-datasets"),
        ("POST", "/2.0/mlflow/runs/create-promptlab-run"),
        ("POST", "/2.0/mlflow/upload-artifact"),
        ("POST", "/3.0/mlflow/demo/generate"),
        ("POST", "/3.0/mlflow/demo/delete"),
        ("POST", "/3.0/mlflow/genai/evaluate/invoke"),
        ("POST", "/3.0/mlflow/issues/invoke"),
        ("POST", "/3.0/mlflow/issues/schedule/state"),
        ("POST", "/3.0/mlflow/scorer/invoke"),
        ("POST", "/3.0/mlflow/ui-telemetry"),
        ("POST", "/3.0/mlflow/assistant/message"),
        ("PUT", "/3.0/mlflow/assistant/config"),
        ("GET", "/3.0/mlflow/assistant/sessions/s-1/stream"),
    ];
    for (method, rest) in ajax_only {
        assert!(classify(method, &format!("/ajax-api{rest}")).is_some(), "{method} /ajax-api{rest}");
        assert_eq!(classify(method, &format!("/api{rest}")), None, "{method} /api{rest}");
    }
    // The table agrees: every route without an /api spelling is one of these.
    let table_ajax_only: BTreeSet<(&str, String)> = TABLES
        .iter()
        .flat_map(|t| t.iter())
        .filter(|r| r.primary.is_none() && !r.template.starts_with("/assistant/"))
        .map(|r| (r.method, r.ajax.map(sample).unwrap_or_default()))
        .collect();
    assert_eq!(table_ajax_only.len(), 23);
}

#[test]
fn wrong_method_or_unknown_path_is_none() {
    let none = [
        ("GET", "/api/2.0/mlflow/registered-models/create"),
        ("PUT", "/api/2.0/mlflow/registered-models/update"),
        ("POST", "/api/2.0/mlflow/registered-models/update"),
        ("POST", "/api/2.0/mlflow/registered-models/delete"),
        ("GET", "/api/2.0/mlflow/model-versions/transition-stage"),
        ("POST", "/api/2.0/mlflow/webhooks/wh-1"),
        ("PUT", "/api/2.0/mlflow/webhooks/wh-1"),
        ("GET", "/api/2.0/mlflow/webhooks/wh-1/test"),
        ("DELETE", "/graphql"),
        ("POST", "/health"),
        ("POST", "/"),
        ("GET", "/v1/traces"),
        ("GET", "/ajax-api/3.0/jobs/"),
        ("TRACE", "/health"),
        ("get", "/health"),
        ("GET", "/api/2.0/mlflow/registered-models/nope"),
        ("POST", "/api/2.0/mlflow/databricks/model-versions/transition-stage"),
        ("POST", "/api/2.0/mlflow/registry-webhooks/create"),
        ("POST", "/API/2.0/mlflow/registered-models/create"),
        ("POST", "/api/2.0/mlflow/registered-models/create/"),
        ("POST", "/api/2.1/mlflow/registered-models/create"),
        ("POST", "/api/2.0/mlflowx/registered-models/create"),
        ("POST", "/api/2.0/mlflow"),
        ("POST", "/ajax-api/3.0/jobs"),
        ("GET", "/api/2.0/mlflow/webhooks/"),
        ("GET", "/api/3.0/mlflow/mcp-servers/"),
        ("POST", "/signup"),
        ("POST", "/api/2.0/mlflow/users/create"),
        ("GET", ""),
        ("GET", "/static-files"),
        ("GET", "/static-files/"),
    ];
    for (method, path) in none {
        assert_eq!(classify(method, path), None, "{method} {path}");
    }
}

#[test]
fn workflow_routes_are_in_the_table_and_served_by_the_gate() {
    let create = op("POST", "/api/2.0/mlflow/transition-requests/create");
    assert_eq!((create.rpc, create.workflow, create.read_only), ("CreateTransitionRequest", true, false));
    assert_eq!(create.resource, Resource::ModelVersion);
    assert!(op("HEAD", "/ajax-api/2.0/mlflow/transition-requests/list").workflow);
    assert!(op("DELETE", "/api/2.0/mlflow/comments/delete").workflow);
    assert_eq!(classify("GET", "/api/2.0/mlflow/transition-requests/create"), None);
    assert_eq!(classify("OPTIONS", "/api/2.0/mlflow/transition-requests/create"), None);
    assert_eq!(classify("POST", "/api/2.1/mlflow/transition-requests/create"), None);
    assert!(!op("POST", "/api/2.0/mlflow/model-versions/transition-stage").workflow);
}

#[test]
fn head_and_options() {
    assert_eq!(op("HEAD", "/api/2.0/mlflow/registered-models/get").rpc, "GetRegisteredModel");
    assert_eq!(classify("HEAD", "/api/2.0/mlflow/registered-models/create"), None);
    let preflight = op("OPTIONS", "/api/2.0/mlflow/registered-models/create");
    assert_eq!((preflight.rpc, preflight.read_only, preflight.public), ("CorsPreflight", true, true));
    assert_eq!(preflight.resource, Resource::RegisteredModel);
    let preflight = op("OPTIONS", "/ajax-api/3.0/mlflow/demo/generate");
    assert_eq!((preflight.rpc, preflight.read_only, preflight.server_side_job), ("CorsPreflight", true, false));
    assert_eq!(op("OPTIONS", "/api/2.0/mlflow/webhooks/wh-1").path_params, params(&[("webhook_id", "wh-1")]));
    assert_eq!(classify("OPTIONS", "/api/2.0/mlflow/nope"), None);
    assert_eq!(classify("OPTIONS", "/api/2.0/mlflow/upload-artifact"), None);
}

#[test]
fn public_routes() {
    let public: BTreeSet<(&str, &str)> = all_routes()
        .filter(|(m, t, _, _)| classify(m, &sample(t)).is_some_and(|o| o.public))
        .map(|(m, t, _, _)| (m, t))
        .collect();
    let want: BTreeSet<(&str, &str)> = [
        ("GET", "/"),
        ("GET", "/health"),
        ("GET", "/version"),
        ("GET", "/favicon.ico"),
        ("GET", "/static-files/<path:path>"),
        ("GET", "/build/<path:filename>"),
        ("GET", "/api/3.0/mlflow/server-info"),
        ("GET", "/ajax-api/3.0/mlflow/server-info"),
    ]
    .into_iter()
    .collect();
    assert_eq!(public, want);
    assert!(op("HEAD", "/health").public);
    assert!(!op("GET", "/graphql").public);
    assert!(classify("GET", "/api/2.0/mlflow/server-info").is_none());
}

#[test]
fn server_side_job_routes() {
    let jobs: BTreeSet<(&str, &str)> = all_routes()
        .filter(|(m, t, _, _)| classify(m, &sample(t)).is_some_and(|o| o.server_side_job))
        .map(|(m, t, _, _)| (m, t))
        .filter(|(_, t)| !t.starts_with("/ajax-api/3.0/mlflow/assistant/"))
        .collect();
    let want: BTreeSet<(&str, &str)> = [
        ("POST", "/api/3.0/mlflow/prompt-optimization/jobs"),
        ("POST", "/ajax-api/3.0/mlflow/prompt-optimization/jobs"),
        ("POST", "/ajax-api/3.0/mlflow/demo/generate"),
        ("POST", "/ajax-api/3.0/mlflow/demo/delete"),
        ("POST", "/ajax-api/3.0/mlflow/scorer/invoke"),
        ("POST", "/ajax-api/3.0/mlflow/genai/evaluate/invoke"),
        ("POST", "/ajax-api/3.0/mlflow/issues/invoke"),
        ("POST", "/ajax-api/3.0/mlflow/issues/schedule/state"),
        ("POST", "/ajax-api/3.0/jobs/"),
        ("PATCH", "/ajax-api/3.0/jobs/cancel/<job_id>"),
        // The same job cancel, through the Flask view.
        ("PATCH", "/ajax-api/3.0/mlflow/jobs/cancel/<job_id>"),
        // Turns on the periodic online-scoring job, which writes assessments server-side.
        ("PUT", "/api/3.0/mlflow/scorers/online-config"),
        ("PUT", "/ajax-api/3.0/mlflow/scorers/online-config"),
    ]
    .into_iter()
    .collect();
    assert_eq!(jobs, want);
    let assistant: Vec<_> =
        all_routes().filter(|(_, t, _, _)| t.starts_with("/ajax-api/3.0/mlflow/assistant/")).collect();
    assert_eq!(assistant.len(), 11);
    for (m, t, _, _) in assistant {
        let o = op(m, &sample(t));
        assert!(o.server_side_job && o.resource == Resource::Assistant, "{m} {t}");
    }
    // The assistant stream runs the agent: a GET that is not read-only.
    assert!(!op("GET", "/ajax-api/3.0/mlflow/assistant/sessions/s/stream").read_only);
}

/// Pins the exceptions to "GET reads, everything else writes", so that any change to them is deliberate.
#[test]
fn read_only_exceptions() {
    let non_get_reads: BTreeSet<&str> =
        all_routes().filter(|(m, _, _, ro)| *m != "GET" && *ro).map(|(_, _, rpc, _)| rpc).collect();
    let want: BTreeSet<&str> = [
        "SearchExperiments",
        "SearchRuns",
        "SearchLoggedModels",
        "CreatePresignedDownloadUrl",
        "GetLatestVersions",
        "SearchDatasets",
        "BatchGetTraceInfos",
        "SearchTracesV3",
        "CalculateTraceFilterCorrelation",
        "QueryTraceMetrics",
        "SearchIssues",
        "SearchEvaluationDatasets",
        "SearchPromptOptimizationJobs",
        "SearchJobs",
        "GraphQL",
    ]
    .into_iter()
    .collect();
    assert_eq!(non_get_reads, want);
    let get_writes: BTreeSet<&str> =
        all_routes().filter(|(m, _, _, ro)| *m == "GET" && !*ro).map(|(_, _, rpc, _)| rpc).collect();
    let want: BTreeSet<&str> =
        ["AssistantStreamResponse", "AssistantProviderHealthCheck", "AssistantListProviderModels"]
            .into_iter()
            .collect();
    assert_eq!(get_writes, want);
}

#[test]
fn table_is_consistent() {
    let mut seen = HashSet::new();
    let mut count = 0;
    for (method, template, rpc, read_only) in all_routes() {
        count += 1;
        assert!(seen.insert((method, template)), "duplicate {method} {template}");
        assert!(template.split('/').count() <= MAX_TEMPLATE_SEGMENTS, "{template}");
        assert!(rpc.chars().next().is_some_and(|c| c.is_ascii_uppercase()), "{rpc}");
        // Every template classifies back to its own row.
        let got = op(method, &sample(template));
        assert_eq!((got.rpc, got.read_only), (rpc, read_only), "{method} {template}");
        if template.contains("/2.0/mlflow/") || template.contains("/3.0/mlflow/") {
            let other = if template.starts_with("/api/") {
                template.replacen("/api/", "/ajax-api/", 1)
            } else {
                template.replacen("/ajax-api/", "/api/", 1)
            };
            if let Some(o) = classify(method, &sample(&other)) {
                assert_eq!(o.rpc, rpc, "{method} {other}");
            }
        }
    }
    assert_eq!(count, 561);
    for table in TABLES {
        for r in table {
            assert!(["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&r.method), "{}", r.template);
            assert!(r.template.starts_with('/'), "{}", r.template);
            if r.kind == Kind::Public {
                assert_eq!(r.method, "GET");
            }
        }
    }
}

#[test]
fn hostile_paths_stay_linear() {
    let mut path = String::from("/api/3.0/mlflow/mcp-servers");
    for _ in 0..20_000 {
        path.push_str("/versions");
    }
    let started = std::time::Instant::now();
    for method in ["GET", "POST", "PATCH", "DELETE"] {
        let _ = classify(method, &path);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    let got = op("DELETE", &format!("{path}/tags/k"));
    assert_eq!(got.rpc, "DeleteMcpServerVersionTag");
}

/// With `MLFLOW_ROUTES_FILE` set to the output of `tests/e2e/dump_mlflow_routes.py`, and/or `MLFLOW_ROUTES_FILES` to
/// several of them (one per MLflow version of the compatibility matrix, separated like `PATH`), every route each
/// installed MLflow serves must classify. Skipped when neither is set.
#[test]
fn dumped_mlflow_routes_all_classify() {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    if let Some(one) = std::env::var_os("MLFLOW_ROUTES_FILE") {
        files.push(one.into());
    }
    if let Some(many) = std::env::var_os("MLFLOW_ROUTES_FILES") {
        files.extend(std::env::split_paths(&many).filter(|p| !p.as_os_str().is_empty()));
    }
    if files.is_empty() {
        eprintln!("neither MLFLOW_ROUTES_FILE nor MLFLOW_ROUTES_FILES is set; skipping");
        return;
    }
    let mut missing = Vec::new();
    for file in &files {
        let file = file.display();
        let text = std::fs::read_to_string(file.to_string()).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut checked = 0;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (method, template) = line.split_once(' ').unwrap_or_else(|| panic!("bad line {line:?} in {file}"));
            checked += 1;
            if classify(method, &sample(template)).is_none() {
                missing.push(format!("{line}  ({file})"));
            }
        }
        assert!(checked > 0, "{file} lists no routes");
        eprintln!("{file}: {checked} routes, all checked");
    }
    assert!(missing.is_empty(), "routes MLflow serves but the table does not classify:\n{}", missing.join("\n"));
}

#[test]
fn body_classes_come_from_the_table() {
    let class = |method: &str, path: &str| op(method, path).body;
    assert_eq!(class("GET", "/"), BodyClass::None);
    assert_eq!(class("GET", "/health"), BodyClass::None);
    assert_eq!(class("GET", "/static-files/app.js"), BodyClass::None);
    assert_eq!(class("OPTIONS", "/api/2.0/mlflow/runs/search"), BodyClass::None);
    assert_eq!(class("POST", "/api/2.0/mlflow/runs/search"), BodyClass::Small);
    assert_eq!(class("POST", "/ajax-api/2.0/mlflow/experiments/search"), BodyClass::Small);
    assert_eq!(class("POST", "/api/2.0/mlflow/runs/log-batch"), BodyClass::Large);
    assert_eq!(class("POST", "/graphql"), BodyClass::GraphQl);
    assert_eq!(class("GET", "/graphql"), BodyClass::GraphQl);
    for (method, path) in [
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/a/model.pkl"),
        ("PUT", "/ajax-api/2.0/mlflow-artifacts/artifacts/1/a/model.pkl"),
        ("POST", "/ajax-api/2.0/mlflow/upload-artifact"),
        ("POST", "/v1/traces"),
        ("POST", "/gateway/chat/mlflow/invocations"),
        ("POST", "/gateway/proxy/chat/v1/x"),
    ] {
        assert_eq!(class(method, path), BodyClass::Stream, "{method} {path}");
        assert!(!op(method, path).read_only, "{method} {path}");
    }
    // The artifact store's DELETE takes no file: its body (if any) is read as JSON like any write.
    assert_eq!(class("DELETE", "/api/2.0/mlflow-artifacts/artifacts/1/a/model.pkl"), BodyClass::Large);
}

#[test]
fn rpc_constants_name_routes_of_the_table() {
    let mlflow = [
        rpc::UPLOAD_RUN_ARTIFACT,
        rpc::CREATE_RUN,
        rpc::LOG_BATCH,
        rpc::CREATE_REGISTERED_MODEL,
        rpc::CREATE_LOGGED_MODEL,
        rpc::CREATE_MODEL_VERSION,
        rpc::START_TRACE,
        rpc::TRANSITION_MODEL_VERSION_STAGE,
        rpc::SET_REGISTERED_MODEL_ALIAS,
        rpc::DELETE_ARTIFACT,
        rpc::SET_MODEL_VERSION_TAG,
        rpc::DELETE_REGISTERED_MODEL_ALIAS,
    ];
    for name in mlflow {
        assert!(all_routes().any(|(_, _, r, _)| r == name), "{name}");
    }
    for (_, _, name, _) in WORKFLOW {
        assert!(!all_routes().any(|(_, _, r, _)| r == name), "{name}");
    }
}
