//! Resource permissions as route facts (no I/O), used by classification and enrichment: the permission level each
//! route needs on the MLflow object it touches (read, edit, manage; creating and searching are their own kinds), how
//! the gate reaches the object that holds the grants from the request's target (an experiment id, a run id, a model
//! name, a logged model id), and the grant tags, the reserved tags that store who was granted what on an experiment,
//! a run, a registered model, a logged model, a trace or an AI-gateway endpoint: one tag per grantee
//! (`mlflow_gate.grant.user.<sub>` / `mlflow_gate.grant.group.<group>` = LEVEL, [`grant_tag_key`]), and the legacy
//! combined tag (`mlflow_gate.grants`), still read.
//!
//! Routes that name several objects in a list (`run_ids`, `trace_ids`, `experiment_ids`) need the level on each
//! ([`Need::Each`], the lists read by [`listed`]); GraphQL needs READ on every object its query names
//! ([`Need::Queried`], `mlflow::graphql::objects`).
//!
//! The levels are MLflow's (`READ`, `USE`, `EDIT`, `MANAGE`, `NO_PERMISSIONS`); which level a principal holds is
//! decided by the policy (`policies/permissions.rego`), never here.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::routes::{rpc, Operation, Resource};

/// The legacy reserved tag holding all of a resource's grants: `{"users": {sub: LEVEL}, "groups": {group: LEVEL}}`.
/// Still read (merged under the per-grantee tags, which win); the gate no longer writes it, except to remove a
/// revoked grantee from it.
pub const GRANTS_TAG: &str = "mlflow_gate.grants";

/// The prefix of a user's grant tag: `mlflow_gate.grant.user.<encoded sub>` = LEVEL.
pub const USER_GRANT_PREFIX: &str = "mlflow_gate.grant.user.";

/// The prefix of a group's grant tag: `mlflow_gate.grant.group.<encoded group>` = LEVEL.
pub const GROUP_GRANT_PREFIX: &str = "mlflow_gate.grant.group.";

/// The prefix every grant tag starts with (a tag under it that is neither a user's nor a group's is unreadable).
const GRANT_PREFIX: &str = "mlflow_gate.grant.";

/// The prefix of a trace's grant tag, which is stored on the trace's experiment:
/// `mlflow_gate.grant.trace.<encoded trace id>.user.<encoded sub>` (or `.group.<encoded group>`) = LEVEL. Not on the
/// trace itself: MLflow also writes trace tags from OTLP ingest (resource attributes and root-span
/// `mlflow.traceTag.*` attributes), which the gate streams unread, so a grant tag on a trace could be forged; an
/// experiment's tags are written only through routes the gate checks.
pub const TRACE_GRANT_PREFIX: &str = "mlflow_gate.grant.trace.";

/// The longest tag key MLflow stores (experiments, registered models, logged models, traces: 250).
pub const MAX_TAG_KEY: usize = 250;

/// A grantee's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantee {
    /// A user, by token subject.
    User,
    /// A group, by name from the token's groups claim.
    Group,
}

/// The tag key holding one grantee's grant. MLflow accepts only `[/\w.\- :]` in tag keys (no colon on Windows
/// servers), refuses keys that are not normalised paths, and compares keys case-insensitively under some MySQL and
/// MSSQL collations, so the name is encoded: the bytes `a-z`, `0-9`, `_` and `-` stay; every other byte of its UTF-8
/// is `.` and two lowercase hex digits (`ana@corp.com` -> `ana.40corp.2ecom`, `Ana` -> `.41na`). The key is then
/// lower-case ASCII without `/`, so it is valid, unique per name and case-proof everywhere. `None` when the key
/// would pass MLflow's 250-character limit (a name of up to 75 arbitrary bytes always fits).
pub fn grant_tag_key(kind: Grantee, who: &str) -> Option<String> {
    let prefix = match kind {
        Grantee::User => USER_GRANT_PREFIX,
        Grantee::Group => GROUP_GRANT_PREFIX,
    };
    let mut key = String::with_capacity(prefix.len() + who.len());
    key.push_str(prefix);
    encode_name(&mut key, who);
    (!who.is_empty() && key.len() <= MAX_TAG_KEY).then_some(key)
}

/// The experiment tag key holding one grantee's grant on one of its traces ([`TRACE_GRANT_PREFIX`]); the trace id is
/// encoded like a name. An encoded id never holds `.u` or `.g` (a `.` is always followed by two hex digits), so the
/// first `.user.` or `.group.` ends it. `None` past MLflow's key limit (with a `tr-` + 32 hex id, a name of up to
/// 61 arbitrary bytes fits).
pub fn trace_grant_tag_key(trace_id: &str, kind: Grantee, who: &str) -> Option<String> {
    let mut key = String::from(TRACE_GRANT_PREFIX);
    encode_name(&mut key, trace_id);
    key.push_str(match kind {
        Grantee::User => ".user.",
        Grantee::Group => ".group.",
    });
    encode_name(&mut key, who);
    (!trace_id.is_empty() && !who.is_empty() && key.len() <= MAX_TAG_KEY).then_some(key)
}

