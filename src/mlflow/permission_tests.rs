use super::*;
use crate::mlflow::routes::{all_routes, classify, Resource};

fn op(method: &str, path: &str) -> Operation {
    classify(method, path).unwrap_or_else(|| Operation::plain("Unknown", true, Resource::Unknown))
}

#[test]
fn every_rpc_in_the_tables_is_a_route_of_the_table() {
    let known: std::collections::HashSet<&str> = all_routes().map(|(_, _, rpc, _)| rpc).collect();
    let named = TABLE
        .iter()
        .flat_map(|(_, _, rpcs)| rpcs.iter())
        .chain(READS.iter().flat_map(|(_, rpcs)| rpcs.iter()))
        .chain(CREATIONS.iter())
        .chain(FILTERED.iter());
    for rpc in named {
        assert!(known.contains(rpc), "{rpc} is not an RPC of the route table");
    }
}

/// A write to an experiment, a run, a registered model, a version or a logged model that is not checked would be a
/// hole: every one of them needs a level (or is a creation).
#[test]
fn every_write_to_a_governed_object_needs_a_level() {
    let governed =
        [Resource::Experiment, Resource::Run, Resource::RegisteredModel, Resource::ModelVersion, Resource::LoggedModel];
    for (method, path, rpc, read_only) in all_routes() {
        let o = op(method, &path.replace('<', "x").replace('>', ""));
        if read_only || !governed.contains(&o.resource) || o.rpc != rpc {
            continue;
        }
        let need = need(&o);
        assert!(matches!(need, Need::On(Level::Edit | Level::Manage, _) | Need::Create), "{method} {path}: {need:?}");
    }
}

