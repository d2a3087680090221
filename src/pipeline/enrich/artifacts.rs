//! Enrichment for artifact writes, between classification and policy: every route that writes or deletes artifact
//! files (the proxied store's PUT, DELETE and multipart upload, presigned upload URLs, the UI's upload-artifact)
//! gets the storage location it touches, what that location belongs to (a run, a logged model or a trace, verified
//! against the entity's real artifact location in MLflow, never taken from the path's shape alone), its owner (the
//! gate's stamps) and every registered model version whose files lie at, under or above it. Bodies of these routes
//! stream and are never read: the location comes from the path and the query (or, for the small JSON routes, the
//! body's `path`). The facts go to the policy as `input.resource.artifact`; a failed look-up denies.

use serde_json::{json, Map, Value};

use super::{get, kv_map, EnrichError, Enricher, LookupFailure};
use crate::mlflow::routes::{Operation, Resource};
use crate::mlflow::stamps::{CREATED_BY, RUN_USER_TAG};
use crate::mlflow::target::field;
use crate::proxy::{RequestContext, Upstream};

/// The store MLflow serves with `--serve-artifacts`; its locations are written `mlflow-artifacts:/<path>`.
const PROXIED: &str = "mlflow-artifacts:/";
/// The most candidate entities tried for one path (each costs a look-up).
const MAX_CANDIDATES: usize = 3;
/// Page size and page count of the registered-version searches; more versions than this fail closed.
const SEARCH_PAGE: usize = 200;
const MAX_PAGES: usize = 5;

/// Whether an operation writes or deletes artifact files.
pub fn governs(op: &Operation) -> bool {
    op.resource == Resource::Artifact && !op.read_only
}

/// What an artifact location belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A run's artifact directory.
    Run,
    /// A logged model's artifact directory (`<exp>/models/m-<id>/artifacts`).
    LoggedModel,
    /// A trace's artifact directory (`<exp>/traces/tr-<id>/artifacts`).
    Trace,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::LoggedModel => "logged_model",
            Kind::Trace => "trace",
        }
    }
}

/// An entity MLflow knows, with its real artifact location.
#[derive(Debug, Clone)]
struct Entity {
    kind: Kind,
    id: String,
    experiment_id: Value,
    /// The normalised artifact location (see [`normalize`]).
    location: String,
    owner: Option<String>,
    /// For a logged model, its source run (versions of the model carry it as their run id).
    source_run_id: Option<String>,
    /// For a logged model, its name (`runs:/<run>/<name>` sources serve it too).
    name: Option<String>,
}

/// Where a request writes, before the owner is known.
#[derive(Debug, Default)]
struct Write {
    location: Option<String>,
    /// The entity the route names itself (presigned upload, upload-artifact): it owns the write.
    named: Option<Entity>,
    problem: Option<String>,
}

/// Builds `input.resource` for an artifact write: the target plus `artifact` facts.
pub async fn resource(
    enricher: &Enricher,
    up: &Upstream,
    ctx: &RequestContext,
    op: &Operation,
    target: Map<String, Value>,
) -> Result<Value, EnrichError> {
    let write = locate(enricher, up, ctx, op, &target).await?;
    let mut facts = Map::new();
    facts.insert(
        "operation".into(),
        json!(if op.rpc == crate::mlflow::routes::rpc::DELETE_ARTIFACT { "delete" } else { "write" }),
    );
    facts.insert("location".into(), write.location.clone().map_or(Value::Null, Value::String));
    facts.insert("path_problem".into(), write.problem.clone().map_or(Value::Null, Value::String));
    let (entity, owned) = match (&write.named, &write.location) {
        (Some(e), _) => (Some(e.clone()), true),
        (None, Some(loc)) => match verified_owner(enricher, up, ctx, loc).await? {
            Some((e, owned)) => (Some(e), owned),
            None => (None, false),
        },
        (None, None) => (None, false),
    };
    facts.insert("kind".into(), json!(entity.as_ref().map_or("unknown", |e| e.kind.as_str())));
    facts.insert("owned".into(), Value::Bool(owned && entity.is_some()));
    if let Some(e) = &entity {
        facts.insert("id".into(), json!(e.id));
        facts.insert("experiment_id".into(), e.experiment_id.clone());
        facts.insert("entity_location".into(), json!(e.location));
        facts.insert("owner".into(), e.owner.clone().map_or(Value::Null, Value::String));
    } else {
        facts.insert("owner".into(), Value::Null);
    }
    let registered = match (&entity, &write.location) {
        (Some(e), Some(loc)) => registered_versions(enricher, up, ctx, e, loc).await?,
        _ => Vec::new(),
    };
    facts.insert("frozen".into(), Value::Bool(!registered.is_empty()));
    facts.insert("registered_versions".into(), Value::Array(registered));
    Ok(json!({ "target": target, "artifact": facts }))
}

