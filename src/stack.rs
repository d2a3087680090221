//! The request's path through the gate, in order, and the one place that order is decided:
//! admission (`limits.rs`) -> canonicalise and classify (`pipeline::classify`: canonical target, request context,
//! the route from the table; public routes are forwarded here, without a body) -> authenticate -> read the body the
//! policy needs, by the route's body class -> parameters (`pipeline::classify`) -> enrich (`pipeline::enrich`) ->
//! decide (`policy`) -> dispatch (forward, or the `approvals` workflow) -> after-effects (`pipeline::effects`).
//! Each phase is a function handing typed results to the next; none re-parses. `explain` runs the same phase
//! functions without serving. Any failure ends the request with MLflow's error JSON (see `error.rs`), and one
//! structured log line and audit record (`Trail`) record every request (never a token or a body).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body::Body;

use crate::approvals;
use crate::audit::{AuditLog, Entry as AuditEntry};
use crate::auth::{AuthError, Authenticator, Principal};
use crate::body::{self, BoxError, CollectError, GateBody};
use crate::body::{BodyIdle, Guarded};
use crate::browser::{self, Browser, Session};
use crate::config::Config;
use crate::error::{GateError, DENIED};
use crate::limits::{Capacity, HEAVY_BODY_BYTES};
use crate::metrics::Metrics;
use crate::mlflow::canon::Target;
use crate::mlflow::events;
use crate::mlflow::permission::{self, Level, Need};
use crate::mlflow::routes::{rpc, BodyClass, Operation};
use crate::mlflow::stamps;
use crate::pipeline::classify;
use crate::pipeline::effects::{self, now_ms, WORKSPACE_FIELD};
use crate::pipeline::enrich::Enricher;
use crate::pipeline::grants::GrantsApi;
use crate::pipeline::results;
use crate::policy::{input, Policy};
use crate::proxy::{ClientConn, OutBody, Outgoing, RequestContext, Upstream};
use crate::reviews;
use crate::webhooks::{Event, Webhooks};

/// The largest page of search results the gate reads to filter (MLflow pages are capped by `max_results`).
const MAX_FILTERED_PAGE_BYTES: usize = 64 * 1024 * 1024;

/// Response header carrying the request id (also quoted in every error message).
pub const REQUEST_ID_HEADER: &str = crate::proxy::context::REQUEST_ID_HEADER;

/// Everything a request needs, shared by all connections.
pub struct Gate {
    config: Arc<Config>,
    auth: Authenticator,
    policy: Policy,
    upstream: Upstream,
    enricher: Enricher,
    grants: GrantsApi,
    metrics: Metrics,
    audit: Option<AuditLog>,
    webhooks: Option<Arc<Webhooks>>,
    capacity: Capacity,
    /// Browser sign-in (`[browser]`), if configured.
    browser: Option<Browser>,
    /// The fleet's shared database (`[fleet] database_url_env`): promotion locks.
    fleet_db: Option<Arc<crate::fleetdb::FleetDb>>,
}

/// How a request ended, as the log line, the metrics (`decision` label) and the audit log name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Outcome {
    /// Ended before it was classified (admission, canonical target, workspace): `-`.
    #[default]
    Unclassified,
    /// A public route, forwarded without authentication: `public` (not audited).
    Public,
    /// The policy allowed it: `allow` (even if MLflow's answer then failed).
    Allowed,
    /// Refused or failed: the error's kind (`denied`, `unauthenticated`, `bad_request`, ...; `GateError::kind`).
    Failed(&'static str),
}

impl Outcome {
    /// The label on the wire (metrics, log, audit `decision`).
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Unclassified => "-",
            Outcome::Public => "public",
            Outcome::Allowed => "allow",
            Outcome::Failed(kind) => kind,
        }
    }

    /// Whether the audit log records it: every request that reached a decision or was refused after
    /// classification.
    fn audited(self) -> bool {
        !matches!(self, Outcome::Unclassified | Outcome::Public)
    }
}

/// What the log line of a request records.
#[derive(Default)]
struct Trail {
    rpc: &'static str,
    resource_type: &'static str,
    sub: Option<String>,
    groups: Vec<String>,
    target: serde_json::Value,
    upstream_status: Option<u16>,
    outcome: Outcome,
    reasons: Vec<String>,
    break_glass: bool,
    /// An admin changed the files of a registered model version (artifacts.rego).
    frozen_override: bool,
    would_deny: Vec<String>,
    workspace: Option<String>,
    /// A refreshed session cookie to send back (browser sign-in).
    set_cookie: Option<HeaderValue>,
}

