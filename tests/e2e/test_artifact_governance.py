"""Artifact files of registered versions are frozen, and artifact writes belong to the owner of the run, logged model
or trace, end to end against the real MLflow behind the gate (issue 17, finding 1).

Every denial is checked against MLflow itself: the bytes read back straight from the upstream are unchanged.
"""

from __future__ import annotations

import json

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression

from conftest import poll
from helpers import GOOD_TAGS, approve_for, assert_denied, http, unique, upstream, upstream_stage

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
AJAX_ARTIFACTS = "/ajax-api/2.0/mlflow-artifacts/artifacts"


@pytest.fixture
def people(gate_keys) -> dict[str, str]:
    return {
        "alice": gate_keys.token("alice"),
        "bob": gate_keys.token("bob", groups=["ml-senior"]),
        "ci": gate_keys.token("ci-bot", groups=["mlflow-ci"]),
        "root": gate_keys.token("root", groups=["mlflow-admin"]),
    }


def store_path(uri: str) -> str:
    """`mlflow-artifacts:/1/models/m-x/artifacts` -> `1/models/m-x/artifacts` (the proxied store's path)."""
    assert uri.startswith("mlflow-artifacts:/"), uri
    return uri.removeprefix("mlflow-artifacts:/").strip("/")


def stored(mlflow_server, path: str) -> bytes | None:
    """The bytes MLflow serves for a store path, straight from the upstream (None if absent)."""
    response = http(mlflow_server.url, "GET", f"{ARTIFACTS}/{path}")
    if response.status_code != 200:
        return None
    return response.content