/// The location a request writes, as MLflow computes it for each route.
async fn locate(
    enricher: &Enricher,
    up: &Upstream,
    ctx: &RequestContext,
    op: &Operation,
    target: &Map<String, Value>,
) -> Result<Write, EnrichError> {
    let store_path = op.path_params.iter().find(|(k, _)| *k == "artifact_path").map(|(_, v)| v.as_str());
    match op.rpc {
        "UploadArtifact" | "DeleteArtifact" => Ok(proxied_write(store_path, None)),
        "CreateMultipartUpload" | "CompleteMultipartUpload" | "AbortMultipartUpload" => {
            // The store writes `<artifact_path>/<basename of the body's path>`.
            let file = target.get("path").and_then(Value::as_str).map(|p| p.rsplit('/').next().unwrap_or(p));
            match file {
                Some(f) if !f.is_empty() => Ok(proxied_write(store_path, Some(f))),
                _ => Ok(Write { problem: Some("the body names no file `path`".into()), ..Write::default() }),
            }
        }
        "CreatePresignedUploadUrl" => {
            let entity = match (field(target, "run_id"), field(target, "model_id")) {
                (Some(run), None) => named_run(up, ctx, run).await?,
                (None, Some(model)) => {
                    let info =
                        enricher.logged_model(up, ctx, model).await?.ok_or_else(|| missing_logged_model(model))?;
                    model_from_info(&info, model)
                }
                _ => return Ok(problem("give exactly one of run_id and model_id")),
            };
            named_write(entity, target.get("path"), |e, p| Some(join(&e.location, p)))
        }
        "UploadRunArtifact" => {
            // MLflow reads only `run_uuid` here (not `run_id`), from the query string.
            let Some(run) = field(target, "run_uuid") else { return Ok(problem("the query names no run_uuid")) };
            let entity = named_run(up, ctx, run).await?;
            named_write(entity, target.get("path"), |e, p| {
                // A proxied run root is written at `<exp>/<run>/artifacts/<path>` whatever its artifact_uri says.
                if e.location.starts_with(PROXIED) {
                    let exp = e.experiment_id.as_str()?;
                    Some(format!("{PROXIED}{exp}/{}/artifacts/{p}", e.id))
                } else {
                    Some(join(&e.location, p))
                }
            })
        }
        _ => Ok(problem("this artifact route is not modelled by the gate")),
    }
}

fn problem(message: &str) -> Write {
    Write { problem: Some(message.to_string()), ..Write::default() }
}

fn proxied_write(store_path: Option<&str>, file: Option<&str>) -> Write {
    let Some(path) = store_path else { return problem("the route carries no artifact path") };
    if let Some(p) = [Some(path), file].into_iter().flatten().find_map(path_problem) {
        return Write { problem: Some(p), ..Write::default() };
    }
    let location = match file {
        Some(f) => format!("{PROXIED}{path}/{f}"),
        None => format!("{PROXIED}{path}"),
    };
    Write { location: Some(location), ..Write::default() }
}

/// The run a route names does not exist: MLflow answers 404 (its words), and so does the gate.
fn missing_run(run_id: &str) -> EnrichError {
    EnrichError::missing("artifact run", format!("Run with id={run_id} not found"))
}

