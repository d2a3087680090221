//! Classification, third step: the parameters MLflow will act on, read where MLflow reads them (GET: the query
//! string, first value of a scalar; POST/PATCH/DELETE: the JSON body; path parameters), with MLflow's aliases
//! resolved: protobuf lowerCamelCase names (`runId`, `archiveExistingVersions`) and the legacy `run_uuid`. The
//! body is normalised in place so the upstream receives the one spelling the policy saw; a request that spells a
//! field two ways is refused, as MLflow itself refuses conflicting aliases.

use serde_json::{Map, Value};

use super::params::BodyError;

/// Scalar fields a policy may need as the target of an operation.
const TARGET_FIELDS: [&str; 30] = [
    "name",
    "version",
    "stage",
    // The requested alias of a transition request (the gate's extension of Databricks' shapes).
    "to_alias",
    // With to_alias, "delete" asks for the alias's removal (the gate's extension).
    "alias_action",
    "archive_existing_versions",
    "alias",
    "key",
    "value",
    "new_name",
    "run_id",
    "source",
    "model_id",
    "experiment_id",
    "webhook_id",
    "comment",
    "creator",
    "id",
    "description",
    "url",
    "trace_id",
    // Resource permissions: `experiments/get-by-name` and the v2 `get-trace-artifact?request_id=`.
    "experiment_name",
    "request_id",
    // The grants API (MLflow basic-auth's request shapes, and the gate's group grants).
    "username",
    "group_name",
    "permission",
    // Artifact routes: the file path (presigned upload, multipart upload, upload-artifact) and upload-artifact's
    // run, which MLflow reads from the query as `run_uuid` only.
    "path",
    "run_uuid",
    // AI-gateway endpoints: configuration routes name `endpoint_id`; OpenAI-style invocations name the endpoint as
    // the body's `model`.
    "endpoint_id",
    "model",
];

/// The canonical MLflow stage names; input is case-insensitive.
pub const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];

