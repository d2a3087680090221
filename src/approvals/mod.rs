//! Approval workflow, served by the gate itself after the policy allowed the request: Databricks-compatible
//! transition requests (create, approve, reject, cancel, list) and comments for open-source MLflow, which has
//! none. Same paths, fields and response shapes as Databricks' Workspace Model Registry, under `/api/2.0/mlflow/`
//! and `/ajax-api/2.0/mlflow/`. State is kept in reserved model-version tags (see `state`), read and written in the
//! request's workspace (its `RequestContext`): an approval recorded in one workspace is not seen in another.

/// The workflow's state in reserved model-version tags (a leaf of the route layer, `mlflow::workflow`).
pub use crate::mlflow::workflow as state;

pub mod history;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::auth::Principal;
use crate::body::{self, GateBody};
use crate::error::GateError;
use crate::mlflow::events;
use crate::mlflow::routes::{rpc, Operation, Resource};
use crate::mlflow::target::field;
use crate::pipeline::effects::{self, now_ms};
use crate::pipeline::enrich::Enricher;
use crate::policy::{input, Policy};
use crate::proxy::{RequestContext, Upstream};
use state::{kind, Activity, Requested};

fn bad(msg: &str) -> GateError {
    GateError::BadRequest(msg.to_string())
}

fn not_found(msg: &str) -> GateError {
    GateError::NotFound(msg.to_string())
}

fn invalid_state(msg: String) -> GateError {
    GateError::InvalidState(msg)
}

/// Takes the promotion lock of (`workspace`, `model`) for a transition that archives the stage's other versions,
/// wherever the gate performs one (a forwarded transition, an approval that applies it). Fails closed: 503 if the
/// lock cannot be had.
pub async fn hold_promotion(
    db: &crate::fleetdb::FleetDb,
    workspace: Option<&str>,
    model: &str,
) -> Result<crate::fleetdb::PromotionLock, GateError> {
    db.promotion_lock(workspace, model).await.map_err(|e| {
        tracing::error!(error = %e, "cannot take the fleet's promotion lock; refusing the transition");
        GateError::Overloaded(
            "the transition waits for the fleet's promotion lock of this model (another replica is promoting it, or \
             the fleet database is unreachable); try again shortly"
                .into(),
        )
    })
}

/// Serves workflow requests.
pub struct Workflow<'a> {
    /// MLflow.
    pub upstream: &'a Upstream,
    /// The policy (asked again before an approval performs a transition).
    pub policy: &'a Policy,
    /// Look-ups for that second decision.
    pub enricher: &'a Enricher,
    /// Where registry events go (after MLflow confirmed the state change).
    pub webhooks: Option<&'a crate::webhooks::Webhooks>,
    /// The fleet's database: an approval that performs an archiving transition holds the model's promotion lock.
    pub fleet_db: Option<&'a crate::fleetdb::FleetDb>,
}

/// One permitted workflow request.
pub struct Call<'a> {
    /// The operation.
    pub op: &'a Operation,
    /// Who.
    pub principal: &'a Principal,
    /// The target fields.
    pub target: &'a Map<String, Value>,
    /// The enriched resource the policy saw.
    pub resource: &'a Value,
    /// Whether `include_history=true` was asked (list).
    pub include_history: bool,
    /// The query string's pairs (the registry history's `alias`, `stage`, `since`, `at`).
    pub query: &'a [(String, String)],
    /// The request's context (workspace, request id): every read and write of the workflow uses it.
    pub context: &'a RequestContext,
}

