package mlflow_gate

import rego.v1

# ---------------------------------------------------------------------------------------------------------------
# Alias-first models: no stages, champion by CI with an approval for the alias, challenger by any engineer
# ---------------------------------------------------------------------------------------------------------------

fx_alias_approval(who, alias) := {"approver": who, "stage": null, "alias": alias, "at": 1795700000000, "valid": true}

# v1 of fraud-detector, in no stage (the team uses no stages), approved by bob for champion.
fx_v1_unstaged := fx_facts("1", "None", "alice", fx_run("r1", 0.91), [fx_alias_approval("bob", "champion")], {})

test_ci_may_move_champion_onto_an_approved_version_in_no_stage if {
	d := decision with input as fx_set_alias(fx_ci, fx_v1_unstaged, "champion")
	d == fx_allowed
}

test_only_ci_may_move_champion if {
	every who in [fx_alice, fx_bob, fx_root] {
		d := decision with input as fx_set_alias(who, fx_v1_unstaged, "champion")
		not d.allow
		d.reasons == ["only the CI service account may move the alias champion of fraud-detector"]
	}
}

test_on_call_is_told_break_glass_needs_a_former_holder if {
	d := decision with input as fx_set_alias(fx_carol, fx_v1_unstaged, "champion")
	d.reasons == ["only the CI service account may move the alias champion of fraud-detector (on-call break-glass applies only to versions that held it before)"]
}

fx_no_alias_approval := "version 1 of fraud-detector has no approval from a reviewer other than its creator for the alias champion"

test_champion_needs_an_approval_for_the_alias if {
	every list in [
		[],
		[fx_alias_approval("alice", "champion")],
		[object.union(fx_alias_approval("bob", "champion"), {"valid": false})],
		[fx_alias_approval("bob", "challenger")],
		[object.union(fx_alias_approval("bob", "champion"), {"alias": 7})],
	] {
		d := decision with input as fx_set_alias(fx_ci, object.union(fx_v1_unstaged, {"approvals": list}), "champion")
		not d.allow
		d.reasons == [fx_no_alias_approval]
	}
}

test_a_production_approval_counts_for_champion if {
	facts := object.union(fx_v1_unstaged, {"approvals": [fx_approval("bob")]})
	decision == fx_allowed with input as fx_set_alias(fx_ci, facts, "champion")
}

test_champion_needs_its_evaluation_gate if {
	facts := object.union(fx_v1_unstaged, {"source_run": {"metrics": {"val_auc": 0.7}}})
	d := decision with input as fx_set_alias(fx_ci, facts, "champion")
	d.reasons == ["val_auc 0.70 is below the gate 0.80 for fraud-detector"]
}

test_champion_needs_a_recorded_creator if {
	facts := object.union(fx_v1_unstaged, {"model_version": {"created_by": null}})
	d := decision with input as fx_set_alias(fx_ci, facts, "champion")
	d.reasons == ["version 1 of fraud-detector has no recorded creator (registered before the gate?), so its approvals cannot be checked; register it again through the gate"]
}

test_more_approvals_are_counted_per_alias if {
	rules := {"champion": {"set_by": ["ci"], "approvals": 2}}
	facts := object.union(fx_v1_unstaged, {"approvals": [fx_alias_approval("bob", "champion"), fx_alias_approval("bob", "CHAMPION")]})
	d := decision with input as fx_set_alias(fx_ci, facts, "champion") with data.aliases.models as {"fraud-detector": rules}
	d.reasons == ["version 1 of fraud-detector has 1 of the 2 approvals required from reviewers other than its creator for the alias champion"]
	two := object.union(facts, {"approvals": [fx_alias_approval("bob", "champion"), fx_alias_approval("dave", "champion")]})
	decision == fx_allowed with input as fx_set_alias(fx_ci, two, "champion") with data.aliases.models as {"fraud-detector": rules}
}

test_engineers_may_set_challenger_on_a_version_that_passes_its_gate if {
	facts := object.union(fx_v1_unstaged, {"approvals": []})
	decision == fx_allowed with input as fx_set_alias(fx_alice, facts, "challenger")
}

test_challenger_needs_the_gate if {
	facts := object.union(fx_v1_unstaged, {"approvals": [], "source_run": {"metrics": {"val_auc": 0.6}}})
	d := decision with input as fx_set_alias(fx_alice, facts, "challenger")
	d.reasons == ["val_auc 0.60 is below the gate 0.80 for fraud-detector"]
}

