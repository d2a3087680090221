# Registry operations that are not promotions: what only admins may do, who may take a version out of Production,
# and the transition-request workflow (request, comment, approve, reject, cancel).
package mlflow_gate

import rego.v1

# Every rule below except the two on stage transitions names one of these RPCs first; requests for any other RPC
# (most traffic) skip them with one membership test. Each rule has a test that it denies, so an RPC missing here
# fails the tests.
registry_rpcs := {
	"DeleteRegisteredModel", "RenameRegisteredModel", "DeleteModelVersion", "DeleteRegisteredModelAlias",
	"ApproveTransitionRequest", "RejectTransitionRequest", "DeleteTransitionRequest", "UpdateComment", "DeleteComment",
}

violations contains v if {
	rpc in registry_rpcs
	some v in registry_violations
}

# ---------------------------------------------------------------------------------------------------------------
# Admin-only: operations that destroy or re-key what is (or was) deployed. Deleting a registered model cascades to
# every version and alias; renaming one moves its versions out from under the gate thresholds keyed on its name.
# ---------------------------------------------------------------------------------------------------------------

registry_violations contains violation("registry.delete_model", "only admins may delete registered models") if {
	rpc == "DeleteRegisteredModel"
	not is_admin
}

registry_violations contains violation("registry.rename_model", "only admins may rename registered models") if {
	rpc == "RenameRegisteredModel"
	not is_admin
}

# A version serving traffic: in Production, or holding a protected alias (read from the version and from the model,
# whichever the enrichment filled in).
version_protection contains "is in Production" if current_stage == "Production"

version_protection contains sprintf("holds the protected alias %s", [a]) if {
	some a in as_list(at(model_version, "aliases"))
	is_protected_alias(a)
}

version_protection contains sprintf("holds the protected alias %s", [a]) if {
	some a, v in as_object(at(registered_model, "aliases"))
	is_protected_alias(a)
	as_label(v) == version_label
}

registry_violations contains violation(
	"registry.delete_protected_version",
	sprintf("version %s of %s %s; only admins may delete it", [version_label, model_name, why]),
) if {
	rpc == "DeleteModelVersion"
	not is_admin
	some why in version_protection
}

# Deleting a protected alias (champion) is governed like moving it: the identities that may move it (its set_by),
# with as many approvals of its removal as a move needs (a transition request with to_alias and alias_action
# "delete" on the version holding it, approved by reviewers other than that version's creator); admins always may.
protected_alias_deletion if {
	rpc == "DeleteRegisteredModelAlias"
	is_protected_alias(target_alias)
	not is_admin
}

alias_removal_approvers contains a.approver if {
	some a in approvals
	a.valid == true
	alias_removal_approval(a)
	is_string(a.alias)
	folded(a.alias) == folded(target_alias)
	is_string(a.approver)
	a.approver != ""
	a.approver != version_creator
	not alias_arrived_after(a)
}

# An approval of a removal is void once the alias came (back) to the version after it: the reviewer approved
# removing the alias as it was then, not a later move onto the version (from its gate-recorded history).
alias_arrived_after(a) if {
	some entry in model_version.stage_history
	is_string(entry.alias)
	folded(entry.alias) == folded(target_alias)
	not entry.removed == true
	is_number(entry.at)
	entry.at > a.at
}

alias_removal_needed := alias_approvals_needed(alias_rule(target_alias))

registry_violations contains violation(
	"registry.delete_protected_alias",
	sprintf("only %s, with %v approval(s) of its removal, or admins may delete the protected alias %s of %s", [concat(" or ", [role_label(r) | some r in alias_set_by(alias_rule(target_alias))]), alias_removal_needed, target_alias, model_name]),
) if {
	protected_alias_deletion
	not may_set_alias(alias_rule(target_alias))
}

registry_violations contains violation(
	"approvals.required",
	sprintf("version %s of %s, which holds the alias %s, has %v of the %v approvals of the alias's removal required from reviewers other than its creator (request it with to_alias %s and alias_action \"delete\")", [version_label, model_name, target_alias, count(alias_removal_approvers), alias_removal_needed, target_alias]),
) if {
	protected_alias_deletion
	may_set_alias(alias_rule(target_alias))
	count(alias_removal_approvers) < alias_removal_needed
}