impl Workflow<'_> {
    /// Performs a permitted workflow request and answers in Databricks' response shape.
    pub async fn execute(&self, call: Call<'_>) -> Result<Response<GateBody>, GateError> {
        if call.op.rpc == rpc::GET_REGISTRY_HISTORY {
            return Ok(json_response(&history::serve(self.upstream, &call).await?));
        }
        let mv = call.resource.get("model_version").and_then(Value::as_object);
        let name = field(call.target, "name").ok_or_else(|| bad("name is required"))?;
        let version = field(call.target, "version").ok_or_else(|| bad("version is required"))?;
        let mv = mv.ok_or_else(|| not_found(&format!("model version {version} of {name} does not exist")))?;
        let tags = mv.get("tags").and_then(Value::as_object).cloned().unwrap_or_default();
        let list = state::activities(&tags);
        let ctx = Ctx { name, version, mv, list: &list, call: &call };
        let body = match call.op.rpc {
            rpc::CREATE_TRANSITION_REQUEST => self.create_request(&ctx).await?,
            rpc::APPROVE_TRANSITION_REQUEST | rpc::REJECT_TRANSITION_REQUEST => self.resolve_request(&ctx).await?,
            rpc::DELETE_TRANSITION_REQUEST => self.cancel_request(&ctx).await?,
            rpc::LIST_TRANSITION_REQUESTS => list_requests(&ctx),
            rpc::CREATE_COMMENT | rpc::UPDATE_COMMENT => self.write_comment(&ctx).await?,
            rpc::DELETE_COMMENT => self.delete_comment(&ctx).await?,
            other => return Err(bad(&format!("{other} is not a workflow operation"))),
        };
        Ok(json_response(&body))
    }

    async fn create_request(&self, ctx: &Ctx<'_>) -> Result<Value, GateError> {
        let wanted = ctx.requested()?;
        let sub = &ctx.call.principal.sub;
        let mine = |r: &&Activity| r.user_id == *sub && r.requested().is_some_and(|t| t.same(&wanted));
        if state::open_requests(ctx.list).iter().any(mine) {
            return Err(invalid_state(format!(
                "{sub} already has an open request to move version {} to {}",
                ctx.version,
                wanted.label()
            )));
        }
        let a = ctx.new_activity(kind::REQUESTED, wanted, None);
        self.save(ctx, &a).await?;
        self.emit(ctx, events::request_events(ctx.name, ctx.version, wanted, a.comment.as_deref())).await;
        let actions = ["APPROVE_TRANSITION_REQUEST", "REJECT_TRANSITION_REQUEST", "CANCEL_TRANSITION_REQUEST"];
        let mut request = json!({"to_stage": a.to_stage, "comment": a.comment, "user_id": a.user_id,
            "creation_timestamp": a.creation_timestamp, "available_actions": actions});
        if let (Some(alias), Value::Object(m)) = (&a.to_alias, &mut request) {
            m.insert("to_alias".into(), Value::String(alias.clone()));
            if let Some(action) = &a.alias_action {
                m.insert("alias_action".into(), Value::String(action.clone()));
            }
        }
        Ok(json!({ "request": request }))
    }

    async fn resolve_request(&self, ctx: &Ctx<'_>) -> Result<Value, GateError> {
        let wanted = ctx.requested()?;
        let approve = ctx.call.op.rpc == rpc::APPROVE_TRANSITION_REQUEST;
        let open = state::open_requests(ctx.list);
        let request = open.iter().find(|r| r.requested().is_some_and(|t| t.same(&wanted))).ok_or_else(|| {
            invalid_state(format!(
                "there is no open request to move version {} of {} to {}",
                ctx.version,
                ctx.name,
                wanted.label()
            ))
        })?;
        let kind = if approve { kind::APPROVED } else { kind::REJECTED };
        let mut a = ctx.new_activity(kind, wanted, Some(request.id.clone()));
        if approve {
            let run = ctx.call.resource.get("source_run").and_then(Value::as_object);
            a.fingerprint = Some(state::fingerprint(ctx.mv, run));
        }
        self.save(ctx, &a).await?;
        if approve {
            a.system_comment = self.apply_if_permitted(ctx, wanted).await?;
        }
        Ok(json!({"activity": a.to_api(ctx.name, ctx.version)}))
    }

    /// As Databricks does, an approver the policy also allows to perform the transition (or the alias move) gets it
    /// performed. Under the default policy a reviewer's approval only records; CI then transitions or moves the alias.
    async fn apply_if_permitted(&self, ctx: &Ctx<'_>, wanted: Requested<'_>) -> Result<Option<String>, GateError> {
        let (op, path, body) = match wanted {
            Requested::Stage(stage) => {
                let archive =
                    ctx.call.target.get("archive_existing_versions").and_then(Value::as_bool).unwrap_or(false);
                let body = json!({"name": ctx.name, "version": ctx.version, "stage": stage,
                    "archive_existing_versions": archive});
                let op = Operation::plain(rpc::TRANSITION_MODEL_VERSION_STAGE, false, Resource::ModelVersion);
                (op, "/api/2.0/mlflow/model-versions/transition-stage", body)
            }
            // The removal is performed by a separate DeleteRegisteredModelAlias, which the approval lets through.
            Requested::AliasRemoval(alias) => {
                return Ok(Some(format!(
                    "approval recorded; delete the alias {alias} of {} (DeleteRegisteredModelAlias) to apply it",
                    ctx.name
                )))
            }
            Requested::Alias(alias) => {
                let body = json!({"name": ctx.name, "version": ctx.version, "alias": alias});
                let op = Operation::plain(rpc::SET_REGISTERED_MODEL_ALIAS, false, Resource::RegisteredModel);
                (op, "/api/2.0/mlflow/registered-models/alias", body)
            }
        };
        let Value::Object(body) = body else { return Err(GateError::Internal) };
        let context = ctx.call.context;
        let resource = self.enricher.resource(self.upstream, context, &op, body.clone()).await.map_err(|e| {
            tracing::error!(error = %e, "enrichment for the approval's transition failed");
            GateError::LookupFailed
        })?;
        let query = Map::new();
        let workspace = context.workspace_name();
        let facts = input::RequestFacts { method: "POST", path, query: &query, body: Some(&body), workspace };
        let decision = self.policy.decide(ctx.call.principal, &op, &facts, &resource);
        if !decision.as_ref().is_ok_and(|d| d.allow) {
            return Ok(Some(format!(
                "approval recorded; {} may not perform the transition, so it was not applied",
                ctx.call.principal.sub
            )));
        }
        // Held until MLflow has answered, as for a forwarded transition (`Gate::promotion_lock`).
        let _promotion = match (self.fleet_db, wanted, body.get("archive_existing_versions")) {
            (Some(db), Requested::Stage(_), Some(Value::Bool(true))) => {
                Some(hold_promotion(db, workspace, ctx.name).await?)
            }
            _ => None,
        };
        let (status, reply) =
            self.upstream.call_json(context, Method::POST, path, Some(&Value::Object(body.clone()))).await.map_err(
                |e| {
                    tracing::error!(error = %e, "the approval's transition failed");
                    GateError::UpstreamUnavailable
                },
            )?;
        if !status.is_success() {
            tracing::warn!(%status, %reply, "MLflow refused the approval's transition");
            return Ok(Some(format!("approval recorded; MLflow refused the transition ({status})")));
        }
        let sub = &ctx.call.principal.sub;
        let break_glass = decision.as_ref().is_ok_and(|d| d.flags.get("break_glass") == Some(&Value::Bool(true)));
        effects::record_history(self.upstream, context, &op, &body, &resource, sub, break_glass).await.map_err(
            |e| {
                tracing::error!(error = %e, "recording workflow state in MLflow failed");
                GateError::UpstreamUnavailable
            },
        )?;
        let applied = ctx.new_activity(kind::APPLIED, wanted, None);
        self.save(ctx, &applied).await?;
        match wanted {
            Requested::Stage(stage) => {
                let from = ctx.mv.get("current_stage").cloned().unwrap_or(Value::Null);
                let to = Value::from(stage);
                self.emit(ctx, events::transition_events(Some(ctx.name), Some(ctx.version), &from, &to)).await;
                Ok(Some(format!("approved and transitioned to {stage}")))
            }
            Requested::AliasRemoval(_) => Ok(None),
            Requested::Alias(alias) => {
                self.emit(ctx, events::alias_set_events(ctx.name, ctx.version, alias)).await;
                Ok(Some(format!("approved and moved the alias {alias} to version {}", ctx.version)))
            }
        }
    }

    async fn cancel_request(&self, ctx: &Ctx<'_>) -> Result<Value, GateError> {
        let wanted = ctx.requested()?;
        let creator = field(ctx.call.target, "creator").unwrap_or(&ctx.call.principal.sub);
        let open = state::open_requests(ctx.list);
        let request = open
            .iter()
            .find(|r| r.user_id == creator && r.requested().is_some_and(|t| t.same(&wanted)))
            .ok_or_else(|| {
                not_found(&format!(
                    "{creator} has no open request to move version {} to {}",
                    ctx.version,
                    wanted.label()
                ))
            })?;
        let a = ctx.new_activity(kind::CANCELLED, wanted, Some(request.id.clone()));
        self.save(ctx, &a).await?;
        Ok(json!({"activity": a.to_api(ctx.name, ctx.version)}))
    }

    async fn write_comment(&self, ctx: &Ctx<'_>) -> Result<Value, GateError> {
        let mut a = match ctx.call.op.rpc {
            rpc::UPDATE_COMMENT => ctx.existing_comment()?,
            _ => ctx.new_comment(),
        };
        let text = field(ctx.call.target, "comment").ok_or_else(|| bad("comment is required"))?;
        a.comment = Some(text.to_string());
        a.last_updated_timestamp = now_ms();
        self.save(ctx, &a).await?;
        if ctx.call.op.rpc == rpc::CREATE_COMMENT {
            let fields = json!({"version": ctx.version, "comment": a.comment});
            let event = events::RegistryEvent {
                event: "COMMENT_CREATED",
                model_name: Some(ctx.name.to_string()),
                fields: fields.as_object().cloned().unwrap_or_default(),
            };
            self.emit(ctx, vec![event]).await;
        }
        let mine = a.user_id == ctx.call.principal.sub;
        let actions: Vec<&str> = if mine { vec!["EDIT_COMMENT", "DELETE_COMMENT"] } else { vec![] };
        Ok(json!({"comment": {"id": state::external_id(ctx.name, ctx.version, &a.id), "comment": a.comment,
            "user_id": a.user_id, "creation_timestamp": a.creation_timestamp,
            "last_updated_timestamp": a.last_updated_timestamp, "available_actions": actions}}))
    }

    async fn delete_comment(&self, ctx: &Ctx<'_>) -> Result<Value, GateError> {
        let a = ctx.existing_comment()?;
        let body = json!({"name": ctx.name, "version": ctx.version, "key": a.tag_key()});
        self.call(ctx, Method::DELETE, "/api/2.0/mlflow/model-versions/delete-tag", &body).await?;
        Ok(json!({}))
    }

    async fn emit(&self, ctx: &Ctx<'_>, list: Vec<events::RegistryEvent>) {
        effects::emit(self.webhooks, list, &ctx.call.principal.sub, ctx.call.context).await;
    }

    async fn save(&self, ctx: &Ctx<'_>, a: &Activity) -> Result<(), GateError> {
        let value = serde_json::to_string(a).map_err(|_| GateError::Internal)?;
        self.set_tag(ctx, &a.tag_key(), &value).await
    }

    async fn set_tag(&self, ctx: &Ctx<'_>, key: &str, value: &str) -> Result<(), GateError> {
        let body = json!({"name": ctx.name, "version": ctx.version, "key": key, "value": value});
        self.call(ctx, Method::POST, "/api/2.0/mlflow/model-versions/set-tag", &body).await
    }

    async fn call(&self, ctx: &Ctx<'_>, method: Method, path: &str, body: &Value) -> Result<(), GateError> {
        match self.upstream.call_json(ctx.call.context, method, path, Some(body)).await {
            Ok((status, _)) if status.is_success() => Ok(()),
            Ok((status, reply)) => {
                tracing::error!(%status, %reply, path, "recording workflow state in MLflow failed");
                Err(GateError::UpstreamUnavailable)
            }
            Err(e) => {
                tracing::error!(error = %e, path, "recording workflow state in MLflow failed");
                Err(GateError::UpstreamUnavailable)
            }
        }
    }
}

