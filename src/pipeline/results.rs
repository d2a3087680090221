//! Response phase, after MLflow answered a permitted search or list (`Need::Filter` in the route table): the page is
//! cut to the results the caller may read. Each result's permission chain (experiment; run then experiment; logged
//! model then experiment; registered model, for models, prompts and versions) is built from the result itself and
//! from look-ups of its parents (one per distinct parent on the page; a trace (with its own grants) and a dataset
//! summary have their experiment as parent, and one without an MLflow experiment is dropped; an AI-gateway endpoint is
//! its own link, a binding and an OpenAI-style model take their endpoint's), and the policy decides them all in one
//! evaluation (`input.resource.permissions.candidates`, answered with `readable`, see `policies/permissions.rego`).
//! The page keeps MLflow's order and `next_page_token`; it may come back shorter than `max_results`. Anything the gate
//! cannot build or decide fails the request (never an unfiltered page).

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::enrich::permissions::{self, Node, Resolved};
use super::enrich::{EnrichError, Enricher};
use crate::auth::Principal;
use crate::mlflow::permission::{Anchor, Grants};
use crate::mlflow::routes::Operation;
use crate::mlflow::stamps::{CREATED_BY, RUN_USER_TAG};
use crate::policy::{input, Policy};
use crate::proxy::{RequestContext, Upstream};

/// Why a page could not be filtered.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// MLflow's answer is not the JSON the gate expects.
    #[error("MLflow's answer to {0} is not a JSON object with a list of results")]
    Unreadable(&'static str),
    /// A parent could not be looked up.
    #[error(transparent)]
    Lookup(#[from] EnrichError),
    /// The policy failed or gave no `readable` list.
    #[error("the policy did not decide which results are readable: {0}")]
    Policy(String),
}

/// What a filtered RPC's page holds: the list field and the kind of its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Experiment,
    Run,
    RegisteredModel,
    ModelVersion,
    LoggedModel,
    /// A trace (v2 `experiment_id`, v3 `trace_location.mlflow_experiment.experiment_id`): its experiment decides.
    Trace,
    /// A dataset summary (`experiment_id`): its experiment decides.
    Dataset,
    /// A scorer or a scorer's online configuration (`experiment_id`, a number or a string): its experiment decides.
    Scorer,
    /// An evaluation dataset (v3, `experiment_ids`): the dataset, then every one of its experiments (one linked to
    /// none has only itself, so the default level decides).
    EvalDataset,
    /// An AI-gateway endpoint (`gateway/endpoints/list`): its own link, from the result.
    GatewayEndpoint,
    /// A binding of an AI-gateway endpoint (`endpoint_id`): its endpoint decides.
    EndpointBinding,
    /// An OpenAI-style model of the gateway (`GET /gateway/mlflow/v1/models`): `id` is its endpoint's name.
    GatewayModel,
}

fn page_of(rpc: &str) -> Option<(&'static str, Kind)> {
    match rpc {
        "SearchExperiments" => Some(("experiments", Kind::Experiment)),
        "SearchRuns" => Some(("runs", Kind::Run)),
        "SearchRegisteredModels" => Some(("registered_models", Kind::RegisteredModel)),
        "SearchModelVersions" => Some(("model_versions", Kind::ModelVersion)),
        "SearchLoggedModels" => Some(("models", Kind::LoggedModel)),
        "SearchTraces" | "SearchTracesV3" => Some(("traces", Kind::Trace)),
        "SearchDatasets" => Some(("dataset_summaries", Kind::Dataset)),
        "ListScorers" => Some(("scorers", Kind::Scorer)),
        "GetOnlineScoringConfigs" => Some(("configs", Kind::Scorer)),
        "SearchEvaluationDatasets" => Some(("datasets", Kind::EvalDataset)),
        "ListGatewayEndpoints" => Some(("endpoints", Kind::GatewayEndpoint)),
        "ListEndpointBindings" => Some(("bindings", Kind::EndpointBinding)),
        "GatewayListModels" => Some(("data", Kind::GatewayModel)),
        _ => None,
    }
}

