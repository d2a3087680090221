# Access: who may do what kind of operation at all.
#
# Reads are open to every authenticated principal (any authenticated principal is an engineer). Mutations pass only
# if the policy knows them: either their RPC is on the data-driven allow-list (data.operations.engineer_mutations,
# edited by the security team without touching Rego), or it is one of the RPCs with dedicated rules in this bundle
# (`governed_mutations`). A new MLflow release that adds a mutating route is therefore denied until someone decides.
package mlflow_gate

import rego.v1

# Mutating RPCs whose rules live in registry.rego and promotion.rego; who may call them is decided there.
governed_mutations := {
	"TransitionModelVersionStage",
	"DeleteRegisteredModel",
	"RenameRegisteredModel",
	"DeleteModelVersion",
	"CreateTransitionRequest",
	"ApproveTransitionRequest",
	"RejectTransitionRequest",
	"DeleteTransitionRequest",
	"CreateComment",
	"UpdateComment",
	"DeleteComment",
}

# Webhooks and server-side jobs have their own admin-only rules below, for reads too.
outside_allow_list if server_side_job

outside_allow_list if resource_type == "webhook"

outside_allow_list if rpc == "Unknown"

violations contains violation("authn", "the request carries no authenticated subject") if not authenticated

# The gate could not classify the route: nobody, admins included, may write through a route nobody reviewed.
violations contains violation(
	"operations.unknown_route",
	sprintf("%s is not a route the gate knows; it is denied", [request_path]),
) if {
	mutating
	rpc == "Unknown"
}

violations contains violation(
	"operations.not_allowed",
	sprintf("%s is not an operation the gate allows; ask the security team to add it to operations.engineer_mutations", [rpc_label]),
) if {
	mutating
	not rpc in governed_mutations
	not engineer_mutation
	not outside_allow_list
	not admin_mutation
}

# data.operations.admin_mutations: mutations the security team opened to admins only (empty by default).
violations contains violation("operations.admin_only", sprintf("only admins may call %s", [rpc])) if {
	mutating
	not rpc in governed_mutations
	admin_mutation
	not engineer_mutation
	not outside_allow_list
	not is_admin
}

# Server-side jobs (prompt optimisation, demo data, scorer/evaluation/issue invocations, online scoring) and the
# Assistant make MLflow write without passing through the gate, so its rules would not apply to what they do.
violations contains violation(
	"jobs.admin_only",
	sprintf("%s starts server-side work that bypasses the gate; only admins may use it", [rpc]),
) if {
	server_side_job
	not is_admin
}

# Webhooks send registry events to arbitrary URLs (an SSRF and exfiltration surface) and listing them reveals those
# URLs, so reads are admin-only too, as in MLflow's own auth app.
violations contains violation(
	"webhooks.admin_only",
	sprintf("only admins may manage or view MLflow webhooks (%s)", [rpc]),
) if {
	resource_type == "webhook"
	not is_admin
}
