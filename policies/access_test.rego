package mlflow_gate

import rego.v1

# ---------------------------------------------------------------------------------------------------------------
# Reads and authentication
# ---------------------------------------------------------------------------------------------------------------

test_any_authenticated_principal_may_read if {
	every rpc in ["GetRegisteredModel", "SearchModelVersions", "GetRun", "GetMetricHistory", "DownloadArtifact", "SearchTracesV3", "GraphQL", "Unknown"] {
		decision == fx_allowed with input as fx_read(fx_alice, rpc, "run")
	}
}

test_unauthenticated_requests_are_denied if {
	every who in [{"sub": ""}, {"groups": ["mlflow-admin"]}, {"sub": 7}, "alice"] {
		d := decision with input as fx_read(who, "GetRun", "run")
		d.reasons == ["the request carries no authenticated subject"]
	}
}

# ---------------------------------------------------------------------------------------------------------------
# The mutation allow-list
# ---------------------------------------------------------------------------------------------------------------

test_every_listed_engineer_mutation_is_open_to_engineers if {
	count(engineer_mutations) >= 60
	every rpc in engineer_mutations {
		decision == fx_allowed with input as fx_request(fx_alice, rpc, "run", false, fx_target({}))
	}
}

test_the_required_tracking_and_registry_rpcs_are_listed if {
	required := {
		"CreateExperiment", "DeleteExperiment", "RestoreExperiment", "UpdateExperiment", "SetExperimentTag",
		"DeleteExperimentTag", "CreateRun", "UpdateRun", "DeleteRun", "RestoreRun", "LogMetric", "LogParam",
		"LogBatch", "LogModel", "LogInputs", "LogOutputs", "SetTag", "DeleteTag", "UploadArtifact", "DeleteArtifact",
		"CreateMultipartUpload", "CompleteMultipartUpload", "AbortMultipartUpload", "CreatePresignedUploadUrl",
		"CreateLoggedModel", "FinalizeLoggedModel", "DeleteLoggedModel", "SetLoggedModelTags",
		"DeleteLoggedModelTag", "LogLoggedModelParams", "StartTrace", "StartTraceV3", "EndTrace", "SetTraceTag",
		"DeleteTraceTag", "DeleteTraces", "LinkTracesToRun", "LinkPromptsToTrace", "CreateAssessment",
		"UpdateAssessment", "DeleteAssessment", "UpdateRegisteredModel", "UpdateModelVersion",
		"SetRegisteredModelTag", "DeleteRegisteredModelTag", "SetModelVersionTag", "DeleteModelVersionTag",
		"SetRegisteredModelAlias", "DeleteRegisteredModelAlias", "LogOtlpTraces",
		"CreateRegisteredModel", "CreateModelVersion",
	}
	count(required - engineer_mutations) == 0
}

test_engineers_may_register_models_and_versions if {
	every rpc in ["CreateRegisteredModel", "CreateModelVersion"] {
		every who in [fx_alice, fx_bob, fx_ci] {
			decision == fx_allowed with input as fx_request_with_body(who, rpc, "model_version", fx_target({"name": "fraud-detector"}), {"name": "fraud-detector", "tags": [{"key": "team", "value": "risk"}]})
		}
	}
}

test_unlisted_mutations_are_denied_naming_the_rpc if {
	every who in [fx_alice, fx_root] {
		d := decision with input as fx_request(who, "CreateWorkspace", "workspace", false, fx_target({}))
		d.reasons == ["CreateWorkspace is not an operation the gate allows; ask the security team to add it to operations.engineer_mutations"]
	}
}

test_the_allow_list_is_data if {
	inp := fx_request(fx_alice, "LogMetric", "run", false, fx_target({}))
	d := decision with input as inp with data.operations.engineer_mutations as ["LogParam"]
	d.reasons == ["LogMetric is not an operation the gate allows; ask the security team to add it to operations.engineer_mutations"]

	# Without the list (or with a malformed one) nothing outside the governed RPCs is allowed: fail closed.
	not decision.allow with input as inp with data.operations as null
	not decision.allow with input as inp with data.operations.engineer_mutations as "LogMetric"
}

