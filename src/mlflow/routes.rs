//! The MLflow route table: (method, canonical path) -> Operation.
//!
//! Every HTTP route an unmodified MLflow server serves, with the RPC it reaches, whether it can change state,
//! what kind of object it acts on, and the values captured from the path. The gate denies whatever [`classify`]
//! does not recognise, so this table is a security boundary: a missing route breaks users, and a mutating route
//! marked read-only opens a hole.
//!
//! # Sources
//! * The Flask app of MLflow 3.17.2 (`mlflow.server.app.url_map`): every protobuf RPC of `MlflowService`,
//!   `ModelRegistryService`, `MlflowArtifactsService` and `WebhookService` (RPC names are the proto method
//!   names, capitalised), the internal online-scoring, gateway, demo, issue, evaluate and job endpoints of
//!   `handlers.get_endpoints()`, and the `@app.route` views of `mlflow/server/__init__.py`.
//! * The FastAPI routers mounted in front of Flask by `mlflow.server.fastapi_app` (OTLP, jobs, gateway,
//!   assistant, artifact streaming, MCP servers, server-info, health), in their declaration order.
//! * The route lists of MLflow 2.10.2 and 2.22.5 (the compatibility matrix, README "MLflow versions"): every route
//!   of theirs is one of 3.17.2's except four 2.0 spellings of trace/assessment RPCs that 2.22 declares but does
//!   not implement (see the traces rows of `V2`).
//! * The MLflow 3.18.0 additions, so that an upgrade is covered: `POST /ajax-api/3.0/mlflow/issues/schedule/state`
//!   and the skill registry under `/api|ajax-api/3.0/mlflow/skills`.
//!
//! Not included: the routes of the basic-auth app (`/signup`, `users/*`, `roles/*`, `permissions/*`), which exist
//! only with `--app-name basic-auth`, and `--static-prefix` spellings.
//!
//! # Matching
//! * Paths are canonical (decoded once, no query, no `//`, no dot segments) and compared case-sensitively.
//! * Every `/api/N.0/mlflow/...` route is also served under `/ajax-api/N.0/mlflow/...` by the same view. Some
//!   UI helpers exist only under `/ajax-api` and do not match under `/api`. Registry and webhook RPCs exist only
//!   under `2.0`.
//! * `<name>` captures one non-empty segment (optionally with a literal prefix or suffix in the same segment,
//!   as in `@<organization>` or `<endpoint_name>:generateContent`); `<path:name>` captures one or more non-empty
//!   segments. A path with an empty segment (a trailing `/`) never matches a template.
//! * Precedence is MLflow's: a route without parameters wins over a template (Werkzeug tries static segments
//!   first, and the FastAPI routers declare their static routes first), then templates are tried in
//!   declaration order (FastAPI's first-match rule; the Flask templates never overlap for one method), and a
//!   `<path:...>` parameter is greedy like Starlette's `.*` (the leftmost one takes as much as it can).
//! * Only a route that matches both method and path counts: `GET .../logged-models/search` reaches
//!   `GetLoggedModel` with `model_id = "search"`, as it does in MLflow.
//! * `HEAD` classifies like `GET`; `OPTIONS` on any path that some route serves is `CorsPreflight` (read-only,
//!   public, no body).
//! * The approval workflow's routes (`WORKFLOW`), which the gate serves itself, are part of the table too
//!   (`Operation::workflow`); they are not MLflow routes, so `all_routes` does not list them.

/// What kind of MLflow object an operation acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A registered model (or a prompt, which is a tagged registered model).
    RegisteredModel,
    /// A model version (or a prompt version), including aliases and stage transitions.
    ModelVersion,
    /// A registry webhook.
    Webhook,
    /// An experiment.
    Experiment,
    /// A run, including its params, metrics, tags, inputs and outputs.
    Run,
    /// Metric history reads.
    Metric,
    /// Artifact files: run artifacts, logged-model artifacts and the proxied artifact store.
    Artifact,
    /// A logged model (`m-...`).
    LoggedModel,
    /// A trace, including OTLP ingest.
    Trace,
    /// An assessment attached to a trace.
    Assessment,
    /// An evaluation dataset.
    Dataset,
    /// A scorer, online scoring and evaluation invocations.
    Scorer,
    /// A prompt. No route maps to it directly: prompts go through the registry routes.
    Prompt,
    /// A prompt-optimization job.
    PromptOptimization,
    /// A server-side background job.
    Job,
    /// The AI gateway: configuration, invocations and the UI proxy.
    Gateway,
    /// The MLflow Assistant (runs tools on the server host).
    Assistant,
    /// The MCP server registry.
    McpServer,
    /// The skill registry (MLflow 3.18).
    Skill,
    /// A workspace (tenant).
    Workspace,
    /// A detected issue and issue detection.
    Issue,
    /// A review queue.
    ReviewQueue,
    /// A label schema.
    LabelSchema,
    /// Demo data generation and deletion.
    Demo,
    /// The GraphQL endpoint.
    GraphQl,
    /// The web UI shell, its static files and UI telemetry.
    Ui,
    /// Server health, version and capabilities.
    Server,
    /// Not known. No route maps to it.
    Unknown,
}

impl Resource {
    /// The snake_case name, e.g. `"model_version"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::RegisteredModel => "registered_model",
            Resource::ModelVersion => "model_version",
            Resource::Webhook => "webhook",
            Resource::Experiment => "experiment",
            Resource::Run => "run",
            Resource::Metric => "metric",
            Resource::Artifact => "artifact",
            Resource::LoggedModel => "logged_model",
            Resource::Trace => "trace",
            Resource::Assessment => "assessment",
            Resource::Dataset => "dataset",
            Resource::Scorer => "scorer",
            Resource::Prompt => "prompt",
            Resource::PromptOptimization => "prompt_optimization",
            Resource::Job => "job",
            Resource::Gateway => "gateway",
            Resource::Assistant => "assistant",
            Resource::McpServer => "mcp_server",
            Resource::Skill => "skill",
            Resource::Workspace => "workspace",
            Resource::Issue => "issue",
            Resource::ReviewQueue => "review_queue",
            Resource::LabelSchema => "label_schema",
            Resource::Demo => "demo",
            Resource::GraphQl => "graphql",
            Resource::Ui => "ui",
            Resource::Server => "server",
            Resource::Unknown => "unknown",
        }
    }
}

/// One classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The MLflow RPC name, e.g. `"TransitionModelVersionStage"`. For routes that are not protobuf RPCs, a
    /// descriptive CamelCase name, e.g. `"DownloadArtifact"`, `"ServeStaticFile"`, `"GraphQL"`, `"SubmitJob"`.
    pub rpc: &'static str,
    /// True only if the route can never change server state (searches sent as POST are read-only).
    pub read_only: bool,
    /// The kind of object the operation acts on.
    pub resource: Resource,
    /// True only for routes that need no authentication: health, version, server-info, the UI shell and its
    /// static files, and CORS preflights.
    pub public: bool,
    /// True for routes that start server-side work whose writes never pass through the gate (background jobs,
    /// demo data, scorer and evaluation invocations, issue detection, online scoring, the assistant).
    pub server_side_job: bool,
    /// Values captured from the path, in template order, e.g. `("webhook_id", "abc")`.
    pub path_params: Vec<(&'static str, String)>,
    /// What the gate does with the request body of this route.
    pub body: BodyClass,
    /// True for the approval workflow's routes (`WORKFLOW`): served by the gate itself, never forwarded.
    pub workflow: bool,
}

/// How the gate treats a route's request body: the limit that applies and whether it is read or streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyClass {
    /// No body at all (public routes and CORS preflights): refused unread, so an unauthenticated caller can never
    /// make MLflow read a body.
    None,
    /// A small JSON body (reads and searches): `server.max_read_body_bytes`.
    Small,
    /// A JSON body of a write: `server.max_body_bytes`.
    Large,
    /// A GraphQL request (JSON with a `query` string): `server.max_graphql_body_bytes`, and the query's size and
    /// depth are checked before MLflow parses it.
    GraphQl,
    /// File contents or protobuf, streamed without being read (artifact uploads, OTLP ingest, AI-gateway calls).
    Stream,
}