fn encode_name(key: &mut String, name: &str) {
    for b in name.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' {
            key.push(char::from(b));
        } else {
            key.push_str(&format!(".{b:02x}"));
        }
    }
}

/// The trace and grantee a trace grant tag names: `Ok(None)` for a key that is no trace grant tag.
pub fn parse_trace_grant_tag_key(key: &str) -> Result<Option<(String, Grantee, String)>, BadGrants> {
    let Some(rest) = key.strip_prefix(TRACE_GRANT_PREFIX) else { return Ok(None) };
    let bad = || BadGrants(format!("the tag {key:?}, which is no trace grant the gate wrote"));
    let split = [(".user.", Grantee::User), (".group.", Grantee::Group)]
        .into_iter()
        .filter_map(|(sep, kind)| rest.find(sep).map(|at| (at, sep, kind)))
        .min_by_key(|(at, ..)| *at);
    let (at, sep, kind) = split.ok_or_else(bad)?;
    let (id, who) =
        (decode_name(rest.get(..at).unwrap_or_default()), decode_name(rest.get(at + sep.len()..).unwrap_or_default()));
    let (Some(id), Some(who)) = (id, who) else { return Err(bad()) };
    match trace_grant_tag_key(&id, kind, &who) {
        Some(canonical) if canonical == key => Ok(Some((id, kind, who))),
        _ => Err(bad()),
    }
}

/// The name an encoded name stands for, if it is well formed (canonical form is checked by re-encoding).
fn decode_name(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'.' {
            let hex = tail.get(..2).and_then(|h| std::str::from_utf8(h).ok())?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = tail.get(2..).unwrap_or_default();
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The grantee a tag key names: `Ok(None)` for a key that is no grant tag, an error for a grant tag the gate did not
/// write (unknown kind, or a name not in [`grant_tag_key`]'s canonical encoding).
pub fn parse_grant_tag_key(key: &str) -> Result<Option<(Grantee, String)>, BadGrants> {
    let (kind, encoded) = if let Some(rest) = key.strip_prefix(USER_GRANT_PREFIX) {
        (Grantee::User, rest)
    } else if let Some(rest) = key.strip_prefix(GROUP_GRANT_PREFIX) {
        (Grantee::Group, rest)
    } else if key.starts_with(TRACE_GRANT_PREFIX) {
        return Ok(None);
    } else if key.starts_with(GRANT_PREFIX) {
        return Err(BadGrants(format!("the tag {key:?}, which is no user's or group's grant")));
    } else {
        return Ok(None);
    };
    let bad = || BadGrants(format!("the tag {key:?}, whose grantee is not encoded as the gate encodes names"));
    let who = decode_name(encoded).ok_or_else(bad)?;
    match grant_tag_key(kind, &who) {
        Some(canonical) if canonical == key => Ok(Some((kind, who))),
        _ => Err(bad()),
    }
}

/// The permission levels a grant may carry, weakest first (`NO_PERMISSIONS` is an explicit deny).
pub const LEVELS: [&str; 5] = ["NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE"];

/// What a route needs on the object it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Not governed by resource permissions (other rules apply: admin-only surfaces, server routes, or a family the
    /// gate does not resolve yet).
    Unchecked,
    /// Creates an experiment or a registered model: allowed per group (`data.permissions.create`).
    Create,
    /// Needs at least this level on the resource reached through the anchor.
    On(Level, Anchor),
    /// A search or list: its results are filtered to what the caller may read.
    Filter,
    /// Needs at least this level on every object a list of the request names (`run_ids`, `trace_ids`,
    /// `experiment_ids`: [`Anchor::list_field`]); one object the caller may not reach refuses the whole request.
    Each(Level, Anchor),
    /// A GraphQL query: READ on every object its root fields name (`objects` in the target, see
    /// `mlflow::graphql::objects`); lists in the answer are cut to what the caller may read.
    Queried,
}

impl Need {
    /// The name the policy sees as `input.operation.permission`.
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Unchecked => "none",
            Need::Create => "create",
            Need::On(Level::Read, _) => "read",
            Need::On(Level::Use, _) | Need::Each(Level::Use, _) => "use",
            Need::On(Level::Edit, _) => "edit",
            Need::On(Level::Manage, _) | Need::Each(Level::Manage, _) => "manage",
            Need::Filter => "filter",
            Need::Each(Level::Read, _) | Need::Queried => "read",
            Need::Each(Level::Edit, _) => "edit",
        }
    }
}

/// A level a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// See the object.
    Read,
    /// Invoke it (an AI-gateway endpoint), as MLflow's own `USE`.
    Use,
    /// Change it (log to a run, set tags, register versions, move aliases).
    Edit,
    /// Delete, restore, rename it, and change its grants.
    Manage,
}

