package mlflow_gate

import rego.v1

# ---------------------------------------------------------------------------------------------------------------
# Governed environments: copy_model_version into prod.* is a promotion
# ---------------------------------------------------------------------------------------------------------------

# fraud-detector v1 (alice's, approved by bob for champion), copied into prod.fraud-detector: the facts the gate's
# lineage enricher gives for `model-versions/create` with source models:/fraud-detector/1.
fx_copied_from(approvals) := {"name": "fraud-detector", "version": "1", "created_by": "alice", "current_stage": "None", "approvals": approvals}

fx_copy_lineage(approvals) := {
	"verified": true, "kind": "run", "run_owner": "alice", "logged_model_creator": null, "reason": null,
	"hops": [{"source": "models:/fraud-detector/1", "name": "fraud-detector", "version": "1", "run_id": "r1", "permissions": fx_hop_permissions("fraud-detector", "alice", {})}],
	"copied_from": fx_copied_from(approvals),
	"origin": {"name": "fraud-detector", "version": "1"},
}

fx_copy_facts(run, lineage) := {
	"target": {"name": "prod.fraud-detector", "source": "models:/fraud-detector/1", "run_id": run.run_id},
	"registered_model": {"name": "prod.fraud-detector", "tags": {}, "aliases": {}, "latest_versions": {}, "created_by": "ci-bot"},
	"source_run": run,
	"source_matches_run": true,
	"lineage": lineage,
	"approvals": [],
	"open_requests": [],
}

fx_copy(who, facts) := fx_write(who, "CreateModelVersion", facts)

fx_good_copy := fx_copy_facts(fx_run("r1", 0.91), fx_copy_lineage([fx_alias_approval("bob", "champion")]))

test_ci_may_copy_an_approved_version_into_prod if {
	decision == fx_allowed with input as fx_copy(fx_ci, fx_good_copy)
}

test_engineers_may_not_copy_into_prod if {
	every who in [fx_alice, fx_bob, fx_carol, fx_root] {
		d := decision with input as fx_copy(who, fx_good_copy)
		d.reasons == ["only the CI service account may create versions in prod.fraud-detector, a governed environment"]
	}
}

test_only_ci_may_create_a_prod_model if {
	inp := fx_request(fx_alice, "CreateRegisteredModel", "registered_model", false, fx_target({"name": "prod.churn"}))
	d := decision with input as inp
	d.reasons == ["only the CI service account may create the registered model prod.churn, a governed environment"]
	fx_allowed_for(fx_ci, inp)
	fx_allowed_for(fx_alice, fx_request(fx_alice, "CreateRegisteredModel", "registered_model", false, fx_target({"name": "dev.churn"})))
}

fx_no_copy_approval := "version 1 of fraud-detector has 0 of the 1 approvals required (for Production or a protected alias, from reviewers other than its creator) to be copied into prod.fraud-detector"

test_a_copy_needs_an_approval_on_the_version_it_came_from if {
	every list in [
		[],
		[fx_alias_approval("alice", "champion")],
		[fx_alias_approval("bob", "challenger")],
		[object.union(fx_alias_approval("bob", "champion"), {"valid": false})],
	] {
		d := decision with input as fx_copy(fx_ci, fx_copy_facts(fx_run("r1", 0.91), fx_copy_lineage(list)))
		d.reasons == [fx_no_copy_approval]
	}
	decision == fx_allowed with input as fx_copy(fx_ci, fx_copy_facts(fx_run("r1", 0.91), fx_copy_lineage([fx_approval("dave")])))
}

test_a_copy_of_an_unstamped_version_cannot_be_checked if {
	lineage := object.union(fx_copy_lineage([fx_approval("bob")]), {"copied_from": {"created_by": null}})
	d := decision with input as fx_copy(fx_ci, fx_copy_facts(fx_run("r1", 0.91), lineage))
	d.reasons == ["version 1 of fraud-detector has no recorded creator (registered before the gate?), so its approvals cannot be checked; register it again through the gate"]
}

