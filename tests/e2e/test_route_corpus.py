"""Alternate spellings and parameter tricks for registry mutations (section 6 of the MLflow HTTP surface notes),
against the real MLflow behind the gate. Each one either reaches MLflow as exactly the operation the policy
evaluated, or is refused; in both cases MLflow's state afterwards is what the decision implies.

The rule exercised is the default policy's "only the CI service account may transition to Production": an
engineer's Production transition must never get through, whatever its spelling, and CI's must take effect.
"""

from __future__ import annotations

import json

import pytest

from helpers import approve_for, http, new_model_version, raw_post, tags_of, upstream, upstream_stage

API = "/api/2.0/mlflow/model-versions/transition-stage"


@pytest.fixture
def engineer(gate_keys) -> str:
    return gate_keys.token("alice")


@pytest.fixture
def ci(gate_keys) -> str:
    return gate_keys.token("ci-bot", groups=["mlflow-ci"])


@pytest.fixture
def version(client_as, engineer) -> tuple[str, str]:
    """A fresh model version in stage None, created by the engineer through the gate."""
    return new_model_version(client_as(engineer))


def body(name: str, version: str, stage: str = "Production", **extra) -> bytes:
    return json.dumps({"name": name, "version": version, "stage": stage, **extra}).encode()


# (request target, body maker, content type, expected status) — every one is an engineer's Production transition.
SPELLINGS = [
    ("plain", API, lambda n, v: body(n, v), "application/json", 403),
    ("ajax twin", "/ajax-api/2.0/mlflow/model-versions/transition-stage", lambda n, v: body(n, v), "application/json", 403),
    ("upper-case stage", API, lambda n, v: body(n, v, "PRODUCTION"), "application/json", 403),
    ("lower-case stage", API, lambda n, v: body(n, v, "production"), "application/json", 403),
    ("encoded slash", "/api/2.0/mlflow/model-versions%2Ftransition-stage", lambda n, v: body(n, v), "application/json", 403),
    ("encoded letter", "/%61pi/2.0/mlflow/model-versions/transition-stage", lambda n, v: body(n, v), "application/json", 403),
    ("leading double slash", "/" + API, lambda n, v: body(n, v), "application/json", 400),
    ("inner double slash", "/api//2.0/mlflow/model-versions/transition-stage", lambda n, v: body(n, v), "application/json", 400),
    ("dot segments", "/api/2.0/mlflow/x/../model-versions/transition-stage", lambda n, v: body(n, v), "application/json", 400),
    ("encoded dot segments", "/api/2.0/mlflow/x/%2e%2e/model-versions/transition-stage", lambda n, v: body(n, v), "application/json", 400),
    ("path parameter", API + ";jsessionid=1", lambda n, v: body(n, v), "application/json", 400),
    ("double-encoded slash", "/api/2.0/mlflow/model-versions%252Ftransition-stage", lambda n, v: body(n, v), "application/json", 400),
    ("backslash", "/api/2.0/mlflow/model-versions%5Ctransition-stage", lambda n, v: body(n, v), "application/json", 400),
    ("absolute form", "http://127.0.0.1" + API, lambda n, v: body(n, v), "application/json", 400),
    ("trailing slash (unknown route)", API + "/", lambda n, v: body(n, v), "application/json", 403),
    ("upper-case path (unknown route)", API.upper(), lambda n, v: body(n, v), "application/json", 403),
    ("duplicate key, last wins in MLflow",
     API, lambda n, v: f'{{"name": "{n}", "version": "{v}", "stage": "Staging", "stage": "Production"}}'.encode(),
     "application/json", 400),
    ("double-encoded JSON", API, lambda n, v: json.dumps(body(n, v).decode()).encode(), "application/json", 400),
    ("UTF-16 body", API, lambda n, v: body(n, v).decode().encode("utf-16"), "application/json", 400),
    ("UTF-8 BOM", API, lambda n, v: b"\xef\xbb\xbf" + body(n, v), "application/json", 400),
    ("camelCase flag", API, lambda n, v: body(n, v, archiveExistingVersions=True), "application/json", 403),
    ("both spellings of a field", API,
     lambda n, v: body(n, v, archive_existing_versions=False, archiveExistingVersions=True), "application/json", 400),
    ("query says Staging, body says Production", API + "?stage=Staging", lambda n, v: body(n, v), "application/json", 403),
    ("text/plain content type", API, lambda n, v: body(n, v), "text/plain", 403),
]


@pytest.mark.parametrize(("label", "target", "make_body", "content_type", "status"), SPELLINGS,
                         ids=[s[0] for s in SPELLINGS])
def test_engineer_production_transition_never_gets_through(label, target, make_body, content_type, status,
                                                            gate, mlflow_server, engineer, version):
    name, v = version
    got, reply = raw_post(gate.url, target, engineer, make_body(name, v), content_type)
    assert got == status, f"{label}: {got} {reply[:300]!r}"
    assert upstream_stage(mlflow_server, name, v) == "None", f"{label}: MLflow's state changed"