/// Everything the filter needs from the request.
pub struct Filter<'a> {
    /// Look-ups of parents.
    pub enricher: &'a Enricher,
    /// MLflow.
    pub upstream: &'a Upstream,
    /// The request's context (workspace).
    pub ctx: &'a RequestContext,
    /// The policy in force.
    pub policy: &'a Policy,
    /// Who asked.
    pub principal: &'a Principal,
    /// The search.
    pub op: &'a Operation,
    /// The request as the policy saw it.
    pub request: &'a input::RequestFacts<'a>,
}

impl Filter<'_> {
    /// The page cut to what the caller may read, serialised; `None` when the route is not a filtered page.
    pub async fn page(&self, answer: &[u8]) -> Result<Option<Vec<u8>>, FilterError> {
        let Some((field, kind)) = page_of(self.op.rpc) else { return Ok(None) };
        let Ok(Value::Object(mut doc)) = serde_json::from_slice::<Value>(answer) else {
            return Err(FilterError::Unreadable(self.op.rpc));
        };
        let items = match doc.remove(field) {
            None => return Ok(Some(answer.to_vec())),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(FilterError::Unreadable(self.op.rpc)),
        };
        let chains = self.chains(kind, &items).await?;
        let gateway = matches!(kind, Kind::GatewayEndpoint | Kind::EndpointBinding | Kind::GatewayModel);
        let readable = self.readable_as(&chains, gateway.then_some("gateway_endpoint"))?;
        let kept: Vec<Value> = items
            .into_iter()
            .zip(chains)
            .enumerate()
            .filter(|(i, (_, chain))| chain.is_some() && readable.contains(i))
            .map(|(_, (item, _))| item)
            .collect();
        doc.insert(field.to_string(), Value::Array(kept));
        serde_json::to_vec(&Value::Object(doc)).map(Some).map_err(|_| FilterError::Unreadable(self.op.rpc))
    }

    /// One evaluation for the whole page: the indexes of the readable candidates.
    fn readable(&self, chains: &[Option<Value>]) -> Result<HashSet<usize>, FilterError> {
        self.readable_as(chains, None)
    }

    /// [`Filter::readable`] for a page of one kind of object that may have a default of its own (`kind` in the
    /// facts: `data.permissions.type_default`).
    fn readable_as(&self, chains: &[Option<Value>], kind: Option<&str>) -> Result<HashSet<usize>, FilterError> {
        let candidates: Vec<Value> = chains.iter().map(|c| c.clone().unwrap_or_else(|| json!([]))).collect();
        let mut facts = json!({"workspace": self.ctx.workspace_name(), "candidates": candidates});
        if let (Some(kind), Some(map)) = (kind, facts.as_object_mut()) {
            map.insert("kind".into(), Value::String(kind.to_string()));
        }
        let resource = json!({ "permissions": facts });
        // A page polled again with the same results and grants is decided from the decision cache.
        let decision = self
            .policy
            .decide(self.principal, self.op, self.request, &resource)
            .map_err(|e| FilterError::Policy(e.to_string()))?;
        let Some(Value::Array(indexes)) = decision.flags.get("readable") else {
            return Err(FilterError::Policy("the decision has no \"readable\" list".into()));
        };
        Ok(indexes.iter().filter_map(Value::as_u64).filter_map(|i| usize::try_from(i).ok()).collect())
    }

    /// Each result's chain (`None`: its parent is gone, the result is dropped).
    async fn chains(&self, kind: Kind, items: &[Value]) -> Result<Vec<Option<Value>>, FilterError> {
        let mut parents: Parents = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let (own, parent) = match kind {
                Kind::Experiment => (Some(node_of(item, "experiment", "experiment_id", "name", CREATED_BY)), None),
                Kind::RegisteredModel => (Some(node_of(item, "registered_model", "name", "name", CREATED_BY)), None),
                Kind::ModelVersion => {
                    (None, text(item, "name").map(|n| (Anchor::RegisteredModel, "name", n.to_string())))
                }
                Kind::Run => {
                    let info = item.get("info").unwrap_or(&Value::Null);
                    let mut run = node_of(info, "run", "run_id", "run_name", RUN_USER_TAG);
                    let tags = kv(item.pointer("/data/tags"));
                    run.owner = tags.get(RUN_USER_TAG).and_then(Value::as_str).map(str::to_owned);
                    run.grants = Grants::from_tags(&tags);
                    (
                        Some(run),
                        text(info, "experiment_id").map(|e| (Anchor::Experiment, "experiment_id", e.to_string())),
                    )
                }
                Kind::EvalDataset => {
                    out.push(self.dataset_chain(item, &mut parents).await?);
                    continue;
                }
                Kind::GatewayEndpoint => (permissions::gateway_endpoint_node(item), None),
                Kind::EndpointBinding => {
                    (None, text(item, "endpoint_id").map(|e| (Anchor::GatewayEndpoint, "endpoint_id", e.to_string())))
                }
                Kind::GatewayModel => {
                    (None, text(item, "id").map(|e| (Anchor::GatewayEndpointName, "name", e.to_string())))
                }
                Kind::Scorer => {
                    let exp = item.get("experiment_id").and_then(Value::as_i64).map(|n| n.to_string());
                    let exp = exp.or_else(|| text(item, "experiment_id").map(str::to_owned));
                    (None, exp.map(|e| (Anchor::Experiment, "experiment_id", e)))
                }
                Kind::Trace | Kind::Dataset => {
                    let exp = text(item, "experiment_id").or_else(|| {
                        item.pointer("/trace_location/mlflow_experiment/experiment_id")
                            .and_then(Value::as_str)
                            .filter(|s| !s.is_empty())
                    });
                    let own = (kind == Kind::Trace).then(|| trace_node(item));
                    (own, exp.map(|e| (Anchor::Experiment, "experiment_id", e.to_string())))
                }
                Kind::LoggedModel => {
                    let info = item.get("info").unwrap_or(&Value::Null);
                    let model = node_of(info, "logged_model", "model_id", "name", CREATED_BY);
                    (
                        Some(model),
                        text(info, "experiment_id").map(|e| (Anchor::Experiment, "experiment_id", e.to_string())),
                    )
                }
            };
            let mut chain: Vec<Value> = Vec::with_capacity(2);
            let mut own = own;
            if let Some((anchor, field, id)) = parent {
                match self.parent(&mut parents, anchor, field, &id).await? {
                    Some((nodes, top)) => {
                        if let Some(trace) = own.as_mut().filter(|n| n.kind == "trace") {
                            trace.grants = permissions::trace_grants(&top, &trace.id);
                        }
                        chain.extend(nodes)
                    }
                    None => {
                        out.push(None);
                        continue;
                    }
                }
            } else if own.is_none() || kind == Kind::Trace {
                out.push(None);
                continue;
            }
            if let Some(node) = &own {
                if node.grants.is_err() {
                    out.push(None);
                    continue;
                }
                chain.insert(0, node.to_json());
            }
            out.push(Some(Value::Array(chain)));
        }
        Ok(out)
    }
}

