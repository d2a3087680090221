# Tests of permissions.rego: every rule and default, with the exact reasons. Team A (ana, alex) owns the
# experiment "exp-a" with the run "train", and the registered model "churn"; team B (ben) is a colleague.
package mlflow_gate

import rego.v1

fxp_ana := fx_principal("ana", ["team-a"])

fxp_ben := fx_principal("ben", ["team-b"])

fxp_grants(users, groups) := {"users": users, "groups": groups}

fxp_experiment(grants) := {"type": "experiment", "id": "1", "name": "exp-a", "owner": "ana", "grants": grants}

fxp_run(grants) := {"type": "run", "id": "r1", "name": "train", "owner": "ana", "grants": grants}

fxp_model(grants) := {"type": "registered_model", "id": "churn", "name": "churn", "owner": "ana", "grants": grants}

fxp_none := fxp_grants({}, {})

# A request needing `need` ("read", "edit", "manage", "create") on the objects of `chain`, the object first.
fxp_input(who, rpc, type, need, chain) := {
	"version": 1,
	"principal": who,
	"operation": {
		"rpc": rpc, "read_only": need == "read", "resource_type": type, "server_side_job": false,
		"path_params": {}, "permission": need,
	},
	"request": {"method": "POST", "path": "/api/2.0/mlflow/test", "query": {}, "body": {}, "workspace": null},
	"resource": {"target": {}, "permissions": {
		"workspace": null, "anchor": type, "exists": count(chain) > 0, "problem": null,
		"chain": chain,
	}},
}

fxp_log_metric(who, exp_grants) := fxp_input(who, "LogMetric", "run", "edit", [fxp_run(fxp_none), fxp_experiment(exp_grants)])

fxp_get_run(who, exp_grants) := fxp_input(who, "GetRun", "run", "read", [fxp_run(fxp_none), fxp_experiment(exp_grants)])

fxp_delete_experiment(who) := fxp_input(who, "DeleteExperiment", "experiment", "manage", [fxp_experiment(fxp_none)])

fxp_reasons(inp) := r if {
	r := decision.reasons with input as inp
}

# --- defaults -------------------------------------------------------------------------------------------------

test_a_colleague_reads_an_experiment_without_a_grant if {
	decision == fx_allowed with input as fxp_get_run(fxp_ben, fxp_none)
}

test_a_colleague_cannot_log_to_a_run_of_someone_elses_experiment if {
	fxp_reasons(fxp_log_metric(fxp_ben, fxp_none)) == [concat("", [
		"ben may not LogMetric the run \"train\" (r1) in the experiment \"exp-a\" (1): that needs EDIT, and ben has ",
		"READ (the default for authenticated users without a grant); ask its owner ana or an admin for a grant",
	])]
}

test_a_colleague_cannot_delete_or_rename_an_experiment if {
	fxp_reasons(fxp_delete_experiment(fxp_ben)) == [concat("", [
		"ben may not DeleteExperiment the experiment \"exp-a\" (1): that needs MANAGE, and ben has READ ",
		"(the default for authenticated users without a grant); ask its owner ana or an admin for a grant",
	])]
	inp := fxp_input(fxp_ben, "UpdateExperiment", "experiment", "manage", [fxp_experiment(fxp_none)])
	not decision.allow with input as inp
}

test_the_creator_manages_what_they_created if {
	decision == fx_allowed with input as fxp_delete_experiment(fxp_ana)
	decision == fx_allowed with input as fxp_log_metric(fxp_ana, fxp_none)
}

test_the_creator_level_can_be_lowered_to_edit if {
	decision == fx_allowed with input as fxp_log_metric(fxp_ana, fxp_none) with data.permissions.creator as "EDIT"
	reasons := fxp_reasons(fxp_delete_experiment(fxp_ana)) with data.permissions.creator as "EDIT"
	reasons == ["ana may not DeleteExperiment the experiment \"exp-a\" (1): that needs MANAGE, and ana has EDIT (as its creator); ask its owner ana or an admin for a grant"]
}

test_the_creator_of_a_run_manages_it_in_a_colleagues_experiment if {
	run := object.union(fxp_run(fxp_none), {"owner": "ben"})
	inp := fxp_input(fxp_ben, "DeleteRun", "run", "manage", [run, fxp_experiment(fxp_none)])
	decision == fx_allowed with input as inp
}

test_admins_have_every_level_even_against_no_permissions if {
	denied := fxp_grants({"root": "NO_PERMISSIONS"}, {})
	decision == fx_allowed with input as fxp_log_metric(fx_root, denied)
	decision == fx_allowed with input as fxp_delete_experiment(fx_root)
}

test_deny_by_default_is_one_data_edit_away if {
	reasons := fxp_reasons(fxp_get_run(fxp_ben, fxp_none)) with data.permissions.default as "NO_PERMISSIONS"
	reasons == ["ben may not GetRun the run \"train\" (r1) in the experiment \"exp-a\" (1): that needs READ, and ben has NO_PERMISSIONS (the default for authenticated users without a grant); ask its owner ana or an admin for a grant"]
	decision == fx_allowed with input as fxp_get_run(fxp_ana, fxp_none) with data.permissions.default as "NO_PERMISSIONS"
}

test_without_permission_data_nobody_but_admins_passes if {
	not decision.allow with input as fxp_log_metric(fxp_ana, fxp_none) with data.permissions as "broken"
	not decision.allow with input as fxp_get_run(fxp_ana, fxp_none) with data.permissions as {}
	decision.allow with input as fxp_log_metric(fx_root, fxp_none) with data.permissions as {}
}