def test_chunked_body_is_evaluated_and_forwarded_whole(gate, mlflow_server, engineer, ci, version):
    name, v = version
    payload = body(name, v, "Staging")
    chunked = f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
    status, reply = raw_post(gate.url, API, ci, chunked, extra="Transfer-Encoding: chunked\r\n", content_length=False)
    assert status == 200, reply  # MLflow's Flask routes read chunked bodies as empty: this worked only via the gate
    assert upstream_stage(mlflow_server, name, v) == "Staging"


def test_ci_transition_in_alternate_spellings_takes_effect(gate, mlflow_server, ci, version, client_as, engineer,
                                                          gate_keys):
    name, v = version
    reviewer = gate_keys.token("bob", groups=["ml-senior"])
    client_as(ci).transition_model_version_stage(name, v, "Staging")
    approve_for(gate.url, name, v, "Production", engineer, reviewer)
    # The UI's twin route, an encoded slash, lower-case stage and the camelCase flag: one operation, as MLflow
    # reads it, and allowed because CI asks for an approved version.
    status, reply = raw_post(gate.url, "/ajax-api/2.0/mlflow/model-versions%2Ftransition-stage", ci,
                             body(name, v, "production", archiveExistingVersions=True))
    assert status == 200, reply
    assert upstream_stage(mlflow_server, name, v) == "Production"
    # A second version promoted the same way archives the first (archive_existing_versions reached MLflow).
    _, v2 = new_model_version(client_as(engineer), name=name)
    client_as(ci).transition_model_version_stage(name, v2, "Staging")
    approve_for(gate.url, name, v2, "Production", engineer, reviewer)
    status, reply = raw_post(gate.url, API, ci, body(name, v2, "PRODUCTION", archiveExistingVersions=True))
    assert status == 200, reply
    assert upstream_stage(mlflow_server, name, v2) == "Production"
    assert upstream_stage(mlflow_server, name, v) == "Archived"


def test_parameters_are_read_where_mlflow_reads_them(gate, mlflow_server, engineer, version):
    name, v = version
    # POST: MLflow reads the body; a query string naming a reserved key does not matter, the body's key does.
    status, reply = raw_post(gate.url, "/api/2.0/mlflow/registered-models/set-tag?key=mlflow_gate.created_by", engineer,
                             json.dumps({"name": name, "key": "team", "value": "fraud"}).encode())
    assert status == 200, reply
    assert tags_of(upstream(mlflow_server, "/api/2.0/mlflow/registered-models/get", name=name)["registered_model"])["team"] == "fraud"
    # ...and the other way round: an innocent query with a reserved key in the body is refused.
    status, _ = raw_post(gate.url, "/api/2.0/mlflow/registered-models/set-tag?key=team", engineer,
                         json.dumps({"name": name, "key": "mlflow_gate.created_by", "value": "mallory"}).encode())
    assert status == 403
    # GET: MLflow reads the query and falls back to a JSON body when there is none; a GET with a body is refused.
    response = http(gate.url, "GET", "/api/2.0/mlflow/registered-models/get", engineer, data=json.dumps({"name": name}),
                    headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    # A target field repeated with different values in a GET query is ambiguous: refused.
    response = http(gate.url, "GET", f"/api/2.0/mlflow/registered-models/get?name={name}&name=other", engineer)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("target", [
    "/ajax-api/3.0/mlflow/demo/generate",
    "/api/3.0/mlflow/prompt-optimization/jobs",
    "/ajax-api/3.0/mlflow/scorer/invoke",
    "/ajax-api/3.0/mlflow/genai/evaluate/invoke",
    "/ajax-api/3.0/mlflow/issues/invoke",
    "/ajax-api/3.0/jobs/",
    "/ajax-api/3.0/mlflow/assistant/sessions",
])
def test_server_side_writers_are_blocked_for_engineers(target, gate, engineer):
    status, reply = raw_post(gate.url, target, engineer, b"{}")
    assert status == 403, (target, reply[:300])


@pytest.mark.parametrize("target", ["/signup", "/api/2.0/mlflow/users/create", "/api/3.0/mlflow/roles/create",
                                    "/api/2.0/mlflow/registered-models/obliterate"])
def test_unknown_mutating_routes_are_denied(target, gate, engineer):
    status, reply = raw_post(gate.url, target, engineer, b'{"username": "x", "password": "y"}')
    assert status == 403, (target, reply[:300])


@pytest.mark.parametrize("target", [
    "/api/2.0/mlflow-artifacts/artifacts/0/../../../etc/passwd",
    "/api/2.0/mlflow-artifacts/artifacts/0/%2e%2e/%2e%2e/etc/passwd",
    "/api/2.0/mlflow-artifacts/artifacts/0/%252e%252e/etc/passwd",
    "/get-artifact/..%5C..%5Cetc",
])
def test_artifact_traversal_is_refused(target, gate, engineer):
    for method in ("GET", "PUT", "DELETE"):
        status, reply = raw_post(gate.url, target, engineer, b"x", "application/octet-stream", method=method)
        assert status == 400, (method, target, reply[:300])