/// The logged model a route names does not exist: MLflow answers 404 (its words), and so does the gate.
fn missing_logged_model(model_id: &str) -> EnrichError {
    EnrichError::missing("logged model", format!("Logged model with ID '{model_id}' not found."))
}

fn named_write(
    entity: Option<Entity>,
    path: Option<&Value>,
    place: impl Fn(&Entity, &str) -> Option<String>,
) -> Result<Write, EnrichError> {
    let Some(entity) = entity else { return Ok(problem("MLflow gives the run or logged model no artifact location")) };
    let Some(path) = path.and_then(Value::as_str).filter(|p| !p.is_empty()) else {
        return Ok(problem("the request names no artifact path"));
    };
    if let Some(p) = path_problem(path) {
        return Ok(problem(&p));
    }
    let location = place(&entity, path);
    let problem = location.is_none().then(|| "the run's experiment is unknown".to_string());
    Ok(Write { location, named: Some(entity), problem })
}

/// Why an artifact path is refused: MLflow decodes artifact paths up to ten times and resolves `.` segments, so a
/// path the gate cannot read exactly as MLflow will is not judged at all.
pub fn path_problem(path: &str) -> Option<String> {
    let bad = if path.starts_with('/') {
        Some("is absolute")
    } else if path.contains('%') {
        Some("is percent-encoded")
    } else if path.contains('\\') || path.chars().any(char::is_control) || path.contains('#') {
        Some("contains a backslash, '#' or control characters")
    } else if path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        Some("has an empty, '.' or '..' segment")
    } else {
        None
    };
    bad.map(|why| format!("the artifact path {path:?} {why}"))
}

/// A storage location in one comparable spelling: `mlflow-artifacts:/<path>` for the proxied store (also when
/// given as `mlflow-artifacts://host/<path>` or an `http(s)://.../api/2.0/mlflow-artifacts/artifacts/<path>` URL),
/// a plain path for `file://` URIs, the URI itself otherwise; never with a trailing `/`.
pub fn normalize(uri: &str) -> String {
    let proxied = uri.strip_prefix("mlflow-artifacts:").map(|rest| match rest.strip_prefix("//") {
        Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
        None => rest,
    });
    let proxied = proxied.or_else(|| {
        let http = uri.strip_prefix("http://").or_else(|| uri.strip_prefix("https://"))?;
        http.split_once("/api/2.0/mlflow-artifacts/artifacts").map(|(_, p)| p)
    });
    match proxied {
        Some(p) => format!("{PROXIED}{}", p.trim_matches('/')),
        None => {
            let plain = uri.strip_prefix("file://").unwrap_or(uri);
            plain.trim_end_matches('/').to_string()
        }
    }
}