/// Where a route's object takes its permissions from, and the target fields naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Anchor {
    /// An experiment, by `experiment_id`.
    Experiment,
    /// An experiment, by `experiment_name` (`experiments/get-by-name`).
    ExperimentName,
    /// A run (and, above it, its experiment), by `run_id` (or, in a query, MLflow's legacy `run_uuid`).
    Run,
    /// A registered model (versions, aliases and prompts inherit from it), by `name`.
    RegisteredModel,
    /// A logged model (and its experiment), by `model_id`.
    LoggedModel,
    /// A trace (and its experiment), by `trace_id` (v3) or `request_id` (v2).
    Trace,
    /// An evaluation dataset (v3), by `dataset_id`: its experiments (`experiment_ids`) hold the permissions, all of
    /// them (a `NO_PERMISSIONS` on any one of them denies; a grant on any one of them counts).
    Dataset,
    /// A file of the proxied artifact store, by its path (`artifact_path` in the route, or the `path` query of a
    /// listing): `<experiment_id>/...`, under `workspaces/<ws>/` or not. The experiment holds the permissions.
    ArtifactPath,
    /// An AI-gateway endpoint, by `endpoint_id` (its configuration routes); a `GetGatewayEndpoint` naming only a
    /// `name` is about [`Anchor::GatewayEndpointName`].
    GatewayEndpoint,
    /// An AI-gateway endpoint, by name: the path's `endpoint_name` of an invocation, or the body's `model` of the
    /// OpenAI-, Anthropic- and MLflow-style invocations, or `name`.
    GatewayEndpointName,
}

impl Anchor {
    /// The target fields that name the object, the one MLflow reads first first.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Anchor::Experiment => &["experiment_id"],
            Anchor::ExperimentName => &["experiment_name"],
            Anchor::Run => &["run_id", "run_uuid"],
            Anchor::RegisteredModel => &["name"],
            Anchor::LoggedModel => &["model_id"],
            Anchor::Trace => &["trace_id", "request_id"],
            Anchor::Dataset => &["dataset_id"],
            Anchor::ArtifactPath => &["artifact_path", "path"],
            Anchor::GatewayEndpoint => &["endpoint_id"],
            Anchor::GatewayEndpointName => &["endpoint_name", "model", "name"],
        }
    }

    /// The name the policy sees as `resource.permissions.anchor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Anchor::Experiment | Anchor::ExperimentName => "experiment",
            Anchor::Run => "run",
            Anchor::RegisteredModel => "registered_model",
            Anchor::LoggedModel => "logged_model",
            Anchor::Trace => "trace",
            Anchor::Dataset => "dataset",
            Anchor::ArtifactPath => "artifact",
            Anchor::GatewayEndpoint | Anchor::GatewayEndpointName => "gateway_endpoint",
        }
    }

    /// The target field listing several objects of this kind (`Need::Each`), as MLflow names it.
    pub fn list_field(self) -> &'static str {
        match self {
            Anchor::Run => "run_ids",
            Anchor::Trace => "trace_ids",
            _ => "experiment_ids",
        }
    }
}

/// The experiment id of a proxied-store path (`<exp>/...` or `workspaces/<ws>/<exp>/...`), if it has one.
pub fn artifact_experiment(path: &str) -> Option<&str> {
    let mut segments = path.split('/');
    let first = segments.next().filter(|s| !s.is_empty())?;
    if first == "workspaces" {
        return segments.nth(1).filter(|s| !s.is_empty());
    }
    Some(first)
}

/// Routes by the level they need and the object they reach (MLflow's own auth app agrees, except that renames need
/// MANAGE here as deletes do: see `mlflow-auth-app-route-map.txt`).
const TABLE: [(Level, Anchor, &[&str]); 9] = [
    (Level::Manage, Anchor::Experiment, &["DeleteExperiment", "RestoreExperiment", "UpdateExperiment"]),
    (Level::Manage, Anchor::Run, &["DeleteRun", "RestoreRun"]),
    (Level::Manage, Anchor::RegisteredModel, &["DeleteRegisteredModel", "RenameRegisteredModel", "DeleteModelVersion"]),
    (Level::Manage, Anchor::LoggedModel, &["DeleteLoggedModel"]),
    (
        Level::Edit,
        Anchor::Experiment,
        &["SetExperimentTag", "DeleteExperimentTag", rpc::CREATE_RUN, "CreatePromptlabRun", rpc::CREATE_LOGGED_MODEL],
    ),
    (
        Level::Edit,
        Anchor::Run,
        &[
            "UpdateRun",
            "LogMetric",
            "LogParam",
            rpc::LOG_BATCH,
            "LogModel",
            "LogInputs",
            "LogOutputs",
            "SetTag",
            "DeleteTag",
        ],
    ),
    (
        Level::Edit,
        Anchor::RegisteredModel,
        &[
            "UpdateRegisteredModel",
            "SetRegisteredModelTag",
            "DeleteRegisteredModelTag",
            rpc::CREATE_MODEL_VERSION,
            "UpdateModelVersion",
            rpc::SET_MODEL_VERSION_TAG,
            "DeleteModelVersionTag",
            rpc::TRANSITION_MODEL_VERSION_STAGE,
            rpc::SET_REGISTERED_MODEL_ALIAS,
            rpc::DELETE_REGISTERED_MODEL_ALIAS,
        ],
    ),
    (
        Level::Edit,
        Anchor::LoggedModel,
        &["FinalizeLoggedModel", "SetLoggedModelTags", "DeleteLoggedModelTag", "LogLoggedModelParams"],
    ),
    (Level::Read, Anchor::Run, &["GetRun", "GetMetricHistory"]),
];

