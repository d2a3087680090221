# Promotion: the reason this project exists.
#
#   to Staging      any engineer, if the version passes its evaluation gate.
#   to Production   by stage transition: only the CI identity, only from Staging, the evaluation gate passes, and at
#                   least data.production.min_approvals reviewers other than the version's creator approved it. A
#                   transition must archive the previous Production version. Governed aliases (champion, ...) have
#                   their own rules per model in data.aliases (aliases.rego).
#   break-glass     on-call may put back a version that was in Production before, without new approvals and from any
#                   stage (the evaluation gate and archiving still apply); the decision then carries break_glass: true.
package mlflow_gate

import rego.v1

to_staging if {
	rpc == "TransitionModelVersionStage"
	target_stage == "Staging"
}

production_transition if {
	rpc == "TransitionModelVersionStage"
	target_stage == "Production"
}

production_promotion if production_transition

# ---------------------------------------------------------------------------------------------------------------
# Evaluation gate: facts of the version's source run against data.gates. Every failure is reported.
# ---------------------------------------------------------------------------------------------------------------

gates_config := g if {
	g := data.gates
	is_object(g)
} else := {}

gate_models := m if {
	m := gates_config.models
	is_object(m)
} else := {}

# The entries of data.gates.models for this model, keys matched after folding: `Fraud-Detector`, a full-width or a
# zero-width variant of `fraud-detector` gets the gate of `fraud-detector` (input.folded, see facts.rego).
model_gate_keys := {k |
	some k, _ in gate_models
	lower(k) == folded(gate_subject)
}

# A copy (a version whose source is another registered version, see input.resource.lineage) of a model without an
# entry of its own is gated as the model its lineage leads to: prod.fraud-detector copied from fraud-detector gets
# fraud-detector's thresholds. (A helper rule, not `some` in the else-chain: see model_gate_key.)
gate_subject := model_name if has_own_gate_entry

else := n if {
	n := input.resource.lineage.origin.name
	is_string(n)
	n != ""
} else := model_name

has_own_gate_entry if {
	some k, _ in gate_models
	lower(k) == folded(model_name)
}

# The data key of the entry in force, for messages. (No `some` in these else-chains: regorus 0.14.1's VM makes
# such a rule undefined when the body fails after the iteration, where the interpreter takes the else.)
model_gate_key := sort(model_gate_keys)[0] if count(model_gate_keys) == 1

else := model_name

# Models without an entry get the default gate only (required tags). Two keys for one model are a configuration
# error (gate_shape_errors), and neither applies.
model_gate := g if {
	count(model_gate_keys) == 1
	g := gate_models[model_gate_key]
	is_object(g)
} else := {}

default_gate := g if {
	g := gates_config["default"]
	is_object(g)
} else := {}

metric_gates := m if {
	m := model_gate.metrics
	is_object(m)
} else := {}

run_tags := t if {
	t := source_run.tags
	is_object(t)
} else := {}

run_metrics := m if {
	m := source_run.metrics
	is_object(m)
} else := {}

# Numbers in reasons: a fraction gets at least two decimals, as thresholds are usually written (0.8 prints 0.80;
# 0.815 and 1000 print as they are).
num(x) := concat("", [s, "0"]) if {
	s := sprintf("%v", [x])
	parts := split(s, ".")
	count(parts) == 2
	count(parts[1]) == 1
} else := sprintf("%v", [x])

gate_violations contains violation(
	"gate.source_run",
	sprintf("version %s of %s has no source run, so it cannot pass the evaluation gate", [version_label, model_name]),
) if {
	not has_source_run
	not lineage_chain_broken
}

# A source naming another registered version (models:/<name>/<version>, models:/<name>@<alias>) is followed by the
# gate, hop by hop, to the run it came from (input.resource.lineage.hops); a chain it could not follow (a missing
# version, a loop, too many hops, a hop in another run) fails the gate with the gate's reason.
lineage_chain_broken if is_string(input.resource.lineage.chain_error)

gate_violations contains violation(
	"gate.lineage_chain",
	sprintf("the source of version %s of %s cannot be traced to its run: %s", [version_label, model_name, input.resource.lineage.chain_error]),
) if lineage_chain_broken

# The source must be the run's artifact (or its logged model): a metric of run A says nothing about a model file
# registered from elsewhere with run_id A.
gate_violations contains violation(
	"gate.source_mismatch",
	sprintf("the source of version %s of %s does not belong to its run %s", [version_label, model_name, source_run_label]),
) if {
	has_source_run
	not input.resource.source_matches_run == true
	not lineage_chain_broken
}