fn join(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

/// Whether `location` is `base` or inside it. Case-insensitive: some stores (local files on macOS and Windows)
/// fold case, and reading more as "inside" only makes the frozen rule stricter. Ownership uses [`within_exact`].
fn within(location: &str, base: &str) -> bool {
    within_exact(&location.to_lowercase(), &base.to_lowercase())
}

fn within_exact(location: &str, base: &str) -> bool {
    !base.is_empty() && (location == base || location.strip_prefix(base).is_some_and(|r| r.starts_with('/')))
}

/// Entities a proxied path may belong to, from its shape: the segment before each `artifacts` segment (a run, or
/// after `models`/`traces` a logged model or a trace), and the last segment (a parent directory being deleted).
pub fn candidates(location: &str) -> Vec<(Kind, String)> {
    let Some(rel) = location.strip_prefix(PROXIED) else { return Vec::new() };
    let segments: Vec<&str> = rel.split('/').collect();
    let mut out: Vec<(Kind, String)> = Vec::new();
    let ends = segments.iter().enumerate().filter(|(_, s)| **s == "artifacts").map(|(i, _)| i);
    for end in ends.chain(std::iter::once(segments.len())) {
        let (Some(id), Some(parent)) = (end.checked_sub(1).and_then(|i| segments.get(i)), end.checked_sub(2)) else {
            continue;
        };
        let kind = match segments.get(parent).copied() {
            Some("models") => Kind::LoggedModel,
            Some("traces") => Kind::Trace,
            _ => Kind::Run,
        };
        if !id.is_empty() && *id != "artifacts" && !out.iter().any(|(k, i)| *k == kind && i == id) {
            out.push((kind, (*id).to_string()));
        }
    }
    out.truncate(MAX_CANDIDATES);
    out
}

/// The entity a location belongs to, verified against its real artifact location: `(entity, true)` when the
/// location is inside the entity's directory, `(entity, false)` when it is a parent of it (a directory delete).
async fn verified_owner(
    enricher: &Enricher,
    up: &Upstream,
    ctx: &RequestContext,
    location: &str,
) -> Result<Option<(Entity, bool)>, EnrichError> {
    for (kind, id) in candidates(location) {
        let entity = match kind {
            Kind::Run => run_entity(up, ctx, &id).await?,
            Kind::LoggedModel => model_entity(enricher, up, ctx, &id).await?,
            Kind::Trace => trace_entity(up, ctx, &id).await?,
        };
        let Some(entity) = entity else { continue };
        if within_exact(location, &entity.location) {
            return Ok(Some((entity, true)));
        }
        if within_exact(&entity.location, location) {
            return Ok(Some((entity, false)));
        }
    }
    Ok(None)
}

async fn run_entity(up: &Upstream, ctx: &RequestContext, run_id: &str) -> Result<Option<Entity>, EnrichError> {
    let Some(v) = get(up, ctx, "artifact run", "/api/2.0/mlflow/runs/get", &[("run_id", run_id)]).await? else {
        return Ok(None);
    };
    Ok(run_from_answer(&v, run_id))
}

/// The run a route names itself: its entity (`None` when MLflow gives it no artifact location), or MLflow's 404
/// when it does not exist.
async fn named_run(up: &Upstream, ctx: &RequestContext, run_id: &str) -> Result<Option<Entity>, EnrichError> {
    let answer = get(up, ctx, "artifact run", "/api/2.0/mlflow/runs/get", &[("run_id", run_id)]).await?;
    Ok(run_from_answer(&answer.ok_or_else(|| missing_run(run_id))?, run_id))
}

fn run_from_answer(v: &Value, run_id: &str) -> Option<Entity> {
    let info = v.pointer("/run/info").unwrap_or(&Value::Null);
    let tags = kv_map(v.pointer("/run/data/tags"), "key", "value");
    let uri = info.get("artifact_uri").and_then(Value::as_str)?;
    Some(Entity {
        kind: Kind::Run,
        id: info.get("run_id").and_then(Value::as_str).unwrap_or(run_id).to_string(),
        experiment_id: info.get("experiment_id").cloned().unwrap_or(Value::Null),
        location: normalize(uri),
        owner: tags.get(RUN_USER_TAG).and_then(Value::as_str).map(str::to_owned),
        source_run_id: None,
        name: None,
    })
}

/// Who created a logged model, from its `info` as `Enricher::logged_model` returns it: the gate's
/// `mlflow_gate.created_by` stamp (set on `CreateLoggedModel`, reserved afterwards), or `None` for models created
/// before the gate stamped them.
pub fn logged_model_creator(info: &Value) -> Option<String> {
    kv_map(info.get("tags"), "key", "value").get(CREATED_BY).and_then(Value::as_str).map(str::to_owned)
}

async fn model_entity(
    enricher: &Enricher,
    up: &Upstream,
    ctx: &RequestContext,
    model_id: &str,
) -> Result<Option<Entity>, EnrichError> {
    let Some(info) = enricher.logged_model(up, ctx, model_id).await? else { return Ok(None) };
    Ok(model_from_info(&info, model_id))
}

fn model_from_info(info: &Value, model_id: &str) -> Option<Entity> {
    let uri = info.get("artifact_uri").and_then(Value::as_str)?;
    Some(Entity {
        kind: Kind::LoggedModel,
        id: info.get("model_id").and_then(Value::as_str).unwrap_or(model_id).to_string(),
        experiment_id: info.get("experiment_id").cloned().unwrap_or(Value::Null),
        location: normalize(uri),
        owner: logged_model_creator(info),
        source_run_id: info.get("source_run_id").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned),
        name: info.get("name").and_then(Value::as_str).map(str::to_owned),
    })
}

