//! Dispatch of the grants API, after the policy allowed it (it needs MANAGE on the object): the gate itself reads
//! the object's grants and writes one grantee's grant tag (`mlflow_gate.grant.user.<sub>` /
//! `mlflow_gate.grant.group.<group>`, `permission::grant_tag_key`) in MLflow, with its own credentials, in the
//! request's workspace, on an experiment, a registered model or a logged model; a trace's on its experiment
//! (`mlflow_gate.grant.trace.<id>.user.<sub>`, `permission::trace_grant_tag_key`: OTLP ingest can write trace tags). A change is one set-tag
//! (a revocation one delete-tag), so changes for different grantees made at the same time by several gates all
//! take effect. A revocation also removes the grantee from the legacy combined tag (`mlflow_gate.grants`) if it is
//! there: that one rewrite is serialised in this process. Request and answer shapes are those of MLflow's
//! basic-auth app (`experiment_id` or `name`, `username`, `permission`; answered as `experiment_permission` /
//! `registered_model_permission`), plus `group_name` in place of `username` for a group grant, and `model_id` /
//! `trace_id` (answered as `logged_model_permission` / `trace_permission`), and `endpoint_id` (or `name`) for an
//! AI-gateway endpoint (`gateway_endpoint_permission`, its grant tags on the endpoint). A change takes effect on this
//! gate's next request (the object's cached link is dropped).

use http::Method;
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use super::enrich::permissions::{self, Resolved};
use super::enrich::{encode_segment, Enricher};
use crate::error::GateError;
use crate::mlflow::permission::{self, grant_tag_key, Anchor, Grantee, Grants, GRANTS_TAG};
use crate::proxy::{RequestContext, Upstream};

/// The grants API; one per gate.
#[derive(Default)]
pub struct GrantsApi {
    /// Read-modify-write of a legacy grants tag, one at a time.
    writing: Mutex<()>,
}

/// What a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Get,
    Update,
    Delete,
}

impl GrantsApi {
    /// Serves one permitted grants-API call; the answer is MLflow's JSON shape.
    pub async fn serve(
        &self,
        enricher: &Enricher,
        up: &Upstream,
        ctx: &RequestContext,
        rpc: &str,
        target: &Map<String, Value>,
    ) -> Result<Value, GateError> {
        let Some(anchor) = permission::grant_route(rpc) else {
            return Err(GateError::BadRequest(format!("{rpc} is not a grants operation")));
        };
        let action = match rpc.split_once("Permission").map(|(head, _)| head) {
            Some(h) if h.starts_with("Create") => Action::Create,
            Some(h) if h.starts_with("Get") => Action::Get,
            Some(h) if h.starts_with("Update") => Action::Update,
            _ => Action::Delete,
        };
        let (kind, who) = grantee(target)?;
        let level = match action {
            Action::Create | Action::Update => Some(level(target)?),
            Action::Get | Action::Delete => None,
        };
        let resolved = permissions::resolve(enricher, up, ctx, anchor, target, true).await.map_err(|e| {
            tracing::error!(error = %e, "reading the grants failed");
            GateError::LookupFailed
        })?;
        let mut nodes = match resolved {
            Resolved::Chain(nodes) if !nodes.is_empty() => nodes,
            Resolved::Unnamed(why) => return Err(GateError::InvalidParameter(why)),
            _ => return Err(GateError::NotFound(format!("the {} does not exist", anchor.as_str().replace('_', " ")))),
        };
        let node = nodes.remove(0);
        // A trace's grant tags live on its experiment (the chain's last link now), `permission::TRACE_GRANT_PREFIX`.
        let holder = match (anchor, nodes.last()) {
            (Anchor::Trace, Some(experiment)) => Some(experiment.id.clone()),
            _ => None,
        };
        let key = tag_key(holder.is_some(), &node.id, kind, &who)?;
        let object = match &holder {
            Some(experiment_id) => Object { enricher, up, ctx, anchor: Anchor::Experiment, id: experiment_id },
            None => Object { enricher, up, ctx, anchor, id: &node.id },
        };
        let grants = node.grants.map_err(|e| GateError::InvalidState(e.to_string()))?;
        let map = if kind == Grantee::User { &grants.users } else { &grants.groups };
        let current = map.get(&who).and_then(Value::as_str).map(str::to_owned);
        let missing = || GateError::NotFound(format!("no grant to {} {who:?} on this object", singular(kind)));
        let answer_level = match (action, current, level) {
            (Action::Get, Some(c), _) => c,
            (Action::Create, Some(c), _) => {
                return Err(GateError::InvalidState(format!(
                    "{} {who:?} already has {c} on this object; update it instead",
                    singular(kind)
                )))
            }
            (Action::Create, None, Some(l)) | (Action::Update, Some(_), Some(l)) => {
                object.set_tag(&key, &l).await?;
                l
            }
            (Action::Delete, Some(c), _) => {
                if grants.tagged.contains(&key) {
                    object.delete_tag(&key).await?;
                }
                if let Some(legacy) = grants.legacy.as_deref() {
                    let _writing = self.writing.lock().await;
                    object.drop_from_legacy(legacy, kind, &who).await?;
                }
                c
            }
            _ => return Err(missing()),
        };
        Ok(answer(anchor, &node.id, kind, &who, &answer_level, action == Action::Delete))
    }
}