# Located is not enough: the files must provably be the run owner's output, judged on facts no client can write
# (the gate's creator stamp on a logged model, the gate-stamped run owner). Anyone can log a model naming someone
# else's run as its source run.
gate_violations contains violation(
	"gate.lineage",
	sprintf("the lineage of version %s of %s cannot be verified: %s", [version_label, model_name, lineage_reason]),
) if {
	has_source_run
	input.resource.source_matches_run == true
	not input.resource.lineage.verified == true
}

lineage_reason := r if {
	r := input.resource.lineage.reason
	is_string(r)
} else := "the gate has no lineage facts for it"

gate_violations contains violation(
	"gate.required_tag",
	sprintf("run %s of %s version %s lacks the required tag %s", [source_run_label, model_name, version_label, tag]),
) if {
	has_source_run
	tags := default_gate.required_tags
	is_array(tags)
	tag := tags[_]
	is_string(tag)
	not run_tags[tag]
}

gate_violations contains violation(
	"gate.required_tag",
	sprintf("run %s of %s version %s lacks the required tag %s", [source_run_label, model_name, version_label, tag]),
) if {
	has_source_run
	tags := model_gate.required_tags
	is_array(tags)
	tag := tags[_]
	is_string(tag)
	not run_tags[tag]
}

# A missing metric fails the gate: no evidence is not a pass.
gate_violations contains violation(
	"gate.metric",
	sprintf("run %s of %s version %s has no metric %s, which its evaluation gate requires", [source_run_label, model_name, version_label, metric]),
) if {
	has_source_run
	some metric, _ in metric_gates
	not run_metrics[metric]
}

gate_violations contains violation(
	"gate.metric",
	sprintf("metric %s of run %s is not a number, so it cannot pass the gate for %s", [metric, source_run_label, model_name]),
) if {
	has_source_run
	some metric, _ in metric_gates
	# Iterate the run's metrics rather than look one up: on regorus' VM a lookup of a missing key with a loop-bound
	# key yields a value here, where the interpreter (rightly) fails the body; tests/policy_engines.rs checks this.
	some name, value in run_metrics
	name == metric
	not is_number(value)
}

gate_violations contains violation(
	"gate.metric",
	sprintf("%s %s is below the gate %s for %s", [metric, num(value), num(bound), model_name]),
) if {
	has_source_run
	some metric, spec in metric_gates
	bound := spec.min
	is_number(bound)
	value := run_metrics[metric]
	is_number(value)
	value < bound
}

gate_violations contains violation(
	"gate.metric",
	sprintf("%s %s is above the gate maximum %s for %s", [metric, num(value), num(bound), model_name]),
) if {
	has_source_run
	some metric, spec in metric_gates
	bound := spec.max
	is_number(bound)
	value := run_metrics[metric]
	is_number(value)
	value > bound
}

# A malformed threshold must not silently disable the gate: it fails closed and says what to fix.
gate_violations contains violation(
	"gate.config",
	sprintf("the evaluation gate for %s has a malformed entry for %s; fix gates.models in data.json", [model_name, metric]),
) if {
	some metric, spec in metric_gates
	not is_object(spec)
}

gate_violations contains violation(
	"gate.config",
	sprintf("the evaluation gate for %s has a malformed entry for %s; fix gates.models in data.json", [model_name, metric]),
) if {
	some metric, spec in metric_gates
	is_object(spec)
	bound := spec[key]
	key in {"min", "max"}
	not is_number(bound)
}

# The structure of data.gates itself: a typo must not switch the gate off.
gate_violations contains violation(
	"gate.config",
	"data.gates is missing or malformed, so no evaluation gate can pass; fix data.json",
) if not is_object(data.gates)

gate_violations contains violation("gate.config", sprintf("%s in data.json must be %s", [key, kind])) if {
	some [key, kind] in gate_shape_errors
}

# Each entry of data.gates that applies to this model, where present (null counts as absent), with its type. An
# entry the extraction above accepted is well formed, so the checks start from it: a valid configuration costs a
# count or a lookup per entry.
gate_shape_errors contains ["gates.default", "an object"] if {
	count(default_gate) == 0
	v := gates_config["default"]
	v != null
	not is_object(v)
}

gate_shape_errors contains ["gates.default.required_tags", "a list"] if {
	v := default_gate.required_tags
	v != null
	not is_array(v)
}

gate_shape_errors contains ["gates.models", "an object"] if {
	v := gates_config.models
	v != null
	not is_object(v)
}

