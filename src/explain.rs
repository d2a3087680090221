//! Outside the request path, for the security team: `mlflow-gate explain METHOD PATH [--body JSON]` runs a request
//! through the gate's own phase functions (`pipeline::classify`: canonical target, request context, route, body
//! rules, parameters, names, reserved tags, the workflow's target; then enrichment and the input document) and
//! prints the operation, the target and the input document the policy would be asked about. It differs from
//! serving only in that nothing is authenticated or forwarded. With a config, registry facts are looked up in the
//! live MLflow exactly as the gate would.

use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use serde_json::{json, Map, Value};

use crate::auth::{Principal, Via};
use crate::error::GateError;
use crate::mlflow::routes;
use crate::pipeline::classify;
use crate::pipeline::enrich::{Enricher, Needs};
use crate::policy::input;
use crate::policy::Bundle;
use crate::proxy::context::WORKSPACE_HEADER;
use crate::proxy::Upstream;

/// The result of explaining a request.
#[derive(Debug)]
pub struct Explanation {
    /// The operation, or why the gate would refuse the request before the policy.
    pub operation: Result<routes::Operation, String>,
    /// The input document (when the request gets as far as the policy).
    pub input: Option<Value>,
}

/// Explains a request for `principal`, sent with `workspace` as its `X-MLFLOW-WORKSPACE` header (validated as when
/// serving). `upstream` enables live look-ups of registry facts, made in that workspace (every fact: see
/// [`explain_for`] for the facts a given bundle reads).
pub async fn explain(
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
    principal: &Principal,
    workspace: Option<&str>,
    upstream: Option<&Upstream>,
) -> Explanation {
    explain_for(method, path_and_query, body, principal, workspace, upstream, None).await
}

/// As [`explain`], looking up only the registry facts `bundle` declares it reads, as the gate serving that bundle
/// does (`pipeline::enrich::needs`).
pub async fn explain_for(
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
    principal: &Principal,
    workspace: Option<&str>,
    upstream: Option<&Upstream>,
    bundle: Option<&Bundle>,
) -> Explanation {
    let lookups = upstream.map(|up| (up, bundle));
    match classify_and_enrich(method, path_and_query, body, principal, workspace, lookups).await {
        Ok((op, input)) => Explanation { operation: Ok(op), input },
        Err(why) => Explanation { operation: Err(why), input: None },
    }
}

/// The gate's phases up to the decision (`pipeline::classify`, enrichment, the input document), without
/// authentication and forwarding. A refusal reads `STATUS: message`, as the gate would answer.
async fn classify_and_enrich(
    method: &str,
    path_and_query: &str,
    body: Option<&str>,
    principal: &Principal,
    workspace: Option<&str>,
    upstream: Option<(&Upstream, Option<&Bundle>)>,
) -> Result<(routes::Operation, Option<Value>), String> {
    let refused = |e: GateError| format!("{}: {e}", e.status().as_u16());
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("{method} is not an HTTP method"))?;
    let uri = path_and_query.parse::<Uri>().map_err(|_| format!("{path_and_query} is not a request target"))?;
    let mut headers = HeaderMap::new();
    if let Some(w) = workspace {
        let value =
            HeaderValue::from_str(w).map_err(|_| format!("400: {WORKSPACE_HEADER} {w:?} is not a header value"))?;
        headers.insert(WORKSPACE_HEADER, value);
    }
    let head = classify::head(&method, &uri, Version::HTTP_11, &headers, "explain").map_err(refused)?;
    let body = body.filter(|b| !b.is_empty());
    if let Some(op) = head.public() {
        head.public_body(body.is_some()).map_err(refused)?;
        return Ok((op.clone(), None));
    }
    let op = head.operation().map_err(refused)?;
    let json = match body {
        None => None,
        Some(b) => {
            head.body_allowed(&op).map_err(refused)?;
            if op.body == routes::BodyClass::Stream {
                None
            } else {
                let (json, _) = classify::parse_body(b.as_bytes()).map_err(refused)?;
                classify::check_graphql(&op, &json).map_err(refused)?;
                Some(json)
            }
        }
    };
    let fields = head.parameters(&op, json.as_ref()).map_err(refused)?;
    let ctx = &head.context;
    let resource = match upstream {
        Some((up, bundle)) => {
            let enricher = Enricher::new();
            let needs = bundle.map_or(Needs::ALL, |b| enricher.needs_of(b, &op));
            enricher.resource_with(up, ctx, &op, fields, needs).await.map_err(|e| match e.not_found() {
                Some(message) => format!("404: {message}"),
                None => format!("503: {e}"),
            })?
        }
        None => json!({ "target": Value::Object(fields) }),
    };
    let query = head.query();
    let facts = input::RequestFacts {
        method: head.method.as_str(),
        path: &head.target.path,
        query: &query,
        body: json.as_ref(),
        workspace: ctx.workspace_name(),
    };
    let doc = input::build(principal, &op, &facts, resource);
    Ok((op, Some(doc)))
}

/// A principal for explaining requests on someone's behalf.
pub fn principal(sub: &str, groups: &[String]) -> Principal {
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::String(sub.into()));
    claims.insert("groups".into(), json!(groups));
    let claims = Value::Object(claims);
    Principal { sub: sub.into(), issuer: "(explain)".into(), groups: groups.to_vec(), claims, via: Via::Bearer }
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