/// Who a request is from, or (for a browser's page navigation without credentials) the way to sign in.
enum Caller {
    Known(Arc<Principal>),
    SignIn(Response<GateBody>),
}

impl Gate {
    /// Assembles a gate from its parts.
    pub fn new(config: Arc<Config>, auth: Authenticator, policy: Policy, upstream: Upstream) -> Gate {
        Gate {
            capacity: Capacity::new(&config.server.load),
            config,
            auth,
            policy,
            upstream,
            enricher: Enricher::new(),
            grants: GrantsApi::default(),
            metrics: Metrics::default(),
            audit: None,
            webhooks: None,
            browser: None,
            fleet_db: None,
        }
    }

    /// Signs browsers in (`[browser]`) and accepts their session cookie.
    pub fn with_browser(mut self, browser: Browser) -> Gate {
        self.browser = Some(browser);
        self
    }

    /// Serialises promotions of a model across the fleet with this database's advisory locks.
    pub fn with_fleet_db(mut self, db: Arc<crate::fleetdb::FleetDb>) -> Gate {
        self.fleet_db = Some(db);
        self.enricher.permission_links.fresh_writes();
        self
    }

    /// Records every decision to this audit log.
    pub fn with_audit(mut self, audit: AuditLog) -> Gate {
        self.audit = Some(audit);
        self
    }

    /// Sends registry events to these webhooks.
    pub fn with_webhooks(mut self, webhooks: Arc<Webhooks>) -> Gate {
        self.webhooks = Some(webhooks);
        self
    }

    /// The webhooks, if any (drained at shutdown).
    pub fn webhooks(&self) -> Option<&Arc<Webhooks>> {
        self.webhooks.as_ref()
    }

    /// This replica's id in a fleet (`[fleet] replica_id`).
    pub fn replica_id(&self) -> &str {
        &self.config.fleet.replica_id
    }

