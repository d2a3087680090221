//! Identity stamps, around forwarding: open-source MLflow records no creator for registered models or versions and
//! takes a run's `user_id` from the client. The gate writes the authenticated subject into reserved tags
//! (`mlflow_gate.*`) of the requests it forwards, records every stage change it lets through, and refuses any
//! client attempt to set or delete a reserved tag, on any route.

use serde_json::{json, Map, Value};

use super::routes::{rpc, Operation};
use crate::fold::fold;

/// Prefix of the tags only the gate writes.
pub const RESERVED_PREFIX: &str = "mlflow_gate.";
/// Who created an experiment, a registered model, a model version, a logged model or a trace (the token's `sub`).
pub const CREATED_BY: &str = "mlflow_gate.created_by";
/// When the gate forwarded the creation (ms since the epoch).
pub const CREATED_AT: &str = "mlflow_gate.created_at";
/// JSON list of `{stage|alias, by, at, request_id}`: the history as earlier gates wrote it (read-append-write of one
/// tag, which lost entries when two replicas changed a version at once). Still read; new entries go to one tag
/// each (`history::HISTORY_PREFIX`).
pub const STAGE_HISTORY: &str = "mlflow_gate.stage_history";
/// The run tag MLflow shows as the run's user.
pub const RUN_USER_TAG: &str = "mlflow.user";

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

/// A client write to a reserved tag, if the request makes one: a tag set/delete whose key is reserved, or a
/// request whose tag containers carry a reserved key (also the run-user tag on runs, which the gate sets). The
/// containers, from MLflow's request messages: `tags` as a list of `{key, value}` (creations, log-batch, v2 traces,
/// logged models, prompt-optimization jobs), as a JSON string holding an object (datasets; one the gate cannot read
/// is refused first, see [`unreadable_tags`]), `datasets[].tags` (log-inputs) and `trace.trace_info.tags`, a map,
/// also spelled `traceInfo` (v3 start-trace).
pub fn reserved_tag_write(
    op: &Operation,
    target: &Map<String, Value>,
    body: Option<&Map<String, Value>>,
) -> Option<String> {
    let reserved = |k: &str| is_reserved(k) || (is_run_user(k) && op.rpc != rpc::CREATE_RUN);
    if let Some((_, field)) = TAG_WRITES.iter().find(|(rpc, _)| *rpc == op.rpc) {
        if let Some(key) = target.get(*field).and_then(Value::as_str).filter(|k| reserved(k)) {
            return Some(key.to_string());
        }
    }
    let in_containers = |k: &str| is_reserved(k) || (is_run_user(k) && op.rpc == rpc::LOG_BATCH);
    tag_keys(body?).into_iter().find(|k| in_containers(k))
}

/// Why the body's tags cannot be checked, if they cannot: a `tags` JSON string (datasets) that does not parse as
/// JSON here. MLflow's Python parser reads more (`NaN`, lone surrogates), so the keys next to such a value would go
/// unchecked; the request is refused instead.
pub fn unreadable_tags(body: Option<&Map<String, Value>>) -> Option<String> {
    let text = body?.get("tags")?.as_str()?;
    serde_json::from_str::<Value>(text).err().map(|e| {
        format!("the body's \"tags\" field is not JSON the gate can read ({e}), so its tag keys cannot be checked")
    })
}

/// Whether a tag key is the gate's. Folded and trimmed: on MySQL/MSSQL collations MLflow treats `MLFLOW_GATE.x`,
/// `mlflow_gate.x ` (trailing space) and full-width spellings as `mlflow_gate.x`.
pub(crate) fn is_reserved(key: &str) -> bool {
    fold(key.trim()).trim_start().starts_with(RESERVED_PREFIX)
}

fn is_run_user(key: &str) -> bool {
    fold(key.trim()) == RUN_USER_TAG
}

/// Every tag key the body sends, in every container MLflow reads tags from.
fn tag_keys(body: &Map<String, Value>) -> Vec<String> {
    let mut keys = Vec::new();
    container_keys(body.get("tags"), &mut keys);
    if let Some(datasets) = body.get("datasets").and_then(Value::as_array) {
        for dataset in datasets {
            container_keys(dataset.get("tags"), &mut keys);
        }
    }
    if let Some(trace) = body.get("trace") {
        for spelling in ["trace_info", "traceInfo"] {
            container_keys(trace.get(spelling).and_then(|info| info.get("tags")), &mut keys);
        }
    }
    keys
}

