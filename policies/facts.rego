# Facts: safe, typed views of the input document (version 1, see README.md) and of data.json.
#
# Why this file exists: the decision must always be defined, and regorus raises an evaluation error (which the gate
# turns into a denial with no useful reason) where OPA would merely be undefined, e.g. lower(null),
# `some x in "a string"`, startswith(5, "x"), object.get("a string", ...). And a function called with an undefined
# argument is itself undefined, which could make a denial silently vanish. So every other file reads the input and
# the data only through the facts below: they are always defined, never fail, and fall back to a neutral value
# ("", {}, [], null, false) when a field is missing or has the wrong type. Reason strings are built only from these
# values.
#
# Speed: these rules run on every request, so they read the input with plain references (a missing key, or a key
# looked up in a non-object, is undefined in regorus, never an error) and check the type inline. They do not call
# the helper functions below: in regorus each user-function call costs about 15 µs, more than a whole read's
# decision. The helpers stay for the rarely evaluated rules.
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

principal_sub := s if {
	s := input.principal.sub
	is_string(s)
} else := ""

authenticated if principal_sub != ""

rpc := s if {
	s := input.operation.rpc
	is_string(s)
} else := ""

rpc_label := rpc if rpc != ""

else := "(an operation without an rpc name)"

# Anything but an explicit `true` counts as mutating: a malformed operation is judged by the stricter rules.
read_only if input.operation.read_only == true

mutating if not read_only

server_side_job if input.operation.server_side_job == true

resource_type := s if {
	s := input.operation.resource_type
	is_string(s)
} else := ""

request_path := s if {
	s := input.request.path
	is_string(s)
} else := ""

request_body := b if {
	b := input.request.body
	is_object(b)
} else := {}

# ---------------------------------------------------------------------------------------------------------------
# Resource: the target and the registry facts from the gate's enrichment
# ---------------------------------------------------------------------------------------------------------------

target := t if {
	t := input.resource.target
	is_object(t)
} else := {}

# Canonical stage (None | Staging | Production | Archived); the gate canonicalises it. request.body.stage is raw
# and is never used.
target_stage := s if {
	s := target.stage
	is_string(s)
} else := ""

target_alias := s if {
	s := target.alias
	is_string(s)
} else := ""

model_version := v if {
	v := input.resource.model_version
	is_object(v)
} else := {}

registered_model := m if {
	m := input.resource.registered_model
	is_object(m)
} else := {}

current_stage := s if {
	s := model_version.current_stage
	is_string(s)
} else := ""

# Gate stamps: who registered the version (null for versions registered before the gate existed).
version_creator := c if {
	c := model_version.created_by
	is_string(c)
	c != ""
}

else := null

# The stored spelling first: on case-insensitive database collations `Fraud-Detector` reaches the same model as
# `fraud-detector`. The gate thresholds are looked up by its folded form (promotion.rego).
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
	v := model_version.version
	is_string(v)
	v != ""
} else := v if {
	n := model_version.version
	is_number(n)
	v := sprintf("%v", [n])
} else := v if {
	v := target.version
	is_string(v)
	v != ""
} else := v if {
	n := target.version
	is_number(n)
	v := sprintf("%v", [n])
} else := "?"

source_run := r if {
	r := input.resource.source_run
	is_object(r)
} else := {}

has_source_run if is_object(input.resource.source_run)

source_run_label := v if {
	v := source_run.run_id
	is_string(v)
	v != ""
} else := v if {
	n := source_run.run_id
	is_number(n)
	v := sprintf("%v", [n])
} else := "?"

approvals := a if {
	a := input.resource.approvals
	is_array(a)
} else := []

# ---------------------------------------------------------------------------------------------------------------
# Roles (data.roles.<role>: list of group names; a single string is accepted too). A missing role has no
# members, so a broken data file fails closed.
# ---------------------------------------------------------------------------------------------------------------

# Each role is looked up only when a rule asks for it (most requests need none or one), straight from the input and
# the data: `x in list` is false when the list is a string or a number, and `[_]` is undefined on a non-collection.
is_ci if role_member(data.roles.ci)

is_reviewer if role_member(data.roles.reviewer)

is_admin if role_member(data.roles.admin)

is_oncall if role_member(data.roles.oncall)

# `groups[_]` is undefined unless the principal's groups are a list; a role given as one string is accepted.
role_member(members) if {
	groups := input.principal.groups
	is_array(groups)
	not is_object(members)
	groups[_] in members
}

role_member(members) if {
	groups := input.principal.groups
	is_array(groups)
	is_string(members)
	groups[_] == members
}

# ---------------------------------------------------------------------------------------------------------------
# Configuration from data.json, with fail-closed defaults
# ---------------------------------------------------------------------------------------------------------------

operations_config := o if {
	o := data.operations
	is_object(o)
} else := {}

# The allow-list as a set, for tests and tooling.
engineer_mutations := {r | some r in as_list(at(operations_config, "engineer_mutations")); is_string(r)}

# What the request path uses: one membership test in the list as data.json has it (`in` is false for a string or
# a number, so a malformed list allows nothing), instead of building the sets above on every request.
engineer_mutation if {
	ops := operations_config.engineer_mutations
	not is_object(ops)
	rpc in ops
}

admin_mutation if {
	ops := operations_config.admin_mutations
	not is_object(ops)
	rpc in ops
}

production_config := p if {
	p := data.production
	is_object(p)
} else := {}

# Names and aliases compare folded: the gate maps every model name and alias of the resource to its folded form
# in input.folded (NFKC, case folding, zero-width and other default-ignorable characters removed), so `CHAMPION`,
# a full-width `ｃｈａｍｐｉｏｎ` and `cham<U+200B>pion` are all `champion`. Data keys are matched after lower(), so
# write them in lower case (non-ASCII keys in their folded form). A name the gate did not fold falls back to lower().
folded(s) := f if {
	f := input.folded[s]
	is_string(f)
} else := lower(s) if is_string(s)

else := ""

protected_aliases := {lower(a) | some a in aliases; is_string(a)} if {
	aliases := production_config.protected_aliases
	is_array(aliases)
} else := {"champion"}

# At least one approval, whatever the data says: a reviewed promotion is the point of this project.
min_approvals := n if {
	n := production_config.min_approvals
	is_number(n)
	n >= 1
} else := 1

shadow_rules := {r | some r in configured_shadow_rules; is_string(r)}

# Only an explicit `true` shadows the whole bundle; anything else (absent, "yes", 1) enforces.
shadow_all if data.shadow_all == true

configured_shadow_rules := s if {
	s := data.shadow_rules
	is_array(s)
} else := []
