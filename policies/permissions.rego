# Resource permissions: who may read, change and manage which experiment, run, registered model (with its versions
# and aliases), logged model, trace, evaluation dataset and scorer, through REST and GraphQL.
#
# The gate hands the facts (input.operation.permission: the level the route needs, from the route table;
# input.resource.permissions: the object's chain, the object first and its parents after it, each with its stamped
# creator and its grants tag, in the request's workspace). This file decides, with everything adjustable in
# data.permissions (README.md, "Resource permissions"):
#   default   the level of an authenticated caller without a grant          (default: READ)
#   type_default  per object kind, a default that replaces `default` for it   (default: gateway_endpoint USE)
#   creator   the level of an object's creator, on it and on its children    (default: MANAGE; EDIT is one edit away)
#   create    per object kind, the groups that may create one ("*": anyone) (default: everyone)
#   patterns  grants by name pattern: {"user"|"group", "type", "name" (glob), "level", "workspace"?}
# Levels, weakest first: NO_PERMISSIONS < READ < USE < EDIT < MANAGE. An applicable NO_PERMISSIONS grant (on the
# object, a parent, or by pattern) beats every other grant, inherited or not, and the creator's level; admins have
# MANAGE everywhere. A logged model's or trace's own grants naming the caller override what it inherits
# (granting_chain).
package mlflow_gate

import rego.v1

permission_ranks := {"NO_PERMISSIONS": 0, "READ": 1, "USE": 2, "EDIT": 3, "MANAGE": 4}

permission_names := ["NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE"]

# The level a route needs, as a rank; undefined for routes without one ("none", "create", "filter").
needed_ranks := {"read": 1, "use": 2, "edit": 3, "manage": 4}

permission_need := p if {
	p := input.operation.permission
	is_string(p)
} else := "none"

permissions_config := c if {
	c := data.permissions
	is_object(c)
} else := {}

perm_facts := f if {
	f := input.resource.permissions
	is_object(f)
} else := {}

perm_chain := c if {
	c := perm_facts.chain
	is_array(c)
} else := []

perm_problem := p if {
	p := perm_facts.problem
	is_string(p)
} else := ""

perm_exists if perm_facts.exists == true

principal_groups := g if {
	g := input.principal.groups
	is_array(g)
} else := []

# A configured level as a rank; a missing or misspelt one counts as NO_PERMISSIONS (fail closed).
config_rank(key) := r if {
	r := permission_ranks[permissions_config[key]]
} else := 0

# ---------------------------------------------------------------------------------------------------------------
# The grants that apply to the caller
# ---------------------------------------------------------------------------------------------------------------

# The caller's grants on a chain of links (the object first, its parents after it) in a workspace: one computation
# for the request's own object (input.resource.permissions) and for any other chain the policy judges (the
# registered models of a copy's lineage, input.resource.lineage.hops[i].permissions).
chain_grants(chain, workspace) := (user_grants | group_grants) | pattern_grants if {
	user_grants := {{"level": level, "source": sprintf("a grant to %s on the %s %s", [principal_sub, node.type, node_label(node)])} |
		some node in chain
		level := node.grants.users[principal_sub]
		is_string(level)
	}
	group_grants := {{"level": level, "source": sprintf("a grant to the group %s on the %s %s", [group, node.type, node_label(node)])} |
		some node in chain
		some group in principal_groups
		is_string(group)
		level := node.grants.groups[group]
		is_string(level)
	}
	pattern_grants := {{"level": p.level, "source": sprintf("the pattern grant %s on %s %s", [pattern_who(p), p.type, p.name])} |
		some p in permission_patterns
		pattern_for_caller(p)
		some node in chain
		node.type == p.type
		is_string(node.name)
		glob.match(p.name, null, node.name)
		pattern_applies_in(p, workspace)
	}
}

applicable_grants := chain_grants(granting_chain(perm_chain), object.get(perm_facts, "workspace", null))

# Logged models and traces can have grants of their own. When one names the caller (its sub or one of its groups),
# those grants replace, for that caller, everything the object inherits from its experiment (the experiment's grants
# and pattern grants): a logged model's READ lets a caller whom the experiment denies see that one model, and a
# trace's NO_PERMISSIONS hides it from a team mate whom the experiment grants EDIT. The creator's level still applies
# (unless a NO_PERMISSIONS applies). Runs keep inheriting with their experiment (a deny on either wins).
own_grant_types := {"logged_model", "trace"}