/// The keys of one container: a list of `{key, value}`, a map, or a JSON string holding a map.
fn container_keys(tags: Option<&Value>, keys: &mut Vec<String>) {
    match tags {
        Some(Value::Array(list)) => {
            keys.extend(list.iter().filter_map(|t| t.get("key").and_then(Value::as_str)).map(str::to_owned))
        }
        Some(Value::Object(map)) => keys.extend(map.keys().cloned()),
        Some(Value::String(text)) => {
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) {
                keys.extend(map.keys().cloned())
            }
        }
        _ => {}
    }
}

/// A copy of a registered version (a body whose `source` is `models:/...`: `model-versions/create` as
/// `MlflowClient.copy_model_version` sends it) carries the source version's tags, the gate's stamps and review
/// activities among them. Those belong to the source version (its creator, its approvals), so they are dropped from
/// the body before the policy sees it, and the copy is stamped anew. Returns how many were dropped.
pub fn drop_copied_stamps(body: &mut Map<String, Value>) -> usize {
    let copy = body.get("source").and_then(Value::as_str).is_some_and(|s| s.starts_with("models:/"));
    let Some(Value::Array(tags)) = body.get_mut("tags").filter(|_| copy) else { return 0 };
    let before = tags.len();
    tags.retain(|t| !t.get("key").and_then(Value::as_str).is_some_and(is_reserved));
    before - tags.len()
}

/// Adds the gate's stamps to a request body about to be forwarded: creator tags on registered models and
/// versions; the run's `user_id` and `mlflow.user` tag on new runs (replacing whatever the client claimed).
pub fn stamp_request(op: &Operation, body: &mut Map<String, Value>, sub: &str, now_ms: u64) {
    match op.rpc {
        rpc::CREATE_REGISTERED_MODEL | rpc::CREATE_LOGGED_MODEL | rpc::CREATE_EXPERIMENT => {
            push_tags(body, &[(CREATED_BY, sub.to_string())], &[])
        }
        rpc::CREATE_MODEL_VERSION => {
            push_tags(body, &[(CREATED_BY, sub.to_string()), (CREATED_AT, now_ms.to_string())], &[])
        }
        // The owner of the logged model's and the trace's artifact directories (see `artifacts.rs`).
        rpc::START_TRACE => push_tags(body, &[(CREATED_BY, sub.to_string())], &[CREATED_BY]),
        "StartTraceV3" => {
            if let Some(tags) = trace_v3_tags_mut(body) {
                tags.insert(CREATED_BY.to_string(), Value::String(sub.to_string()));
            }
        }
        // A dataset's tags are a JSON object in a string (classification refused any other): its creator owns it
        // while it is linked to no experiment (resource permissions).
        "CreateDataset" => {
            let tags = body.get("tags").and_then(Value::as_str).and_then(|t| serde_json::from_str(t).ok());
            let mut tags: Map<String, Value> = tags.unwrap_or_default();
            tags.insert(CREATED_BY.to_string(), Value::String(sub.to_string()));
            body.insert("tags".into(), Value::String(Value::Object(tags).to_string()));
        }
        // AI-gateway objects take their `created_by` from the request (MLflow trusts the client): the gate sets the
        // subject. An endpoint's is its owner (resource permissions); the others' are the honest record.
        rpc::CREATE_GATEWAY_ENDPOINT
        | "CreateGatewaySecret"
        | "CreateGatewayModelDefinition"
        | "AttachModelToEndpoint"
        | "CreateEndpointBinding" => {
            body.insert("created_by".into(), Value::String(sub.to_string()));
        }
        rpc::CREATE_RUN => {
            body.insert("user_id".into(), Value::String(sub.to_string()));
            push_tags(body, &[(RUN_USER_TAG, sub.to_string())], &[RUN_USER_TAG]);
        }
        _ => {}
    }
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

/// Who changed what, for a history entry.
pub struct Change<'a> {
    /// The token's subject.
    pub sub: &'a str,
    /// When (ms since the epoch).
    pub now_ms: u64,
    /// The request (decision) id.
    pub request_id: &'a str,
    /// Whether the policy flagged the change as break-glass.
    pub break_glass: bool,
}