impl Operation {
    /// An operation that is neither public nor a server-side job and has no path parameters (the gate's own
    /// workflow routes, unknown reads, and look-alikes built for a second policy decision).
    pub fn plain(rpc: &'static str, read_only: bool, resource: Resource) -> Operation {
        let body = if read_only { BodyClass::Small } else { BodyClass::Large };
        Operation {
            rpc,
            read_only,
            resource,
            public: false,
            server_side_job: false,
            path_params: Vec::new(),
            body,
            workflow: false,
        }
    }
}

/// RPC names the gate's code acts on (rather than only passing them to the policy).
pub mod rpc {
    /// `OPTIONS` on any path some route serves.
    pub const CORS_PREFLIGHT: &str = "CorsPreflight";
    /// A route the table does not know, read with GET or HEAD.
    pub const UNKNOWN: &str = "Unknown";
    /// The UI's upload-artifact: its parameters are in the query string, its body is the file.
    pub const UPLOAD_RUN_ARTIFACT: &str = "UploadRunArtifact";
    pub const EXPORT_TRACES: &str = "ExportTraces";
    /// Creates an experiment (stamped with its creator).
    pub const CREATE_EXPERIMENT: &str = "CreateExperiment";
    /// Creates a run (the gate stamps `mlflow.user`).
    pub const CREATE_RUN: &str = "CreateRun";
    /// Logs metrics, params and tags of a run at once.
    pub const LOG_BATCH: &str = "LogBatch";
    /// Registers a model (stamped with its creator).
    pub const CREATE_REGISTERED_MODEL: &str = "CreateRegisteredModel";
    /// Creates a logged model (stamped with its creator).
    pub const CREATE_LOGGED_MODEL: &str = "CreateLoggedModel";
    /// Creates a model version (stamped with its creator and lineage).
    pub const CREATE_MODEL_VERSION: &str = "CreateModelVersion";
    /// Creates an AI-gateway endpoint (its `created_by` is set to the subject: the endpoint's owner).
    pub const CREATE_GATEWAY_ENDPOINT: &str = "CreateGatewayEndpoint";
    /// Starts a trace (stamped with its creator).
    pub const START_TRACE: &str = "StartTrace";
    /// Moves a version to a stage (recorded in its stage history).
    pub const TRANSITION_MODEL_VERSION_STAGE: &str = "TransitionModelVersionStage";
    /// Moves an alias (recorded in the version's stage history).
    pub const SET_REGISTERED_MODEL_ALIAS: &str = "SetRegisteredModelAlias";
    /// Deletes an artifact (proxied artifact store).
    pub const DELETE_ARTIFACT: &str = "DeleteArtifact";
    /// Tags a model version (a registry event).
    pub const SET_MODEL_VERSION_TAG: &str = "SetModelVersionTag";
    /// Removes an alias (a registry event).
    pub const DELETE_REGISTERED_MODEL_ALIAS: &str = "DeleteRegisteredModelAlias";
    /// Workflow: ask for a stage transition.
    pub const CREATE_TRANSITION_REQUEST: &str = "CreateTransitionRequest";
    /// Workflow: approve an open request (performs the transition).
    pub const APPROVE_TRANSITION_REQUEST: &str = "ApproveTransitionRequest";
    /// Workflow: reject an open request.
    pub const REJECT_TRANSITION_REQUEST: &str = "RejectTransitionRequest";
    /// Workflow: cancel one's own open request.
    pub const DELETE_TRANSITION_REQUEST: &str = "DeleteTransitionRequest";
    /// Workflow: list a version's requests.
    pub const LIST_TRANSITION_REQUESTS: &str = "ListTransitionRequests";
    /// Workflow: comment on a version.
    pub const CREATE_COMMENT: &str = "CreateComment";
    /// Workflow: edit one's comment.
    pub const UPDATE_COMMENT: &str = "UpdateComment";
    /// Workflow: delete one's comment.
    pub const DELETE_COMMENT: &str = "DeleteComment";
    /// The registry's history of a model (which version held each stage and alias, when, moved by whom).
    pub const GET_REGISTRY_HISTORY: &str = "GetRegistryHistory";
}

/// The approval workflow's routes, served by the gate itself (`approvals`): (method, path after `/api/2.0/mlflow/`
/// or `/ajax-api/2.0/mlflow/`, RPC, read-only). They act on a model version.
pub const WORKFLOW: [(&str, &str, &str, bool); 9] = [
    ("POST", "transition-requests/create", rpc::CREATE_TRANSITION_REQUEST, false),
    ("POST", "transition-requests/approve", rpc::APPROVE_TRANSITION_REQUEST, false),
    ("POST", "transition-requests/reject", rpc::REJECT_TRANSITION_REQUEST, false),
    ("DELETE", "transition-requests/delete", rpc::DELETE_TRANSITION_REQUEST, false),
    ("GET", "transition-requests/list", rpc::LIST_TRANSITION_REQUESTS, true),
    ("POST", "comments/create", rpc::CREATE_COMMENT, false),
    ("PATCH", "comments/update", rpc::UPDATE_COMMENT, false),
    ("DELETE", "comments/delete", rpc::DELETE_COMMENT, false),
    ("GET", "registry-history/get", rpc::GET_REGISTRY_HISTORY, true),
];

/// Classifies a workflow route (HEAD reads like GET; OPTIONS is not a workflow route).
fn classify_workflow(method: &str, path: &str) -> Option<Operation> {
    let rest = path.strip_prefix("/api/2.0/mlflow/").or_else(|| path.strip_prefix("/ajax-api/2.0/mlflow/"))?;
    let method = if method == "HEAD" { "GET" } else { method };
    WORKFLOW.iter().find(|(m, p, _, _)| *m == method && *p == rest).map(|(_, _, rpc, read_only)| Operation {
        workflow: true,
        ..Operation::plain(rpc, *read_only, Resource::ModelVersion)
    })
}

/// Classifies a request. `method` is upper-case (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS); `path` is
/// canonical (percent-decoded once, no query string, no `//`, no dot segments). Returns `None` when MLflow
/// serves no route for this method and path.
pub fn classify(method: &str, path: &str) -> Option<Operation> {
    if let Some(op) = classify_workflow(method, path) {
        return Some(op);
    }
    if let Some(op) = super::permission::classify_grants(method, path) {
        return Some(op);
    }
    match method {
        "HEAD" => classify_method("GET", path),
        "OPTIONS" => {
            ["GET", "POST", "PUT", "PATCH", "DELETE"].into_iter().find_map(|m| classify_method(m, path)).map(|op| {
                Operation {
                    rpc: rpc::CORS_PREFLIGHT,
                    read_only: true,
                    // Answered by MLflow without authentication; it carries no body (`BodyClass::None`).
                    public: true,
                    server_side_job: false,
                    body: BodyClass::None,
                    ..op
                }
            })
        }
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" => classify_method(method, path),
        _ => None,
    }
}

