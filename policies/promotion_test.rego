package mlflow_gate

import rego.v1

# ---------------------------------------------------------------------------------------------------------------
# To Production by stage transition: the normal route
# ---------------------------------------------------------------------------------------------------------------

test_ci_may_promote_an_approved_staging_version_that_passes_its_gate if {
	d := decision with input as fx_promote(fx_ci, {})
	d == {"allow": true, "reasons": [], "break_glass": false, "would_deny": []}
}

test_only_ci_may_transition_to_production if {
	every who in [fx_alice, fx_bob, fx_root] {
		d := decision with input as fx_promote(who, {})
		d.reasons == ["only the CI service account may transition to Production"]
		not d.allow
	}
}

test_on_call_without_break_glass_eligibility_is_told_why if {
	d := decision with input as fx_promote(fx_carol, {})
	not d.allow
	d.reasons == ["only the CI service account may transition to Production (on-call break-glass applies only to versions that were in Production before)"]
}

test_production_only_from_staging if {
	every stage in ["None", "Archived", "Production"] {
		d := decision with input as fx_promote(fx_ci, {"model_version": {"current_stage": stage}})
		not d.allow
		d.reasons == [sprintf("version 1 of fraud-detector is in %s; only a Staging version may be promoted to Production", [stage])]
	}
}

test_a_version_that_does_not_exist_cannot_be_promoted if {
	d := decision with input as fx_write(fx_ci, "TransitionModelVersionStage", fx_target({"name": "m", "version": "9", "stage": "Production", "archive_existing_versions": true}))
	not d.allow
	d.reasons == [
		"version 9 of m has no approval from a reviewer other than its creator",
		"version 9 of m has no recorded creator (registered before the gate?), so its approvals cannot be checked; register it again through the gate",
		"version 9 of m has no source run, so it cannot pass the evaluation gate",
		"version 9 of m is in no stage; only a Staging version may be promoted to Production",
	]
}

test_transition_to_production_must_archive_existing_versions if {
	every archive in [false, null, "true", 1] {
		d := decision with input as fx_transition(fx_ci, fx_v1_staging, "Production", archive)
		not d.allow
		d.reasons == ["transition to Production must set archive_existing_versions=true"]
	}
	d := decision with input as fx_write(fx_ci, "TransitionModelVersionStage", object.union(fx_v1_staging, {"target": {"stage": "Production"}}))
	d.reasons == ["transition to Production must set archive_existing_versions=true"]
}

test_a_failing_gate_blocks_production if {
	d := decision with input as fx_promote(fx_ci, {"source_run": {"metrics": {"val_auc": 0.71}}})
	not d.allow
	d.reasons == ["val_auc 0.71 is below the gate 0.80 for fraud-detector"]
}

# ---------------------------------------------------------------------------------------------------------------
# Approvals
# ---------------------------------------------------------------------------------------------------------------

fx_no_approval := "version 1 of fraud-detector has no approval from a reviewer other than its creator"

test_production_needs_an_approval if {
	d := decision with input as fx_promote(fx_ci, {"approvals": []})
	not d.allow
	d.reasons == [fx_no_approval]
}

test_the_creators_own_approval_does_not_count if {
	d := decision with input as fx_promote(fx_ci, {"approvals": [fx_approval("alice")]})
	d.reasons == [fx_no_approval]
}

test_invalid_approvals_do_not_count if {
	every a in [
		object.union(fx_approval("bob"), {"valid": false}),
		object.union(fx_approval("bob"), {"valid": "true"}),
		object.union(fx_approval("bob"), {"stage": "Staging"}),
		object.union(fx_approval("bob"), {"stage": null}),
		object.union(fx_approval("bob"), {"approver": ""}),
		object.union(fx_approval("bob"), {"approver": 7}),
		"bob",
	] {
		d := decision with input as fx_promote(fx_ci, {"approvals": [a]})
		d.reasons == [fx_no_approval]
	}
}

test_approval_stage_is_case_insensitive if {
	decision.allow with input as fx_promote(fx_ci, {"approvals": [object.union(fx_approval("bob"), {"stage": "production"})]})
}