/// Writes to the objects an experiment owns besides runs and logged models (scorers, evaluation datasets, traces
/// and their assessments), kept apart from `TABLE` for their own review. A dataset's permissions are its
/// experiments'; a scorer's and a trace's bulk deletion name the experiment itself.
const OWNED_WRITES: [(Level, Anchor, &[&str]); 5] = [
    (Level::Manage, Anchor::Experiment, &["DeleteScorer", "DeleteTraces", "DeleteTracesV3"]),
    (Level::Edit, Anchor::Experiment, &["RegisterScorer", "StartTrace", "StartTraceV3", "ExportTraces"]),
    (Level::Manage, Anchor::Dataset, &["DeleteDataset"]),
    (
        Level::Edit,
        Anchor::Dataset,
        &[
            "UpsertDatasetRecords",
            "DeleteDatasetRecords",
            "SetDatasetTags",
            "DeleteDatasetTag",
            "RemoveDatasetFromExperiments",
        ],
    ),
    (
        Level::Edit,
        Anchor::Trace,
        &[
            "EndTrace",
            "SetTraceTag",
            "DeleteTraceTag",
            "SetTraceTagV3",
            "DeleteTraceTagV3",
            "CreateAssessment",
            "UpdateAssessment",
            "DeleteAssessment",
            "LinkPromptsToTrace",
        ],
    ),
];

/// AI-gateway endpoints, as MLflow's own auth app levels them (`validate_can_*_gateway_endpoint*`): reading its
/// configuration needs READ, invoking it USE, changing it (its models, tags, bindings, guardrails, name) EDIT,
/// deleting it (and changing its grants) MANAGE. Secrets and model definitions have no tags to hold grants: they
/// keep the group rule of `data.operations` (policies/README.md, "AI gateway").
const GATEWAY: [(Level, Anchor, &[&str]); 4] = [
    (Level::Manage, Anchor::GatewayEndpoint, &["DeleteGatewayEndpoint"]),
    (
        Level::Edit,
        Anchor::GatewayEndpoint,
        &[
            "UpdateGatewayEndpoint",
            "SetGatewayEndpointTag",
            "DeleteGatewayEndpointTag",
            "AttachModelToEndpoint",
            "DetachModelFromEndpoint",
            "CreateEndpointBinding",
            "DeleteEndpointBinding",
            "AddGuardrailToEndpoint",
            "RemoveGuardrailFromEndpoint",
            "UpdateEndpointGuardrailConfig",
        ],
    ),
    (Level::Read, Anchor::GatewayEndpoint, &["GetGatewayEndpoint", "ListEndpointGuardrailConfigs"]),
    (
        Level::Use,
        Anchor::GatewayEndpointName,
        &[
            "GatewayInvocations",
            "GatewayChatCompletions",
            "GatewayOpenAiChatCompletions",
            "GatewayOpenAiEmbeddings",
            "GatewayTypesafeSystemOne",
            "GatewayOpenAiResponses",
            "GatewayOpenAiResponsesCompact",
            "GatewayAnthropicMessages",
            "GatewayGeminiGenerateContent",
            "GatewayGeminiStreamGenerateContent",
            "GatewayRawProxy",
        ],
    ),
];

/// Routes naming several objects in a list (`Anchor::list_field`): every one is checked, and one the caller may
/// not reach refuses the request (MLflow answers these in one piece, so nothing can be cut from the answer).
/// Linking a dataset to experiments (at its creation or later) writes into each of them, so it needs EDIT on each,
/// and on the dataset itself when it exists.
const EACH: [(Level, Anchor, &[&str]); 5] = [
    (Level::Read, Anchor::Run, &["GetMetricHistoryBulk", "GetMetricHistoryBulkInterval"]),
    (Level::Read, Anchor::Trace, &["BatchGetTraces", "BatchGetTraceInfos"]),
    (Level::Read, Anchor::Experiment, &["QueryTraceMetrics", "CalculateTraceFilterCorrelation"]),
    (Level::Edit, Anchor::Experiment, &["CreateDataset", "AddDatasetToExperiments"]),
    (Level::Edit, Anchor::Trace, &["LinkTracesToRun"]),
];

