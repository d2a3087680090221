//! After the request path: the names of the registry events a webhook can subscribe to, and the Databricks-shaped
//! JSON body one delivery carries.

use serde_json::{Map, Value};

use super::Event;

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
}