/// A parent's nodes as the policy sees them, and the topmost (an experiment's grants hold its traces').
type Parent = (Vec<Value>, Node);

/// Parents already looked up for a page, by (anchor, id).
type Parents = HashMap<(Anchor, String), Option<Parent>>;

impl Filter<'_> {
    /// A parent's nodes (looked up once per page), or `None` when it is gone or cannot be checked.
    async fn parent(
        &self,
        parents: &mut Parents,
        anchor: Anchor,
        field: &str,
        id: &str,
    ) -> Result<Option<Parent>, FilterError> {
        let key = (anchor, id.to_string());
        if !parents.contains_key(&key) {
            let mut target = Map::new();
            target.insert(field.to_string(), Value::String(id.to_string()));
            let resolved = permissions::resolve(self.enricher, self.upstream, self.ctx, anchor, &target, false).await?;
            parents.insert(key.clone(), usable(resolved));
        }
        Ok(parents.get(&key).cloned().flatten())
    }

    /// An evaluation dataset's chain, looked up by its id (MLflow's search answer leaves its experiments out): itself,
    /// then each of its experiments (`None` when it is gone or cannot be checked).
    async fn dataset_chain(&self, item: &Value, parents: &mut Parents) -> Result<Option<Value>, FilterError> {
        let Some(id) = text(item, "dataset_id") else { return Ok(None) };
        Ok(self.parent(parents, Anchor::Dataset, "dataset_id", id).await?.map(|(nodes, _)| Value::Array(nodes)))
    }
}

