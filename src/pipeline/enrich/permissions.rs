//! Enrichment, permission facts, between classification and policy: for every route the table gives a level
//! (`mlflow::permission`), the gate resolves the object the request touches to the chain that holds its
//! permissions (a run, then its experiment; a logged model or a trace, then its experiment; a registered model for its
//! versions and aliases), reads each link's creator stamp and grant tags in MLflow (a trace's are on its experiment), in the request's workspace, and hands them
//! to the policy as `input.resource.permissions`. The policy decides (`policies/permissions.rego`). A look-up that
//! fails is an error, which denies; an object that does not exist is reported as such (MLflow answers 404 to the
//! request itself).
//!
//! Reads (and the filtering of search results) take the links from a cache ([`Links`], moka, keyed by workspace and
//! id, [`LINK_TTL`]), and so do EDIT-level writes of a single gate; MANAGE-level writes (deletes, renames, grant
//! changes) and every write of a fleet's replica look up afresh and refresh it. Every permitted mutation through the
//! gate drops the links it may have changed ([`Links::invalidate`]), so a change made through this gate applies to
//! the next request, and one made elsewhere (another replica, MLflow directly) within the TTL.
//! A run's and a trace's link (their experiment and creator stamp, which never change) are taken from the cache by
//! writes too.
//!
//! Routes naming several objects (`Need::Each`: run ids, trace ids, experiment ids; GraphQL's `objects`) get one
//! entry per object in `objects`, each resolved like a single object.

use std::time::Duration;

use moka::sync::Cache;
use serde_json::{json, Map, Value};

use super::{artifacts, get, kv_map, EnrichError, Enricher};
use crate::mlflow::permission::{self, Anchor, Grants, Level, Need};
use crate::mlflow::routes::Operation;
use crate::mlflow::stamps::{CREATED_BY, RUN_USER_TAG};
use crate::proxy::{RequestContext, Upstream};

/// How long a cached link (an experiment's or registered model's stamp and grants, a run's experiment) is used.
pub const LINK_TTL: Duration = Duration::from_secs(5);

