"""Helpers shared by the end-to-end suites: plain HTTP to the gate or straight to MLflow, and small fixtures of
MLflow state made through the real client."""

from __future__ import annotations

import base64
import json
import re
import socket
import uuid

import requests


def unique(prefix: str) -> str:
    return f"e2e-{prefix}-{uuid.uuid4().hex[:12]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def http(base_url: str, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
    """One plain HTTP request (no proxies from the environment, no retries); `headers` are added to the token's."""
    with requests.Session() as session:
        session.trust_env = False
        headers = {**(bearer(token) if token else {}), **kwargs.pop("headers", {})}
        return session.request(method, base_url + path, headers=headers, timeout=60, **kwargs)


def upstream(mlflow_server, path: str, **params) -> dict:
    """GET straight from MLflow (no gate, no token); asserts 200 and returns the JSON."""
    response = http(mlflow_server.url, "GET", path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def upstream_has_experiment(mlflow_server, name: str) -> bool:
    response = http(mlflow_server.url, "GET", "/api/2.0/mlflow/experiments/get-by-name",
                    params={"experiment_name": name})
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def upstream_stage(mlflow_server, name: str, version: str) -> str:
    mv = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=name, version=version)
    return mv["model_version"]["current_stage"]


def strip_request_id(message: str) -> str:
    """The gate quotes a per-request id in every error message; two requests share everything else."""
    return re.sub(r" \(request id [0-9a-f]+\)$", "", message)


def assert_mlflow_error(response: requests.Response, status: int, error_code: str) -> str:
    """Asserts MLflow's error shape and returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["error_code"] == error_code, body
    assert isinstance(body["message"], str) and body["message"].strip(), body
    return body["message"]


def assert_denied(response: requests.Response, *mentions: str) -> str:
    """Asserts a 403 `PERMISSION_DENIED` in MLflow's error shape whose message names each of `mentions`."""
    message = assert_mlflow_error(response, 403, "PERMISSION_DENIED")
    for text in mentions:
        assert text in message, message
    return message


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


GOOD_TAGS = {"data_version": "2026-11", "git_commit": "0f1e2d3c"}


def gated_run(client, metrics: dict | None = None, tags: dict | None = None):
    """A finished run with the metrics and tags the default evaluation gate asks for (or the ones given)."""
    run = client.create_run(client.create_experiment(unique("exp")), tags=GOOD_TAGS if tags is None else tags)
    for key, value in ({"val_auc": 0.91} if metrics is None else metrics).items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    return run


def new_model_version(client, name: str | None = None, metrics: dict | None = None,
                      tags: dict | None = None) -> tuple[str, str]:
    """A model version (stage None) whose source is a fresh run's artifact directory; the registered model is
    created when `name` is not given."""
    run = gated_run(client, metrics, tags)
    if name is None:
        name = unique("model")
        client.create_registered_model(name)
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return name, mv.version


def workflow(gate_url: str, token: str, action: str, **fields) -> requests.Response:
    """A Databricks-style transition-request call to the gate (create, approve, reject)."""
    return http(gate_url, "POST", f"/api/2.0/mlflow/transition-requests/{action}", token, json=fields)


def approve_for(gate_url: str, name: str, version: str, stage: str, requester: str, reviewer: str) -> None:
    """Requests a transition as `requester` and approves it as `reviewer`; asserts both succeed."""
    response = workflow(gate_url, requester, "create", name=name, version=version, stage=stage)
    assert response.status_code == 200, response.text
    response = workflow(gate_url, reviewer, "approve", name=name, version=version, stage=stage,
                        archive_existing_versions=True)
    assert response.status_code == 200, response.text


def raw_request(base_url: str, request: bytes, timeout: float = 30) -> tuple[int, bytes]:
    """Sends raw bytes (for targets and framings a client library would normalise) and returns (status, body)."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def raw_post(base_url: str, target: str, token: str, body: bytes, content_type: str = "application/json",
             method: str = "POST", extra: str = "", content_length: bool = True) -> tuple[int, bytes]:
    """A request with an exact request target and body bytes (Connection: close). With content_length=False the
    caller frames the body itself (e.g. `extra="Transfer-Encoding: chunked\\r\\n"`)."""
    length = f"Content-Length: {len(body)}\r\n" if content_length else ""
    head = (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\n{length}{extra}Connection: close\r\n\r\n")
    return raw_request(base_url, head.encode() + body)


def tags_of(entity: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in entity.get("tags", [])}


def train_and_register(name: str, val_auc: float = 0.91, experiment: str | None = None) -> str:
    """Trains a tiny model in a run of the current caller tagged as the gate requires, logs `val_auc`, and registers
    it as `name` the MLflow 3 way (`log_model(..., registered_model_name=...)`: the version's source is
    `models:/m-<id>`). Returns the version."""
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]])
    y = np.array([0, 1, 0, 1])
    mlflow.set_experiment(experiment or unique("exp"))
    with mlflow.start_run(tags=GOOD_TAGS):
        mlflow.log_metric("val_auc", val_auc)
        info = mlflow.sklearn.log_model(LogisticRegression().fit(X, y), name="model", registered_model_name=name)
    return str(info.registered_model_version)


def denied(call) -> str:
    """Runs an MLflow client call that the gate must refuse; returns the message."""
    from mlflow.exceptions import MlflowException

    try:
        call()
    except MlflowException as raised:
        assert raised.error_code == "PERMISSION_DENIED", raised
        return str(raised)
    raise AssertionError("the call was not refused")