impl Filter<'_> {
    /// A GraphQL answer with the lists the query selected cut to what the caller may read (`lists` in the target,
    /// from `mlflow::graphql::objects`: each `{"path": [response keys], "type": "run" | "model_version", "id":
    /// [response keys within an item]}`). An item whose id the gate cannot read, or whose object is gone, is dropped.
    /// The filter's operation must be a search look-alike (its decision answers `readable`).
    pub async fn graphql(&self, answer: &[u8], lists: &[Value]) -> Result<Vec<u8>, FilterError> {
        let Ok(mut doc) = serde_json::from_slice::<Value>(answer) else {
            return Err(FilterError::Unreadable("GraphQL"));
        };
        let specs: Vec<(Vec<String>, Anchor, Vec<String>)> = lists.iter().filter_map(list_spec).collect();
        if specs.len() != lists.len() {
            return Err(FilterError::Unreadable("GraphQL"));
        }
        let mut ids: Vec<(Anchor, String)> = Vec::new();
        for (path, anchor, id) in &specs {
            let mut items = Vec::new();
            collect(doc.get("data").unwrap_or(&Value::Null), path, &mut items);
            for item in items {
                if let Some(id) = item_id(item, id).map(|i| (*anchor, i.to_string())) {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
        }
        let mut parents: Parents = HashMap::new();
        let mut chains = Vec::with_capacity(ids.len());
        for (anchor, id) in &ids {
            let field = if *anchor == Anchor::Run { "run_id" } else { "name" };
            chains.push(self.parent(&mut parents, *anchor, field, id).await?.map(|(nodes, _)| Value::Array(nodes)));
        }
        let readable = self.readable(&chains)?;
        let allowed: HashSet<&(Anchor, String)> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| chains.get(*i).is_some_and(Option::is_some) && readable.contains(i))
            .map(|(_, id)| id)
            .collect();
        for (path, anchor, id) in &specs {
            if let Some(data) = doc.get_mut("data") {
                retain(data, path, &|item| {
                    item_id(item, id).is_some_and(|i| allowed.contains(&(*anchor, i.to_string())))
                });
            }
        }
        serde_json::to_vec(&doc).map_err(|_| FilterError::Unreadable("GraphQL"))
    }
}

fn list_spec(v: &Value) -> Option<(Vec<String>, Anchor, Vec<String>)> {
    let keys = |k: &str| -> Option<Vec<String>> {
        v.get(k)?.as_array()?.iter().map(|s| s.as_str().map(str::to_owned)).collect()
    };
    let anchor = match v.get("type")?.as_str()? {
        "run" => Anchor::Run,
        "model_version" => Anchor::RegisteredModel,
        _ => return None,
    };
    Some((keys("path")?, anchor, keys("id")?))
}