/// (workspace, kind, id).
type LinkKey = (Option<String>, &'static str, String);

/// Cached links: a missing object is cached too (`None`). A synchronous cache: its look-up is a call, not a future
/// stored (and copied) in every request's future.
pub struct Links {
    nodes: Cache<LinkKey, Option<(Node, Option<String>)>>,
    /// Whether EDIT-level writes may use the cache: true for a gate that sees every grant change (it drops what
    /// a change touches at once); false in a fleet, where another replica's change would not reach this cache.
    edits_cached: bool,
}

impl Default for Links {
    fn default() -> Self {
        Links { nodes: Cache::builder().max_capacity(100_000).time_to_live(LINK_TTL).build(), edits_cached: true }
    }
}

impl Links {
    /// A fleet's replicas: every write looks its links up afresh.
    pub fn fresh_writes(&mut self) {
        self.edits_cached = false;
    }

    /// Whether an operation needing `level` reads its links afresh: writes in a fleet, and everything that needs
    /// MANAGE (deletes, renames, grant changes) everywhere.
    fn fresh_for(&self, op: &Operation, level: Level) -> bool {
        !op.read_only && (level == Level::Manage || !self.edits_cached)
    }

    /// Drops the links a permitted mutation may have changed: the experiment, run and registered model its target
    /// names (a rename's new name too).
    pub async fn invalidate(&self, ctx: &RequestContext, target: &Map<String, Value>) {
        let ws = ctx.workspace_name().map(str::to_owned);
        for (kind, field) in [
            ("experiment", "experiment_id"),
            ("run", "run_id"),
            ("registered_model", "name"),
            ("registered_model", "new_name"),
            ("logged_model", "model_id"),
        ] {
            if let Some(id) = target.get(field).and_then(Value::as_str) {
                self.nodes.invalidate(&(ws.clone(), kind, id.to_string()));
            }
        }
    }
}

/// One link of an object's permission chain.
#[derive(Debug, Clone)]
pub struct Node {
    /// `experiment`, `run`, `registered_model` or `logged_model`.
    pub kind: &'static str,
    /// Its id (a registered model's is its name).
    pub id: String,
    /// Its name, when it has one.
    pub name: Option<String>,
    /// Its creator as the gate stamped it (a run's `mlflow.user`); `None` for objects made before the gate.
    pub owner: Option<String>,
    /// Its grants, or why they cannot be read.
    pub grants: Result<Grants, permission::BadGrants>,
}

impl Node {
    /// The policy's view of the link.
    pub fn to_json(&self) -> Value {
        // Built member by member: this runs for every link of every checked request (`json!` would serialise the
        // grant maps through serde instead of cloning them).
        let grants = self.grants.as_ref().map(Grants::to_json).unwrap_or_else(|_| json!({"users": {}, "groups": {}}));
        let text = |s: &Option<String>| s.as_ref().map_or(Value::Null, |s| Value::String(s.clone()));
        let mut node = Map::with_capacity(5);
        node.insert("type".into(), Value::String(self.kind.into()));
        node.insert("id".into(), Value::String(self.id.clone()));
        node.insert("name".into(), text(&self.name));
        node.insert("owner".into(), text(&self.owner));
        node.insert("grants".into(), grants);
        Value::Object(node)
    }
}

/// What resolving a target gave.
#[derive(Debug)]
pub enum Resolved {
    /// The object and its parents, the object first.
    Chain(Vec<Node>),
    /// MLflow says the object does not exist.
    Missing,
    /// The request does not name the object in a way the gate can read.
    Unnamed(String),
}

/// `input.resource.permissions` for an operation, or `None` when the route needs no level on an object.
pub async fn facts(
    enricher: &Enricher,
    up: &Upstream,
    ctx: &RequestContext,
    op: &Operation,
    target: &Map<String, Value>,
) -> Result<Option<Value>, EnrichError> {
    let need = permission::need(op);
    let fresh = match need {
        Need::On(level, _) | Need::Each(level, _) => enricher.permission_links.fresh_for(op, level),
        _ => !op.read_only,
    };
    let named: Vec<(Anchor, String)> = match need {
        Need::On(_, anchor) => {
            let resolved = resolve(enricher, up, ctx, anchor, target, fresh).await?;
            return Ok(Some(to_facts(ctx, anchor, &resolved)));
        }
        Need::Each(_, anchor) => {
            let (may_be_empty, also) = permission::each_extras(op.rpc);
            let mut named: Vec<(Anchor, String)> = match listed_ids(target, anchor) {
                Ok(ids) => ids.into_iter().map(|id| (anchor, id)).collect(),
                Err(_) if may_be_empty && target.get(anchor.list_field()).is_none_or(is_empty_list) => Vec::new(),
                Err(why) => return Ok(Some(many_facts(ctx, Some(why), Vec::new()))),
            };
            if let Some(also) = also {
                match named_id(target, also) {
                    Some(id) => named.insert(0, (also, id)),
                    None => {
                        let why = format!("the request names no {}", also.fields().join(" or "));
                        return Ok(Some(many_facts(ctx, Some(why), Vec::new())));
                    }
                }
            }
            named
        }
        Need::Queried => match queried(target) {
            Ok(objects) => objects,
            Err(why) => return Ok(Some(many_facts(ctx, Some(why), Vec::new()))),
        },
        Need::Unchecked | Need::Create | Need::Filter => return Ok(None),
    };
    let mut objects = Vec::with_capacity(named.len());
    for (anchor, id) in named {
        let mut one = Map::new();
        let field = if anchor == Anchor::Experiment && id.starts_with(RUN_EXPERIMENT) { "run_id" } else { "" };
        let resolved = if field.is_empty() {
            one.insert(anchor.fields().first().copied().unwrap_or("id").to_string(), Value::String(id.clone()));
            resolve(enricher, up, ctx, anchor, &one, fresh).await?
        } else {
            // The experiment of a run (GraphQL's `run { experiment }`): judged on its own, without the run.
            let run = id.trim_start_matches(RUN_EXPERIMENT).to_string();
            one.insert(field.to_string(), Value::String(run));
            match resolve(enricher, up, ctx, Anchor::Run, &one, fresh).await? {
                Resolved::Chain(mut nodes) => Resolved::Chain(nodes.split_off(nodes.len().saturating_sub(1))),
                other => other,
            }
        };
        let mut fact = to_facts(ctx, anchor, &resolved);
        if let Some(map) = fact.as_object_mut() {
            map.remove("workspace");
            map.insert("id".into(), Value::String(id));
        }
        objects.push(fact);
    }
    Ok(Some(many_facts(ctx, None, objects)))
}

fn is_empty_list(v: &Value) -> bool {
    v.is_null() || v.as_array().is_some_and(Vec::is_empty)
}

/// The id a target gives an anchor's first field, if any.
fn named_id(target: &Map<String, Value>, anchor: Anchor) -> Option<String> {
    named(target, anchor).ok().filter(|(a, _)| *a == anchor).map(|(_, id)| id)
}

/// The prefix of a GraphQL object naming the experiment of a run (`run_experiment:<run id>`).
pub const RUN_EXPERIMENT: &str = "run_experiment:";

/// The facts of a route naming several objects: `objects` holds one entry per object (its `anchor`, `id`,
/// `exists`, `problem` and `chain`, as a single object's facts); the request's own `exists` is false and its `chain`
/// empty, so only the rules about `objects` judge them. `problem` is set when the objects cannot be named at all.
fn many_facts(ctx: &RequestContext, problem: Option<String>, objects: Vec<Value>) -> Value {
    json!({"workspace": ctx.workspace_name(), "anchor": "each", "exists": false, "problem": problem, "chain": [],
        "objects": objects})
}

/// The distinct ids of a `Need::Each` route's list; an empty list is a problem (nothing could be checked).
fn listed_ids(target: &Map<String, Value>, anchor: Anchor) -> Result<Vec<String>, String> {
    let field = anchor.list_field();
    let mut ids: Vec<String> = Vec::new();
    for id in target.get(field).and_then(Value::as_array).into_iter().flatten() {
        match id.as_str() {
            Some(s) if !s.is_empty() => {
                if !ids.iter().any(|seen| seen == s) {
                    ids.push(s.to_string());
                }
            }
            _ => return Err(format!("{field} holds a value that is not an id")),
        }
    }
    if ids.is_empty() {
        return Err(format!("the request names no {field}, so the gate cannot check the permission it needs"));
    }
    Ok(ids)
}

/// The objects a GraphQL query names (`objects` in the target: `{"type", "id"}`); none is fine (a query of
/// `__typename` or `test` reads no object).
fn queried(target: &Map<String, Value>) -> Result<Vec<(Anchor, String)>, String> {
    let mut out = Vec::new();
    for object in target.get("objects").and_then(Value::as_array).into_iter().flatten() {
        let kind = object.get("type").and_then(Value::as_str).unwrap_or_default();
        let Some(id) = object.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
            return Err("a GraphQL object without an id".into());
        };
        let anchor = match kind {
            "experiment" => Anchor::Experiment,
            "run" => Anchor::Run,
            "run_experiment" => {
                out.push((Anchor::Experiment, format!("{RUN_EXPERIMENT}{id}")));
                continue;
            }
            other => return Err(format!("a GraphQL object of an unknown type {other:?}")),
        };
        if !out.iter().any(|(a, i)| *a == anchor && i == id) {
            out.push((anchor, id.to_string()));
        }
    }
    Ok(out)
}