# --- grants ---------------------------------------------------------------------------------------------------

test_a_user_grant_of_edit_lets_a_colleague_log if {
	decision == fx_allowed with input as fxp_log_metric(fxp_ben, fxp_grants({"ben": "EDIT"}, {}))
	fxp_reasons(fxp_delete_experiment(fxp_ben)) != []
}

test_a_group_grant_of_read_lets_read_but_not_write if {
	grants := fxp_grants({}, {"team-b": "READ"})
	decision == fx_allowed with input as fxp_get_run(fxp_ben, grants)
	fxp_reasons(fxp_log_metric(fxp_ben, grants)) == ["ben may not LogMetric the run \"train\" (r1) in the experiment \"exp-a\" (1): that needs EDIT, and ben has READ (a grant to the group team-b on the experiment \"exp-a\" (1)); ask its owner ana or an admin for a grant"]
}

test_no_permissions_beats_a_groups_edit if {
	grants := fxp_grants({"ben": "NO_PERMISSIONS"}, {"team-b": "EDIT"})
	fxp_reasons(fxp_log_metric(fxp_ben, grants)) == ["ben may not LogMetric the run \"train\" (r1) in the experiment \"exp-a\" (1): that needs EDIT, and ben has NO_PERMISSIONS (a grant to ben on the experiment \"exp-a\" (1)); ask its owner ana or an admin for a grant"]
	not decision.allow with input as fxp_get_run(fxp_ben, grants)
}

test_no_permissions_on_the_parent_beats_an_edit_on_the_child if {
	run := fxp_run(fxp_grants({"ben": "EDIT"}, {}))
	inp := fxp_input(fxp_ben, "LogMetric", "run", "edit", [run, fxp_experiment(fxp_grants({}, {"team-b": "NO_PERMISSIONS"}))])
	not decision.allow with input as inp
}

test_no_permissions_beats_the_creator if {
	inp := fxp_log_metric(fxp_ana, fxp_grants({}, {"team-a": "NO_PERMISSIONS"}))
	not decision.allow with input as inp
}

test_a_grant_on_the_run_is_inherited_by_nothing_above_it if {
	run := fxp_run(fxp_grants({"ben": "EDIT"}, {}))
	decision == fx_allowed with input as fxp_input(fxp_ben, "LogMetric", "run", "edit", [run, fxp_experiment(fxp_none)])
	not decision.allow with input as fxp_input(fxp_ben, "SetExperimentTag", "experiment", "edit", [fxp_experiment(fxp_none)])
}

# --- pattern grants (data.permissions.patterns) ------------------------------------------------------------------

fxp_fraud_patterns := [
	{"group": "team-fraud", "type": "registered_model", "name": "fraud-*", "level": "EDIT"},
	{"group": "team-fraud", "type": "experiment", "name": "/Shared/fraud/*", "level": "EDIT"},
	{"user": "ben", "type": "registered_model", "name": "*", "level": "MANAGE", "workspace": "team-b"},
]

fxp_fraud := fx_principal("fiona", ["team-fraud"])

test_pattern_grants_apply_by_name if {
	fraud := object.union(fxp_model(fxp_none), {"id": "fraud-x", "name": "fraud-x"})
	inp := fxp_input(fxp_fraud, "SetRegisteredModelAlias", "model_version", "edit", [fraud])
	decision == fx_allowed with input as inp with data.permissions.patterns as fxp_fraud_patterns
	other := fxp_input(fxp_fraud, "SetRegisteredModelAlias", "model_version", "edit", [fxp_model(fxp_none)])
	reasons := fxp_reasons(other) with data.permissions.patterns as fxp_fraud_patterns
	reasons == ["fiona may not SetRegisteredModelAlias the registered_model \"churn\": that needs EDIT, and fiona has READ (the default for authenticated users without a grant); ask its owner ana or an admin for a grant"]
	shared := object.union(fxp_experiment(fxp_none), {"name": "/Shared/fraud/scoring"})
	log := fxp_input(fxp_fraud, "LogMetric", "run", "edit", [fxp_run(fxp_none), shared])
	decision == fx_allowed with input as log with data.permissions.patterns as fxp_fraud_patterns
}

test_a_pattern_grant_with_a_workspace_applies_only_there if {
	inp := fxp_input(fxp_ben, "DeleteRegisteredModel", "registered_model", "manage", [fxp_model(fxp_none)])
	elsewhere := {v.id | some v in violations} with input as inp with data.permissions.patterns as fxp_fraud_patterns
	"permissions.insufficient" in elsewhere
	there := object.union(inp, {"resource": {"permissions": {"workspace": "team-b"}}})
	here := {v.id | some v in violations} with input as there with data.permissions.patterns as fxp_fraud_patterns
	not "permissions.insufficient" in here
}

test_the_default_bundle_lets_ci_and_oncall_edit_every_registered_model if {
	inp := fxp_input(fx_ci, "TransitionModelVersionStage", "model_version", "edit", [fxp_model(fxp_none)])
	ids := {v.id | some v in violations} with input as inp
	not "permissions.insufficient" in ids
	oncall := {v.id | some v in violations} with input as object.union(inp, {"principal": fx_carol})
	not "permissions.insufficient" in oncall
	engineer := {v.id | some v in violations} with input as object.union(inp, {"principal": fxp_ben})
	"permissions.insufficient" in engineer
}

