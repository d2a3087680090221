# Alias-first promotion: governed aliases, per registered model, without stages (MLflow's current guidance).
#
#   data.aliases.default.<alias>          the rule of a governed alias for every model
#   data.aliases.models.<model>.<alias>   a model's own rule (replaces the default for that alias; null: not governed)
#
# A rule: {"set_by": [role...], "approvals": n, "gate": bool, "stages": [stage...] | null}
#   set_by     roles of data.roles that may move the alias ("engineer": any authenticated principal); default ["ci"]
#   approvals  distinct valid approvals from reviewers other than the version's creator; default 0
#   gate       whether the model's evaluation gate applies (only an explicit false turns it off)
#   stages     the stages the version must be in (null or absent: any stage, stages are not needed)
#
# Aliases listed in data.production.protected_aliases without a rule keep the stage-based rule of earlier bundles:
# CI only, production.min_approvals approvals, the gate, and the version in Staging or Production.
#
# Break-glass: on-call may put a governed alias back on a version that held it before (a gate-recorded move of the
# alias onto it) or that served in Production: set_by, approvals and stages are waived, the gate is not.
package mlflow_gate

import rego.v1

alias_config := a if {
	a := data.aliases
	is_object(a)
} else := {}

alias_default_rules := r if {
	r := alias_config["default"]
	is_object(r)
} else := {}

alias_models := m if {
	m := alias_config.models
	is_object(m)
} else := {}

# The entry of data.aliases.models for this model, matched after folding as gates.models is.
alias_model_keys := {k |
	some k, _ in alias_models
	lower(k) == folded(model_name)
}

alias_model_rules := r if {
	count(alias_model_keys) == 1
	r := alias_models[sort(alias_model_keys)[0]]
	is_object(r)
} else := {}

legacy_alias_rule := {"set_by": ["ci"], "approvals": min_approvals, "gate": true, "stages": ["Staging", "Production"]}

# Every alias rule for this model, keyed by the lower-cased alias: model rules over default rules over the legacy
# protected aliases. A null model rule removes the alias from governance for that model.
alias_rules := object.union(
	object.union({a: legacy_alias_rule | some a in protected_aliases}, {lower(a): r | some a, r in alias_default_rules}),
	{lower(a): r | some a, r in alias_model_rules},
)

governed_alias_rules := {a: r | some a, r in alias_rules; r != null}

is_governed_alias(alias) if {
	is_string(alias)
	governed_alias_rules[folded(alias)]
}

alias_rule(alias) := r if {
	r := governed_alias_rules[folded(alias)]
	is_object(r)
} else := {}

# Roles allowed to move an alias (a malformed or missing set_by means CI only).
alias_set_by(rule) := s if {
	s := rule.set_by
	is_array(s)
} else := ["ci"]

alias_approvals_needed(rule) := n if {
	n := rule.approvals
	is_number(n)
	n >= 0
} else := 0

alias_needs_gate(rule) if not rule.gate == false

# A governed alias that needs approvals means "serving": deleting it, or a version holding it, is admin-only.
is_protected_alias(alias) if alias_approvals_needed(alias_rule(alias)) > 0

role_labels := {"ci": "the CI service account", "reviewer": "reviewers", "admin": "admins", "oncall": "on-call", "engineer": "engineers"}

role_label(r) := role_labels[r] if is_string(r)

else := sprintf("%v", [r])

holds_role(r) if r == "engineer"

holds_role(r) if {
	is_string(r)
	r != "engineer"
	role_member(data.roles[r])
}

may_set_alias(rule) if {
	some r in alias_set_by(rule)
	holds_role(r)
}

governed_alias_move if {
	rpc == "SetRegisteredModelAlias"
	is_governed_alias(target_alias)
}

target_alias_rule := alias_rule(target_alias)

# Approvals that count for an alias move: valid, for this alias (or for Production, when a team moves from stages to
# aliases), from a reviewer other than the creator.
alias_approvers contains a.approver if {
	some a in approvals
	a.valid == true
	approval_targets_alias(a, target_alias)
	is_string(a.approver)
	a.approver != ""
	a.approver != version_creator
}

approval_targets_alias(a, alias) if {
	is_string(a.alias)
	folded(a.alias) == folded(alias)
	not alias_removal_approval(a)
}