/// The object whose grant tags are written, with the gate's credentials.
struct Object<'a> {
    enricher: &'a Enricher,
    up: &'a Upstream,
    ctx: &'a RequestContext,
    anchor: Anchor,
    id: &'a str,
}

impl Object<'_> {
    /// Sets one tag on the object (MLflow's set-tag route of its kind; a trace's grants are set on its experiment).
    async fn set_tag(&self, key: &str, value: &str) -> Result<(), GateError> {
        let id = self.id;
        let (method, path, body) = match self.anchor {
            Anchor::RegisteredModel => (
                Method::POST,
                "/api/2.0/mlflow/registered-models/set-tag".to_string(),
                json!({"name": id, "key": key, "value": value}),
            ),
            Anchor::LoggedModel => (
                Method::PATCH,
                format!("/api/2.0/mlflow/logged-models/{}/tags", encode_segment(id)),
                json!({"tags": [{"key": key, "value": value}]}),
            ),
            Anchor::GatewayEndpoint => (
                Method::POST,
                "/api/3.0/mlflow/gateway/endpoints/set-tag".to_string(),
                json!({"endpoint_id": id, "key": key, "value": value}),
            ),
            _ => (
                Method::POST,
                "/api/2.0/mlflow/experiments/set-experiment-tag".to_string(),
                json!({"experiment_id": id, "key": key, "value": value}),
            ),
        };
        self.send(method, &path, &body).await
    }

    /// Deletes one tag of the object.
    async fn delete_tag(&self, key: &str) -> Result<(), GateError> {
        let id = self.id;
        let (method, path, body) = match self.anchor {
            Anchor::RegisteredModel => (
                Method::DELETE,
                "/api/2.0/mlflow/registered-models/delete-tag".to_string(),
                json!({"name": id, "key": key}),
            ),
            Anchor::LoggedModel => (
                Method::DELETE,
                format!("/api/2.0/mlflow/logged-models/{}/tags/{}", encode_segment(id), encode_segment(key)),
                Value::Null,
            ),
            Anchor::GatewayEndpoint => (
                Method::DELETE,
                "/api/3.0/mlflow/gateway/endpoints/delete-tag".to_string(),
                json!({"endpoint_id": id, "key": key}),
            ),
            _ => (
                Method::POST,
                "/api/2.0/mlflow/experiments/delete-experiment-tag".to_string(),
                json!({"experiment_id": id, "key": key}),
            ),
        };
        self.send(method, &path, &body).await
    }

    /// Rewrites the legacy combined tag without the grantee, if it names the grantee (as this request read it from
    /// MLflow; the gate no longer adds to that tag, so only other revocations race with this rewrite).
    async fn drop_from_legacy(&self, legacy: &Grants, kind: Grantee, who: &str) -> Result<(), GateError> {
        let mut legacy = legacy.clone();
        let map = if kind == Grantee::User { &mut legacy.users } else { &mut legacy.groups };
        if map.remove(who).is_none() {
            return Ok(());
        }
        self.set_tag(GRANTS_TAG, &legacy.to_tag()).await
    }

    async fn send(&self, method: Method, path: &str, body: &Value) -> Result<(), GateError> {
        let body = (!body.is_null()).then_some(body);
        let sent = self.up.call_json(self.ctx, method, path, body).await;
        let mut target = Map::new();
        if let Some(field) = self.anchor.fields().first() {
            target.insert((*field).to_string(), Value::String(self.id.to_string()));
        }
        self.enricher.permission_links.invalidate(self.ctx, &target).await;
        let (status, reply) = sent.map_err(|e| {
            tracing::error!(error = %e, "writing the grants failed");
            GateError::UpstreamUnavailable
        })?;
        if !status.is_success() {
            tracing::error!(%status, %reply, "MLflow refused the grant tag");
            return Err(GateError::UpstreamUnavailable);
        }
        Ok(())
    }
}

