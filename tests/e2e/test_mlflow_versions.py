"""The compatibility matrix: the core of the suite, run with whichever MLflow client and server it is started with,
through the gate with the default policy bundle. scripts/test.sh runs this module once per cell of the README's
table: in the venv of MLflow 2.10.2 and of 2.22.5 (that version's client against that version's server), with the
2.22.5 client against the 3.17.2 server (`MLFLOW_SERVER_BIN`), and within the main suite (3.17.2 against 3.17.2);
each run names its cell in MLFLOW_MATRIX_CELL ("client X, server Y"), which the first test checks. Every outcome is
checked against MLflow itself (plain HTTP straight to the upstream)."""

from __future__ import annotations

import os

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from helpers import (GOOD_TAGS, approve_for, assert_mlflow_error, denied, gated_run, http, new_model_version, tags_of,
                     unique, upstream, upstream_stage, workflow)
from support.versions import (CLIENT_VERSION, X, expected_source_prefix, log_sklearn_model, registered_version,
                              server_major, server_version, train_and_register)


@pytest.fixture
def people(gate_keys) -> dict[str, str]:
    return {
        "alice": gate_keys.token("alice"),
        "mallory": gate_keys.token("mallory"),
        "bob": gate_keys.token("bob", groups=["ml-senior"]),
        "ci": gate_keys.token("ci-bot", groups=["mlflow-ci"]),
        "admin": gate_keys.token("root", groups=["mlflow-admin"]),
    }


def test_the_cell_of_the_matrix_is_the_one_asked_for(mlflow_server):
    # scripts/test.sh names the cell each run is for (MLFLOW_MATRIX_CELL): a venv or server binary mixed up there
    # fails here instead of passing as the wrong cell of the README's table.
    cell = f"client {CLIENT_VERSION}, server {server_version(mlflow_server)}"
    assert os.environ.get("MLFLOW_MATRIX_CELL", cell) == cell


def test_client_workflow_through_the_gate(gate, mlflow_server, client_as, people, tmp_path):
    from sklearn.linear_model import LogisticRegression

    client = client_as(people["alice"])
    # Experiments: create with a tag, read back by name, tag, search.
    exp_name = unique("exp")
    exp_id = client.create_experiment(exp_name, tags={"team": "fraud"})
    assert client.get_experiment_by_name(exp_name).experiment_id == exp_id
    client.set_experiment_tag(exp_id, "phase", "dev")
    found = client.search_experiments(filter_string=f"name = '{exp_name}'")
    assert [e.experiment_id for e in found] == [exp_id]
    assert found[0].tags["phase"] == "dev"

    # A run with params, metrics, a file and a registered sklearn model.
    name = unique("model")
    mlflow.set_experiment(experiment_id=exp_id)
    model = LogisticRegression(C=0.5).fit(X, np.array([0, 1, 0, 1, 0, 1]))
    with mlflow.start_run(tags=GOOD_TAGS) as run:
        mlflow.log_params({"C": 0.5})
        mlflow.log_metric("val_auc", 0.93)
        mlflow.log_text("trained on November data", "notes/readme.txt")
        info = log_sklearn_model(model, registered_model_name=name)
    run_id, version = run.info.run_id, registered_version(info, name, run.info.run_id)
    data = upstream(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    assert data["info"]["status"] == "FINISHED" and data["info"]["experiment_id"] == exp_id
    assert tags_of(data["data"])["mlflow.user"] == "alice"  # stamped by the gate from the token
    assert {p["key"]: p["value"] for p in data["data"]["params"]} == {"C": "0.5"}
    mv = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=name, version=version)["model_version"]
    assert mv["run_id"] == run_id and mv["status"] == "READY"
    assert mv["source"].startswith(expected_source_prefix(exp_id, run_id)), mv["source"]
    assert tags_of(mv)["mlflow_gate.created_by"] == "alice"

    # Artifacts: listed and downloaded through the gate.
    assert "notes" in [f.path for f in client.list_artifacts(run_id)]
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="notes/readme.txt", dst_path=str(tmp_path))
    assert open(local).read() == "trained on November data"

    # Registry tags, an alias, a stage (CI takes it to Staging: the evaluation gate passes).
    client.set_registered_model_tag(name, "owner", "fraud-team")
    client.set_model_version_tag(name, version, "validated", "yes")
    client.set_registered_model_alias(name, "candidate", version)
    assert client.get_model_version_by_alias(name, "candidate").version == version
    staged = client_as(people["ci"]).transition_model_version_stage(name, version, "Staging")
    assert staged.current_stage == "Staging" and upstream_stage(mlflow_server, name, version) == "Staging"

    # Loading by version, alias and stage gives the model that was trained.
    client = client_as(people["alice"])
    for uri in (f"models:/{name}/{version}", f"models:/{name}@candidate", f"models:/{name}/Staging"):
        np.testing.assert_array_equal(mlflow.pyfunc.load_model(uri).predict(X), model.predict(X), err_msg=uri)

    # Searches.
    assert [m.name for m in client.search_registered_models(filter_string=f"name = '{name}'")] == [name]
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == [version]
    assert [r.info.run_id for r in client.search_runs([exp_id], "metrics.val_auc > 0.9")] == [run_id]

    # Deletes: a tag, the alias, a second version, a run, an experiment; the registered model (admins only).
    client.delete_model_version_tag(name, version, "validated")
    client.delete_registered_model_alias(name, "candidate")
    second = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run_id)
    client.delete_model_version(name, second.version)
    throwaway = client.create_run(exp_id)
    client.delete_run(throwaway.info.run_id)
    other = client.create_experiment(unique("exp"))
    client.delete_experiment(other)
    registered = upstream(mlflow_server, "/api/2.0/mlflow/registered-models/get", name=name)["registered_model"]
    assert registered.get("aliases", []) == [] and tags_of(registered)["owner"] == "fraud-team"
    assert "validated" not in tags_of(upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=name,
                                                version=version)["model_version"])
    assert http(mlflow_server.url, "GET", "/api/2.0/mlflow/model-versions/get", params={
        "name": name, "version": second.version}).status_code == 404
    assert upstream(mlflow_server, "/api/2.0/mlflow/runs/get",
                    run_id=throwaway.info.run_id)["run"]["info"]["lifecycle_stage"] == "deleted"
    assert upstream(mlflow_server, "/api/2.0/mlflow/experiments/get",
                    experiment_id=other)["experiment"]["lifecycle_stage"] == "deleted"
    message = denied(lambda: client.delete_registered_model(name))
    assert "only admins may delete registered models" in message
    client_as(people["admin"]).delete_registered_model(name)
    assert http(mlflow_server.url, "GET", "/api/2.0/mlflow/registered-models/get",
                params={"name": name}).status_code == 404