# --- facts the gate could not complete -------------------------------------------------------------------------

test_an_object_that_does_not_exist_is_left_to_mlflow if {
	decision == fx_allowed with input as fxp_input(fxp_ben, "LogMetric", "run", "edit", [])
}

test_a_problem_resolving_the_object_denies_with_its_reason if {
	inp := object.union(fxp_log_metric(fxp_ben, fxp_none), {"resource": {"permissions": {"problem": "the request names no run_id, so the gate cannot check the permission it needs"}}})
	fxp_reasons(inp) == ["the request names no run_id, so the gate cannot check the permission it needs"]
	not decision.allow with input as object.union(inp, {"principal": fxp_ana})
}

test_a_route_needing_a_level_without_facts_is_denied if {
	inp := json.patch(fxp_log_metric(fxp_ana, fxp_none), [{"op": "remove", "path": "/resource/permissions"}])
	fxp_reasons(inp) == ["LogMetric needs EDIT on an object the gate did not resolve"]
}

# --- creation ----------------------------------------------------------------------------------------------------

test_creation_is_open_to_everyone_by_default if {
	decision == fx_allowed with input as fxp_input(fxp_ben, "CreateExperiment", "experiment", "create", [])
	decision == fx_allowed with input as fxp_input(fxp_ben, "CreateRegisteredModel", "registered_model", "create", [])
}

test_creation_can_be_restricted_per_group if {
	inp := fxp_input(fxp_ben, "CreateRegisteredModel", "registered_model", "create", [])
	reasons := fxp_reasons(inp) with data.permissions.create.registered_model as ["team-a"]
	reasons == ["ben may not create registered models: only members of [\"team-a\"] may (data.permissions.create.registered_model)"]
	ana := object.union(inp, {"principal": fxp_ana})
	decision == fx_allowed with input as ana with data.permissions.create.registered_model as ["team-a"]
	root := object.union(inp, {"principal": fx_root})
	decision == fx_allowed with input as root with data.permissions.create.registered_model as []
	decision == fx_allowed with input as fxp_input(fxp_ben, "CreateExperiment", "experiment", "create", []) with data.permissions.create.registered_model as ["team-a"]
}

# --- the read fast path ----------------------------------------------------------------------------------------

test_the_read_fast_path_agrees_with_the_full_evaluation_on_permissions if {
	every who in [fxp_ana, fxp_ben, fx_root] {
		every grants in [fxp_none, fxp_grants({"ben": "NO_PERMISSIONS"}, {}), fxp_grants({}, {"team-a": "NO_PERMISSIONS"})] {
			inp := fxp_get_run(who, grants)
			d := decision with input as inp
			d == full_decision with input as inp
		}
	}
}

# The cheap allow path (plainly_permitted, of reads and of a creator's writes) never permits what the full rank
# refuses, and the decision is the full one, on the tricky cases: a NO_PERMISSIONS on a parent or on the object (to
# the caller or to one of its groups), a NO_PERMISSIONS pattern (matching or not), the creator (denied on a parent,
# or with a creator level below the route's), an admin, a caller without a sub, a default of NO_PERMISSIONS, a
# misspelt level, a logged model whose own grant overrides its experiment's deny; for a read, an edit and a manage.
fxp_fast_chains := [
	[fxp_run(fxp_none), fxp_experiment(fxp_none)],
	[fxp_run(fxp_none), fxp_experiment(fxp_grants({"ben": "NO_PERMISSIONS"}, {}))],
	[fxp_run(fxp_none), fxp_experiment(fxp_grants({}, {"team-b": "NO_PERMISSIONS"}))],
	[fxp_run(fxp_grants({}, {"team-b": "NO_PERMISSIONS"})), fxp_experiment(fxp_grants({}, {"team-b": "EDIT"}))],
	[fxp_run(fxp_none), fxp_experiment(fxp_grants({}, {"team-a": "NO_PERMISSIONS", "team-c": "EDIT"}))],
	[fxp_run(fxp_none), object.union(fxp_experiment(fxp_grants({"ben": "READ"}, {})), {"owner": "ben"})],
	[fxp_model(fxp_none)],
	[object.union(fxp_model(fxp_none), {"name": "fraud-x"})],
	[
		{"type": "logged_model", "id": "m-1", "name": "clf", "owner": "ana", "grants": fxp_grants({"ben": "READ"}, {})},
		fxp_experiment(fxp_grants({}, {"team-b": "NO_PERMISSIONS"})),
	],
	[object.union(fxp_run(fxp_none), {"owner": "ben"}), fxp_experiment(fxp_grants({}, {"team-b": "NO_PERMISSIONS"}))],
	[object.union(fxp_run(fxp_none), {"owner": "ben"}), fxp_experiment(fxp_none)],
	[object.union(fxp_run(fxp_none), {"owner": ""}), fxp_experiment(fxp_none)],
]

fxp_fast_configs := [
	{},
	{"default": "NO_PERMISSIONS"},
	{"patterns": [{"group": "team-b", "type": "registered_model", "name": "fraud-*", "level": "NO_PERMISSIONS"}]},
	{"patterns": [{"user": "ben", "type": "experiment", "name": "*", "level": "NO_PERMISSIONS"}]},
	{"patterns": [{"user": "ana", "type": "experiment", "name": "*", "level": "NO_PERMISSIONS"}], "creator": "READ"},
	{"creator": "EDIT"},
	{"creator": "NO_PERMISSIONS", "default": "EDIT"},
	{"default": "MANAGE", "creator": "MANAGED"},
]