test_ungoverned_aliases_are_free if {
	facts := object.union(fx_v1_unstaged, {"approvals": [], "source_run": {"metrics": {"val_auc": 0.6}}})
	decision == fx_allowed with input as fx_set_alias(fx_alice, facts, "experiment-7")
}

test_look_alikes_of_champion_are_governed if {
	every alias in ["ｃｈａｍｐｉｏｎ", "cham\u200bpion", "Champion"] {
		inp := fx_with_folded(fx_set_alias(fx_alice, fx_v1_unstaged, alias), {alias: "champion"})
		d := decision with input as inp
		d.reasons == [sprintf("only the CI service account may move the alias %s of fraud-detector", [alias])]
	}
}

# ---------------------------------------------------------------------------------------------------------------
# Per model: stage rules and alias rules side by side
# ---------------------------------------------------------------------------------------------------------------

fx_stage_model := {"fraud-detector": {"champion": {"set_by": ["ci"], "approvals": 1, "gate": true, "stages": ["Staging", "Production"]}}}

test_a_model_may_require_a_stage_for_its_alias if {
	d := decision with input as fx_set_alias(fx_ci, fx_v1_unstaged, "champion") with data.aliases.models as fx_stage_model
	d.reasons == ["version 1 of fraud-detector is in None; the alias champion may point only to a version in Staging or Production"]
	staged := object.union(fx_v1_unstaged, {"model_version": {"current_stage": "Staging"}})
	decision == fx_allowed with input as fx_set_alias(fx_ci, staged, "champion") with data.aliases.models as fx_stage_model

	# Another model keeps the default rule (no stage).
	other := object.union(fx_v1_unstaged, {"model_version": {"name": "churn"}, "target": {"name": "churn"}, "registered_model": {"name": "churn"}})
	decision == fx_allowed with input as fx_set_alias(fx_ci, other, "champion") with data.aliases.models as fx_stage_model
}

test_model_keys_are_matched_folded if {
	d := decision with input as fx_set_alias(fx_ci, fx_v1_unstaged, "champion") with data.aliases.models as {"Fraud-Detector": fx_stage_model["fraud-detector"]}
	"version 1 of fraud-detector is in None; the alias champion may point only to a version in Staging or Production" in d.reasons
}

test_a_null_model_rule_ungoverns_the_alias if {
	facts := object.union(fx_v1_unstaged, {"approvals": []})
	decision == fx_allowed with input as fx_set_alias(fx_alice, facts, "champion") with data.aliases.models as {"fraud-detector": {"champion": null}}
}

test_set_by_lists_every_role_allowed if {
	models := {"fraud-detector": {"champion": {"set_by": ["reviewer", "ci"], "approvals": 0}}}
	d := decision with input as fx_set_alias(fx_alice, fx_v1_unstaged, "champion") with data.aliases.models as models
	d.reasons == ["only reviewers or the CI service account may move the alias champion of fraud-detector"]
	decision == fx_allowed with input as fx_set_alias(fx_dave, fx_v1_unstaged, "champion") with data.aliases.models as models
}

test_without_alias_rules_protected_aliases_keep_the_stage_rule if {
	d := decision with input as fx_set_alias(fx_ci, fx_v1_unstaged, "champion") with data.aliases as {}
	d.reasons == ["version 1 of fraud-detector is in None; the alias champion may point only to a version in Staging or Production"]
	every stage in ["Staging", "Production"] {
		facts := object.union(fx_v1_staging, {"model_version": {"current_stage": stage}})
		decision == fx_allowed with input as fx_set_alias(fx_ci, facts, "champion") with data.aliases as {}
	}
	alice := decision with input as fx_set_alias(fx_alice, fx_v1_staging, "prod") with data.aliases as {} with data.production.protected_aliases as ["prod"]
	alice.reasons == ["only the CI service account may move the alias prod of fraud-detector"]

	# Without any configuration champion stays governed.
	not decision.allow with input as fx_set_alias(fx_alice, fx_v1_staging, "champion") with data.aliases as {} with data.production as {}
}

