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

/// The input document's fields [`digest`] reads, as `section.field` paths (`folded` is derived from `resource`). A
/// unit test compares this list with the fields [`build_rego`] writes, so a field added to the document and not
/// to the digest fails the build's tests instead of making two different inputs share a cached decision.
pub const DIGESTED_FIELDS: &[&str] = &[
    "version",
    "principal.sub",
    "principal.issuer",
    "principal.groups",
    "principal.claims",
    "principal.via",
    "operation.rpc",
    "operation.read_only",
    "operation.resource_type",
    "operation.server_side_job",
    "operation.permission",
    "operation.path_params",
    "request.method",
    "request.path",
    "request.query",
    "request.body",
    "request.workspace",
    "folded",
    "resource",
];

/// A 128-bit keyed digest (SipHash-1-3 with the process's secret `key`) of everything [`build_rego`] reads (of the
/// principal's claims, only the bundle's declared `claims` when it declares them), and of the bundle `generation`:
/// two requests with the same digest get the same input document from the same bundle.
/// The encoding is prefix-free (every string and list carries its length, every JSON node a type tag), so distinct
/// inputs collide only by chance (about 2^-128 per pair, and the key is secret, so a caller cannot search for a
/// collision offline). Object keys are hashed in their order, so the same object in another order only misses.
pub fn digest(
    key: (u64, u64),
    generation: u64,
    claims: Option<&[String]>,
    principal: &Principal,
    operation: &Operation,
    request: &RequestFacts<'_>,
    resource: &Value,
) -> u128 {
    use siphasher::sip128::Hasher128;
    use std::hash::Hasher;
    let mut h = siphasher::sip128::SipHasher13::new_with_keys(key.0, key.1);
    h.write_u64(generation);
    h.write_u32(INPUT_VERSION);
    put_str(&mut h, &principal.sub);
    put_str(&mut h, &principal.issuer);
    h.write_usize(principal.groups.len());
    for g in &principal.groups {
        put_str(&mut h, g);
    }
    // The claims the document will hold: the bundle's declared ones (`Bundle::principal_view`), or all of them.
    match (claims, principal.claims.as_object()) {
        (None, _) => put_json(&mut h, &principal.claims),
        (Some(declared), all) => {
            let kept = || declared_only(all, declared);
            h.write_u8(5);
            h.write_usize(kept().count());
            for (k, v) in kept() {
                put_str(&mut h, k);
                put_json(&mut h, v);
            }
        }
    }
    put_str(&mut h, principal.via.as_str());
    put_str(&mut h, operation.rpc);
    h.write_u8(u8::from(operation.read_only));
    put_str(&mut h, operation.resource.as_str());
    h.write_u8(u8::from(operation.server_side_job));
    put_str(&mut h, permission::need(operation).as_str());
    h.write_usize(operation.path_params.len());
    for (k, v) in &operation.path_params {
        put_str(&mut h, k);
        put_str(&mut h, v);
    }
    put_str(&mut h, request.method);
    put_str(&mut h, request.path);
    put_map(&mut h, request.query);
    match request.body {
        None => h.write_u8(0),
        Some(body) => {
            h.write_u8(1);
            put_map(&mut h, body);
        }
    }
    match request.workspace {
        None => h.write_u8(0),
        Some(w) => {
            h.write_u8(1);
            put_str(&mut h, w);
        }
    }
    // `folded` is a function of `resource` alone.
    put_json(&mut h, resource);
    h.finish128().as_u128()
}

fn put_str(h: &mut impl std::hash::Hasher, s: &str) {
    h.write_usize(s.len());
    h.write(s.as_bytes());
}

fn put_map(h: &mut impl std::hash::Hasher, m: &Map<String, Value>) {
    h.write_usize(m.len());
    for (k, v) in m {
        put_str(h, k);
        put_json(h, v);
    }
}

/// The claims of `all` that `declared` names, in their order: what `input.principal.claims` holds when a bundle
/// declares the claims it reads (`Bundle::principal_view` builds the document from the same selection).
pub fn declared_only<'a>(
    all: Option<&'a Map<String, Value>>,
    declared: &'a [String],
) -> impl Iterator<Item = (&'a String, &'a Value)> {
    all.into_iter().flatten().filter(|(k, _)| declared.iter().any(|d| d == *k))
}