/// The items of the lists at `path` (lists met on the way are walked item by item).
fn collect<'a>(v: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
    match (v, path.split_first()) {
        (Value::Array(items), _) => items.iter().for_each(|i| collect(i, path, out)),
        (Value::Object(m), Some((key, rest))) => {
            if let Some(next) = m.get(key) {
                if rest.is_empty() {
                    out.extend(next.as_array().into_iter().flatten());
                } else {
                    collect(next, rest, out);
                }
            }
        }
        _ => {}
    }
}

/// Keeps the items of the lists at `path` that `keep` accepts.
fn retain(v: &mut Value, path: &[String], keep: &dyn Fn(&Value) -> bool) {
    match (v, path.split_first()) {
        (Value::Array(items), _) => items.iter_mut().for_each(|i| retain(i, path, keep)),
        (Value::Object(m), Some((key, rest))) => {
            if let Some(next) = m.get_mut(key) {
                if rest.is_empty() {
                    if let Value::Array(items) = next {
                        items.retain(|i| keep(i));
                    }
                } else {
                    retain(next, rest, keep);
                }
            }
        }
        _ => {}
    }
}

/// An item's id, by its response keys.
fn item_id<'a>(item: &'a Value, keys: &[String]) -> Option<&'a str> {
    keys.iter().try_fold(item, |v, k| v.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A parent's nodes (and the topmost), or `None` when it is gone or its grants cannot be read (its results are
/// dropped).
fn usable(resolved: Resolved) -> Option<Parent> {
    match resolved {
        Resolved::Chain(nodes) if nodes.iter().all(|n| n.grants.is_ok()) => {
            let top = nodes.last()?.clone();
            Some((nodes.iter().map(Node::to_json).collect(), top))
        }
        _ => None,
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn kv(tags: Option<&Value>) -> Map<String, Value> {
    super::enrich::kv_map(tags, "key", "value")
}

/// A trace result's own link: its id and its creator stamp, from its tags (v3: a map; v2: a list of `{key, value}`).
/// Its grants are filled from its experiment ([`permissions::trace_grants`]): tags on the trace itself can come from
/// OTLP ingest, so grant tags there are ignored.
fn trace_node(item: &Value) -> Node {
    let tags = match item.get("tags") {
        Some(Value::Object(map)) => map.clone(),
        other => kv(other),
    };
    Node {
        kind: "trace",
        id: text(item, "trace_id").or_else(|| text(item, "request_id")).unwrap_or_default().to_string(),
        name: None,
        owner: tags.get(CREATED_BY).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned),
        grants: Ok(Grants::default()),
    }
}

/// A node from a result that carries its own `[{key, value}]` tags.
fn node_of(v: &Value, kind: &'static str, id: &str, name: &str, owner_tag: &str) -> Node {
    let tags = kv(v.get("tags"));
    Node {
        kind,
        id: text(v, id).unwrap_or_default().to_string(),
        name: text(v, name).map(str::to_owned),
        owner: tags.get(owner_tag).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned),
        grants: Grants::from_tags(&tags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_carry_their_own_stamps_and_grants() {
        let exp = json!({"experiment_id": "3", "name": "e", "tags": [{"key": "mlflow_gate.created_by", "value": "ana"},
            {"key": "mlflow_gate.grants", "value": "{\"users\": {}, \"groups\": {\"team-b\": \"NO_PERMISSIONS\"}}"}]});
        let n = node_of(&exp, "experiment", "experiment_id", "name", CREATED_BY);
        assert_eq!(
            n.to_json(),
            json!({"type": "experiment", "id": "3", "name": "e", "owner": "ana",
            "grants": {"users": {}, "groups": {"team-b": "NO_PERMISSIONS"}}})
        );
        assert_eq!(page_of("SearchRuns"), Some(("runs", Kind::Run)));
        assert_eq!(page_of("GetRun"), None);
    }

    #[test]
    fn trace_results_take_their_grants_from_their_experiment_never_from_their_own_tags() {
        let v3 = json!({"trace_id": "tr-1", "tags": {"mlflow_gate.grant.user.mallory": "MANAGE",
            "mlflow_gate.created_by": "ana"}, "trace_location": {"mlflow_experiment": {"experiment_id": "1"}}});
        let mut trace = trace_node(&v3);
        assert_eq!(
            trace.to_json(),
            json!({"type": "trace", "id": "tr-1", "name": null, "owner": "ana", "grants": {"users": {}, "groups": {}}})
        );
        let v2 = json!({"request_id": "tr-2", "experiment_id": "1", "tags": [{"key": "mlflow.user", "value": "x"}]});
        assert_eq!(trace_node(&v2).id, "tr-2");
        let exp = json!({"experiment_id": "1", "name": "e", "tags": [
            {"key": "mlflow_gate.grant.trace.tr-1.user.alex", "value": "NO_PERMISSIONS"},
            {"key": "mlflow_gate.grant.trace.tr-9.group.team-b", "value": "READ"}]});
        let exp = node_of(&exp, "experiment", "experiment_id", "name", CREATED_BY);
        assert_eq!(
            exp.to_json()["grants"],
            json!({"users": {}, "groups": {}}),
            "trace grants are not the experiment's"
        );
        trace.grants = permissions::trace_grants(&exp, &trace.id);
        assert_eq!(trace.to_json()["grants"], json!({"users": {"alex": "NO_PERMISSIONS"}, "groups": {}}));
    }

    #[test]
    fn graphql_lists_are_found_through_lists_and_aliases_and_cut_in_place() {
        let mut doc = json!({"mlflowSearchRuns": {"runs": [
            {"info": {"runUuid": "r1"}, "mv": [{"name": "a"}, {"name": "b"}, {"version": "1"}]},
            {"info": {"runUuid": "r2"}, "mv": null},
            {"info": {}}]}});
        let spec =
            list_spec(&json!({"path": ["mlflowSearchRuns", "runs", "mv"], "type": "model_version", "id": ["name"]}));
        let Some((path, anchor, id)) = spec else { panic!("a valid list") };
        assert_eq!(anchor, Anchor::RegisteredModel);
        let mut items = Vec::new();
        collect(&doc, &path, &mut items);
        let names: Vec<Option<&str>> = items.iter().map(|i| item_id(i, &id)).collect();
        assert_eq!(names, [Some("a"), Some("b"), None]);
        retain(&mut doc, &path, &|i| item_id(i, &id) == Some("b"));
        assert_eq!(doc["mlflowSearchRuns"]["runs"][0]["mv"], json!([{"name": "b"}]));
        let runs: Vec<String> = ["mlflowSearchRuns".into(), "runs".into()].to_vec();
        let run_id: Vec<String> = ["info".into(), "runUuid".into()].to_vec();
        retain(&mut doc, &runs, &|i| item_id(i, &run_id) == Some("r2"));
        assert_eq!(doc["mlflowSearchRuns"]["runs"], json!([{"info": {"runUuid": "r2"}, "mv": null}]));
        assert!(list_spec(&json!({"path": ["x"], "type": "experiment", "id": []})).is_none());
    }

    #[test]
    fn scorers_and_evaluation_datasets_are_pages() {
        assert_eq!(page_of("ListScorers"), Some(("scorers", Kind::Scorer)));
        assert_eq!(page_of("SearchEvaluationDatasets"), Some(("datasets", Kind::EvalDataset)));
    }

    #[test]
    fn traces_and_datasets_are_pages_decided_by_their_experiment() {
        assert_eq!(page_of("SearchTraces"), Some(("traces", Kind::Trace)));
        assert_eq!(page_of("SearchTracesV3"), Some(("traces", Kind::Trace)));
        assert_eq!(page_of("SearchDatasets"), Some(("dataset_summaries", Kind::Dataset)));
    }
}
