package mlflow_gate

import rego.v1

# ---------------------------------------------------------------------------------------------------------------
# Artifact writes: owner only, unowned locations admin-only, registered files frozen (admins only, flagged)
# ---------------------------------------------------------------------------------------------------------------

fx_artifact_location := "mlflow-artifacts:/1/models/m-1/artifacts/MLmodel"

fx_artifact(kind, owner, registered) := {
	"operation": "write",
	"location": fx_artifact_location,
	"path_problem": null,
	"kind": kind,
	"owned": kind != "unknown",
	"id": "m-1",
	"experiment_id": "1",
	"entity_location": "mlflow-artifacts:/1/models/m-1/artifacts",
	"owner": owner,
	"frozen": count(registered) > 0,
	"registered_versions": registered,
}

fx_registered := [{
	"name": "fraud-detector", "version": "3", "source": "models:/m-1", "current_stage": "Production",
	"location": "mlflow-artifacts:/1/models/m-1/artifacts", "relation": "under",
}]

fx_artifact_write(who, rpc, facts) := fx_request(who, rpc, "artifact", false, {"target": {}, "artifact": facts})

fx_artifact_rpcs := [
	"UploadArtifact", "DeleteArtifact", "CreateMultipartUpload", "CompleteMultipartUpload", "AbortMultipartUpload",
	"CreatePresignedUploadUrl", "UploadRunArtifact",
]

test_the_owner_writes_unregistered_artifacts_of_their_run_logged_model_or_trace if {
	every kind in ["run", "logged_model", "trace"] {
		every rpc in fx_artifact_rpcs {
			decision == fx_allowed with input as fx_artifact_write(fx_alice, rpc, fx_artifact(kind, "alice", []))
		}
	}
}

test_another_engineer_cannot_write_into_someone_elses_run_or_model if {
	every kind in ["run", "logged_model", "trace"] {
		every rpc in fx_artifact_rpcs {
			d := decision with input as fx_artifact_write(fx_bob, rpc, fx_artifact(kind, "alice", []))
			d.allow == false
			some r in d.reasons
			contains(r, "owned by alice; only its owner or an admin may write or delete its artifacts")
		}
	}
	d := decision with input as fx_artifact_write(fx_bob, "UploadArtifact", fx_artifact("logged_model", "alice", []))
	d.reasons == [sprintf("%s belongs to logged model m-1, owned by alice; only its owner or an admin may write or delete its artifacts", [fx_artifact_location])]
}

test_an_entity_without_a_recorded_owner_is_admin_only if {
	d := decision with input as fx_artifact_write(fx_alice, "UploadArtifact", fx_artifact("run", null, []))
	d.allow == false
	contains(d.reasons[0], "belongs to run m-1, which has no recorded owner")
	decision == fx_allowed with input as fx_artifact_write(fx_root, "UploadArtifact", fx_artifact("run", null, []))
}

test_an_unverified_location_is_admin_only if {
	facts := object.union(fx_artifact("unknown", null, []), {"id": null})
	d := decision with input as fx_artifact_write(fx_alice, "DeleteArtifact", facts)
	d.reasons == [sprintf("%s belongs to no run, logged model or trace that the gate could verify in MLflow; only admins may write or delete there", [fx_artifact_location])]
	decision == fx_allowed with input as fx_artifact_write(fx_root, "DeleteArtifact", facts)
}

test_a_parent_of_an_artifact_directory_is_admin_only if {
	facts := object.union(fx_artifact("run", "alice", []), {"owned": false, "location": "mlflow-artifacts:/1/r1", "id": "r1"})
	d := decision with input as fx_artifact_write(fx_alice, "DeleteArtifact", facts)
	d.reasons == ["mlflow-artifacts:/1/r1 contains the artifact directory of run r1 but is not inside it; only admins may write or delete there"]
	decision == fx_allowed with input as fx_artifact_write(fx_root, "DeleteArtifact", facts)
}

test_registered_files_are_frozen_even_for_their_owner if {
	every rpc in fx_artifact_rpcs {
		d := decision with input as fx_artifact_write(fx_alice, rpc, fx_artifact("logged_model", "alice", fx_registered))
		d.allow == false
		d.reasons == [sprintf("%s holds files of registered model fraud-detector version 3; registered files are frozen (register a new version instead, or ask an admin)", [fx_artifact_location])]
	}
	d := decision with input as fx_artifact_write(fx_bob, "DeleteArtifact", fx_artifact("run", "alice", fx_registered))
	count(d.reasons) == 2
}

test_ci_and_reviewers_cannot_change_registered_files_either if {
	every who in [fx_ci, fx_bob, fx_carol] {
		not fx_allowed_for(who, fx_artifact_write(fx_alice, "UploadArtifact", fx_artifact("run", who.sub, fx_registered)))
	}
}

test_an_admin_may_change_registered_files_and_the_decision_is_flagged if {
	d := decision with input as fx_artifact_write(fx_root, "UploadArtifact", fx_artifact("logged_model", "alice", fx_registered))
	d == {"allow": true, "reasons": [], "break_glass": false, "would_deny": [], "frozen_override": true}
}

test_an_admin_write_to_unregistered_files_is_not_flagged if {
	d := decision with input as fx_artifact_write(fx_root, "UploadArtifact", fx_artifact("run", "alice", []))
	d == fx_allowed
}

test_a_shadowed_frozen_rule_reports_but_does_not_flag if {
	inp := fx_artifact_write(fx_alice, "UploadArtifact", fx_artifact("run", "alice", fx_registered))
	d := decision with input as inp with data.shadow_rules as ["artifacts.frozen"]
	d.allow == true
	object.keys(d) == {"allow", "reasons", "break_glass", "would_deny"}
	count(d.would_deny) == 1
}

test_a_path_mlflow_would_read_differently_is_refused_for_everyone if {
	facts := object.union(fx_artifact("run", "root", []), {"path_problem": "the artifact path \"a%2Fb\" is percent-encoded"})
	d := decision with input as fx_artifact_write(fx_root, "UploadArtifact", facts)
	d.reasons == ["the artifact path \"a%2Fb\" is percent-encoded; send the plain path MLflow clients send"]
}

test_malformed_artifact_facts_deny if {
	# No facts at all: unowned and (a missing version list) frozen.
	d := decision with input as fx_request(fx_alice, "UploadArtifact", "artifact", false, {"target": {}})
	d.allow == false
	count(d.reasons) == 2
	some r in d.reasons
	contains(r, "(an unknown location) holds files of registered model (unknown) version ?")
	# Owned, but of a kind the policy does not know and with no id.
	odd := object.union(fx_artifact("run", "bob", []), {"kind": "bucket", "id": 7})
	d2 := decision with input as fx_artifact_write(fx_alice, "UploadArtifact", odd)
	d2.reasons == [sprintf("%s belongs to a an unknown entity, owned by bob; only its owner or an admin may write or delete its artifacts", [fx_artifact_location])]
	# `frozen: true` counts even with an empty list.
	frozen := object.union(fx_artifact("run", "alice", []), {"frozen": true})
	not fx_allowed_for(fx_alice, fx_artifact_write(fx_alice, "UploadArtifact", frozen))
}

test_artifact_reads_skip_the_artifact_rules if {
	decision == fx_allowed with input as fx_request(fx_bob, "DownloadArtifact", "artifact", true, {"target": {}})
}
