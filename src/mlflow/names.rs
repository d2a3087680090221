//! Classification, after the target is read: names MLflow would store exactly as sent. MLflow accepts a registered
//! model called `"fraud-detector\n"` or an alias `"champion\n"`, which no rule keyed on `champion` recognises; the
//! gate refuses such names (400, before the policy, nothing forwarded) on every route that creates, renames or sets
//! them. Case and Unicode look-alikes (`Champion`, full-width, zero-width) are not refused here: the policy input
//! carries their folded forms (see `policy::input`) and the bundle treats them as the name they imitate.

use serde_json::{Map, Value};

use super::routes::Operation;
use crate::fold;

/// Operations that create, rename or set a stored name, and the target fields holding it. Prompts are registered
/// models; `copy_model_version` is a create of each; MCP-server and skill aliases are aliases too.
const NAME_WRITES: [(&str, &[(&str, &str)]); 9] = [
    ("CreateRegisteredModel", &[("name", "registered model name")]),
    ("RenameRegisteredModel", &[("new_name", "new registered model name")]),
    ("CreateModelVersion", &[("name", "registered model name")]),
    ("SetRegisteredModelAlias", &[("alias", "alias"), ("name", "registered model name")]),
    ("CreateMcpServer", &[("name", "MCP server name")]),
    ("SetMcpServerAlias", &[("alias", "alias")]),
    ("CreateSkill", &[("name", "skill name")]),
    ("SetSkillAlias", &[("alias", "alias")]),
    ("SetOrganizationSkillAlias", &[("alias", "alias")]),
];

/// What the gate refuses to forward, as a message for the caller (400 `INVALID_PARAMETER_VALUE`, before the
/// policy): a new name MLflow would store with hidden characters, or tags whose keys the gate cannot read.
pub fn refused_write(op: &Operation, target: &Map<String, Value>, body: Option<&Map<String, Value>>) -> Option<String> {
    super::stamps::unreadable_tags(body).or_else(|| stored_name_problem(op, target))
}

/// Why the request's new name cannot be stored, as a message for the caller; `None` when it can.
pub fn stored_name_problem(op: &Operation, target: &Map<String, Value>) -> Option<String> {
    let (_, fields) = NAME_WRITES.iter().find(|(rpc, _)| *rpc == op.rpc)?;
    fields.iter().find_map(|(field, what)| {
        let value = target.get(*field)?.as_str()?;
        let problem = fold::name_problem(value)?;
        Some(format!(
            "the {what} {value:?} {problem}; names with control characters or leading or trailing white space are refused, because MLflow would store them as sent and they would not match the name they look like"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlflow::routes::classify;
    use serde_json::json;

    fn problem(method: &str, path: &str, target: Value) -> Option<String> {
        let op = classify(method, path)?;
        stored_name_problem(&op, target.as_object()?)
    }

    #[test]
    fn every_route_that_stores_a_name_refuses_hidden_characters() {
        let routes = [
            ("POST", "/api/2.0/mlflow/registered-models/create", "name"),
            ("POST", "/ajax-api/2.0/mlflow/registered-models/create", "name"),
            ("POST", "/api/2.0/mlflow/registered-models/rename", "new_name"),
            ("POST", "/ajax-api/2.0/mlflow/registered-models/rename", "new_name"),
            ("POST", "/api/2.0/mlflow/model-versions/create", "name"),
            ("POST", "/ajax-api/2.0/mlflow/model-versions/create", "name"),
            ("POST", "/api/2.0/mlflow/registered-models/alias", "alias"),
            ("POST", "/ajax-api/2.0/mlflow/registered-models/alias", "alias"),
            ("POST", "/api/2.0/mlflow/registered-models/alias", "name"),
            ("POST", "/api/3.0/mlflow/mcp-servers", "name"),
            ("POST", "/api/3.0/mlflow/mcp-servers/srv/aliases", "alias"),
            ("POST", "/api/3.0/mlflow/skills", "name"),
            ("POST", "/api/3.0/mlflow/skills/s/aliases", "alias"),
            ("POST", "/ajax-api/3.0/mlflow/skills/@org/s/aliases", "alias"),
        ];
        for (method, path, field) in routes {
            for bad in ["champion\n", " champion", "champion\u{200B}", "cham\tpion", "champion\u{0}"] {
                let msg = problem(method, path, json!({ field: bad }));
                assert!(msg.is_some_and(|m| m.contains(&format!("{bad:?}"))), "{method} {path} {field} {bad:?}");
            }
            assert_eq!(problem(method, path, json!({ field: "Champion" })), None, "{path}");
        }
    }

    #[test]
    fn reads_and_deletes_of_odd_names_stay_possible() {
        // An alias stored before this check must remain removable and readable.
        assert_eq!(problem("DELETE", "/api/2.0/mlflow/registered-models/alias", json!({"alias": "champion\n"})), None);
        assert_eq!(problem("GET", "/api/2.0/mlflow/registered-models/alias", json!({"alias": "champion\n"})), None);
        assert_eq!(problem("DELETE", "/api/2.0/mlflow/registered-models/delete", json!({"name": "m\n"})), None);
    }
}