test_the_cheap_path_agrees_with_the_full_permission_rank if {
	every who in [fxp_ana, fxp_ben, fx_root, fx_principal("", ["team-b"])] {
		every chain in fxp_fast_chains {
			every config in fxp_fast_configs {
				every inp in [fxp_get_run(who, fxp_none), fxp_log_metric(who, fxp_none), fxp_delete_experiment(who)] {
					req := object.union(inp, {"resource": {"permissions": {"chain": chain}}})
					perms := object.union(data.permissions, config)
					d := decision with input as req with data.permissions as perms
					d == full_decision with input as req with data.permissions as perms
					fxp_plain_implies_rank(req, perms)
				}
			}
		}
	}
}

fxp_plain_implies_rank(inp, perms) if {
	not plainly_permitted with input as inp with data.permissions as perms
}

fxp_plain_implies_rank(inp, perms) if {
	plainly_permitted with input as inp with data.permissions as perms
	rank := permission_rank with input as inp with data.permissions as perms
	rank >= needed_ranks[inp.operation.permission]
}

test_the_cheap_path_is_taken_only_without_an_applicable_deny if {
	plainly_permitted with input as fxp_get_run(fxp_ben, fxp_none)
	plainly_permitted with input as fxp_get_run(fxp_ben, fxp_grants({}, {"team-c": "NO_PERMISSIONS"}))
	not plainly_permitted with input as fxp_get_run(fxp_ben, fxp_grants({}, {"team-b": "NO_PERMISSIONS"}))
	not plainly_permitted with input as fxp_get_run(fxp_ben, fxp_grants({"ben": "NO_PERMISSIONS"}, {}))
	not plainly_permitted with input as fxp_get_run(fxp_ben, fxp_none) with data.permissions.default as "NO_PERMISSIONS"
	not plainly_permitted with input as fxp_get_run(fxp_ben, fxp_none) with data.permissions.patterns as [{"group": "team-b", "type": "model", "name": "x", "level": "NO_PERMISSIONS"}]
	not plainly_permitted with input as fxp_log_metric(fxp_ben, fxp_none)
	plainly_permitted with input as fxp_log_metric(fxp_ana, fxp_none)
	not plainly_permitted with input as fxp_log_metric(fxp_ana, fxp_grants({}, {"team-a": "NO_PERMISSIONS"}))
	not plainly_permitted with input as fxp_log_metric(fxp_ana, fxp_none) with data.permissions.creator as "READ"
}

# --- search results (response phase) ---------------------------------------------------------------------------

fxp_filter(who, candidates) := {
	"version": 1,
	"principal": who,
	"operation": {"rpc": "SearchRuns", "read_only": true, "resource_type": "run", "server_side_job": false, "path_params": {}, "permission": "filter"},
	"request": {"method": "POST", "path": "/api/2.0/mlflow/runs/search", "query": {}, "body": {}, "workspace": null},
	"resource": {"target": {}, "permissions": {"workspace": null, "candidates": candidates}},
}

fxp_chains := [
	[fxp_run(fxp_none), fxp_experiment(fxp_none)],
	[fxp_run(fxp_none), fxp_experiment(fxp_grants({}, {"team-b": "NO_PERMISSIONS"}))],
	[fxp_run(fxp_grants({"ben": "NO_PERMISSIONS"}, {})), fxp_experiment(fxp_none)],
	[object.union(fxp_run(fxp_none), {"owner": "ben"}), object.union(fxp_experiment(fxp_none), {"owner": "zoe"})],
	[fxp_run(fxp_none), object.union(fxp_experiment(fxp_grants({}, {"team-b": "READ"})), {"owner": "zoe"})],
	[fxp_model(fxp_none)],
	[object.union(fxp_model(fxp_none), {"name": "fraud-x", "owner": "zoe"})],
]

test_search_results_keep_what_the_caller_may_read if {
	d := decision with input as fxp_filter(fxp_ben, fxp_chains)
	d.allow
	d.readable == [0, 3, 4, 5, 6]
	ana := decision with input as fxp_filter(fxp_ana, fxp_chains)
	ana.readable == [0, 1, 2, 3, 4, 5, 6]
}

test_with_deny_by_default_search_results_keep_only_owned_and_granted_objects if {
	d := decision with input as fxp_filter(fxp_ben, fxp_chains) with data.permissions.default as "NO_PERMISSIONS"
	d.readable == [3, 4]
	fraud := decision with input as fxp_filter(fxp_fraud, fxp_chains) with data.permissions.default as "NO_PERMISSIONS" with data.permissions.patterns as fxp_fraud_patterns
	fraud.readable == [6]
	root := decision with input as fxp_filter(fx_root, fxp_chains) with data.permissions.default as "NO_PERMISSIONS"
	root.readable == [0, 1, 2, 3, 4, 5, 6]
}

# The filter and the single-object read decide alike, for every chain, caller and default.
fxp_readable(who, dflt) := r if {
	d := decision with input as fxp_filter(who, fxp_chains) with data.permissions.default as dflt with data.permissions.patterns as fxp_fraud_patterns
	r := {i | some i in d.readable}
}

fxp_reads(who, chain, dflt) := a if {
	a := decision.allow with input as fxp_input(who, "GetRun", "run", "read", chain) with data.permissions.default as dflt with data.permissions.patterns as fxp_fraud_patterns
}