# An approval of an alias's removal (a request with to_alias and alias_action "delete") never counts for a move.
alias_removal_approval(a) if a.alias_action == "delete"

approval_targets_alias(a, _) if {
	is_string(a.stage)
	lower(a.stage) == "production"
}

alias_break_glass_hint := " (on-call break-glass applies only to versions that held it before)" if is_oncall

else := ""

promotion_violations contains violation(
	"alias.set_by",
	sprintf("only %s may move the alias %s of %s%s", [concat(" or ", [role_label(r) | some r in alias_set_by(target_alias_rule)]), target_alias, model_name, alias_break_glass_hint]),
) if {
	governed_alias_move
	not may_set_alias(target_alias_rule)
}

promotion_violations contains violation(
	"alias.stage",
	sprintf("version %s of %s is in %s; the alias %s may point only to a version in %s", [version_label, model_name, stage_label, target_alias, concat(" or ", [s | some s in stages; is_string(s)])]),
) if {
	governed_alias_move
	stages := target_alias_rule.stages
	is_array(stages)
	not current_stage in stages
}

promotion_violations contains violation("approvals.required", msg) if {
	governed_alias_move
	needed := alias_approvals_needed(target_alias_rule)
	count(alias_approvers) < needed
	msg := alias_approvals_message(needed)
}

alias_approvals_message(needed) := msg if {
	needed == 1
	msg := sprintf("version %s of %s has no approval from a reviewer other than its creator for the alias %s", [version_label, model_name, target_alias])
} else := sprintf("version %s of %s has %v of the %v approvals required from reviewers other than its creator for the alias %s", [version_label, model_name, count(alias_approvers), needed, target_alias])

promotion_violations contains violation(
	"approvals.unknown_creator",
	sprintf("version %s of %s has no recorded creator (registered before the gate?), so its approvals cannot be checked; register it again through the gate", [version_label, model_name]),
) if {
	governed_alias_move
	alias_approvals_needed(target_alias_rule) > 0
	version_creator == null
}

violations contains v if {
	governed_alias_move
	alias_needs_gate(target_alias_rule)
	some v in gate_violations
}

# A version that held the alias before: a gate-recorded move of this alias onto it.
held_alias_before(alias) if {
	history := model_version.stage_history
	not is_object(history)
	entry := history[_]
	is_string(entry.alias)
	folded(entry.alias) == folded(alias)
	not entry.removed == true
}

break_glass_eligible if {
	governed_alias_move
	is_oncall
	held_alias_before(target_alias)
}

break_glass_eligible if {
	governed_alias_move
	is_oncall
	is_protected_alias(target_alias)
	served_in_production
}

# ---------------------------------------------------------------------------------------------------------------
# Malformed rules fail closed and say what to fix.
# ---------------------------------------------------------------------------------------------------------------

alias_config_errors contains ["aliases", "an object"] if {
	v := data.aliases
	v != null
	not is_object(v)
}

alias_config_errors contains [sprintf("aliases.%s.%s", [where, a]), "an object (or null in aliases.models)"] if {
	some where, rules in {"default": alias_default_rules, sprintf("models.%s", [model_name]): alias_model_rules}
	some a, r in rules
	not is_object(r)
	not null_model_rule(where, r)
}

null_model_rule(where, r) if {
	r == null
	where != "default"
}

alias_config_errors contains [sprintf("aliases.*.%s.%s", [a, field]), kind] if {
	some a, r in governed_alias_rules
	is_object(r)
	some [field, kind] in [["set_by", "a list of role names"], ["approvals", "a number of at least 0"], ["gate", "true or false"], ["stages", "a list of stages or null"]]
	v := r[field]
	not alias_field_ok(field, v)
}

alias_field_ok("set_by", v) if is_array(v)

alias_field_ok("approvals", v) if {
	is_number(v)
	v >= 0
}

alias_field_ok("gate", v) if is_boolean(v)

alias_field_ok("stages", v) if is_array(v)

alias_field_ok("stages", v) if v == null

violations contains violation("alias.config", sprintf("%s in data.json must be %s", [key, kind])) if {
	rpc in {"SetRegisteredModelAlias", "DeleteRegisteredModelAlias"}
	some [key, kind] in alias_config_errors
}