async fn trace_entity(up: &Upstream, ctx: &RequestContext, trace_id: &str) -> Result<Option<Entity>, EnrichError> {
    let path = format!("/api/3.0/mlflow/traces/{}", super::encode_segment(trace_id));
    let Some(v) = get(up, ctx, "artifact trace", &path, &[]).await? else { return Ok(None) };
    let info = v.pointer("/trace/trace_info").unwrap_or(&Value::Null);
    let tags = info.get("tags").and_then(Value::as_object);
    let tag = |k: &str| tags.and_then(|t| t.get(k)).and_then(Value::as_str).map(str::to_owned);
    let Some(uri) = tag("mlflow.artifactLocation") else { return Ok(None) };
    Ok(Some(Entity {
        kind: Kind::Trace,
        id: info.get("trace_id").and_then(Value::as_str).unwrap_or(trace_id).to_string(),
        experiment_id: info.pointer("/trace_location/mlflow_experiment/experiment_id").cloned().unwrap_or(Value::Null),
        location: normalize(&uri),
        owner: tag(CREATED_BY),
        source_run_id: None,
        name: None,
    }))
}

/// Registered versions whose files lie at, under or above `location`: versions found by the entity's run id and by
/// a source naming the entity, compared as storage locations.
async fn registered_versions(
    enricher: &Enricher,
    up: &Upstream,
    ctx: &RequestContext,
    entity: &Entity,
    location: &str,
) -> Result<Vec<Value>, EnrichError> {
    let mut filters = vec![format!("source_path LIKE '%{}%'", like_escape(&entity.id))];
    let run = match entity.kind {
        Kind::Run => Some(entity.id.as_str()),
        _ => entity.source_run_id.as_deref(),
    };
    if let Some(run) = run {
        filters.push(format!("run_id = '{}'", run.replace('\'', "")));
        // A logged model is also served through `runs:/<its source run>/<its name>` sources.
        if entity.kind == Kind::LoggedModel {
            filters.push(format!("source_path LIKE '%{}%'", like_escape(run)));
        }
    }
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for filter in filters {
        for mv in search_versions(up, ctx, &filter).await? {
            let key = (str_field(&mv, "name"), str_field(&mv, "version"));
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let stored = version_location(enricher, up, ctx, &mv, entity).await?;
            let related = stored.iter().find_map(|files| {
                if within(location, files) {
                    Some((files, "under"))
                } else if within(files, location) {
                    Some((files, "contains"))
                } else {
                    None
                }
            });
            let Some((files, relation)) = related else { continue };
            out.push(json!({
                "name": mv.get("name"), "version": mv.get("version"), "source": mv.get("source"),
                "current_stage": mv.get("current_stage"), "location": files, "relation": relation,
            }));
        }
    }
    Ok(out)
}

fn str_field(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// `%` and `_` are wildcards of LIKE; ids never contain them, quotes are dropped.
fn like_escape(id: &str) -> String {
    id.chars().filter(|c| !matches!(c, '%' | '_' | '\'' | '\\')).collect()
}

async fn search_versions(up: &Upstream, ctx: &RequestContext, filter: &str) -> Result<Vec<Value>, EnrichError> {
    let mut all = Vec::new();
    let mut token = String::new();
    let page = SEARCH_PAGE.to_string();
    for _ in 0..MAX_PAGES {
        let mut query = vec![("filter", filter), ("max_results", page.as_str())];
        if !token.is_empty() {
            query.push(("page_token", token.as_str()));
        }
        let path = "/api/2.0/mlflow/model-versions/search";
        let v = get(up, ctx, "registered versions of an artifact location", path, &query).await?.unwrap_or(Value::Null);
        all.extend(v.get("model_versions").and_then(Value::as_array).cloned().unwrap_or_default());
        match v.get("next_page_token").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            Some(t) => token = t.to_string(),
            None => return Ok(all),
        }
    }
    Err(EnrichError {
        what: "registered versions of an artifact location".into(),
        cause: LookupFailure::OverLimit(format!("more than {} versions match {filter}", SEARCH_PAGE * MAX_PAGES)),
    })
}

