//! The review page, dispatched by the gate after authentication (session or bearer): `GET /gate/reviews` lists the
//! open transition requests, newest first, with the evidence the policy sees and whether the policy would let the
//! signed-in person approve (and why not); `GET /gate/reviews/version?name=&version=` shows a version's stage and
//! alias history (the gate's stamps) and its workflow activity. The evidence and the "would approve" answer come
//! from the serving phases themselves (`pipeline::classify`, `pipeline::enrich`, `policy`) run on the approve request
//! the page's button would send; the buttons send that very request to the workflow API, so a decision on this page
//! takes the same code path and policy as any API client. Nothing is rendered unescaped (see `page`).

mod page;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, Uri, Version};
use serde_json::{json, Map, Value};

use crate::auth::Principal;
use crate::body::{self, GateBody};
use crate::error::GateError;
use crate::mlflow::canon::Target;
use crate::mlflow::workflow::{self, Activity};
use crate::pipeline::classify;
use crate::pipeline::enrich::Enricher;
use crate::policy::{input, Policy};
use crate::proxy::{RequestContext, Upstream};

/// The review list.
pub const REVIEWS_PATH: &str = "/gate/reviews";
/// A version's history.
pub const VERSION_PATH: &str = "/gate/reviews/version";
/// Versions read per search page, and pages read at most.
const PAGE_SIZE: usize = 1000;
const MAX_PAGES: usize = 10;

/// Whether the gate serves this path as a review page.
pub fn owns(path: &str) -> bool {
    path == REVIEWS_PATH || path == VERSION_PATH
}

/// What the review pages need.
pub struct Reviews<'a> {
    /// MLflow.
    pub upstream: &'a Upstream,
    /// The policy in force.
    pub policy: &'a Policy,
    /// The serving enricher.
    pub enricher: &'a Enricher,
}