test_a_copy_is_gated_as_the_model_it_came_from if {
	d := decision with input as fx_copy(fx_ci, fx_copy_facts(fx_run("r1", 0.5), fx_copy_lineage([fx_approval("bob")])))
	d.reasons == ["val_auc 0.50 is below the gate 0.80 for prod.fraud-detector"]

	# The environment's own entry wins over the origin's.
	own := {"fraud-detector": {"metrics": {"val_auc": {"min": 0.8}}}, "prod.fraud-detector": {"metrics": {"val_auc": {"min": 0.4}}}}
	decision == fx_allowed with input as fx_copy(fx_ci, fx_copy_facts(fx_run("r1", 0.5), fx_copy_lineage([fx_approval("bob")]))) with data.gates.models as own
}

test_a_version_in_prod_must_be_a_copy if {
	lineage := {"verified": true, "kind": "run", "run_owner": "alice", "hops": [], "copied_from": null, "origin": null}
	facts := object.union(fx_copy_facts(fx_run("r1", 0.91), lineage), {"target": {"source": "runs:/r1/model"}})
	d := decision with input as fx_copy(fx_ci, facts)
	d.reasons == ["versions in prod.fraud-detector, a governed environment, must be copied from a reviewed registered version (source models:/<name>/<version> or models:/<name>@<alias>)"]
	decision == fx_allowed with input as fx_copy(fx_ci, facts) with data.environments.governed as [{"models": "prod.*", "approvals": 0}]
}

test_a_chain_that_cannot_be_followed_denies_with_its_reason if {
	why := "models:/fraud-detector/9 does not exist"
	lineage := {"verified": false, "kind": null, "hops": [], "copied_from": null, "origin": null, "chain_error": why}
	facts := object.union(fx_copy_facts(fx_run("r1", 0.91), lineage), {"source_run": null, "source_matches_run": false})
	d := decision with input as fx_copy(fx_ci, facts)
	sprintf("the source of version ? of prod.fraud-detector cannot be traced to its run: %s", [why]) in d.reasons
	not "version ? of prod.fraud-detector has no source run, so it cannot pass the evaluation gate" in d.reasons

	# The same for a copy in a model that is no environment, promoted to Staging.
	dev := object.union(fx_v2(fx_run("r2", 0.95)), {"lineage": lineage, "source_matches_run": false})
	d2 := decision with input as fx_to_staging(fx_alice, dev)
	d2.reasons == [sprintf("the source of version 2 of fraud-detector cannot be traced to its run: %s", [why])]
}

test_environments_match_names_and_prefixes_folded if {
	exact := [{"models": "Staging.Fraud-Detector", "approvals": 0}]
	facts := object.union(fx_good_copy, {"target": {"name": "staging.fraud-detector"}, "registered_model": {"name": "staging.fraud-detector"}})
	d := decision with input as fx_copy(fx_alice, facts) with data.environments.governed as exact
	d.reasons == ["only the CI service account may create versions in staging.fraud-detector, a governed environment"]
	fx_allowed_for(fx_alice, fx_copy(fx_alice, fx_good_copy)) with data.environments.governed as exact

	# Engineers register freely outside the environments.
	dev := object.union(fx_good_copy, {"target": {"name": "dev.fraud-detector"}, "registered_model": {"name": "dev.fraud-detector"}})
	fx_allowed_for(fx_alice, fx_copy(fx_alice, dev))
}

