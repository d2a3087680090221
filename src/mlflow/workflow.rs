//! Approval workflow, state side: transition requests, approvals, rejections, cancellations and comments live in
//! MLflow itself, one reserved model-version tag per activity (`mlflow_gate.activity.<id>`), written only by the
//! gate. One tag per activity means replicas never race on a shared list, and the history survives restarts and is
//! visible in the MLflow UI. Activity ids given to clients encode the model name and version, so a comment can be
//! found from its id alone.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::routes::{rpc, Operation};
use super::target::field;
use crate::error::GateError;

/// Prefix of the activity tags.
pub const ACTIVITY_PREFIX: &str = "mlflow_gate.activity.";
/// Longest comment accepted.
pub const MAX_COMMENT_CHARS: usize = 5000;

/// Databricks' activity types.
pub mod kind {
    /// A transition was requested.
    pub const REQUESTED: &str = "REQUESTED_TRANSITION";
    /// A request was approved.
    pub const APPROVED: &str = "APPROVED_REQUEST";
    /// A request was rejected.
    pub const REJECTED: &str = "REJECTED_REQUEST";
    /// The requester cancelled the request.
    pub const CANCELLED: &str = "CANCELLED_REQUEST";
    /// A comment.
    pub const COMMENT: &str = "NEW_COMMENT";
    /// A transition performed by the gate on approval.
    pub const APPLIED: &str = "APPLIED_TRANSITION";
}

/// One activity as stored in its tag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Activity {
    /// Short id (the tag key's suffix).
    pub id: String,
    /// One of [`kind`].
    pub activity_type: String,
    /// Stage of the version when the activity happened.
    #[serde(default)]
    pub from_stage: Option<String>,
    /// Target stage (requests, approvals, rejections, cancellations, applied transitions).
    #[serde(default)]
    pub to_stage: Option<String>,
    /// Target alias instead of a stage: the gate's extension of Databricks' shapes for alias-first promotion
    /// (`to_alias` in requests and answers; Databricks clients ignore the unknown field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_alias: Option<String>,
    /// With `to_alias`: `delete` asks for the alias's removal instead of its move onto the version (the version is
    /// the one holding it); the gate's extension too (`alias_action` in requests and answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_action: Option<String>,
    /// The person's comment.
    #[serde(default)]
    pub comment: Option<String>,
    /// A comment by the gate (e.g. what an approval led to).
    #[serde(default)]
    pub system_comment: Option<String>,
    /// Who did it (the token's `sub`).
    pub user_id: String,
    /// When (ms since the epoch).
    pub creation_timestamp: u64,
    /// Last edit (comments).
    pub last_updated_timestamp: u64,
    /// For approvals, rejections and cancellations: the request resolved.
    #[serde(default)]
    pub resolves: Option<String>,
    /// For approvals: the evidence the approver saw (see [`fingerprint`]).
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl Activity {
    /// The tag key this activity is stored under.
    pub fn tag_key(&self) -> String {
        format!("{ACTIVITY_PREFIX}{}", self.id)
    }

    /// Databricks' `Activity` object, with the client-facing id.
    pub fn to_api(&self, name: &str, version: &str) -> Value {
        let mut v = json!({
            "id": external_id(name, version, &self.id),
            "activity_type": self.activity_type,
            "from_stage": self.from_stage,
            "to_stage": self.to_stage,
            "comment": self.comment,
            "system_comment": self.system_comment,
            "user_id": self.user_id,
            "creation_timestamp": self.creation_timestamp,
            "last_updated_timestamp": self.last_updated_timestamp,
        });
        if let (Some(alias), Value::Object(m)) = (&self.to_alias, &mut v) {
            m.insert("to_alias".into(), Value::String(alias.clone()));
            if let Some(action) = &self.alias_action {
                m.insert("alias_action".into(), Value::String(action.clone()));
            }
        }
        v
    }

    /// What the activity asks for or resolves: a stage or an alias.
    pub fn requested(&self) -> Option<Requested<'_>> {
        match (&self.to_alias, &self.to_stage) {
            (Some(a), _) if self.alias_action.as_deref() == Some(ALIAS_DELETE) => Some(Requested::AliasRemoval(a)),
            (Some(_), _) if self.alias_action.is_some() => None,
            (Some(a), _) => Some(Requested::Alias(a)),
            (None, Some(s)) => Some(Requested::Stage(s)),
            (None, None) => None,
        }
    }
}

