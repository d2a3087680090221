//! Identity stamps, around forwarding: open-source MLflow records no creator for registered models or versions and
//! takes a run's `user_id` from the client. The gate writes the authenticated subject into reserved tags
//! (`mlflow_gate.*`) of the requests it forwards, records every stage change it lets through, and refuses any
//! client attempt to set or delete a reserved tag, on any route.

use serde_json::{json, Map, Value};

use super::routes::Operation;

/// Prefix of the tags only the gate writes.
pub const RESERVED_PREFIX: &str = "mlflow_gate.";
/// Who created a registered model, a model version, a logged model or a trace (the token's `sub`).
pub const CREATED_BY: &str = "mlflow_gate.created_by";
/// When the gate forwarded the creation (ms since the epoch).
pub const CREATED_AT: &str = "mlflow_gate.created_at";
/// JSON list of `{stage|alias, by, at, request_id}`: every stage change and alias move made through the gate.
pub const STAGE_HISTORY: &str = "mlflow_gate.stage_history";
/// The run tag MLflow shows as the run's user.
pub const RUN_USER_TAG: &str = "mlflow.user";
/// Longest history kept in the tag (MLflow limits tag values to 5000 characters).
const MAX_HISTORY: usize = 25;

/// Operations whose `key` names a tag being set or deleted.
const TAG_WRITES: [&str; 12] = [
    "SetRegisteredModelTag",
    "DeleteRegisteredModelTag",
    "SetModelVersionTag",
    "DeleteModelVersionTag",
    "SetTag",
    "DeleteTag",
    "SetExperimentTag",
    "DeleteExperimentTag",
    "SetTraceTag",
    "DeleteTraceTag",
    "SetTraceTagV3",
    "DeleteTraceTagV3",
];

/// A client write to a reserved tag, if the request makes one: a tag set/delete whose key is reserved, or a
/// creation or batch whose `tags` carry a reserved key (also the run-user tag on runs, which the gate sets).
pub fn reserved_tag_write(
    op: &Operation,
    target: &Map<String, Value>,
    body: Option<&Map<String, Value>>,
) -> Option<String> {
    // Case-insensitive: on MySQL/MSSQL collations MLflow treats `MLFLOW_GATE.x` and `mlflow_gate.x` as one key.
    let is_reserved = |k: &str| k.to_ascii_lowercase().starts_with(RESERVED_PREFIX);
    let is_run_user = |k: &str| k.eq_ignore_ascii_case(RUN_USER_TAG);
    let reserved = |k: &str| is_reserved(k) || (is_run_user(k) && op.rpc != "CreateRun");
    if TAG_WRITES.contains(&op.rpc) || op.rpc == "DeleteLoggedModelTag" {
        // DeleteLoggedModelTag names its key in the path (`tags/<tag_key>`).
        let key = target.get("key").or_else(|| target.get("tag_key")).and_then(Value::as_str);
        if let Some(key) = key.filter(|k| reserved(k)) {
            return Some(key.to_string());
        }
    }
    // The v3 start-trace call carries its tags as a map inside the trace (the gate stamps the creator there).
    if let Some(key) = trace_v3_tags(body).and_then(|t| t.keys().find(|k| is_reserved(k))) {
        return Some(key.clone());
    }
    let tags = body.and_then(|b| b.get("tags")).and_then(Value::as_array)?;
    tags.iter()
        .filter_map(|t| t.get("key").and_then(Value::as_str))
        .find(|k| is_reserved(k) || (is_run_user(k) && op.rpc == "LogBatch"))
        .map(str::to_owned)
}