#[test]
fn deletes_renames_and_restores_need_manage_and_logging_needs_edit() {
    let cases = [
        ("POST", "/api/2.0/mlflow/experiments/delete", "manage"),
        ("POST", "/api/2.0/mlflow/experiments/update", "manage"),
        ("POST", "/ajax-api/2.0/mlflow/runs/restore", "manage"),
        ("POST", "/api/2.0/mlflow/registered-models/rename", "manage"),
        ("DELETE", "/api/2.0/mlflow/model-versions/delete", "manage"),
        ("POST", "/api/2.0/mlflow/runs/log-metric", "edit"),
        ("POST", "/api/2.0/mlflow/runs/create", "edit"),
        ("POST", "/api/2.0/mlflow/model-versions/transition-stage", "edit"),
        ("GET", "/api/2.0/mlflow/runs/get", "read"),
        ("GET", "/api/2.0/mlflow/registered-models/get", "read"),
        ("POST", "/api/2.0/mlflow/experiments/create", "create"),
        ("POST", "/api/2.0/mlflow/runs/search", "filter"),
        ("GET", "/health", "none"),
    ];
    for (method, path, want) in cases {
        assert_eq!(need(&op(method, path)).as_str(), want, "{method} {path}");
    }
    assert_eq!(need(&op("POST", "/api/2.0/mlflow/runs/log-batch")), Need::On(Level::Edit, Anchor::Run));
    assert_eq!(Anchor::Run.fields(), ["run_id", "run_uuid"]);
    assert_eq!(need(&op("GET", "/get-artifact")), Need::On(Level::Read, Anchor::Run));
    assert_eq!(need(&op("GET", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/x")).as_str(), "read");
    assert_eq!(need(&op("GET", "/api/3.0/mlflow/traces/tr-1")), Need::On(Level::Read, Anchor::Trace));
}

#[test]
fn grants_round_trip_and_unreadable_grants_are_refused() {
    let g = Grants::parse(Some(r#"{"users": {"alice@x.org": "EDIT"}, "groups": {"team-b": "NO_PERMISSIONS"}}"#));
    let g = g.unwrap_or_default();
    assert_eq!(g.users.get("alice@x.org"), Some(&Value::from("EDIT")));
    assert_eq!(Grants::parse(Some(&g.to_tag())), Ok(g));
    assert_eq!(Grants::parse(None), Ok(Grants::default()));
    for bad in ["[]", "{\"users\": {\"a\": \"WRITE\"}}", "{\"users\": []}", "{\"roles\": {}}", "not json"] {
        assert!(Grants::parse(Some(bad)).is_err(), "{bad}");
    }
}

#[test]
fn artifact_paths_name_their_experiment_with_or_without_a_workspace() {
    assert_eq!(artifact_experiment("1/abc/artifacts/model.pkl"), Some("1"));
    assert_eq!(artifact_experiment("workspaces/team/7/abc/artifacts"), Some("7"));
    assert_eq!(artifact_experiment(""), None);
    assert_eq!(artifact_experiment("workspaces/team"), None);
}

/// MLflow's tag-key rule (`mlflow.utils.validation._validate_tag_name`, without the colon Windows servers refuse):
/// `[/\w.\- ]` only, a normalised path, at most 250 characters.
fn mlflow_accepts_key(key: &str) -> bool {
    let chars_ok = key.chars().all(|c| c.is_ascii_alphanumeric() || "/_.- ".contains(c));
    let normalised = !key.starts_with('/') && !key.contains("//") && key.split('/').all(|s| s != "." && s != "..");
    chars_ok && normalised && key.len() <= MAX_TAG_KEY
}

#[test]
fn any_grantee_name_round_trips_through_a_valid_case_proof_tag_key() {
    let names = [
        "ana",
        "Ana",
        "ana@corp.example.com",
        "https://idp.example.com/#auth0|5f3c",
        "corp|alice",
        "issuer#sub",
        "../../etc",
        "a.2e",
        "with space and: colon",
        "ünïcødé 名前",
        "team-fraud_ml",
        &"x".repeat(75),
        &"\u{10FFFF}".repeat(18),
    ];
    let mut keys = std::collections::HashSet::new();
    for who in names {
        for kind in [Grantee::User, Grantee::Group] {
            let key = grant_tag_key(kind, who).unwrap_or_default();
            assert!(mlflow_accepts_key(&key), "{who:?} -> {key:?}");
            assert_eq!(
                key,
                key.to_lowercase(),
                "{who:?}: keys are lower case, so case-insensitive stores keep them apart"
            );
            assert_eq!(parse_grant_tag_key(&key), Ok(Some((kind, who.to_string()))), "{key}");
            assert!(keys.insert(key.to_lowercase()), "{who:?} collides");
        }
    }
    assert_eq!(
        grant_tag_key(Grantee::User, "ana@corp.com").as_deref(),
        Some("mlflow_gate.grant.user.ana.40corp.2ecom")
    );
    assert_eq!(grant_tag_key(Grantee::Group, "Team B").as_deref(), Some("mlflow_gate.grant.group..54eam.20.42"));
    assert_eq!(grant_tag_key(Grantee::User, ""), None);
    assert_eq!(grant_tag_key(Grantee::User, &"@".repeat(80)), None, "past MLflow's 250-character key limit");
}

#[test]
fn tags_the_gate_did_not_write_in_its_grant_namespace_are_unreadable() {
    assert_eq!(parse_grant_tag_key("mlflow_gate.grants"), Ok(None));
    assert_eq!(parse_grant_tag_key("mlflow_gate.created_by"), Ok(None));
    for bad in [
        "mlflow_gate.grant.role.admins",
        "mlflow_gate.grant.user.Ana",
        "mlflow_gate.grant.user.a.2",
        "mlflow_gate.grant.user.a.zz",
        "mlflow_gate.grant.user..61",
        "mlflow_gate.grant.user.a.2E",
        "mlflow_gate.grant.user..ff",
        "mlflow_gate.grant.user.",
    ] {
        assert!(parse_grant_tag_key(bad).is_err(), "{bad}");
    }
}

#[test]
fn per_grantee_tags_merge_over_the_legacy_tag() {
    let tags = serde_json::json!({
        "mlflow_gate.grants": r#"{"users": {"ben": "EDIT", "cid": "READ"}, "groups": {"team-b": "READ"}}"#,
        "mlflow_gate.grant.user.ben": "NO_PERMISSIONS",
        "mlflow_gate.grant.group.team-a": "MANAGE",
        "team": "fraud",
    });
    let g = Grants::from_tags(tags.as_object().unwrap_or(&Map::new())).unwrap_or_default();
    assert_eq!(
        g.to_json(),
        serde_json::json!({"users": {"ben": "NO_PERMISSIONS", "cid": "READ"},
            "groups": {"team-b": "READ", "team-a": "MANAGE"}})
    );
    let bad = serde_json::json!({"mlflow_gate.grant.user.ben": "ALL"});
    assert!(Grants::from_tags(bad.as_object().unwrap_or(&Map::new())).is_err());
    let bad = serde_json::json!({"mlflow_gate.grant.team.x": "READ"});
    assert!(Grants::from_tags(bad.as_object().unwrap_or(&Map::new())).is_err());
}

#[test]
fn trace_grants_are_experiment_tags_that_round_trip_for_any_trace_id_and_name() {
    let id = "tr-0123456789abcdef0123456789abcdef";
    for (trace, who) in [(id, "ana@corp.example.com"), ("tr-Weird.user.x", "x.group.y"), (id, &"\u{e9}".repeat(30))] {
        for kind in [Grantee::User, Grantee::Group] {
            let key = trace_grant_tag_key(trace, kind, who).unwrap_or_default();
            assert!(mlflow_accepts_key(&key) && key == key.to_lowercase(), "{key}");
            assert_eq!(parse_trace_grant_tag_key(&key), Ok(Some((trace.to_string(), kind, who.to_string()))));
            assert_eq!(parse_grant_tag_key(&key), Ok(None), "not an experiment grant");
        }
    }
    assert_eq!(
        trace_grant_tag_key(id, Grantee::User, "alex").as_deref(),
        Some("mlflow_gate.grant.trace.tr-0123456789abcdef0123456789abcdef.user.alex")
    );
    assert!(trace_grant_tag_key(id, Grantee::User, &"@".repeat(62)).is_none());
    for bad in
        ["mlflow_gate.grant.trace.tr-1", "mlflow_gate.grant.trace.tr-1.role.x", "mlflow_gate.grant.trace..user.a"]
    {
        assert!(parse_trace_grant_tag_key(bad).is_err(), "{bad}");
    }
    let tags = serde_json::json!({
        "mlflow_gate.grant.trace.tr-1.user.alex": "NO_PERMISSIONS",
        "mlflow_gate.grant.trace.tr-1.group.team-b": "READ",
        "mlflow_gate.grant.group.team-a": "EDIT",
    });
    let g = Grants::from_tags(tags.as_object().unwrap_or(&Map::new())).unwrap_or_default();
    assert_eq!(g.to_json(), serde_json::json!({"users": {}, "groups": {"team-a": "EDIT"}}));
    assert_eq!(
        g.traces.get("tr-1").map(Grants::to_json),
        Some(serde_json::json!({"users": {"alex": "NO_PERMISSIONS"}, "groups": {"team-b": "READ"}}))
    );
}

/// A read or a list of an object an experiment or a registered model owns that is neither resolved to its object,
/// nor checked object by object, nor filtered, would show another team's objects: every such route needs one.
#[test]
fn every_read_of_an_owned_object_is_resolved_checked_or_filtered() {
    let owned = [
        Resource::Experiment,
        Resource::Run,
        Resource::Metric,
        Resource::Artifact,
        Resource::RegisteredModel,
        Resource::ModelVersion,
        Resource::LoggedModel,
        Resource::Trace,
        Resource::Assessment,
        Resource::Dataset,
        Resource::Scorer,
        Resource::GraphQl,
    ];
    let mut missing = Vec::new();
    for (method, path, rpc, read_only) in all_routes() {
        let o = op(method, &path.replace('<', "x").replace('>', ""));
        if !read_only || !owned.contains(&o.resource) || o.rpc != rpc || UNCHECKED_READS.contains(&rpc) {
            continue;
        }
        if need(&o) == Need::Unchecked {
            missing.push(format!("{method} {path} ({rpc})"));
        }
    }
    assert!(missing.is_empty(), "reads without a permission resolution:\n{}", missing.join("\n"));
}

/// Writes to the objects an experiment owns besides runs and logged models (traces, assessments, datasets,
/// scorers) need a level too, except the ones listed with their reason.
#[test]
fn every_write_to_an_experiment_owned_object_needs_a_level() {
    let owned = [Resource::Trace, Resource::Assessment, Resource::Dataset, Resource::Scorer];
    let mut missing = Vec::new();
    for (method, path, rpc, read_only) in all_routes() {
        let o = op(method, &path.replace('<', "x").replace('>', ""));
        if read_only || !owned.contains(&o.resource) || o.rpc != rpc || UNCHECKED_WRITES.contains(&rpc) {
            continue;
        }
        if !matches!(need(&o), Need::On(Level::Edit | Level::Manage, _) | Need::Each(Level::Edit | Level::Manage, _)) {
            missing.push(format!("{method} {path} ({rpc})"));
        }
    }
    assert!(missing.is_empty(), "writes without a level:\n{}", missing.join("\n"));
}

#[test]
fn lists_of_ids_are_read_where_mlflow_reads_them() {
    let pairs = |p: &[(&str, &str)]| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    let bulk = op("GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk");
    let q = pairs(&[("run_id", "a"), ("run_id", "b"), ("metric_key", "m")]);
    assert_eq!(listed(&bulk, "GET", &q, None), Ok(Some(("run_ids", vec![Value::from("a"), Value::from("b")]))));
    assert_eq!(repeated_scalar(bulk.rpc), Some("run_id"));
    let interval = op("GET", "/api/2.0/mlflow/metrics/get-history-bulk-interval");
    let q = pairs(&[("run_ids", "a"), ("runIds", "b")]);
    assert_eq!(listed(&interval, "GET", &q, None), Ok(Some(("run_ids", vec![Value::from("a"), Value::from("b")]))));
    let infos = op("POST", "/api/3.0/mlflow/traces/batchGetInfos");
    let body = serde_json::json!({"trace_ids": ["t"]}).as_object().cloned().unwrap_or_default();
    assert_eq!(listed(&infos, "POST", &[], Some(&body)), Ok(Some(("trace_ids", vec![Value::from("t")]))));
    let bad = serde_json::json!({"trace_ids": "t"}).as_object().cloned().unwrap_or_default();
    assert!(listed(&infos, "POST", &[], Some(&bad)).is_err());
    assert_eq!(listed(&op("GET", "/api/2.0/mlflow/runs/get"), "GET", &q, None), Ok(None));
    let link = op("POST", "/api/2.0/mlflow/traces/link-to-run");
    assert_eq!(need(&link), Need::Each(Level::Edit, Anchor::Trace));
    assert_eq!(each_extras(link.rpc), (false, Some(Anchor::Run)));
    assert_eq!(each_extras("CreateDataset"), (true, None));
    assert_eq!(need(&op("POST", "/graphql")), Need::Queried);
    assert_eq!(need(&op("GET", "/api/3.0/mlflow/datasets/d-1")), Need::On(Level::Read, Anchor::Dataset));
    assert_eq!(need(&op("GET", "/api/3.0/mlflow/scorers/list")), Need::Filter);
}

#[test]
fn a_v3_trace_is_started_in_the_experiment_its_body_names() {
    let body = |v: Value| v.as_object().cloned().unwrap_or_default();
    let snake = body(
        serde_json::json!({"trace": {"trace_info": {"trace_location": {"mlflow_experiment": {"experiment_id": "7"}}}}}),
    );
    assert_eq!(nested_experiment("StartTraceV3", Some(&snake)), Ok(Some("7".to_string())));
    let camel = body(
        serde_json::json!({"trace": {"traceInfo": {"traceLocation": {"mlflowExperiment": {"experimentId": "8"}}}}}),
    );
    assert_eq!(nested_experiment("StartTraceV3", Some(&camel)), Ok(Some("8".to_string())));
    let both = body(serde_json::json!({"trace": {"trace_info": {}, "traceInfo": {}}}));
    assert!(nested_experiment("StartTraceV3", Some(&both)).is_err());
    assert_eq!(nested_experiment("StartTraceV3", Some(&body(serde_json::json!({"trace": {}})))), Ok(None));
    assert_eq!(nested_experiment("StartTrace", Some(&snake)), Ok(None));
    assert_eq!(need(&op("POST", "/api/3.0/mlflow/traces")), Need::On(Level::Edit, Anchor::Experiment));
}

/// Every AI-gateway route either needs a level on the endpoint it names, or is a filtered list, or is one of the
/// routes deliberately left to the group rule (`GATEWAY_GROUP_RULED`, each with its reason): a new gateway route
/// fails here until someone decides.
#[test]
fn every_gateway_route_has_a_level_a_filter_or_a_reason() {
    let mut missing = Vec::new();
    for (method, path, rpc, _) in all_routes() {
        let o = op(method, &path.replace('<', "x").replace('>', ""));
        if o.resource != Resource::Gateway || o.rpc != rpc || GATEWAY_GROUP_RULED.contains(&rpc) {
            continue;
        }
        if !matches!(need(&o), Need::On(_, Anchor::GatewayEndpoint | Anchor::GatewayEndpointName) | Need::Filter) {
            missing.push(format!("{method} {path} ({rpc})"));
        }
    }
    assert!(missing.is_empty(), "gateway routes without a level:\n{}", missing.join("\n"));
    for rpc in GATEWAY_GROUP_RULED {
        assert!(all_routes().any(|(_, _, r, _)| r == rpc), "{rpc} is not a route");
    }
}

#[test]
fn gateway_endpoints_are_read_used_edited_and_managed_as_mlflow_levels_them() {
    let cases = [
        ("GET", "/api/3.0/mlflow/gateway/endpoints/get", "read"),
        ("GET", "/ajax-api/3.0/mlflow/gateway/guardrails/list-for-endpoint", "read"),
        ("POST", "/api/3.0/mlflow/gateway/endpoints/update", "edit"),
        ("POST", "/ajax-api/3.0/mlflow/gateway/endpoints/set-tag", "edit"),
        ("POST", "/api/3.0/mlflow/gateway/endpoints/models/attach", "edit"),
        ("POST", "/api/3.0/mlflow/gateway/endpoints/bindings/create", "edit"),
        ("DELETE", "/api/3.0/mlflow/gateway/endpoints/delete", "manage"),
        ("POST", "/gateway/mlflow/v1/chat/completions", "use"),
        ("POST", "/gateway/chat/mlflow/invocations", "use"),
        ("POST", "/gateway/proxy/chat/v1/x", "use"),
        ("POST", "/gateway/anthropic/v1/messages", "use"),
        ("GET", "/api/3.0/mlflow/gateway/endpoints/list", "filter"),
        ("GET", "/api/3.0/mlflow/gateway/endpoints/bindings/list", "filter"),
        ("GET", "/gateway/mlflow/v1/models", "filter"),
        ("POST", "/api/3.0/mlflow/gateway/secrets/create", "none"),
        ("POST", "/api/3.0/mlflow/gateway/endpoints/create", "none"),
    ];
    for (method, path, want) in cases {
        assert_eq!(need(&op(method, path)).as_str(), want, "{method} {path}");
    }
    assert_eq!(
        need(&op("POST", "/gateway/chat/mlflow/invocations")),
        Need::On(Level::Use, Anchor::GatewayEndpointName)
    );
    assert_eq!(Anchor::GatewayEndpointName.fields(), ["endpoint_name", "model", "name"]);
    assert_eq!(Anchor::GatewayEndpoint.as_str(), "gateway_endpoint");
    let grant = classify_grants("PATCH", "/ajax-api/2.0/mlflow/gateway/endpoints/permissions/update");
    assert_eq!(grant.map(|o| (o.rpc, o.resource)), Some(("UpdateGatewayEndpointPermission", Resource::Gateway)));
    assert_eq!(grant_route("DeleteGatewayEndpointPermission"), Some(Anchor::GatewayEndpoint));
}

/// `need` as it was before its tables were indexed by RPC: the scan, in order.
fn need_by_scan(op: &Operation) -> Need {
    if op.workflow {
        return Need::On(Level::Read, Anchor::RegisteredModel);
    }
    if let Some(anchor) = grant_route(op.rpc) {
        return Need::On(Level::Manage, anchor);
    }
    if let Some((level, anchor, _)) = TABLE.iter().find(|(_, _, rpcs)| rpcs.contains(&op.rpc)) {
        return Need::On(*level, *anchor);
    }
    if let Some((anchor, _)) = READS.iter().find(|(_, rpcs)| rpcs.contains(&op.rpc)) {
        return Need::On(Level::Read, *anchor);
    }
    if let Some((level, anchor, _)) = OWNED_WRITES.iter().find(|(_, _, rpcs)| rpcs.contains(&op.rpc)) {
        return Need::On(*level, *anchor);
    }
    if let Some((level, anchor, _)) = GATEWAY.iter().find(|(_, _, rpcs)| rpcs.contains(&op.rpc)) {
        return Need::On(*level, *anchor);
    }
    if let Some((level, anchor, _)) = EACH.iter().find(|(_, _, rpcs)| rpcs.contains(&op.rpc)) {
        return Need::Each(*level, *anchor);
    }
    if op.resource == Resource::GraphQl {
        return Need::Queried;
    }
    if CREATIONS.contains(&op.rpc) {
        return Need::Create;
    }
    if FILTERED.contains(&op.rpc) {
        return Need::Filter;
    }
    Need::Unchecked
}

#[test]
fn the_indexed_tables_answer_as_the_scan_did_for_every_route() {
    let mut checked = 0;
    for (method, path, _, _) in all_routes() {
        let mut o = op(method, &path.replace('<', "x").replace('>', ""));
        for workflow in [false, true] {
            o.workflow = workflow;
            assert_eq!(need(&o), need_by_scan(&o), "{method} {path} (workflow: {workflow})");
            checked += 1;
        }
    }
    assert!(checked > 300, "only {checked} routes");
}
