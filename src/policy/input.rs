//! Policy, the input document (version 1): `principal`, `operation`, `request` (and, from enrichment, `resource`).
//! Built once per request from the typed results of the earlier phases.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::auth::Principal;
use crate::mlflow::permission;
use crate::mlflow::routes::Operation;

/// Version of the input document's shape; policies may check it.
pub const INPUT_VERSION: u32 = 1;

/// The request as the policy sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestFacts<'a> {
    /// Upper-case method.
    pub method: &'a str,
    /// Canonical (decoded) path: exactly the path forwarded.
    pub path: &'a str,
    /// Query parameters, each name with its list of values.
    pub query: &'a Map<String, Value>,
    /// The parsed JSON body, when the request has one the gate reads.
    pub body: Option<&'a Map<String, Value>>,
    /// The MLflow workspace the request addresses: its `X-MLFLOW-WORKSPACE` header, validated (one value, a valid
    /// workspace name) and exactly what is forwarded; `None` when not sent (MLflow's default workspace). Every fact
    /// in `resource` was looked up in this workspace.
    pub workspace: Option<&'a str>,
}

/// Builds the input document.
pub fn build(principal: &Principal, operation: &Operation, request: &RequestFacts<'_>, resource: Value) -> Value {
    json!({
        "version": INPUT_VERSION,
        "principal": {
            "sub": principal.sub,
            "issuer": principal.issuer,
            "groups": principal.groups,
            "claims": principal.claims,
            "via": principal.via.as_str(),
        },
        "operation": {
            "rpc": operation.rpc,
            "read_only": operation.read_only,
            "resource_type": operation.resource.as_str(),
            "server_side_job": operation.server_side_job,
            "permission": permission::need(operation).as_str(),
            "path_params": operation.path_params.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect::<Map<_, _>>(),
        },
        "request": request,
        "folded": folded_names(&resource),
        "resource": resource,
    })
}

/// `input.folded`: every model name and alias in the resource (the target's `name`, `new_name` and `alias`, the
/// version's name and aliases, the registered model's name and alias keys, the aliases in the stage history),
/// mapped to its folded form (`crate::fold`: NFKC, case folding, default-ignorable code points removed). Rego has no
/// NFKC; with this table the bundle compares `Ｃｈａｍｐｉｏｎ` or `fraud\u{200B}-detector` to its data as
/// `champion` and `fraud-detector`.
pub fn folded_names(resource: &Value) -> Map<String, Value> {
    let mut names: Vec<&str> = Vec::new();
    // Field by field (no pointer strings formatted per request): this runs for every request.
    let target = resource.get("target");
    for field in ["name", "new_name", "alias"] {
        names.extend(target.and_then(|t| t.get(field)).and_then(Value::as_str));
    }
    names.extend(resource.pointer("/model_version/name").and_then(Value::as_str));
    names.extend(resource.pointer("/registered_model/name").and_then(Value::as_str));
    if let Some(aliases) = resource.pointer("/model_version/aliases").and_then(Value::as_array) {
        names.extend(aliases.iter().filter_map(Value::as_str));
    }
    if let Some(aliases) = resource.pointer("/registered_model/aliases").and_then(Value::as_object) {
        names.extend(aliases.keys().map(String::as_str));
    }
    if let Some(history) = resource.pointer("/model_version/stage_history").and_then(Value::as_array) {
        names.extend(history.iter().filter_map(|h| h.get("alias").and_then(Value::as_str)));
    }
    names.into_iter().map(|n| (n.to_string(), Value::String(crate::fold::fold(n)))).collect()
}

/// Builds the input document directly as a regorus value: the same document as `to_rego(&build(..))` (the unit
/// test checks it) without the intermediate JSON copy of the request body and registry facts. The request path
/// uses this one.
pub fn build_rego(
    principal: &Principal,
    operation: &Operation,
    request: &RequestFacts<'_>,
    resource: &Value,
) -> regorus::Value {
    use regorus::Value as V;
    let object = |entries: Vec<(&str, V)>| {
        V::from(entries.into_iter().map(|(k, v)| (V::from(k), v)).collect::<std::collections::BTreeMap<_, _>>())
    };
    let strings = |items: &[String]| V::from(items.iter().map(|g| V::from(g.as_str())).collect::<Vec<_>>());
    let path_params = operation.path_params.iter().map(|(k, v)| (*k, V::from(v.as_str()))).collect();
    let optional = |v: Option<&str>| v.map_or(V::Null, V::from);
    let map = |m: &Map<String, Value>| {
        V::from(m.iter().map(|(k, v)| (V::from(k.as_str()), to_rego(v))).collect::<std::collections::BTreeMap<_, _>>())
    };
    object(vec![
        ("version", V::from(u64::from(INPUT_VERSION))),
        (
            "principal",
            object(vec![
                ("sub", V::from(principal.sub.as_str())),
                ("issuer", V::from(principal.issuer.as_str())),
                ("groups", strings(&principal.groups)),
                ("claims", to_rego(&principal.claims)),
                ("via", V::from(principal.via.as_str())),
            ]),
        ),
        (
            "operation",
            object(vec![
                ("rpc", V::from(operation.rpc)),
                ("read_only", V::from(operation.read_only)),
                ("resource_type", V::from(operation.resource.as_str())),
                ("server_side_job", V::from(operation.server_side_job)),
                ("permission", V::from(permission::need(operation).as_str())),
                ("path_params", object(path_params)),
            ]),
        ),
        (
            "request",
            object(vec![
                ("method", V::from(request.method)),
                ("path", V::from(request.path)),
                ("query", map(request.query)),
                ("body", request.body.map_or(V::Null, map)),
                ("workspace", optional(request.workspace)),
            ]),
        ),
        ("folded", map(&folded_names(resource))),
        ("resource", to_rego(resource)),
    ])
}