/// The tag key of the grantee's grant: on the object itself, or (a trace's) on its experiment.
fn tag_key(on_experiment: bool, object_id: &str, kind: Grantee, who: &str) -> Result<String, GateError> {
    let key =
        if on_experiment { permission::trace_grant_tag_key(object_id, kind, who) } else { grant_tag_key(kind, who) };
    key.ok_or_else(|| {
        GateError::InvalidParameter(format!(
            "the {} name is too long to be stored as a grant (MLflow tag keys hold at most {} characters; a name of \
             up to 75 bytes always fits, 61 for a trace's grant)",
            singular(kind),
            permission::MAX_TAG_KEY
        ))
    })
}

fn singular(kind: Grantee) -> &'static str {
    match kind {
        Grantee::User => "user",
        Grantee::Group => "group",
    }
}

/// The grantee: exactly one of `username` and `group_name`.
fn grantee(target: &Map<String, Value>) -> Result<(Grantee, String), GateError> {
    let text = |k: &str| target.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    match (text("username"), text("group_name")) {
        (Some(u), None) => Ok((Grantee::User, u)),
        (None, Some(g)) => Ok((Grantee::Group, g)),
        _ => Err(GateError::InvalidParameter("give exactly one of username and group_name".into())),
    }
}

fn level(target: &Map<String, Value>) -> Result<String, GateError> {
    match target.get("permission").and_then(Value::as_str) {
        Some(l) if permission::is_level(l) => Ok(l.to_string()),
        _ => Err(GateError::InvalidParameter(format!("permission must be one of {}", permission::LEVELS.join(", ")))),
    }
}

/// MLflow basic-auth's answer shape (`user_id` is the subject here: the gate has no user table).
fn answer(anchor: Anchor, id: &str, kind: Grantee, who: &str, level: &str, deleted: bool) -> Value {
    if deleted {
        return json!({});
    }
    let who_key = if kind == Grantee::User { "username" } else { "group_name" };
    match anchor {
        Anchor::RegisteredModel => json!({"registered_model_permission":
            {"name": id, who_key: who, "user_id": who, "permission": level}}),
        Anchor::LoggedModel => json!({"logged_model_permission":
            {"model_id": id, who_key: who, "user_id": who, "permission": level}}),
        Anchor::Trace => json!({"trace_permission":
            {"trace_id": id, who_key: who, "user_id": who, "permission": level}}),
        Anchor::GatewayEndpoint => json!({"gateway_endpoint_permission":
            {"endpoint_id": id, who_key: who, "user_id": who, "permission": level}}),
        _ => json!({"experiment_permission": {"experiment_id": id, who_key: who, "user_id": who, "permission": level}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_grant_names_one_grantee_and_a_known_level() {
        assert_eq!(grantee(&obj(json!({"username": "ben"}))).ok(), Some((Grantee::User, "ben".to_string())));
        assert_eq!(grantee(&obj(json!({"group_name": "team-b"}))).ok(), Some((Grantee::Group, "team-b".to_string())));
        assert!(grantee(&obj(json!({"username": "ben", "group_name": "team-b"}))).is_err());
        assert!(grantee(&obj(json!({}))).is_err());
        assert!(level(&obj(json!({"permission": "WRITE"}))).is_err());
        assert_eq!(level(&obj(json!({"permission": "NO_PERMISSIONS"}))).ok().as_deref(), Some("NO_PERMISSIONS"));
    }

    #[test]
    fn answers_have_mlflow_basic_auths_shape() {
        let a = answer(Anchor::Experiment, "1", Grantee::User, "ben", "READ", false);
        assert_eq!(
            a,
            json!({"experiment_permission": {"experiment_id": "1", "username": "ben", "user_id": "ben",
            "permission": "READ"}})
        );
        let a = answer(Anchor::RegisteredModel, "m", Grantee::Group, "team-b", "EDIT", false);
        assert_eq!(a["registered_model_permission"]["group_name"], "team-b");
        let a = answer(Anchor::LoggedModel, "m-1", Grantee::User, "ben", "READ", false);
        assert_eq!(a["logged_model_permission"]["model_id"], "m-1");
        let a = answer(Anchor::Trace, "tr-1", Grantee::Group, "team-b", "NO_PERMISSIONS", false);
        assert_eq!(a["trace_permission"]["trace_id"], "tr-1");
        let a = answer(Anchor::GatewayEndpoint, "e-1", Grantee::User, "ben", "USE", false);
        assert_eq!(a["gateway_endpoint_permission"]["endpoint_id"], "e-1");
    }
}
