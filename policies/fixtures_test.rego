# Test fixtures shared by the *_test.rego files: principals, input documents (shaped like the gate's input v1, see
# README.md) and the fraud-detector registry facts of the reference scenario. Names start with fx_ so they never
# collide with policy rules. Loaded only by `mlflow-gate policy test` (and `opa test`), never by the gate.
package mlflow_gate

import rego.v1

# The decision for an allowed request that involves no break-glass and no shadowed rule.
fx_allowed := {"allow": true, "reasons": [], "break_glass": false, "would_deny": []}

# Whether `inp`, sent by `who` instead of its principal, is allowed.
fx_allowed_for(who, inp) if decision.allow with input as object.union(inp, {"principal": who})

fx_principal(sub, groups) := {"sub": sub, "issuer": "https://idp.example", "groups": groups, "claims": {"sub": sub}}

# An engineer: no groups at all.
fx_alice := fx_principal("alice", [])

fx_bob := fx_principal("bob", ["ml-senior"])

fx_dave := fx_principal("dave", ["ml-senior"])

fx_ci := fx_principal("ci-bot", ["mlflow-ci"])

fx_carol := fx_principal("carol", ["ml-oncall"])

fx_root := fx_principal("root", ["mlflow-admin"])

fx_request(who, rpc, resource_type, read_only, resource) := {
	"version": 1,
	"principal": who,
	"operation": {
		"rpc": rpc,
		"read_only": read_only,
		"resource_type": resource_type,
		"server_side_job": false,
		"path_params": {},
	},
	"request": {"method": "POST", "path": "/api/2.0/mlflow/test", "query": {}, "body": {}},
	"resource": resource,
}

# A mutation with a request body (tags, raw fields).
fx_request_with_body(who, rpc, resource_type, resource, body) := object.union(
	fx_request(who, rpc, resource_type, false, resource),
	{"request": {"body": body}},
)

fx_write(who, rpc, resource) := fx_request(who, rpc, "model_version", false, resource)

fx_read(who, rpc, resource_type) := fx_request(who, rpc, resource_type, true, {"target": {}})

fx_target(t) := {"target": t}

fx_run(run_id, auc) := {
	"run_id": run_id,
	"experiment_id": "1",
	"artifact_uri": sprintf("mlflow-artifacts:/1/%s/artifacts", [run_id]),
	"status": "FINISHED",
	"metrics": {"val_auc": auc, "val_loss": 0.2},
	"params": {"C": "1.0"},
	"tags": {"data_version": "v3", "git_commit": "abc123"},
}

fx_version(version, stage, creator, run_id) := {
	"name": "fraud-detector",
	"version": version,
	"current_stage": stage,
	"source": sprintf("runs:/%s/model", [run_id]),
	"run_id": run_id,
	"model_id": null,
	"status": "READY",
	"tags": {},
	"aliases": [],
	"created_by": creator,
	"stage_history": [],
	"was_in_production": false,
}

fx_approval(who) := {"approver": who, "stage": "Production", "at": 1795700000000, "valid": true}

# The registry facts of a version (name fraud-detector), as the gate's enrichment builds them.
fx_facts(version, stage, creator, run, approvals, target) := {
	"target": object.union({"name": "fraud-detector", "version": version}, target),
	"registered_model": {
		"name": "fraud-detector",
		"tags": {},
		"aliases": {},
		"latest_versions": {},
		"created_by": "alice",
	},
	"model_version": fx_version(version, stage, creator, run.run_id),
	"source_run": run,
	"source_matches_run": true,
	"lineage": {"verified": true, "kind": "run", "run_owner": creator, "logged_model_creator": null, "reason": null},
	"approvals": approvals,
}

# v1 of fraud-detector: created by alice, in Staging, val_auc 0.91 with the required tags, approved by bob.
fx_v1_staging := fx_facts("1", "Staging", "alice", fx_run("r1", 0.91), [fx_approval("bob")], {})

fx_transition(who, facts, stage, archive) := fx_write(
	who,
	"TransitionModelVersionStage",
	object.union(facts, {"target": {"stage": stage, "archive_existing_versions": archive}}),
)

# The happy path to Production, to be varied by the tests: CI promotes v1 with archiving.
fx_promote(who, patch) := fx_transition(who, object.union(fx_v1_staging, patch), "Production", true)

fx_set_alias(who, facts, alias) := fx_write(
	who,
	"SetRegisteredModelAlias",
	object.union(facts, {"target": {"alias": alias}}),
)

fx_to_staging(who, facts) := fx_transition(who, facts, "Staging", false)