/// For a `Need::Each` route: whether its list may be empty (a dataset created without experiments), and the one
/// object it names besides the list (the dataset experiments are added to, the run traces are linked to), checked
/// at the same level.
pub fn each_extras(rpc: &str) -> (bool, Option<Anchor>) {
    match rpc {
        "CreateDataset" => (true, None),
        "AddDatasetToExperiments" => (false, Some(Anchor::Dataset)),
        "LinkTracesToRun" => (false, Some(Anchor::Run)),
        _ => (false, None),
    }
}

/// Reads by the object they reach (kept apart from `TABLE` for the reads' own review). `ListArtifacts` is two
/// routes: `artifacts/list?run_id=` (a run) and the proxied store's `artifacts?path=` (a path); a run named in the
/// target is used first (`pipeline::enrich::permissions`).
const READS: [(Anchor, &[&str]); 8] = [
    (Anchor::Experiment, &["GetExperiment", "GetScorer", "ListScorerVersions"]),
    (Anchor::ExperimentName, &["GetExperimentByName"]),
    (Anchor::Run, &["GetRunArtifact", "CreatePresignedDownloadUrl"]),
    (
        Anchor::RegisteredModel,
        &[
            "GetRegisteredModel",
            "GetModelVersion",
            "GetModelVersionDownloadUri",
            "GetLatestVersions",
            "GetModelVersionByAlias",
            "GetModelVersionArtifact",
        ],
    ),
    (Anchor::LoggedModel, &["GetLoggedModel", "GetLoggedModelArtifact", "ListLoggedModelArtifacts"]),
    (Anchor::Trace, &["GetTraceInfo", "GetTraceInfoV3", "GetTrace", "GetTraceArtifact", "GetAssessment"]),
    (Anchor::Dataset, &["GetDataset", "GetDatasetRecords", "GetDatasetExperimentIds"]),
    (Anchor::ArtifactPath, &["ListArtifacts", "DownloadArtifact", "GetPresignedDownloadUrl"]),
];

/// The gate's grants API, in the request shapes of MLflow's basic-auth app (`experiments/permissions/...` and
/// `registered-models/permissions/...` under `/api/2.0/mlflow/` and `/ajax-api/2.0/mlflow/`; the same shapes for
/// `logged-models/permissions/...` and `traces/permissions/...`, which MLflow's app does not have), served by the gate
/// itself (`pipeline::grants`), never forwarded: (method, path, RPC, read-only, object). Every one needs MANAGE.
pub const GRANT_ROUTES: [(&str, &str, &str, bool, Anchor); 20] = [
    ("POST", "experiments/permissions/create", "CreateExperimentPermission", false, Anchor::Experiment),
    ("GET", "experiments/permissions/get", "GetExperimentPermission", true, Anchor::Experiment),
    ("PATCH", "experiments/permissions/update", "UpdateExperimentPermission", false, Anchor::Experiment),
    ("DELETE", "experiments/permissions/delete", "DeleteExperimentPermission", false, Anchor::Experiment),
    ("POST", "registered-models/permissions/create", "CreateRegisteredModelPermission", false, Anchor::RegisteredModel),
    ("GET", "registered-models/permissions/get", "GetRegisteredModelPermission", true, Anchor::RegisteredModel),
    (
        "PATCH",
        "registered-models/permissions/update",
        "UpdateRegisteredModelPermission",
        false,
        Anchor::RegisteredModel,
    ),
    (
        "DELETE",
        "registered-models/permissions/delete",
        "DeleteRegisteredModelPermission",
        false,
        Anchor::RegisteredModel,
    ),
    // The gate's own: grants on one logged model (`model_id`) or one trace (`trace_id`), which then override what
    // they inherit from their experiment.
    ("POST", "logged-models/permissions/create", "CreateLoggedModelPermission", false, Anchor::LoggedModel),
    ("GET", "logged-models/permissions/get", "GetLoggedModelPermission", true, Anchor::LoggedModel),
    ("PATCH", "logged-models/permissions/update", "UpdateLoggedModelPermission", false, Anchor::LoggedModel),
    ("DELETE", "logged-models/permissions/delete", "DeleteLoggedModelPermission", false, Anchor::LoggedModel),
    ("POST", "traces/permissions/create", "CreateTracePermission", false, Anchor::Trace),
    ("GET", "traces/permissions/get", "GetTracePermission", true, Anchor::Trace),
    ("PATCH", "traces/permissions/update", "UpdateTracePermission", false, Anchor::Trace),
    ("DELETE", "traces/permissions/delete", "DeleteTracePermission", false, Anchor::Trace),
    // Grants on one AI-gateway endpoint (`endpoint_id`, or `name`), in the shapes above.
    ("POST", "gateway/endpoints/permissions/create", "CreateGatewayEndpointPermission", false, Anchor::GatewayEndpoint),
    ("GET", "gateway/endpoints/permissions/get", "GetGatewayEndpointPermission", true, Anchor::GatewayEndpoint),
    (
        "PATCH",
        "gateway/endpoints/permissions/update",
        "UpdateGatewayEndpointPermission",
        false,
        Anchor::GatewayEndpoint,
    ),
    (
        "DELETE",
        "gateway/endpoints/permissions/delete",
        "DeleteGatewayEndpointPermission",
        false,
        Anchor::GatewayEndpoint,
    ),
];

