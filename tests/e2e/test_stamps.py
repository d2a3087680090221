"""Trusted identity stamps, against the real MLflow: the gate records who created registered models and versions,
who moved a version to which stage (and who moved which alias), and whose run it is; a client can neither forge
nor delete those stamps through any route."""

from __future__ import annotations

import json

import pytest
from mlflow.exceptions import MlflowException

from helpers import http, new_model_version, raw_post, tags_of, unique, upstream

CREATED_BY = "mlflow_gate.created_by"
HISTORY = "mlflow_gate.stage_history"  # the history as earlier gates wrote it (still read)
HISTORY_PREFIX = "mlflow_gate.history."  # one tag per entry


def registered_model(mlflow_server, name: str) -> dict:
    return upstream(mlflow_server, "/api/2.0/mlflow/registered-models/get", name=name)["registered_model"]


def model_version(mlflow_server, name: str, version: str) -> dict:
    return upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=name, version=version)["model_version"]


def test_creations_transitions_and_alias_moves_are_stamped(client_as, gate_keys, mlflow_server):
    alice = client_as(gate_keys.token("alice"))
    name, version = new_model_version(alice)
    assert tags_of(registered_model(mlflow_server, name))[CREATED_BY] == "alice"
    tags = tags_of(model_version(mlflow_server, name, version))
    assert tags[CREATED_BY] == "alice"
    assert int(tags["mlflow_gate.created_at"]) > 0

    ci = client_as(gate_keys.token("ci-bot", groups=["mlflow-ci"]))
    ci.transition_model_version_stage(name, version, "Staging")
    alice = client_as(gate_keys.token("alice"))
    alice.set_registered_model_alias(name, "candidate", version)
    tags = tags_of(model_version(mlflow_server, name, version))
    history = sorted((json.loads(v) for k, v in tags.items() if k.startswith(HISTORY_PREFIX)), key=lambda h: h["at"])
    assert [(h.get("stage"), h.get("alias"), h["by"]) for h in history] == [("Staging", None, "ci-bot"),
                                                                             (None, "candidate", "alice")]
    assert all(h["at"] > 0 and h["request_id"] for h in history)


def test_runs_belong_to_the_token_subject_not_the_client_claim(gate, gate_keys, mlflow_server, client_as):
    token = gate_keys.token("alice")
    experiment = client_as(token).create_experiment(unique("exp"))
    claim = {"experiment_id": experiment, "user_id": "mallory", "tags": [{"key": "mlflow.user", "value": "mallory"}]}
    response = http(gate.url, "POST", "/api/2.0/mlflow/runs/create", token, json=claim)
    assert response.status_code == 200, response.text
    run_id = response.json()["run"]["info"]["run_id"]
    run = upstream(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    assert run["info"]["user_id"] == "alice"
    assert tags_of(run["data"])["mlflow.user"] == "alice"
    # Changing the run's user afterwards is refused too.
    for path, payload in [
        ("/api/2.0/mlflow/runs/set-tag", {"run_id": run_id, "key": "mlflow.user", "value": "mallory"}),
        ("/api/2.0/mlflow/runs/log-batch", {"run_id": run_id, "tags": [{"key": "mlflow.user", "value": "mallory"}]}),
    ]:
        response = http(gate.url, "POST", path, token, json=payload)
        assert response.status_code == 403, (path, response.text)
    run = upstream(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    assert tags_of(run["data"])["mlflow.user"] == "alice"


@pytest.mark.parametrize("who", [("alice", []), ("root-admin", ["mlflow-admin"])])
def test_reserved_tags_cannot_be_forged_or_deleted_by_anyone(who, gate, gate_keys, mlflow_server, client_as):
    token = gate_keys.token(who[0], groups=who[1])
    name, version = new_model_version(client_as(gate_keys.token("alice")))
    before_rm, before_mv = registered_model(mlflow_server, name), model_version(mlflow_server, name, version)
    forged = {"key": CREATED_BY, "value": "mallory"}
    attempts = [
        ("POST", "/api/2.0/mlflow/model-versions/set-tag", {"name": name, "version": version, **forged}),
        ("POST", "/ajax-api/2.0/mlflow/model-versions/set-tag", {"name": name, "version": version, **forged}),
        ("POST", "/api/2.0/mlflow/registered-models/set-tag", {"name": name, **forged}),
        ("DELETE", "/api/2.0/mlflow/model-versions/delete-tag", {"name": name, "version": version, "key": CREATED_BY}),
        ("DELETE", "/ajax-api/2.0/mlflow/registered-models/delete-tag", {"name": name, "key": CREATED_BY}),
        ("POST", "/api/2.0/mlflow/model-versions/set-tag", {"name": name, "version": version, "key": HISTORY,
                                                             "value": '[{"stage": "Production", "by": "ci-bot"}]'}),
        ("POST", "/api/2.0/mlflow/model-versions/set-tag", {"name": name, "version": version,
                                                             "key": f"{HISTORY_PREFIX}0000000000001-forged",
                                                             "value": '{"alias": "champion", "by": "ci-bot", "at": 1}'}),
        ("POST", "/api/2.0/mlflow/model-versions/create", {"name": name, "source": "runs:/x/model", "tags": [forged]}),
        ("POST", "/api/2.0/mlflow/registered-models/create", {"name": unique("forged"), "tags": [forged]}),
    ]
    for method, path, payload in attempts:
        response = http(gate.url, method, path, token, json=payload)
        assert response.status_code == 403, (method, path, response.text)
        assert "reserved" in response.json()["message"]
    # The raw-bytes spelling with an encoded path is the same operation, and refused the same way.
    status, _ = raw_post(gate.url, "/api/2.0/mlflow/model-versions%2Fset-tag", token,
                         json.dumps({"name": name, "version": version, **forged}).encode())
    assert status == 403
    assert registered_model(mlflow_server, name)["tags"] == before_rm["tags"]
    assert model_version(mlflow_server, name, version)["tags"] == before_mv["tags"]
    assert len(http(mlflow_server.url, "GET", "/api/2.0/mlflow/model-versions/search",
                    params={"filter": f"name='{name}'"}).json()["model_versions"]) == 1


def test_client_library_surfaces_the_reserved_tag_refusal(client_as, gate_keys):
    alice = client_as(gate_keys.token("alice"))
    name, version = new_model_version(alice)
    with pytest.raises(MlflowException) as raised:
        alice.set_model_version_tag(name, version, CREATED_BY, "bob")
    assert raised.value.error_code == "PERMISSION_DENIED"
    assert "reserved" in str(raised.value)
