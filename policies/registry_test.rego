package mlflow_gate

import rego.v1

# ---------------------------------------------------------------------------------------------------------------
# Admin-only registry operations
# ---------------------------------------------------------------------------------------------------------------

test_only_admins_may_delete_registered_models if {
	inp := fx_request(fx_alice, "DeleteRegisteredModel", "registered_model", false, fx_target({"name": "fraud-detector"}))
	d := decision with input as inp
	d == {"allow": false, "reasons": ["only admins may delete registered models"], "break_glass": false, "would_deny": []}
	every who in [fx_ci, fx_bob, fx_carol] {
		not fx_allowed_for(who, inp)
	}
	fx_allowed_for(fx_root, inp)
}

test_only_admins_may_rename_registered_models if {
	inp := fx_request(fx_bob, "RenameRegisteredModel", "registered_model", false, fx_target({"name": "fraud-detector", "new_name": "fd"}))
	d := decision with input as inp
	d.reasons == ["only admins may rename registered models"]
	not fx_allowed_for(fx_ci, inp)
	fx_allowed_for(fx_root, inp)
}

test_engineers_may_delete_versions_that_serve_nothing if {
	every stage in ["None", "Staging", "Archived"] {
		facts := object.union(fx_v1_staging, {"model_version": {"current_stage": stage}})
		fx_allowed_for(fx_alice, fx_write(fx_alice, "DeleteModelVersion", facts))
	}
}

test_only_admins_may_delete_a_production_version if {
	facts := object.union(fx_v1_staging, {"model_version": {"current_stage": "Production"}})
	d := decision with input as fx_write(fx_ci, "DeleteModelVersion", facts)
	d.reasons == ["version 1 of fraud-detector is in Production; only admins may delete it"]
	fx_allowed_for(fx_root, fx_write(fx_ci, "DeleteModelVersion", facts))
}

test_only_admins_may_delete_a_version_holding_a_protected_alias if {
	# The alias as the version reports it ...
	by_version := object.union(fx_v1_staging, {"model_version": {"aliases": ["challenger", "Champion"]}})
	d := decision with input as fx_write(fx_alice, "DeleteModelVersion", by_version)
	d.reasons == ["version 1 of fraud-detector holds the protected alias Champion; only admins may delete it"]

	# ... and as the registered model reports it (the version number may be a number there).
	by_model := object.union(fx_v1_staging, {"registered_model": {"aliases": {"champion": 1, "challenger": "2"}}})
	d2 := decision with input as fx_write(fx_alice, "DeleteModelVersion", by_model)
	d2.reasons == ["version 1 of fraud-detector holds the protected alias champion; only admins may delete it"]
	fx_allowed_for(fx_root, fx_write(fx_alice, "DeleteModelVersion", by_model))

	# Another version holding champion does not protect this one.
	other := object.union(fx_v1_staging, {"registered_model": {"aliases": {"champion": "2"}}})
	fx_allowed_for(fx_alice, fx_write(fx_alice, "DeleteModelVersion", other))
}

test_a_protected_alias_is_deleted_by_ci_with_approvals_or_by_admins if {
	inp := fx_write(fx_ci, "DeleteRegisteredModelAlias", fx_target({"name": "fraud-detector", "alias": "champion"}))
	d := decision with input as inp
	"version ? of fraud-detector, which holds the alias champion, has 0 of the 1 approvals of the alias's removal required from reviewers other than its creator (request it with to_alias champion and alias_action \"delete\")" in d.reasons
	d2 := decision with input as object.union(inp, {"principal": fx_alice})
	d2.reasons == ["only the CI service account, with 1 approval(s) of its removal, or admins may delete the protected alias champion of fraud-detector"]
	fx_allowed_for(fx_root, inp)
	fx_allowed_for(fx_alice, fx_write(fx_alice, "DeleteRegisteredModelAlias", fx_target({"name": "fraud-detector", "alias": "challenger"})))
}

# ---------------------------------------------------------------------------------------------------------------
# Transitions that are not promotions
# ---------------------------------------------------------------------------------------------------------------

fx_v1_production := object.union(fx_v1_staging, {"model_version": {"current_stage": "Production", "was_in_production": true}})

test_only_ci_on_call_or_admins_may_move_a_version_out_of_production if {
	every stage in ["Archived", "None"] {
		inp := fx_transition(fx_alice, fx_v1_production, stage, false)
		d := decision with input as inp
		d.reasons == ["only CI, on-call or admins may move version 1 of fraud-detector out of Production"]
		not fx_allowed_for(fx_bob, inp)
		fx_allowed_for(fx_ci, inp)
		fx_allowed_for(fx_carol, inp)
		fx_allowed_for(fx_root, inp)
	}
}

test_demoting_from_production_to_staging_also_needs_the_gate if {
	facts := object.union(fx_v1_production, {"source_matches_run": false})
	d := decision with input as fx_transition(fx_ci, facts, "Staging", false)
	d.reasons == ["the source of version 1 of fraud-detector does not belong to its run r1"]
	fx_allowed_for(fx_ci, fx_transition(fx_ci, fx_v1_production, "Staging", false))
}

test_engineers_may_archive_versions_outside_production if {
	every stage in ["Archived", "None"] {
		fx_allowed_for(fx_alice, fx_transition(fx_alice, fx_v1_staging, stage, false))
	}
}

test_unknown_stages_are_refused if {
	every stage in ["prod", "", 3] {
		d := decision with input as fx_transition(fx_ci, fx_v1_staging, stage, true)
		not d.allow
	}
	d := decision with input as fx_transition(fx_ci, fx_v1_staging, "prod", true)
	d.reasons == ["\"prod\" is not an MLflow stage (None, Staging, Production or Archived)"]
}