/// Classifies a grants-API route (HEAD reads like GET).
pub fn classify_grants(method: &str, path: &str) -> Option<Operation> {
    let rest = path.strip_prefix("/api/2.0/mlflow/").or_else(|| path.strip_prefix("/ajax-api/2.0/mlflow/"))?;
    let method = if method == "HEAD" { "GET" } else { method };
    GRANT_ROUTES.iter().find(|(m, p, ..)| *m == method && *p == rest).map(|(_, _, rpc, read_only, anchor)| {
        let resource = match anchor {
            Anchor::LoggedModel => Resource::LoggedModel,
            Anchor::Trace => Resource::Trace,
            Anchor::RegisteredModel => Resource::RegisteredModel,
            Anchor::GatewayEndpoint => Resource::Gateway,
            _ => Resource::Experiment,
        };
        Operation::plain(rpc, *read_only, resource)
    })
}

/// The grants-API route of an RPC, if it is one: its object.
pub fn grant_route(rpc: &str) -> Option<Anchor> {
    GRANT_ROUTES.iter().find(|(_, _, r, ..)| *r == rpc).map(|(.., anchor)| *anchor)
}

/// Reads of owned objects deliberately left without a level (each with its reason; a test checks that every other
/// read of an owned object has one).
/// `GetOnlineTraceDetails` and `SearchUnifiedTraceHandler` are Databricks RPCs that MLflow's own server routes to
/// `_not_implemented` (404): they read nothing.
pub const UNCHECKED_READS: [&str; 2] = ["GetOnlineTraceDetails", "SearchUnifiedTraceHandler"];

/// Writes to experiment-owned objects deliberately left without a level here (a test checks that every other one
/// has one): scorer and evaluation invocations and online scoring are server-side jobs, admin-only in the default
/// bundle (`jobs.admin_only`). (OTLP's `ExportTraces` needs EDIT on the experiment of its `X-Mlflow-Experiment-Id`
/// header, read by `pipeline::classify`.)
pub const UNCHECKED_WRITES: [&str; 3] = ["InvokeGenaiEvaluate", "InvokeScorer", "UpsertOnlineScoringConfig"];

/// AI-gateway routes deliberately left to the group rule of `data.operations` (admins manage, engineers read; a
/// test checks that every other gateway route has a level or is filtered): secrets and model definitions have no
/// tags to hold grants (their `created_by`, which the gate stamps, is recorded but decides nothing), budgets and
/// guardrails are server-wide, creating an endpoint is admin-only by default (its creator then has the creator's
/// level on it), the provider catalogue is static, and `gateway-proxy` forwards to an external deployments server
/// (`MLFLOW_DEPLOYMENTS_TARGET`) whose endpoints are not the gateway's.
pub const GATEWAY_GROUP_RULED: [&str; 26] = [
    "CreateGatewayEndpoint",
    "CreateGatewaySecret",
    "UpdateGatewaySecret",
    "DeleteGatewaySecret",
    "GetGatewaySecretInfo",
    "ListGatewaySecretInfos",
    "GetSecretsConfig",
    "CreateGatewayModelDefinition",
    "UpdateGatewayModelDefinition",
    "DeleteGatewayModelDefinition",
    "GetGatewayModelDefinition",
    "ListGatewayModelDefinitions",
    "CreateBudgetPolicy",
    "UpdateBudgetPolicy",
    "DeleteBudgetPolicy",
    "GetBudgetPolicy",
    "ListBudgetPolicies",
    "ListBudgetWindows",
    "CreateGatewayGuardrail",
    "DeleteGatewayGuardrail",
    "GetGatewayGuardrail",
    "ListGatewayGuardrails",
    "GetProviderConfig",
    "ListSupportedModels",
    "ListSupportedProviders",
    "GatewayProxy",
];

/// Creations (per-group rule).
const CREATIONS: [&str; 2] = [rpc::CREATE_EXPERIMENT, rpc::CREATE_REGISTERED_MODEL];

/// Searches and lists whose results are filtered (response phase).
const FILTERED: [&str; 14] = [
    "SearchExperiments",
    "SearchRuns",
    "SearchRegisteredModels",
    "SearchModelVersions",
    "SearchLoggedModels",
    "SearchTraces",
    "SearchTracesV3",
    "SearchDatasets",
    "SearchEvaluationDatasets",
    "ListScorers",
    "GetOnlineScoringConfigs",
    "ListGatewayEndpoints",
    "ListEndpointBindings",
    "GatewayListModels",
];