test_filtering_agrees_with_the_read_decision if {
	every who in [fxp_ana, fxp_ben, fxp_fraud, fx_root] {
		every dflt in ["READ", "NO_PERMISSIONS"] {
			readable := fxp_readable(who, dflt)
			every i, chain in fxp_chains {
				fxp_reads(who, chain, dflt) == (i in readable)
			}
		}
	}
}

test_a_search_request_itself_is_not_filtered if {
	inp := object.union(fxp_input(fxp_ben, "SearchRuns", "run", "filter", []), {"operation": {"read_only": true}})
	decision == fx_allowed with input as json.patch(inp, [{"op": "remove", "path": "/resource/permissions"}])
}

test_user_grants_and_denying_patterns_filter_too if {
	chains := [
		[object.union(fxp_experiment(fxp_grants({"ben": "READ"}, {})), {"owner": "zoe"})],
		[object.union(fxp_model(fxp_none), {"name": "fraud-y", "owner": "zoe"})],
	]
	patterns := [{"user": "ben", "type": "registered_model", "name": "fraud-*", "level": "NO_PERMISSIONS"}]
	d := decision with input as fxp_filter(fxp_ben, chains) with data.permissions.default as "NO_PERMISSIONS"
	d.readable == [0]
	open := decision with input as fxp_filter(fxp_ben, chains) with data.permissions.patterns as patterns
	open.readable == [0]
}

# --- GraphQL ------------------------------------------------------------------------------------------------------

test_graphql_is_open_by_default_and_admin_only_when_closed if {
	inp := fx_request(fxp_ben, "GraphQL", "graphql", true, {"target": {}})
	decision == fx_allowed with input as inp
	reasons := fxp_reasons(inp) with data.permissions.graphql as "admins"
	reasons == ["only admins may use /graphql here (data.permissions.graphql is \"admins\"); use the REST API"]
	root := object.union(inp, {"principal": fx_root})
	decision == fx_allowed with input as root with data.permissions.graphql as "admins"
	d := decision with input as inp with data.permissions.graphql as "admins"
	d == full_decision with input as inp with data.permissions.graphql as "admins"
}

# --- logged models and traces with grants of their own -------------------------------------------------------------

fxp_alex := fx_principal("alex", ["team-a"])

fxp_logged_model(id, grants) := {"type": "logged_model", "id": id, "name": concat("", ["model-", id]), "owner": "ana", "grants": grants}

fxp_trace(id, grants) := {"type": "trace", "id": id, "name": null, "owner": "ana", "grants": grants}

fxp_team_b_denied := fxp_grants({}, {"team-b": "NO_PERMISSIONS"})

test_a_logged_models_own_read_lets_a_team_the_experiment_denies_read_that_model_only if {
	granted := [fxp_logged_model("m-1", fxp_grants({}, {"team-b": "READ"})), fxp_experiment(fxp_team_b_denied)]
	decision == fx_allowed with input as fxp_input(fxp_ben, "GetLoggedModel", "logged_model", "read", granted)
	fxp_reasons(fxp_input(fxp_ben, "SetLoggedModelTags", "logged_model", "edit", granted)) == ["ben may not SetLoggedModelTags the logged_model \"model-m-1\" (m-1) in the experiment \"exp-a\" (1): that needs EDIT, and ben has READ (a grant to the group team-b on the logged_model \"model-m-1\" (m-1)); ask its owner ana or an admin for a grant"]
	sibling := [fxp_logged_model("m-2", fxp_none), fxp_experiment(fxp_team_b_denied)]
	fxp_reasons(fxp_input(fxp_ben, "GetLoggedModel", "logged_model", "read", sibling)) == ["ben may not GetLoggedModel the logged_model \"model-m-2\" (m-2) in the experiment \"exp-a\" (1): that needs READ, and ben has NO_PERMISSIONS (a grant to the group team-b on the experiment \"exp-a\" (1)); ask its owner ana or an admin for a grant"]
}

test_a_traces_own_no_permissions_hides_it_from_a_team_mate_the_experiment_lets_edit if {
	exp := fxp_experiment(fxp_grants({}, {"team-a": "EDIT"}))
	hidden := [fxp_trace("tr-1", fxp_grants({"alex": "NO_PERMISSIONS"}, {})), exp]
	fxp_reasons(fxp_input(fxp_alex, "GetTraceInfoV3", "trace", "read", hidden)) == ["alex may not GetTraceInfoV3 the trace tr-1 in the experiment \"exp-a\" (1): that needs READ, and alex has NO_PERMISSIONS (a grant to alex on the trace tr-1); ask its owner ana or an admin for a grant"]
	decision == fx_allowed with input as fxp_input(fxp_ana, "GetTraceInfoV3", "trace", "read", hidden)
	decision == fx_allowed with input as fxp_input(fxp_alex, "GetTraceInfoV3", "trace", "read", [fxp_trace("tr-2", fxp_none), exp])
}