def test_governance_story(gate, mlflow_server, client_as, people):
    name = unique("fraud")
    client_as(people["alice"])
    v1, run_id, _ = train_and_register(name, val_auc=0.91)

    # Only CI may take a version to Production, and only with a reviewer's approval.
    message = denied(lambda: client_as(people["alice"]).transition_model_version_stage(
        name, v1, "Production", archive_existing_versions=True))
    assert "only the CI service account may transition to Production" in message
    client_as(people["ci"]).transition_model_version_stage(name, v1, "Staging")
    message = denied(lambda: client_as(people["ci"]).transition_model_version_stage(
        name, v1, "Production", archive_existing_versions=True))
    assert "approval" in message
    assert upstream_stage(mlflow_server, name, v1) == "Staging"
    approve_for(gate.url, name, v1, "Production", people["alice"], people["bob"])
    promoted = client_as(people["ci"]).transition_model_version_stage(name, v1, "Production",
                                                                      archive_existing_versions=True)
    assert promoted.current_stage == "Production" and upstream_stage(mlflow_server, name, v1) == "Production"

    # A version from a run without the evidence the evaluation gate asks for fails it, even for CI.
    _, v2 = new_model_version(client_as(people["alice"]), name=name, tags={"data_version": "2026-11"})
    message = denied(lambda: client_as(people["ci"]).transition_model_version_stage(name, v2, "Staging"))
    assert "git_commit" in message, message
    assert upstream_stage(mlflow_server, name, v2) == "None"


def test_lineage_with_run_directory_sources(gate, mlflow_server, client_as, people):
    # alice's run passes the evaluation gate; a version whose source is the run's own directory in the proxied
    # store (the source MLflow 2 clients register) is verified lineage.
    alice = client_as(people["alice"])
    run = gated_run(alice)
    exp_id, run_id = run.info.experiment_id, run.info.run_id
    assert run.info.artifact_uri == f"mlflow-artifacts:/{exp_id}/{run_id}/artifacts"
    name = unique("lineage")
    alice.create_registered_model(name)
    own = alice.create_model_version(name, f"mlflow-artifacts:/{exp_id}/{run_id}/artifacts/model", run_id=run_id)
    staged = client_as(people["ci"]).transition_model_version_stage(name, own.version, "Staging")
    assert staged.current_stage == "Staging"

    # mallory registers files of her own run under alice's run id, to borrow its metrics, in a model of her own
    # (alice's model is hers to write: mallory only reads it). MLflow 2 accepts such a version and only the gate
    # refuses to promote it; MLflow 3 refuses to create it.
    mallory = client_as(people["mallory"])
    hers = mallory.create_run(mallory.create_experiment(unique("exp")))
    mallory.log_text(hers.info.run_id, "not alice's model", "model/MLmodel")
    source = f"{hers.info.artifact_uri}/model"
    name = unique("borrowed")
    mallory.create_registered_model(name)
    if server_major(mlflow_server) >= 3:
        with pytest.raises(MlflowException) as raised:
            mallory.create_model_version(name, source, run_id=run_id)
        assert raised.value.error_code == "INVALID_PARAMETER_VALUE", raised.value
        return
    borrowed = mallory.create_model_version(name, source, run_id=run_id)
    stored = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=name,
                      version=borrowed.version)["model_version"]
    assert stored["run_id"] == run_id and stored["source"] == source
    message = denied(lambda: client_as(people["ci"]).transition_model_version_stage(name, borrowed.version, "Staging"))
    assert f"the source of version {borrowed.version} of {name} does not belong to its run" in message, message
    assert upstream_stage(mlflow_server, name, borrowed.version) == "None"



