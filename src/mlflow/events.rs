//! After forwarding: which registry events (Databricks' names) a permitted mutation produced, once MLflow confirmed
//! it. Built from the target the policy saw, the facts looked up before, and MLflow's response (for the version
//! number of a new model version).

use serde_json::{json, Map, Value};

use super::routes::{rpc, Operation};
use super::target::field;

/// Every event name a `[[webhooks]]` entry may list: Databricks' registry-webhook events, then the gate's own
/// (`MODEL_VERSION_ALIAS_SET`, `MODEL_VERSION_ALIAS_DELETED`, `POLICY_DENIED`, `AUDIT_CHECKPOINT`).
pub const KNOWN_EVENTS: &[&str] = &[
    "MODEL_VERSION_CREATED",
    "MODEL_VERSION_TRANSITIONED_STAGE",
    "MODEL_VERSION_TRANSITIONED_TO_STAGING",
    "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
    "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED",
    "TRANSITION_REQUEST_CREATED",
    "TRANSITION_REQUEST_TO_STAGING_CREATED",
    "TRANSITION_REQUEST_TO_PRODUCTION_CREATED",
    "TRANSITION_REQUEST_TO_ARCHIVED_CREATED",
    "COMMENT_CREATED",
    "REGISTERED_MODEL_CREATED",
    "MODEL_VERSION_TAG_SET",
    "MODEL_VERSION_ALIAS_SET",
    "MODEL_VERSION_ALIAS_DELETED",
    "POLICY_DENIED",
    AUDIT_CHECKPOINT,
];

/// A signed audit-log checkpoint (`{"checkpoint": {seq, mac, time, key_id, checkpoint_mac}}`), published every N
/// records, every T seconds, at rotation and at shutdown; registry-wide hooks only (it names no model).
pub const AUDIT_CHECKPOINT: &str = "AUDIT_CHECKPOINT";

/// Whether `name` is one of [`KNOWN_EVENTS`].
pub fn is_known_event(name: &str) -> bool {
    KNOWN_EVENTS.contains(&name)
}

/// One event: its name, the model it concerns, and its payload fields.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryEvent {
    /// Databricks event name.
    pub event: &'static str,
    /// The registered model.
    pub model_name: Option<String>,
    /// Payload fields (`version`, `from_stage`, `to_stage`, `tags`, `alias`, `comment`, ...).
    pub fields: Map<String, Value>,
}

/// Whether an operation can produce events (so the gate reads MLflow's response for it).
pub fn produces_events(op: &Operation) -> bool {
    matches!(
        op.rpc,
        rpc::CREATE_REGISTERED_MODEL
            | rpc::CREATE_MODEL_VERSION
            | rpc::TRANSITION_MODEL_VERSION_STAGE
            | rpc::SET_MODEL_VERSION_TAG
            | rpc::SET_REGISTERED_MODEL_ALIAS
            | rpc::DELETE_REGISTERED_MODEL_ALIAS
    )
}

/// The events of a confirmed mutation. `response` is MLflow's JSON answer.
pub fn for_mutation(op: &Operation, resource: &Value, response: &Value) -> Vec<RegistryEvent> {
    let target = resource.get("target").and_then(Value::as_object).cloned().unwrap_or_default();
    let name = field(&target, "name").map(str::to_owned);
    let version = field(&target, "version").map(str::to_owned);
    let one = |event: &'static str, fields: Value| RegistryEvent {
        event,
        model_name: name.clone(),
        fields: fields.as_object().cloned().unwrap_or_default(),
    };
    match op.rpc {
        rpc::CREATE_REGISTERED_MODEL => vec![one("REGISTERED_MODEL_CREATED", json!({}))],
        rpc::CREATE_MODEL_VERSION => {
            let mv = response.get("model_version").cloned().unwrap_or_default();
            vec![one(
                "MODEL_VERSION_CREATED",
                json!({"version": mv.get("version"), "source": mv.get("source"),
                "run_id": mv.get("run_id"), "to_stage": "None"}),
            )]
        }
        rpc::TRANSITION_MODEL_VERSION_STAGE => {
            let from = resource.pointer("/model_version/current_stage").cloned().unwrap_or(Value::Null);
            let to = target.get("stage").cloned().unwrap_or(Value::Null);
            transition_events(name.as_deref(), version.as_deref(), &from, &to)
        }
        rpc::SET_MODEL_VERSION_TAG => vec![one(
            "MODEL_VERSION_TAG_SET",
            json!({"version": version,
            "tags": [{"key": target.get("key"), "value": target.get("value")}]}),
        )],
        rpc::SET_REGISTERED_MODEL_ALIAS => {
            vec![one("MODEL_VERSION_ALIAS_SET", json!({"version": version, "alias": target.get("alias")}))]
        }
        rpc::DELETE_REGISTERED_MODEL_ALIAS => {
            let holder = resource.pointer("/alias_holder/version").cloned().unwrap_or(Value::Null);
            vec![one("MODEL_VERSION_ALIAS_DELETED", json!({"version": holder, "alias": target.get("alias")}))]
        }
        _ => Vec::new(),
    }
}