def logged_model_version(client_as, token: str) -> dict:
    """Alice's gated run with an sklearn model (an MLflow 3 logged model) registered as version 1 of a new model,
    and an unregistered file of her own in the run."""
    client = client_as(token)
    experiment_id = client.create_experiment(unique("exp"))
    name = unique("model")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = (X[:, 0] > 0).astype(int)
    with mlflow.start_run(experiment_id=experiment_id, tags=GOOD_TAGS) as run:
        mlflow.log_metric("val_auc", 0.91)
        mlflow.log_text("free to change", "notes/readme.txt")
        info = mlflow.sklearn.log_model(LogisticRegression().fit(X, y), name="model", registered_model_name=name,
                                        pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
    model = client.get_logged_model(info.model_id)
    return {"name": name, "version": str(info.registered_model_version), "run_id": run.info.run_id,
            "model_id": info.model_id, "model_dir": store_path(model.artifact_location),
            "run_dir": store_path(run.info.artifact_uri), "X": X}


@pytest.fixture
def v3(client_as, people) -> dict:
    return logged_model_version(client_as, people["alice"])


def put(gate, token: str, path: str, data: bytes, prefix: str = ARTIFACTS):
    return http(gate.url, "PUT", f"{prefix}/{path}", token, data=data)


def test_another_engineer_cannot_replace_or_delete_a_registered_versions_files(gate, mlflow_server, v3, people):
    mlmodel = f"{v3['model_dir']}/MLmodel"
    weights = f"{v3['model_dir']}/model.skops"
    before = {p: stored(mlflow_server, p) for p in (mlmodel, weights)}
    assert all(before.values())

    for prefix in (ARTIFACTS, AJAX_ARTIFACTS):
        assert_denied(put(gate, people["bob"], mlmodel, b"flavors: {}\n", prefix), "owned by alice", "frozen")
        assert_denied(put(gate, people["bob"], weights, b"attacker bytes", prefix))
    for path in (mlmodel, weights, v3["model_dir"]):
        assert_denied(http(gate.url, "DELETE", f"{ARTIFACTS}/{path}", people["bob"]), "frozen")
        assert_denied(http(gate.url, "DELETE", f"{AJAX_ARTIFACTS}/{path}", people["bob"]), "frozen")

    assert {p: stored(mlflow_server, p) for p in (mlmodel, weights)} == before


def test_the_owner_cannot_overwrite_registered_files_but_writes_her_unregistered_ones(gate, mlflow_server, v3,
                                                                                    people):
    mlmodel = f"{v3['model_dir']}/MLmodel"
    before = stored(mlflow_server, mlmodel)
    message = assert_denied(put(gate, people["alice"], mlmodel, b"flavors: {}\n"), "frozen",
                            f"{v3['name']} version {v3['version']}")
    assert "owned by" not in message
    assert_denied(http(gate.url, "DELETE", f"{ARTIFACTS}/{mlmodel}", people["alice"]), "frozen")
    assert stored(mlflow_server, mlmodel) == before

    notes = f"{v3['run_dir']}/notes/readme.txt"
    response = put(gate, people["alice"], notes, b"changed by alice")
    assert response.status_code == 200, response.text
    assert stored(mlflow_server, notes) == b"changed by alice"
    response = put(gate, people["alice"], f"{v3['run_dir']}/notes/new.txt", b"new")
    assert response.status_code == 200, response.text


def test_another_engineer_cannot_write_into_someone_elses_run(gate, mlflow_server, v3, people):
    notes = f"{v3['run_dir']}/notes/readme.txt"
    assert_denied(put(gate, people["bob"], notes, b"bob was here"), f"run {v3['run_id']}", "owned by alice")
    assert_denied(put(gate, people["bob"], f"{v3['run_dir']}/notes/evil.txt", b"x"), "owned by alice")
    assert_denied(http(gate.url, "DELETE", f"{ARTIFACTS}/{notes}", people["bob"]), "owned by alice")
    # The UI's upload route names the run in the query.
    response = http(gate.url, "POST", "/ajax-api/2.0/mlflow/upload-artifact", people["bob"],
                    params={"run_uuid": v3["run_id"], "path": "notes/evil.txt"}, data=b"x")
    assert_denied(response, "owned by alice")
    assert stored(mlflow_server, notes) == b"free to change"
    assert stored(mlflow_server, f"{v3['run_dir']}/notes/evil.txt") is None

    response = http(gate.url, "POST", "/ajax-api/2.0/mlflow/upload-artifact", people["alice"],
                    params={"run_uuid": v3["run_id"], "path": "notes/ui.txt"}, data=b"from the UI")
    assert response.status_code == 200, response.text
    assert stored(mlflow_server, f"{v3['run_dir']}/notes/ui.txt") == b"from the UI"


def test_files_stay_frozen_after_approval_and_after_promotion(gate, mlflow_server, client_as, v3, people):
    name, version = v3["name"], v3["version"]
    mlmodel = f"{v3['model_dir']}/MLmodel"
    before = stored(mlflow_server, mlmodel)
    client_as(people["ci"]).transition_model_version_stage(name, version, "Staging")
    approve_for(gate.url, name, version, "Production", people["alice"], people["bob"])

    assert_denied(put(gate, people["bob"], mlmodel, b"flavors: {}\n"), "frozen")
    assert_denied(put(gate, people["alice"], mlmodel, b"flavors: {}\n"), "frozen")
    promoted = client_as(people["ci"]).transition_model_version_stage(name, version, "Production",
                                                                      archive_existing_versions=True)
    assert promoted.current_stage == "Production"

    for who in ("bob", "alice", "ci"):
        assert_denied(http(gate.url, "DELETE", f"{ARTIFACTS}/{mlmodel}", people[who]), "frozen")
        assert_denied(put(gate, people[who], mlmodel, b"flavors: {}\n"), "frozen")
    assert upstream_stage(mlflow_server, name, version) == "Production"
    assert stored(mlflow_server, mlmodel) == before
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/Production")
    assert len(loaded.predict(v3["X"])) == len(v3["X"])


def test_a_run_directory_source_is_frozen_including_its_parent_directories(gate, mlflow_server, client_as, people):
    client = client_as(people["alice"])
    run = client.create_run(client.create_experiment(unique("exp")), tags=GOOD_TAGS)
    run_id = run.info.run_id
    client.log_text(run_id, "flavors: {}\n", "legacy/MLmodel")
    client.log_text(run_id, "scratch", "scratch.txt")
    name = unique("model")
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run_id}/legacy", run_id=run_id)
    run_dir = store_path(run.info.artifact_uri)
    mlmodel = f"{run_dir}/legacy/MLmodel"

    assert_denied(put(gate, people["alice"], mlmodel, b"replaced"), "frozen")
    assert_denied(put(gate, people["bob"], mlmodel, b"replaced"), "owned by alice", "frozen")
    # Deleting a directory that contains the registered files is a change to them.
    assert_denied(http(gate.url, "DELETE", f"{ARTIFACTS}/{run_dir}", people["alice"]), "frozen")
    response = http(gate.url, "POST", "/ajax-api/2.0/mlflow/upload-artifact", people["alice"],
                    params={"run_uuid": run_id, "path": "legacy/MLmodel"}, data=b"replaced")
    assert_denied(response, "frozen")
    assert stored(mlflow_server, mlmodel) == b"flavors: {}\n"

    # Files of the same run outside the registered directory stay the owner's to change.
    response = http(gate.url, "DELETE", f"{ARTIFACTS}/{run_dir}/scratch.txt", people["alice"])
    assert response.status_code == 200, response.text
    assert stored(mlflow_server, f"{run_dir}/scratch.txt") is None


def test_a_runs_uri_source_freezes_the_logged_model_mlflow_resolves_it_to(gate, mlflow_server, client_as, people):
    # MLflow 3 serves `runs:/<run>/model` from the run's logged model named `model`.
    client = client_as(people["alice"])
    with mlflow.start_run(experiment_id=client.create_experiment(unique("exp"))) as run:
        info = mlflow.sklearn.log_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), name="model",
                                        pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
    mlmodel = f"{store_path(client.get_logged_model(info.model_id).artifact_location)}/MLmodel"
    name = unique("model")
    client.create_registered_model(name)
    response = http(gate.url, "POST", "/api/2.0/mlflow/model-versions/create", people["alice"],
                    json={"name": name, "source": f"runs:/{run.info.run_id}/model", "run_id": run.info.run_id})
    assert response.status_code == 200, response.text
    before = stored(mlflow_server, mlmodel)
    assert_denied(put(gate, people["alice"], mlmodel, b"flavors: {}\n"), "frozen", f"{name} version 1")
    assert stored(mlflow_server, mlmodel) == before