test_own_grants_override_only_for_the_grantees_they_name if {
	# A grant on the trace to someone else leaves ben with what the experiment gives him.
	others := [fxp_trace("tr-1", fxp_grants({"zoe": "READ"}, {})), fxp_experiment(fxp_team_b_denied)]
	not decision.allow with input as fxp_input(fxp_ben, "GetTraceInfoV3", "trace", "read", others)
	# The experiment's pattern grants are inherited too, and overridden alike.
	patterns := [{"group": "team-b", "type": "experiment", "name": "exp-*", "level": "EDIT"}]
	model := [fxp_logged_model("m-1", fxp_grants({"ben": "READ"}, {})), fxp_experiment(fxp_none)]
	not decision.allow with input as fxp_input(fxp_ben, "SetLoggedModelTags", "logged_model", "edit", model) with data.permissions.patterns as patterns
	decision == fx_allowed with input as fxp_input(fxp_ben, "SetLoggedModelTags", "logged_model", "edit", [fxp_logged_model("m-2", fxp_none), fxp_experiment(fxp_none)]) with data.permissions.patterns as patterns
	# A run's own grant does not override: a deny on its experiment still wins (test above), and so on.
	run := [fxp_run(fxp_grants({"ben": "READ"}, {})), fxp_experiment(fxp_team_b_denied)]
	not decision.allow with input as fxp_input(fxp_ben, "GetRun", "run", "read", run)
}

fxp_own_chains := [
	[fxp_logged_model("m-1", fxp_grants({}, {"team-b": "READ"})), fxp_experiment(fxp_team_b_denied)],
	[fxp_logged_model("m-2", fxp_none), fxp_experiment(fxp_team_b_denied)],
	[fxp_trace("tr-1", fxp_grants({"alex": "NO_PERMISSIONS"}, {})), fxp_experiment(fxp_grants({}, {"team-a": "EDIT"}))],
	[fxp_trace("tr-2", fxp_grants({"zoe": "READ"}, {"team-a": "READ"})), object.union(fxp_experiment(fxp_team_b_denied), {"owner": "zoe"})],
	[object.union(fxp_trace("tr-3", fxp_grants({"ben": "READ"}, {})), {"owner": "zoe"}), object.union(fxp_experiment(fxp_none), {"owner": "zoe"})],
	[object.union(fxp_trace("tr-4", fxp_grants({}, {"team-b": "NO_PERMISSIONS"})), {"owner": "zoe"}), object.union(fxp_experiment(fxp_grants({"ben": "EDIT"}, {})), {"owner": "zoe"})],
]

test_search_pages_of_logged_models_and_traces_honour_their_own_grants if {
	ben := decision with input as fxp_filter(fxp_ben, fxp_own_chains)
	ben.readable == [0, 2, 4]
	alex := decision with input as fxp_filter(fxp_alex, fxp_own_chains)
	alex.readable == [0, 1, 3, 4, 5]
	private := decision with input as fxp_filter(fxp_alex, fxp_own_chains) with data.permissions.default as "NO_PERMISSIONS"
	private.readable == [3]
}

test_filtering_agrees_with_the_read_decision_for_own_grants if {
	every who in [fxp_ana, fxp_ben, fxp_alex, fxp_fraud, fx_root] {
		every dflt in ["READ", "NO_PERMISSIONS"] {
			d := decision with input as fxp_filter(who, fxp_own_chains) with data.permissions.default as dflt with data.permissions.patterns as fxp_fraud_patterns
			readable := {i | some i in d.readable}
			every i, chain in fxp_own_chains {
				fxp_reads(who, chain, dflt) == (i in readable)
			}
		}
	}
}

# --- Routes naming several objects (run_ids, trace_ids, experiment_ids, a GraphQL query's objects) -----------------

fxp_object(id, chain) := {"anchor": "run", "id": id, "exists": count(chain) > 0, "problem": null, "chain": chain}

fxp_experiment_b := {"type": "experiment", "id": "2", "name": "exp-b", "owner": "ben", "grants": fxp_none}

fxp_run_b := {"type": "run", "id": "r2", "name": "eval", "owner": "ben", "grants": fxp_none}

# A read of several objects (`objects`), as the gate hands it: the request's own chain is empty.
fxp_many(who, rpc, type, objects) := object.union(fxp_input(who, rpc, type, "read", []), {"resource": {"permissions": {
	"workspace": null, "anchor": "each", "exists": false, "problem": null, "chain": [], "objects": objects,
}}})

fxp_bulk(who, exp_grants) := fxp_many(who, "GetMetricHistoryBulkInterval", "metric", [
	fxp_object("r2", [fxp_run_b, fxp_experiment_b]),
	fxp_object("r1", [fxp_run(fxp_none), fxp_experiment(exp_grants)]),
])

test_every_listed_object_readable_allows_the_read if {
	decision == fx_allowed with input as fxp_bulk(fxp_ben, fxp_none)
}

test_one_unreadable_listed_object_refuses_the_whole_read if {
	deny := fxp_grants({}, {"team-b": "NO_PERMISSIONS"})
	fxp_reasons(fxp_bulk(fxp_ben, deny)) == [concat("", [
		"ben may not GetMetricHistoryBulkInterval the run \"train\" (r1) in the experiment \"exp-a\" (1): that needs ",
		"READ, and ben has NO_PERMISSIONS (a grant to the group team-b on the experiment \"exp-a\" (1)); ask its owner ",
		"ana or an admin for a grant",
	])]
	d := decision with input as fxp_bulk(fxp_ben, deny)
	d == full_decision with input as fxp_bulk(fxp_ben, deny)
	decision == fx_allowed with input as fxp_bulk(fxp_ana, deny)
}