node_names_caller(node) if is_string(node.grants.users[principal_sub])

node_names_caller(node) if {
	some group in principal_groups
	is_string(node.grants.groups[group])
}

overrides_parents(chain) if {
	count(chain) > 1
	chain[0].type in own_grant_types
	node_names_caller(chain[0])
}

# The links whose grants apply to the caller: the object alone when its own grants override, else the whole chain.
granting_chain(chain) := [chain[0]] if overrides_parents(chain)

granting_chain(chain) := chain if not overrides_parents(chain)

permission_patterns := [p |
	some p in configured_patterns
	is_string(p.type)
	is_string(p.name)
	is_string(p.level)
]

# data.permissions.patterns as a list (as_list(at(permissions_config, "patterns")), read inline: every request
# that checks a permission reads it, and a function call costs more than the rest of a plain read's decision).
configured_patterns := p if {
	p := permissions_config.patterns
	is_array(p)
} else := p if {
	p := permissions_config.patterns
	is_set(p)
} else := []

pattern_for_caller(p) if p.user == principal_sub

pattern_for_caller(p) if {
	some group in principal_groups
	p.group == group
}

pattern_who(p) := sprintf("to %s", [p.user]) if is_string(p.user)

else := sprintf("to the group %s", [p.group])

# A pattern with a workspace applies only there; one without applies everywhere.
pattern_in_workspace(p) if pattern_applies_in(p, object.get(perm_facts, "workspace", null))

pattern_applies_in(p, _) if not "workspace" in object.keys(p)

pattern_applies_in(p, workspace) if p.workspace == workspace

node_label(node) := sprintf("\"%s\"", [node.name]) if {
	node.type == "registered_model"
	is_string(node.name)
} else := sprintf("\"%s\" (%v)", [node.name, node.id]) if {
	is_string(node.name)
} else := sprintf("%v", [node.id])

# ---------------------------------------------------------------------------------------------------------------
# The caller's level on the object, and why
# ---------------------------------------------------------------------------------------------------------------

# Whether the caller created a link of the chain (the creator's level applies to it and its children).
chain_owned(chain) if {
	principal_sub != ""
	some node in chain
	node.owner == principal_sub
}

grants_deny(grants) if {
	some g in grants
	g.level == "NO_PERMISSIONS"
}

# The default level on a chain: its root's kind's (data.permissions.type_default.<kind>: AI-gateway endpoints are
# invoked by default, which READ does not cover), else data.permissions.default; a misspelt level is NO_PERMISSIONS.
# (Written without `else`: regorus' bytecode VM mis-evaluated the `else` forms of these rules.)
chain_default_rank(chain) := object.get(permission_ranks, default_level_for(chain_root_kind(chain)), 0)

type_defaults := t if {
	t := permissions_config.type_default
	is_object(t)
} else := {}

default_level_for(kind) := object.get(type_defaults, kind, object.get(permissions_config, "default", ""))

# The type of a chain's last link ("" for an empty chain).
chain_root_kind(chain) := concat("", [node.type | some i, node in chain; i == count(chain) - 1; is_string(node.type)])

chain_granted_ranks(chain, grants) := ({chain_default_rank(chain)} | {config_rank("creator") | chain_owned(chain)}) | {r |
	some g in grants
	r := permission_ranks[g.level]
}

# The caller's level on a chain, as a rank, given chain_grants(chain, its workspace).
chain_rank(chain, grants) := 4 if is_admin

else := 0 if grants_deny(grants)

else := max(chain_granted_ranks(chain, grants))

caller_owns if chain_owned(perm_chain)

permission_rank := chain_rank(perm_chain, applicable_grants)

permission_level := permission_names[permission_rank]

# The source of the caller's level, for the reason. (The grant sources are collected first: regorus' bytecode VM
# mis-evaluates an `else` branch that iterates with `some`.)
denying_grant_sources(grants) := sort([g.source | some g in grants; g.level == "NO_PERMISSIONS"])

