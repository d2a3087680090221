//! Dispatch of the grants API, after the policy allowed it (it needs MANAGE on the object): the gate itself reads
//! and writes the object's grants tag (`mlflow_gate.grants`) in MLflow, with its own credentials, in the request's
//! workspace. Request and answer shapes are those of MLflow's basic-auth app (`experiment_id` or `name`,
//! `username`, `permission`; answered as `experiment_permission` / `registered_model_permission`), plus
//! `group_name` in place of `username` for a group grant. Changes are serialised in this process (a read, then a
//! write of the whole tag), and take effect on the next request: nothing caches grants across requests.

use http::Method;
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use super::enrich::permissions::{self, Resolved};
use super::enrich::Enricher;
use crate::error::GateError;
use crate::mlflow::permission::{self, Anchor, Grants, GRANTS_TAG};
use crate::proxy::{RequestContext, Upstream};

/// The grants API; one per gate.
#[derive(Default)]
pub struct GrantsApi {
    /// Read-modify-write of a grants tag, one at a time.
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
        let _writing = if action == Action::Get { None } else { Some(self.writing.lock().await) };
        let resolved = permissions::resolve(enricher, up, ctx, anchor, target, true).await.map_err(|e| {
            tracing::error!(error = %e, "reading the grants failed");
            GateError::LookupFailed
        })?;
        let node = match resolved {
            Resolved::Chain(mut nodes) if !nodes.is_empty() => nodes.remove(0),
            Resolved::Unnamed(why) => return Err(GateError::InvalidParameter(why)),
            _ => return Err(GateError::NotFound(format!("the {} does not exist", anchor.as_str().replace('_', " ")))),
        };
        let mut grants = node.grants.map_err(|e| GateError::InvalidState(e.to_string()))?;
        let map = if kind == "users" { &mut grants.users } else { &mut grants.groups };
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
                map.insert(who.clone(), Value::String(l.clone()));
                write(enricher, up, ctx, anchor, &node.id, &grants).await?;
                l
            }
            (Action::Delete, Some(c), _) => {
                map.remove(&who);
                write(enricher, up, ctx, anchor, &node.id, &grants).await?;
                c
            }
            _ => return Err(missing()),
        };
        Ok(answer(anchor, &node.id, kind, &who, &answer_level, action == Action::Delete))
    }
}

fn singular(kind: &str) -> &'static str {
    if kind == "users" {
        "user"
    } else {
        "group"
    }
}

/// The grantee: exactly one of `username` and `group_name`.
fn grantee(target: &Map<String, Value>) -> Result<(&'static str, String), GateError> {
    let text = |k: &str| target.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    match (text("username"), text("group_name")) {
        (Some(u), None) => Ok(("users", u)),
        (None, Some(g)) => Ok(("groups", g)),
        _ => Err(GateError::InvalidParameter("give exactly one of username and group_name".into())),
    }
}

fn level(target: &Map<String, Value>) -> Result<String, GateError> {
    match target.get("permission").and_then(Value::as_str) {
        Some(l) if permission::is_level(l) => Ok(l.to_string()),
        _ => Err(GateError::InvalidParameter(format!("permission must be one of {}", permission::LEVELS.join(", ")))),
    }
}

/// Writes the whole grants tag of the object, with the gate's credentials.
async fn write(
    enricher: &Enricher,
    up: &Upstream,
    ctx: &RequestContext,
    anchor: Anchor,
    id: &str,
    grants: &Grants,
) -> Result<(), GateError> {
    let (path, body) = match anchor {
        Anchor::RegisteredModel => (
            "/api/2.0/mlflow/registered-models/set-tag",
            json!({"name": id, "key": GRANTS_TAG, "value": grants.to_tag()}),
        ),
        _ => (
            "/api/2.0/mlflow/experiments/set-experiment-tag",
            json!({"experiment_id": id, "key": GRANTS_TAG, "value": grants.to_tag()}),
        ),
    };
    let sent = up.call_json(ctx, Method::POST, path, Some(&body)).await;
    let target = body.as_object().cloned().unwrap_or_default();
    enricher.permission_links.invalidate(ctx, &target).await;
    let (status, reply) = sent.map_err(|e| {
        tracing::error!(error = %e, "writing the grants failed");
        GateError::UpstreamUnavailable
    })?;
    if !status.is_success() {
        tracing::error!(%status, %reply, "MLflow refused the grants tag");
        return Err(GateError::UpstreamUnavailable);
    }
    Ok(())
}

/// MLflow basic-auth's answer shape (`user_id` is the subject here: the gate has no user table).
fn answer(anchor: Anchor, id: &str, kind: &str, who: &str, level: &str, deleted: bool) -> Value {
    if deleted {
        return json!({});
    }
    let who_key = if kind == "users" { "username" } else { "group_name" };
    match anchor {
        Anchor::RegisteredModel => json!({"registered_model_permission":
            {"name": id, who_key: who, "user_id": who, "permission": level}}),
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
        assert_eq!(grantee(&obj(json!({"username": "ben"}))).ok(), Some(("users", "ben".to_string())));
        assert_eq!(grantee(&obj(json!({"group_name": "team-b"}))).ok(), Some(("groups", "team-b".to_string())));
        assert!(grantee(&obj(json!({"username": "ben", "group_name": "team-b"}))).is_err());
        assert!(grantee(&obj(json!({}))).is_err());
        assert!(level(&obj(json!({"permission": "WRITE"}))).is_err());
        assert_eq!(level(&obj(json!({"permission": "NO_PERMISSIONS"}))).ok().as_deref(), Some("NO_PERMISSIONS"));
    }

    #[test]
    fn answers_have_mlflow_basic_auths_shape() {
        let a = answer(Anchor::Experiment, "1", "users", "ben", "READ", false);
        assert_eq!(
            a,
            json!({"experiment_permission": {"experiment_id": "1", "username": "ben", "user_id": "ben",
            "permission": "READ"}})
        );
        let a = answer(Anchor::RegisteredModel, "m", "groups", "team-b", "EDIT", false);
        assert_eq!(a["registered_model_permission"]["group_name"], "team-b");
    }
}