test_listed_objects_follow_the_default_and_the_creator if {
	reasons := fxp_reasons(fxp_bulk(fxp_ben, fxp_none)) with data.permissions.default as "NO_PERMISSIONS"
	reasons == [concat("", [
		"ben may not GetMetricHistoryBulkInterval the run \"train\" (r1) in the experiment \"exp-a\" (1): that needs ",
		"READ, and ben has NO_PERMISSIONS (the default for authenticated users without a grant); ask its owner ana or ",
		"an admin for a grant",
	])]
	granted := fxp_grants({"ben": "READ"}, {})
	decision == fx_allowed with input as fxp_bulk(fxp_ben, granted) with data.permissions.default as "NO_PERMISSIONS"
}

test_a_listed_object_refused_to_its_creator_names_the_creator_level if {
	reasons := fxp_reasons(fxp_bulk(fxp_ben, fxp_none)) with data.permissions.default as "NO_PERMISSIONS" with data.permissions.creator as "NO_PERMISSIONS"
	reasons == [
		concat("", [
			"ben may not GetMetricHistoryBulkInterval the run \"eval\" (r2) in the experiment \"exp-b\" (2): that needs ",
			"READ, and ben has NO_PERMISSIONS (as its creator); ask its owner ben or an admin for a grant",
		]),
		concat("", [
			"ben may not GetMetricHistoryBulkInterval the run \"train\" (r1) in the experiment \"exp-a\" (1): that needs ",
			"READ, and ben has NO_PERMISSIONS (the default for authenticated users without a grant); ask its owner ana or ",
			"an admin for a grant",
		]),
	]
}

test_missing_listed_objects_are_left_to_mlflow_and_unresolved_ones_deny if {
	missing := fxp_many(fxp_ben, "BatchGetTraces", "trace", [fxp_object("tr-gone", [])])
	decision == fx_allowed with input as missing
	unnamed := fxp_many(fxp_ben, "BatchGetTraces", "trace", [object.union(fxp_object("x", []), {"problem": "the trace x cannot be checked"})])
	fxp_reasons(unnamed) == ["the trace x cannot be checked"]
	empty := object.union(fxp_many(fxp_ben, "BatchGetTraces", "trace", []), {"resource": {"permissions": {
		"problem": "the request names no trace_ids, so the gate cannot check the permission it needs",
	}}})
	fxp_reasons(empty) == ["the request names no trace_ids, so the gate cannot check the permission it needs"]
}

test_graphql_objects_are_checked_like_their_rest_reads if {
	deny := fxp_grants({"ben": "NO_PERMISSIONS"}, {})
	inp := fxp_many(fxp_ben, "GraphQL", "graphql", [{"anchor": "experiment", "id": "1", "exists": true, "problem": null,
		"chain": [fxp_experiment(deny)]}])
	fxp_reasons(inp) == [concat("", [
		"ben may not GraphQL the experiment \"exp-a\" (1): that needs READ, and ben has NO_PERMISSIONS (a grant to ben ",
		"on the experiment \"exp-a\" (1)); ask its owner ana or an admin for a grant",
	])]
	admin := object.union(inp, {"principal": fx_root})
	decision == fx_allowed with input as admin
}

# --- AI gateway: endpoints have owner chains (creator + grant tags); secrets, model definitions and the creation of
# endpoints keep the group rule of data.operations (admins manage, engineers read) -----------------------------------

test_only_admins_manage_gateway_configuration if {
	for_ben := fx_request(fxp_ben, "CreateGatewaySecret", "gateway", false, {"target": {}})
	fxp_reasons(for_ben) == ["only admins may call CreateGatewaySecret"]
	for_root := object.union(for_ben, {"principal": fx_root})
	decision == fx_allowed with input as for_root
	endpoint := fx_request(fxp_ben, "CreateGatewayEndpoint", "gateway", false, {"target": {}})
	fxp_reasons(endpoint) == ["only admins may call CreateGatewayEndpoint"]
}

test_engineers_read_and_use_gateway_endpoints if {
	decision == fx_allowed with input as fx_request(fxp_ben, "ListGatewayEndpoints", "gateway", true, {"target": {}})
	decision == fx_allowed with input as fx_request(fxp_ben, "GetGatewaySecretInfo", "gateway", true, {"target": {}})
	decision == fx_allowed with input as fxp_invoke(fxp_ben, fxp_none)
	decision == fx_allowed with input as fxp_input(fxp_ben, "GetGatewayEndpoint", "gateway", "read", [fxp_endpoint(fxp_none)])
}

fxp_endpoint(grants) := {"type": "gateway_endpoint", "id": "e-1", "name": "chat-a", "owner": "ana", "grants": grants}

fxp_invoke(who, grants) := fxp_input(who, "GatewayChatCompletions", "gateway", "use", [fxp_endpoint(grants)])

fxp_endpoint_write(who, rpc, need, grants) := fxp_input(who, rpc, "gateway", need, [fxp_endpoint(grants)])

test_a_colleague_cannot_change_or_delete_someone_elses_endpoint if {
	fxp_reasons(fxp_endpoint_write(fxp_ben, "UpdateGatewayEndpoint", "edit", fxp_none)) == [concat("", [
		"ben may not UpdateGatewayEndpoint the gateway_endpoint \"chat-a\" (e-1): that needs EDIT, and ben has USE ",
		"(the default for authenticated users without a grant); ask its owner ana or an admin for a grant",
	])]
	fxp_reasons(fxp_endpoint_write(fxp_ben, "DeleteGatewayEndpoint", "manage", fxp_none)) == [concat("", [
		"ben may not DeleteGatewayEndpoint the gateway_endpoint \"chat-a\" (e-1): that needs MANAGE, and ben has USE ",
		"(the default for authenticated users without a grant); ask its owner ana or an admin for a grant",
	])]
}