# ---------------------------------------------------------------------------------------------------------------
# Transition-request workflow
# ---------------------------------------------------------------------------------------------------------------

fx_workflow(who, rpc, facts) := fx_write(who, rpc, object.union(facts, {"target": {"stage": "Production"}}))

test_reviewers_may_approve_and_reject if {
	every rpc in ["ApproveTransitionRequest", "RejectTransitionRequest"] {
		d := decision with input as fx_workflow(fx_bob, rpc, fx_v1_staging)
		d == {"allow": true, "reasons": [], "break_glass": false, "would_deny": []}
	}
}

test_only_reviewers_may_approve_or_reject if {
	every who in [fx_alice, fx_ci, fx_carol, fx_root] {
		d := decision with input as fx_workflow(who, "ApproveTransitionRequest", object.union(fx_v1_staging, {"model_version": {"created_by": "zed"}}))
		d.reasons == ["only reviewers may approve transition requests"]
		d2 := decision with input as fx_workflow(who, "RejectTransitionRequest", fx_v1_staging)
		d2.reasons == ["only reviewers may reject transition requests"]
	}
}

test_reviewers_may_not_approve_their_own_versions if {
	facts := object.union(fx_v1_staging, {"model_version": {"created_by": "bob"}})
	d := decision with input as fx_workflow(fx_bob, "ApproveTransitionRequest", facts)
	d.reasons == ["you created version 1 of fraud-detector, so you cannot approve it; ask another reviewer"]

	# Rejecting one's own version is harmless.
	fx_allowed_for(fx_bob, fx_workflow(fx_bob, "RejectTransitionRequest", facts))
}

test_any_engineer_may_request_a_transition_and_comment if {
	every rpc in ["CreateTransitionRequest", "CreateComment"] {
		every who in [fx_alice, fx_bob, fx_ci] {
			fx_allowed_for(who, fx_workflow(who, rpc, fx_v1_staging))
		}
	}
}

test_only_the_requester_or_an_admin_may_cancel_a_request if {
	inp := fx_write(fx_alice, "DeleteTransitionRequest", object.union(fx_v1_staging, {"target": {"stage": "Production", "creator": "alice"}}))
	fx_allowed_for(fx_alice, inp)
	fx_allowed_for(fx_root, inp)
	d := decision with input as object.union(inp, {"principal": fx_bob})
	d.reasons == ["only the requester or an admin may cancel a transition request"]
	not fx_allowed_for(fx_bob, fx_write(fx_bob, "DeleteTransitionRequest", fx_v1_staging))
}

test_only_the_author_or_an_admin_may_edit_or_delete_a_comment if {
	bobs := {"activity": {"id": "c1", "activity_type": "NEW_COMMENT", "user_id": "bob"}}
	# `every`, not `some`: each verb must be governed.
	every verb in ["UpdateComment", "DeleteComment"] {
		inp := fx_write(fx_bob, verb, object.union(fx_v1_staging, bobs))
		fx_allowed_for(fx_bob, inp)
		fx_allowed_for(fx_root, inp)
		d := decision with input as object.union(inp, {"principal": fx_alice})
		not d.allow
		startswith(d.reasons[0], "only the author of a comment")
		not fx_allowed_for(fx_alice, fx_write(fx_alice, verb, fx_v1_staging))
	}
}

# Versions and run ids usually arrive as strings; numbers are rendered the same way in reasons.
test_numeric_versions_and_run_ids_read_as_labels if {
	stored := {"target": {"name": "m", "version": "1"}, "model_version": {"name": "m", "version": 7, "current_stage": "Production"}}
	"version 7 of m is in Production; only admins may delete it" in decision.reasons with input as fx_write(fx_alice, "DeleteModelVersion", stored)
	requested := {"target": {"name": "m", "version": 8}, "model_version": {"name": "m", "current_stage": "Production"}}
	"version 8 of m is in Production; only admins may delete it" in decision.reasons with input as fx_write(fx_alice, "DeleteModelVersion", requested)
	staging := {
		"target": {"name": "m", "version": "9", "stage": "Staging"},
		"model_version": {"name": "m", "version": "9", "current_stage": "None"},
		"source_run": {"run_id": 42, "tags": {"data_version": "v1", "git_commit": "c"}, "metrics": {}},
		"source_matches_run": false,
	}
	"the source of version 9 of m does not belong to its run 42" in decision.reasons with input as fx_write(fx_alice, "TransitionModelVersionStage", staging)
}

test_folded_names_fall_back_to_lower_case if {
	folded("Champion") == "champion" with input as {}
	folded("Ｘ") == "ｘ" with input as {"folded": {"Ｘ": 7}}
	folded(7) == "" with input as {}
	folded("Ｘ") == "x" with input as {"folded": {"Ｘ": "x"}}
}

test_a_look_alike_of_a_protected_alias_cannot_be_deleted_by_engineers if {
	inp := fx_write(fx_alice, "DeleteRegisteredModelAlias", fx_target({"name": "fraud-detector", "alias": "ｃｈａｍｐｉｏｎ"}))
	d := decision with input as object.union(inp, {"folded": {"ｃｈａｍｐｉｏｎ": "champion"}})
	d.reasons == ["only the CI service account, with 1 approval(s) of its removal, or admins may delete the protected alias ｃｈａｍｐｉｏｎ of fraud-detector"]
}