/// The policy's view of a resolved chain.
pub fn to_facts(ctx: &RequestContext, anchor: Anchor, resolved: &Resolved) -> Value {
    let (exists, problem, chain) = match resolved {
        Resolved::Chain(nodes) => {
            let bad = nodes.iter().find_map(|n| {
                n.grants.as_ref().err().map(|e| format!("the {} {:?} cannot be checked: {e}", n.kind, n.id))
            });
            (true, bad, nodes.iter().map(Node::to_json).collect())
        }
        Resolved::Missing => (false, None, Vec::new()),
        Resolved::Unnamed(why) => (false, Some(why.clone()), Vec::new()),
    };
    let mut facts = Map::with_capacity(5);
    facts.insert("workspace".into(), ctx.workspace_name().map_or(Value::Null, |w| Value::String(w.into())));
    facts.insert("anchor".into(), Value::String(anchor.as_str().into()));
    facts.insert("exists".into(), Value::Bool(exists));
    facts.insert("problem".into(), problem.map_or(Value::Null, Value::String));
    facts.insert("chain".into(), Value::Array(chain));
    Value::Object(facts)
}

/// The value naming the object: the first of the anchor's fields the target has, as a non-empty string (a number
/// is rendered, as MLflow reads ids as strings). A `ListArtifacts` naming a run is about the run, whatever its
/// `path`; a run route naming no run but a logged model (`CreatePresignedDownloadUrl`) is about the logged model.
fn named(target: &Map<String, Value>, anchor: Anchor) -> Result<(Anchor, String), String> {
    if anchor == Anchor::ArtifactPath && target.get("run_id").or_else(|| target.get("run_uuid")).is_some() {
        return named(target, Anchor::Run);
    }
    // `gateway/endpoints/get` names an endpoint by `endpoint_id` or by `name`.
    if anchor == Anchor::GatewayEndpoint && target.get("endpoint_id").is_none() && target.get("name").is_some() {
        return named(target, Anchor::GatewayEndpointName);
    }
    // `artifacts/presigned-download-url` names a run or a logged model.
    let run_named = target.get("run_id").or_else(|| target.get("run_uuid")).is_some();
    if anchor == Anchor::Run && !run_named && target.get("model_id").is_some() {
        return named(target, Anchor::LoggedModel);
    }
    let fields = anchor.fields();
    for field in fields {
        match target.get(*field) {
            Some(Value::String(s)) if !s.is_empty() => return Ok((anchor, s.clone())),
            Some(Value::Number(n)) => return Ok((anchor, n.to_string())),
            Some(Value::String(_)) | None => continue,
            Some(_) => return Err(format!("the request's {field} is not a string")),
        }
    }
    Err(format!("the request names no {}, so the gate cannot check the permission it needs", fields.join(" or ")))
}

