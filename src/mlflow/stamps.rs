//! Identity stamps, around forwarding: open-source MLflow records no creator for registered models or versions and
//! takes a run's `user_id` from the client. The gate writes the authenticated subject into reserved tags
//! (`mlflow_gate.*`) of the requests it forwards, records every stage change it lets through, and refuses any
//! client attempt to set or delete a reserved tag, on any route.

use serde_json::{json, Map, Value};

use super::routes::Operation;
use crate::fold::fold;

/// Prefix of the tags only the gate writes.
pub const RESERVED_PREFIX: &str = "mlflow_gate.";
/// Who created a registered model or a model version (the token's `sub`).
pub const CREATED_BY: &str = "mlflow_gate.created_by";
/// When the gate forwarded the creation (ms since the epoch).
pub const CREATED_AT: &str = "mlflow_gate.created_at";
/// JSON list of `{stage|alias, by, at, request_id}`: every stage change and alias move made through the gate.
pub const STAGE_HISTORY: &str = "mlflow_gate.stage_history";
/// The run tag MLflow shows as the run's user.
pub const RUN_USER_TAG: &str = "mlflow.user";
/// Longest history kept in the tag (MLflow limits tag values to 5000 characters).
const MAX_HISTORY: usize = 25;

/// Operations that set or delete one tag, and the target field naming its key (body, query or path).
const TAG_WRITES: [(&str, &str); 28] = [
    ("SetRegisteredModelTag", "key"),
    ("DeleteRegisteredModelTag", "key"),
    ("SetModelVersionTag", "key"),
    ("DeleteModelVersionTag", "key"),
    ("SetTag", "key"),
    ("DeleteTag", "key"),
    ("SetExperimentTag", "key"),
    ("DeleteExperimentTag", "key"),
    ("SetTraceTag", "key"),
    ("DeleteTraceTag", "key"),
    ("SetTraceTagV3", "key"),
    ("DeleteTraceTagV3", "key"),
    ("DeleteLoggedModelTag", "tag_key"),
    ("DeleteDatasetTag", "key"),
    ("SetGatewayEndpointTag", "key"),
    ("DeleteGatewayEndpointTag", "key"),
    ("SetMcpServerTag", "key"),
    ("DeleteMcpServerTag", "key"),
    ("SetMcpServerVersionTag", "key"),
    ("DeleteMcpServerVersionTag", "key"),
    ("SetSkillTag", "key"),
    ("DeleteSkillTag", "key"),
    ("SetSkillVersionTag", "key"),
    ("DeleteSkillVersionTag", "key"),
    ("SetOrganizationSkillTag", "key"),
    ("DeleteOrganizationSkillTag", "key"),
    ("SetOrganizationSkillVersionTag", "key"),
    ("DeleteOrganizationSkillVersionTag", "key"),
];

/// A client write of tags that the gate refuses before the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagRefusal {
    /// The request sets or deletes a tag only the gate writes.
    #[error(
        "the tag {0:?} is reserved: only mlflow-gate writes it (tags starting with \"mlflow_gate.\" and the run tag \"mlflow.user\")"
    )]
    Reserved(String),
    /// A `tags` field holds a JSON string (datasets) that the gate cannot read as an object, so its keys are unknown.
    #[error("the body's {0:?} field is not a JSON object the gate can read, so its tag keys cannot be checked")]
    Unreadable(&'static str),
}

/// Refuses a client write to a reserved tag: a tag set/delete whose key is reserved, or a request whose tag
/// containers carry a reserved key (also the run-user tag on runs, which the gate sets). The containers, from
/// MLflow's request messages: `tags` as a list of `{key, value}` (creations, log-batch, v2 traces, logged models,
/// prompt-optimization jobs), as a JSON string holding an object (datasets), `datasets[].tags` (log-inputs) and
/// `trace.trace_info.tags`, a map, also spelled `traceInfo` (v3 start-trace).
pub fn reserved_tag_write(
    op: &Operation,
    target: &Map<String, Value>,
    body: Option<&Map<String, Value>>,
) -> Result<(), TagRefusal> {
    let reserved = |k: &str| is_reserved(k) || (is_run_user(k) && op.rpc != "CreateRun");
    if let Some((_, field)) = TAG_WRITES.iter().find(|(rpc, _)| *rpc == op.rpc) {
        if let Some(key) = target.get(*field).and_then(Value::as_str).filter(|k| reserved(k)) {
            return Err(TagRefusal::Reserved(key.to_string()));
        }
    }
    let Some(body) = body else { return Ok(()) };
    let in_containers = |k: &str| is_reserved(k) || (is_run_user(k) && op.rpc == "LogBatch");
    match tag_keys(body)?.into_iter().find(|k| in_containers(k)) {
        Some(key) => Err(TagRefusal::Reserved(key)),
        None => Ok(()),
    }
}