/// Converts an input document for regorus, node by node. (regorus' own `From<serde_json::Value>` goes through
/// serde's deserializer and costs several times more; the unit test checks that both give the same value.)
pub fn to_rego(input: &Value) -> regorus::Value {
    match input {
        Value::Null => regorus::Value::Null,
        Value::Bool(b) => regorus::Value::from(*b),
        // As serde_json hands numbers to a deserializer: non-negative integers, negative integers, floats.
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => regorus::Value::from(u),
            (None, Some(i), _) => regorus::Value::from(i),
            (None, None, Some(f)) if f.is_finite() => regorus::Value::from(f),
            _ => regorus::Value::Undefined,
        },
        Value::String(s) => regorus::Value::from(s.as_str()),
        Value::Array(items) => regorus::Value::from(items.iter().map(to_rego).collect::<Vec<_>>()),
        Value::Object(map) => regorus::Value::from(
            map.iter()
                .map(|(k, v)| (regorus::Value::from(k.as_str()), to_rego(v)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    }
}

/// A sample input (a read by an ordinary user) for self-tests and warm-up.
pub fn sample() -> regorus::Value {
    let principal = Principal {
        sub: "self-test".into(),
        issuer: "https://self-test.invalid".into(),
        groups: vec![],
        claims: json!({"sub": "self-test"}),
        via: crate::auth::Via::Bearer,
    };
    let op = Operation::plain("GetRegisteredModel", true, crate::mlflow::routes::Resource::RegisteredModel);
    let query = crate::mlflow::params::query_map(&[("name".into(), "self-test".into())]);
    let req = RequestFacts {
        method: "GET",
        path: "/api/2.0/mlflow/registered-models/get",
        query: &query,
        body: None,
        workspace: None,
    };
    to_rego(&build(&principal, &op, &req, json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_conversion_equals_regorus_own() {
        let mut docs: Vec<Value> = super::super::samples::all().iter().map(|s| s.document()).collect();
        docs.push(json!({
            "n": [0, 1, -1, u64::MAX, i64::MIN, 0.5, -2.25, 1e300, 12345678901234567890u64],
            "s": ["", "ü", "\u{0}", "a\"b"], "b": [true, false], "z": null, "o": {"": {}, "a": []},
        }));
        for doc in docs {
            assert_eq!(to_rego(&doc), regorus::Value::from(doc.clone()), "{doc}");
        }
    }

    #[test]
    fn direct_build_equals_the_json_document() {
        use crate::mlflow::routes::Resource;
        let principal = Principal {
            sub: "alice".into(),
            issuer: "https://idp.example".into(),
            groups: vec!["a".into(), "b".into()],
            claims: json!({"sub": "alice", "exp": 1795703600u64, "nested": {"x": [1, 2.5, null]}}),
            via: crate::auth::Via::Session,
        };
        let mut op = Operation::plain("SetModelVersionTag", false, Resource::ModelVersion);
        op.path_params = vec![("model_id", "m-1".into())];
        let query = crate::mlflow::params::query_map(&[("name".into(), "m".into()), ("name".into(), "n".into())]);
        let body = json!({"name": "m", "version": "3", "key": "k", "value": "v", "tags": [{"key": "a"}]});
        let body = body.as_object().cloned().unwrap_or_default();
        let resource = json!({"target": {"name": "Fraud-Detector", "alias": "Ｃｈａｍｐｉｏｎ"},
            "model_version": {"name": "fraud-detector", "aliases": ["cham\u{200B}pion", 7], "stage_history": [{"alias": "Prod"}]},
            "registered_model": {"aliases": {"CHAMPION": "3"}}, "source_run": {"metrics": {"auc": 0.9}}});
        for (body, workspace) in [(None, None), (Some(&body), Some("team-a"))] {
            let request = RequestFacts { method: "POST", path: "/api/2.0/x", query: &query, body, workspace };
            let expected = to_rego(&build(&principal, &op, &request, resource.clone()));
            assert_eq!(build_rego(&principal, &op, &request, &resource), expected);
        }
        let folded = folded_names(&resource);
        assert_eq!(
            Value::Object(folded),
            json!({"Fraud-Detector": "fraud-detector", "Ｃｈａｍｐｉｏｎ": "champion", "fraud-detector": "fraud-detector",
                "cham\u{200B}pion": "champion", "CHAMPION": "champion", "Prod": "prod"})
        );
        for sample in super::super::samples::all() {
            assert_eq!(sample.input(), to_rego(&sample.document()), "{}", sample.name);
        }
    }
}