test_malformed_alias_rules_fail_closed if {
	every case in [
		[{"default": {"champion": {"approvals": "one"}}}, "aliases.*.champion.approvals in data.json must be a number of at least 0"],
		[{"default": {"champion": {"set_by": "ci"}}}, "aliases.*.champion.set_by in data.json must be a list of role names"],
		[{"default": {"champion": {"gate": "no"}}}, "aliases.*.champion.gate in data.json must be true or false"],
		[{"default": {"champion": {"stages": "Staging"}}}, "aliases.*.champion.stages in data.json must be a list of stages or null"],
		[{"default": {"champion": 1}}, "aliases.default.champion in data.json must be an object (or null in aliases.models)"],
	] {
		d := decision with input as fx_set_alias(fx_ci, fx_v1_unstaged, "champion") with data.aliases as case[0]
		not d.allow
		case[1] in d.reasons
	}
	d := decision with input as fx_set_alias(fx_ci, fx_v1_unstaged, "champion") with data.aliases as "x"
	"aliases in data.json must be an object" in d.reasons
}

test_a_malformed_approvals_count_is_not_zero if {
	# "one" is not a number: the rule fails closed, it does not fall back to needing no approval.
	facts := object.union(fx_v1_unstaged, {"approvals": []})
	not decision.allow with input as fx_set_alias(fx_ci, facts, "champion") with data.aliases.default.champion.approvals as "one"
}

test_the_gate_may_be_turned_off_only_explicitly if {
	facts := object.union(fx_v1_unstaged, {"source_run": {"metrics": {"val_auc": 0.5}}})
	decision == fx_allowed with input as fx_set_alias(fx_ci, facts, "champion") with data.aliases.default.champion.gate as false
	not decision.allow with input as fx_set_alias(fx_ci, facts, "champion") with data.aliases.default.champion.gate as null
}

# ---------------------------------------------------------------------------------------------------------------
# Deleting a governed alias
# ---------------------------------------------------------------------------------------------------------------

fx_delete_alias(who, alias) := fx_write(who, "DeleteRegisteredModelAlias", fx_target({"name": "fraud-detector", "alias": alias}))

fx_engineers_may_not_delete_champion := "only the CI service account, with 1 approval(s) of its removal, or admins may delete the protected alias champion of fraud-detector"

# An approval of champion's removal: a transition request with to_alias champion and alias_action "delete".
fx_removal_approval(who) := {"approver": who, "stage": null, "alias": "champion", "alias_action": "delete", "at": 1795700000000, "valid": true}

# Deleting champion, held by version 1 (alice's): the gate judges the deletion on the version holding the alias.
fx_champion_deletion(who, approvals) := fx_write(who, "DeleteRegisteredModelAlias", object.union(
	fx_facts("1", "None", "alice", fx_run("r1", 0.91), approvals, {"alias": "champion"}),
	{"registered_model": {"aliases": {"champion": "1"}}},
))

fx_no_removal_approval := "version 1 of fraud-detector, which holds the alias champion, has 0 of the 1 approvals of the alias's removal required from reviewers other than its creator (request it with to_alias champion and alias_action \"delete\")"

test_engineers_may_not_delete_champion_even_approved if {
	every who in [fx_alice, fx_bob, fx_carol] {
		d := decision with input as fx_champion_deletion(who, [fx_removal_approval("bob")])
		d.reasons == [fx_engineers_may_not_delete_champion]
	}
	decision == fx_allowed with input as fx_champion_deletion(fx_root, [])
}

test_ci_deletes_champion_with_an_approval_of_its_removal if {
	decision == fx_allowed with input as fx_champion_deletion(fx_ci, [fx_removal_approval("bob")])
	every approvals in [
		[],
		[fx_removal_approval("alice")],
		[object.union(fx_removal_approval("bob"), {"valid": false})],
		[fx_alias_approval("bob", "champion")],
		[fx_approval("bob")],
		[object.union(fx_removal_approval("bob"), {"alias": "challenger"})],
	] {
		d := decision with input as fx_champion_deletion(fx_ci, approvals)
		d.reasons == [fx_no_removal_approval]
	}
}

test_an_approval_of_a_removal_is_void_once_the_alias_came_back_after_it if {
	approval := fx_removal_approval("bob")
	moved := {"alias": "champion", "by": "ci-bot", "at": approval.at + 1}
	inp := fx_champion_deletion(fx_ci, [approval])
	returned := object.union(inp, {"resource": {"model_version": {"stage_history": [moved]}}})
	d := decision with input as returned
	d.reasons == [fx_no_removal_approval]

	# A move before the approval, an entry of another alias or of the alias's removal does not void it.
	every history in [
		[object.union(moved, {"at": approval.at - 1})],
		[object.union(moved, {"alias": "challenger"})],
		[object.union(moved, {"removed": true})],
	] {
		decision == fx_allowed with input as object.union(inp, {"resource": {"model_version": {"stage_history": history}}})
	}
}

