//! After the request path: the names of the registry events a webhook can subscribe to, and the Databricks-shaped
//! JSON body one delivery carries.

use serde_json::{Map, Value};

use super::Event;

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

/// Keys the gate sets itself; an event field with one of these names is ignored.
const RESERVED: &[&str] = &["event", "webhook_id", "event_timestamp", "model_name", "principal", "decision_id"];

/// The exact body of one delivery: `event`, `webhook_id`, `event_timestamp` (ms), `model_name`, the event's fields
/// in their order, then `principal` and `decision_id`.
pub(crate) fn payload(event: &Event, webhook_id: &str, timestamp_ms: u64) -> String {
    let mut body = Map::new();
    body.insert("event".into(), Value::from(event.event.as_str()));
    body.insert("webhook_id".into(), Value::from(webhook_id));
    body.insert("event_timestamp".into(), Value::from(timestamp_ms));
    if let Some(model) = &event.model_name {
        body.insert("model_name".into(), Value::from(model.as_str()));
    }
    for (k, v) in &event.fields {
        if !RESERVED.contains(&k.as_str()) {
            body.insert(k.clone(), v.clone());
        }
    }
    if let Some(principal) = &event.principal {
        body.insert("principal".into(), Value::from(principal.as_str()));
    }
    body.insert("decision_id".into(), Value::from(event.decision_id.as_str()));
    Value::Object(body).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_databricks_shape_and_gate_keys_win() {
        let mut fields = Map::new();
        fields.insert("version".into(), Value::from("8"));
        fields.insert("to_stage".into(), Value::from("Production"));
        fields.insert("event".into(), Value::from("SPOOFED"));
        let event = Event {
            event: "MODEL_VERSION_TRANSITIONED_STAGE".into(),
            model_name: Some("m".into()),
            fields,
            principal: Some("alice".into()),
            decision_id: "d-1".into(),
        };
        let body = payload(&event, "abc", 1589859029343);
        assert_eq!(
            body,
            r#"{"event":"MODEL_VERSION_TRANSITIONED_STAGE","webhook_id":"abc","event_timestamp":1589859029343,"model_name":"m","version":"8","to_stage":"Production","principal":"alice","decision_id":"d-1"}"#
        );
    }

    #[test]
    fn known_events_include_the_gate_extensions() {
        assert!(is_known_event("POLICY_DENIED") && is_known_event("MODEL_VERSION_TAG_SET"));
        assert!(!is_known_event("model_version.created"));
    }
}
