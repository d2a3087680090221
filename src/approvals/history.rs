//! The registry's history, served by the gate (`GET /api/2.0/mlflow/registry-history/get`, after the policy allowed
//! the read): the versions of a model are read with `model-versions/search` (their tags hold the gate's history
//! stamps; pages of 1000, not one request per version), in the request's workspace, and the tenures are rebuilt
//! by `mlflow::history::timeline`.

use http::Method;
use serde_json::{Map, Value};

use super::Call;
use crate::error::GateError;
use crate::mlflow::history::{self, Query};
use crate::mlflow::target::field;
use crate::proxy::Upstream;

/// Versions read per search page.
const PAGE: usize = 1000;
/// Pages read at most (a model with more versions is refused rather than shown in part).
const MAX_PAGES: usize = 100;

/// The timeline of `name` (query: `alias`, `stage`, `since`, `at`), as `history::answer`.
pub async fn serve(upstream: &Upstream, call: &Call<'_>) -> Result<Value, GateError> {
    let name = field(call.target, "name").ok_or_else(|| GateError::BadRequest("name is required".into()))?;
    let query = query(call.query)?;
    let filter = match (name.contains('\''), name.contains('"')) {
        (false, _) => format!("name='{name}'"),
        (true, false) => format!("name=\"{name}\""),
        (true, true) => return Err(GateError::BadRequest("a model name with both quote characters".into())),
    };
    let mut versions = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = PAGE.to_string();
        let mut pairs = vec![("filter", filter.as_str()), ("max_results", page.as_str())];
        if let Some(t) = token.as_deref() {
            pairs.push(("page_token", t));
        }
        let q = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        let path = format!("/api/2.0/mlflow/model-versions/search?{q}");
        let (status, body) = upstream.call_json(call.context, Method::GET, &path, None).await.map_err(|e| {
            tracing::error!(error = %e, "reading the model's versions for its history failed");
            GateError::UpstreamUnavailable
        })?;
        if !status.is_success() {
            tracing::error!(%status, "MLflow refused the search for the model's versions");
            return Err(GateError::LookupFailed);
        }
        for mv in body.get("model_versions").and_then(Value::as_array).into_iter().flatten() {
            let version = match mv.get("version") {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => continue,
            };
            versions.push((version, history::entries(&tag_map(mv.get("tags")))));
        }
        token = body.get("next_page_token").and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_owned);
        if token.is_none() {
            let entries = call.query.iter().any(|(k, v)| k == "include_entries" && v == "true");
            return Ok(history::answer(name, &versions, &query, entries));
        }
    }
    Err(GateError::BadRequest(format!(
        "{name} has more than {} versions; the history cannot be shown whole",
        PAGE * MAX_PAGES
    )))
}

/// `[{key, value}]` -> `{key: value}`.
fn tag_map(tags: Option<&Value>) -> Map<String, Value> {
    let items = tags.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    items.iter().filter_map(|t| Some((t.get("key")?.as_str()?.to_string(), t.get("value")?.clone()))).collect()
}

fn query(pairs: &[(String, String)]) -> Result<Query, GateError> {
    let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let time = |k: &str| -> Result<Option<u64>, GateError> {
        get(k)
            .map(|v| {
                history::parse_time(&v).ok_or_else(|| {
                    GateError::BadRequest(format!("{k} must be milliseconds since the epoch or RFC 3339 in UTC"))
                })
            })
            .transpose()
    };
    Ok(Query { alias: get("alias"), stage: get("stage"), since: time("since")?, at: time("at")? })
}