    /// The audit log, if any (flushed at shutdown).
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// The authenticator (readiness and metrics read it).
    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// The upstream (readiness probes it).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The request metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Handles one request end to end. Never fails: errors become MLflow error responses.
    pub async fn handle<B>(&self, req: Request<B>, conn: ClientConn) -> Response<GateBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let id = request_id();
        // Every line logged while the request is served carries its id (`logline::in_request`).
        let marked = id.clone();
        // Boxed: the request's future is several KiB, and every layer that takes it by value copies all of it.
        crate::logline::in_request(
            &marked,
            Box::pin(async move {
                let started = Instant::now();
                let method = req.method().clone();
                let raw_path = req.uri().path().to_owned();
                let mut trail = Trail { rpc: "-", ..Trail::default() };
                // Admission first: a request over `max_concurrent_requests` costs nothing more than its 503.
                let (outcome, slot) = match self.capacity.admit() {
                    Ok(slot) => (self.process(req, &conn, &id, &mut trail).await, Some(slot)),
                    Err(e) => (Err(e), None),
                };
                let mut resp = match outcome {
                    Ok(resp) => resp,
                    Err(e) => {
                        if trail.outcome != Outcome::Allowed {
                            trail.outcome = Outcome::Failed(e.kind());
                        }
                        e.into_response(&id)
                    }
                };
                if let Ok(v) = HeaderValue::from_str(&id) {
                    resp.headers_mut().insert(REQUEST_ID_HEADER, v);
                }
                if let Some(cookie) = trail.set_cookie.take() {
                    resp.headers_mut().append(header::SET_COOKIE, cookie);
                }
                tracing::info!(
                    method = %method,
                    path = %raw_path,
                    rpc = trail.rpc,
                    sub = trail.sub.as_deref().unwrap_or("-"),
                    workspace = trail.workspace.as_deref().unwrap_or("-"),
                    decision = trail.outcome.as_str(),
                    reasons = %trail.reasons.join("; "),
                    break_glass = trail.break_glass,
                    frozen_override = trail.frozen_override,
                    would_deny = %trail.would_deny.join("; "),
                    status = resp.status().as_u16(),
                    latency_us = started.elapsed().as_micros() as u64,
                    "request"
                );
                self.account(&trail, &method, &raw_path, &id, resp.status().as_u16(), started.elapsed());
                // The slot is held until the response has been sent.
                match slot {
                    Some(slot) => resp.map(|b| body::stream(Guarded::new(b, slot))),
                    None => resp,
                }
            }),
        )
        .await
    }

    /// The request's phases, in order: canonicalise and classify -> (a public route is forwarded here) ->
    /// authenticate -> read the body -> read the parameters -> enrich -> decide -> dispatch (the workflow, or
    /// forward to MLflow) -> after-effects of a permitted mutation.
    async fn process<B>(
        &self,
        req: Request<B>,
        conn: &ClientConn,
        id: &str,
        trail: &mut Trail,
    ) -> Result<Response<GateBody>, GateError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let head = classify::head(req.method(), req.uri(), req.version(), req.headers(), id)?;
        trail.classified(&head);
        if reviews::owns(&head.target.path) {
            let principal = match self.caller(&req, &head, conn, trail).await? {
                Caller::Known(p) => p,
                Caller::SignIn(resp) => return Ok(resp),
            };
            trail.authenticated(&principal);
            trail.outcome = Outcome::Public;
            let pages = reviews::Reviews { upstream: &self.upstream, policy: &self.policy, enricher: &self.enricher };
            return Box::pin(pages.serve(req.method(), &head.target, &head.context, &principal)).await;
        }
        if let Some(b) = self.browser.as_ref().filter(|_| Browser::owns(&head.target.path)) {
            trail.outcome = Outcome::Public;
            return Box::pin(b.serve(req.method(), &head.target, req.headers(), &self.auth, browser::now_secs())).await;
        }
        if head.public().is_some() {
            if self.browser.is_some() {
                if let Some(sign_in) = Box::pin(self.sign_in_first(&req, &head)).await? {
                    return Ok(sign_in);
                }
            }
            trail.outcome = Outcome::Public;
            return self.serve_public(req, &head, conn).await;
        }
        let principal = match self.caller(&req, &head, conn, trail).await? {
            Caller::Known(p) => p,
            Caller::SignIn(resp) => return Ok(resp),
        };
        trail.authenticated(&principal);
        let op = head.operation()?;
        trail.operation(&op);
        let (parts, body) = req.into_parts();
        let read = self.read_body(&head, &op, &parts.headers, body).await?;
        let fields = head.parameters(&op, read.json.as_ref())?;
        let resource = self.enrich(&head, &op, fields).await?;
        // Only the audit record and the denial webhook read it (a copy of the target per request otherwise).
        if self.audit.is_some() || self.webhooks.is_some() {
            trail.target = audit_target(&resource, &head.context);
        }
        self.capacity
            .run_heavy(read.heavy, || self.decide(&principal, &op, &head, read.json.as_ref(), &resource, trail))
            .await??;
        let permitted = Permitted {
            head: &head,
            op: &op,
            principal: &principal,
            resource: &resource,
            break_glass: trail.break_glass,
        };
        // A search's body, for the second decision on its results (searches are small reads).
        let body_for_filter = read.json.as_ref().filter(|_| permission::need(&op) == Need::Filter).cloned();
        if permission::grant_route(op.rpc).is_some() {
            return Box::pin(self.serve_grants(&permitted)).await;
        }
        if op.workflow {
            return Box::pin(self.serve_workflow(&permitted)).await;
        }
        let resp = self.dispatch(&parts, &permitted, read, conn, trail).await?;
        if !resp.status().is_success() {
            return Ok(resp);
        }
        // The response phases, boxed and only where they apply: their futures are large, and stored inline they
        // would be built and copied with every request's.
        let resp = match permission::need(&op) {
            Need::Filter | Need::Queried => {
                Box::pin(self.filter_results(&permitted, body_for_filter.as_ref(), resp)).await?
            }
            _ => resp,
        };
        if op.read_only {
            // A read drops no cached link, leaves no history and produces no event.
            return Ok(resp);
        }
        Box::pin(self.after_effects(&permitted, resp)).await
    }

    /// A public route: forwarded without authentication, and never with a body.
    async fn serve_public<B>(
        &self,
        req: Request<B>,
        head: &classify::Head,
        conn: &ClientConn,
    ) -> Result<Response<GateBody>, GateError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        head.public_body(has_body(&body))?;
        self.forward(&parts, &head.context, &head.target, OutBody::Empty, conn).await
    }

    /// Authenticates the caller: the browser session cookie (when `[browser]` is configured and no bearer token is
    /// sent; a state change must then pass the CSRF rule), else a bearer token or a client certificate. A browser's
    /// page navigation without credentials is sent to sign in instead of 401.
    async fn caller<B>(
        &self,
        req: &Request<B>,
        head: &classify::Head,
        conn: &ClientConn,
        trail: &mut Trail,
    ) -> Result<Caller, GateError> {
        let Some(b) = &self.browser else {
            return Ok(Caller::Known(self.authenticate(req.headers(), conn.client_cert.as_deref()).await?));
        };
        let navigation = browser::is_html_navigation(req.method(), &head.target.path, req.headers());
        let unauthenticated = match b.session(req.headers(), browser::now_secs()) {
            Session::Valid(principal, refresh) => {
                b.csrf(req.method(), req.headers())?;
                trail.set_cookie = refresh;
                return Ok(Caller::Known(Arc::new(principal)));
            }
            Session::Refused(e) => GateError::Unauthenticated(e.to_string()),
            Session::Absent => match self.authenticate(req.headers(), conn.client_cert.as_deref()).await {
                Ok(principal) => return Ok(Caller::Known(principal)),
                Err(e) => e,
            },
        };
        if navigation && !req.headers().contains_key(header::AUTHORIZATION) {
            let return_to = req.uri().path_and_query().map_or("/", |p| p.as_str());
            return Ok(Caller::SignIn(Box::pin(b.sign_in(return_to, browser::now_secs())).await?));
        }
        Err(unauthenticated)
    }

    /// A browser's navigation to the UI's page without a valid session is sent to sign in first (the page itself is
    /// public, but every panel of it would fail).
    async fn sign_in_first<B>(
        &self,
        req: &Request<B>,
        head: &classify::Head,
    ) -> Result<Option<Response<GateBody>>, GateError> {
        let Some(b) = &self.browser else { return Ok(None) };
        let ui = head.public().is_some_and(|op| op.resource == crate::mlflow::routes::Resource::Ui);
        if !ui || !browser::is_html_navigation(req.method(), &head.target.path, req.headers()) {
            return Ok(None);
        }
        if req.headers().contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        match b.session(req.headers(), browser::now_secs()) {
            Session::Valid(..) => Ok(None),
            Session::Absent | Session::Refused(_) => {
                let return_to = req.uri().path_and_query().map_or("/", |p| p.as_str());
                Ok(Some(Box::pin(b.sign_in(return_to, browser::now_secs())).await?))
            }
        }
    }

    /// Authenticates the caller (a bearer token, or a verified client certificate).
    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        client_cert: Option<&str>,
    ) -> Result<Arc<Principal>, GateError> {
        let started = Instant::now();
        let authenticated = self.auth.authenticate(headers, client_cert).await;
        self.metrics.auth_seconds.observe(started.elapsed());
        authenticated.map_err(|e| match e {
            AuthError::Invalid(m) => GateError::Unauthenticated(m),
            AuthError::KeysUnavailable(issuer) => {
                tracing::error!(%issuer, "no signing keys available; denying");
                GateError::KeysUnavailable
            }
        })
    }

    /// Looks up the registry facts the policy needs (`input.resource`), in the request's workspace.
    async fn enrich(
        &self,
        head: &classify::Head,
        op: &Operation,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, GateError> {
        let needs = self.enricher.needs_of(&self.policy.bundle(), op);
        self.enricher.resource_with(&self.upstream, &head.context, op, fields, needs).await.map_err(|e| {
            if let Some(message) = e.not_found() {
                return GateError::NotFound(message.to_string());
            }
            tracing::error!(error = %e, "enrichment failed; denying");
            GateError::LookupFailed
        })
    }

    /// Serves a permitted grants-API request (`pipeline::grants`; the gate is its server, nothing is forwarded).
    async fn serve_grants(&self, p: &Permitted<'_>) -> Result<Response<GateBody>, GateError> {
        let fields = p.resource.get("target").and_then(|t| t.as_object()).cloned().unwrap_or_default();
        let answer =
            self.grants.serve(&self.enricher, &self.upstream, &p.head.context, p.op.rpc, &fields).await?.to_string();
        let mut resp = Response::new(body::full(Bytes::from(answer)));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(resp)
    }

    /// Serves a permitted workflow request (the gate is its server; nothing is forwarded as such).
    async fn serve_workflow(&self, p: &Permitted<'_>) -> Result<Response<GateBody>, GateError> {
        let query = p.head.target.query_pairs();
        let include_history = query.iter().any(|(k, v)| k == "include_history" && v == "true");
        let fields = p.resource.get("target").and_then(|t| t.as_object()).cloned().unwrap_or_default();
        let flow = approvals::Workflow {
            upstream: &self.upstream,
            policy: &self.policy,
            enricher: &self.enricher,
            webhooks: self.webhooks.as_deref(),
            fleet_db: self.fleet_db.as_deref(),
        };
        let call = approvals::Call {
            op: p.op,
            principal: p.principal,
            target: &fields,
            resource: p.resource,
            include_history,
            query: &query,
            context: &p.head.context,
        };
        flow.execute(call).await
    }

    /// Forwards a permitted request to MLflow: exactly the body the policy evaluated (stamped), or the stream.
    async fn dispatch(
        &self,
        parts: &http::request::Parts,
        p: &Permitted<'_>,
        read: ReadBody,
        conn: &ClientConn,
        trail: &mut Trail,
    ) -> Result<Response<GateBody>, GateError> {
        let out = match read.json {
            Some(mut json) => {
                let (op, sub) = (p.op, &p.principal.sub);
                let serialized = self
                    .capacity
                    .run_heavy(read.heavy, move || {
                        stamps::stamp_request(op, &mut json, sub, now_ms());
                        serde_json::to_vec(&json)
                    })
                    .await?;
                OutBody::Evaluated(Bytes::from(serialized.map_err(|_| GateError::Internal)?))
            }
            None => read.out,
        };
        let _promotion = self.promotion_lock(p).await?;
        let upstream_started = Instant::now();
        let resp = self.forward(parts, &p.head.context, &p.head.target, out, conn).await?;
        self.metrics.upstream_seconds.observe(upstream_started.elapsed());
        trail.upstream_status = Some(resp.status().as_u16());
        Ok(resp)
    }

    /// A transition that archives the stage's other versions holds the model's fleet-wide lock until MLflow has
    /// answered: MLflow reads those versions without a lock, so on PostgreSQL two concurrent promotions of two
    /// versions would both commit and both hold Production. Fails closed (503) if the lock cannot be had.
    async fn promotion_lock(&self, p: &Permitted<'_>) -> Result<Option<crate::fleetdb::PromotionLock>, GateError> {
        let Some(db) = &self.fleet_db else { return Ok(None) };
        let target = p.resource.get("target");
        let archives = target.and_then(|t| t.get("archive_existing_versions")).and_then(|v| v.as_bool());
        let name = target.and_then(|t| t.get("name")).and_then(|n| n.as_str());
        let (rpc::TRANSITION_MODEL_VERSION_STAGE, Some(true), Some(name)) = (p.op.rpc, archives, name) else {
            return Ok(None);
        };
        // Boxed: a PostgreSQL transaction's future, stored inline, would enlarge (and be copied with) every request's.
        Box::pin(approvals::hold_promotion(db, p.head.context.workspace_name(), name)).await.map(Some)
    }

    /// Response phase of a search or list: MLflow's page cut to the results the caller may read
    /// (`pipeline::results`). A page that cannot be read or decided fails the request; it is never passed unfiltered.
    async fn filter_results(
        &self,
        p: &Permitted<'_>,
        body: Option<&serde_json::Map<String, serde_json::Value>>,
        resp: Response<GateBody>,
    ) -> Result<Response<GateBody>, GateError> {
        // GraphQL: the lists its query selected (`target.lists`), cut as a search's page is.
        let lists = match permission::need(p.op) {
            Need::Filter => None,
            Need::Queried => match p.resource.pointer("/target/lists").and_then(|l| l.as_array()) {
                Some(lists) if !lists.is_empty() => Some(lists),
                _ => return Ok(resp),
            },
            _ => return Ok(resp),
        };
        let (mut parts, answer) = resp.into_parts();
        let bytes = body::collect_limited(answer, MAX_FILTERED_PAGE_BYTES).await.map_err(|e| {
            tracing::error!(error = %e, "reading MLflow's page of results failed");
            GateError::UpstreamUnavailable
        })?;
        let query = p.head.query();
        let request = input::RequestFacts {
            method: p.head.method.as_str(),
            path: &p.head.target.path,
            query: &query,
            body,
            workspace: p.head.context.workspace_name(),
        };
        // The lists of a GraphQL answer are decided as a search's page (a look-alike whose decision is `readable`).
        let search = Operation::plain("SearchRuns", true, crate::mlflow::routes::Resource::Run);
        let filter = results::Filter {
            enricher: &self.enricher,
            upstream: &self.upstream,
            ctx: &p.head.context,
            policy: &self.policy,
            principal: p.principal,
            op: if lists.is_some() { &search } else { p.op },
            request: &request,
        };
        let page = match lists {
            Some(lists) => filter.graphql(&bytes, lists).await.map(Some),
            None => filter.page(&bytes).await,
        };
        let page = page.map_err(|e| {
            tracing::error!(error = %e, "filtering the results failed; denying");
            GateError::LookupFailed
        })?;
        let Some(page) = page else { return Ok(Response::from_parts(parts, body::full(bytes))) };
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(page.len()));
        Ok(Response::from_parts(parts, body::full(page)))
    }

    /// After MLflow confirmed a permitted mutation: the stage history, then the registry's webhook events.
    async fn after_effects(
        &self,
        p: &Permitted<'_>,
        resp: Response<GateBody>,
    ) -> Result<Response<GateBody>, GateError> {
        let ctx = &p.head.context;
        // A write at EDIT level changes nothing a permission link holds (an owner stamp, grants, existence, a name:
        // clients cannot write the gate's tags), so it keeps the links cached; creations, deletions, renames and
        // everything else drop the links their target names.
        let keeps_links = matches!(permission::need(p.op), Need::On(Level::Edit, _) | Need::Each(Level::Edit, _));
        if !p.op.read_only && !keeps_links {
            if let Some(target) = p.resource.get("target").and_then(|t| t.as_object()) {
                self.enricher.permission_links.invalidate(ctx, target).await;
            }
        }
        self.record_history(ctx, p).await;
        match self.webhooks.as_ref().filter(|_| events::produces_events(p.op)) {
            Some(hooks) => {
                let (resp, answer) = read_small_json(resp).await?;
                let events = events::for_mutation(p.op, p.resource, &answer);
                effects::emit(Some(hooks), events, &p.principal.sub, ctx).await;
                Ok(resp)
            }
            None => Ok(resp),
        }
    }

    /// After MLflow confirmed a stage change or alias move, stamps it in the version's history (in the request's
    /// workspace). The mutation already happened, so a failure here is logged, not returned.
    async fn record_history(&self, ctx: &RequestContext, p: &Permitted<'_>) {
        let Some(target) = p.resource.get("target").and_then(|t| t.as_object()) else { return };
        let (op, sub) = (p.op, &p.principal.sub);
        if let Err(e) = effects::record_history(&self.upstream, ctx, op, target, p.resource, sub, p.break_glass).await {
            tracing::error!(error = %e, "recording the stage history failed");
        }
    }

    /// Counts the request and, when it reached a decision, writes its audit record.
    fn account(&self, trail: &Trail, method: &Method, path: &str, id: &str, status: u16, elapsed: std::time::Duration) {
        self.metrics.count_request(trail.rpc, trail.outcome.as_str(), status);
        self.metrics.request_seconds.observe(elapsed);
        if !trail.would_deny.is_empty() {
            self.metrics.count_would_deny(trail.rpc);
        }
        if let (Some(hooks), Outcome::Failed(DENIED)) = (&self.webhooks, trail.outcome) {
            let mut fields = serde_json::json!({"rpc": trail.rpc, "method": method.as_str(), "path": path,
                "reasons": trail.reasons, "target": trail.target});
            if let (Some(w), Some(f)) = (&trail.workspace, fields.as_object_mut()) {
                f.insert(WORKSPACE_FIELD.into(), w.as_str().into());
            }
            hooks.emit(Event {
                event: "POLICY_DENIED".into(),
                model_name: trail.target.get("name").and_then(|n| n.as_str()).map(str::to_owned),
                fields: fields.as_object().cloned().unwrap_or_default(),
                principal: trail.sub.clone(),
                decision_id: id.to_string(),
            });
        }
        let Some(audit) = &self.audit else { return };
        if !trail.outcome.audited() {
            return;
        }
        audit.record(AuditEntry {
            decision_id: id.to_string(),
            principal: trail.sub.clone().map(|s| (s, trail.groups.clone())),
            rpc: trail.rpc.to_string(),
            resource_type: trail.resource_type.to_string(),
            target: trail.target.clone(),
            method: method.to_string(),
            path: path.to_string(),
            decision: trail.outcome.as_str().to_string(),
            reasons: trail.reasons.clone(),
            would_deny: trail.would_deny.clone(),
            break_glass: trail.break_glass,
            frozen_override: trail.frozen_override,
            bundle_revision: self.policy.bundle().revision().to_string(),
            upstream_status: trail.upstream_status,
            status,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
        });
    }

    fn decide(
        &self,
        principal: &Principal,
        op: &Operation,
        head: &classify::Head,
        body: Option<&serde_json::Map<String, serde_json::Value>>,
        resource: &serde_json::Value,
        trail: &mut Trail,
    ) -> Result<(), GateError> {
        let query = head.query();
        let workspace = head.context.workspace_name();
        let facts = input::RequestFacts {
            method: head.method.as_str(),
            path: &head.target.path,
            query: &query,
            body,
            workspace,
        };
        let policy_started = Instant::now();
        let evaluated = self.policy.decide(principal, op, &facts, resource);
        self.metrics.policy_seconds.observe(policy_started.elapsed());
        let decision = evaluated.map_err(|e| {
            tracing::error!(error = %e, "policy evaluation failed; denying");
            GateError::PolicyFailed
        })?;
        trail.reasons = decision.reasons.clone();
        trail.break_glass = decision.flags.get("break_glass").and_then(|b| b.as_bool()).unwrap_or(false);
        trail.frozen_override = decision.flags.get("frozen_override").and_then(|b| b.as_bool()).unwrap_or(false);
        trail.would_deny = decision
            .flags
            .get("would_deny")
            .and_then(|w| w.as_array())
            .map(|w| w.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if !trail.would_deny.is_empty() {
            tracing::warn!(would_deny = %trail.would_deny.join("; "), "shadow-mode rules would deny this request");
        }
        if decision.allow {
            trail.outcome = Outcome::Allowed;
            Ok(())
        } else if decision.reasons.is_empty() {
            Err(GateError::PermissionDenied(format!("{} is not permitted by policy", op.rpc)))
        } else {
            Err(GateError::PermissionDenied(decision.reasons.join("; ")))
        }
    }

    /// Reads the body the policy must see, within the route's body class: refused when the route takes none (or
    /// the method is GET/HEAD), streamed unread for uploads, otherwise buffered within the class's limit, the
    /// budget of buffered bytes and the body read timeout, then parsed (large bodies in the heavy-work pool).
    async fn read_body<B>(
        &self,
        head: &classify::Head,
        op: &Operation,
        headers: &http::HeaderMap,
        body: B,
    ) -> Result<ReadBody, GateError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let empty = || ReadBody { json: None, out: OutBody::Empty, heavy: false, _reserved: None };
        if !has_body(&body) {
            return Ok(empty());
        }
        head.body_allowed(op)?;
        let load = self.capacity.limits();
        let limit = match op.body {
            // OTLP ingest is read (its attribute keys can write trace tags), then forwarded as it came.
            BodyClass::Stream if op.rpc == rpc::EXPORT_TRACES => self.config.server.max_body_bytes,
            BodyClass::Stream => {
                return Ok(ReadBody { out: OutBody::Stream(body::stream(body)), ..empty() });
            }
            BodyClass::Small | BodyClass::None => load.max_read_body_bytes,
            BodyClass::GraphQl => load.max_graphql_body_bytes,
            BodyClass::Large => self.config.server.max_body_bytes,
        };
        let budget = self.capacity.buffered();
        let collected = tokio::time::timeout(
            load.body_read_timeout,
            body::collect_reserved(body, limit, budget, load.max_buffered_body_bytes),
        )
        .await
        .map_err(|_| {
            GateError::BodyTimeout(format!(
                "the request body did not arrive within {} s (server.body_read_timeout_secs)",
                load.body_read_timeout.as_secs()
            ))
        })?;
        let (bytes, mut reserved) = collected.map_err(|e| match e {
            CollectError::TooLarge(n) => GateError::PayloadTooLarge(n),
            CollectError::OverBudget(total) => GateError::Overloaded(format!(
                "the gate is already holding its maximum of {total} bytes of request bodies (server.max_buffered_body_bytes); retry shortly"
            )),
            CollectError::Read(e) => match e.downcast_ref::<BodyIdle>() {
                Some(idle) => GateError::BodyTimeout(idle.to_string()),
                None => GateError::BadRequest(format!("the request body could not be read: {e}")),
            },
        })?;
        if bytes.is_empty() {
            return Ok(empty());
        }
        let heavy = bytes.len() >= HEAVY_BODY_BYTES;
        if op.rpc == rpc::EXPORT_TRACES {
            let max = self.config.server.max_body_bytes;
            let checked = bytes.clone();
            let headers = (single_header(headers, "content-type")?, single_header(headers, "content-encoding")?);
            self.capacity.run_heavy(heavy, move || otlp_check(headers, &checked, max)).await??;
            return Ok(ReadBody { json: None, out: OutBody::Evaluated(bytes), heavy, _reserved: reserved });
        }
        let (json, values) = self.capacity.run_heavy(heavy, || classify::parse_body(&bytes)).await??;
        // The parsed form lives as long as the bytes: it counts against the same budget.
        self.capacity.reserve_parsed(&mut reserved, values)?;
        classify::check_graphql(op, &json)?;
        Ok(ReadBody { json: Some(json), out: OutBody::Empty, heavy, _reserved: reserved })
    }

    async fn forward(
        &self,
        parts: &http::request::Parts,
        ctx: &RequestContext,
        target: &Target,
        body: OutBody,
        conn: &ClientConn,
    ) -> Result<Response<GateBody>, GateError> {
        let original_host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .map(str::to_owned);
        let out = Outgoing {
            method: parts.method.clone(),
            headers: &parts.headers,
            target,
            original_host,
            body,
            conn,
            context: ctx,
        };
        self.upstream.forward(out).await
    }
}