fn put_json(h: &mut impl std::hash::Hasher, v: &Value) {
    match v {
        Value::Null => h.write_u8(0),
        Value::Bool(b) => {
            h.write_u8(1);
            h.write_u8(u8::from(*b));
        }
        // As `to_rego` reads numbers: a non-negative integer, a negative integer or a float.
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => {
                h.write_u8(2);
                h.write_u64(u);
            }
            (None, Some(i)) => {
                h.write_u8(6);
                h.write_i64(i);
            }
            (None, None) => {
                h.write_u8(7);
                h.write_u64(n.as_f64().map_or(u64::MAX, f64::to_bits));
            }
        },
        Value::String(s) => {
            h.write_u8(3);
            put_str(h, s);
        }
        Value::Array(items) => {
            h.write_u8(4);
            h.write_usize(items.len());
            for item in items {
                put_json(h, item);
            }
        }
        Value::Object(m) => {
            h.write_u8(5);
            put_map(h, m);
        }
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

    fn fields(v: &regorus::Value, prefix: &str, depth: usize, out: &mut Vec<String>) {
        match v {
            regorus::Value::Object(map) if depth > 0 => {
                for (k, child) in map.iter() {
                    let k = k.as_string().map(|s| s.to_string()).unwrap_or_default();
                    let path = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                    let deeper = matches!(path.as_str(), "principal" | "operation" | "request");
                    fields(child, &path, if deeper { 1 } else { 0 }, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    #[test]
    fn the_digest_covers_every_field_of_the_document() {
        let mut built = Vec::new();
        fields(&sample(), "", 1, &mut built);
        built.sort();
        let mut digested: Vec<String> = DIGESTED_FIELDS.iter().map(|f| f.to_string()).collect();
        digested.sort();
        assert_eq!(built, digested, "a field of the input document is not in the decision cache's digest");
    }

    #[test]
    fn the_digest_changes_with_every_fact_and_with_the_bundle() {
        use crate::mlflow::routes::Resource;
        let key = (7, 11);
        let principal = Principal {
            sub: "alice".into(),
            issuer: "https://idp.example".into(),
            groups: vec!["a".into()],
            claims: json!({"sub": "alice", "exp": 1, "f": 0.5, "n": -3}),
            via: crate::auth::Via::Bearer,
        };
        let op = Operation::plain("GetRegisteredModel", true, Resource::RegisteredModel);
        let query = crate::mlflow::params::query_map(&[("name".into(), "m".into())]);
        let body = json!({"k": [1, "x", null, true, {"a": 2}]}).as_object().cloned().unwrap_or_default();
        let request = RequestFacts { method: "GET", path: "/p", query: &query, body: Some(&body), workspace: None };
        let resource = json!({"permissions": {"chain": [{"grants": {"users": {"bob": "READ"}}}]}});
        let base = digest(key, 1, None, &principal, &op, &request, &resource);
        assert_eq!(base, digest(key, 1, None, &principal, &op, &request, &resource), "the same input, the same digest");
        let mut changed = vec![
            digest((7, 12), 1, None, &principal, &op, &request, &resource),
            digest(key, 2, None, &principal, &op, &request, &resource),
        ];
        let principals = [
            Principal { sub: "alicf".into(), ..principal.clone() },
            Principal { issuer: "https://idp.other".into(), ..principal.clone() },
            Principal { groups: vec!["a".into(), "b".into()], ..principal.clone() },
            Principal { groups: vec!["ab".into()], ..principal.clone() },
            Principal { claims: json!({"sub": "alice", "exp": 2, "f": 0.5, "n": -3}), ..principal.clone() },
            Principal { claims: json!({"sub": "alice", "exp": 1, "f": 0.25, "n": -3}), ..principal.clone() },
            Principal { claims: json!({"sub": "alice", "exp": "1", "f": 0.5, "n": -3}), ..principal.clone() },
            Principal { via: crate::auth::Via::Session, ..principal.clone() },
        ];
        changed.extend(principals.iter().map(|p| digest(key, 1, None, p, &op, &request, &resource)));
        let mut ops = vec![
            Operation::plain("GetRegisteredModels", true, Resource::RegisteredModel),
            Operation::plain("GetRegisteredModel", false, Resource::RegisteredModel),
            Operation::plain("GetRegisteredModel", true, Resource::ModelVersion),
        ];
        let mut with_params = op.clone();
        with_params.path_params = vec![("model_id", "m-1".into())];
        ops.push(with_params);
        let mut job = op.clone();
        job.server_side_job = true;
        ops.push(job);
        changed.extend(ops.iter().map(|o| digest(key, 1, None, &principal, o, &request, &resource)));
        let other_query = crate::mlflow::params::query_map(&[("name".into(), "n".into())]);
        let other_body = json!({"k": [1, "x", null, false, {"a": 2}]}).as_object().cloned().unwrap_or_default();
        let requests = [
            RequestFacts { method: "POST", ..request.clone() },
            RequestFacts { path: "/q", ..request.clone() },
            RequestFacts { query: &other_query, ..request.clone() },
            RequestFacts { body: None, ..request.clone() },
            RequestFacts { body: Some(&other_body), ..request.clone() },
            RequestFacts { workspace: Some("team-a"), ..request.clone() },
            RequestFacts { workspace: Some(""), ..request.clone() },
        ];
        changed.extend(requests.iter().map(|r| digest(key, 1, None, &principal, &op, r, &resource)));
        for other in [
            json!({"permissions": {"chain": [{"grants": {"users": {"bob": "EDIT"}}}]}}),
            json!({"permissions": {"chain": [{"grants": {"users": {"bob": "READ", "eve": "READ"}}}]}}),
            json!({"permissions": {"chain": [{"grants": {"users": {"bob": "READ"}}}, {}]}}),
            json!({"permissions": {"chain": [{"grants": {"users": {"bob": ["READ"]}}}]}}),
            json!({"permissions": {"chain": [{"grants": {"users": {"bob": null}}}]}}),
            json!({}),
        ] {
            changed.push(digest(key, 1, None, &principal, &op, &request, &other));
        }
        let mut all = changed.clone();
        all.push(base);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), changed.len() + 1, "every changed input must have its own digest");
        // With declared claims, only those count: a fresh token of the same caller is the same input.
        let declared = ["f".to_string()];
        let narrowed = |p: &Principal| digest(key, 1, Some(&declared), p, &op, &request, &resource);
        assert_eq!(narrowed(&principal), narrowed(&principals[4]), "exp is not declared");
        assert_ne!(narrowed(&principal), narrowed(&principals[5]), "f is declared");
        assert_ne!(narrowed(&principal), base, "the narrowed claims are another document");
    }
}
