//! Outside the request path, for the security team: `mlflow-gate explain METHOD PATH [--body JSON]` runs a request
//! through the same classification steps the gate applies (canonical target, route, body rules, target fields,
//! reserved tags) and prints the operation, the target and the input document the policy would be asked about.
//! With a config, registry facts are looked up in the live MLflow exactly as the gate would.

use http::{Method, Uri, Version};
use serde_json::{json, Map, Value};

use crate::auth::Principal;
use crate::mlflow::enrich::Enricher;
use crate::mlflow::{canon, params, routes, stamps, target};
use crate::policy::input;
use crate::proxy::{RequestContext, Upstream, Workspace};

/// The result of explaining a request.
#[derive(Debug)]
pub struct Explanation {
    /// The operation, or why the gate would refuse the request before the policy.
    pub operation: Result<routes::Operation, String>,
    /// The input document (when the request gets as far as the policy).
    pub input: Option<Value>,
}

/// Explains a request for `principal`, sent with `workspace` as its `X-MLFLOW-WORKSPACE` header (validated as when
/// serving). `upstream` enables live look-ups of registry facts, made in that workspace.
pub async fn explain(
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
    principal: &Principal,
    workspace: Option<&str>,
    upstream: Option<&Upstream>,
) -> Explanation {
    let refused = |why: String| Explanation { operation: Err(why), input: None };
    let ctx = match workspace.map(Workspace::parse).transpose() {
        Ok(w) => RequestContext::new("explain", w),
        Err(e) => return refused(format!("400: {e}")),
    };
    let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        return refused(format!("{method} is not an HTTP method"));
    };
    let Ok(uri) = path_and_query.parse::<Uri>() else {
        return refused(format!("{path_and_query} is not a request target"));
    };
    let t = match canon::canonicalize(&uri, Version::HTTP_11) {
        Ok(t) => t,
        Err(e) => return refused(format!("400: {e}")),
    };
    let op = match routes::classify(method.as_str(), &t.path) {
        Some(op) => op,
        None if matches!(method, Method::GET | Method::HEAD) => {
            routes::Operation::plain("Unknown", true, routes::Resource::Unknown)
        }
        None => return refused(format!("403: {method} {} is not a route the gate knows", t.path)),
    };
    if op.public {
        return Explanation { operation: Ok(op), input: None };
    }
    let json = match body.filter(|b| !b.is_empty()) {
        None => None,
        Some(_) if matches!(method, Method::GET | Method::HEAD) && op.resource != routes::Resource::GraphQl => {
            return refused("400: GET requests with a body are refused".into())
        }
        Some(b) => match params::parse_json_object(b.as_bytes()) {
            Ok(mut m) => match target::normalize_body(&mut m) {
                Ok(()) => Some(m),
                Err(e) => return refused(format!("400: {e}")),
            },
            Err(e) => return refused(format!("400: {e}")),
        },
    };
    let reads = if target::reads_query(op.rpc) { "GET" } else { method.as_str() };
    let fields = match target::extract(reads, &t.query_pairs(), json.as_ref(), &op.path_params) {
        Ok(f) => f,
        Err(e) => return refused(format!("400: {e}")),
    };
    if let Some(problem) = crate::mlflow::names::refused_write(&op, &fields, json.as_ref()) {
        return refused(format!("400: {problem}"));
    }
    if let Some(key) = stamps::reserved_tag_write(&op, &fields, json.as_ref()) {
        return refused(format!("403: the tag {key:?} is reserved for mlflow-gate"));
    }
    let resource = match upstream {
        Some(up) => match Enricher::new().resource(up, &ctx, &op, fields).await {
            Ok(r) => r,
            Err(e) => return refused(format!("503: {e}")),
        },
        None => json!({ "target": Value::Object(fields) }),
    };
    let query = params::query_map(&t.query_pairs());
    let facts = input::RequestFacts {
        method: method.as_str(),
        path: &t.path,
        query: &query,
        body: json.as_ref(),
        workspace: ctx.workspace_name(),
    };
    let doc = input::build(principal, &op, &facts, resource);
    Explanation { operation: Ok(op), input: Some(doc) }
}

/// A principal for explaining requests on someone's behalf.
pub fn principal(sub: &str, groups: &[String]) -> Principal {
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::String(sub.into()));
    claims.insert("groups".into(), json!(groups));
    Principal { sub: sub.into(), issuer: "(explain)".into(), groups: groups.to_vec(), claims: Value::Object(claims) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn explains_a_camel_cased_transition_with_canonical_target() {
        let body = r#"{"name":"fraud-detector","version":7,"stage":"production","archiveExistingVersions":true}"#;
        let e = explain(
            "post",
            "/ajax-api/2.0/mlflow/model-versions/transition-stage",
            Some(body),
            &principal("alice", &[]),
            Some("team"),
            None,
        )
        .await;
        assert_eq!(e.operation.as_ref().map(|o| o.rpc).ok(), Some("TransitionModelVersionStage"));
        let input = e.input.unwrap_or_default();
        assert_eq!(input["resource"]["target"]["stage"], "Production");
        assert_eq!(input["resource"]["target"]["version"], "7");
        assert_eq!(input["request"]["body"]["archive_existing_versions"], true);
        assert_eq!(input["request"]["workspace"], "team");
    }

    #[tokio::test]
    async fn refusals_say_why() {
        let p = principal("alice", &[]);
        let e = explain("POST", "/api/2.0/mlflow/registered-models/obliterate", Some("{}"), &p, None, None).await;
        assert!(e.operation.is_err_and(|w| w.starts_with("403")));
        let e = explain("POST", "//api/2.0/mlflow/registered-models/create", Some("{}"), &p, None, None).await;
        assert!(e.operation.is_err_and(|w| w.starts_with("400")));
        let e = explain("GET", "/api/2.0/mlflow/experiments/search", None, &p, Some("Team"), None).await;
        assert!(e.operation.is_err_and(|w| w.starts_with("400") && w.contains("X-MLFLOW-WORKSPACE")));
    }
}
