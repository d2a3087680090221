# mlflow-gate default governance bundle: the decision for every authenticated request.
#
# Purpose: make accidental promotion to Production impossible without distrusting engineers. Engineers may do
# everything tracking and registration needs; a model reaches Production only if it passed its evaluation gate,
# was approved by a reviewer who is not its author, and is promoted by the CI identity (or rolled back by on-call).
#
# How the bundle is built: every rule is a denial. A rule adds {"id", "reason"} to `violations`; the request is
# allowed when no violation is enforced. Mutations are fail-closed through an explicit allow-list (access.rego), so
# "no violation" never means "nobody thought about it". The files, all in this package:
#   facts.rego      safe views of the input and of data.json (never errors, never undefined)
#   access.rego     authentication, the mutation allow-list, server-side jobs, webhooks
#   tags.rego       reserved tags (mlflow_gate.*, the run tag mlflow.user)
#   registry.rego   admin-only registry operations, moving out of Production, the transition-request workflow
#   promotion.rego  Staging and Production promotion: evaluation gate, approvals, CI-only, break-glass
#   artifacts.rego  artifact writes: owner only, registered files frozen (admins only, flagged)
#   permissions.rego  resource permissions: the level each route needs on its experiment, run or model
#
# Output (README.md, "Decision document"): {"allow", "reasons", "break_glass", "would_deny"}, always defined, plus
# "frozen_override": true when an admin changes the files of a registered version.
package mlflow_gate

import rego.v1

# Search results are filtered in a second evaluation after MLflow answered (`filtering`, permissions.rego).
# Reads are most of the traffic and no rule denies an authenticated, ordinary read, so they skip evaluating every
# rule (about 6x cheaper). `fast_read` lists exactly the exceptions the rules make for reads (webhooks and
# server-side jobs are admin-only even to read, and a read the caller's resource permissions do not cover,
# permissions.rego); main_test.rego checks that the fast path agrees with the full one.
decision := filter_decision if {
	filtering
} else := {"allow": true, "reasons": [], "break_glass": false, "would_deny": []} if {
	fast_read
} else := {
	"allow": allow,
	"reasons": reasons,
	"break_glass": break_glass,
	"would_deny": would_deny,
	"frozen_override": true,
} if {
	frozen_override
} else := full_decision

fast_read if {
	read_only
	authenticated
	not server_side_job
	resource_type != "webhook"
	read_permitted
}

# Most writes break no rule: their decision skips the bookkeeping below.
full_decision := {"allow": true, "reasons": [], "break_glass": false, "would_deny": []} if {
	count(violations) == 0
	not break_glass_used
} else := {
	"allow": allow,
	"reasons": reasons,
	"break_glass": break_glass,
	"would_deny": would_deny,
}

# Shadow mode (data.shadow_rules): a rule listed there still runs and reports, but does not deny. This lets the
# security team roll out a new rule, or a stricter threshold, and watch `would_deny` before enforcing it.
# data.shadow_all puts the whole bundle in shadow mode: nothing is enforced, every denial is reported.
enforced contains v if {
	some v in violations
	not v.id in shadow_rules
	not shadow_all
}

shadowed contains v if {
	some v in violations
	v.id in shadow_rules
}

shadowed contains v if {
	some v in violations
	shadow_all
}

default allow := false

allow if count(enforced) == 0

# Every reason is reported (sorted, duplicates merged), so one round trip tells the user all that is missing.
reasons := sort({v.reason | some v in enforced})

would_deny := sort({sprintf("%s: %s", [v.id, v.reason]) | some v in shadowed})

# The flag is raised only when the request is allowed and only because of the break-glass exception
# (promotion.rego): an ordinary CI promotion, or a refused rollback attempt, is not a break-glass event.
default break_glass := false

break_glass if {
	allow
	break_glass_used
}
