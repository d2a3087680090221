//! Enrichment, between classification and policy: for registry mutations the gate looks up, through MLflow with its
//! own credentials, the facts a registry policy needs (the version's stage, source, run and stamps; the model's
//! aliases and latest versions; the source run's metrics and tags; whether the source really belongs to the run)
//! and hands them to the policy as `input.resource`. Every look-up is made in the request's workspace (its
//! `RequestContext`), so the facts are about the object the request addresses, not a same-named one elsewhere.
//! Mutable facts are read fresh on every request; immutable ones (a logged model's source run and location, keyed
//! by workspace and id) are cached with moka. A failed look-up is an error, which denies: a policy never decides on
//! half the facts. A look-up that finds the object the request itself names missing is MLflow's 404 instead
//! ([`EnrichError::not_found`]): MLflow would refuse the request the same way, and nothing is forwarded.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use moka::future::Cache;
use serde_json::{json, Map, Value};

pub mod artifacts;
pub mod chain;
pub mod files;
pub mod needs;

pub use needs::{Fact, Needs};
pub mod permissions;

use crate::mlflow::routes::{Operation, Resource};
use crate::mlflow::stamps::{CREATED_BY, RUN_USER_TAG};
use crate::mlflow::target::field;
use crate::mlflow::workflow;
use crate::proxy::{CallError, RequestContext, Upstream};

/// A look-up failed, or found that the object the request names does not exist ([`EnrichError::missing`]).
#[derive(Debug, thiserror::Error)]
#[error("looking up {what} in MLflow failed: {cause}")]
pub struct EnrichError {
    /// What was being looked up.
    pub what: String,
    /// Why it failed (logged, never sent to the client, except MLflow's own "not found" message).
    #[source]
    pub cause: LookupFailure,
}

impl EnrichError {
    /// The object the request itself names (not a fact about it) does not exist: MLflow would answer 404
    /// `RESOURCE_DOES_NOT_EXIST`, and so does the gate, with `message` in MLflow's words.
    pub fn missing(what: &str, message: String) -> EnrichError {
        EnrichError { what: what.to_string(), cause: LookupFailure::Missing(message) }
    }

    /// MLflow's "not found" message when the request names an object that does not exist; `None` for every other
    /// failure (those deny).
    pub fn not_found(&self) -> Option<&str> {
        match &self.cause {
            LookupFailure::Missing(message) => Some(message),
            LookupFailure::Call(_)
            | LookupFailure::Status(_)
            | LookupFailure::StatusFor(..)
            | LookupFailure::OverLimit(_) => None,
        }
    }
}

/// Why a look-up failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupFailure {
    /// MLflow could not be asked.
    #[error(transparent)]
    Call(#[from] CallError),
    /// MLflow answered with an unexpected status.
    #[error("HTTP {0}")]
    Status(StatusCode),
    /// MLflow answered with an unexpected status for one item.
    #[error("HTTP {0} for {1}")]
    StatusFor(StatusCode, String),
    /// The answer is over a bound the gate sets (entries, depth, pages).
    #[error("{0}")]
    OverLimit(String),
    /// MLflow says the object the request names does not exist (the message, in MLflow's words).
    #[error("not found: {0}")]
    Missing(String),
}

/// Whether a version's files provably are its source run owner's output (see [`Enricher::lineage`]). For the
/// policy: `{"verified", "kind", "run_owner", "logged_model_creator", "reason"}`.
#[derive(Debug, Default)]
struct Lineage {
    located: bool,
    verified: bool,
    kind: &'static str,
    run_owner: Option<String>,
    logged_model_creator: Option<String>,
    reason: Option<String>,
}

impl Lineage {
    /// Verified when the run has an owner and, for a logged model, the model's stamped creator is that owner.
    fn verify_owner(mut self, run_id: &str, logged_model: Option<(&str, Option<String>)>) -> Lineage {
        let Some(owner) = self.run_owner.clone() else {
            self.reason = Some(format!("run {run_id} has no owner (no mlflow.user tag stamped by the gate)"));
            return self;
        };
        match logged_model {
            Some((id, None)) => {
                self.reason = Some(format!(
                    "the source's logged model {id} has no creator stamp (it was not created through mlflow-gate), \
                     so it cannot be shown to be the output of run {run_id}'s owner {owner}"
                ));
            }
            Some((id, Some(creator))) if creator != owner => {
                self.reason = Some(format!(
                    "the source's logged model {id} was created by {creator}, not by {owner} who owns run {run_id}"
                ));
            }
            _ => self.verified = true,
        }
        self
    }