/// A header MLflow reads as one value: absent, or exactly one valid string (several are refused: which one MLflow
/// would take is not for the gate to guess).
fn single_header(headers: &http::HeaderMap, name: &str) -> Result<Option<String>, GateError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(GateError::BadRequest(format!("the request has several {name} headers; send one")));
    }
    first
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| GateError::BadRequest(format!("the {name} header is not visible ASCII")))
}

/// The OTLP body's check (`mlflow::otlp`) as the gate's error.
fn otlp_check(headers: (Option<String>, Option<String>), body: &[u8], max: usize) -> Result<(), GateError> {
    use crate::mlflow::otlp::{self, OtlpError};
    otlp::check(headers.0.as_deref(), headers.1.as_deref(), body, max).map_err(|e| match e {
        OtlpError::Unreadable(why) => GateError::BadRequest(why),
        OtlpError::Reserved(key) => GateError::PermissionDenied(format!(
            "the span attribute {key:?} would write a reserved trace tag: only mlflow-gate writes tags starting with \
             {:?}",
            crate::mlflow::stamps::RESERVED_PREFIX
        )),
    })
}

/// A request the policy allowed, as the dispatch and after-effect phases see it.
struct Permitted<'a> {
    head: &'a classify::Head,
    op: &'a Operation,
    principal: &'a Principal,
    /// The resource the policy saw (`input.resource`).
    resource: &'a serde_json::Value,
    /// The policy's break-glass flag (stamped in the history).
    break_glass: bool,
}

