package mlflow_gate

import rego.v1

# ---------------------------------------------------------------------------------------------------------------
# The decision document is always defined and always has exactly these four keys
# ---------------------------------------------------------------------------------------------------------------

# The gate's start-up self-test: GetRegisteredModel by a user with no groups, resource {}.
test_the_self_test_read_is_allowed if {
	sample := {
		"version": 1,
		"principal": {"sub": "self-test", "issuer": "https://self-test.invalid", "groups": [], "claims": {"sub": "self-test"}},
		"operation": {"rpc": "GetRegisteredModel", "read_only": true, "resource_type": "registered_model", "server_side_job": false, "path_params": {}},
		"request": {"method": "GET", "path": "/api/2.0/mlflow/registered-models/get", "query": {"name": ["m"]}, "body": null},
		"resource": {},
	}
	decision == fx_allowed with input as sample
}

test_the_decision_is_defined_without_any_input if {
	object.keys(decision) == {"allow", "reasons", "break_glass", "would_deny"}
	decision.allow == false
	"the request carries no authenticated subject" in decision.reasons
}

test_the_decision_is_defined_for_an_empty_or_malformed_input if {
	every inp in [{}, [], "x", {"principal": null, "operation": 5, "request": "r", "resource": []}] {
		d := decision with input as inp
		object.keys(d) == {"allow", "reasons", "break_glass", "would_deny"}
		d.allow == false
		d.break_glass == false
	}
}

# Every registry rule, fed facts of the wrong types: the decision stays defined (no evaluation error) and nothing
# is allowed that needs a fact the input does not carry.
test_malformed_registry_facts_never_error if {
	garbage := {
		"target": {"name": 5, "version": {"x": 1}, "stage": ["Production"], "alias": 7, "key": null, "creator": 3, "archive_existing_versions": "yes"},
		"registered_model": "m",
		"model_version": ["v"],
		"source_run": 1,
		"source_matches_run": "true",
		"approvals": {"approver": "bob"},
	}
	rpcs := [
		"TransitionModelVersionStage", "SetRegisteredModelAlias", "DeleteRegisteredModelAlias", "DeleteModelVersion",
		"ApproveTransitionRequest", "RejectTransitionRequest", "DeleteTransitionRequest", "SetModelVersionTag",
		"SetTag", "CreateModelVersion", "DeleteRegisteredModel",
	]
	every rpc in rpcs {
		every who in [fx_alice, fx_ci, fx_carol, fx_root] {
			d := decision with input as object.union(fx_write(who, rpc, garbage), {"request": {"body": {"tags": 5}}})
			is_boolean(d.allow)
			is_array(d.reasons)
		}
	}
	d := decision with input as fx_write(fx_ci, "TransitionModelVersionStage", garbage)
	not d.allow
}

test_a_promotion_with_malformed_facts_is_denied if {
	garbage := object.union(fx_v1_staging, {"target": {"stage": "Production", "archive_existing_versions": true}, "model_version": "v", "source_run": "r", "approvals": "bob"})
	d := decision with input as fx_write(fx_ci, "TransitionModelVersionStage", garbage)
	not d.allow
	d.reasons == [
		"version 1 of fraud-detector has no approval from a reviewer other than its creator",
		"version 1 of fraud-detector has no recorded creator (registered before the gate?), so its approvals cannot be checked; register it again through the gate",
		"version 1 of fraud-detector has no source run, so it cannot pass the evaluation gate",
		"version 1 of fraud-detector is in no stage; only a Staging version may be promoted to Production",
	]
}

test_a_broken_data_file_fails_closed if {
	every broken in [{"roles": "x"}, {"gates": 5}, {"production": []}, {"operations": null}, {"shadow_rules": "gate.metric"}] {
		d := decision with input as fx_promote(fx_ci, {"source_run": {"metrics": {"val_auc": 0.5}}})
			with data.roles as object.get(broken, "roles", {"ci": ["mlflow-ci"]})
			with data.gates as object.get(broken, "gates", {"models": {"fraud-detector": {"metrics": {"val_auc": {"min": 0.8}}}}})
			with data.production as object.get(broken, "production", {})
			with data.operations as object.get(broken, "operations", {})
			with data.shadow_rules as object.get(broken, "shadow_rules", [])
		not d.allow
	}
}

# ---------------------------------------------------------------------------------------------------------------
# Reasons and shadow mode
# ---------------------------------------------------------------------------------------------------------------

test_all_reasons_are_reported_sorted if {
	d := decision with input as fx_transition(fx_alice, object.union(fx_v1_staging, {"model_version": {"current_stage": "None"}, "approvals": []}), "Production", false)
	d.reasons == [
		"only the CI service account may transition to Production",
		"transition to Production must set archive_existing_versions=true",
		"version 1 of fraud-detector has no approval from a reviewer other than its creator",
		"version 1 of fraud-detector is in None; only a Staging version may be promoted to Production",
	]
}

test_shadowed_rules_report_without_denying if {
	inp := fx_to_staging(fx_alice, fx_facts("2", "None", "alice", fx_run("r2", 0.71), [], {}))
	d := decision with input as inp with data.shadow_rules as ["gate.metric"]
	d == {
		"allow": true,
		"reasons": [],
		"break_glass": false,
		"would_deny": ["gate.metric: val_auc 0.71 is below the gate 0.80 for fraud-detector"],
	}
}

test_shadowing_one_rule_leaves_the_others_enforced if {
	inp := fx_request(fx_alice, "DeleteRegisteredModel", "registered_model", false, fx_target({"name": "m"}))
	d := decision with input as object.union(inp, {"principal": {"sub": ""}}) with data.shadow_rules as ["registry.delete_model"]
	d == {
		"allow": false,
		"reasons": ["the request carries no authenticated subject"],
		"break_glass": false,
		"would_deny": ["registry.delete_model: only admins may delete registered models"],
	}
}

test_shadow_rules_default_to_none if {
	inp := fx_request(fx_alice, "DeleteRegisteredModel", "registered_model", false, fx_target({"name": "m"}))
	not decision.allow with input as inp with data.shadow_rules as null
	shadow_rules == set()
}

test_every_denial_has_a_stable_id if {
	ids := {v.id | some v in violations} with input as fx_transition(fx_alice, object.union(fx_v1_staging, {"model_version": {"current_stage": "None"}, "approvals": [], "source_matches_run": false}), "Production", false)
	ids == {"production.ci_only", "production.archive_existing", "approvals.required", "production.from_staging", "gate.source_mismatch"}
}

test_whole_bundle_shadow_mode_reports_every_denial_and_enforces_none if {
	inp := fx_write(fx_alice, "DeleteRegisteredModel", {"target": {"name": "m"}})
	not decision.allow with input as inp
	d := decision with input as inp with data.shadow_all as true
	d.allow
	d.reasons == []
	count(d.would_deny) > 0
	startswith(d.would_deny[0], "registry.delete_model: ")
	not decision.allow with input as inp with data.shadow_all as "true"
}

test_the_read_fast_path_agrees_with_the_full_evaluation if {
	every who in [fx_alice, fx_root, {"sub": "", "groups": []}] {
		every kind in [["GetRegisteredModel", "registered_model", false], ["ListWebhooks", "webhook", false], ["GetJob", "job", true], ["Unknown", "unknown", false]] {
			inp := object.union(fx_request(who, kind[0], kind[1], true, {"target": {}}), {"operation": {"server_side_job": kind[2]}})
			d := decision with input as inp
			d == full_decision with input as inp
		}
	}
}