/// The target of a transition request: a stage (Databricks) or an alias (the gate's extension, `to_alias`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested<'a> {
    /// `stage`: Staging, Production or Archived.
    Stage(&'a str),
    /// `to_alias`: a registered model alias.
    Alias(&'a str),
    /// `to_alias` with `alias_action: "delete"`: the removal of the alias from the version holding it.
    AliasRemoval(&'a str),
}

/// The `alias_action` that asks for an alias's removal.
pub const ALIAS_DELETE: &str = "delete";

impl Requested<'_> {
    /// Whether two targets are the same (aliases compared folded, as MLflow's database may compare them).
    pub fn same(&self, other: &Requested<'_>) -> bool {
        match (self, other) {
            (Requested::Stage(a), Requested::Stage(b)) => a == b,
            (Requested::Alias(a), Requested::Alias(b)) | (Requested::AliasRemoval(a), Requested::AliasRemoval(b)) => {
                crate::fold::fold(a) == crate::fold::fold(b)
            }
            _ => false,
        }
    }

    /// For messages: `Production`, `the alias champion`.
    pub fn label(&self) -> String {
        match self {
            Requested::Stage(s) => (*s).to_string(),
            Requested::Alias(a) => format!("the alias {a}"),
            Requested::AliasRemoval(a) => format!("the removal of the alias {a}"),
        }
    }
}

/// A new short activity id.
pub fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The id clients see: model name, version and short id, base64url-encoded.
pub fn external_id(name: &str, version: &str, short: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{name}\u{0}{version}\u{0}{short}"))
}

/// Reverses [`external_id`].
pub fn parse_external_id(id: &str) -> Option<(String, String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(id).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split('\u{0}');
    let (name, version, short) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none() && !name.is_empty() && !version.is_empty() && short.len() == 16;
    valid.then(|| (name.to_string(), version.to_string(), short.to_string()))
}

/// Every activity recorded on a model version (from its tags `{key: value}`), oldest first.
pub fn activities(tags: &Map<String, Value>) -> Vec<Activity> {
    let mut list: Vec<Activity> = tags
        .iter()
        .filter(|(k, _)| k.starts_with(ACTIVITY_PREFIX))
        .filter_map(|(_, v)| serde_json::from_str::<Activity>(v.as_str()?).ok())
        .collect();
    list.sort_by(|a, b| (a.creation_timestamp, &a.id).cmp(&(b.creation_timestamp, &b.id)));
    list
}

/// Requests not yet approved, rejected or cancelled.
pub fn open_requests(list: &[Activity]) -> Vec<&Activity> {
    list.iter()
        .filter(|a| a.activity_type == kind::REQUESTED)
        .filter(|r| !list.iter().any(|a| a.resolves.as_deref() == Some(r.id.as_str())))
        .collect()
}

/// What an approval vouches for: the version's lineage, its files (the digest of their listing and of the content
/// of small files, `model_version.files`, see `pipeline::enrich::files`) and its source run's metrics, params and user tags.
/// If any of these changes after the approval, the approval is void. (MLflow system tags `mlflow.*` are left out:
/// MLflow itself updates some of them.)
pub fn fingerprint(model_version: &Map<String, Value>, source_run: Option<&Map<String, Value>>) -> String {
    let run = source_run.cloned().unwrap_or_default();
    let user_tags: Map<String, Value> = run
        .get("tags")
        .and_then(Value::as_object)
        .map(|t| t.iter().filter(|(k, _)| !k.starts_with("mlflow.")).map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let evidence = json!({
        "source": model_version.get("source"),
        "run_id": model_version.get("run_id"),
        "model_id": model_version.get("model_id"),
        "files": model_version.get("files").and_then(|f| f.get("digest")),
        "metrics": sorted(run.get("metrics")),
        "params": sorted(run.get("params")),
        "tags": sorted(Some(&Value::Object(user_tags))),
    });
    let digest = Sha256::digest(evidence.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn sorted(v: Option<&Value>) -> Value {
    let mut entries: Vec<(String, Value)> = v
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Array(entries.into_iter().map(|(k, v)| json!([k, v])).collect())
}

/// The policy's view of the approvals of a version: `{approver, stage, at, comment, valid}`. An approval is valid
/// while the evidence it vouched for is unchanged and the version is still in the stage it was approved from.
pub fn approvals_for_policy(
    list: &[Activity],
    model_version: &Map<String, Value>,
    source_run: Option<&Map<String, Value>>,
) -> Vec<Value> {
    let now = fingerprint(model_version, source_run);
    let stage = model_version.get("current_stage").and_then(Value::as_str);
    list.iter()
        .filter(|a| a.activity_type == kind::APPROVED)
        .map(|a| {
            let valid = a.fingerprint.as_deref() == Some(now.as_str()) && a.from_stage.as_deref() == stage;
            json!({"approver": a.user_id, "stage": a.to_stage, "alias": a.to_alias,
                "alias_action": a.alias_action, "at": a.creation_timestamp,
                "comment": a.comment, "valid": valid})
        })
        .collect()
}

/// Completes a workflow target before enrichment: a comment id names its model version.
pub fn prepare_target(op: &Operation, target: &mut Map<String, Value>) -> Result<(), GateError> {
    if op.rpc == rpc::UPDATE_COMMENT || op.rpc == rpc::DELETE_COMMENT {
        let id = field(target, "id").ok_or_else(|| GateError::BadRequest("id is required".into()))?;
        let (name, version, _) =
            parse_external_id(id).ok_or_else(|| GateError::NotFound("no comment has this id".into()))?;
        target.insert("name".into(), Value::String(name));
        target.insert("version".into(), Value::String(version));
    }
    Ok(())
}

/// Whether a version (its facts, tags flattened) carries a recorded approval: only then do the policy's facts
/// need the fingerprint of its files.
pub fn has_approvals(model_version: &Map<String, Value>) -> bool {
    let tags = model_version.get("tags").and_then(Value::as_object);
    tags.is_some_and(|t| activities(t).iter().any(|a| a.activity_type == kind::APPROVED))
}

/// The facts a policy needs about the workflow of a version: approvals (with validity), open requests, and the
/// activity a request acts on (a comment being edited).
pub fn policy_facts(
    model_version: &Map<String, Value>,
    source_run: Option<&Map<String, Value>>,
    target: &Map<String, Value>,
) -> Map<String, Value> {
    let tags = model_version.get("tags").and_then(Value::as_object).cloned().unwrap_or_default();
    let list = activities(&tags);
    let mut facts = Map::new();
    facts.insert("approvals".into(), Value::Array(approvals_for_policy(&list, model_version, source_run)));
    let open = open_requests(&list)
        .into_iter()
        .map(|r| {
            json!({"id": r.id, "to_stage": r.to_stage, "to_alias": r.to_alias, "alias_action": r.alias_action,
                "user_id": r.user_id,
            "creation_timestamp": r.creation_timestamp})
        })
        .collect();
    facts.insert("open_requests".into(), Value::Array(open));
    let short = field(target, "id").and_then(parse_external_id).map(|(_, _, s)| s);
    if let Some(a) = short.and_then(|s| list.iter().find(|a| a.id == s)) {
        facts.insert("activity".into(), json!({"id": a.id, "activity_type": a.activity_type, "user_id": a.user_id}));
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(id: &str, kind: &str, resolves: Option<&str>, at: u64) -> Activity {
        Activity {
            id: id.into(),
            activity_type: kind.into(),
            from_stage: Some("Staging".into()),
            to_stage: Some("Production".into()),
            to_alias: None,
            alias_action: None,
            comment: None,
            system_comment: None,
            user_id: "u".into(),
            creation_timestamp: at,
            last_updated_timestamp: at,
            resolves: resolves.map(str::to_owned),
            fingerprint: None,
        }
    }

    #[test]
    fn alias_requests_keep_their_alias_and_old_activities_still_parse() {
        let mut a = act("r1", kind::REQUESTED, None, 1);
        a.to_stage = None;
        a.to_alias = Some("champion".into());
        let stored = serde_json::to_string(&a).unwrap_or_default();
        let back: Activity = serde_json::from_str(&stored).unwrap_or_else(|_| act("x", "x", None, 0));
        assert_eq!(back.requested(), Some(Requested::Alias("champion")));
        assert_eq!(a.to_api("m", "1")["to_alias"], "champion");
        assert!(Requested::Alias("CHAMPION").same(&Requested::Alias("champion")));
        assert!(!Requested::Alias("Production").same(&Requested::Stage("Production")));
        // Stage activities are stored as before (no to_alias key), and tags written before the field parse.
        let old = r#"{"id":"a","activity_type":"APPROVED_REQUEST","to_stage":"Production","user_id":"b","creation_timestamp":1,"last_updated_timestamp":1}"#;
        let parsed: Activity = serde_json::from_str(old).unwrap_or_else(|_| act("x", "x", None, 0));
        assert_eq!(parsed.requested(), Some(Requested::Stage("Production")));
        assert!(!serde_json::to_string(&parsed).unwrap_or_default().contains("to_alias"));
        assert!(a.to_api("m", "1").get("to_alias").is_some());
        assert!(parsed.to_api("m", "1").get("to_alias").is_none());
    }

    #[test]
    fn an_alias_removal_is_its_own_target_and_an_unknown_action_is_none() {
        let mut a = act("r1", kind::REQUESTED, None, 1);
        a.to_stage = None;
        a.to_alias = Some("champion".into());
        a.alias_action = Some(ALIAS_DELETE.into());
        let back: Activity = serde_json::from_str(&serde_json::to_string(&a).unwrap_or_default())
            .unwrap_or_else(|_| act("x", "x", None, 0));
        assert_eq!(back.requested(), Some(Requested::AliasRemoval("champion")));
        assert!(!Requested::AliasRemoval("champion").same(&Requested::Alias("champion")));
        assert!(Requested::AliasRemoval("CHAMPION").same(&Requested::AliasRemoval("champion")));
        assert_eq!(a.to_api("m", "1")["alias_action"], "delete");
        a.alias_action = Some("rename".into());
        assert_eq!(a.requested(), None);
    }

    #[test]
    fn alias_approvals_name_their_alias_for_the_policy() {
        let mut a = act("a1", kind::APPROVED, Some("r1"), 3);
        a.to_stage = None;
        a.to_alias = Some("champion".into());
        let mv = Map::new();
        let facts = approvals_for_policy(&[a], &mv, None);
        assert_eq!(facts[0]["alias"], "champion");
        assert_eq!(facts[0]["stage"], Value::Null);
    }

    #[test]
    fn external_ids_round_trip_and_reject_garbage() {
        let id = external_id("fraud/detector", "7", "0123456789abcdef");
        assert_eq!(parse_external_id(&id), Some(("fraud/detector".into(), "7".into(), "0123456789abcdef".into())));
        assert_eq!(parse_external_id("not-an-id"), None);
        assert_eq!(parse_external_id(&URL_SAFE_NO_PAD.encode("a\u{0}1\u{0}short")), None);
    }

    #[test]
    fn resolved_requests_are_not_open() {
        let list = vec![
            act("r1", kind::REQUESTED, None, 1),
            act("r2", kind::REQUESTED, None, 2),
            act("a1", kind::APPROVED, Some("r1"), 3),
        ];
        let open: Vec<&str> = open_requests(&list).iter().map(|a| a.id.as_str()).collect();
        assert_eq!(open, ["r2"]);
    }

    #[test]
    fn approvals_are_void_once_the_evidence_changes() {
        let mv = json!({"source": "runs:/r/m", "run_id": "r", "current_stage": "Staging"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let run =
            json!({"metrics": {"val_auc": 0.9}, "params": {}, "tags": {"git_commit": "abc", "mlflow.runName": "x"}})
                .as_object()
                .cloned()
                .unwrap_or_default();
        let mut approval = act("a1", kind::APPROVED, Some("r1"), 3);
        approval.fingerprint = Some(fingerprint(&mv, Some(&run)));
        let valid = |run: &Map<String, Value>, mv: &Map<String, Value>| {
            approvals_for_policy(&[approval.clone()], mv, Some(run))[0]["valid"].clone()
        };
        assert_eq!(valid(&run, &mv), json!(true));
        let mut system_tag_changed = run.clone();
        system_tag_changed.insert("tags".into(), json!({"git_commit": "abc", "mlflow.runName": "renamed"}));
        assert_eq!(valid(&system_tag_changed, &mv), json!(true));
        let mut metric_changed = run.clone();
        metric_changed.insert("metrics".into(), json!({"val_auc": 0.95}));
        assert_eq!(valid(&metric_changed, &mv), json!(false));
        let mut demoted = mv.clone();
        demoted.insert("current_stage".into(), json!("Archived"));
        assert_eq!(valid(&run, &demoted), json!(false));
    }

    #[test]
    fn approvals_are_void_once_the_files_change() {
        let mv = |digest: &str| {
            json!({"source": "models:/m-1", "run_id": "r", "current_stage": "Staging",
                "files": {"digest": digest, "count": 5, "listed": true}})
            .as_object()
            .cloned()
            .unwrap_or_default()
        };
        let mut approval = act("a1", kind::APPROVED, Some("r1"), 3);
        approval.fingerprint = Some(fingerprint(&mv("d1"), None));
        assert_eq!(approvals_for_policy(&[approval.clone()], &mv("d1"), None)[0]["valid"], json!(true));
        assert_eq!(approvals_for_policy(&[approval], &mv("d2"), None)[0]["valid"], json!(false));
    }
}
