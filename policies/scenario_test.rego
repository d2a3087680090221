# The reference scenario, step by step, as the gate would ask: every input below is what the gate builds for the
# request (principal from the token, registry facts from the enrichment).
package mlflow_gate

import rego.v1

sc_good_run := fx_run("r1", 0.91)

sc_bad_run := fx_run("r2", 0.71)

# Facts of fraud-detector version `v` at some point of the story.
sc_facts(v, stage, run, approvals, history) := object.union(
	fx_facts(v, stage, "alice", run, approvals, {}),
	{"model_version": {"was_in_production": history}},
)

# 1. Engineer alice registers fraud-detector, then version 1 from run r1 (val_auc 0.91, data_version, git_commit).
test_scenario_1_alice_registers_the_model_and_version_1 if {
	create_model := fx_request_with_body(
		fx_alice, "CreateRegisteredModel", "registered_model",
		{"target": {"name": "fraud-detector"}, "approvals": [], "source_matches_run": false},
		{"name": "fraud-detector"},
	)
	decision == fx_allowed with input as create_model

	create_version := fx_request_with_body(
		fx_alice, "CreateModelVersion", "model_version",
		{
			"target": {"name": "fraud-detector", "source": "runs:/r1/model", "run_id": "r1"},
			"registered_model": {"name": "fraud-detector", "tags": {}, "aliases": {}, "latest_versions": {}, "created_by": "alice"},
			"source_run": sc_good_run,
			"source_matches_run": true,
			"approvals": [],
		},
		{"name": "fraud-detector", "source": "runs:/r1/model", "run_id": "r1"},
	)
	decision == fx_allowed with input as create_version
}

# 2. Alice tries to put version 1 straight into Production: she is not CI, it is not in Staging, nobody approved it.
test_scenario_2_alice_cannot_move_version_1_to_production if {
	d := decision with input as fx_transition(fx_alice, sc_facts("1", "None", sc_good_run, [], false), "Production", true)
	d == {
		"allow": false,
		"reasons": [
			"only the CI service account may transition to Production",
			"version 1 of fraud-detector has no approval from a reviewer other than its creator",
			"version 1 of fraud-detector is in None; only a Staging version may be promoted to Production",
		],
		"break_glass": false,
		"would_deny": [],
	}
}

# 3. Version 2, from run r2 with val_auc 0.71, can be registered but cannot reach Staging, not even by CI.
test_scenario_3_version_2_fails_its_gate if {
	every who in [fx_alice, fx_ci] {
		d := decision with input as fx_to_staging(who, sc_facts("2", "None", sc_bad_run, [], false))
		d.reasons == ["val_auc 0.71 is below the gate 0.80 for fraud-detector"]
		not d.allow
	}
}

# 4. CI moves version 1 to Staging: its gate passes.
test_scenario_4_ci_moves_version_1_to_staging if {
	decision == fx_allowed with input as fx_to_staging(fx_ci, sc_facts("1", "None", sc_good_run, [], false))
}

# 5. Reviewer bob approves version 1; alice's own approval is refused (and would be even if she were a reviewer).
test_scenario_5_bob_approves_alice_cannot if {
	facts := object.union(sc_facts("1", "Staging", sc_good_run, [], false), {"target": {"stage": "Production"}})
	decision == fx_allowed with input as fx_write(fx_bob, "ApproveTransitionRequest", facts)

	d := decision with input as fx_write(fx_alice, "ApproveTransitionRequest", facts)
	d.reasons == [
		"only reviewers may approve transition requests",
		"you created version 1 of fraud-detector, so you cannot approve it; ask another reviewer",
	]
	senior_alice := fx_principal("alice", ["ml-senior"])
	d2 := decision with input as fx_write(senior_alice, "ApproveTransitionRequest", facts)
	d2.reasons == ["you created version 1 of fraud-detector, so you cannot approve it; ask another reviewer"]
}

# 6. CI moves version 1 to Production, archiving whatever was there.
test_scenario_6_ci_promotes_version_1 if {
	facts := sc_facts("1", "Staging", sc_good_run, [fx_approval("bob")], false)
	decision == fx_allowed with input as fx_transition(fx_ci, facts, "Production", true)

	d := decision with input as fx_transition(fx_ci, facts, "Production", false)
	d.reasons == ["transition to Production must set archive_existing_versions=true"]
}

# 7. CI cannot do the same for version 3 (in Staging, gate passed) while nobody but its author approved it.
test_scenario_7_ci_cannot_promote_an_unapproved_version if {
	facts := sc_facts("3", "Staging", fx_run("r3", 0.93), [fx_approval("alice")], false)
	d := decision with input as fx_transition(fx_ci, facts, "Production", true)
	d == {
		"allow": false,
		"reasons": ["version 3 of fraud-detector has no approval from a reviewer other than its creator"],
		"break_glass": false,
		"would_deny": [],
	}

	# Once dave approves, CI promotes version 3, and version 1 is archived.
	approved := sc_facts("3", "Staging", fx_run("r3", 0.93), [fx_approval("alice"), fx_approval("dave")], false)
	decision == fx_allowed with input as fx_transition(fx_ci, approved, "Production", true)
}

# 8. Version 3 misbehaves: on-call carol rolls back to version 1 (archived, in Production before), without new
#    approvals and without going through Staging. The decision flags break-glass.
test_scenario_8_carol_rolls_back_with_break_glass if {
	facts := sc_facts("1", "Archived", sc_good_run, [], true)
	d := decision with input as fx_transition(fx_carol, facts, "Production", true)
	d == {"allow": true, "reasons": [], "break_glass": true, "would_deny": []}

	# The same by the champion alias.
	d2 := decision with input as fx_set_alias(fx_carol, facts, "champion")
	d2 == {"allow": true, "reasons": [], "break_glass": true, "would_deny": []}

	# Version 2 never served, so carol cannot put it in Production.
	d3 := decision with input as fx_transition(fx_carol, sc_facts("2", "None", sc_bad_run, [], false), "Production", true)
	not d3.allow
	not d3.break_glass
}