/// Adds the gate's stamps to a request body about to be forwarded: creator tags on registered models and
/// versions; the run's `user_id` and `mlflow.user` tag on new runs (replacing whatever the client claimed).
pub fn stamp_request(op: &Operation, body: &mut Map<String, Value>, sub: &str, now_ms: u64) {
    match op.rpc {
        "CreateRegisteredModel" | "CreateLoggedModel" => push_tags(body, &[(CREATED_BY, sub.to_string())], &[]),
        "CreateModelVersion" => {
            push_tags(body, &[(CREATED_BY, sub.to_string()), (CREATED_AT, now_ms.to_string())], &[])
        }
        // The owner of the logged model's and the trace's artifact directories (see `artifacts.rs`).
        "StartTrace" => push_tags(body, &[(CREATED_BY, sub.to_string())], &[CREATED_BY]),
        "StartTraceV3" => {
            if let Some(tags) = trace_v3_tags_mut(body) {
                tags.insert(CREATED_BY.to_string(), Value::String(sub.to_string()));
            }
        }
        "CreateRun" => {
            body.insert("user_id".into(), Value::String(sub.to_string()));
            push_tags(body, &[(RUN_USER_TAG, sub.to_string())], &[RUN_USER_TAG]);
        }
        _ => {}
    }
}

/// `trace.trace_info.tags` (either spelling of `trace_info`) of a v3 start-trace body.
fn trace_v3_tags(body: Option<&Map<String, Value>>) -> Option<&Map<String, Value>> {
    let trace = body?.get("trace")?;
    trace.get("trace_info").or_else(|| trace.get("traceInfo"))?.get("tags")?.as_object()
}

/// The same map for stamping, created when the trace has none.
fn trace_v3_tags_mut(body: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    let trace = body.get_mut("trace")?.as_object_mut()?;
    let key =
        if trace.contains_key("traceInfo") && !trace.contains_key("trace_info") { "traceInfo" } else { "trace_info" };
    let info = trace.get_mut(key)?.as_object_mut()?;
    let tags = info.entry("tags").or_insert_with(|| Value::Object(Map::new()));
    if !tags.is_object() {
        *tags = Value::Object(Map::new());
    }
    tags.as_object_mut()
}

fn push_tags(body: &mut Map<String, Value>, add: &[(&str, String)], replace: &[&str]) {
    let tags = body.entry("tags").or_insert_with(|| Value::Array(Vec::new()));
    if !tags.is_array() {
        *tags = Value::Array(Vec::new());
    }
    if let Value::Array(list) = tags {
        list.retain(|t| t.get("key").and_then(Value::as_str).is_none_or(|k| !replace.contains(&k)));
        for (k, v) in add {
            list.push(json!({"key": k, "value": v}));
        }
    }
}

/// The history entry to append after a permitted stage change or alias move, if the operation is one.
pub fn history_entry(
    op: &Operation,
    target: &Map<String, Value>,
    sub: &str,
    now_ms: u64,
    request_id: &str,
) -> Option<Value> {
    let (field, value) = match op.rpc {
        "TransitionModelVersionStage" => ("stage", target.get("stage")?.as_str()?),
        "SetRegisteredModelAlias" => ("alias", target.get("alias")?.as_str()?),
        _ => return None,
    };
    Some(json!({ field: value, "by": sub, "at": now_ms, "request_id": request_id }))
}