fn json_response(body: &Value) -> Response<GateBody> {
    let mut resp = Response::new(body::full(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

/// One workflow request's context.
struct Ctx<'a> {
    name: &'a str,
    version: &'a str,
    mv: &'a Map<String, Value>,
    list: &'a [Activity],
    call: &'a Call<'a>,
}

impl Ctx<'_> {
    /// The request's target: `stage` (Databricks) or `to_alias` (the gate's extension), exactly one of them; with
    /// `to_alias`, `alias_action: "delete"` asks for the alias's removal from the version holding it.
    fn requested(&self) -> Result<Requested<'_>, GateError> {
        let action = field(self.call.target, "alias_action");
        match (field(self.call.target, "stage"), field(self.call.target, "to_alias")) {
            (Some(_), Some(_)) => Err(bad("give either stage or to_alias, not both")),
            (None, Some(alias)) => match action {
                None => Ok(Requested::Alias(alias)),
                Some(state::ALIAS_DELETE) => Ok(Requested::AliasRemoval(alias)),
                Some(other) => Err(bad(&format!("alias_action {other:?} is not \"delete\""))),
            },
            (_, None) if action.is_some() => Err(bad("alias_action needs to_alias")),
            (Some(s @ ("Staging" | "Production" | "Archived")), None) => Ok(Requested::Stage(s)),
            (Some(other), None) => Err(bad(&format!("stage {other:?} is not one of Staging, Production, Archived"))),
            (None, None) => Err(bad("stage (or to_alias, for an alias) is required")),
        }
    }

    fn new_activity(&self, kind: &str, wanted: Requested<'_>, resolves: Option<String>) -> Activity {
        let mut a = self.new_comment();
        a.activity_type = kind.to_string();
        a.resolves = resolves;
        match wanted {
            Requested::Stage(s) => a.to_stage = Some(s.to_string()),
            Requested::Alias(alias) => a.to_alias = Some(alias.to_string()),
            Requested::AliasRemoval(alias) => {
                a.to_alias = Some(alias.to_string());
                a.alias_action = Some(state::ALIAS_DELETE.to_string());
            }
        }
        a
    }

    fn new_comment(&self) -> Activity {
        let now = now_ms();
        let comment = field(self.call.target, "comment").map(|c| c.chars().take(state::MAX_COMMENT_CHARS).collect());
        Activity {
            id: state::new_id(),
            activity_type: kind::COMMENT.to_string(),
            from_stage: self.mv.get("current_stage").and_then(Value::as_str).map(str::to_owned),
            to_stage: None,
            to_alias: None,
            alias_action: None,
            comment,
            system_comment: None,
            user_id: self.call.principal.sub.clone(),
            creation_timestamp: now,
            last_updated_timestamp: now,
            resolves: None,
            fingerprint: None,
        }
    }

    fn existing_comment(&self) -> Result<Activity, GateError> {
        let short = field(self.call.target, "id").and_then(state::parse_external_id).map(|(_, _, s)| s);
        short
            .and_then(|s| self.list.iter().find(|a| a.id == s && a.activity_type == kind::COMMENT))
            .cloned()
            .ok_or_else(|| not_found("no comment has this id"))
    }
}

fn list_requests(ctx: &Ctx<'_>) -> Value {
    let items: Vec<Value> = if ctx.call.include_history {
        ctx.list.iter().map(|a| a.to_api(ctx.name, ctx.version)).collect()
    } else {
        state::open_requests(ctx.list).into_iter().map(|a| a.to_api(ctx.name, ctx.version)).collect()
    };
    json!({ "requests": items })
}
