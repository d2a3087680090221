"""What an approval and an evaluation gate vouch for, against the real MLflow through the gate: an approval covers
the version's files (a file changed after the review voids it, as a changed metric does), and a version passes
its evaluation gate only when its files are provably the output of its source run's owner (a logged model that
someone else created, naming the victim's run, does not borrow that run's metrics)."""

from __future__ import annotations

import pytest

from helpers import (assert_mlflow_error, denied, gated_run, http, tags_of, train_and_register, unique, upstream,
                     upstream_stage, workflow)


@pytest.fixture
def people(gate_keys) -> dict[str, str]:
    return {
        "alice": gate_keys.token("alice"),
        "mallory": gate_keys.token("mallory"),
        "bob": gate_keys.token("bob", groups=["ml-senior"]),
        "dave": gate_keys.token("dave", groups=["ml-senior"]),
        "ci": gate_keys.token("ci-bot", groups=["mlflow-ci"]),
    }


def served_path(artifact_uri: str) -> str:
    assert artifact_uri.startswith("mlflow-artifacts:/"), artifact_uri
    return artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")


def test_an_approval_is_void_once_the_version_files_change(gate, mlflow_server, client_as, people):
    client_as(people["alice"])
    name = unique("files")
    version = train_and_register(name)
    client_as(people["ci"]).transition_model_version_stage(name, version, "Staging")
    assert workflow(gate.url, people["alice"], "create", name=name, version=version, stage="Production").status_code == 200
    approved = workflow(gate.url, people["bob"], "approve", name=name, version=version, stage="Production",
                        archive_existing_versions=True)
    assert approved.status_code == 200, approved.text

    # After the review, the version's MLmodel is rewritten in the artifact store (straight to MLflow, as someone
    # with storage access could): metrics, params and tags are unchanged, the files are not.
    location = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get-download-uri", name=name,
                        version=version)["artifact_uri"]
    mlmodel = f"/api/2.0/mlflow-artifacts/artifacts/{served_path(location)}/MLmodel"
    original = http(mlflow_server.url, "GET", mlmodel)
    assert original.status_code == 200 and b"flavors" in original.content
    swapped = http(mlflow_server.url, "PUT", mlmodel, data=original.content + b"\n# swapped after review\n")
    assert swapped.status_code == 200, swapped.text

    message = denied(lambda: client_as(people["ci"]).transition_model_version_stage(
        name, version, "Production", archive_existing_versions=True))
    assert "approval" in message, message
    assert upstream_stage(mlflow_server, name, version) == "Staging"

    # A new review of the files as they are now counts again.
    assert workflow(gate.url, people["alice"], "create", name=name, version=version, stage="Production").status_code == 200
    again = workflow(gate.url, people["dave"], "approve", name=name, version=version, stage="Production",
                     archive_existing_versions=True)
    assert again.status_code == 200, again.text
    promoted = client_as(people["ci"]).transition_model_version_stage(name, version, "Production",
                                                                      archive_existing_versions=True)
    assert promoted.current_stage == "Production"


def test_a_logged_model_borrowing_another_engineers_run_fails_the_gate(gate, mlflow_server, client_as, people):
    # alice's run passes the evaluation gate: good metric, required tags.
    run = gated_run(client_as(people["alice"]))
    run_id, experiment_id = run.info.run_id, run.info.experiment_id

    # mallory may not log a model into alice's experiment (resource permissions), so she logs one into her own,
    # naming alice's run as its source run, and uploads her files into it.
    refused = http(gate.url, "POST", "/api/2.0/mlflow/logged-models", people["mallory"],
                   json={"experiment_id": experiment_id, "name": "model", "source_run_id": run_id})
    assert refused.status_code == 403, refused.text
    own_experiment = http(gate.url, "POST", "/api/2.0/mlflow/experiments/create", people["mallory"],
                          json={"name": unique("mallory-exp")}).json()["experiment_id"]
    created = http(gate.url, "POST", "/api/2.0/mlflow/logged-models", people["mallory"],
                   json={"experiment_id": own_experiment, "name": "model", "source_run_id": run_id})
    assert created.status_code == 200, created.text
    info = created.json()["model"]["info"]
    model_id = info["model_id"]
    stored = upstream(mlflow_server, f"/api/2.0/mlflow/logged-models/{model_id}")["model"]["info"]
    assert tags_of(stored)["mlflow_gate.created_by"] == "mallory"
    put = http(gate.url, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{served_path(info['artifact_uri'])}/MLmodel",
               people["mallory"], data=b"artifact_path: model\nflavors: {}\n")
    assert put.status_code == 200, put.text

    mallory = client_as(people["mallory"])
    name = unique("borrowed")
    mallory.create_registered_model(name)
    mv = mallory.create_model_version(name, f"models:/{model_id}", run_id=run_id, model_id=model_id)
    assert mv.run_id == run_id

    message = denied(lambda: client_as(people["ci"]).transition_model_version_stage(name, mv.version, "Staging"))
    assert f"the lineage of version {mv.version} of {name} cannot be verified" in message, message
    assert f"logged model {model_id} was created by mallory, not by alice who owns run {run_id}" in message, message
    assert upstream_stage(mlflow_server, name, mv.version) == "None"

    # The same run's owner registering her own logged model passes.
    client_as(people["alice"])
    own = unique("own")
    version = train_and_register(own)
    assert client_as(people["ci"]).transition_model_version_stage(own, version, "Staging").current_stage == "Staging"


def test_the_logged_model_creator_stamp_cannot_be_forged_or_removed(gate, mlflow_server, client_as, people):
    run = gated_run(client_as(people["alice"]))
    forged = http(gate.url, "POST", "/api/2.0/mlflow/logged-models", people["mallory"],
                  json={"experiment_id": run.info.experiment_id, "name": "model", "source_run_id": run.info.run_id,
                        "tags": [{"key": "mlflow_gate.created_by", "value": "alice"}]})
    assert_mlflow_error(forged, 403, "PERMISSION_DENIED")

    created = http(gate.url, "POST", "/api/2.0/mlflow/logged-models", people["alice"],
                   json={"experiment_id": run.info.experiment_id, "name": "model", "source_run_id": run.info.run_id})
    assert created.status_code == 200, created.text
    model_id = created.json()["model"]["info"]["model_id"]
    for base in ("/api", "/ajax-api"):
        removed = http(gate.url, "DELETE", f"{base}/2.0/mlflow/logged-models/{model_id}/tags/mlflow_gate.created_by",
                       people["alice"])
        assert_mlflow_error(removed, 403, "PERMISSION_DENIED")
    stored = upstream(mlflow_server, f"/api/2.0/mlflow/logged-models/{model_id}")["model"]["info"]
    assert tags_of(stored)["mlflow_gate.created_by"] == "alice"
