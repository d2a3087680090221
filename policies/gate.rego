# mlflow-gate policy: the decision for every authenticated request.
#
# Input (version 1): input.principal {sub, issuer, groups, claims}, input.operation {rpc, read_only,
# resource_type, server_side_job, path_params}, input.request {method, path, query, body}, input.resource.
# Output: data.mlflow_gate.decision = {"allow": bool, "reasons": [string]}; reasons reach the client.
package mlflow_gate

import rego.v1

default decision := {"allow": false, "reasons": ["no rule allowed this request"]}

decision := {"allow": true, "reasons": []} if count(deny) == 0

decision := {"allow": false, "reasons": sort([r | some r in deny])} if count(deny) > 0

groups := {g | some g in input.principal.groups}

is_ci if data.roles.ci in groups

is_admin if data.roles.admin in groups

# Stage names are case-insensitive in MLflow ("production" == "Production").
target_stage := lower(input.request.body.stage)

deny contains "only the CI service account may transition to Production" if {
	input.operation.rpc == "TransitionModelVersionStage"
	target_stage == "production"
	not is_ci
}

# Server-side jobs (prompt optimisation, demo generation, scorer/evaluate/issues invocations) and the Assistant
# write to MLflow without passing through the gate, so only admins may start them.
deny contains sprintf("%s starts server-side work that bypasses the gate; only admins may use it", [input.operation.rpc]) if {
	input.operation.server_side_job
	not is_admin
}

deny contains sprintf("%s is not a route the gate knows; it is denied", [input.request.path]) if {
	input.operation.rpc == "Unknown"
	not input.operation.read_only
}