    fn to_json(&self) -> Value {
        json!({"verified": self.verified, "kind": if self.kind.is_empty() { Value::Null } else { json!(self.kind) },
            "run_owner": self.run_owner, "logged_model_creator": self.logged_model_creator, "reason": self.reason})
    }
}

/// Looks up the facts of registry operations.
pub struct Enricher {
    /// Keyed by (workspace, logged model id): a look-up in another workspace must not be answered from this one.
    logged_models: Cache<(Option<String>, String), Arc<Value>>,
    /// What the bundle in force declares it reads (`needs.rs`).
    declared: needs::PerBundle,
    /// The links of permission chains (`permissions`), for reads.
    pub permission_links: permissions::Links,
}

impl Default for Enricher {
    fn default() -> Self {
        Enricher::new()
    }
}

impl Enricher {
    /// An enricher with an empty cache.
    pub fn new() -> Enricher {
        Enricher {
            logged_models: Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(3600)).build(),
            declared: needs::PerBundle::default(),
            permission_links: permissions::Links::default(),
        }
    }

    /// The registry facts `bundle` reads for `op` (its `data.gate.facts`, plus what the gate reads itself).
    pub fn needs_of(&self, bundle: &crate::policy::Bundle, op: &Operation) -> Needs {
        self.declared.needs(bundle, op)
    }

    /// Whether an operation gets registry facts: every registry mutation and the transition-request workflow.
    pub fn needs(op: &Operation) -> bool {
        let registry = matches!(op.resource, Resource::RegisteredModel | Resource::ModelVersion);
        (registry && !op.read_only) || op.workflow
    }

    /// Builds `input.resource` for an operation and its target, with every registry fact (see [`Self::resource_with`]).
    pub async fn resource(
        &self,
        up: &Upstream,
        ctx: &RequestContext,
        op: &Operation,
        target: Map<String, Value>,
    ) -> Result<Value, EnrichError> {
        self.resource_with(up, ctx, op, target, Needs::ALL).await
    }

    /// Builds `input.resource`: the registry facts in `needs` only (see `needs.rs`: what the policy in force reads
    /// for the operation; facts left out are absent, never empty stand-ins), the artifact facts, and the permission
    /// facts (`permissions`, see [`permissions`]) of routes that need a level on an object.
    pub async fn resource_with(
        &self,
        up: &Upstream,
        ctx: &RequestContext,
        op: &Operation,
        target: Map<String, Value>,
        needs: Needs,
    ) -> Result<Value, EnrichError> {
        let permission_facts = permissions::facts(self, up, ctx, op, &target).await?;
        let mut resource = self.registry_resource(up, ctx, op, target, needs).await?;
        if let (Some(facts), Some(map)) = (permission_facts, resource.as_object_mut()) {
            map.insert("permissions".into(), facts);
        }
        Ok(resource)
    }

    /// The registry and artifact part of `input.resource`.
    async fn registry_resource(
        &self,
        up: &Upstream,
        ctx: &RequestContext,
        op: &Operation,
        target: Map<String, Value>,
        needs: Needs,
    ) -> Result<Value, EnrichError> {
        if artifacts::governs(op) {
            // Boxed: the artifact facts' future is large and only artifact routes build it.
            return Box::pin(artifacts::resource(self, up, ctx, op, target)).await;
        }
        if !Enricher::needs(op) || needs == Needs::NONE {
            return Ok(json!({ "target": target }));
        }
        let mut res = Map::new();
        let name = field(&target, "name");
        let version = field(&target, "version");
        let rm = match name.filter(|_| needs.has(Fact::RegisteredModel)) {
            Some(n) => {
                get(up, ctx, "registered model", "/api/2.0/mlflow/registered-models/get", &[("name", n)]).await?
            }
            None => None,
        };
        // Deleting an alias is judged on the version holding it (its approvals for the alias's removal).
        let holder = match (op.rpc, field(&target, "alias"), rm.as_ref()) {
            (crate::mlflow::routes::rpc::DELETE_REGISTERED_MODEL_ALIAS, Some(alias), Some(rm)) if version.is_none() => {
                alias_version(rm, alias)
            }
            _ => None,
        };
        let version = version.or(holder.as_deref());
        let mv = match (name, version) {
            (Some(n), Some(v)) if needs.has(Fact::ModelVersion) => {
                let query = [("name", n), ("version", v)];
                get(up, ctx, "model version", "/api/2.0/mlflow/model-versions/get", &query).await?
            }
            _ => None,
        };
        // A fact not looked up says nothing about existence: only a look-up that answered "missing" is a 404.
        let model_exists = rm.is_some() || !needs.has(Fact::RegisteredModel);
        let version_exists = mv.is_some() || !needs.has(Fact::ModelVersion);
        if let Some(missing) = missing_object(op, name, version, model_exists, version_exists) {
            return Err(missing);
        }
        let rm = rm.map(|v| registered_model_facts(v.get("registered_model").unwrap_or(&Value::Null)));
        let mv = mv.map(|v| model_version_facts(v.get("model_version").unwrap_or(&Value::Null)));
        // For a version being created, its lineage is in the request.
        let lineage =
            mv.as_ref().filter(|_| op.rpc != crate::mlflow::routes::rpc::CREATE_MODEL_VERSION).unwrap_or(&target);
        let (run_id, source, model_id) =
            (str_of(lineage, "run_id"), str_of(lineage, "source"), str_of(lineage, "model_id"));
        // A copy of another registered version is judged on the run its chain of copies leads to.
        let own = mv.as_ref().and_then(|m| Some((str_of(m, "name")?.to_owned(), str_of(m, "version")?.to_owned())));
        let mut chain = match source.filter(|s| needs.has(Fact::SourceRun) && chain::is_registry_reference(s)) {
            Some(s) => chain::resolve(up, ctx, s, own.as_ref().map(|(n, v)| (n.as_str(), v.as_str()))).await?,
            None => chain::Chain::default(),
        };
        chain.add_permissions(self, up, ctx).await?;
        let (source, model_id) = match chain.origin.as_ref() {
            Some(o) => (str_of(o, "source"), str_of(o, "model_id")),
            None => (source, model_id),
        };
        let mut chain_error = chain.error.clone();
        let run_id = match (run_id, chain.origin.as_ref().and_then(|o| str_of(o, "run_id"))) {
            (Some(a), Some(b)) if a != b => {
                chain_error.get_or_insert(format!("it names run {a}, but its source leads to run {b}"));
                Some(a)
            }
            (a, b) => a.or(b),
        };
        let run = match run_id.filter(|_| needs.has(Fact::SourceRun)) {
            Some(r) => {
                get(up, ctx, "source run", "/api/2.0/mlflow/runs/get", &[("run_id", r)]).await?.map(|v| run_facts(&v))
            }
            None => None,
        };
        let lineage = match (source, run.as_ref()) {
            (Some(s), Some(run)) => self.lineage(up, ctx, s, model_id, run).await?,
            _ => Lineage::default(),
        };
        let mut mv = mv;
        if let (Some(mv), Some(n), Some(v)) = (mv.as_mut(), name, version) {
            let wanted =
                op.rpc == crate::mlflow::routes::rpc::APPROVE_TRANSITION_REQUEST || workflow::has_approvals(mv);
            if wanted && needs.has(Fact::Files) {
                mv.insert("files".into(), files::version_files(up, ctx, n, v).await?);
            }
        }
        if let (Some(alias), Some(rm)) = (field(&target, "alias"), rm.as_ref()) {
            if let Some(v) = rm.get("aliases").and_then(|a| a.get(alias)) {
                res.insert("alias_holder".into(), json!({"alias": alias, "version": v}));
            }
        }
        if needs.has(Fact::ModelVersion) {
            let workflow = mv.as_ref().map(|mv| workflow::policy_facts(mv, run.as_ref(), &target)).unwrap_or_default();
            res.insert("approvals".into(), workflow.get("approvals").cloned().unwrap_or_else(|| json!([])));
            res.insert("open_requests".into(), workflow.get("open_requests").cloned().unwrap_or_else(|| json!([])));
            if let Some(activity) = workflow.get("activity") {
                res.insert("activity".into(), activity.clone());
            }
        }
        if needs.has(Fact::SourceRun) {
            res.insert("source_matches_run".into(), Value::Bool(lineage.located));
            let copied_from = match chain.first.as_ref() {
                Some(first) => Some(chain::copied_from(up, ctx, first, run.as_ref()).await?),
                None => None,
            };
            let mut lineage = lineage.to_json();
            if let Value::Object(l) = &mut lineage {
                l.extend(chain.facts(copied_from));
                l.insert("chain_error".into(), chain_error.map_or(Value::Null, Value::String));
            }
            res.insert("lineage".into(), lineage);
        }
        if let Some(rm) = rm {
            res.insert("registered_model".into(), Value::Object(rm));
        }
        if let Some(mv) = mv {
            res.insert("model_version".into(), Value::Object(mv));
        }
        if let Some(run) = run {
            res.insert("source_run".into(), Value::Object(run));
        }
        res.insert("target".into(), Value::Object(target));
        Ok(Value::Object(res))
    }

    /// Whether `source` belongs to the run, and whether that is provable from facts a client cannot write.
    ///
    /// Located: `runs:/<run_id>/...`, a path under the run's artifact location, or a logged model (`models:/m-<id>`,
    /// or the version's `model_id` with a source under the model's location) whose source run is this run. Anything
    /// with `..` or a backslash is never located.
    ///
    /// Verified (the run owner's own output): the run has an owner (`mlflow.user`, which the gate stamps from the
    /// token at creation and lets no client change), and either the files are in the run's own directory (only the
    /// run's owner may write there) or the logged model was created, by the gate's stamp, by the run's owner (anyone
    /// can create a logged model naming someone else's run as its `source_run_id`).
    async fn lineage(
        &self,
        up: &Upstream,
        ctx: &RequestContext,
        source: &str,
        model_id: Option<&str>,
        run: &Map<String, Value>,
    ) -> Result<Lineage, EnrichError> {
        let run_id = str_of(run, "run_id").unwrap_or_default();
        let owner = run.get("tags").and_then(|t| t.get(RUN_USER_TAG)).and_then(Value::as_str).filter(|s| !s.is_empty());
        let mut l = Lineage { run_owner: owner.map(str::to_owned), ..Lineage::default() };
        if run_id.is_empty() || source.contains('\\') || source.split('/').any(|s| s == "..") {
            l.reason = Some(format!("the source {source:?} is not a location inside run {run_id}"));
            return Ok(l);
        }
        let in_run_dir = source == format!("runs:/{run_id}")
            || source.starts_with(&format!("runs:/{run_id}/"))
            || str_of(run, "artifact_uri").is_some_and(|uri| under(source, uri));
        if in_run_dir {
            l.located = true;
            l.kind = "run";
            return Ok(l.verify_owner(run_id, None));
        }
        let logged_id = source
            .strip_prefix("models:/")
            .filter(|rest| rest.starts_with("m-"))
            .map(|rest| rest.split('/').next().unwrap_or(rest))
            .or(model_id);
        let Some(id) = logged_id else {
            l.reason = Some(format!("the source {source:?} is neither in run {run_id} nor a logged model of it"));
            return Ok(l);
        };
        let Some(model) = self.logged_model(up, ctx, id).await? else {
            l.reason = Some(format!("the source's logged model {id} does not exist"));
            return Ok(l);
        };
        let from_this_run = model.get("source_run_id").and_then(Value::as_str) == Some(run_id);
        let located = source.starts_with(&format!("models:/{id}"))
            || model.get("artifact_uri").and_then(Value::as_str).is_some_and(|uri| under(source, uri));
        l.kind = "logged_model";
        l.logged_model_creator = artifacts::logged_model_creator(&model);
        if !(from_this_run && located) {
            l.reason = Some(format!("the source's logged model {id} was not logged from run {run_id}"));
            return Ok(l);
        }
        l.located = true;
        let creator = l.logged_model_creator.clone();
        Ok(l.verify_owner(run_id, Some((id, creator))))
    }

    /// A logged model's `info` (immutable facts: source run, location, creator stamp), cached by its unique id in
    /// the request's workspace.
    pub(super) async fn logged_model(
        &self,
        up: &Upstream,
        ctx: &RequestContext,
        id: &str,
    ) -> Result<Option<Arc<Value>>, EnrichError> {
        let key = (ctx.workspace_name().map(str::to_owned), id.to_string());
        if let Some(hit) = self.logged_models.get(&key).await {
            return Ok(Some(hit));
        }
        let path = format!("/api/2.0/mlflow/logged-models/{}", encode_segment(id));
        let Some(v) = get(up, ctx, "logged model", &path, &[]).await? else { return Ok(None) };
        let info = Arc::new(v.pointer("/model/info").cloned().unwrap_or(Value::Null));
        self.logged_models.insert(key, info.clone()).await;
        Ok(Some(info))
    }
}