/// One open request with its evidence and the policy's answer for the viewer.
pub struct OpenRequest {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The request (Databricks' activity object: `to_stage`, `user_id`, `comment`, ...).
    pub request: Value,
    /// When it was made (ms).
    pub at: u64,
    /// `input.resource` of the approve request.
    pub resource: Value,
    /// Every activity of the version, oldest first.
    pub activities: Vec<Value>,
    /// Whether the viewer may approve, and the policy's reasons if not.
    pub verdict: Result<(), String>,
}

impl Reviews<'_> {
    /// Serves a review page (GET only).
    pub async fn serve(
        &self,
        method: &Method,
        target: &Target,
        ctx: &RequestContext,
        principal: &Principal,
    ) -> Result<Response<GateBody>, GateError> {
        if *method != Method::GET {
            return Err(GateError::BadRequest(format!("{} takes GET only", target.path)));
        }
        let gates = self.gates();
        let html = if target.path == REVIEWS_PATH {
            let open = self.open_requests(ctx, principal).await?;
            page::reviews(principal, &open, &gates)
        } else {
            let query = target.query_pairs();
            let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
            let (name, version) = (param("name"), param("version"));
            let path = format!(
                "/api/2.0/mlflow/transition-requests/list?{}",
                pairs(&[("name", &name), ("version", &version)])
            );
            let (resource, _) = self.simulate(Method::GET, &path, None, ctx, principal).await?;
            page::version(principal, &name, &version, &resource)
        };
        let mut resp = Response::new(body::full(Bytes::from(html)));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Only the page's own script and style; nothing from anywhere else.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
        );
        h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        Ok(resp)
    }

    /// Every open transition request of the registry (read in the request's workspace), newest first.
    async fn open_requests(&self, ctx: &RequestContext, principal: &Principal) -> Result<Vec<OpenRequest>, GateError> {
        let mut out = Vec::new();
        for mv in self.versions_with_activity(ctx).await? {
            let name = mv.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let version = mv.get("version").and_then(Value::as_str).unwrap_or_default().to_string();
            let tags = tag_map(mv.get("tags"));
            let list = workflow::activities(&tags);
            for request in workflow::open_requests(&list) {
                out.push(self.evaluate_request(&name, &version, request, &list, ctx, principal).await?);
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.at));
        Ok(out)
    }

    async fn evaluate_request(
        &self,
        name: &str,
        version: &str,
        request: &Activity,
        list: &[Activity],
        ctx: &RequestContext,
        principal: &Principal,
    ) -> Result<OpenRequest, GateError> {
        let mut body = json!({"name": name, "version": version, "archive_existing_versions": true});
        let api = request.to_api(name, version);
        if let (Some(b), Some(stage)) = (body.as_object_mut(), &request.to_stage) {
            b.insert("stage".into(), Value::String(stage.clone()));
        }
        let path = "/api/2.0/mlflow/transition-requests/approve";
        let (resource, verdict) = self.simulate(Method::POST, path, Some(&body), ctx, principal).await?;
        Ok(OpenRequest {
            name: name.to_string(),
            version: version.to_string(),
            request: api,
            at: request.creation_timestamp,
            resource,
            activities: list.iter().map(|a| a.to_api(name, version)).collect(),
            verdict,
        })
    }

    /// Runs the serving phases up to the decision on a request the viewer could send: classify, parameters,
    /// enrich, decide. Returns `input.resource` and the decision (the policy's reasons when it denies).
    async fn simulate(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        ctx: &RequestContext,
        principal: &Principal,
    ) -> Result<(Value, Result<(), String>), GateError> {
        let uri: Uri = path.parse().map_err(|_| GateError::Internal)?;
        let mut headers = HeaderMap::new();
        ctx.apply_workspace(&mut headers);
        let head = classify::head(&method, &uri, Version::HTTP_11, &headers, ctx.request_id())?;
        let op = head.operation()?;
        let json = match body {
            Some(b) => Some(classify::parse_body(b.to_string().as_bytes())?.0),
            None => None,
        };
        let fields = head.parameters(&op, json.as_ref())?;
        let resource = self.enricher.resource(self.upstream, &head.context, &op, fields).await.map_err(|e| {
            tracing::error!(error = %e, "enrichment for the review page failed");
            GateError::LookupFailed
        })?;
        let query = head.query();
        let facts = input::RequestFacts {
            method: head.method.as_str(),
            path: &head.target.path,
            query: &query,
            body: json.as_ref(),
            workspace: head.context.workspace_name(),
        };
        let decision = self.policy.decide(principal, &op, &facts, &resource).map_err(|e| {
            tracing::error!(error = %e, "policy evaluation for the review page failed");
            GateError::PolicyFailed
        })?;
        let verdict = match (decision.allow, decision.reasons.is_empty()) {
            (true, _) => Ok(()),
            (false, true) => Err(format!("{} is not permitted by policy", op.rpc)),
            (false, false) => Err(decision.reasons.join("; ")),
        };
        Ok((resource, verdict))
    }

    /// Model versions carrying workflow activity tags (searched page by page, at most `MAX_PAGES`).
    async fn versions_with_activity(&self, ctx: &RequestContext) -> Result<Vec<Value>, GateError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let size = PAGE_SIZE.to_string();
            let mut query = vec![("max_results", size.as_str())];
            if let Some(t) = &token {
                query.push(("page_token", t.as_str()));
            }
            let path = format!("/api/2.0/mlflow/model-versions/search?{}", pairs(&query));
            let (status, page) = self.upstream.call_json(ctx, Method::GET, &path, None).await.map_err(|e| {
                tracing::error!(error = %e, "searching model versions for the review page failed");
                GateError::LookupFailed
            })?;
            if !status.is_success() {
                tracing::error!(%status, "searching model versions for the review page failed");
                return Err(GateError::LookupFailed);
            }
            let versions = page.get("model_versions").and_then(Value::as_array).cloned().unwrap_or_default();
            out.extend(versions.into_iter().filter(has_activity));
            token = page.get("next_page_token").and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// The evaluation gates of the policy's data (`data.json` of the bundle): `{"default": .., "models": ..}`.
    fn gates(&self) -> Value {
        let path = self.policy.bundle().dir().join("data.json");
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|d| d.get("gates").cloned())
            .unwrap_or(Value::Null)
    }
}

fn has_activity(mv: &Value) -> bool {
    let tags = mv.get("tags").and_then(Value::as_array);
    tags.is_some_and(|t| {
        t.iter()
            .any(|kv| kv.get("key").and_then(Value::as_str).is_some_and(|k| k.starts_with(workflow::ACTIVITY_PREFIX)))
    })
}

/// MLflow's `[{"key", "value"}]` tags as a map.
fn tag_map(tags: Option<&Value>) -> Map<String, Value> {
    let items = tags.and_then(Value::as_array).into_iter().flatten();
    items
        .filter_map(|kv| Some((kv.get("key")?.as_str()?.to_string(), kv.get("value").cloned().unwrap_or(Value::Null))))
        .collect()
}

fn pairs(query: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish()
}