/// What a route needs. The approval workflow's routes need READ on the model (their own rules say who may
/// approve; the transition an approval performs is checked as a transition).
pub fn need(op: &Operation) -> Need {
    if op.workflow {
        return Need::On(Level::Read, Anchor::RegisteredModel);
    }
    let (by_rpc, then_by_rpc) = &*NEEDS;
    if let Some(need) = by_rpc.get(op.rpc) {
        return *need;
    }
    if op.resource == Resource::GraphQl {
        return Need::Queried;
    }
    then_by_rpc.get(op.rpc).copied().unwrap_or(Need::Unchecked)
}

type NeedsByRpc = HashMap<&'static str, Need>;

/// The tables of `need` by RPC, built once: `need` runs several times per request, and scanning the tables compared
/// the RPC with a few hundred names each time. The first map answers before the GraphQL rule, the second after it;
/// within each, the first table naming an RPC wins, in the order the tables were once scanned (grant routes, the
/// level table, reads, owned writes, the AI gateway, listed objects; then creations and filtered lists).
static NEEDS: std::sync::LazyLock<(NeedsByRpc, NeedsByRpc)> = std::sync::LazyLock::new(|| {
    let mut first = HashMap::new();
    for (.., rpc, _, anchor) in GRANT_ROUTES {
        first.entry(rpc).or_insert(Need::On(Level::Manage, anchor));
    }
    for (level, anchor, rpcs) in TABLE {
        rpcs.iter().for_each(|rpc| _ = first.entry(*rpc).or_insert(Need::On(level, anchor)));
    }
    for (anchor, rpcs) in READS {
        rpcs.iter().for_each(|rpc| _ = first.entry(*rpc).or_insert(Need::On(Level::Read, anchor)));
    }
    for (level, anchor, rpcs) in OWNED_WRITES.into_iter().chain(GATEWAY) {
        rpcs.iter().for_each(|rpc| _ = first.entry(*rpc).or_insert(Need::On(level, anchor)));
    }
    for (level, anchor, rpcs) in EACH {
        rpcs.iter().for_each(|rpc| _ = first.entry(*rpc).or_insert(Need::Each(level, anchor)));
    }
    let mut then = HashMap::new();
    CREATIONS.iter().for_each(|rpc| _ = then.entry(*rpc).or_insert(Need::Create));
    FILTERED.iter().for_each(|rpc| _ = then.entry(*rpc).or_insert(Need::Filter));
    (first, then)
});

/// The most objects one request may name in a list (MLflow's own caps are lower: 100 runs for the metric
/// histories); past it the request is refused before any look-up.
pub const MAX_LISTED: usize = 1_000;

/// The scalar query parameter a route reads repeated, as a list (`metrics/get-history-bulk?run_id=a&run_id=b`):
/// it is taken out of the scalar target (where two values would be ambiguous) and listed instead.
pub fn repeated_scalar(rpc: &str) -> Option<&'static str> {
    (rpc == "GetMetricHistoryBulk").then_some("run_id")
}

/// The ids a `Need::Each` route lists, read where MLflow reads them (GET: every value of the query parameter, in
/// either spelling; other methods: the normalised JSON body's list), for the target's [`Anchor::list_field`].
/// `None` for other routes; an error names what cannot be read (the request is refused).
pub fn listed(
    op: &Operation,
    method: &str,
    query: &[(String, String)],
    body: Option<&Map<String, Value>>,
) -> Result<Option<(&'static str, Vec<Value>)>, String> {
    let Need::Each(_, anchor) = need(op) else { return Ok(None) };
    let field = anchor.list_field();
    let ids: Vec<Value> = if matches!(method, "GET" | "HEAD") {
        let names = [Some(field), repeated_scalar(op.rpc)];
        let camel = camel(field);
        query
            .iter()
            .filter(|(k, _)| names.contains(&Some(k.as_str())) || *k == camel)
            .map(|(_, v)| Value::String(v.clone()))
            .collect()
    } else {
        match body.and_then(|b| b.get(field)) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.clone(),
            Some(_) => return Err(format!("{field} must be a list of strings")),
        }
    };
    if ids.len() > MAX_LISTED {
        return Err(format!("{field} names {} objects; mlflow-gate checks at most {MAX_LISTED}", ids.len()));
    }
    Ok(Some((field, ids)))
}

