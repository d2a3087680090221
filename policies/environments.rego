# Governed environments: promotion across registered models (MLflow's copy_model_version, e.g. dev.fraud-detector
# -> prod.fraud-detector). Creating a version in a governed environment is a promotion, whatever route creates it.
#
#   data.environments.governed: [{"models": "prod.*", "set_by": [role...], "approvals": n, "gate": bool,
#                                  "approvals_carry_over": bool}]
#   models     a registered model name, or a prefix ending in `*`; compared folded
#   set_by     roles that may create versions (and the registered model) there; default ["ci"]
#   approvals  valid approvals (for Production or a protected alias) from reviewers other than its creator, on the
#              version the new one is copied from (input.resource.lineage.copied_from); default 1
#   gate       the evaluation gate, judged on the run the lineage leads to; only false turns it off
#   approvals_carry_over
#              governed alias moves on a version of the environment also count the approvals of the version it
#              was copied from (default true)
package mlflow_gate

import rego.v1

environment_rules := e if {
	e := data.environments.governed
	is_array(e)
} else := []

environment_matches(pattern, name) if {
	is_string(pattern)
	not endswith(pattern, "*")
	lower(pattern) == folded(name)
}

environment_matches(pattern, name) if {
	is_string(pattern)
	endswith(pattern, "*")
	startswith(folded(name), lower(trim_suffix(pattern, "*")))
}

# The first rule whose pattern matches the model (rules are ordered: put specific names first).
environment_rule := r if {
	matching := [e | some e in environment_rules; is_object(e); environment_matches(e.models, model_name)]
	count(matching) > 0
	r := matching[0]
}

in_governed_environment if environment_rule

environment_set_by := s if {
	s := environment_rule.set_by
	is_array(s)
} else := ["ci"]

environment_approvals_needed := n if {
	n := environment_rule.approvals
	is_number(n)
	n >= 0
} else := 1

environment_version_create if {
	rpc == "CreateModelVersion"
	in_governed_environment
}

may_write_environment if {
	some r in environment_set_by
	holds_role(r)
}

environment_who := concat(" or ", [role_label(r) | some r in environment_set_by])

violations contains violation(
	"environment.set_by",
	sprintf("only %s may create versions in %s, a governed environment", [environment_who, model_name]),
) if {
	environment_version_create
	not may_write_environment
}

violations contains violation(
	"environment.set_by",
	sprintf("only %s may create the registered model %s, a governed environment", [environment_who, model_name]),
) if {
	rpc == "CreateRegisteredModel"
	in_governed_environment
	not may_write_environment
}

violations contains v if {
	environment_version_create
	not environment_rule.gate == false
	some v in gate_violations
}

# ---------------------------------------------------------------------------------------------------------------
# Approvals travel with the copy: they are looked up on the version it was copied from.
# ---------------------------------------------------------------------------------------------------------------

copied_from := c if {
	c := input.resource.lineage.copied_from
	is_object(c)
} else := null

copied_from_label := sprintf("version %v of %v", [copied_from.version, copied_from.name]) if copied_from != null

else := "(no registered version)"

copied_from_creator := c if {
	c := copied_from.created_by
	is_string(c)
	c != ""
} else := null

copied_approvers := {a.approver |
	some a in as_list(at(copied_from, "approvals"))
	a.valid == true
	approval_for_serving(a)
	is_string(a.approver)
	a.approver != ""
	a.approver != copied_from_creator
}

approval_for_serving(a) if {
	is_string(a.stage)
	lower(a.stage) == "production"
}

approval_for_serving(a) if {
	is_protected_alias(a.alias)
	not alias_removal_approval(a)
}

violations contains violation(
	"environment.copied_only",
	sprintf("versions in %s, a governed environment, must be copied from a reviewed registered version (source models:/<name>/<version> or models:/<name>@<alias>)", [model_name]),
) if {
	environment_version_create
	environment_approvals_needed > 0
	copied_from == null
}