test_alias_moves_in_prod_count_the_approvals_of_the_copied_version if {
	facts := object.union(fx_good_copy, {
		"target": {"name": "prod.fraud-detector", "version": "1", "alias": "champion"},
		"model_version": object.union(fx_version("1", "None", "ci-bot", "r1"), {"name": "prod.fraud-detector"}),
	})
	decision == fx_allowed with input as fx_set_alias(fx_ci, facts, "champion")
	d := decision with input as fx_set_alias(fx_ci, facts, "champion") with data.environments.governed as [{"models": "prod.*", "approvals_carry_over": false}]
	d.reasons == ["version 1 of prod.fraud-detector has no approval from a reviewer other than its creator for the alias champion"]
}

test_a_malformed_environment_list_fails_closed if {
	every governed in ["prod.*", [{"models": 7}], ["prod.*"]] {
		d := decision with input as fx_copy(fx_ci, fx_good_copy) with data.environments.governed as governed
		"environments.governed in data.json must be a list of objects with a string `models`" in d.reasons
	}
}

# ---------------------------------------------------------------------------------------------------------------
# A copy comes only from registered models the caller may read
# ---------------------------------------------------------------------------------------------------------------

# A hop's permission facts, as the gate's chain enricher adds them (the permissions enricher's shape).
fx_hop_permissions(model, owner, grants) := {
	"workspace": null, "anchor": "registered_model", "exists": true, "problem": null,
	"chain": [{"type": "registered_model", "id": model, "name": model, "owner": owner, "grants": object.union({"users": {}, "groups": {}}, grants)}],
}

fx_team_b := fx_principal("bea", ["team-b"])

fx_hop(model, version, owner, grants) := {
	"source": sprintf("models:/%s/%s", [model, version]), "name": model, "version": version, "run_id": "r1",
	"permissions": fx_hop_permissions(model, owner, grants),
}

# bea (team B) copies version 1 of team A's team-a.fraud (ann's) into team B's own team-b.fraud.
fx_cross_team_copy(who, hops) := fx_write(who, "CreateModelVersion", {
	"target": {"name": "team-b.fraud", "source": hops[0].source, "run_id": "r1"},
	"registered_model": {"name": "team-b.fraud", "tags": {}, "aliases": {}, "latest_versions": {}, "created_by": "bea"},
	"source_run": fx_run("r1", 0.91),
	"source_matches_run": true,
	"lineage": {
		"verified": true, "kind": "run", "run_owner": "ann", "logged_model_creator": null, "reason": null, "hops": hops,
		"copied_from": {"name": hops[0].name, "version": hops[0].version, "created_by": "ann", "current_stage": "None", "approvals": []},
		"origin": {"name": "team-a.fraud", "version": "1"}, "chain_error": null,
	},
	"approvals": [],
	"open_requests": [],
})

fx_closed_to_team_b := {"groups": {"team-b": "NO_PERMISSIONS"}}

fx_team_b_refused := "bea may not CreateModelVersion from version 1 of the registered model \"team-a.fraud\" (hop 1 of its source chain from models:/team-a.fraud/1): bea may not read that model (bea has NO_PERMISSIONS there: a grant to the group team-b on the registered_model \"team-a.fraud\"); ask its owner or an admin for READ"

test_a_copy_from_a_model_the_caller_may_read_is_allowed if {
	decision == fx_allowed with input as fx_cross_team_copy(fx_team_b, [fx_hop("team-a.fraud", "1", "ann", {})])
}

test_a_copy_from_a_model_closed_to_the_caller_is_refused_naming_the_hop if {
	inp := fx_cross_team_copy(fx_team_b, [fx_hop("team-a.fraud", "1", "ann", fx_closed_to_team_b)])
	d := decision with input as inp
	d.reasons == [fx_team_b_refused]

	# Admins read everything; the grant closes the model to team B only.
	fx_allowed_for(fx_root, inp)
	fx_allowed_for(fx_alice, inp)
}

