"""Smaller findings of the second attack round (issue 17, item 6), against the real MLflow behind the gate: names
MLflow would store with hidden characters, look-alikes of protected aliases and gated model names, reserved tags
nested in MLflow 3's start-trace call and the other tag containers, and identities compared after normalisation."""

from __future__ import annotations

import time
import uuid

import pytest

from helpers import assert_mlflow_error, http, new_model_version, tags_of, unique, upstream, workflow

CREATED_BY = "mlflow_gate.created_by"


@pytest.fixture
def alice(gate_keys) -> str:
    return gate_keys.token("alice")


@pytest.fixture
def ci(gate_keys) -> str:
    return gate_keys.token("ci-bot", groups=["mlflow-ci"])


def aliases_of(mlflow_server, name: str) -> list[dict]:
    model = upstream(mlflow_server, "/api/2.0/mlflow/registered-models/get", name=name)["registered_model"]
    return model.get("aliases", [])


def model_exists(mlflow_server, name: str) -> bool:
    response = http(mlflow_server.url, "GET", "/api/2.0/mlflow/registered-models/get", params={"name": name})
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


# ---------------------------------------------------------------------------------------------------------------
# Names as MLflow stores them


def test_names_with_hidden_characters_are_refused_before_mlflow(gate, mlflow_server, client_as, alice):
    name, version = new_model_version(client_as(alice))
    # MLflow itself stores "champion\n" as a distinct alias; the protected-alias rule would not see it.
    for alias in ("champion\n", "champion ", "\tchampion", "champion\u200b", "cham\x00pion"):
        response = http(gate.url, "POST", "/api/2.0/mlflow/registered-models/alias", alice,
                        json={"name": name, "alias": alias, "version": version})
        message = assert_mlflow_error(response, 400, "INVALID_PARAMETER_VALUE")
        assert "alias" in message, message
    assert aliases_of(mlflow_server, name) == []

    base = unique("hidden")
    for path, body, stored in [
        ("/api/2.0/mlflow/registered-models/create", {"name": f"{base}\n"}, f"{base}\n"),
        ("/ajax-api/2.0/mlflow/registered-models/create", {"name": f" {base}"}, f" {base}"),
        ("/api/2.0/mlflow/registered-models/create",
         {"name": f"{base}\r", "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}]}, f"{base}\r"),
        ("/api/2.0/mlflow/registered-models/rename", {"name": name, "new_name": f"{base}\n"}, f"{base}\n"),
        ("/api/2.0/mlflow/model-versions/create", {"name": f"{name}\n", "source": "s"}, f"{name}\n"),
    ]:
        response = http(gate.url, "POST", path, alice, json=body)
        assert_mlflow_error(response, 400, "INVALID_PARAMETER_VALUE")
        assert not model_exists(mlflow_server, stored), (path, stored)
    assert model_exists(mlflow_server, name)


def test_look_alikes_of_a_protected_alias_are_protected(gate, mlflow_server, client_as, alice):
    name, version = new_model_version(client_as(alice))
    for alias in ("Champion", "CHAMPION", "ｃｈａｍｐｉｏｎ", "cham\u200bpion", "cham\u00adpion"):
        response = http(gate.url, "POST", "/api/2.0/mlflow/registered-models/alias", alice,
                        json={"name": name, "alias": alias, "version": version})
        message = assert_mlflow_error(response, 403, "PERMISSION_DENIED")
        assert "only the CI service account may move the alias" in message, (alias, message)
    assert aliases_of(mlflow_server, name) == []
    # An unprotected alias is still the engineer's to set.
    response = http(gate.url, "POST", "/api/2.0/mlflow/registered-models/alias", alice,
                    json={"name": name, "alias": "challenger", "version": version})
    assert response.status_code == 200, response.text


def test_a_look_alike_of_a_gated_model_gets_its_gate(gate, mlflow_server, client_as, alice, ci):
    # data.json gates fraud-detector at val_auc >= 0.80; a full-width, differently-cased twin gets the same gate.
    name = "ＦＲＡＵＤ-Detector"
    if not model_exists(mlflow_server, name):
        client_as(alice).create_registered_model(name)
    _, version = new_model_version(client_as(alice), name=name, metrics={"val_auc": 0.5})
    response = http(gate.url, "POST", "/api/2.0/mlflow/model-versions/transition-stage", ci,
                    json={"name": name, "version": version, "stage": "Staging", "archive_existing_versions": False})
    message = assert_mlflow_error(response, 403, "PERMISSION_DENIED")
    assert "val_auc 0.50 is below the gate 0.80" in message, message
    mv = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=name, version=version)["model_version"]
    assert mv["current_stage"] == "None"


# ---------------------------------------------------------------------------------------------------------------
# Reserved tags in nested containers


def trace_body(experiment_id: str, tags: dict) -> dict:
    now = time.time()
    return {"trace": {"trace_info": {
        "trace_id": f"tr-{uuid.uuid4().hex}",
        "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}},
        "request_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z",
        "execution_duration": "0.5s",
        "state": "OK",
        "trace_metadata": {},
        "tags": tags,
    }}}


def trace_exists(mlflow_server, trace_id: str) -> bool:
    response = http(mlflow_server.url, "GET", f"/api/3.0/mlflow/traces/{trace_id}")
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def test_reserved_tags_in_a_v3_start_trace_are_refused(gate, mlflow_server, client_as, alice):
    experiment_id = client_as(alice).create_experiment(unique("traces"))
    for tags, spelling in [({CREATED_BY: "ci-bot"}, "trace_info"), ({"team": "a", "MLflow_Gate.x": "1"}, "traceInfo")]:
        body = trace_body(experiment_id, tags)
        info = body["trace"].pop("trace_info")
        body["trace"][spelling] = info
        response = http(gate.url, "POST", "/api/3.0/mlflow/traces", alice, json=body)
        message = assert_mlflow_error(response, 403, "PERMISSION_DENIED")
        assert "reserved" in message, message
        assert not trace_exists(mlflow_server, info["trace_id"]), spelling

    # Ordinary tags still go through, and MLflow stores them.
    body = trace_body(experiment_id, {"team": "a"})
    response = http(gate.url, "POST", "/api/3.0/mlflow/traces", alice, json=body)
    assert response.status_code == 200, response.text
    stored = upstream(mlflow_server, f"/api/3.0/mlflow/traces/{body['trace']['trace_info']['trace_id']}")
    assert stored["trace"]["trace_info"]["tags"].get("team") == "a", stored


def test_reserved_tags_in_other_nested_containers_are_refused(gate, mlflow_server, client_as, alice):
    client = client_as(alice)
    run = client.create_run(client.create_experiment(unique("inputs")))
    run_id = run.info.run_id
    dataset = {"name": "d", "digest": "abc", "source_type": "LOCAL", "source": "{}"}
    response = http(gate.url, "POST", "/api/2.0/mlflow/runs/log-inputs", alice, json={
        "run_id": run_id, "datasets": [{"dataset": dataset, "tags": [{"key": CREATED_BY, "value": "ci-bot"}]}]})
    assert_mlflow_error(response, 403, "PERMISSION_DENIED")
    inputs = upstream(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"].get("inputs", {})
    assert not inputs.get("dataset_inputs"), inputs

    # Dataset tags are a JSON string holding an object.
    response = http(gate.url, "POST", "/api/3.0/mlflow/datasets/create", alice,
                    json={"name": unique("ds"), "tags": f'{{"{CREATED_BY}": "ci-bot"}}'})
    assert_mlflow_error(response, 403, "PERMISSION_DENIED")
    response = http(gate.url, "POST", "/api/3.0/mlflow/datasets/create", alice,
                    json={"name": unique("ds"), "tags": f'{{"{CREATED_BY}": "ci-bot", "n": NaN}}'})
    assert_mlflow_error(response, 400, "INVALID_PARAMETER_VALUE")


# ---------------------------------------------------------------------------------------------------------------
# Identity after normalisation


def test_a_reviewer_token_for_a_case_variant_of_the_creator_cannot_approve(gate, mlflow_server, client_as, gate_keys,
                                                                         alice, ci):
    name, version = new_model_version(client_as(alice))
    client_as(ci).transition_model_version_stage(name, version, "Staging")
    response = workflow(gate.url, alice, "create", name=name, version=version, stage="Production")
    assert response.status_code == 200, response.text

    # The IdP hands alice a reviewer token whose sub is `Alice` (or a full-width `Ａｌｉｃｅ`): the same person.
    for sub in ("Alice", "ＡＬＩＣＥ"):
        reviewer = gate_keys.token(sub, groups=["ml-senior"])
        response = workflow(gate.url, reviewer, "approve", name=name, version=version, stage="Production",
                            archive_existing_versions=True)
        message = assert_mlflow_error(response, 403, "PERMISSION_DENIED")
        assert "you created version" in message, message

    # So CI still finds no approval, and the version stays in Staging.
    response = http(gate.url, "POST", "/api/2.0/mlflow/model-versions/transition-stage", ci,
                    json={"name": name, "version": version, "stage": "Production", "archive_existing_versions": True})
    message = assert_mlflow_error(response, 403, "PERMISSION_DENIED")
    assert "approval" in message, message
    mv = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=name, version=version)["model_version"]
    assert mv["current_stage"] == "Staging"
    assert tags_of(mv)[CREATED_BY] == "alice"