/// Every route in the table, for tests and for the `explain` command: (method, path template, rpc, read_only).
/// A route served under both `/api` and `/ajax-api` appears once per spelling.
pub fn all_routes() -> impl Iterator<Item = (&'static str, &'static str, &'static str, bool)> {
    TABLES.iter().flat_map(|table| table.iter()).flat_map(|r| {
        [r.primary, r.ajax].into_iter().flatten().map(move |path| (r.method, path, r.rpc, r.kind.read_only()))
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Table representation
// ---------------------------------------------------------------------------------------------------------------

/// Access class of a route; the flags of [`Operation`] derive from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Cannot change state; needs authentication.
    Read,
    /// Can change state.
    Write,
    /// Read-only and needs no authentication.
    Public,
    /// Can change state, and starts server-side work whose writes bypass the gate.
    Job,
    /// Read-only, but part of a server-side-job surface (the assistant's read endpoints).
    JobRead,
    /// Can change state; the body is file contents or protobuf, streamed to MLflow unread.
    Upload,
}

impl Kind {
    const fn read_only(self) -> bool {
        matches!(self, Kind::Read | Kind::Public | Kind::JobRead)
    }

    /// The body class of a route of this kind; GraphQL reads are their own class.
    const fn body(self, resource: Resource) -> BodyClass {
        match (self, resource) {
            (Kind::Public, _) => BodyClass::None,
            (Kind::Read | Kind::JobRead, Resource::GraphQl) => BodyClass::GraphQl,
            (Kind::Read | Kind::JobRead, _) => BodyClass::Small,
            (Kind::Write | Kind::Job, _) => BodyClass::Large,
            (Kind::Upload, _) => BodyClass::Stream,
        }
    }
}

/// One (method, path template) of a family.
#[derive(Debug)]
struct Route {
    method: &'static str,
    /// The template relative to the family prefix (for the root family, the whole path).
    template: &'static str,
    /// Whether `template` has parameters.
    templated: bool,
    /// Full template under the plain spelling (`/api/N.0/...`, or the root path), if served there.
    primary: Option<&'static str>,
    /// Full template under the `/ajax-api/N.0/...` spelling, if served there.
    ajax: Option<&'static str>,
    rpc: &'static str,
    kind: Kind,
    resource: Resource,
}

impl Route {
    const fn new(
        method: &'static str,
        template: &'static str,
        primary: Option<&'static str>,
        ajax: Option<&'static str>,
        rpc: &'static str,
        kind: Kind,
        resource: Resource,
    ) -> Route {
        Route { method, template, templated: has_param(template), primary, ajax, rpc, kind, resource }
    }

    fn serves(&self, spelling: Spelling) -> bool {
        match spelling {
            Spelling::Primary => self.primary.is_some(),
            Spelling::Ajax => self.ajax.is_some(),
        }
    }

    fn operation(&self, path_params: Vec<(&'static str, String)>) -> Operation {
        Operation {
            rpc: self.rpc,
            read_only: self.kind.read_only(),
            resource: self.resource,
            public: self.kind == Kind::Public,
            server_side_job: matches!(self.kind, Kind::Job | Kind::JobRead),
            path_params,
            body: self.kind.body(self.resource),
            workflow: false,
        }
    }
}

const fn has_param(template: &str) -> bool {
    let mut bytes = template.as_bytes();
    while let [first, rest @ ..] = bytes {
        if *first == b'<' {
            return true;
        }
        bytes = rest;
    }
    false
}

/// Which spelling of a family prefix a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    /// `/api/N.0/...`, or a path outside the prefixed families.
    Primary,
    /// `/ajax-api/N.0/...`.
    Ajax,
}

/// `/api/2.0/mlflow-artifacts` + template, served under `/api` and `/ajax-api`.
macro_rules! art {
    (both $m:literal $t:literal => $rpc:literal, $kind:ident, $res:ident) => {
        Route::new(
            $m,
            $t,
            Some(concat!("/api/2.0/mlflow-artifacts", $t)),
            Some(concat!("/ajax-api/2.0/mlflow-artifacts", $t)),
            $rpc,
            Kind::$kind,
            Resource::$res,
        )
    };
}

/// `/api/2.0/mlflow` + template: `both` spellings, or `ajax` only.
macro_rules! v2 {
    (both $m:literal $t:literal => $rpc:literal, $kind:ident, $res:ident) => {
        Route::new(
            $m,
            $t,
            Some(concat!("/api/2.0/mlflow", $t)),
            Some(concat!("/ajax-api/2.0/mlflow", $t)),
            $rpc,
            Kind::$kind,
            Resource::$res,
        )
    };
    (ajax $m:literal $t:literal => $rpc:literal, $kind:ident, $res:ident) => {
        Route::new($m, $t, None, Some(concat!("/ajax-api/2.0/mlflow", $t)), $rpc, Kind::$kind, Resource::$res)
    };
}

/// `/api/3.0/mlflow` + template: `both` spellings, or `ajax` only.
macro_rules! v3 {
    (both $m:literal $t:literal => $rpc:literal, $kind:ident, $res:ident) => {
        Route::new(
            $m,
            $t,
            Some(concat!("/api/3.0/mlflow", $t)),
            Some(concat!("/ajax-api/3.0/mlflow", $t)),
            $rpc,
            Kind::$kind,
            Resource::$res,
        )
    };
    (ajax $m:literal $t:literal => $rpc:literal, $kind:ident, $res:ident) => {
        Route::new($m, $t, None, Some(concat!("/ajax-api/3.0/mlflow", $t)), $rpc, Kind::$kind, Resource::$res)
    };
}

/// A whole path outside the prefixed families.
macro_rules! root {
    ($m:literal $t:literal => $rpc:literal, $kind:ident, $res:ident) => {
        Route::new($m, $t, Some($t), None, $rpc, Kind::$kind, Resource::$res)
    };
}

// ---------------------------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------------------------

/// All tables, for [`all_routes`].
const TABLES: [&[Route]; 4] = [ARTIFACTS, V2, V3, ROOT];

fn classify_method(method: &str, path: &str) -> Option<Operation> {
    let (table, spelling, rest) = split_family(path);
    lookup(table, spelling, method, rest)
}

/// Picks the family table for a path, and the rest of the path after the family prefix (starting with `/`).
fn split_family(path: &str) -> (&'static [Route], Spelling, &str) {
    let (spelling, after) = if let Some(after) = path.strip_prefix("/api/") {
        (Spelling::Primary, after)
    } else if let Some(after) = path.strip_prefix("/ajax-api/") {
        (Spelling::Ajax, after)
    } else {
        return (ROOT, Spelling::Primary, path);
    };
    // `2.0/mlflow-artifacts` before `2.0/mlflow`, which is its prefix.
    let family = [("2.0/mlflow-artifacts", ARTIFACTS), ("2.0/mlflow", V2), ("3.0/mlflow", V3)]
        .into_iter()
        .find_map(|(prefix, table)| after.strip_prefix(prefix).map(|rest| (table, rest)));
    match family {
        Some((table, rest)) if rest.starts_with('/') => (table, spelling, rest),
        // `/ajax-api/3.0/jobs/...`, `/api/2.0mlflow/...` and unknown prefixes are whole paths.
        _ => (ROOT, Spelling::Primary, path),
    }
}

/// Finds the route for `method` and the path `rest` in one family: a route without parameters first, then the
/// templates in declaration order.
fn lookup(table: &'static [Route], spelling: Spelling, method: &str, rest: &str) -> Option<Operation> {
    let candidates = || table.iter().filter(move |r| r.method == method && r.serves(spelling));
    if let Some(route) = candidates().find(|r| !r.templated && r.template == rest) {
        return Some(route.operation(Vec::new()));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    candidates()
        // The text before the first parameter is literal: a cheap filter before matching segments.
        .filter(|r| r.templated && r.template.split('<').next().is_some_and(|lit| rest.starts_with(lit)))
        .find_map(|r| match_template(r.template, &segments).map(|params| r.operation(params)))
}

/// The most segments a template may have (checked by a test).
const MAX_TEMPLATE_SEGMENTS: usize = 16;

/// One segment of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// A literal segment.
    Literal(&'static str),
    /// `prefix<name>suffix`: one non-empty segment with that prefix and suffix, and something between them.
    One { name: &'static str, prefix: &'static str, suffix: &'static str },
    /// `<path:name>`: one or more segments.
    Rest(&'static str),
}

impl Token {
    fn parse(segment: &'static str) -> Token {
        let Some((prefix, after)) = segment.split_once('<') else {
            return Token::Literal(segment);
        };
        let Some((inner, suffix)) = after.split_once('>') else {
            return Token::Literal(segment);
        };
        match inner.strip_prefix("path:") {
            Some(name) => Token::Rest(name),
            None => Token::One { name: inner, prefix, suffix },
        }
    }

    /// Whether the token can stand for `segment` (for `Rest`, any one non-empty segment).
    fn accepts(self, segment: &str) -> bool {
        match self {
            Token::Literal(literal) => literal == segment,
            Token::One { prefix, suffix, .. } => one_value(prefix, suffix, segment).is_some(),
            Token::Rest(_) => !segment.is_empty(),
        }
    }
}

/// The value of a `prefix<name>suffix` segment, if `segment` has that shape.
fn one_value<'a>(prefix: &str, suffix: &str, segment: &'a str) -> Option<&'a str> {
    let value = segment.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (!value.is_empty()).then_some(value)
}

/// Matches path segments against a template; returns the captured parameters in template order.
///
/// Templates are cut into blocks of fixed-width tokens separated by `Rest` tokens: `B0 R1 B1 ... Rk Bk`. `B0` is
/// matched at the start and `Bk` at the end; each inner block is then placed at the rightmost position that
/// leaves at least one segment to the `Rest` on its right, going from right to left. That placement is the
/// componentwise-largest feasible one, which is what a backtracking regex with greedy `.*` groups picks (the
/// leftmost group longest first), and it takes linear time whatever the path.
fn match_template(template: &'static str, segments: &[&str]) -> Option<Vec<(&'static str, String)>> {
    let mut tokens = [Token::Literal(""); MAX_TEMPLATE_SEGMENTS];
    let mut count = 0;
    for part in template.split('/') {
        *tokens.get_mut(count)? = Token::parse(part);
        count += 1;
    }
    let tokens = tokens.get(..count)?;
    let n = segments.len();
    // Empty segments only come from a trailing `/`; no template parameter takes them.
    if segments.iter().skip(1).any(|s| s.is_empty()) {
        return None;
    }
    // start[i]: the index of the first path segment token i covers.
    let mut start = [0usize; MAX_TEMPLATE_SEGMENTS];
    let rests: Vec<usize> = (0..count).filter(|&i| matches!(tokens.get(i), Some(Token::Rest(_)))).collect();
    match (rests.first(), rests.last()) {
        (None, _) | (_, None) => {
            if n != count {
                return None;
            }
            for (i, slot) in start.iter_mut().enumerate().take(count) {
                *slot = i;
            }
        }
        (Some(&first), Some(&last)) => {
            let tail = count - last - 1;
            if n < first + tail + rests.len() {
                return None;
            }
            for (i, slot) in start.iter_mut().enumerate().take(first) {
                *slot = i;
            }
            for j in 0..tail {
                *start.get_mut(last + 1 + j)? = n - tail + j;
            }
            // `limit`: where the segments covered by the current Rest end.
            let mut limit = n - tail;
            let mut index = rests.len() - 1;
            while index > 0 {
                let rest = *rests.get(index)?;
                let previous = *rests.get(index - 1)?;
                let block = tokens.get(previous + 1..rest)?;
                let width = block.len();
                // Rightmost p with the block at p..p+width and at least one segment left for this Rest.
                let highest = limit.checked_sub(width + 1)?;
                let p = (first + 1..=highest).rev().find(|&p| {
                    block.iter().enumerate().all(|(k, t)| segments.get(p + k).is_some_and(|s| t.accepts(s)))
                })?;
                for k in 0..width {
                    *start.get_mut(previous + 1 + k)? = p + k;
                }
                *start.get_mut(rest)? = p + width;
                limit = p;
                index -= 1;
            }
            // The first Rest needs at least one segment before the next block.
            if first >= limit {
                return None;
            }
            *start.get_mut(first)? = first;
        }
    }
    let mut params = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let from = *start.get(i)?;
        match *token {
            Token::Literal(literal) => {
                if *segments.get(from)? != literal {
                    return None;
                }
            }
            Token::One { name, prefix, suffix } => {
                params.push((name, one_value(prefix, suffix, segments.get(from)?)?.to_string()));
            }
            Token::Rest(name) => {
                let to = if i + 1 < count { *start.get(i + 1)? } else { n };
                let covered = segments.get(from..to)?;
                if covered.is_empty() {
                    return None;
                }
                params.push((name, covered.join("/")));
            }
        }
    }
    Some(params)
}

// ---------------------------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------------------------

/// `/api|ajax-api/2.0/mlflow-artifacts/...`: the proxied artifact store (`MlflowArtifactsService`). GET and PUT on
/// `artifacts/<path>` are served by the FastAPI `artifact_router`, the rest by Flask.
const ARTIFACTS: &[Route] = &[
    art!(both "GET" "/artifacts" => "ListArtifacts", Read, Artifact),
    art!(both "GET" "/artifacts/<path:artifact_path>" => "DownloadArtifact", Read, Artifact),
    art!(both "PUT" "/artifacts/<path:artifact_path>" => "UploadArtifact", Upload, Artifact),
    art!(both "DELETE" "/artifacts/<path:artifact_path>" => "DeleteArtifact", Write, Artifact),
    art!(both "POST" "/mpu/abort/<path:artifact_path>" => "AbortMultipartUpload", Write, Artifact),
    art!(both "POST" "/mpu/complete/<path:artifact_path>" => "CompleteMultipartUpload", Write, Artifact),
    art!(both "POST" "/mpu/create/<path:artifact_path>" => "CreateMultipartUpload", Write, Artifact),
    art!(both "GET" "/presigned/<path:artifact_path>" => "GetPresignedDownloadUrl", Read, Artifact),
];

/// `/api|ajax-api/2.0/mlflow/...`: tracking, model registry, webhooks, traces v2, logged models (Flask).
const V2: &[Route] = &[
    // Experiments
    v2!(both "POST" "/experiments/create" => "CreateExperiment", Write, Experiment),
    v2!(both "POST" "/experiments/delete" => "DeleteExperiment", Write, Experiment),
    v2!(both "POST" "/experiments/delete-experiment-tag" => "DeleteExperimentTag", Write, Experiment),
    v2!(both "GET" "/experiments/get" => "GetExperiment", Read, Experiment),
    v2!(both "GET" "/experiments/get-by-name" => "GetExperimentByName", Read, Experiment),
    v2!(both "POST" "/experiments/restore" => "RestoreExperiment", Write, Experiment),
    v2!(both "GET" "/experiments/search" => "SearchExperiments", Read, Experiment),
    v2!(both "POST" "/experiments/search" => "SearchExperiments", Read, Experiment),
    v2!(ajax "POST" "/experiments/search-datasets" => "SearchDatasets", Read, Dataset),
    v2!(both "POST" "/experiments/set-experiment-tag" => "SetExperimentTag", Write, Experiment),
    v2!(both "POST" "/experiments/update" => "UpdateExperiment", Write, Experiment),
    // Runs
    v2!(both "POST" "/runs/create" => "CreateRun", Write, Run),
    v2!(ajax "POST" "/runs/create-promptlab-run" => "CreatePromptlabRun", Write, Run),
    v2!(both "POST" "/runs/delete" => "DeleteRun", Write, Run),
    v2!(both "POST" "/runs/delete-tag" => "DeleteTag", Write, Run),
    v2!(both "GET" "/runs/get" => "GetRun", Read, Run),
    v2!(both "POST" "/runs/log-batch" => "LogBatch", Write, Run),
    v2!(both "POST" "/runs/log-inputs" => "LogInputs", Write, Run),
    v2!(both "POST" "/runs/log-metric" => "LogMetric", Write, Run),
    v2!(both "POST" "/runs/log-model" => "LogModel", Write, Run),
    v2!(both "POST" "/runs/log-parameter" => "LogParam", Write, Run),
    v2!(both "POST" "/runs/outputs" => "LogOutputs", Write, Run),
    v2!(both "POST" "/runs/restore" => "RestoreRun", Write, Run),
    v2!(both "POST" "/runs/search" => "SearchRuns", Read, Run),
    v2!(both "POST" "/runs/set-tag" => "SetTag", Write, Run),
    v2!(both "POST" "/runs/update" => "UpdateRun", Write, Run),
    // Metrics
    v2!(both "GET" "/metrics/get-history" => "GetMetricHistory", Read, Metric),
    v2!(ajax "GET" "/metrics/get-history-bulk" => "GetMetricHistoryBulk", Read, Metric),
    v2!(both "GET" "/metrics/get-history-bulk-interval" => "GetMetricHistoryBulkInterval", Read, Metric),
    // Run artifacts
    v2!(both "GET" "/artifacts/list" => "ListArtifacts", Read, Artifact),
    v2!(both "POST" "/artifacts/presigned-download-url" => "CreatePresignedDownloadUrl", Read, Artifact),
    v2!(both "POST" "/artifacts/presigned-upload-url" => "CreatePresignedUploadUrl", Write, Artifact),
    // `run_uuid`/`run_id` and `path` come from the query string; the raw body is the file.
    v2!(ajax "POST" "/upload-artifact" => "UploadRunArtifact", Upload, Artifact),
    // Logged models
    v2!(both "POST" "/logged-models" => "CreateLoggedModel", Write, LoggedModel),
    v2!(both "GET" "/logged-models/<model_id>" => "GetLoggedModel", Read, LoggedModel),
    v2!(both "PATCH" "/logged-models/<model_id>" => "FinalizeLoggedModel", Write, LoggedModel),
    v2!(both "DELETE" "/logged-models/<model_id>" => "DeleteLoggedModel", Write, LoggedModel),
    v2!(both "GET" "/logged-models/<model_id>/artifacts/directories" => "ListLoggedModelArtifacts", Read, Artifact),
    v2!(ajax "GET" "/logged-models/<model_id>/artifacts/files" => "GetLoggedModelArtifact", Read, Artifact),
    v2!(both "POST" "/logged-models/<model_id>/params" => "LogLoggedModelParams", Write, LoggedModel),
    v2!(both "PATCH" "/logged-models/<model_id>/tags" => "SetLoggedModelTags", Write, LoggedModel),
    v2!(both "DELETE" "/logged-models/<model_id>/tags/<tag_key>" => "DeleteLoggedModelTag", Write, LoggedModel),
    v2!(both "POST" "/logged-models/search" => "SearchLoggedModels", Read, LoggedModel),
    // Traces (v2)
    v2!(both "GET" "/get-online-trace-details" => "GetOnlineTraceDetails", Read, Trace),
    v2!(ajax "GET" "/get-trace-artifact" => "GetTraceArtifact", Read, Trace),
    v2!(both "GET" "/traces" => "SearchTraces", Read, Trace),
    v2!(both "POST" "/traces" => "StartTrace", Write, Trace),
    v2!(both "PATCH" "/traces/<request_id>" => "EndTrace", Write, Trace),
    v2!(both "GET" "/traces/<request_id>/info" => "GetTraceInfo", Read, Trace),
    v2!(both "PATCH" "/traces/<request_id>/tags" => "SetTraceTag", Write, Trace),
    v2!(both "DELETE" "/traces/<request_id>/tags" => "DeleteTraceTag", Write, Trace),
    v2!(both "POST" "/traces/delete-traces" => "DeleteTraces", Write, Trace),
    v2!(both "POST" "/traces/link-prompts" => "LinkPromptsToTrace", Write, Trace),
    v2!(both "POST" "/traces/link-to-run" => "LinkTracesToRun", Write, Trace),
    v2!(both "GET" "/unified-traces" => "SearchUnifiedTraceHandler", Read, Trace),
    // MLflow 2.22 declares these four v3-era RPCs under 2.0 too (its protos name them so) and answers each with
    // `_not_implemented`, an empty 404; MLflow 2.10 and 3.x do not serve these paths at all. Classified like their
    // 3.0 spellings, so the policy decides as it would there and MLflow answers. The create route's path is the
    // proto's `{assessment.trace_id}` taken literally (Werkzeug converts only `<...>`), so it has no parameter.
    v2!(both "GET" "/traces/<trace_id>" => "GetTraceInfoV3", Read, Trace),
    v2!(both "POST" "/traces/{assessment.trace_id}/assessments" => "CreateAssessment", Write, Assessment),
    v2!(both "PATCH" "/traces/<trace_id>/assessments/<assessment_id>" => "UpdateAssessment", Write, Assessment),
    v2!(both "DELETE" "/traces/<trace_id>/assessments/<assessment_id>" => "DeleteAssessment", Write, Assessment),
    // Model registry: registered models
    v2!(both "GET" "/registered-models/alias" => "GetModelVersionByAlias", Read, ModelVersion),
    v2!(both "POST" "/registered-models/alias" => "SetRegisteredModelAlias", Write, ModelVersion),
    v2!(both "DELETE" "/registered-models/alias" => "DeleteRegisteredModelAlias", Write, ModelVersion),
    v2!(both "POST" "/registered-models/create" => "CreateRegisteredModel", Write, RegisteredModel),
    v2!(both "DELETE" "/registered-models/delete" => "DeleteRegisteredModel", Write, RegisteredModel),
    v2!(both "DELETE" "/registered-models/delete-tag" => "DeleteRegisteredModelTag", Write, RegisteredModel),
    v2!(both "GET" "/registered-models/get" => "GetRegisteredModel", Read, RegisteredModel),
    v2!(both "GET" "/registered-models/get-latest-versions" => "GetLatestVersions", Read, ModelVersion),
    v2!(both "POST" "/registered-models/get-latest-versions" => "GetLatestVersions", Read, ModelVersion),
    v2!(both "POST" "/registered-models/rename" => "RenameRegisteredModel", Write, RegisteredModel),
    v2!(both "GET" "/registered-models/search" => "SearchRegisteredModels", Read, RegisteredModel),
    v2!(both "POST" "/registered-models/set-tag" => "SetRegisteredModelTag", Write, RegisteredModel),
    v2!(both "PATCH" "/registered-models/update" => "UpdateRegisteredModel", Write, RegisteredModel),
    // Model registry: model versions
    v2!(both "POST" "/model-versions/create" => "CreateModelVersion", Write, ModelVersion),
    v2!(both "DELETE" "/model-versions/delete" => "DeleteModelVersion", Write, ModelVersion),
    v2!(both "DELETE" "/model-versions/delete-tag" => "DeleteModelVersionTag", Write, ModelVersion),
    v2!(both "GET" "/model-versions/get" => "GetModelVersion", Read, ModelVersion),
    v2!(both "GET" "/model-versions/get-download-uri" => "GetModelVersionDownloadUri", Read, ModelVersion),
    v2!(both "GET" "/model-versions/search" => "SearchModelVersions", Read, ModelVersion),
    v2!(both "POST" "/model-versions/set-tag" => "SetModelVersionTag", Write, ModelVersion),
    v2!(both "POST" "/model-versions/transition-stage" => "TransitionModelVersionStage", Write, ModelVersion),
    v2!(both "PATCH" "/model-versions/update" => "UpdateModelVersion", Write, ModelVersion),
    // Webhooks
    v2!(both "GET" "/webhooks" => "ListWebhooks", Read, Webhook),
    v2!(both "POST" "/webhooks" => "CreateWebhook", Write, Webhook),
    v2!(both "GET" "/webhooks/<webhook_id>" => "GetWebhook", Read, Webhook),
    v2!(both "PATCH" "/webhooks/<webhook_id>" => "UpdateWebhook", Write, Webhook),
    v2!(both "DELETE" "/webhooks/<webhook_id>" => "DeleteWebhook", Write, Webhook),
    v2!(both "POST" "/webhooks/<webhook_id>/test" => "TestWebhook", Write, Webhook),
    // Gateway proxy (UI)
    // GET only lists endpoints (`gateway_path` must be `api/2.0/endpoints`); POST invokes one.
    v2!(ajax "GET" "/gateway-proxy" => "GatewayProxy", Read, Gateway),
    v2!(ajax "POST" "/gateway-proxy" => "GatewayProxy", Write, Gateway),
];

/// `/api|ajax-api/3.0/mlflow/...`: RPCs since 3.0 and the FastAPI MCP, skill and assistant routers.
const V3: &[Route] = &[
    // Traces (v3) and assessments
    v3!(ajax "GET" "/get-trace-artifact" => "GetTraceArtifact", Read, Trace),
    v3!(both "POST" "/traces" => "StartTraceV3", Write, Trace),
    v3!(both "GET" "/traces/<trace_id>" => "GetTraceInfoV3", Read, Trace),
    v3!(both "POST" "/traces/<trace_id>/assessments" => "CreateAssessment", Write, Assessment),
    v3!(both "GET" "/traces/<trace_id>/assessments/<assessment_id>" => "GetAssessment", Read, Assessment),
    v3!(both "PATCH" "/traces/<trace_id>/assessments/<assessment_id>" => "UpdateAssessment", Write, Assessment),
    v3!(both "DELETE" "/traces/<trace_id>/assessments/<assessment_id>" => "DeleteAssessment", Write, Assessment),
    v3!(both "PATCH" "/traces/<trace_id>/tags" => "SetTraceTagV3", Write, Trace),
    v3!(both "DELETE" "/traces/<trace_id>/tags" => "DeleteTraceTagV3", Write, Trace),
    v3!(both "GET" "/traces/batchGet" => "BatchGetTraces", Read, Trace),
    v3!(both "POST" "/traces/batchGetInfos" => "BatchGetTraceInfos", Read, Trace),
    v3!(both "POST" "/traces/calculate-filter-correlation" => "CalculateTraceFilterCorrelation", Read, Trace),
    v3!(both "POST" "/traces/delete-traces" => "DeleteTracesV3", Write, Trace),
    v3!(both "GET" "/traces/get" => "GetTrace", Read, Trace),
    v3!(both "POST" "/traces/metrics" => "QueryTraceMetrics", Read, Trace),
    v3!(both "POST" "/traces/search" => "SearchTracesV3", Read, Trace),
    // Workspaces
    v3!(both "GET" "/workspaces" => "ListWorkspaces", Read, Workspace),
    v3!(both "POST" "/workspaces" => "CreateWorkspace", Write, Workspace),
    v3!(both "GET" "/workspaces/<workspace_name>" => "GetWorkspace", Read, Workspace),
    v3!(both "PATCH" "/workspaces/<workspace_name>" => "UpdateWorkspace", Write, Workspace),
    v3!(both "DELETE" "/workspaces/<workspace_name>" => "DeleteWorkspace", Write, Workspace),
    // Issues
    v3!(both "POST" "/issues" => "CreateIssue", Write, Issue),
    v3!(both "GET" "/issues/<issue_id>" => "GetIssue", Read, Issue),
    v3!(both "PATCH" "/issues/<issue_id>" => "UpdateIssue", Write, Issue),
    v3!(ajax "POST" "/issues/invoke" => "InvokeIssueDetection", Job, Issue),
    v3!(ajax "POST" "/issues/schedule/state" => "SyncIssueDetectionScheduleState", Job, Issue),
    v3!(both "POST" "/issues/search" => "SearchIssues", Read, Issue),
    // Label schemas
    v3!(both "POST" "/label-schemas/create" => "CreateLabelSchema", Write, LabelSchema),
    v3!(both "DELETE" "/label-schemas/delete" => "DeleteLabelSchema", Write, LabelSchema),
    v3!(both "GET" "/label-schemas/get" => "GetLabelSchema", Read, LabelSchema),
    v3!(both "GET" "/label-schemas/get-by-name" => "GetLabelSchemaByName", Read, LabelSchema),
    v3!(both "GET" "/label-schemas/list" => "ListLabelSchemas", Read, LabelSchema),
    v3!(both "PATCH" "/label-schemas/update" => "UpdateLabelSchema", Write, LabelSchema),
    // Evaluation datasets
    v3!(both "GET" "/datasets/<dataset_id>" => "GetDataset", Read, Dataset),
    v3!(both "DELETE" "/datasets/<dataset_id>" => "DeleteDataset", Write, Dataset),
    v3!(both "POST" "/datasets/<dataset_id>/add-experiments" => "AddDatasetToExperiments", Write, Dataset),
    v3!(both "GET" "/datasets/<dataset_id>/experiment-ids" => "GetDatasetExperimentIds", Read, Dataset),
    v3!(both "GET" "/datasets/<dataset_id>/records" => "GetDatasetRecords", Read, Dataset),
    v3!(both "POST" "/datasets/<dataset_id>/records" => "UpsertDatasetRecords", Write, Dataset),
    v3!(both "DELETE" "/datasets/<dataset_id>/records" => "DeleteDatasetRecords", Write, Dataset),
    v3!(both "POST" "/datasets/<dataset_id>/remove-experiments" => "RemoveDatasetFromExperiments", Write, Dataset),
    v3!(both "PATCH" "/datasets/<dataset_id>/tags" => "SetDatasetTags", Write, Dataset),
    v3!(both "DELETE" "/datasets/<dataset_id>/tags/<key>" => "DeleteDatasetTag", Write, Dataset),
    v3!(both "POST" "/datasets/create" => "CreateDataset", Write, Dataset),
    v3!(both "GET" "/datasets/search" => "SearchEvaluationDatasets", Read, Dataset),
    v3!(both "POST" "/datasets/search" => "SearchEvaluationDatasets", Read, Dataset),
    // Scorers, online scoring and evaluation
    v3!(ajax "POST" "/genai/evaluate/invoke" => "InvokeGenaiEvaluate", Job, Scorer),
    v3!(ajax "POST" "/scorer/invoke" => "InvokeScorer", Job, Scorer),
    v3!(both "DELETE" "/scorers/delete" => "DeleteScorer", Write, Scorer),
    v3!(both "GET" "/scorers/get" => "GetScorer", Read, Scorer),
    v3!(both "GET" "/scorers/list" => "ListScorers", Read, Scorer),
    // Enables the periodic online-scoring job, which runs scorers and writes assessments server-side.
    v3!(both "PUT" "/scorers/online-config" => "UpsertOnlineScoringConfig", Job, Scorer),
    v3!(both "GET" "/scorers/online-configs" => "GetOnlineScoringConfigs", Read, Scorer),
    v3!(both "POST" "/scorers/register" => "RegisterScorer", Write, Scorer),
    v3!(both "GET" "/scorers/versions" => "ListScorerVersions", Read, Scorer),
    // Gateway configuration
    v3!(both "POST" "/gateway/budgets/create" => "CreateBudgetPolicy", Write, Gateway),
    v3!(both "DELETE" "/gateway/budgets/delete" => "DeleteBudgetPolicy", Write, Gateway),
    v3!(both "GET" "/gateway/budgets/get" => "GetBudgetPolicy", Read, Gateway),
    v3!(both "GET" "/gateway/budgets/list" => "ListBudgetPolicies", Read, Gateway),
    v3!(both "POST" "/gateway/budgets/update" => "UpdateBudgetPolicy", Write, Gateway),
    v3!(both "GET" "/gateway/budgets/windows" => "ListBudgetWindows", Read, Gateway),
    v3!(both "POST" "/gateway/endpoints/bindings/create" => "CreateEndpointBinding", Write, Gateway),
    v3!(both "DELETE" "/gateway/endpoints/bindings/delete" => "DeleteEndpointBinding", Write, Gateway),
    v3!(both "GET" "/gateway/endpoints/bindings/list" => "ListEndpointBindings", Read, Gateway),
    v3!(both "POST" "/gateway/endpoints/create" => "CreateGatewayEndpoint", Write, Gateway),
    v3!(both "DELETE" "/gateway/endpoints/delete" => "DeleteGatewayEndpoint", Write, Gateway),
    v3!(both "DELETE" "/gateway/endpoints/delete-tag" => "DeleteGatewayEndpointTag", Write, Gateway),
    v3!(both "GET" "/gateway/endpoints/get" => "GetGatewayEndpoint", Read, Gateway),
    v3!(both "GET" "/gateway/endpoints/list" => "ListGatewayEndpoints", Read, Gateway),
    v3!(both "POST" "/gateway/endpoints/models/attach" => "AttachModelToEndpoint", Write, Gateway),
    v3!(both "POST" "/gateway/endpoints/models/detach" => "DetachModelFromEndpoint", Write, Gateway),
    v3!(both "POST" "/gateway/endpoints/set-tag" => "SetGatewayEndpointTag", Write, Gateway),
    v3!(both "POST" "/gateway/endpoints/update" => "UpdateGatewayEndpoint", Write, Gateway),
    v3!(both "POST" "/gateway/guardrails/add-to-endpoint" => "AddGuardrailToEndpoint", Write, Gateway),
    v3!(both "POST" "/gateway/guardrails/create" => "CreateGatewayGuardrail", Write, Gateway),
    v3!(both "DELETE" "/gateway/guardrails/delete" => "DeleteGatewayGuardrail", Write, Gateway),
    v3!(both "GET" "/gateway/guardrails/get" => "GetGatewayGuardrail", Read, Gateway),
    v3!(both "GET" "/gateway/guardrails/list" => "ListGatewayGuardrails", Read, Gateway),
    v3!(both "GET" "/gateway/guardrails/list-for-endpoint" => "ListEndpointGuardrailConfigs", Read, Gateway),
    v3!(both "DELETE" "/gateway/guardrails/remove-from-endpoint" => "RemoveGuardrailFromEndpoint", Write, Gateway),
    v3!(both "PATCH" "/gateway/guardrails/update-config" => "UpdateEndpointGuardrailConfig", Write, Gateway),
    v3!(both "POST" "/gateway/model-definitions/create" => "CreateGatewayModelDefinition", Write, Gateway),
    v3!(both "DELETE" "/gateway/model-definitions/delete" => "DeleteGatewayModelDefinition", Write, Gateway),
    v3!(both "GET" "/gateway/model-definitions/get" => "GetGatewayModelDefinition", Read, Gateway),
    v3!(both "GET" "/gateway/model-definitions/list" => "ListGatewayModelDefinitions", Read, Gateway),
    v3!(both "POST" "/gateway/model-definitions/update" => "UpdateGatewayModelDefinition", Write, Gateway),
    v3!(ajax "GET" "/gateway/provider-config" => "GetProviderConfig", Read, Gateway),
    v3!(ajax "GET" "/gateway/secrets/config" => "GetSecretsConfig", Read, Gateway),
    v3!(both "POST" "/gateway/secrets/create" => "CreateGatewaySecret", Write, Gateway),
    v3!(both "DELETE" "/gateway/secrets/delete" => "DeleteGatewaySecret", Write, Gateway),
    v3!(both "GET" "/gateway/secrets/get" => "GetGatewaySecretInfo", Read, Gateway),
    v3!(both "GET" "/gateway/secrets/list" => "ListGatewaySecretInfos", Read, Gateway),
    v3!(both "POST" "/gateway/secrets/update" => "UpdateGatewaySecret", Write, Gateway),
    v3!(ajax "GET" "/gateway/supported-models" => "ListSupportedModels", Read, Gateway),
    v3!(ajax "GET" "/gateway/supported-providers" => "ListSupportedProviders", Read, Gateway),
    // Prompt optimization
    v3!(both "POST" "/prompt-optimization/jobs" => "CreatePromptOptimizationJob", Job, PromptOptimization),
    v3!(both "GET" "/prompt-optimization/jobs/<job_id>" => "GetPromptOptimizationJob", Read, PromptOptimization),
    v3!(both "DELETE" "/prompt-optimization/jobs/<job_id>" => "DeletePromptOptimizationJob", Write, PromptOptimization),
    v3!(both "POST" "/prompt-optimization/jobs/<job_id>/cancel" => "CancelPromptOptimizationJob", Write, PromptOptimization),
    v3!(both "GET" "/prompt-optimization/jobs/search" => "SearchPromptOptimizationJobs", Read, PromptOptimization),
    v3!(both "POST" "/prompt-optimization/jobs/search" => "SearchPromptOptimizationJobs", Read, PromptOptimization),
    // Review queues
    v3!(both "POST" "/review-queues/create" => "CreateReviewQueue", Write, ReviewQueue),
    v3!(both "POST" "/review-queues/delete" => "DeleteReviewQueue", Write, ReviewQueue),
    v3!(both "GET" "/review-queues/get" => "GetReviewQueue", Read, ReviewQueue),
    v3!(both "GET" "/review-queues/get-by-name" => "GetReviewQueueByName", Read, ReviewQueue),
    v3!(both "POST" "/review-queues/get-or-create-user" => "GetOrCreateUserQueue", Write, ReviewQueue),
    v3!(both "POST" "/review-queues/items/add" => "AddItemsToReviewQueue", Write, ReviewQueue),
    v3!(both "GET" "/review-queues/items/list" => "ListReviewQueueItems", Read, ReviewQueue),
    v3!(both "POST" "/review-queues/items/remove" => "RemoveItemsFromReviewQueue", Write, ReviewQueue),
    v3!(both "POST" "/review-queues/items/set-status" => "SetReviewQueueItemStatus", Write, ReviewQueue),
    v3!(both "GET" "/review-queues/list" => "ListReviewQueues", Read, ReviewQueue),
    v3!(both "POST" "/review-queues/update" => "UpdateReviewQueue", Write, ReviewQueue),
    // Jobs (Flask views; the FastAPI job router is in ROOT)
    v3!(ajax "GET" "/jobs/<job_id>" => "GetJob", Read, Job),
    // The same cancel as the FastAPI `PATCH /ajax-api/3.0/jobs/cancel/<job_id>`.
    v3!(ajax "PATCH" "/jobs/cancel/<job_id>" => "CancelJob", Job, Job),
    // Demo data
    v3!(ajax "POST" "/demo/delete" => "DeleteDemo", Job, Demo),
    v3!(ajax "POST" "/demo/generate" => "GenerateDemo", Job, Demo),
    // Server info and UI telemetry
    v3!(both "GET" "/server-info" => "GetServerInfo", Public, Server),
    v3!(ajax "GET" "/ui-telemetry" => "GetUiTelemetry", Read, Ui),
    v3!(ajax "POST" "/ui-telemetry" => "PostUiTelemetry", Write, Ui),
    // Assistant (FastAPI, ajax only; declaration order). It runs agent tools, including Bash, on the server host.
    // The GET stream is what runs a turn, and the provider health check and model listing may run the provider's
    // CLI or call a user-supplied URL, so only the providers list and the config read are read-only.
    v3!(ajax "POST" "/assistant/message" => "AssistantSendMessage", Job, Assistant),
    v3!(ajax "GET" "/assistant/sessions/<session_id>/stream" => "AssistantStreamResponse", Job, Assistant),
    v3!(ajax "PATCH" "/assistant/sessions/<session_id>" => "AssistantPatchSession", Job, Assistant),
    v3!(ajax "POST" "/assistant/sessions/<session_id>/permission" => "AssistantResolvePermission", Job, Assistant),
    v3!(ajax "POST" "/assistant/sessions/<session_id>/tool-result" => "AssistantResolveClientToolResult", Job, Assistant),
    v3!(ajax "GET" "/assistant/providers/<provider>/health" => "AssistantProviderHealthCheck", Job, Assistant),
    v3!(ajax "GET" "/assistant/providers" => "AssistantGetProviders", JobRead, Assistant),
    v3!(ajax "GET" "/assistant/config" => "AssistantGetConfig", JobRead, Assistant),
    v3!(ajax "PUT" "/assistant/config" => "AssistantUpdateConfig", Job, Assistant),
    v3!(ajax "POST" "/assistant/skills/install" => "AssistantInstallSkills", Job, Assistant),
    v3!(ajax "GET" "/assistant/providers/<provider>/models" => "AssistantListProviderModels", Job, Assistant),
    // MCP server registry (FastAPI; declaration order matters: `<path:...>` parameters overlap)
    v3!(both "POST" "/mcp-servers" => "CreateMcpServer", Write, McpServer),
    v3!(both "GET" "/mcp-servers" => "SearchMcpServers", Read, McpServer),
    v3!(both "GET" "/mcp-servers/endpoints" => "SearchAllMcpAccessEndpoints", Read, McpServer),
    v3!(both "POST" "/mcp-servers/<path:name>/versions/<path:version>/tags" => "SetMcpServerVersionTag", Write, McpServer),
    v3!(both "DELETE" "/mcp-servers/<path:name>/versions/<path:version>/tags/<path:key>" => "DeleteMcpServerVersionTag", Write, McpServer),
    v3!(both "GET" "/mcp-servers/<path:name>/versions/<path:version>" => "GetMcpServerVersion", Read, McpServer),
    v3!(both "PATCH" "/mcp-servers/<path:name>/versions/<path:version>" => "UpdateMcpServerVersion", Write, McpServer),
    v3!(both "DELETE" "/mcp-servers/<path:name>/versions/<path:version>" => "DeleteMcpServerVersion", Write, McpServer),
    v3!(both "POST" "/mcp-servers/<path:name>/versions" => "CreateMcpServerVersion", Write, McpServer),
    v3!(both "GET" "/mcp-servers/<path:name>/versions" => "SearchMcpServerVersions", Read, McpServer),
    v3!(both "POST" "/mcp-servers/<path:name>/endpoints" => "CreateMcpAccessEndpoint", Write, McpServer),
    v3!(both "GET" "/mcp-servers/<path:name>/endpoints/<endpoint_id>" => "GetMcpAccessEndpoint", Read, McpServer),
    v3!(both "PATCH" "/mcp-servers/<path:name>/endpoints/<endpoint_id>" => "UpdateMcpAccessEndpoint", Write, McpServer),
    v3!(both "DELETE" "/mcp-servers/<path:name>/endpoints/<endpoint_id>" => "DeleteMcpAccessEndpoint", Write, McpServer),
    v3!(both "GET" "/mcp-servers/<path:name>/endpoints" => "SearchMcpServerAccessEndpoints", Read, McpServer),
    v3!(both "POST" "/mcp-servers/<path:name>/tags" => "SetMcpServerTag", Write, McpServer),
    v3!(both "DELETE" "/mcp-servers/<path:name>/tags/<path:key>" => "DeleteMcpServerTag", Write, McpServer),
    v3!(both "POST" "/mcp-servers/<path:name>/aliases" => "SetMcpServerAlias", Write, McpServer),
    v3!(both "GET" "/mcp-servers/<path:name>/aliases/<path:alias>" => "GetMcpServerVersionByAlias", Read, McpServer),
    v3!(both "DELETE" "/mcp-servers/<path:name>/aliases/<path:alias>" => "DeleteMcpServerAlias", Write, McpServer),
    v3!(both "GET" "/mcp-servers/<path:name>" => "GetMcpServer", Read, McpServer),
    v3!(both "PATCH" "/mcp-servers/<path:name>" => "UpdateMcpServer", Write, McpServer),
    v3!(both "DELETE" "/mcp-servers/<path:name>" => "DeleteMcpServer", Write, McpServer),
    // Skill registry (FastAPI, MLflow 3.18; declaration order matters)
    v3!(both "POST" "/skills" => "CreateSkill", Write, Skill),
    v3!(both "GET" "/skills" => "SearchSkills", Read, Skill),
    v3!(both "GET" "/skills/@<organization>/<name>" => "GetOrganizationSkill", Read, Skill),
    v3!(both "GET" "/skills/@<organization>/<name>/versions" => "SearchOrganizationSkillVersions", Read, Skill),
    v3!(both "GET" "/skills/<name>/versions" => "SearchSkillVersions", Read, Skill),
    v3!(both "POST" "/skills/@<organization>/<name>/tags" => "SetOrganizationSkillTag", Write, Skill),
    v3!(both "DELETE" "/skills/@<organization>/<name>/tags/<path:key>" => "DeleteOrganizationSkillTag", Write, Skill),
    v3!(both "POST" "/skills/@<organization>/<name>/versions/<version>/tags" => "SetOrganizationSkillVersionTag", Write, Skill),
    v3!(both "DELETE" "/skills/@<organization>/<name>/versions/<version>/tags/<path:key>" => "DeleteOrganizationSkillVersionTag", Write, Skill),
    v3!(both "POST" "/skills/<name>/tags" => "SetSkillTag", Write, Skill),
    v3!(both "DELETE" "/skills/<name>/tags/<path:key>" => "DeleteSkillTag", Write, Skill),
    v3!(both "POST" "/skills/<name>/versions/<version>/tags" => "SetSkillVersionTag", Write, Skill),
    v3!(both "DELETE" "/skills/<name>/versions/<version>/tags/<path:key>" => "DeleteSkillVersionTag", Write, Skill),
    v3!(both "PATCH" "/skills/<name>" => "UpdateSkill", Write, Skill),
    v3!(both "PATCH" "/skills/@<organization>/<name>" => "UpdateOrganizationSkill", Write, Skill),
    v3!(both "GET" "/skills/<name>" => "GetSkill", Read, Skill),
    v3!(both "POST" "/skills/<name>/versions" => "CreateSkillVersion", Write, Skill),
    v3!(both "POST" "/skills/@<organization>/<name>/versions" => "CreateOrganizationSkillVersion", Write, Skill),
    v3!(both "POST" "/skills/bulk-register" => "BulkRegisterSkills", Write, Skill),
    v3!(both "GET" "/skills/<name>/versions/<version>" => "GetSkillVersion", Read, Skill),
    v3!(both "GET" "/skills/@<organization>/<name>/versions/<version>" => "GetOrganizationSkillVersion", Read, Skill),
    v3!(both "GET" "/skills/<name>/aliases/<alias>" => "GetSkillVersionByAlias", Read, Skill),
    v3!(both "GET" "/skills/@<organization>/<name>/aliases/<alias>" => "GetOrganizationSkillVersionByAlias", Read, Skill),
    v3!(both "POST" "/skills/<name>/aliases" => "SetSkillAlias", Write, Skill),
    v3!(both "POST" "/skills/@<organization>/<name>/aliases" => "SetOrganizationSkillAlias", Write, Skill),
    v3!(both "DELETE" "/skills/<name>/aliases/<alias>" => "DeleteSkillAlias", Write, Skill),
    v3!(both "DELETE" "/skills/@<organization>/<name>/aliases/<alias>" => "DeleteOrganizationSkillAlias", Write, Skill),
    v3!(both "DELETE" "/skills/<name>/versions/<version>" => "DeleteSkillVersion", Write, Skill),
    v3!(both "DELETE" "/skills/@<organization>/<name>/versions/<version>" => "DeleteOrganizationSkillVersion", Write, Skill),
    v3!(both "DELETE" "/skills/<name>" => "DeleteSkill", Write, Skill),
    v3!(both "DELETE" "/skills/@<organization>/<name>" => "DeleteOrganizationSkill", Write, Skill),
    v3!(both "PATCH" "/skills/<name>/versions/<version>" => "UpdateSkillVersion", Write, Skill),
    v3!(both "PATCH" "/skills/@<organization>/<name>/versions/<version>" => "UpdateOrganizationSkillVersion", Write, Skill),
];

/// Whole paths outside the `/api|ajax-api/N.0/mlflow[-artifacts]/` families.
const ROOT: &[Route] = &[
    // Flask: UI, health, GraphQL, downloads, and the two malformed proto paths of `SearchDatasets` (no `/` after
    // `2.0`; MLflow routes them to `_not_implemented`, which answers 404). `/favicon.ico` is not served by MLflow
    // 3.17.2 (404) either, but browsers ask for it and it is listed as a public static file.
    root!("GET" "/" => "ServeUi", Public, Ui),
    root!("POST" "/ajax-api/2.0mlflow/experiments/search-datasets" => "SearchDatasets", Read, Dataset),
    root!("POST" "/api/2.0mlflow/experiments/search-datasets" => "SearchDatasets", Read, Dataset),
    root!("GET" "/build/<path:filename>" => "ServeStaticFile", Public, Ui),
    root!("GET" "/get-artifact" => "GetRunArtifact", Read, Artifact),
    root!("GET" "/graphql" => "GraphQL", Read, GraphQl),
    root!("POST" "/graphql" => "GraphQL", Read, GraphQl),
    root!("GET" "/health" => "Health", Public, Server),
    root!("GET" "/model-versions/get-artifact" => "GetModelVersionArtifact", Read, Artifact),
    root!("GET" "/static-files/<path:path>" => "ServeStaticFile", Public, Ui),
    root!("GET" "/version" => "Version", Public, Server),
    root!("GET" "/favicon.ico" => "ServeStaticFile", Public, Ui),
    // FastAPI: OTLP ingest, the job router and the AI gateway (declaration order)
    root!("POST" "/v1/traces" => "ExportTraces", Upload, Trace),
    root!("GET" "/ajax-api/3.0/jobs/<job_id>" => "GetJob", Read, Job),
    root!("POST" "/ajax-api/3.0/jobs/" => "SubmitJob", Job, Job),
    root!("PATCH" "/ajax-api/3.0/jobs/cancel/<job_id>" => "CancelJob", Job, Job),
    root!("POST" "/ajax-api/3.0/jobs/search" => "SearchJobs", Read, Job),
    // Invocations naming their endpoint in the body's `model` are read as JSON (the gate checks USE on that
    // endpoint, `mlflow::permission`); those naming it in the path stream their body unread.
    root!("POST" "/gateway/<endpoint_name>/mlflow/invocations" => "GatewayInvocations", Upload, Gateway),
    root!("POST" "/gateway/mlflow/v1/chat/completions" => "GatewayChatCompletions", Write, Gateway),
    root!("GET" "/gateway/mlflow/v1/models" => "GatewayListModels", Read, Gateway),
    root!("POST" "/gateway/openai/v1/chat/completions" => "GatewayOpenAiChatCompletions", Write, Gateway),
    root!("POST" "/gateway/openai/v1/embeddings" => "GatewayOpenAiEmbeddings", Write, Gateway),
    root!("POST" "/gateway/typesafe/v1/systemone" => "GatewayTypesafeSystemOne", Write, Gateway),
    root!("POST" "/gateway/openai/v1/responses" => "GatewayOpenAiResponses", Write, Gateway),
    root!("POST" "/gateway/openai/v1/responses/compact" => "GatewayOpenAiResponsesCompact", Write, Gateway),
    root!("POST" "/gateway/anthropic/v1/messages" => "GatewayAnthropicMessages", Write, Gateway),
    root!("POST" "/gateway/gemini/v1beta/models/<endpoint_name>:generateContent" => "GatewayGeminiGenerateContent", Upload, Gateway),
    root!("POST" "/gateway/gemini/v1beta/models/<endpoint_name>:streamGenerateContent" => "GatewayGeminiStreamGenerateContent", Upload, Gateway),
    root!("POST" "/gateway/proxy/<endpoint_name>/<path:path>" => "GatewayRawProxy", Upload, Gateway),
];

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
