"""The real MLflow Python client, talking to a real MLflow server through the gate with bearer tokens.

Every test checks the outcome against MLflow itself (plain HTTP straight to the upstream, bypassing the gate).
"""

from __future__ import annotations

import base64
import filecmp
import json
import re
import time
import uuid

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pytest
import requests
import sklearn
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression

# What the default policy's denial of a Production transition must name (the group that may do it).
PRODUCTION_DENIAL_MENTIONS = "only the CI service account may transition to Production"


from helpers import (approve_for, assert_mlflow_error, http, jwt_claims, new_model_version, strip_request_id, unique,
                     upstream, upstream_has_experiment, upstream_stage)


# ---------------------------------------------------------------------------------------------------------------


def test_tracking_and_registry_round_trip(client_as, gate_keys, mlflow_server):
    client = client_as(gate_keys.token("alice"))
    experiment_id = client.create_experiment(unique("exp"))
    name = unique("model")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)

    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params({"C": 0.5, "solver": "lbfgs"})
        model = LogisticRegression(C=0.5, solver="lbfgs").fit(X, y)
        accuracy = float(model.score(X, y))
        mlflow.log_metric("accuracy", accuracy)
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=name,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],  # skips the slow requirement inference
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, "candidate", version)

    loaded = mlflow.pyfunc.load_model(f"models:/{name}@candidate")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))

    run_id = run.info.run_id
    data = upstream(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    assert data["info"]["experiment_id"] == experiment_id
    assert data["info"]["status"] == "FINISHED"
    assert {p["key"]: p["value"] for p in data["data"]["params"]} == {"C": "0.5", "solver": "lbfgs"}
    assert {m["key"]: m["value"] for m in data["data"]["metrics"]} == {"accuracy": pytest.approx(accuracy)}
    registered = upstream(mlflow_server, "/api/2.0/mlflow/registered-models/get", name=name)["registered_model"]
    assert registered["aliases"] == [{"alias": "candidate", "version": version}]
    mv = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=name, version=version)["model_version"]
    assert mv["status"] == "READY"
    assert mv["run_id"] == run_id
    by_alias = upstream(mlflow_server, "/api/2.0/mlflow/registered-models/alias", name=name, alias="candidate")
    assert by_alias["model_version"]["version"] == version


def test_no_token_is_401_with_clear_message(client_as, gate, mlflow_server):
    client = client_as(None)
    name = unique("exp")

    with pytest.raises(MlflowException) as raised:
        client.create_experiment(name)
    response = http(gate.url, "POST", "/api/2.0/mlflow/experiments/create", json={"name": name})

    message = assert_mlflow_error(response, 401, "UNAUTHENTICATED")
    assert any(word in message.lower() for word in ("token", "authorization", "bearer")), message
    assert raised.value.error_code == "UNAUTHENTICATED"
    assert strip_request_id(message) in str(raised.value)
    assert not upstream_has_experiment(mlflow_server, name)


def bad_token(kind: str, gate_keys, foreign_keys) -> str:
    if kind == "garbage":
        return "not-a-jwt"
    if kind == "signed-by-unknown-key":
        return foreign_keys.token("alice")
    try:
        token = gate_keys.token("alice", ttl=-600)  # well past any clock-skew leeway
    except RuntimeError as err:
        pytest.skip(f"cannot mint an expired token: `mlflow-gate dev token --ttl=-600` is refused ({err})")
    assert jwt_claims(token)["exp"] < time.time() - 300
    return token


@pytest.mark.parametrize(
    ("kind", "mentions"),
    [
        ("garbage", ("token", "jwt", "malformed", "invalid")),
        ("signed-by-unknown-key", ("signature", "key", "kid", "invalid")),
        ("expired", ("expired",)),
    ],
)
def test_bad_token_is_401(kind, mentions, client_as, gate, gate_keys, foreign_keys, mlflow_server):
    token = bad_token(kind, gate_keys, foreign_keys)
    client = client_as(token)
    name = unique("exp")

    with pytest.raises(MlflowException) as raised:
        client.create_experiment(name)
    response = http(gate.url, "POST", "/api/2.0/mlflow/experiments/create", token, json={"name": name})

    message = assert_mlflow_error(response, 401, "UNAUTHENTICATED")
    assert any(word in message.lower() for word in mentions), message
    assert raised.value.error_code == "UNAUTHENTICATED"
    assert strip_request_id(message) in str(raised.value)
    assert not upstream_has_experiment(mlflow_server, name)


def test_policy_denial_reaches_client(client_as, gate, gate_keys, mlflow_server):
    alice = gate_keys.token("alice")
    client = client_as(alice)
    name, version = new_model_version(client)

    with pytest.raises(MlflowException) as raised:
        client.transition_model_version_stage(name, version, "Production")
    body = {"name": name, "version": version, "stage": "Production", "archive_existing_versions": False}
    response = http(gate.url, "POST", "/api/2.0/mlflow/model-versions/transition-stage", alice, json=body)

    message = assert_mlflow_error(response, 403, "PERMISSION_DENIED")
    assert PRODUCTION_DENIAL_MENTIONS in message
    assert raised.value.error_code == "PERMISSION_DENIED"
    assert strip_request_id(message) in str(raised.value)
    assert upstream_stage(mlflow_server, name, version) == "None"

    # The governed path: CI to Staging, a reviewer's approval, then CI to Production.
    ci_token = gate_keys.token("ci-bot", groups=["mlflow-ci"])
    client_as(ci_token).transition_model_version_stage(name, version, "Staging")
    approve_for(gate.url, name, version, "Production", alice, gate_keys.token("bob", groups=["ml-senior"]))
    promoted = client_as(ci_token).transition_model_version_stage(name, version, "Production", archive_existing_versions=True)
    assert promoted.current_stage == "Production"
    assert upstream_stage(mlflow_server, name, version) == "Production"