/// Resolves the object a target names to its permission chain.
pub async fn resolve(
    enricher: &Enricher,
    up: &Upstream,
    ctx: &RequestContext,
    anchor: Anchor,
    target: &Map<String, Value>,
    fresh: bool,
) -> Result<Resolved, EnrichError> {
    let (anchor, id) = match named(target, anchor) {
        Ok(named) => named,
        Err(why) => return Ok(Resolved::Unnamed(why)),
    };
    let mut chain = Vec::with_capacity(2);
    let experiment_id = match anchor {
        Anchor::Experiment => id,
        Anchor::ArtifactPath => match permission::artifact_experiment(&id) {
            Some(e) => e.to_string(),
            None => return Ok(Resolved::Unnamed(format!("the artifact path {id:?} names no experiment"))),
        },
        Anchor::ExperimentName => {
            let query = [("experiment_name", id.as_str())];
            let found = get(up, ctx, "experiment", "/api/2.0/mlflow/experiments/get-by-name", &query).await?;
            let Some(exp) = found.as_ref().and_then(|v| v.get("experiment")) else { return Ok(Resolved::Missing) };
            let Some(exp_id) = exp.get("experiment_id").and_then(Value::as_str) else {
                return Ok(Resolved::Missing);
            };
            chain.push(node("experiment", exp_id.to_string(), Some(id), exp.get("tags"), CREATED_BY));
            return Ok(Resolved::Chain(chain));
        }
        Anchor::RegisteredModel => {
            let Some((model, _)) = link(enricher, up, ctx, "registered_model", &id, fresh).await? else {
                return Ok(Resolved::Missing);
            };
            chain.push(model);
            return Ok(Resolved::Chain(chain));
        }
        Anchor::Run => {
            let Some((run, experiment)) = link(enricher, up, ctx, "run", &id, fresh).await? else {
                return Ok(Resolved::Missing);
            };
            chain.push(run);
            match experiment {
                Some(e) => e,
                None => return Ok(Resolved::Missing),
            }
        }
        Anchor::LoggedModel => {
            let Some((model, experiment)) = link(enricher, up, ctx, "logged_model", &id, fresh).await? else {
                return Ok(Resolved::Missing);
            };
            chain.push(model);
            match experiment {
                Some(e) => e,
                None => return Ok(Resolved::Missing),
            }
        }
        Anchor::Dataset => return dataset(enricher, up, ctx, id, fresh).await,
        Anchor::GatewayEndpoint | Anchor::GatewayEndpointName => {
            return gateway_endpoint(up, ctx, anchor == Anchor::GatewayEndpoint, &id).await
        }
        Anchor::Trace => {
            let Some((trace, experiment)) = link(enricher, up, ctx, "trace", &id, fresh).await? else {
                return Ok(Resolved::Missing);
            };
            chain.push(trace);
            match experiment {
                Some(e) => e,
                None => return Ok(Resolved::Missing),
            }
        }
    };
    let Some((experiment, _)) = link(enricher, up, ctx, "experiment", &experiment_id, fresh).await? else {
        return Ok(Resolved::Missing);
    };
    if let Some(trace) = chain.first_mut().filter(|n| n.kind == "trace") {
        trace.grants = trace_grants(&experiment, &trace.id);
    }
    chain.push(experiment);
    Ok(Resolved::Chain(chain))
}