test_min_approvals_counts_distinct_approvers if {
	d := decision with input as fx_promote(fx_ci, {"approvals": [fx_approval("bob"), fx_approval("bob"), fx_approval("alice")]})
		with data.production.min_approvals as 2
	not d.allow
	d.reasons == ["version 1 of fraud-detector has 1 of the 2 approvals required from reviewers other than its creator"]
	decision.allow with input as fx_promote(fx_ci, {"approvals": [fx_approval("bob"), fx_approval("dave")]})
		with data.production.min_approvals as 2
}

test_fractional_min_approvals_round_up if {
	d := decision with input as fx_promote(fx_ci, {}) with data.production.min_approvals as 1.5
	d.reasons == ["version 1 of fraud-detector has 1 of the 1.5 approvals required from reviewers other than its creator"]
}

test_min_approvals_never_drops_below_one if {
	every n in [0, -3, "2", null] {
		d := decision with input as fx_promote(fx_ci, {"approvals": []}) with data.production.min_approvals as n
		d.reasons == [fx_no_approval]
	}
}

test_a_version_without_a_recorded_creator_cannot_be_promoted if {
	d := decision with input as fx_promote(fx_ci, {"model_version": {"created_by": null}})
	not d.allow
	d.reasons == ["version 1 of fraud-detector has no recorded creator (registered before the gate?), so its approvals cannot be checked; register it again through the gate"]
}

test_unknown_creator_can_be_shadowed_while_migrating if {
	d := decision with input as fx_promote(fx_ci, {"model_version": {"created_by": null}})
		with data.shadow_rules as ["approvals.unknown_creator"]
	d.allow
	d.would_deny == ["approvals.unknown_creator: version 1 of fraud-detector has no recorded creator (registered before the gate?), so its approvals cannot be checked; register it again through the gate"]
}

# ---------------------------------------------------------------------------------------------------------------
# To Staging: the evaluation gate
# ---------------------------------------------------------------------------------------------------------------

fx_v2(run) := fx_facts("2", "None", "alice", run, [], {})

test_any_engineer_may_move_a_version_that_passes_its_gate_to_staging if {
	every who in [fx_alice, fx_bob, fx_ci] {
		d := decision with input as fx_to_staging(who, fx_v2(fx_run("r2", 0.85)))
		d == {"allow": true, "reasons": [], "break_glass": false, "would_deny": []}
	}
}

test_the_gate_is_inclusive_at_its_threshold if {
	decision.allow with input as fx_to_staging(fx_alice, fx_v2(fx_run("r2", 0.8)))
}

test_a_metric_below_its_gate_blocks_staging if {
	d := decision with input as fx_to_staging(fx_alice, fx_v2(fx_run("r2", 0.71)))
	not d.allow
	d.reasons == ["val_auc 0.71 is below the gate 0.80 for fraud-detector"]
}

test_a_metric_above_its_maximum_blocks_staging if {
	gates := {"models": {"fraud-detector": {"metrics": {"val_auc": {"min": 0.8, "max": 0.99}, "val_loss": {"max": 0.1}}}}}
	d := decision with input as fx_to_staging(fx_alice, fx_v2(fx_run("r2", 0.995))) with data.gates as gates
	not d.allow
	d.reasons == ["val_auc 0.995 is above the gate maximum 0.99 for fraud-detector", "val_loss 0.20 is above the gate maximum 0.10 for fraud-detector"]
}

test_a_missing_metric_fails_the_gate if {
	run := object.union(object.remove(fx_run("r2", 0.9), ["metrics"]), {"metrics": {"val_loss": 0.2}})
	d := decision with input as fx_to_staging(fx_alice, fx_v2(run))
	not d.allow
	d.reasons == ["run r2 of fraud-detector version 2 has no metric val_auc, which its evaluation gate requires"]
}

test_a_non_numeric_metric_fails_the_gate if {
	d := decision with input as fx_to_staging(fx_alice, fx_v2(fx_run("r2", "0.9")))
	not d.allow
	d.reasons == ["metric val_auc of run r2 is not a number, so it cannot pass the gate for fraud-detector"]
}

