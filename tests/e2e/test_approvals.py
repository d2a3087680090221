"""The review step, end to end against the real MLflow behind the gate: Databricks-compatible transition
requests and comments served by the gate (state in reserved model-version tags), driven over REST, with the real
`databricks-sdk` client, and with the `mlflow-gate` commands."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import GATE_BIN
from helpers import http, new_model_version, tags_of, upstream, upstream_stage, workflow


@pytest.fixture
def people(gate_keys) -> dict[str, str]:
    return {
        "alice": gate_keys.token("alice"),
        "bob": gate_keys.token("bob", groups=["ml-senior"]),
        "dave": gate_keys.token("dave", groups=["ml-senior"]),
        "ci": gate_keys.token("ci-bot", groups=["mlflow-ci"]),
    }


def history(gate_url: str, token: str, name: str, version: str) -> list[dict]:
    response = http(gate_url, "GET", "/api/2.0/mlflow/transition-requests/list", token,
                    params={"name": name, "version": version, "include_history": "true"})
    assert response.status_code == 200, response.text
    return response.json()["requests"]


def test_review_story(gate, mlflow_server, client_as, people):
    name, version = new_model_version(client_as(people["alice"]))
    ci = client_as(people["ci"])
    ci.transition_model_version_stage(name, version, "Staging")

    # The author asks for Production and explains why.
    response = workflow(gate.url, people["alice"], "create", name=name, version=version, stage="Production",
                        comment="val_auc 0.91 on the November data")
    assert response.status_code == 200, response.text
    request = response.json()["request"]
    assert request["to_stage"] == "Production" and request["user_id"] == "alice"
    comment = http(gate.url, "POST", "/api/2.0/mlflow/comments/create", people["bob"],
                   json={"name": name, "version": version, "comment": "checked the drift report"})
    assert comment.status_code == 200, comment.text
    assert comment.json()["comment"]["user_id"] == "bob"

    # Without an approval, CI cannot promote.
    with pytest.raises(Exception) as raised:
        client_as(people["ci"]).transition_model_version_stage(name, version, "Production", archive_existing_versions=True)
    assert "approval" in str(raised.value)
    assert upstream_stage(mlflow_server, name, version) == "Staging"

    # Self-approval is refused; a reviewer who is not the author approves. The approval only records.
    own = workflow(gate.url, people["alice"], "approve", name=name, version=version, stage="Production",
                   archive_existing_versions=True)
    assert own.status_code == 403, own.text
    approved = workflow(gate.url, people["bob"], "approve", name=name, version=version, stage="Production",
                        archive_existing_versions=True, comment="LGTM")
    assert approved.status_code == 200, approved.text
    activity = approved.json()["activity"]
    assert activity["activity_type"] == "APPROVED_REQUEST" and activity["user_id"] == "bob"
    assert "not applied" in activity["system_comment"]
    assert upstream_stage(mlflow_server, name, version) == "Staging"

    # Now CI may promote: the policy sees bob's approval.
    promoted = client_as(people["ci"]).transition_model_version_stage(name, version, "Production",
                                                                      archive_existing_versions=True)
    assert promoted.current_stage == "Production"
    assert upstream_stage(mlflow_server, name, version) == "Production"

    # The history shows who did what; the state lives in reserved tags of the version in MLflow.
    kinds = [(a["activity_type"], a["user_id"]) for a in history(gate.url, people["alice"], name, version)]
    assert kinds == [("REQUESTED_TRANSITION", "alice"), ("NEW_COMMENT", "bob"), ("APPROVED_REQUEST", "bob")]
    mv = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=name, version=version)["model_version"]
    assert sum(k.startswith("mlflow_gate.activity.") for k in tags_of(mv)) == 3
    open_requests = http(gate.url, "GET", "/api/2.0/mlflow/transition-requests/list", people["alice"],
                         params={"name": name, "version": version}).json()["requests"]
    assert open_requests == []


def test_rejected_request_cannot_be_approved(gate, mlflow_server, client_as, people):
    name, version = new_model_version(client_as(people["alice"]))
    assert workflow(gate.url, people["alice"], "create", name=name, version=version, stage="Staging").status_code == 200
    rejected = workflow(gate.url, people["bob"], "reject", name=name, version=version, stage="Staging",
                        comment="missing the drift report")
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["activity"]["activity_type"] == "REJECTED_REQUEST"
    late = workflow(gate.url, people["dave"], "approve", name=name, version=version, stage="Staging",
                    archive_existing_versions=False)
    assert late.status_code == 400, late.text
    assert late.json()["error_code"] == "INVALID_STATE"
    assert upstream_stage(mlflow_server, name, version) == "None"


def test_approval_is_void_when_the_evidence_changes(gate, mlflow_server, client_as, people):
    alice = client_as(people["alice"])
    name, version = new_model_version(alice)
    client_as(people["ci"]).transition_model_version_stage(name, version, "Staging")
    assert workflow(gate.url, people["alice"], "create", name=name, version=version, stage="Production").status_code == 200
    assert workflow(gate.url, people["bob"], "approve", name=name, version=version, stage="Production",
                    archive_existing_versions=True).status_code == 200
    # Someone rewrites the evidence after the review: the approval no longer counts.
    run_id = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=name, version=version)["model_version"]["run_id"]
    client_as(people["alice"]).log_metric(run_id, "val_auc", 0.99)
    with pytest.raises(Exception) as raised:
        client_as(people["ci"]).transition_model_version_stage(name, version, "Production", archive_existing_versions=True)
    assert "approval" in str(raised.value)
    assert upstream_stage(mlflow_server, name, version) == "Staging"


def test_databricks_sdk_round_trip(gate, mlflow_server, client_as, people):
    from databricks.sdk import WorkspaceClient

    name, version = new_model_version(client_as(people["alice"]))
    client_as(people["ci"]).transition_model_version_stage(name, version, "Staging")
    alice = WorkspaceClient(host=gate.url, token=people["alice"]).model_registry
    bob = WorkspaceClient(host=gate.url, token=people["bob"]).model_registry

    created = alice.create_transition_request(name=name, version=version, stage="Production", comment="please")
    assert created.request.to_stage == "Production" and created.request.user_id == "alice"
    comment = bob.create_comment(name=name, version=version, comment="looking")
    edited = bob.update_comment(id=comment.comment.id, comment="looks good")
    assert edited.comment.comment == "looks good"
    assert [r.user_id for r in alice.list_transition_requests(name=name, version=version)] == ["alice"]
    # Cancel (query parameters, as the SDK sends them) and ask again.
    cancelled = alice.delete_transition_request(name=name, version=version, stage="Production", creator="alice")
    assert cancelled.activity.activity_type.value == "CANCELLED_REQUEST"
    assert list(alice.list_transition_requests(name=name, version=version)) == []
    alice.create_transition_request(name=name, version=version, stage="Production")
    approved = bob.approve_transition_request(name=name, version=version, stage="Production",
                                              archive_existing_versions=True, comment="ok")
    assert approved.activity.activity_type.value == "APPROVED_REQUEST"
    bob.delete_comment(id=comment.comment.id)
    kinds = [a["activity_type"] for a in history(gate.url, people["alice"], name, version)]
    assert kinds == ["REQUESTED_TRANSITION", "CANCELLED_REQUEST", "REQUESTED_TRANSITION", "APPROVED_REQUEST"]
    # A reviewer's SDK approval did not promote; CI does, because the approval exists.
    assert upstream_stage(mlflow_server, name, version) == "Staging"
    client_as(people["ci"]).transition_model_version_stage(name, version, "Production", archive_existing_versions=True)
    assert upstream_stage(mlflow_server, name, version) == "Production"


def test_cli_commands(gate, mlflow_server, client_as, people):
    name, version = new_model_version(client_as(people["alice"]))

    def cli(token: str, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "MLFLOW_TRACKING_URI": gate.url, "MLFLOW_TRACKING_TOKEN": token}
        return subprocess.run([str(GATE_BIN), *args, "--name", name, "--version", version], env=env,
                              capture_output=True, text=True, timeout=60)

    made = cli(people["alice"], "request-transition", "--stage", "Staging", "--comment", "first look")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["request"]["to_stage"] == "Staging"
    own = cli(people["alice"], "approve", "--stage", "Staging")
    assert own.returncode != 0 and "PERMISSION_DENIED" in own.stderr, own.stderr
    listed = cli(people["bob"], "requests")
    assert [r["to_stage"] for r in json.loads(listed.stdout)["requests"]] == ["Staging"]
    rejected = cli(people["bob"], "reject", "--stage", "Staging", "--comment", "needs a drift report")
    assert rejected.returncode == 0, rejected.stderr
    every = cli(people["bob"], "requests", "--history")
    assert [a["activity_type"] for a in json.loads(every.stdout)["requests"]] == ["REQUESTED_TRANSITION", "REJECTED_REQUEST"]