/// A trace's grants, as its experiment holds them (`mlflow_gate.grant.trace.<id>.*`); unreadable if the
/// experiment's grant tags are.
pub fn trace_grants(experiment: &Node, trace_id: &str) -> Result<Grants, permission::BadGrants> {
    experiment.grants.as_ref().map(|g| g.traces.get(trace_id).cloned().unwrap_or_default()).map_err(Clone::clone)
}

/// An evaluation dataset's chain: the dataset (its owner: the gate's creator stamp in its JSON tags), then every
/// experiment it is linked to (one that is gone is left out). A dataset linked to no experiment has only itself: its
/// creator's level and the default apply.
async fn dataset(
    enricher: &Enricher,
    up: &Upstream,
    ctx: &RequestContext,
    id: String,
    fresh: bool,
) -> Result<Resolved, EnrichError> {
    let path = format!("/api/3.0/mlflow/datasets/{}", super::encode_segment(&id));
    let found = get(up, ctx, "dataset", &path, &[]).await?;
    let Some(info) = found.as_ref().and_then(|v| v.get("dataset")) else { return Ok(Resolved::Missing) };
    let name = info.get("name").and_then(Value::as_str).map(str::to_owned);
    // MLflow's dataset answers leave `experiment_ids` out unless loaded: they are asked for on their own.
    let linked = get(up, ctx, "dataset's experiments", &format!("{path}/experiment-ids"), &[]).await?;
    let tags = info.get("tags").and_then(Value::as_str).and_then(|t| serde_json::from_str::<Value>(t).ok());
    let owner = tags.as_ref().and_then(|t| t.get(CREATED_BY)).and_then(Value::as_str).map(str::to_owned);
    let mut chain = vec![Node { kind: "dataset", id, name, owner, grants: Ok(Grants::default()) }];
    for experiment in
        linked.as_ref().and_then(|v| v.get("experiment_ids")).and_then(Value::as_array).into_iter().flatten()
    {
        let Some(experiment) = experiment.as_str() else { continue };
        if let Some((node, _)) = link(enricher, up, ctx, "experiment", experiment, fresh).await? {
            chain.push(node);
        }
    }
    Ok(Resolved::Chain(chain))
}