test_admin_mutations_are_open_to_admins_only if {
	inp := fx_request(fx_alice, "CreateWorkspace", "workspace", false, fx_target({}))
	d := decision with input as inp with data.operations.admin_mutations as ["CreateWorkspace"]
	d.reasons == ["only admins may call CreateWorkspace"]
	decision == fx_allowed with input as object.union(inp, {"principal": fx_root}) with data.operations.admin_mutations as ["CreateWorkspace"]
}

test_unknown_mutating_routes_are_denied_for_everyone if {
	every who in [fx_alice, fx_root, fx_ci] {
		inp := object.union(fx_request(who, "Unknown", "unknown", false, fx_target({})), {"request": {"path": "/api/2.0/mlflow/brand-new"}})
		d := decision with input as inp
		d.reasons == ["/api/2.0/mlflow/brand-new is not a route the gate knows; it is denied"]
	}
}

test_a_mutation_without_an_rpc_name_is_denied if {
	d := decision with input as object.remove(fx_request(fx_alice, "", "run", false, fx_target({})), ["operation"])
	d.reasons == ["(an operation without an rpc name) is not an operation the gate allows; ask the security team to add it to operations.engineer_mutations"]
}

# A malformed read_only flag is judged as a mutation.
test_read_only_must_be_exactly_true if {
	every flag in ["true", 1, null] {
		d := decision with input as fx_request(fx_alice, "CreateWorkspace", "workspace", flag, fx_target({}))
		not d.allow
	}
}

# ---------------------------------------------------------------------------------------------------------------
# Server-side jobs and the Assistant
# ---------------------------------------------------------------------------------------------------------------

fx_job(who, rpc, read_only) := object.union(
	fx_request(who, rpc, "job", read_only, fx_target({})),
	{"operation": {"server_side_job": true}},
)

test_server_side_jobs_are_admin_only if {
	every rpc in ["GenerateDemo", "InvokeScorer", "CreatePromptOptimizationJob", "AssistantSendMessage", "UpsertOnlineScoringConfig"] {
		every who in [fx_alice, fx_ci, fx_bob, fx_carol] {
			d := decision with input as fx_job(who, rpc, false)
			d.reasons == [sprintf("%s starts server-side work that bypasses the gate; only admins may use it", [rpc])]
		}
		decision == fx_allowed with input as fx_job(fx_root, rpc, false)
	}
}

test_server_side_job_reads_are_admin_only_too if {
	d := decision with input as fx_job(fx_alice, "AssistantGetConfig", true)
	not d.allow
	decision == fx_allowed with input as fx_job(fx_root, "AssistantGetConfig", true)
}

# ---------------------------------------------------------------------------------------------------------------
# Webhooks
# ---------------------------------------------------------------------------------------------------------------

test_webhooks_are_admin_only_reads_included if {
	every rpc in ["ListWebhooks", "GetWebhook", "CreateWebhook", "UpdateWebhook", "DeleteWebhook", "TestWebhook"] {
		read_only := rpc in {"ListWebhooks", "GetWebhook"}
		inp := fx_request(fx_alice, rpc, "webhook", read_only, fx_target({}))
		d := decision with input as inp
		d.reasons == [sprintf("only admins may manage or view MLflow webhooks (%s)", [rpc])]
		not decision.allow with input as object.union(inp, {"principal": fx_ci})
		decision == fx_allowed with input as object.union(inp, {"principal": fx_root})
	}
}

# ---------------------------------------------------------------------------------------------------------------
# Roles are data
# ---------------------------------------------------------------------------------------------------------------

test_roles_map_to_groups_in_data if {
	inp := fx_request(fx_principal("eve", ["platform-admins"]), "DeleteRegisteredModel", "registered_model", false, fx_target({"name": "m"}))
	not decision.allow with input as inp
	decision.allow with input as inp with data.roles.admin as ["mlflow-admin", "platform-admins"]

	# A single group name is accepted in place of a list.
	decision.allow with input as inp with data.roles.admin as "platform-admins"
}

test_a_missing_role_has_no_members if {
	inp := fx_request(fx_root, "DeleteRegisteredModel", "registered_model", false, fx_target({"name": "m"}))
	not decision.allow with input as inp with data.roles as {"ci": ["mlflow-ci"]}
	not decision.allow with input as inp with data.roles as "mlflow-admin"
	not decision.allow with input as inp with data.roles.admin as [7, null]
}