test_missing_required_tags_fail_the_gate if {
	run := object.union(object.remove(fx_run("r2", 0.9), ["tags"]), {"tags": {"data_version": "v3"}})
	d := decision with input as fx_to_staging(fx_alice, fx_v2(run))
	not d.allow
	d.reasons == ["run r2 of fraud-detector version 2 lacks the required tag git_commit"]
}

test_model_specific_required_tags_add_to_the_default if {
	gates := {
		"default": {"required_tags": ["data_version"]},
		"models": {"fraud-detector": {"required_tags": ["reviewed_dataset"]}},
	}
	d := decision with input as fx_to_staging(fx_alice, fx_v2(fx_run("r2", 0.5))) with data.gates as gates
	not d.allow
	d.reasons == ["run r2 of fraud-detector version 2 lacks the required tag reviewed_dataset"]
}

test_a_version_without_a_source_run_cannot_pass_a_gate if {
	facts := object.remove(fx_v2(fx_run("r2", 0.9)), ["source_run"])
	d := decision with input as fx_to_staging(fx_alice, facts)
	not d.allow
	d.reasons == ["version 2 of fraud-detector has no source run, so it cannot pass the evaluation gate"]
}

test_the_source_must_belong_to_its_run if {
	facts := fx_v2(fx_run("r2", 0.9))
	every patch in [{"source_matches_run": false}, {"source_matches_run": "true"}] {
		d := decision with input as fx_to_staging(fx_alice, object.union(facts, patch))
		not d.allow
		d.reasons == ["the source of version 2 of fraud-detector does not belong to its run r2"]
	}
	d := decision with input as fx_to_staging(fx_alice, object.remove(facts, ["source_matches_run"]))
	d.reasons == ["the source of version 2 of fraud-detector does not belong to its run r2"]
}

test_a_source_not_provably_the_run_owners_output_fails_the_gate if {
	facts := fx_v2(fx_run("r2", 0.9))
	borrowed := {
		"verified": false, "kind": "logged_model", "run_owner": "alice", "logged_model_creator": "mallory",
		"reason": "the source's logged model m-1 was created by mallory, not by alice who owns run r2",
	}
	d := decision with input as fx_to_staging(fx_alice, object.union(facts, {"lineage": borrowed}))
	not d.allow
	d.reasons == [concat("", [
		"the lineage of version 2 of fraud-detector cannot be verified: ",
		"the source's logged model m-1 was created by mallory, not by alice who owns run r2",
	])]
	every patch in [{"lineage": {"verified": "true"}}, {"lineage": null}] {
		d2 := decision with input as fx_to_staging(fx_alice, object.union(facts, patch))
		d2.reasons == ["the lineage of version 2 of fraud-detector cannot be verified: the gate has no lineage facts for it"]
	}
	d3 := decision with input as fx_to_staging(fx_alice, object.remove(facts, ["lineage"]))
	not d3.allow
}

test_every_gate_failure_is_reported_sorted if {
	run := {"run_id": "r2", "metrics": {"val_auc": 0.5}, "tags": {}}
	d := decision with input as fx_to_staging(fx_alice, object.union(fx_v2(run), {"source_matches_run": false}))
	not d.allow
	d.reasons == [
		"run r2 of fraud-detector version 2 lacks the required tag data_version",
		"run r2 of fraud-detector version 2 lacks the required tag git_commit",
		"the source of version 2 of fraud-detector does not belong to its run r2",
		"val_auc 0.50 is below the gate 0.80 for fraud-detector",
	]
}

test_models_without_a_gate_entry_need_the_default_tags_only if {
	facts := object.union(fx_v2(fx_run("r3", 0.1)), {"model_version": {"name": "churn"}, "target": {"name": "churn"}})
	decision.allow with input as fx_to_staging(fx_alice, facts)
	d := decision with input as fx_to_staging(fx_alice, object.union(facts, {"source_run": {"tags": {"data_version": 1}}}))
	d.allow
	d2 := decision with input as fx_to_staging(fx_alice, object.union(facts, {"source_run": {"tags": null}}))
	d2.reasons == [
		"run r3 of churn version 2 lacks the required tag data_version",
		"run r3 of churn version 2 lacks the required tag git_commit",
	]
}