/// The error MLflow itself answers when a registry request names a registered model or version that does not exist
/// (its `RESOURCE_DOES_NOT_EXIST`, with its message): every registry operation acts on an existing model and, when
/// it names a version, an existing version, except the two that create them.
fn missing_object(
    op: &Operation,
    name: Option<&str>,
    version: Option<&str>,
    model_exists: bool,
    version_exists: bool,
) -> Option<EnrichError> {
    use crate::mlflow::routes::rpc::{CREATE_MODEL_VERSION, CREATE_REGISTERED_MODEL};
    let name = name?;
    if op.rpc == CREATE_REGISTERED_MODEL {
        return None;
    }
    if !model_exists {
        return Some(EnrichError::missing("registered model", format!("Registered Model with name={name} not found")));
    }
    match version {
        Some(v) if !version_exists && op.rpc != CREATE_MODEL_VERSION => {
            Some(EnrichError::missing("model version", format!("Model Version (name={name}, version={v}) not found")))
        }
        _ => None,
    }
}

fn under(source: &str, base: &str) -> bool {
    let base = base.trim_end_matches('/');
    !base.is_empty() && (source == base || source.starts_with(&format!("{base}/")))
}

pub(super) fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn str_of<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// GET a JSON document from MLflow, in the request's workspace; `None` when MLflow says it does not exist.
pub(super) async fn get(
    up: &Upstream,
    ctx: &RequestContext,
    what: &str,
    path: &str,
    query: &[(&str, &str)],
) -> Result<Option<Value>, EnrichError> {
    let mut pq = path.to_string();
    if !query.is_empty() {
        let q = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
        pq = format!("{pq}?{q}");
    }
    let fail = |cause: LookupFailure| EnrichError { what: what.to_string(), cause };
    let (status, body) = up.call_json(ctx, Method::GET, &pq, None).await.map_err(|e| fail(e.into()))?;
    match status {
        StatusCode::OK => Ok(Some(body)),
        StatusCode::NOT_FOUND => Ok(None),
        s if body.get("error_code").and_then(Value::as_str) == Some("RESOURCE_DOES_NOT_EXIST")
            && s.is_client_error() =>
        {
            Ok(None)
        }
        s => Err(fail(LookupFailure::Status(s))),
    }
}