denying_sources := denying_grant_sources(applicable_grants)

ranking_sources := sort([g.source | some g in applicable_grants; permission_ranks[g.level] == permission_rank])

permission_source := "as an admin" if is_admin

else := denying_sources[0] if count(denying_sources) > 0

else := "as its creator" if {
	caller_owns
	config_rank("creator") == permission_rank
}

else := ranking_sources[0] if count(ranking_sources) > 0

else := "the default for authenticated users without a grant"

# The object as the reason names it: the object itself, and its parent when it inherits.
perm_object_label := sprintf("the %s %s in the %s %s", [first.type, node_label(first), last.type, node_label(last)]) if {
	count(perm_chain) > 1
	first := perm_chain[0]
	last := perm_chain[count(perm_chain) - 1]
} else := sprintf("the %s %s", [perm_chain[0].type, node_label(perm_chain[0])]) if {
	count(perm_chain) > 0
} else := "the object"

perm_owner_hint := sprintf("; ask its owner %s or an admin for a grant", [o]) if {
	o := perm_chain[count(perm_chain) - 1].owner
	is_string(o)
} else := "; ask an admin for a grant"

# Reads are the hot path: main.rego's fast read checks this one fact before skipping the rules.
read_permitted if {
	not graphql_closed
	object_read_permitted
	objects_read_permitted
}

objects_read_permitted if count(perm_objects) == 0

objects_read_permitted if {
	count(perm_objects) > 0
	count(objects_denied) == 0
	count(objects_unresolved) == 0
}

object_read_permitted if not needed_ranks[permission_need]

object_read_permitted if {
	perm_problem == ""
	not perm_exists
}

object_read_permitted if {
	perm_problem == ""
	plainly_permitted
}

object_read_permitted if {
	perm_problem == ""
	not plainly_permitted
	permission_rank >= needed_ranks[permission_need]
}

# The cheap allow path (most reads, and a creator's writes): the configured default already reaches the level the
# route needs (or the creator's level does, and the caller created a link of the chain), and no NO_PERMISSIONS can
# apply to the caller (none on any link of the chain for its sub or one of its groups, and no NO_PERMISSIONS pattern
# for it, wherever it matches). Then permission_rank, the highest of the default, creator and grant levels unless a
# NO_PERMISSIONS applies, is at least that level: the full computation, with its grant sources and pattern matches,
# runs only when this does not hold (and the sources only for a denial's reason). permissions_test.rego checks that
# both agree.
plainly_permitted if {
	needed_ranks[permission_need] <= default_rank
	not kind_has_own_default
	not caller_denied_on_chain
	not caller_denied_by_pattern
}

plainly_permitted if {
	needed_ranks[permission_need] <= creator_rank
	caller_created_a_link
	not caller_denied_on_chain
	not caller_denied_by_pattern
}

# config_rank("creator") and chain_owned(perm_chain), read inline.
creator_rank := r if {
	r := permission_ranks[permissions_config.creator]
} else := 0

caller_created_a_link if {
	principal_sub != ""
	perm_chain[_].owner == principal_sub
}

# config_rank("default"), read inline (see configured_patterns). Not for an object whose kind has a default of its
# own (type_default: AI-gateway endpoints), which takes the full computation (chain_default_rank).
default_rank := r if {
	r := permission_ranks[permissions_config.default]
} else := 0

kind_has_own_default if type_defaults[perm_chain[count(perm_chain) - 1].type]

caller_denied_on_chain if {
	some node in perm_chain
	node.grants.users[principal_sub] == "NO_PERMISSIONS"
}

caller_denied_on_chain if {
	some node in perm_chain
	some group in principal_groups
	node.grants.groups[group] == "NO_PERMISSIONS"
}

caller_denied_by_pattern if {
	some p in configured_patterns
	p.level == "NO_PERMISSIONS"
	p.user == principal_sub
}

caller_denied_by_pattern if {
	some p in configured_patterns
	p.level == "NO_PERMISSIONS"
	p.group in principal_groups
}