# The thresholds are keyed on the stored spelling of the model name (from the enrichment), not on the request's.
test_gate_lookup_uses_the_stored_model_name if {
	facts := object.union(fx_v2(fx_run("r2", 0.71)), {"target": {"name": "FRAUD-DETECTOR"}})
	d := decision with input as fx_to_staging(fx_alice, facts)
	d.reasons == ["val_auc 0.71 is below the gate 0.80 for fraud-detector"]
}

test_a_malformed_gate_fails_closed if {
	every spec in [{"min": "0.8"}, {"max": null}, 0.8, "min 0.8"] {
		d := decision with input as fx_to_staging(fx_alice, fx_v2(fx_run("r2", 0.9)))
			with data.gates.models as {"fraud-detector": {"metrics": {"val_auc": spec}}}
		not d.allow
		"the evaluation gate for fraud-detector has a malformed entry for val_auc; fix gates.models in data.json" in d.reasons
	}
}

test_a_presence_only_metric_gate_needs_the_metric if {
	gates := {"models": {"fraud-detector": {"metrics": {"val_f1": {}}}}}
	d := decision with input as fx_to_staging(fx_alice, fx_v2(fx_run("r2", 0.9))) with data.gates as gates
	d.reasons == ["run r2 of fraud-detector version 2 has no metric val_f1, which its evaluation gate requires"]
}

test_numbers_print_like_the_data if {
	num(0.8) == "0.80"
	num(0.815) == "0.815"
	num(1000) == "1000"
	num(0.71) == "0.71"
}

# ---------------------------------------------------------------------------------------------------------------
# Break-glass rollback by on-call
# ---------------------------------------------------------------------------------------------------------------

# v1 served in Production before, was archived when v3 was promoted, and has no approval for a new promotion.
fx_v1_archived := object.union(fx_v1_staging, {
	"model_version": {"current_stage": "Archived", "was_in_production": true},
	"approvals": [],
})

test_on_call_may_roll_back_to_a_former_production_version if {
	d := decision with input as fx_transition(fx_carol, fx_v1_archived, "Production", true)
	d == {"allow": true, "reasons": [], "break_glass": true, "would_deny": []}
}

test_break_glass_still_requires_archiving if {
	d := decision with input as fx_transition(fx_carol, fx_v1_archived, "Production", false)
	d == {"allow": false, "reasons": ["transition to Production must set archive_existing_versions=true"], "break_glass": false, "would_deny": []}
}

test_break_glass_still_requires_the_evaluation_gate if {
	facts := object.union(fx_v1_archived, {"source_matches_run": false})
	d := decision with input as fx_transition(fx_carol, facts, "Production", true)
	not d.allow
	not d.break_glass
	d.reasons == ["the source of version 1 of fraud-detector does not belong to its run r1"]
}

test_break_glass_applies_only_to_on_call if {
	every who in [fx_alice, fx_bob, fx_root] {
		d := decision with input as fx_transition(who, fx_v1_archived, "Production", true)
		not d.allow
		not d.break_glass
		"only the CI service account may transition to Production" in d.reasons
	}
}

test_break_glass_applies_only_to_versions_that_served_before if {
	facts := object.union(fx_v1_archived, {"model_version": {"was_in_production": false}})
	d := decision with input as fx_transition(fx_carol, facts, "Production", true)
	not d.allow
	not d.break_glass
	"only the CI service account may transition to Production (on-call break-glass applies only to versions that were in Production before)" in d.reasons
}

test_on_call_may_move_the_champion_back_to_a_former_holder if {
	history := [{"alias": "champion", "by": "ci-bot", "at": 1795700000000}]
	facts := object.union(fx_v1_archived, {"model_version": {"was_in_production": false, "stage_history": history}})
	d := decision with input as fx_set_alias(fx_carol, facts, "champion")
	d == {"allow": true, "reasons": [], "break_glass": true, "would_deny": []}
}