/// An AI-gateway endpoint's chain: the endpoint alone (its owner: the `created_by` the gate stamped at its creation,
/// `stamps::stamp_request`; its grants: its grant tags), by id or by name. Looked up afresh every time, never cached:
/// gateway calls are few next to the UI's polling, an LLM call dwarfs one look-up, and an endpoint's name (which
/// invocations and pattern grants use) changes at EDIT level.
async fn gateway_endpoint(up: &Upstream, ctx: &RequestContext, by_id: bool, id: &str) -> Result<Resolved, EnrichError> {
    let query = [(if by_id { "endpoint_id" } else { "name" }, id)];
    let found = get(up, ctx, "gateway endpoint", "/api/3.0/mlflow/gateway/endpoints/get", &query).await?;
    let Some(endpoint) = found.as_ref().and_then(|v| v.get("endpoint")) else { return Ok(Resolved::Missing) };
    Ok(gateway_endpoint_node(endpoint).map_or(Resolved::Missing, |n| Resolved::Chain(vec![n])))
}

/// The link of an endpoint as MLflow answers it (`{endpoint_id, name, created_by, tags: [{key, value}]}`), also
/// used for the pages of `gateway/endpoints/list`; `None` without an id.
pub fn gateway_endpoint_node(endpoint: &Value) -> Option<Node> {
    let id = endpoint.get("endpoint_id").and_then(Value::as_str).filter(|s| !s.is_empty())?;
    let name = endpoint.get("name").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let mut node = node("gateway_endpoint", id.to_string(), name, endpoint.get("tags"), CREATED_BY);
    node.owner = endpoint.get("created_by").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    Some(node)
}