def test_multipart_and_presigned_uploads_to_frozen_paths_are_403(gate, mlflow_server, v3, people):
    for who in ("alice", "bob"):
        for action in ("create", "complete", "abort"):
            body = {"path": "MLmodel", "num_parts": 1, "upload_id": "u", "parts": []}
            response = http(gate.url, "POST", f"/api/2.0/mlflow-artifacts/mpu/{action}/{v3['model_dir']}",
                            people[who], json=body)
            assert_denied(response, "frozen")
        for body in ({"model_id": v3["model_id"], "path": "MLmodel"}, {"run_id": v3["run_id"], "path": "notes/x"}):
            response = http(gate.url, "POST", "/api/2.0/mlflow/artifacts/presigned-upload-url", people[who], json=body)
            if who == "bob" or "model_id" in body:
                assert_denied(response)
            else:
                # The owner's own unregistered path passes the gate; MLflow refuses presigned URLs for its
                # proxied store.
                assert response.status_code == 400, response.text
    # Bob may not even start an upload into Alice's unregistered run directory.
    response = http(gate.url, "POST", f"/api/2.0/mlflow-artifacts/mpu/create/{v3['run_dir']}/notes", people["bob"],
                    json={"path": "x.bin", "num_parts": 1})
    assert_denied(response, "owned by alice")


def test_an_admin_may_replace_registered_files_and_the_decision_is_flagged(gate, mlflow_server, v3, people):
    mlmodel = f"{v3['model_dir']}/MLmodel"
    original = stored(mlflow_server, mlmodel)
    response = put(gate, people["root"], mlmodel, original + b"\n# reviewed by root\n")
    assert response.status_code == 200, response.text
    assert stored(mlflow_server, mlmodel) == original + b"\n# reviewed by root\n"
    request_id = response.headers["x-mlflow-gate-request-id"]
    lines = [json.loads(line) for line in gate.log.read_text().splitlines() if request_id in line and "{" in line]
    assert any(line.get("fields", line).get("frozen_override") in (True, "true") for line in lines), lines


def test_unverifiable_and_ambiguous_locations_are_refused(gate, mlflow_server, v3, people):
    assert_denied(put(gate, people["alice"], "999999/0123456789abcdef0123456789abcdef/artifacts/x", b"x"),
                  "belongs to no run, logged model or trace")
    for unknown in ("1/traces/tr-0123456789abcdef0123456789abcdef/artifacts/traces.json",
                    "1/models/m-0123456789abcdef0123456789abcdef/artifacts/MLmodel", "1/not-a-run/artifacts/x/y"):
        assert_denied(put(gate, people["bob"], unknown, b"x"), "belongs to no run")
        assert put(gate, people["root"], unknown, b"x").status_code == 200
    # A run id under another experiment's directory does not make the path that run's.
    other = f"999999/{v3['run_id']}/artifacts/x"
    assert_denied(put(gate, people["alice"], other, b"x"), "belongs to no run")
    assert stored(mlflow_server, other) is None
    response = http(gate.url, "POST", "/ajax-api/2.0/mlflow/upload-artifact", people["alice"],
                    params={"run_uuid": v3["run_id"], "path": "notes%2F..%2Fx"}, data=b"x")
    assert_denied(response, "percent-encoded")


def test_client_traces_keep_uploading_their_data(gate, mlflow_server, client_as, people):
    client = client_as(people["alice"])
    experiment_id = client.create_experiment(unique("exp"))
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        with mlflow.start_span("predict") as span:
            span.set_inputs({"x": 1})
            span.set_outputs({"y": 2})
        trace_id = span.trace_id
        mlflow.flush_trace_async_logging()
    finally:
        mlflow.set_experiment(experiment_id="0")
    def info():
        return upstream(mlflow_server, f"/api/3.0/mlflow/traces/{trace_id}")["trace"]["trace_info"]

    tags = info()["tags"]
    assert tags["mlflow_gate.created_by"] == "alice"
    data = f"{store_path(tags['mlflow.artifactLocation'])}/traces.json"

    # The client exports the span data on its own thread, in one of two ways: spans through `/v1/traces` into the
    # tracking store (MLflow then tags the trace `mlflow.trace.spansLocation = TRACKING_STORE` and the client skips
    # the file), or `traces.json` into the artifact store. Which one wins is a race inside the client: wait for
    # either (bounded).
    def landed():
        in_store = info()["tags"].get("mlflow.trace.spansLocation") == "TRACKING_STORE"
        return stored(mlflow_server, data) or in_store

    poll(landed, "the trace data to be stored", log=gate.log)
    before = stored(mlflow_server, data)
    assert before is None or b"predict" in before, gate.log.read_text()[-3000:]
    # Either way the trace's artifact directory is alice's: bob can neither overwrite nor plant its data.
    assert_denied(put(gate, people["bob"], data, b"{}"), "owned by alice")
    assert stored(mlflow_server, data) == before
    trace = client_as(people["alice"]).get_trace(trace_id)
    assert [s.name for s in trace.data.spans] == ["predict"]