violations contains violation(
	"approvals.required",
	sprintf("%s has %v of the %v approvals required (for Production or a protected alias, from reviewers other than its creator) to be copied into %s", [copied_from_label, count(copied_approvers), environment_approvals_needed, model_name]),
) if {
	environment_version_create
	copied_from != null
	count(copied_approvers) < environment_approvals_needed
}

violations contains violation(
	"approvals.unknown_creator",
	sprintf("%s has no recorded creator (registered before the gate?), so its approvals cannot be checked; register it again through the gate", [copied_from_label]),
) if {
	environment_version_create
	copied_from != null
	environment_approvals_needed > 0
	copied_from_creator == null
}

# A governed alias move on a version of the environment counts the approvals of the version it was copied from.
alias_approvers contains a if {
	governed_alias_move
	in_governed_environment
	not environment_rule.approvals_carry_over == false
	some a in copied_approvers
}

violations contains violation("environment.config", "environments.governed in data.json must be a list of objects with a string `models`") if {
	rpc in {"CreateModelVersion", "CreateRegisteredModel"}
	v := data.environments
	v != null
	not environment_rules_well_formed
}

environment_rules_well_formed if {
	rules := data.environments.governed
	is_array(rules)
	count([e | some e in rules; is_object(e); is_string(e.models)]) == count(rules)
}

# ---------------------------------------------------------------------------------------------------------------
# A copy comes only from registered models the caller may read.
# ---------------------------------------------------------------------------------------------------------------

# The gate follows a copy's source chain with its own credentials; each hop carries its registered model's
# permission facts (input.resource.lineage.hops[i].permissions, shaped as input.resource.permissions), and the
# caller's level on it is decided by permissions.rego's own functions, as for the request's object. A write whose
# lineage passes through a model the caller may not READ (a NO_PERMISSIONS grant, or a default of NO_PERMISSIONS
# without a grant) is refused, naming the hop; admins read everything.
lineage_hops := h if {
	h := input.resource.lineage.hops
	is_array(h)
} else := []

lineage_hop_grants(facts) := chain_grants(facts.chain, object.get(facts, "workspace", null))

lineage_hop_source(grants) := s if {
	sources := denying_grant_sources(grants)
	count(sources) > 0
	s := sources[0]
} else := "no grant lets them read it"

violations contains violation(
	"lineage.unreadable",
	sprintf("%s may not %s from version %v of the registered model \"%v\" (hop %d of its source chain %s): %s may not read that model (%s has %s there: %s); ask its owner or an admin for READ", [principal_sub, rpc_label, hop.version, hop.name, i + 1, lineage_source_label, principal_sub, principal_sub, permission_names[rank], lineage_hop_source(grants)]),
) if {
	not read_only
	some i, hop in lineage_hops
	facts := hop.permissions
	is_object(facts)
	facts.exists == true
	not is_string(facts.problem)
	is_array(facts.chain)
	grants := lineage_hop_grants(facts)
	rank := chain_rank(facts.chain, grants)
	rank < 1
}

violations contains violation(
	"lineage.unresolved",
	sprintf("the permissions on version %v of the registered model \"%v\" (hop %d of the source chain %s) cannot be checked: %s", [hop.version, hop.name, i + 1, lineage_source_label, lineage_hop_problem(hop)]),
) if {
	not read_only
	some i, hop in lineage_hops
	lineage_hop_problem(hop)
}

lineage_hop_problem(hop) := "the gate sent no permission facts for it" if {
	not is_object(hop.permissions)
} else := hop.permissions.problem if {
	is_string(hop.permissions.problem)
} else := "its registered model does not exist" if {
	not hop.permissions.exists == true
}

lineage_source_label := sprintf("from %v", [s]) if {
	s := input.resource.lineage.hops[0].source
	is_string(s)
} else := "of the version"