# GraphQL (/graphql) is checked like REST: the gate admits only the root fields whose objects it can name, hands
# them as resource.permissions.objects (every one needs READ, below) and cuts the lists of the answer (runs, model
# versions) with the search filter. data.permissions.graphql "admins" closes /graphql to everyone else all the same.
graphql_closed if {
	resource_type == "graphql"
	permissions_config.graphql == "admins"
	not is_admin
}

violations contains violation(
	"permissions.graphql",
	"only admins may use /graphql here (data.permissions.graphql is \"admins\"); use the REST API",
) if graphql_closed

# ---------------------------------------------------------------------------------------------------------------
# Routes naming several objects: run_ids (metric histories), trace_ids (batch get), experiment_ids (trace
# metrics), and the objects of a GraphQL query. resource.permissions.objects holds one entry per object, each like
# a single object's facts ({"anchor", "id", "exists", "problem", "chain"}); every one needs the route's level, so
# one the caller may not reach refuses the whole request (MLflow answers these in one piece).
# ---------------------------------------------------------------------------------------------------------------

perm_objects := o if {
	o := perm_facts.objects
	is_array(o)
} else := []

objects_denied contains sprintf(
	"%s may not %s %s: that needs %s, and %s has %s (%s)%s",
	[principal_sub, rpc, chain_label(obj.chain), upper(permission_need), principal_sub, permission_names[rank], chain_source(obj.chain, grants, rank), chain_owner_hint(obj.chain)],
) if {
	needed := needed_ranks[permission_need]
	some obj in perm_objects
	obj.exists == true
	not is_string(obj.problem)
	grants := chain_grants(obj.chain, object.get(perm_facts, "workspace", null))
	rank := chain_rank(obj.chain, grants)
	rank < needed
}

objects_unresolved contains obj.problem if {
	needed_ranks[permission_need]
	some obj in perm_objects
	is_string(obj.problem)
}

violations contains violation("permissions.insufficient", reason) if {
	some reason in objects_denied
}

violations contains violation("permissions.unresolved", problem) if {
	some problem in objects_unresolved
}

chain_label(chain) := sprintf("the %s %s in the %s %s", [first.type, node_label(first), last.type, node_label(last)]) if {
	count(chain) > 1
	first := chain[0]
	last := chain[count(chain) - 1]
} else := sprintf("the %s %s", [chain[0].type, node_label(chain[0])]) if {
	count(chain) > 0
} else := "the object"

chain_owner_hint(chain) := sprintf("; ask its owner %s or an admin for a grant", [o]) if {
	o := chain[count(chain) - 1].owner
	is_string(o)
} else := "; ask an admin for a grant"

ranking_grant_sources(grants, rank) := sort([g.source | some g in grants; permission_ranks[g.level] == rank])

# The source of a level on a chain, as permission_source words it for the request's own object.
chain_source(chain, grants, rank) := "as an admin" if is_admin

else := denying_grant_sources(grants)[0] if {
	count(denying_grant_sources(grants)) > 0
} else := "as its creator" if {
	chain_owned(chain)
	config_rank("creator") == rank
} else := ranking_grant_sources(grants, rank)[0] if {
	count(ranking_grant_sources(grants, rank)) > 0
} else := "the default for authenticated users without a grant"

# ---------------------------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------------------------

violations contains violation(
	"permissions.insufficient",
	sprintf("%s may not %s %s: that needs %s, and %s has %s (%s)%s", [principal_sub, rpc, perm_object_label, upper(permission_need), principal_sub, permission_level, permission_source, perm_owner_hint]),
) if {
	needed := needed_ranks[permission_need]
	perm_exists
	perm_problem == ""
	not plainly_permitted
	permission_rank < needed
}

violations contains violation("permissions.unresolved", perm_problem) if {
	needed_ranks[permission_need]
	perm_problem != ""
}

# The gate always sends the facts of a route that needs a level; without them nothing can be checked.
violations contains violation(
	"permissions.unresolved",
	sprintf("%s needs %s on an object the gate did not resolve", [rpc_label, upper(permission_need)]),
) if {
	needed_ranks[permission_need]
	not is_object(input.resource.permissions)
}

