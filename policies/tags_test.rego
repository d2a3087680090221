package mlflow_gate

import rego.v1

fx_tag_write(who, rpc, key) := fx_write(who, rpc, fx_target({"name": "fraud-detector", "version": "1", "key": key, "value": "x"}))

test_nobody_writes_reserved_registry_tags if {
	every rpc in ["SetRegisteredModelTag", "DeleteRegisteredModelTag", "SetModelVersionTag", "DeleteModelVersionTag"] {
		every who in [fx_alice, fx_ci, fx_root, fx_bob, fx_carol] {
			every key in ["mlflow_gate.created_by", "mlflow_gate.stage_history", "MLFLOW_GATE.approvals"] {
				d := decision with input as fx_tag_write(who, rpc, key)
				d.reasons == [sprintf("tags starting with mlflow_gate. are written only by the gate; %s may not set or delete %s", [rpc, key])]
			}
		}
	}
}

test_ordinary_registry_tags_are_free if {
	every rpc in ["SetRegisteredModelTag", "DeleteRegisteredModelTag", "SetModelVersionTag", "DeleteModelVersionTag"] {
		decision == fx_allowed with input as fx_tag_write(fx_alice, rpc, "team")
		decision == fx_allowed with input as fx_tag_write(fx_alice, rpc, "mlflow_gatekeeper")
	}
}

test_reserved_tags_cannot_be_written_at_creation if {
	every rpc in ["CreateRegisteredModel", "CreateModelVersion", "CreateRun", "LogBatch"] {
		body := {"name": "fraud-detector", "tags": [{"key": "team", "value": "risk"}, {"key": "mlflow_gate.created_by", "value": "bob"}]}
		d := decision with input as fx_request_with_body(fx_root, rpc, "model_version", fx_target({"name": "fraud-detector"}), body)
		d.reasons == [sprintf("tags starting with mlflow_gate. are written only by the gate; %s may not set or delete mlflow_gate.created_by", [rpc])]
	}
}

test_reserved_tags_in_a_tag_object_and_path_keys_are_refused if {
	body := {"tags": {"mlflow_gate.created_by": "bob"}}
	d := decision with input as fx_request_with_body(fx_alice, "SetLoggedModelTags", "logged_model", fx_target({"model_id": "m-1"}), body)
	not d.allow
	d2 := decision with input as fx_request(fx_alice, "DeleteLoggedModelTag", "logged_model", false, fx_target({"model_id": "m-1", "tag_key": "mlflow_gate.x"}))
	d2.reasons == ["tags starting with mlflow_gate. are written only by the gate; DeleteLoggedModelTag may not set or delete mlflow_gate.x"]
}

test_malformed_tag_lists_do_not_break_the_decision if {
	every tags in ["mlflow_gate.x", [1, "k", null, {"value": "v"}], null, 5] {
		decision == fx_allowed with input as fx_request_with_body(fx_alice, "CreateRegisteredModel", "registered_model", fx_target({"name": "m"}), {"name": "m", "tags": tags})
	}
}

test_the_run_user_tag_is_the_gates if {
	every rpc in ["SetTag", "DeleteTag"] {
		every key in ["mlflow.user", "MLflow.User"] {
			d := decision with input as fx_request(fx_root, rpc, "run", false, fx_target({"run_id": "r1", "key": key}))
			d.reasons == [sprintf("the run tag mlflow.user is set by the gate from your token; %s may not change it", [rpc])]
		}
		decision == fx_allowed with input as fx_request(fx_alice, rpc, "run", false, fx_target({"run_id": "r1", "key": "mlflow.note.content"}))
	}
	body := {"run_id": "r1", "tags": [{"key": "mlflow.user", "value": "mallory"}]}
	d := decision with input as fx_request_with_body(fx_alice, "LogBatch", "run", fx_target({"run_id": "r1"}), body)
	d.reasons == ["the run tag mlflow.user is set by the gate from your token; LogBatch may not change it"]
}

# On CreateRun the gate replaces whatever mlflow.user the client sent, so the request itself is fine.
test_create_run_may_carry_a_run_user_the_gate_replaces if {
	body := {"experiment_id": "1", "tags": [{"key": "mlflow.user", "value": "mallory"}]}
	decision == fx_allowed with input as fx_request_with_body(fx_alice, "CreateRun", "run", fx_target({"experiment_id": "1"}), body)
}

test_reserved_tag_rules_ignore_reads if {
	inp := fx_request(fx_alice, "GetModelVersion", "model_version", true, fx_target({"name": "m", "key": "mlflow_gate.created_by"}))
	decision == fx_allowed with input as inp
}

test_server_side_schedule_tags_are_admin_only if {
	tag := {"target": {"experiment_id": "1", "key": "mlflow.issueDetection.schedule", "value": "daily"}}
	inp := fx_request(fx_alice, "SetExperimentTag", "experiment", false, tag)
	d := decision with input as inp
	not d.allow
	contains(d.reasons[0], "schedules server-side work")
	fx_allowed_for(fx_root, inp)
	created := fx_request(fx_alice, "CreateExperiment", "experiment", false, {"target": {}})
	with_tags := object.union(created, {"request": {"body": {"name": "e", "tags": [{"key": "MLFLOW.ISSUEDETECTION.schedule", "value": "x"}]}}})
	not fx_allowed_for(fx_alice, with_tags)
}