test_a_copy_is_judged_with_the_permission_levels_of_permissions_rego if {
	# Without a default level, a READ grant, the creator's level or a pattern grant opens the model; nothing else does.
	closed := {"default": "NO_PERMISSIONS", "creator": "MANAGE"}
	d := decision with input as fx_cross_team_copy(fx_team_b, [fx_hop("team-a.fraud", "1", "ann", {})]) with data.permissions as closed
	d.reasons == ["bea may not CreateModelVersion from version 1 of the registered model \"team-a.fraud\" (hop 1 of its source chain from models:/team-a.fraud/1): bea may not read that model (bea has NO_PERMISSIONS there: no grant lets them read it); ask its owner or an admin for READ"]
	decision == fx_allowed with input as fx_cross_team_copy(fx_team_b, [fx_hop("team-a.fraud", "1", "ann", {"users": {"bea": "READ"}})]) with data.permissions as closed
	decision == fx_allowed with input as fx_cross_team_copy(fx_team_b, [fx_hop("team-a.fraud", "1", "bea", {})]) with data.permissions as closed
	pattern := object.union(closed, {"patterns": [{"group": "team-b", "type": "registered_model", "name": "team-a.*", "level": "READ"}]})
	decision == fx_allowed with input as fx_cross_team_copy(fx_team_b, [fx_hop("team-a.fraud", "1", "ann", {})]) with data.permissions as pattern

	# A NO_PERMISSIONS pattern beats the READ default.
	deny := {"default": "READ", "patterns": [{"group": "team-b", "type": "registered_model", "name": "team-a.*", "level": "NO_PERMISSIONS"}]}
	d2 := decision with input as fx_cross_team_copy(fx_team_b, [fx_hop("team-a.fraud", "1", "ann", {})]) with data.permissions as deny
	d2.reasons == ["bea may not CreateModelVersion from version 1 of the registered model \"team-a.fraud\" (hop 1 of its source chain from models:/team-a.fraud/1): bea may not read that model (bea has NO_PERMISSIONS there: the pattern grant to the group team-b on registered_model team-a.*); ask its owner or an admin for READ"]
}

test_every_hop_of_the_chain_must_be_readable if {
	hops := [fx_hop("team-b.staging", "3", "bea", {}), fx_hop("team-a.fraud", "1", "ann", fx_closed_to_team_b)]
	d := decision with input as fx_cross_team_copy(fx_team_b, hops)
	d.reasons == ["bea may not CreateModelVersion from version 1 of the registered model \"team-a.fraud\" (hop 2 of its source chain from models:/team-b.staging/3): bea may not read that model (bea has NO_PERMISSIONS there: a grant to the group team-b on the registered_model \"team-a.fraud\"); ask its owner or an admin for READ"]
}

test_a_hop_whose_permissions_cannot_be_checked_denies if {
	no_facts := object.remove(fx_hop("team-a.fraud", "1", "ann", {}), ["permissions"])
	d := decision with input as fx_cross_team_copy(fx_team_b, [no_facts])
	d.reasons == ["the permissions on version 1 of the registered model \"team-a.fraud\" (hop 1 of the source chain from models:/team-a.fraud/1) cannot be checked: the gate sent no permission facts for it"]

	bad := object.union(fx_hop("team-a.fraud", "1", "ann", {}), {"permissions": {"problem": "the registered_model \"team-a.fraud\" cannot be checked: bad grants"}})
	d2 := decision with input as fx_cross_team_copy(fx_team_b, [bad])
	d2.reasons == ["the permissions on version 1 of the registered model \"team-a.fraud\" (hop 1 of the source chain from models:/team-a.fraud/1) cannot be checked: the registered_model \"team-a.fraud\" cannot be checked: bad grants"]
}

test_reads_of_a_copy_are_not_judged_on_its_lineage if {
	inp := fx_cross_team_copy(fx_team_b, [fx_hop("team-a.fraud", "1", "ann", fx_closed_to_team_b)])
	read := object.union(inp, {"operation": {"rpc": "GetModelVersion", "read_only": true}})
	ids := {v.id | some v in violations} with input as read
	not "lineage.unreadable" in ids
}