/// The history entry of a permitted stage change, alias move or alias deletion, and the version it is stamped on:
/// `{stage|alias, by, at, request_id, break_glass}`, plus `archive_existing` (transitions), `previous_version`
/// (alias moves: the version that held the alias) and `removed: true` (alias deletions, stamped on the version
/// that held the alias). `resource` is what the policy saw.
pub fn history_entry(
    op: &Operation,
    target: &Map<String, Value>,
    resource: &Value,
    change: &Change<'_>,
) -> Option<(String, Value)> {
    let holder = || {
        resource.pointer("/alias_holder/version").and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let version = || target.get("version").and_then(Value::as_str).map(str::to_owned);
    // What the change was; every other operation (reads above all) leaves no history, and nothing is built for it.
    let (version, fields) = match op.rpc {
        rpc::TRANSITION_MODEL_VERSION_STAGE => {
            let archive = target.get("archive_existing_versions") == Some(&Value::Bool(true));
            let stage = target.get("stage")?.as_str()?;
            (version()?, [("stage", stage.into()), ("archive_existing", Value::Bool(archive))])
        }
        rpc::SET_REGISTERED_MODEL_ALIAS => {
            let previous = holder().map_or(Value::Null, Value::String);
            (version()?, [("alias", target.get("alias")?.as_str()?.into()), ("previous_version", previous)])
        }
        rpc::DELETE_REGISTERED_MODEL_ALIAS => {
            (holder()?, [("alias", target.get("alias")?.as_str()?.into()), ("removed", Value::Bool(true))])
        }
        _ => return None,
    };
    let mut entry = json!({"by": change.sub, "at": change.now_ms, "request_id": change.request_id,
        "break_glass": change.break_glass});
    for (key, value) in fields {
        entry[key] = value;
    }
    Some((version, entry))
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
        let mut experiment = obj(json!({"name": "e"}));
        stamp_request(&op("CreateExperiment"), &mut experiment, "alice", 5);
        assert_eq!(experiment["tags"], json!([{"key": CREATED_BY, "value": "alice"}]));
        let mut endpoint = obj(json!({"name": "chat", "created_by": "mallory", "model_configs": []}));
        stamp_request(&op("CreateGatewayEndpoint"), &mut endpoint, "alice", 5);
        assert_eq!(endpoint["created_by"], "alice");
        let mut secret = obj(json!({"secret_name": "k"}));
        stamp_request(&op("CreateGatewaySecret"), &mut secret, "alice", 5);
        assert_eq!(secret["created_by"], "alice");
        let mut logged = obj(json!({"experiment_id": "1", "source_run_id": "r1"}));
        stamp_request(&op("CreateLoggedModel"), &mut logged, "alice", 5);
        assert_eq!(logged["tags"], json!([{"key": CREATED_BY, "value": "alice"}]));
    }

    #[test]
    fn a_copy_loses_the_stamps_of_the_version_it_was_copied_from() {
        let mut copy = obj(json!({"name": "prod.m", "source": "models:/m/1", "tags": [
            {"key": "mlflow_gate.created_by", "value": "alice"}, {"key": "mlflow_gate.activity.0123", "value": "{}"},
            {"key": "team", "value": "fraud"}]}));
        assert_eq!(drop_copied_stamps(&mut copy), 2);
        assert_eq!(copy["tags"], json!([{"key": "team", "value": "fraud"}]));
        assert_eq!(reserved_tag_write(&op("CreateModelVersion"), &Map::new(), Some(&copy)), None);
        // Not a copy: reserved tags stay in the body, and are refused.
        let mut fresh = obj(
            json!({"name": "m", "source": "runs:/r/model", "tags": [{"key": "mlflow_gate.created_by", "value": "x"}]}),
        );
        assert_eq!(drop_copied_stamps(&mut fresh), 0);
        assert!(reserved_tag_write(&op("CreateModelVersion"), &Map::new(), Some(&fresh)).is_some());
    }

    #[test]
    fn a_logged_model_creator_stamp_cannot_be_deleted_through_the_path() {
        let t = obj(json!({"model_id": "m-1", "tag_key": "mlflow_gate.created_by"}));
        assert!(reserved_tag_write(&op("DeleteLoggedModelTag"), &t, None).is_some());
        let t = obj(json!({"model_id": "m-1", "tag_key": "team"}));
        assert!(reserved_tag_write(&op("DeleteLoggedModelTag"), &t, None).is_none());
    }

    #[test]
    fn history_entries_name_the_version_they_are_stamped_on() {
        let change = Change { sub: "carol", now_ms: 99, request_id: "r", break_glass: true };
        let set = obj(json!({"name": "m", "version": "3", "alias": "champion"}));
        let res = json!({"alias_holder": {"alias": "champion", "version": "2"}});
        let (v, e) = history_entry(&op("SetRegisteredModelAlias"), &set, &res, &change).unwrap_or_default();
        assert_eq!(v, "3");
        assert_eq!(
            e,
            json!({"alias": "champion", "by": "carol", "at": 99, "request_id": "r", "break_glass": true,
            "previous_version": "2"})
        );
        let del = obj(json!({"name": "m", "alias": "champion"}));
        let (v, e) = history_entry(&op("DeleteRegisteredModelAlias"), &del, &res, &change).unwrap_or_default();
        assert_eq!((v.as_str(), &e["removed"]), ("2", &json!(true)));
        assert!(history_entry(&op("DeleteRegisteredModelAlias"), &del, &json!({}), &change).is_none());
        let t = obj(json!({"name": "m", "version": "3", "stage": "Production", "archive_existing_versions": true}));
        let (_, e) = history_entry(&op("TransitionModelVersionStage"), &t, &res, &change).unwrap_or_default();
        assert_eq!((&e["stage"], &e["archive_existing"]), (&json!("Production"), &json!(true)));
        assert!(history_entry(&op("SetModelVersionTag"), &t, &res, &change).is_none());
    }

    #[test]
    fn reserved_keys_are_recognised_folded_and_trimmed() {
        for key in ["MLflow_Gate.created_by", " mlflow_gate.created_by ", "ｍｌｆｌｏｗ_gate.created_by"] {
            assert!(reserved_tag_write(&op("SetModelVersionTag"), &obj(json!({"key": key})), None).is_some(), "{key}");
        }
        let run_user = obj(json!({"tags": [{"key": "MLflow.User", "value": "x"}]}));
        assert!(reserved_tag_write(&op("LogBatch"), &Map::new(), Some(&run_user)).is_some());
        assert!(reserved_tag_write(&op("CreateRun"), &Map::new(), Some(&run_user)).is_none());
    }

    /// One row per route that names one tag key: (rpc, target field).
    #[test]
    fn every_single_tag_route_refuses_a_reserved_key() {
        for (rpc, field) in TAG_WRITES {
            let target = json!({ field: "mlflow_gate.created_by" });
            assert_eq!(
                reserved_tag_write(&op(rpc), &obj(target), None).as_deref(),
                Some("mlflow_gate.created_by"),
                "{rpc}"
            );
            assert_eq!(reserved_tag_write(&op(rpc), &obj(json!({ field: "team" })), None), None, "{rpc}");
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
            assert!(refusal.is_some(), "{rpc}: {body}");
        }
        let harmless = json!({"trace": {"trace_info": {"tags": {"team": "a"}, "trace_metadata": {key: "x"}}},
            "datasets": [{"tags": [{"key": "mlflow.data.context", "value": "train"}]}], "tags": "{\"team\": \"a\"}"});
        assert_eq!(reserved_tag_write(&op("StartTraceV3"), &Map::new(), Some(&obj(harmless.clone()))), None);
        assert_eq!(unreadable_tags(Some(&obj(harmless))), None);
    }

    #[test]
    fn unreadable_dataset_tags_are_refused() {
        // Python's json.loads reads NaN; serde does not: the keys next to it would go unchecked.
        let body = obj(json!({"tags": "{\"mlflow_gate.created_by\": \"x\", \"n\": NaN}"}));
        assert!(unreadable_tags(Some(&body)).is_some_and(|m| m.contains("\"tags\"")));
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
    fn datasets_are_stamped_with_their_creator_in_their_json_tags() {
        let mut d = obj(json!({"name": "d", "tags": "{\"team\": \"a\"}"}));
        stamp_request(&op("CreateDataset"), &mut d, "alice", 5);
        let tags: Value = serde_json::from_str(d["tags"].as_str().unwrap_or_default()).unwrap_or_default();
        assert_eq!(tags, json!({"team": "a", CREATED_BY: "alice"}));
        let mut d = obj(json!({"name": "d"}));
        stamp_request(&op("CreateDataset"), &mut d, "alice", 5);
        assert_eq!(d["tags"], json!(format!("{{\"{CREATED_BY}\":\"alice\"}}")));
    }

    #[test]
    fn reserved_tags_in_v3_trace_maps_are_refused() {
        let body = obj(json!({"trace": {"trace_info": {"tags": {"mlflow_gate.created_by": "alice"}}}}));
        assert!(reserved_tag_write(&op("StartTraceV3"), &Map::new(), Some(&body)).is_some());
        assert!(reserved_tag_write(&op("SetTraceTagV3"), &obj(json!({"key": "MLFLOW_GATE.x"})), None).is_some());
    }
}