/// The new value of the history tag: the old list (as the enrichment read it) with the entry appended, bounded.
pub fn appended_history(previous: &[Value], entry: Value) -> String {
    let mut list: Vec<Value> = previous.to_vec();
    list.push(entry);
    let skip = list.len().saturating_sub(MAX_HISTORY);
    Value::Array(list.into_iter().skip(skip).collect()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlflow::routes::Resource;

    fn op(rpc: &'static str) -> Operation {
        Operation::plain(rpc, false, Resource::ModelVersion)
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn reserved_tags_cannot_be_written_by_clients() {
        let t = obj(json!({"key": "mlflow_gate.created_by"}));
        assert!(reserved_tag_write(&op("SetModelVersionTag"), &t, None).is_some());
        assert!(reserved_tag_write(&op("DeleteRegisteredModelTag"), &t, None).is_some());
        let body = obj(json!({"name": "m", "tags": [{"key": "mlflow_gate.created_by", "value": "ci"}]}));
        assert!(reserved_tag_write(&op("CreateModelVersion"), &Map::new(), Some(&body)).is_some());
        assert!(reserved_tag_write(&op("SetTag"), &obj(json!({"key": "mlflow.user"})), None).is_some());
        assert!(reserved_tag_write(&op("SetModelVersionTag"), &obj(json!({"key": "team"})), None).is_none());
        assert!(reserved_tag_write(&op("SetModelVersionTag"), &obj(json!({"key": "MLflow_Gate.created_by"})), None)
            .is_some());
    }

    #[test]
    fn creations_and_runs_are_stamped_with_the_subject() {
        let mut b = obj(json!({"name": "m", "source": "s"}));
        stamp_request(&op("CreateModelVersion"), &mut b, "alice", 5);
        assert_eq!(b["tags"], json!([{"key": CREATED_BY, "value": "alice"}, {"key": CREATED_AT, "value": "5"}]));
        let mut run = obj(
            json!({"experiment_id": "1", "user_id": "mallory", "tags": [{"key": "mlflow.user", "value": "mallory"}, {"key": "x", "value": "y"}]}),
        );
        stamp_request(&op("CreateRun"), &mut run, "alice", 5);
        assert_eq!(run["user_id"], "alice");
        assert_eq!(run["tags"], json!([{"key": "x", "value": "y"}, {"key": "mlflow.user", "value": "alice"}]));
        let mut logged = obj(json!({"experiment_id": "1", "source_run_id": "r1"}));
        stamp_request(&op("CreateLoggedModel"), &mut logged, "alice", 5);
        assert_eq!(logged["tags"], json!([{"key": CREATED_BY, "value": "alice"}]));
    }

    #[test]
    fn a_logged_model_creator_stamp_cannot_be_deleted_through_the_path() {
        let t = obj(json!({"model_id": "m-1", "tag_key": "mlflow_gate.created_by"}));
        assert!(reserved_tag_write(&op("DeleteLoggedModelTag"), &t, None).is_some());
        let t = obj(json!({"model_id": "m-1", "tag_key": "team"}));
        assert!(reserved_tag_write(&op("DeleteLoggedModelTag"), &t, None).is_none());
    }

    #[test]
    fn history_is_appended_and_bounded() {
        let prev: Vec<Value> = (0..30).map(|i| json!({"stage": "Staging", "at": i})).collect();
        let entry =
            history_entry(&op("TransitionModelVersionStage"), &obj(json!({"stage": "Production"})), "ci", 99, "r");
        let h: Vec<Value> =
            serde_json::from_str(&appended_history(&prev, entry.unwrap_or_default())).unwrap_or_default();
        assert_eq!(h.len(), MAX_HISTORY);
        assert_eq!(h.last().map(|e| e["stage"].clone()), Some(json!("Production")));
    }

    #[test]
    fn traces_are_stamped_with_their_creator() {
        let mut t = obj(json!({"request_id": "tr-1", "tags": [{"key": CREATED_BY, "value": "mallory"}]}));
        stamp_request(&op("StartTrace"), &mut t, "alice", 5);
        assert_eq!(t["tags"], json!([{"key": CREATED_BY, "value": "alice"}]));
        let mut t = obj(json!({"trace": {"trace_info": {"trace_id": "tr-1", "tags": {"x": "y"}}}}));
        stamp_request(&op("StartTraceV3"), &mut t, "alice", 5);
        assert_eq!(t["trace"]["trace_info"]["tags"], json!({"x": "y", CREATED_BY: "alice"}));
        let mut t = obj(json!({"trace": {"traceInfo": {"trace_id": "tr-1"}}}));
        stamp_request(&op("StartTraceV3"), &mut t, "alice", 5);
        assert_eq!(t["trace"]["traceInfo"]["tags"], json!({CREATED_BY: "alice"}));
    }

    #[test]
    fn reserved_tags_in_v3_trace_maps_are_refused() {
        let body = obj(json!({"trace": {"trace_info": {"tags": {"mlflow_gate.created_by": "alice"}}}}));
        assert!(reserved_tag_write(&op("StartTraceV3"), &Map::new(), Some(&body)).is_some());
        assert!(reserved_tag_write(&op("SetTraceTagV3"), &obj(json!({"key": "MLFLOW_GATE.x"})), None).is_some());
    }
}