impl Trail {
    /// Records what classification learnt: the workspace and, when the table knows the route, its operation.
    fn classified(&mut self, head: &classify::Head) {
        self.workspace = head.context.workspace_name().map(str::to_owned);
        if let Some(op) = &head.route {
            self.operation(op);
        }
    }

    /// Records who asked.
    fn authenticated(&mut self, principal: &Principal) {
        self.sub = Some(principal.sub.clone());
        self.groups = principal.groups.clone();
    }

    /// Records the operation the policy is asked about.
    fn operation(&mut self, op: &Operation) {
        self.rpc = op.rpc;
        self.resource_type = op.resource.as_str();
    }
}

/// The body as read for the policy (normalised), or else what to forward.
struct ReadBody {
    json: Option<serde_json::Map<String, serde_json::Value>>,
    out: OutBody,
    /// Whether the body is large enough that evaluating and re-serialising it runs in the heavy-work pool.
    heavy: bool,
    /// The body's bytes in the budget of buffered bytes, held until the request ends.
    _reserved: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Whether a request carries a body (any data, or a length other than zero).
fn has_body<B: Body>(body: &B) -> bool {
    !body.is_end_stream() && body.size_hint().exact() != Some(0)
}

/// The target recorded in the audit log and the denial webhook: the policy's target plus the workspace, if any.
fn audit_target(resource: &serde_json::Value, ctx: &RequestContext) -> serde_json::Value {
    let mut target = resource.get("target").cloned().unwrap_or_default();
    if let (Some(w), Some(t)) = (ctx.workspace_name(), target.as_object_mut()) {
        t.insert(WORKSPACE_FIELD.into(), w.into());
    }
    target
}

/// Reads a (small) JSON answer from MLflow to learn what a mutation created, and rebuilds the response around the
/// same bytes. Registry answers are a few hundred bytes; anything over 1 MiB is an error, not a silent skip.
async fn read_small_json(resp: Response<GateBody>) -> Result<(Response<GateBody>, serde_json::Value), GateError> {
    let (parts, body) = resp.into_parts();
    let bytes = body::collect_limited(body, 1024 * 1024).await.map_err(|e| {
        tracing::error!(error = %e, "reading MLflow's answer failed");
        GateError::UpstreamUnavailable
    })?;
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((Response::from_parts(parts, body::full(bytes)), json))
}

fn request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_keep_their_labels_on_the_wire() {
        let labels =
            [Outcome::Unclassified, Outcome::Public, Outcome::Allowed, Outcome::Failed(DENIED)].map(Outcome::as_str);
        assert_eq!(labels, ["-", "public", "allow", "denied"]);
        assert_eq!(Outcome::Failed(GateError::LookupFailed.kind()).as_str(), "lookup_failed");
        assert!(!Outcome::Public.audited() && !Outcome::Unclassified.audited());
        assert!(Outcome::Allowed.audited() && Outcome::Failed(DENIED).audited());
    }
}