gate_shape_errors contains [sprintf("gates.models.%s", [k]), "an object"] if {
	count(model_gate) == 0
	some k in model_gate_keys
	v := gate_models[k]
	v != null
	not is_object(v)
}

gate_shape_errors contains ["gates.models", sprintf("one entry per model (%s all match %s after folding)", [concat(", ", sort(model_gate_keys)), model_name])] if {
	count(model_gate_keys) > 1
}

gate_shape_errors contains [sprintf("gates.models.%s.required_tags", [model_gate_key]), "a list"] if {
	v := model_gate.required_tags
	v != null
	not is_array(v)
}

gate_shape_errors contains [sprintf("gates.models.%s.metrics", [model_gate_key]), "an object"] if {
	count(metric_gates) == 0
	v := model_gate.metrics
	v != null
	not is_object(v)
}

# `not run_tags[tag]`: a missing key, or a value of false (never sent by MLflow, whose tags are strings), fails
# the gate; "" and null count as present.

violations contains v if {
	to_staging
	some v in gate_violations
}

# ---------------------------------------------------------------------------------------------------------------
# Approvals: distinct approvers of a Production transition, other than the version's creator. Validity and the
# approver's reviewer role at approval time are the gate's to record (registry.rego allows only reviewers).
# ---------------------------------------------------------------------------------------------------------------

approvers := {a.approver |
	some a in approvals
	a.valid == true
	is_string(a.stage)
	lower(a.stage) == "production"
	is_string(a.approver)
	a.approver != ""
	a.approver != version_creator
}

# ---------------------------------------------------------------------------------------------------------------
# The normal route to Production: CI only, from Staging, approved. Break-glass (below) waives exactly these
# (`promotion_violations`); the evaluation gate and archive_existing_versions still apply to a rollback.
# ---------------------------------------------------------------------------------------------------------------

production_action := "transition to Production"

break_glass_hint := " (on-call break-glass applies only to versions that were in Production before)" if is_oncall

else := ""

promotion_violations contains violation(
	"production.ci_only",
	sprintf("only the CI service account may %s%s", [production_action, break_glass_hint]),
) if {
	production_promotion
	not is_ci
}

stage_label := current_stage if current_stage != ""

else := "no stage"

promotion_violations contains violation(
	"production.from_staging",
	sprintf("version %s of %s is in %s; only a Staging version may be promoted to Production", [version_label, model_name, stage_label]),
) if {
	production_transition
	current_stage != "Staging"
}

# The evaluation gate applies to every route to Production, break-glass included: a rollback target served before,
# so it passed its gate then; if it fails now, the data changed and a human should look (or shadow the gate rule).
violations contains v if {
	production_promotion
	some v in gate_violations
}

promotion_violations contains violation("approvals.required", msg) if {
	production_promotion
	count(approvers) < min_approvals
	msg := approvals_message
}

approvals_message := sprintf("version %s of %s has no approval from a reviewer other than its creator", [version_label, model_name]) if {
	min_approvals == 1
} else := sprintf("version %s of %s has %v of the %v approvals required from reviewers other than its creator", [version_label, model_name, count(approvers), min_approvals])

# Without the creator stamp (versions registered before the gate, or directly in MLflow) self-approval cannot be
# ruled out. Register the version again through the gate, or list this id in shadow_rules while migrating.
promotion_violations contains violation(
	"approvals.unknown_creator",
	sprintf("version %s of %s has no recorded creator (registered before the gate?), so its approvals cannot be checked; register it again through the gate", [version_label, model_name]),
) if {
	production_promotion
	version_creator == null
}

# ---------------------------------------------------------------------------------------------------------------
# Applies to every transition to Production, break-glass included: at most one version is ever in Production.
# ---------------------------------------------------------------------------------------------------------------

violations contains violation(
	"production.archive_existing",
	"transition to Production must set archive_existing_versions=true",
) if {
	production_transition
	not target.archive_existing_versions == true
}

# ---------------------------------------------------------------------------------------------------------------
# Break-glass rollback: on-call puts back a version that served before. "Served before" comes from the gate's own
# stamps: a stage transition to Production, or a move of a protected alias onto the version.
# ---------------------------------------------------------------------------------------------------------------

served_in_production if model_version.was_in_production == true

served_in_production if {
	history := model_version.stage_history
	not is_object(history)
	entry := history[_]
	alias := entry.alias
	is_protected_alias(alias)
	not entry.removed == true
}

break_glass_eligible if {
	production_promotion
	is_oncall
	served_in_production
}

violations contains v if {
	some v in promotion_violations
	not break_glass_eligible
}

break_glass_used if {
	count(promotion_violations) > 0
	break_glass_eligible
}