/// One link (`experiment`, `run`, `logged_model` or `trace` with its experiment id, or `registered_model`), from the
/// cache unless `fresh` (a run's or a trace's link always may come from the cache: nothing in it can change); a
/// fresh look-up refreshes the cache.
async fn link(
    enricher: &Enricher,
    up: &Upstream,
    ctx: &RequestContext,
    kind: &'static str,
    id: &str,
    fresh: bool,
) -> Result<Option<(Node, Option<String>)>, EnrichError> {
    let key = (ctx.workspace_name().map(str::to_owned), kind, id.to_string());
    let links = &enricher.permission_links;
    // A run's or a trace's link (its experiment and its gate-stamped owner) never changes, so even a write may take
    // it from the cache: logging to a run then costs one look-up (its experiment's grants, fresh), not two.
    if !fresh || kind == "run" || kind == "trace" {
        if let Some(hit) = links.nodes.get(&key) {
            return Ok(hit);
        }
    }
    let found = match kind {
        "experiment" => {
            let query = [("experiment_id", id)];
            let found = get(up, ctx, "experiment", "/api/2.0/mlflow/experiments/get", &query).await?;
            found.as_ref().and_then(|v| v.get("experiment")).map(|exp| {
                let name = exp.get("name").and_then(Value::as_str).map(str::to_owned);
                (node("experiment", id.to_string(), name, exp.get("tags"), CREATED_BY), None)
            })
        }
        "run" => {
            let found = get(up, ctx, "run", "/api/2.0/mlflow/runs/get", &[("run_id", id)]).await?;
            found.as_ref().and_then(|v| v.get("run")).map(|run| {
                let info = run.get("info").unwrap_or(&Value::Null);
                let name = info.get("run_name").and_then(Value::as_str).map(str::to_owned);
                let experiment = info.get("experiment_id").and_then(Value::as_str).map(str::to_owned);
                (node("run", id.to_string(), name, run.pointer("/data/tags"), RUN_USER_TAG), experiment)
            })
        }
        "logged_model" => {
            let path = format!("/api/2.0/mlflow/logged-models/{}", super::encode_segment(id));
            let found = get(up, ctx, "logged model", &path, &[]).await?;
            found.as_ref().and_then(|v| v.pointer("/model/info")).map(|info| {
                let name = info.get("name").and_then(Value::as_str).map(str::to_owned);
                let mut model = node("logged_model", id.to_string(), name, info.get("tags"), CREATED_BY);
                model.owner = artifacts::logged_model_creator(info);
                (model, info.get("experiment_id").and_then(Value::as_str).map(str::to_owned))
            })
        }
        "trace" => {
            let path = format!("/api/3.0/mlflow/traces/{}", super::encode_segment(id));
            let found = get(up, ctx, "trace", &path, &[]).await?;
            found.as_ref().and_then(|v| v.pointer("/trace/trace_info")).map(|info| {
                let tags = info.get("tags").and_then(Value::as_object);
                let owner = tags.and_then(|t| t.get(CREATED_BY)).and_then(Value::as_str).map(str::to_owned);
                let experiment = info.pointer("/trace_location/mlflow_experiment/experiment_id");
                let node = Node { kind: "trace", id: id.to_string(), name: None, owner, grants: Ok(Grants::default()) };
                (node, experiment.and_then(Value::as_str).map(str::to_owned))
            })
        }
        _ => {
            let query = [("name", id)];
            let found = get(up, ctx, "registered model", "/api/2.0/mlflow/registered-models/get", &query).await?;
            found.as_ref().and_then(|v| v.get("registered_model")).map(|rm| {
                let name = rm.get("name").and_then(Value::as_str).unwrap_or(id).to_string();
                (node("registered_model", name.clone(), Some(name), rm.get("tags"), CREATED_BY), None)
            })
        }
    };
    links.nodes.insert(key, found.clone());
    Ok(found)
}