/// `[{key, value}]` -> `{key: value}`.
pub(super) fn kv_map(list: Option<&Value>, key: &str, value: &str) -> Map<String, Value> {
    list.and_then(Value::as_array)
        .map(|items| {
            items.iter().filter_map(|i| Some((i.get(key)?.as_str()?.to_string(), i.get(value)?.clone()))).collect()
        })
        .unwrap_or_default()
}

fn registered_model_facts(rm: &Value) -> Map<String, Value> {
    let tags = kv_map(rm.get("tags"), "key", "value");
    let latest: Map<String, Value> = rm
        .get("latest_versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| Some((v.get("current_stage")?.as_str()?.to_string(), v.get("version")?.clone())))
                .collect()
        })
        .unwrap_or_default();
    let mut m = Map::new();
    m.insert("name".into(), rm.get("name").cloned().unwrap_or(Value::Null));
    m.insert("created_by".into(), tags.get(CREATED_BY).cloned().unwrap_or(Value::Null));
    m.insert("aliases".into(), Value::Object(kv_map(rm.get("aliases"), "alias", "version")));
    m.insert("latest_versions".into(), Value::Object(latest));
    m.insert("tags".into(), Value::Object(tags));
    m
}

fn model_version_facts(mv: &Value) -> Map<String, Value> {
    let tags = kv_map(mv.get("tags"), "key", "value");
    let history = crate::mlflow::history::entries(&tags);
    let was_in_production = history.iter().any(|h| h.get("stage").and_then(Value::as_str) == Some("Production"));
    let mut m = Map::new();
    for k in ["name", "version", "current_stage", "source", "run_id", "model_id", "status"] {
        m.insert(k.into(), mv.get(k).cloned().unwrap_or(Value::Null));
    }
    m.insert("aliases".into(), mv.get("aliases").cloned().unwrap_or_else(|| json!([])));
    m.insert("created_by".into(), tags.get(CREATED_BY).cloned().unwrap_or(Value::Null));
    m.insert("stage_history".into(), Value::Array(history));
    m.insert("was_in_production".into(), Value::Bool(was_in_production));
    m.insert("tags".into(), Value::Object(tags));
    m
}