test_an_approval_of_a_removal_never_counts_for_a_move if {
	facts := fx_facts("1", "None", "alice", fx_run("r1", 0.91), [fx_removal_approval("bob")], {})
	d := decision with input as fx_set_alias(fx_ci, facts, "champion")
	d.reasons == ["version 1 of fraud-detector has no approval from a reviewer other than its creator for the alias champion"]
}

test_a_removal_of_champion_from_an_unstamped_version_is_for_admins if {
	inp := fx_champion_deletion(fx_ci, [fx_removal_approval("bob")])
	unstamped := object.union(inp, {"resource": {"model_version": {"created_by": null}}})
	d := decision with input as unstamped
	d.reasons == ["version 1 of fraud-detector, which holds the alias champion, has no recorded creator (registered before the gate?), so approvals of the alias's removal cannot be checked; an admin may delete it"]
}

test_whoever_may_set_an_alias_without_approvals_may_delete_it if {
	decision == fx_allowed with input as fx_delete_alias(fx_alice, "challenger")
	rules := {"fraud-detector": {"challenger": {"set_by": ["ci"], "approvals": 0}}}
	d := decision with input as fx_delete_alias(fx_alice, "challenger") with data.aliases.models as rules
	d.reasons == ["only the CI service account or admins may delete the alias challenger of fraud-detector"]
	decision == fx_allowed with input as fx_delete_alias(fx_ci, "challenger") with data.aliases.models as rules
	decision == fx_allowed with input as fx_delete_alias(fx_root, "challenger") with data.aliases.models as rules
}

test_a_version_holding_champion_is_protected_without_stages if {
	holder := object.union(fx_v1_unstaged, {"registered_model": {"aliases": {"champion": "1"}}})
	d := decision with input as fx_write(fx_alice, "DeleteModelVersion", holder)
	d.reasons == ["version 1 of fraud-detector holds the protected alias champion; only admins may delete it"]
	challenger := object.union(fx_v1_unstaged, {"registered_model": {"aliases": {"challenger": "1"}}})
	decision == fx_allowed with input as fx_write(fx_alice, "DeleteModelVersion", challenger)
}

# ---------------------------------------------------------------------------------------------------------------
# Break-glass: on-call puts the alias back on a version that held it
# ---------------------------------------------------------------------------------------------------------------

fx_held(alias) := object.union(fx_v1_unstaged, {
	"approvals": [],
	"model_version": {"stage_history": [{"alias": alias, "by": "ci-bot", "at": 1795700000000, "request_id": "r"}]},
})

test_on_call_may_put_champion_back_on_a_former_holder if {
	d := decision with input as fx_set_alias(fx_carol, fx_held("champion"), "champion")
	d == {"allow": true, "reasons": [], "break_glass": true, "would_deny": []}
}

test_holding_another_alias_is_no_break_glass_evidence if {
	d := decision with input as fx_set_alias(fx_carol, fx_held("challenger"), "champion")
	not d.allow
	not d.break_glass
}

test_a_recorded_removal_is_no_break_glass_evidence if {
	facts := object.union(fx_v1_unstaged, {
		"approvals": [],
		"model_version": {"stage_history": [{"alias": "champion", "by": "root", "at": 1, "removed": true}]},
	})
	not decision.allow with input as fx_set_alias(fx_carol, facts, "champion")
}

test_break_glass_does_not_waive_the_gate_for_aliases if {
	facts := object.union(fx_held("champion"), {"source_run": {"metrics": {"val_auc": 0.5}}})
	d := decision with input as fx_set_alias(fx_carol, facts, "champion")
	d.reasons == ["val_auc 0.50 is below the gate 0.80 for fraud-detector"]
	not d.break_glass
}

test_ci_moving_champion_back_is_not_break_glass if {
	facts := object.union(fx_held("champion"), {"approvals": [fx_alias_approval("bob", "champion")]})
	decision == fx_allowed with input as fx_set_alias(fx_ci, facts, "champion")
}