test_the_creator_of_an_endpoint_and_admins_manage_it if {
	decision == fx_allowed with input as fxp_endpoint_write(fxp_ana, "DeleteGatewayEndpoint", "manage", fxp_none)
	decision == fx_allowed with input as fxp_endpoint_write(fx_root, "DeleteGatewayEndpoint", "manage", fxp_grants({"root": "NO_PERMISSIONS"}, {}))
}

test_an_endpoint_grant_widens_to_edit_or_manage if {
	edit := fxp_grants({"ben": "EDIT"}, {})
	decision == fx_allowed with input as fxp_endpoint_write(fxp_ben, "UpdateGatewayEndpoint", "edit", edit)
	fxp_reasons(fxp_endpoint_write(fxp_ben, "DeleteGatewayEndpoint", "manage", edit)) == [concat("", [
		"ben may not DeleteGatewayEndpoint the gateway_endpoint \"chat-a\" (e-1): that needs MANAGE, and ben has EDIT ",
		"(a grant to ben on the gateway_endpoint \"chat-a\" (e-1)); ask its owner ana or an admin for a grant",
	])]
	manage := fxp_grants({}, {"team-b": "MANAGE"})
	decision == fx_allowed with input as fxp_endpoint_write(fxp_ben, "DeleteGatewayEndpoint", "manage", manage)
}

test_no_permissions_on_an_endpoint_stops_its_invocation_and_its_reads if {
	deny := fxp_grants({"ben": "NO_PERMISSIONS"}, {"team-b": "MANAGE"})
	fxp_reasons(fxp_invoke(fxp_ben, deny)) == [concat("", [
		"ben may not GatewayChatCompletions the gateway_endpoint \"chat-a\" (e-1): that needs USE, and ben has ",
		"NO_PERMISSIONS (a grant to ben on the gateway_endpoint \"chat-a\" (e-1)); ask its owner ana or an admin for a grant",
	])]
	not decision.allow with input as fxp_input(fxp_ben, "GetGatewayEndpoint", "gateway", "read", [fxp_endpoint(deny)])
}

test_the_endpoint_default_is_its_own_and_fails_closed_when_misspelt if {
	fxp_reasons(fxp_invoke(fxp_ben, fxp_none)) with data.permissions.type_default as {} == [concat("", [
		"ben may not GatewayChatCompletions the gateway_endpoint \"chat-a\" (e-1): that needs USE, and ben has READ ",
		"(the default for authenticated users without a grant); ask its owner ana or an admin for a grant",
	])]
	fxp_reasons(fxp_invoke(fxp_ben, fxp_none)) with data.permissions.type_default.gateway_endpoint as "USES" == [concat("", [
		"ben may not GatewayChatCompletions the gateway_endpoint \"chat-a\" (e-1): that needs USE, and ben has ",
		"NO_PERMISSIONS (the default for authenticated users without a grant); ask its owner ana or an admin for a grant",
	])]
	decision == fx_allowed with input as fxp_invoke(fxp_ben, fxp_grants({}, {"team-b": "USE"})) with data.permissions.type_default as {}
}

test_a_pattern_grant_names_endpoints if {
	patterns := [{"group": "team-b", "type": "gateway_endpoint", "name": "chat-*", "level": "EDIT"}]
	decision == fx_allowed with input as fxp_endpoint_write(fxp_ben, "UpdateGatewayEndpoint", "edit", fxp_none) with data.permissions.patterns as patterns
}

fxp_gateway_page(who, candidates) := object.union(fxp_filter(who, candidates), {
	"operation": {"rpc": "ListGatewayEndpoints", "resource_type": "gateway"},
	"resource": {"permissions": {"kind": "gateway_endpoint"}},
})

test_gateway_lists_hide_the_endpoints_a_grant_denies if {
	page := [[fxp_endpoint(fxp_none)], [fxp_endpoint(fxp_grants({}, {"team-b": "NO_PERMISSIONS"}))], [fxp_endpoint(fxp_grants({"ben": "READ"}, {}))]]
	d := decision with input as fxp_gateway_page(fxp_ben, page)
	d.readable == [0, 2]
	closed := decision with input as fxp_gateway_page(fxp_ben, page) with data.permissions.type_default.gateway_endpoint as "NO_PERMISSIONS"
	closed.readable == [2]
	by_default := decision with input as fxp_gateway_page(fxp_ben, page) with data.permissions.default as "NO_PERMISSIONS"
	by_default.readable == [0, 2]
}

test_patterns_given_as_a_set_apply_as_the_same_list if {
	pattern := {"user": "ben", "type": "experiment", "name": "exp-*", "level": "NO_PERMISSIONS"}
	inp := fxp_get_run(fxp_ben, fxp_none)
	reasons := fxp_reasons(inp) with data.permissions.patterns as {pattern}
	reasons == [concat("", [
		"ben may not GetRun the run \"train\" (r1) in the experiment \"exp-a\" (1): that needs READ, and ben has ",
		"NO_PERMISSIONS (the pattern grant to ben on experiment exp-*); ask its owner ana or an admin for a grant",
	])]
	reasons == fxp_reasons(inp) with data.permissions.patterns as [pattern]
}