def test_review_workflow(gate, mlflow_server, client_as, people):
    name, version = new_model_version(client_as(people["alice"]))
    client_as(people["ci"]).transition_model_version_stage(name, version, "Staging")
    created = workflow(gate.url, people["alice"], "create", name=name, version=version, stage="Production",
                       comment="val_auc 0.91")
    assert created.status_code == 200, created.text
    comment = http(gate.url, "POST", "/api/2.0/mlflow/comments/create", people["bob"],
                   json={"name": name, "version": version, "comment": "checked the drift report"})
    assert comment.status_code == 200, comment.text
    own = workflow(gate.url, people["alice"], "approve", name=name, version=version, stage="Production",
                   archive_existing_versions=True)
    assert_mlflow_error(own, 403, "PERMISSION_DENIED")
    approved = workflow(gate.url, people["bob"], "approve", name=name, version=version, stage="Production",
                        archive_existing_versions=True)
    assert approved.status_code == 200, approved.text
    assert upstream_stage(mlflow_server, name, version) == "Staging"  # an approval only records
    client_as(people["ci"]).transition_model_version_stage(name, version, "Production", archive_existing_versions=True)
    assert upstream_stage(mlflow_server, name, version) == "Production"
    listed = http(gate.url, "GET", "/api/2.0/mlflow/transition-requests/list", people["alice"],
                  params={"name": name, "version": version, "include_history": "true"})
    assert [(a["activity_type"], a["user_id"]) for a in listed.json()["requests"]] == [
        ("REQUESTED_TRANSITION", "alice"), ("NEW_COMMENT", "bob"), ("APPROVED_REQUEST", "bob")]
    mv = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=name, version=version)["model_version"]
    assert sum(k.startswith("mlflow_gate.activity.") for k in tags_of(mv)) == 3


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/2.0/mlflow/model-versions/transition-stage", {"version": "99", "stage": "Staging",
                                                                 "archive_existing_versions": False}),
    ("POST", "/api/2.0/mlflow/registered-models/alias", {"alias": "candidate", "version": "99"}),
    ("POST", "/api/2.0/mlflow/model-versions/set-tag", {"version": "99", "key": "k", "value": "v"}),
])
def test_a_missing_version_is_404_as_mlflow_answers(method, path, body, gate, mlflow_server, client_as, people):
    name = unique("missing")
    client_as(people["alice"]).create_registered_model(name)
    direct = http(mlflow_server.url, method, path, json={"name": name, **body})
    assert_mlflow_error(direct, 404, "RESOURCE_DOES_NOT_EXIST")
    through = http(gate.url, method, path, people["ci"], json={"name": name, **body})
    assert_mlflow_error(through, 404, "RESOURCE_DOES_NOT_EXIST")
    # A model that does not exist at all: the same.
    through = http(gate.url, method, path, people["ci"], json={"name": unique("nobody"), **body})
    assert_mlflow_error(through, 404, "RESOURCE_DOES_NOT_EXIST")


def test_the_client_reads_a_missing_version_as_mlflow_says(gate, client_as, people):
    name = unique("missing")
    client_as(people["alice"]).create_registered_model(name)
    with pytest.raises(MlflowException) as raised:
        client_as(people["ci"]).transition_model_version_stage(name, "7", "Staging")
    assert raised.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_an_upload_to_a_missing_run_is_404_as_mlflow_answers(gate, mlflow_server, people):
    path = "/ajax-api/2.0/mlflow/upload-artifact"
    params = {"run_uuid": "0" * 32, "path": "model/MLmodel"}
    direct = http(mlflow_server.url, "POST", path, params=params, data=b"flavors: {}\n")
    assert_mlflow_error(direct, 404, "RESOURCE_DOES_NOT_EXIST")
    through = http(gate.url, "POST", path, people["alice"], params=params, data=b"flavors: {}\n")
    assert f"Run with id={'0' * 32} not found" in assert_mlflow_error(through, 404, "RESOURCE_DOES_NOT_EXIST")