registry_violations contains violation(
	"approvals.unknown_creator",
	sprintf("version %s of %s, which holds the alias %s, has no recorded creator (registered before the gate?), so approvals of the alias's removal cannot be checked; an admin may delete it", [version_label, model_name, target_alias]),
) if {
	protected_alias_deletion
	may_set_alias(alias_rule(target_alias))
	version_creator == null
}

# A governed alias that needs no approvals (challenger): whoever may move it may delete it.
registry_violations contains violation(
	"registry.delete_governed_alias",
	sprintf("only %s or admins may delete the alias %s of %s", [concat(" or ", [role_label(r) | some r in alias_set_by(rule)]), target_alias, model_name]),
) if {
	rpc == "DeleteRegisteredModelAlias"
	is_governed_alias(target_alias)
	not is_protected_alias(target_alias)
	rule := alias_rule(target_alias)
	not may_set_alias(rule)
	not is_admin
}

# ---------------------------------------------------------------------------------------------------------------
# Stage transitions that are not promotions
# ---------------------------------------------------------------------------------------------------------------

canonical_stages := {"None", "Staging", "Production", "Archived"}

# The gate canonicalises valid stages; anything else is refused here rather than trusted to MLflow's validation.
violations contains violation(
	"transition.unknown_stage",
	sprintf("%q is not an MLflow stage (None, Staging, Production or Archived)", [target_stage]),
) if {
	rpc == "TransitionModelVersionStage"
	not target_stage in canonical_stages
}

# Taking a version out of Production changes what serves traffic: CI does it as part of a release, on-call during an
# incident, admins for clean-up.
violations contains violation(
	"production.demote",
	sprintf("only CI, on-call or admins may move version %s of %s out of Production", [version_label, model_name]),
) if {
	rpc == "TransitionModelVersionStage"
	current_stage == "Production"
	target_stage != "Production"
	not is_ci
	not is_oncall
	not is_admin
}

# ---------------------------------------------------------------------------------------------------------------
# Transition-request workflow. The gate records an approval only after this policy allowed it, so an approval in
# resource.approvals is known to come from a reviewer who is not the version's creator (promotion.rego counts them).
# CreateTransitionRequest and CreateComment are open to every engineer (governed_mutations, no further rule).
# ---------------------------------------------------------------------------------------------------------------

review_verbs := {"ApproveTransitionRequest": "approve", "RejectTransitionRequest": "reject"}

registry_violations contains violation(
	"approvals.reviewer_only",
	sprintf("only reviewers may %s transition requests", [review_verbs[rpc]]),
) if {
	review_verbs[rpc]
	not is_reviewer
}

# No self-approval: the creator is the gate's stamp, not a client-supplied field.
registry_violations contains violation(
	"approvals.self_approval",
	sprintf("you created version %s of %s, so you cannot approve it; ask another reviewer", [version_label, model_name]),
) if {
	rpc == "ApproveTransitionRequest"
	principal_sub == version_creator
}

# Cancelling a request is for whoever made it (target.creator, the request being cancelled), or an admin.
registry_violations contains violation(
	"transition_requests.cancel",
	"only the requester or an admin may cancel a transition request",
) if {
	rpc == "DeleteTransitionRequest"
	as_string(at(target, "creator")) != principal_sub
	not is_admin
}

# Comments belong to their authors: editing or deleting someone else's comment would rewrite the review record.
# resource.activity is the comment being acted on (the gate finds it from the comment id).
comment_verbs := {"UpdateComment": "edit", "DeleteComment": "delete"}

registry_violations contains violation(
	"comments.author_only",
	sprintf("only the author of a comment (or an admin) may %s it", [comment_verbs[rpc]]),
) if {
	comment_verbs[rpc]
	as_string(at(as_object(input_at(["resource", "activity"])), "user_id")) != principal_sub
	not is_admin
}