/// The experiment a v3 trace is started in (`trace.trace_info.trace_location.mlflow_experiment.experiment_id`, each
/// level in either spelling, as MLflow's JSON parser accepts), for the target's `experiment_id`. `None` for other
/// routes or when absent (the request is then refused as naming no experiment); two spellings of one level are
/// refused as ambiguous.
pub fn nested_experiment(rpc: &str, body: Option<&Map<String, Value>>) -> Result<Option<String>, String> {
    if rpc != "StartTraceV3" {
        return Ok(None);
    }
    let mut at = body;
    let path = ["trace", "trace_info", "trace_location", "mlflow_experiment"];
    for key in path {
        let Some(map) = at else { return Ok(None) };
        at = one_spelling(map, key)?.and_then(Value::as_object);
    }
    let Some(map) = at else { return Ok(None) };
    Ok(match one_spelling(map, "experiment_id")? {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// A field in its snake_case or lowerCamelCase spelling; both at once are refused.
fn one_spelling<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Value>, String> {
    match (map.get(key), map.get(&camel(key))) {
        (Some(_), Some(_)) if key != camel(key) => Err(format!("{key} is spelt two ways")),
        (a, b) => Ok(a.or(b)),
    }
}

/// `run_ids` -> `runIds`.
fn camel(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A resource's grants, as read from its grant tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Subject -> level.
    pub users: Map<String, Value>,
    /// Group -> level.
    pub groups: Map<String, Value>,
    /// The per-grantee tag keys the object carries (a revocation deletes the grantee's).
    pub tagged: std::collections::BTreeSet<String>,
    /// The legacy combined tag's grants, when the object has that tag (a revocation also removes the grantee there).
    pub legacy: Option<Box<Grants>>,
    /// On an experiment: the grants of its traces, by trace id ([`trace_grant_tag_key`]).
    pub traces: std::collections::BTreeMap<String, Grants>,
}

/// Why a grant tag cannot be read (the policy denies: a grant the gate cannot read might be a `NO_PERMISSIONS`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("its grant tags hold {0}")]
pub struct BadGrants(String);

impl Grants {
    /// Parses a grants tag value; `None` (no tag) is no grants.
    pub fn parse(value: Option<&str>) -> Result<Grants, BadGrants> {
        let Some(text) = value else { return Ok(Grants::default()) };
        let Ok(Value::Object(mut doc)) = serde_json::from_str::<Value>(text) else {
            return Err(BadGrants(format!("a {GRANTS_TAG} that is no JSON object")));
        };
        let mut take = |kind: &str| -> Result<Map<String, Value>, BadGrants> {
            match doc.remove(kind) {
                None => Ok(Map::new()),
                Some(Value::Object(m)) => match m.iter().find(|(_, v)| !v.as_str().is_some_and(is_level)) {
                    Some((who, v)) => {
                        Err(BadGrants(format!("{v} for {kind} {who:?} in {GRANTS_TAG}, which is not a level")))
                    }
                    None => Ok(m),
                },
                Some(_) => Err(BadGrants(format!("{kind:?} in {GRANTS_TAG} that is not an object"))),
            }
        };
        let grants = Grants { users: take("users")?, groups: take("groups")?, ..Grants::default() };
        match doc.keys().next() {
            Some(extra) => Err(BadGrants(format!("an unknown field {extra:?} in {GRANTS_TAG}"))),
            None => Ok(grants),
        }
    }

    /// An object's grants from its tags (key -> value): the legacy combined tag [`GRANTS_TAG`], then every
    /// per-grantee tag ([`grant_tag_key`]), which wins over the combined tag's entry for the same grantee.
    pub fn from_tags(tags: &Map<String, Value>) -> Result<Grants, BadGrants> {
        let legacy = match tags.get(GRANTS_TAG) {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(BadGrants(format!("a {GRANTS_TAG} that is not a string"))),
        };
        let mut grants = Grants::parse(legacy)?;
        if legacy.is_some() {
            grants.legacy = Some(Box::new(grants.clone()));
        }
        for (key, value) in tags {
            if let Some((trace, kind, who)) = parse_trace_grant_tag_key(key)? {
                let level = value
                    .as_str()
                    .filter(|l| is_level(l))
                    .ok_or_else(|| BadGrants(format!("{value} in the tag {key:?}, which is not a level")))?;
                let on_trace = grants.traces.entry(trace).or_default();
                let map = if kind == Grantee::User { &mut on_trace.users } else { &mut on_trace.groups };
                map.insert(who, Value::String(level.to_string()));
                on_trace.tagged.insert(key.clone());
                continue;
            }
            let Some((kind, who)) = parse_grant_tag_key(key)? else { continue };
            let level = value
                .as_str()
                .filter(|l| is_level(l))
                .ok_or_else(|| BadGrants(format!("{value} in the tag {key:?}, which is not a level")))?;
            let map = match kind {
                Grantee::User => &mut grants.users,
                Grantee::Group => &mut grants.groups,
            };
            map.insert(who, Value::String(level.to_string()));
            grants.tagged.insert(key.clone());
        }
        Ok(grants)
    }

    /// The tag value (stable key order, so an unchanged grant set writes the same bytes).
    pub fn to_tag(&self) -> String {
        serde_json::json!({"users": self.users, "groups": self.groups}).to_string()
    }

    /// The policy's view: `{"users": {...}, "groups": {...}}`.
    pub fn to_json(&self) -> Value {
        let mut grants = Map::with_capacity(2);
        grants.insert("users".into(), Value::Object(self.users.clone()));
        grants.insert("groups".into(), Value::Object(self.groups.clone()));
        Value::Object(grants)
    }
}

/// Whether `s` is one of [`LEVELS`].
pub fn is_level(s: &str) -> bool {
    LEVELS.contains(&s)
}

#[cfg(test)]
#[path = "permission_tests.rs"]
mod tests;