test_an_ordinary_ci_promotion_is_not_break_glass if {
	facts := object.union(fx_v1_staging, {"model_version": {"was_in_production": true}})
	d := decision with input as fx_transition(fx_ci, facts, "Production", true)
	d.allow
	not d.break_glass

	# On-call who is also CI and takes the normal route does not break glass either.
	both := fx_principal("carol", ["ml-oncall", "mlflow-ci"])
	d2 := decision with input as fx_transition(both, facts, "Production", true)
	d2 == {"allow": true, "reasons": [], "break_glass": false, "would_deny": []}
}

test_waived_rules_are_not_reported_as_shadow_denials if {
	d := decision with input as fx_transition(fx_carol, fx_v1_archived, "Production", true)
		with data.shadow_rules as ["approvals.required", "production.ci_only"]
	d == {"allow": true, "reasons": [], "break_glass": true, "would_deny": []}
}

test_a_malformed_gate_structure_fails_closed if {
	inp := fx_to_staging(fx_alice, fx_v2(fx_run("r2", 0.9)))
	every case in [
		[{"default": [], "models": {}}, "gates.default in data.json must be an object"],
		[{"default": {"required_tags": "git_commit"}}, "gates.default.required_tags in data.json must be a list"],
		[{"models": ["fraud-detector"]}, "gates.models in data.json must be an object"],
		[{"models": {"fraud-detector": 0.8}}, "gates.models.fraud-detector in data.json must be an object"],
		[{"models": {"fraud-detector": {"required_tags": {}}}}, "gates.models.fraud-detector.required_tags in data.json must be a list"],
		[{"models": {"fraud-detector": {"metrics": [{"val_auc": 0.8}]}}}, "gates.models.fraud-detector.metrics in data.json must be an object"],
	] {
		d := decision with input as inp with data.gates as case[0]
		not d.allow
		case[1] in d.reasons
	}
	every gates in [null, "x", []] {
		d := decision with input as inp with data.gates as gates
		d.reasons == ["data.gates is missing or malformed, so no evaluation gate can pass; fix data.json"]
	}
}

# ---------------------------------------------------------------------------------------------------------------
# Look-alike names and aliases: the gate folds them (input.folded); the bundle compares the folded forms
# ---------------------------------------------------------------------------------------------------------------

# As the gate builds the input: every name and alias of the resource mapped to its fold.
fx_with_folded(inp, table) := object.union(inp, {"folded": table})

test_a_look_alike_of_a_gated_model_gets_its_gate if {
	facts := object.union(fx_v2(fx_run("r2", 0.71)), {"model_version": {"name": "Ｆｒａｕｄ-Detector"}, "target": {"name": "Ｆｒａｕｄ-Detector"}})
	d := decision with input as fx_with_folded(fx_to_staging(fx_alice, facts), {"Ｆｒａｕｄ-Detector": "fraud-detector"})
	d.reasons == ["val_auc 0.71 is below the gate 0.80 for Ｆｒａｕｄ-Detector"]

	# Data keys are matched after lower(): an upper-case key still applies.
	d2 := decision with input as fx_with_folded(fx_to_staging(fx_alice, facts), {"Ｆｒａｕｄ-Detector": "fraud-detector"})
		with data.gates.models as {"Fraud-Detector": {"metrics": {"val_auc": {"min": 0.8}}}}
	d2.reasons == ["val_auc 0.71 is below the gate 0.80 for Ｆｒａｕｄ-Detector"]
}

test_two_gate_entries_for_one_model_fail_closed if {
	gates := {"models": {"fraud-detector": {"metrics": {"val_auc": {"min": 0.8}}}, "FRAUD-DETECTOR": {}}}
	d := decision with input as fx_to_staging(fx_alice, fx_v2(fx_run("r2", 0.95))) with data.gates as gates
	not d.allow
	d.reasons == ["gates.models in data.json must be one entry per model (FRAUD-DETECTOR, fraud-detector all match fraud-detector after folding)"]
}

test_a_look_alike_of_a_protected_alias_in_the_history_is_break_glass_evidence if {
	history := [{"alias": "CHAMPION", "by": "ci-bot", "at": 1, "request_id": "r"}]
	facts := object.union(fx_v1_staging, {"model_version": {"current_stage": "Archived", "stage_history": history}})
	d := decision with input as fx_with_folded(fx_promote(fx_carol, facts), {"CHAMPION": "champion"})
	d.allow
	d.break_glass
}