fn run_facts(v: &Value) -> Map<String, Value> {
    let info = v.pointer("/run/info").unwrap_or(&Value::Null);
    let data = v.pointer("/run/data").unwrap_or(&Value::Null);
    let mut m = Map::new();
    for k in ["run_id", "experiment_id", "artifact_uri", "status", "user_id", "lifecycle_stage"] {
        m.insert(k.into(), info.get(k).cloned().unwrap_or(Value::Null));
    }
    m.insert("metrics".into(), Value::Object(kv_map(data.get("metrics"), "key", "value")));
    m.insert("params".into(), Value::Object(kv_map(data.get("params"), "key", "value")));
    m.insert("tags".into(), Value::Object(kv_map(data.get("tags"), "key", "value")));
    m
}

/// The version an alias of a `registered-models/get` answer points to (aliases compared folded).
fn alias_version(rm: &Value, alias: &str) -> Option<String> {
    let wanted = crate::fold::fold(alias);
    rm.pointer("/registered_model/aliases")?.as_array()?.iter().find_map(|a| {
        let name = a.get("alias").and_then(Value::as_str)?;
        let version = a.get("version")?;
        (crate::fold::fold(name) == wanted).then(|| version.as_str().map_or_else(|| version.to_string(), str::to_owned))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_flattened_for_policies() {
        let rm = json!({"name": "m", "tags": [{"key": "mlflow_gate.created_by", "value": "alice"}],
            "aliases": [{"alias": "champion", "version": "2"}],
            "latest_versions": [{"version": "2", "current_stage": "Production"}, {"version": "3", "current_stage": "Staging"}]});
        let f = registered_model_facts(&rm);
        assert_eq!(f["created_by"], "alice");
        assert_eq!(f["aliases"], json!({"champion": "2"}));
        assert_eq!(f["latest_versions"], json!({"Production": "2", "Staging": "3"}));
        let mv = json!({"name": "m", "version": "3", "current_stage": "Staging", "tags": [
            {"key": "mlflow_gate.stage_history", "value": "[{\"stage\":\"Production\",\"by\":\"ci\",\"at\":1}]"}]});
        let f = model_version_facts(&mv);
        assert_eq!(f["was_in_production"], true);
        assert_eq!(f["created_by"], Value::Null);
    }

    #[test]
    fn sources_under_the_run_location_match_and_traversal_does_not() {
        assert!(under("mlflow-artifacts:/1/r1/artifacts/model", "mlflow-artifacts:/1/r1/artifacts"));
        assert!(!under("mlflow-artifacts:/1/r10/artifacts/model", "mlflow-artifacts:/1/r1"));
        assert!(!under("s3://evil/model", "mlflow-artifacts:/1/r1/artifacts"));
    }
}