# Creating experiments and registered models: per group (data.permissions.create.<kind>; "*" is everyone).
violations contains violation(
	"permissions.create",
	sprintf("%s may not create %ss: only members of %v may (data.permissions.create.%s)", [principal_sub, replace(kind, "_", " "), creators, kind]),
) if {
	permission_need == "create"
	not is_admin
	kind := creation_kind
	creators := as_list(at(at(permissions_config, "create"), kind))
	not "*" in creators
	not caller_in(creators)
}

creation_kind := "experiment" if resource_type == "experiment"

else := "registered_model"

caller_in(groups) if {
	some group in principal_groups
	group in groups
}

# ---------------------------------------------------------------------------------------------------------------
# Search results (the gate's response phase): which of a page's objects the caller may read
# ---------------------------------------------------------------------------------------------------------------

# After MLflow answered a search or list (input.operation.permission "filter"), the gate asks again with every
# result's chain in input.resource.permissions.candidates (in page order) and keeps the results whose index is in
# the decision's "readable". Same model as one object (a test checks that both agree), written without a function
# call per result: pages hold up to thousands of results.
filtering if {
	permission_need == "filter"
	is_array(input.resource.permissions.candidates)
}

filter_candidates := c if {
	c := input.resource.permissions.candidates
	is_array(c)
} else := []

filter_decision := {"allow": true, "reasons": [], "break_glass": false, "would_deny": [], "readable": sort([i | some i in readable_candidates])}

readable_candidates := {i | some i, _ in filter_candidates} if is_admin

else := {i | some i, _ in filter_candidates; not i in denied_candidates} if filter_default_readable

else := {i | some i in granted_candidates; not i in denied_candidates}

# Whether a page's results are readable by default: the kind the gate names for the page
# (input.resource.permissions.kind, for the AI-gateway lists) may have a default of its own (chain_default_rank).
filter_default_readable if object.get(permission_ranks, default_level_for(object.get(perm_facts, "kind", "")), 0) >= 1

denied_candidates contains i if {
	some i, chain in filter_candidates
	some j, node in chain
	granting_link(i, j)
	node.grants.users[principal_sub] == "NO_PERMISSIONS"
}

denied_candidates contains i if {
	some i, chain in filter_candidates
	some j, node in chain
	granting_link(i, j)
	some group in principal_groups
	node.grants.groups[group] == "NO_PERMISSIONS"
}

denied_candidates contains i if {
	some p in permission_patterns
	p.level == "NO_PERMISSIONS"
	pattern_for_caller(p)
	pattern_in_workspace(p)
	some i, chain in filter_candidates
	some j, node in chain
	granting_link(i, j)
	node.type == p.type
	is_string(node.name)
	glob.match(p.name, null, node.name)
}

granted_candidates contains i if {
	config_rank("creator") >= 1
	principal_sub != ""
	some i, chain in filter_candidates
	some node in chain
	node.owner == principal_sub
}

granted_candidates contains i if {
	some i, chain in filter_candidates
	some j, node in chain
	granting_link(i, j)
	permission_ranks[node.grants.users[principal_sub]] >= 1
}

granted_candidates contains i if {
	some i, chain in filter_candidates
	some j, node in chain
	granting_link(i, j)
	some group in principal_groups
	permission_ranks[node.grants.groups[group]] >= 1
}

granted_candidates contains i if {
	some p in permission_patterns
	permission_ranks[p.level] >= 1
	pattern_for_caller(p)
	pattern_in_workspace(p)
	some i, chain in filter_candidates
	some j, node in chain
	granting_link(i, j)
	node.type == p.type
	is_string(node.name)
	glob.match(p.name, null, node.name)
}

# A logged model or trace whose own grants name the caller (overrides_parents, written as set rules for pages).
overriding_candidates contains i if {
	some i, chain in filter_candidates
	count(chain) > 1
	chain[0].type in own_grant_types
	is_string(chain[0].grants.users[principal_sub])
}

overriding_candidates contains i if {
	some i, chain in filter_candidates
	count(chain) > 1
	chain[0].type in own_grant_types
	some group in principal_groups
	is_string(chain[0].grants.groups[group])
}

# Whether link j of candidate i grants (granting_chain, per candidate).
granting_link(_, j) if j == 0

granting_link(i, j) if {
	j > 0
	not i in overriding_candidates
}