/// Whether a tag key is the gate's. Folded and trimmed: on MySQL/MSSQL collations MLflow treats `MLFLOW_GATE.x`,
/// `mlflow_gate.x ` (trailing space) and full-width spellings as `mlflow_gate.x`.
fn is_reserved(key: &str) -> bool {
    fold(key.trim()).trim_start().starts_with(RESERVED_PREFIX)
}

fn is_run_user(key: &str) -> bool {
    fold(key.trim()) == RUN_USER_TAG
}

/// Every tag key the body sends, in every container MLflow reads tags from.
fn tag_keys(body: &Map<String, Value>) -> Result<Vec<String>, TagRefusal> {
    let mut keys = Vec::new();
    container_keys(body.get("tags"), &mut keys)?;
    if let Some(datasets) = body.get("datasets").and_then(Value::as_array) {
        for dataset in datasets {
            container_keys(dataset.get("tags"), &mut keys)?;
        }
    }
    if let Some(trace) = body.get("trace") {
        for spelling in ["trace_info", "traceInfo"] {
            container_keys(trace.get(spelling).and_then(|info| info.get("tags")), &mut keys)?;
        }
    }
    Ok(keys)
}

/// The keys of one container: a list of `{key, value}`, a map, or a JSON string holding a map.
fn container_keys(tags: Option<&Value>, keys: &mut Vec<String>) -> Result<(), TagRefusal> {
    match tags {
        Some(Value::Array(list)) => {
            keys.extend(list.iter().filter_map(|t| t.get("key").and_then(Value::as_str)).map(str::to_owned))
        }
        Some(Value::Object(map)) => keys.extend(map.keys().cloned()),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => keys.extend(map.keys().cloned()),
            Ok(_) => {}
            Err(_) => return Err(TagRefusal::Unreadable("tags")),
        },
        _ => {}
    }
    Ok(())
}