/// Converts `lowerCamelCase` to `snake_case` (`archiveExistingVersions` -> `archive_existing_versions`).
fn snake(key: &str) -> Option<String> {
    if !key.chars().any(|c| c.is_ascii_uppercase()) || key.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Rewrites a JSON body's top-level keys to the spelling MLflow acts on: lowerCamelCase to snake_case, and
/// `run_uuid` to `run_id`. Two spellings of one field are refused.
pub fn normalize_body(body: &mut Map<String, Value>) -> Result<(), BodyError> {
    let camel: Vec<(String, String)> = body.keys().filter_map(|k| snake(k).map(|s| (k.clone(), s))).collect();
    for (from, to) in camel {
        rename(body, &from, &to, false)?;
    }
    // Tracking RPCs read `run_id or run_uuid`: one field, two names.
    rename(body, "run_uuid", "run_id", true)
}

fn rename(body: &mut Map<String, Value>, from: &str, to: &str, same_value_ok: bool) -> Result<(), BodyError> {
    let Some(v) = body.remove(from) else { return Ok(()) };
    match body.get(to) {
        Some(existing) if !(same_value_ok && existing == &v) => {
            Err(BodyError::BothSpellings { from: from.to_string(), to: to.to_string() })
        }
        Some(_) => Ok(()),
        None => {
            body.insert(to.to_string(), v);
            Ok(())
        }
    }
}

/// Operations whose parameters MLflow reads from the query string whatever the method: the UI's upload-artifact
/// (`POST ?run_uuid=&path=`, the body is the file).
pub fn reads_query(rpc: &str) -> bool {
    rpc == super::routes::rpc::UPLOAD_RUN_ARTIFACT
}

/// Reads the target of a request. `query` is the decoded query string in order; `body` is the normalised JSON
/// body; `path_params` come from the route. GET/HEAD read the query (first value of each field, as MLflow does;
/// a target field repeated with different values is refused as ambiguous); other methods read the body.
pub fn extract(
    method: &str,
    query: &[(String, String)],
    body: Option<&Map<String, Value>>,
    path_params: &[(&'static str, String)],
) -> Result<Map<String, Value>, BodyError> {
    let mut out = Map::new();
    if matches!(method, "GET" | "HEAD") {
        for field in TARGET_FIELDS {
            let mut values =
                query.iter().filter(|(k, _)| k == field || snake(k).as_deref() == Some(field)).map(|(_, v)| v);
            if let Some(first) = values.next() {
                if values.any(|v| v != first) {
                    return Err(BodyError::AmbiguousQuery(field));
                }
                out.insert(field.to_string(), Value::String(first.clone()));
            }
        }
    } else if let Some(body) = body {
        for field in TARGET_FIELDS {
            if let Some(v) = body.get(field) {
                out.insert(field.to_string(), v.clone());
            }
        }
    }
    for (k, v) in path_params {
        out.insert((*k).to_string(), Value::String(v.clone()));
    }
    if let Some(Value::String(stage)) = out.get("stage") {
        if let Some(canonical) = STAGES.iter().find(|s| s.eq_ignore_ascii_case(stage)) {
            out.insert("stage".into(), Value::String((*canonical).to_string()));
        }
    }
    if let Some(v) = out.get("version").and_then(Value::as_i64) {
        out.insert("version".into(), Value::String(v.to_string()));
    }
    Ok(out)
}

/// A target field as a string (numbers are rendered), for look-ups.
pub fn field<'a>(target: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    target.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn camel_case_and_run_uuid_are_normalised() {
        let mut b = obj(json!({"name": "m", "archiveExistingVersions": true, "runUuid": "r1"}));
        assert!(normalize_body(&mut b).is_ok());
        assert_eq!(Value::Object(b), json!({"name": "m", "archive_existing_versions": true, "run_id": "r1"}));
        let mut b = obj(json!({"run_uuid": "r1"}));
        assert!(normalize_body(&mut b).is_ok());
        assert_eq!(Value::Object(b), json!({"run_id": "r1"}));
    }

    #[test]
    fn two_spellings_of_a_field_are_refused() {
        assert!(normalize_body(&mut obj(json!({"run_id": "a", "runId": "b"}))).is_err());
        assert!(normalize_body(&mut obj(json!({"run_id": "a", "run_uuid": "b"}))).is_err());
        assert!(normalize_body(&mut obj(json!({"new_name": "a", "newName": "a"}))).is_err());
        assert!(normalize_body(&mut obj(json!({"run_id": "a", "run_uuid": "a"}))).is_ok());
    }

    #[test]
    fn get_reads_the_first_query_value_and_refuses_conflicts() {
        let q = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let t = extract("GET", &q(&[("name", "m"), ("version", "3")]), None, &[]).unwrap_or_default();
        assert_eq!(Value::Object(t), json!({"name": "m", "version": "3"}));
        assert!(extract("GET", &q(&[("name", "m1"), ("name", "m2")]), None, &[]).is_err());
        assert!(extract("GET", &q(&[("name", "m1"), ("name", "m1")]), None, &[]).is_ok());
    }

    #[test]
    fn upload_artifact_reads_run_uuid_and_path_from_the_query_as_mlflow_does() {
        assert!(reads_query("UploadRunArtifact") && !reads_query("UploadArtifact"));
        let q = [("run_id", "other"), ("run_uuid", "r1"), ("path", "model/MLmodel")];
        let q: Vec<(String, String)> = q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let t = extract("GET", &q, None, &[]).unwrap_or_default();
        assert_eq!(field(&t, "run_uuid"), Some("r1"));
        assert_eq!(field(&t, "path"), Some("model/MLmodel"));
        let two = [("run_uuid", "r1"), ("run_uuid", "r2")].map(|(k, v)| (k.to_string(), v.to_string()));
        assert!(extract("GET", &two, None, &[]).is_err());
    }

    #[test]
    fn stages_are_canonical_and_versions_are_strings() {
        let body = obj(json!({"name": "m", "version": 7, "stage": "pRODUCTION", "key": "k"}));
        let t = extract("POST", &[], Some(&body), &[("webhook_id", "w1".into())]).unwrap_or_default();
        assert_eq!(
            Value::Object(t),
            json!({"name": "m", "version": "7", "stage": "Production", "key": "k", "webhook_id": "w1"})
        );
    }
}