/// `MODEL_VERSION_TRANSITIONED_STAGE` plus the per-stage event (to Staging, Production or Archived).
pub fn transition_events(name: Option<&str>, version: Option<&str>, from: &Value, to: &Value) -> Vec<RegistryEvent> {
    let fields = json!({"version": version, "from_stage": from, "to_stage": to});
    let fields = fields.as_object().cloned().unwrap_or_default();
    let mut events = vec![RegistryEvent {
        event: "MODEL_VERSION_TRANSITIONED_STAGE",
        model_name: name.map(str::to_owned),
        fields: fields.clone(),
    }];
    let specific = match to.as_str() {
        Some("Staging") => Some("MODEL_VERSION_TRANSITIONED_TO_STAGING"),
        Some("Production") => Some("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"),
        Some("Archived") => Some("MODEL_VERSION_TRANSITIONED_TO_ARCHIVED"),
        _ => None,
    };
    if let Some(event) = specific {
        events.push(RegistryEvent { event, model_name: name.map(str::to_owned), fields });
    }
    events
}

/// The events of a transition request to a stage, or to an alias (`to_alias`, no stage-specific event).
pub fn request_events(
    name: &str,
    version: &str,
    wanted: super::workflow::Requested<'_>,
    comment: Option<&str>,
) -> Vec<RegistryEvent> {
    use super::workflow::Requested;
    let (stage, alias) = match wanted {
        Requested::Stage(s) => (Some(s), None),
        Requested::Alias(a) | Requested::AliasRemoval(a) => (None, Some(a)),
    };
    let mut fields = json!({"version": version, "to_stage": stage, "comment": comment});
    if let (Some(a), Value::Object(m)) = (alias, &mut fields) {
        m.insert("to_alias".into(), Value::String(a.to_string()));
        if matches!(wanted, Requested::AliasRemoval(_)) {
            m.insert("alias_action".into(), Value::String(super::workflow::ALIAS_DELETE.into()));
        }
    }
    let fields = fields.as_object().cloned().unwrap_or_default();
    let mut events = vec![RegistryEvent {
        event: "TRANSITION_REQUEST_CREATED",
        model_name: Some(name.into()),
        fields: fields.clone(),
    }];
    let specific = match stage {
        Some("Staging") => Some("TRANSITION_REQUEST_TO_STAGING_CREATED"),
        Some("Production") => Some("TRANSITION_REQUEST_TO_PRODUCTION_CREATED"),
        Some("Archived") => Some("TRANSITION_REQUEST_TO_ARCHIVED_CREATED"),
        _ => None,
    };
    if let Some(event) = specific {
        events.push(RegistryEvent { event, model_name: Some(name.into()), fields });
    }
    events
}

/// The event of an alias moved onto a version (by the gate, on approval).
pub fn alias_set_events(name: &str, version: &str, alias: &str) -> Vec<RegistryEvent> {
    let fields = json!({"version": version, "alias": alias}).as_object().cloned().unwrap_or_default();
    vec![RegistryEvent { event: "MODEL_VERSION_ALIAS_SET", model_name: Some(name.into()), fields }]
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::mlflow::routes::Resource;

    #[test]
    fn known_events_include_the_gate_extensions() {
        assert!(is_known_event("POLICY_DENIED") && is_known_event("MODEL_VERSION_TAG_SET"));
        assert!(!is_known_event("model_version.created"));
    }

    fn op(rpc: &'static str) -> Operation {
        Operation::plain(rpc, false, Resource::ModelVersion)
    }

    #[test]
    fn a_production_transition_produces_both_databricks_events() {
        let resource = json!({"target": {"name": "m", "version": "3", "stage": "Production"}, "model_version": {"current_stage": "Staging"}});
        let events = for_mutation(&op("TransitionModelVersionStage"), &resource, &json!({}));
        let names: Vec<&str> = events.iter().map(|e| e.event).collect();
        assert_eq!(names, ["MODEL_VERSION_TRANSITIONED_STAGE", "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"]);
        assert_eq!(events[0].fields["from_stage"], "Staging");
        assert_eq!(events[0].model_name.as_deref(), Some("m"));
    }

    #[test]
    fn a_new_version_takes_its_number_from_mlflows_answer() {
        let resource = json!({"target": {"name": "m", "source": "runs:/r/model"}});
        let events = for_mutation(
            &op("CreateModelVersion"),
            &resource,
            &json!({"model_version": {"version": "4", "source": "runs:/r/model"}}),
        );
        assert_eq!(events[0].event, "MODEL_VERSION_CREATED");
        assert_eq!(events[0].fields["version"], "4");
    }

    #[test]
    fn an_alias_request_names_its_alias_and_no_stage() {
        let events = request_events("m", "3", crate::mlflow::workflow::Requested::Alias("champion"), Some("why"));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "TRANSITION_REQUEST_CREATED");
        assert_eq!(events[0].fields.get("to_alias"), Some(&json!("champion")));
        assert_eq!(events[0].fields.get("to_stage"), Some(&Value::Null));
        let stage = request_events("m", "3", crate::mlflow::workflow::Requested::Stage("Production"), None);
        assert_eq!(
            stage.iter().map(|e| e.event).collect::<Vec<_>>(),
            ["TRANSITION_REQUEST_CREATED", "TRANSITION_REQUEST_TO_PRODUCTION_CREATED"]
        );
        assert!(stage[0].fields.get("to_alias").is_none());
    }
}
