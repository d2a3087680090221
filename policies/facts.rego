# Facts: safe, typed views of the input document (version 1, see README.md) and of data.json.
#
# Why this file exists: the decision must always be defined, and regorus raises an evaluation error (which the gate
# turns into a denial with no useful reason) where OPA would merely be undefined, e.g. lower(null),
# `some x in "a string"`, startswith(5, "x"), object.get("a string", ...). And a function called with an undefined
# argument is itself undefined, which could make a denial silently vanish. So every other file reads the input and
# the data only through the facts below: they are always defined, never fail, and fall back to a neutral value
# ("", {}, [], null, false) when a field is missing or has the wrong type. Reason strings are built only from these
# values.
package mlflow_gate

import rego.v1

# ---------------------------------------------------------------------------------------------------------------
# Type helpers (call them only with defined arguments: use `at` and `input_at` to read fields)
# ---------------------------------------------------------------------------------------------------------------

as_list(x) := x if is_array(x)

else := x if is_set(x)

else := []

as_object(x) := x if is_object(x)

else := {}

as_string(x) := x if is_string(x)

else := ""

# Versions arrive as strings ("7"); a number is rendered the same way. Undefined for anything else.
as_label(x) := x if {
	is_string(x)
	x != ""
}

else := sprintf("%v", [x]) if is_number(x)

input_doc := i if {
	i := input
	is_object(i)
} else := {}

# The value at `path` (a list of keys) in the input, or null.
input_at(path) := object.get(input_doc, path, null)

# The value of `key` in `x` if `x` is an object, or null.
at(x, key) := object.get(as_object(x), key, null)

violation(id, reason) := {"id": id, "reason": reason}

# ---------------------------------------------------------------------------------------------------------------
# Principal and operation
# ---------------------------------------------------------------------------------------------------------------

principal_sub := as_string(input_at(["principal", "sub"]))

authenticated if principal_sub != ""

principal_groups := {g | some g in as_list(input_at(["principal", "groups"])); is_string(g)}

rpc := as_string(input_at(["operation", "rpc"]))

rpc_label := rpc if rpc != ""

else := "(an operation without an rpc name)"

# Anything but an explicit `true` counts as mutating: a malformed operation is judged by the stricter rules.
read_only if input_at(["operation", "read_only"]) == true

mutating if not read_only

server_side_job if input_at(["operation", "server_side_job"]) == true

resource_type := as_string(input_at(["operation", "resource_type"]))

request_path := as_string(input_at(["request", "path"]))

request_body := as_object(input_at(["request", "body"]))

# ---------------------------------------------------------------------------------------------------------------
# Resource: the target and the registry facts from the gate's enrichment
# ---------------------------------------------------------------------------------------------------------------

target := as_object(input_at(["resource", "target"]))

# Canonical stage (None | Staging | Production | Archived); the gate canonicalises it. request.body.stage is raw
# and is never used.
target_stage := as_string(at(target, "stage"))

target_alias := as_string(at(target, "alias"))

model_version := as_object(input_at(["resource", "model_version"]))

registered_model := as_object(input_at(["resource", "registered_model"]))

current_stage := as_string(at(model_version, "current_stage"))

# Gate stamps: who registered the version (null for versions registered before the gate existed).
version_creator := c if {
	c := model_version.created_by
	is_string(c)
	c != ""
}

else := null

# The stored spelling first: on case-insensitive database collations `Fraud-Detector` reaches the same model as
# `fraud-detector`, and the gate thresholds are keyed on the stored name.
model_name := n if {
	n := model_version.name
	is_string(n)
	n != ""
} else := n if {
	n := registered_model.name
	is_string(n)
	n != ""
} else := n if {
	n := target.name
	is_string(n)
	n != ""
} else := "(unnamed model)"

version_label := v if {
	v := as_label(at(model_version, "version"))
} else := v if {
	v := as_label(at(target, "version"))
} else := "?"

source_run := as_object(input_at(["resource", "source_run"]))

has_source_run if is_object(input_at(["resource", "source_run"]))

source_run_label := v if {
	v := as_label(at(source_run, "run_id"))
} else := "?"

approvals := as_list(input_at(["resource", "approvals"]))

# ---------------------------------------------------------------------------------------------------------------
# Roles (data.roles.<role>: list of group names; a single string is accepted too). A missing role has no
# members, so a broken data file fails closed.
# ---------------------------------------------------------------------------------------------------------------

roles_config := r if {
	r := data.roles
	is_object(r)
} else := {}

role_groups(role) := {v} if {
	v := at(roles_config, role)
	is_string(v)
} else := {g | some g in as_list(at(roles_config, role)); is_string(g)}

has_role(role) if {
	some g in role_groups(role)
	g in principal_groups
}

is_ci if has_role("ci")

is_reviewer if has_role("reviewer")

is_admin if has_role("admin")

is_oncall if has_role("oncall")

# ---------------------------------------------------------------------------------------------------------------
# Configuration from data.json, with fail-closed defaults
# ---------------------------------------------------------------------------------------------------------------

operations_config := o if {
	o := data.operations
	is_object(o)
} else := {}

engineer_mutations := {r | some r in as_list(at(operations_config, "engineer_mutations")); is_string(r)}

admin_mutations := {r | some r in as_list(at(operations_config, "admin_mutations")); is_string(r)}

production_config := p if {
	p := data.production
	is_object(p)
} else := {}

# Aliases compare case-insensitively: on case-insensitive collations `CHAMPION` is `champion`.
protected_aliases := {lower(a) | some a in aliases; is_string(a)} if {
	aliases := at(production_config, "protected_aliases")
	is_array(aliases)
} else := {"champion"}

is_protected_alias(alias) if {
	is_string(alias)
	lower(alias) in protected_aliases
}

# At least one approval, whatever the data says: a reviewed promotion is the point of this project.
min_approvals := max([1, n]) if {
	n := at(production_config, "min_approvals")
	is_number(n)
} else := 1

shadow_rules := {r | some r in configured_shadow_rules; is_string(r)}

# Only an explicit `true` shadows the whole bundle; anything else (absent, "yes", 1) enforces.
shadow_all if data.shadow_all == true

configured_shadow_rules := s if {
	s := data.shadow_rules
	is_array(s)
} else := []