/// Where a version's files are stored: `runs:/<run>/<p>` under the run's location (and, as MLflow 3 resolves it,
/// under the location of the run's logged model named by the first segment of `<p>`), `models:/m-<id>[/<p>]`
/// under the logged model's, a `models:/<name>/<version>` copy where the version it copies is stored (its logged
/// model, or its source, one level deep), any other source as written.
async fn version_location(
    enricher: &Enricher,
    up: &Upstream,
    ctx: &RequestContext,
    mv: &Value,
    entity: &Entity,
) -> Result<Vec<String>, EnrichError> {
    let source = str_field(mv, "source");
    let model_id = str_field(mv, "model_id");
    let copy = source.strip_prefix("models:/").filter(|r| !r.starts_with("m-")).and_then(|r| r.split_once('/'));
    let Some((name, version)) = copy else {
        return stored_at(enricher, up, ctx, &source, &model_id, entity).await;
    };
    if !model_id.is_empty() {
        return Ok(model_entity(enricher, up, ctx, &model_id).await?.map(|e| e.location).into_iter().collect());
    }
    let query = [("name", name), ("version", version.trim_end_matches('/'))];
    let Some(copied) = get(up, ctx, "copied model version", "/api/2.0/mlflow/model-versions/get", &query).await? else {
        return Ok(Vec::new());
    };
    let copied = copied.get("model_version").unwrap_or(&Value::Null);
    stored_at(enricher, up, ctx, &str_field(copied, "source"), &str_field(copied, "model_id"), entity).await
}

/// The storage locations of a source that is not a `models:/<name>/<version>` copy.
async fn stored_at(
    enricher: &Enricher,
    up: &Upstream,
    ctx: &RequestContext,
    source: &str,
    model_id: &str,
    entity: &Entity,
) -> Result<Vec<String>, EnrichError> {
    let with_sub = |base: &str, sub: &str| {
        let sub = sub.trim_matches('/');
        if sub.is_empty() {
            base.to_string()
        } else {
            join(base, sub)
        }
    };
    if let Some(rest) = source.strip_prefix("runs:/") {
        let (run, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let base = if entity.kind == Kind::Run && entity.id == run {
            Some(entity.location.clone())
        } else {
            run_entity(up, ctx, run).await?.map(|e| e.location)
        };
        let mut out: Vec<String> = base.iter().map(|b| with_sub(b, sub)).collect();
        // MLflow 3 serves `runs:/<run>/<name>/<rest>` from the run's logged model `<name>` as well.
        let (first, rest) = sub.split_once('/').unwrap_or((sub, ""));
        if entity.kind == Kind::LoggedModel
            && entity.source_run_id.as_deref() == Some(run)
            && entity.name.as_deref() == Some(first)
        {
            out.push(with_sub(&entity.location, rest));
        }
        return Ok(out);
    }
    if let Some(rest) = source.strip_prefix("models:/") {
        let (first, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let id = if first.starts_with("m-") { first } else { model_id };
        if id.is_empty() {
            return Ok(Vec::new());
        }
        let sub = if first.starts_with("m-") { sub } else { "" };
        return Ok(model_entity(enricher, up, ctx, id)
            .await?
            .map(|e| with_sub(&e.location, sub))
            .into_iter()
            .collect());
    }
    Ok(if source.is_empty() { Vec::new() } else { vec![normalize(source)] })
}

#[cfg(test)]
#[path = "artifacts_tests.rs"]
mod tests;