/// A link from an object's `[{key, value}]` tags: its owner stamp and its grants (the legacy combined tag and the
/// per-grantee tags, `Grants::from_tags`).
fn node(kind: &'static str, id: String, name: Option<String>, tags: Option<&Value>, owner_tag: &str) -> Node {
    let tags = kv_map(tags, "key", "value");
    let owner = tags.get(owner_tag).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let grants = Grants::from_tags(&tags);
    Node { kind, id, name, owner, grants }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_writes_of_a_single_gate_use_cached_links_and_a_fleets_never_do() {
        use crate::mlflow::routes::Resource;
        let write = Operation::plain("SetRegisteredModelTag", false, Resource::RegisteredModel);
        let read = Operation::plain("GetRegisteredModel", true, Resource::RegisteredModel);
        let mut links = Links::default();
        assert!(!links.fresh_for(&read, Level::Read));
        assert!(!links.fresh_for(&write, Level::Edit));
        assert!(links.fresh_for(&write, Level::Manage), "deletes, renames and grant changes look up afresh");
        links.fresh_writes();
        assert!(!links.fresh_for(&read, Level::Read));
        assert!(links.fresh_for(&write, Level::Edit), "a fleet's replica cannot see another's grant changes");
    }

    #[test]
    fn nodes_read_the_owner_stamp_and_the_grants() {
        let tags = json!([{"key": "mlflow_gate.created_by", "value": "ana"},
            {"key": "mlflow_gate.grants", "value": "{\"users\": {\"ben\": \"READ\"}, \"groups\": {}}"}]);
        let n = node("experiment", "1".into(), Some("e".into()), Some(&tags), CREATED_BY);
        assert_eq!(n.owner.as_deref(), Some("ana"));
        assert_eq!(n.to_json()["grants"]["users"]["ben"], "READ");
        let broken = json!([{"key": "mlflow_gate.grants", "value": "{\"users\": {\"ben\": \"ALL\"}}"}]);
        let n = node("experiment", "1".into(), None, Some(&broken), CREATED_BY);
        assert!(n.grants.is_err() && n.owner.is_none());
    }

    #[test]
    fn an_unreadable_grants_tag_is_a_problem_the_policy_sees() {
        let ctx = RequestContext::new("t", None);
        let bad =
            Node { kind: "experiment", id: "1".into(), name: None, owner: None, grants: Grants::parse(Some("x")) };
        let f = to_facts(&ctx, Anchor::Run, &Resolved::Chain(vec![bad]));
        assert!(f["problem"].as_str().is_some_and(|p| p.contains("cannot be checked")), "{f}");
        let f = to_facts(&ctx, Anchor::Run, &Resolved::Unnamed("no run_id".into()));
        assert_eq!((f["exists"].clone(), f["problem"].clone()), (json!(false), json!("no run_id")));
    }

    #[test]
    fn ids_are_read_as_strings_and_anything_else_is_unnamed() {
        let t = json!({"experiment_id": 7, "run_id": "", "run_uuid": "r2", "name": ["x"]});
        let t = t.as_object().cloned().unwrap_or_default();
        assert_eq!(named(&t, Anchor::Experiment), Ok((Anchor::Experiment, "7".to_string())));
        assert_eq!(named(&t, Anchor::Run), Ok((Anchor::Run, "r2".to_string())));
        assert_eq!(named(&t, Anchor::ArtifactPath), Ok((Anchor::Run, "r2".to_string())));
        assert!(named(&t, Anchor::RegisteredModel).is_err() && named(&t, Anchor::LoggedModel).is_err());
    }

    #[test]
    fn a_gateway_endpoint_is_named_by_id_or_by_name_and_owned_by_its_stamped_creator() {
        let by_name = json!({"name": "chat"}).as_object().cloned().unwrap_or_default();
        assert_eq!(named(&by_name, Anchor::GatewayEndpoint), Ok((Anchor::GatewayEndpointName, "chat".to_string())));
        let both = json!({"endpoint_id": "e-1", "name": "new"}).as_object().cloned().unwrap_or_default();
        assert_eq!(named(&both, Anchor::GatewayEndpoint), Ok((Anchor::GatewayEndpoint, "e-1".to_string())));
        let invoked = json!({"model": "chat", "messages": []}).as_object().cloned().unwrap_or_default();
        assert_eq!(named(&invoked, Anchor::GatewayEndpointName), Ok((Anchor::GatewayEndpointName, "chat".to_string())));
        let answer = json!({"endpoint_id": "e-1", "name": "chat", "created_by": "ana",
            "tags": [{"key": "mlflow_gate.grant.user.ben", "value": "NO_PERMISSIONS"}]});
        let n = gateway_endpoint_node(&answer).map(|n| n.to_json());
        assert_eq!(
            n,
            Some(json!({"type": "gateway_endpoint", "id": "e-1", "name": "chat", "owner": "ana",
                "grants": {"users": {"ben": "NO_PERMISSIONS"}, "groups": {}}}))
        );
        assert!(gateway_endpoint_node(&json!({"name": "x"})).is_none());
    }

    #[test]
    fn a_run_route_naming_only_a_logged_model_is_about_the_logged_model() {
        let t = json!({"model_id": "m-1", "path": "x"}).as_object().cloned().unwrap_or_default();
        assert_eq!(named(&t, Anchor::Run), Ok((Anchor::LoggedModel, "m-1".to_string())));
        let both = json!({"model_id": "m-1", "run_id": "r1"}).as_object().cloned().unwrap_or_default();
        assert_eq!(named(&both, Anchor::Run), Ok((Anchor::Run, "r1".to_string())));
    }
}