/// Adds the gate's stamps to a request body about to be forwarded: creator tags on registered models and
/// versions; the run's `user_id` and `mlflow.user` tag on new runs (replacing whatever the client claimed).
pub fn stamp_request(op: &Operation, body: &mut Map<String, Value>, sub: &str, now_ms: u64) {
    match op.rpc {
        "CreateRegisteredModel" => push_tags(body, &[(CREATED_BY, sub.to_string())], &[]),
        "CreateModelVersion" => {
            push_tags(body, &[(CREATED_BY, sub.to_string()), (CREATED_AT, now_ms.to_string())], &[])
        }
        "CreateRun" => {
            body.insert("user_id".into(), Value::String(sub.to_string()));
            push_tags(body, &[(RUN_USER_TAG, sub.to_string())], &[RUN_USER_TAG]);
        }
        _ => {}
    }
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
        let refused = |rpc, target: Value, body: Option<Value>| {
            let body = body.map(obj);
            reserved_tag_write(&op(rpc), &obj(target), body.as_ref()).is_err()
        };
        let t = json!({"key": "mlflow_gate.created_by"});
        assert!(refused("SetModelVersionTag", t.clone(), None));
        assert!(refused("DeleteRegisteredModelTag", t, None));
        assert!(refused("SetTag", json!({"key": "mlflow.user"}), None));
        assert!(!refused("SetModelVersionTag", json!({"key": "team"}), None));
        assert!(refused("SetModelVersionTag", json!({"key": "MLflow_Gate.created_by"}), None));
        assert!(refused("SetModelVersionTag", json!({"key": " mlflow_gate.created_by "}), None));
        assert!(refused("SetModelVersionTag", json!({"key": "ｍｌｆｌｏｗ_gate.created_by"}), None));
        assert!(!refused("CreateRun", json!({}), Some(json!({"tags": [{"key": "mlflow.user", "value": "x"}]}))));
    }

    /// One row per route that names one tag key: (rpc, target field).
    #[test]
    fn every_single_tag_route_refuses_a_reserved_key() {
        for (rpc, field) in TAG_WRITES {
            let target = json!({ field: "mlflow_gate.created_by" });
            assert_eq!(
                reserved_tag_write(&op(rpc), &obj(target), None),
                Err(TagRefusal::Reserved("mlflow_gate.created_by".into())),
                "{rpc}"
            );
            assert_eq!(reserved_tag_write(&op(rpc), &obj(json!({ field: "team" })), None), Ok(()), "{rpc}");
        }
    }

    /// One row per tag container MLflow reads (found in its request messages: every field named `tags` at any
    /// depth of an RPC's request).
    #[test]
    fn every_tag_container_refuses_a_reserved_key() {
        let key = "mlflow_gate.created_by";
        let containers = [
            ("CreateModelVersion", json!({"name": "m", "tags": [{"key": key, "value": "ci"}]})),
            ("CreateRegisteredModel", json!({"name": "m", "tags": [{"key": key, "value": "ci"}]})),
            ("CreateExperiment", json!({"name": "e", "tags": [{"key": key, "value": "ci"}]})),
            ("CreateRun", json!({"tags": [{"key": key, "value": "ci"}]})),
            ("LogBatch", json!({"run_id": "r", "tags": [{"key": key, "value": "ci"}]})),
            ("LogBatch", json!({"run_id": "r", "tags": [{"key": "mlflow.user", "value": "ci"}]})),
            ("StartTrace", json!({"experiment_id": "1", "tags": [{"key": key, "value": "ci"}]})),
            ("EndTrace", json!({"tags": [{"key": key, "value": "ci"}]})),
            ("CreateLoggedModel", json!({"experiment_id": "1", "tags": [{"key": key, "value": "ci"}]})),
            ("SetLoggedModelTags", json!({"tags": [{"key": key, "value": "ci"}]})),
            ("CreatePromptOptimizationJob", json!({"tags": [{"key": key, "value": "ci"}]})),
            ("CreateDataset", json!({"name": "d", "tags": format!("{{\"{key}\": \"ci\"}}")})),
            ("SetDatasetTags", json!({"tags": format!("{{\"team\": \"a\", \"{key}\": \"ci\"}}")})),
            ("LogInputs", json!({"run_id": "r", "datasets": [{"dataset": {}, "tags": [{"key": key, "value": "ci"}]}]})),
            ("StartTraceV3", json!({"trace": {"trace_info": {"trace_id": "t", "tags": {key: "ci"}}}})),
            ("StartTraceV3", json!({"trace": {"traceInfo": {"trace_id": "t", "tags": {"team": "a", key: "ci"}}}})),
        ];
        for (rpc, body) in containers {
            let refusal = reserved_tag_write(&op(rpc), &Map::new(), Some(&obj(body.clone())));
            assert!(matches!(refusal, Err(TagRefusal::Reserved(_))), "{rpc}: {body}");
        }
        let harmless = json!({"trace": {"trace_info": {"tags": {"team": "a"}, "trace_metadata": {key: "x"}}},
            "datasets": [{"tags": [{"key": "mlflow.data.context", "value": "train"}]}], "tags": "{\"team\": \"a\"}"});
        assert_eq!(reserved_tag_write(&op("StartTraceV3"), &Map::new(), Some(&obj(harmless))), Ok(()));
    }

    #[test]
    fn unreadable_dataset_tags_are_refused() {
        // Python's json.loads reads NaN; serde does not: the keys next to it would go unchecked.
        let body = obj(json!({"tags": "{\"mlflow_gate.created_by\": \"x\", \"n\": NaN}"}));
        assert_eq!(
            reserved_tag_write(&op("SetDatasetTags"), &Map::new(), Some(&body)),
            Err(TagRefusal::Unreadable("tags"))
        );
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
}
