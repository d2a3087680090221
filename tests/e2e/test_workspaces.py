"""MLflow workspaces behind the gate: the same model names in two workspaces (`team` and `default`) of a real
MLflow 3 started with `--enable-workspaces`. The policy must judge the object the request addresses: the facts the
gate looks up, the approvals it records, the stage history it writes and the events it sends all belong to the
request's workspace (X-MLFLOW-WORKSPACE). Every test checks MLflow's state in both workspaces."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests

from conftest import POLL_INTERVAL_SECS, Server, gate_process, gate_settings, mlflow_process
from helpers import GOOD_TAGS, assert_mlflow_error, http, raw_post, tags_of, unique
from test_webhooks import SECRET, Receiver

TEAM, DEFAULT = "team", "default"
WORKSPACE_HEADER = "X-MLFLOW-WORKSPACE"
HISTORY_PREFIX = "mlflow_gate.history."  # one tag per history entry
ACTIVITY_PREFIX = "mlflow_gate.activity."
HOOK_EVENTS = ["MODEL_VERSION_ALIAS_SET", "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "TRANSITION_REQUEST_CREATED",
               "POLICY_DENIED"]


@dataclass(frozen=True)
class Tenant:
    """One workspace, through the gate or straight at MLflow; every request names the workspace explicitly."""

    workspace: str
    gate_url: str
    mlflow_url: str

    def call(self, method: str, path: str, token: str, **kwargs) -> requests.Response:
        return http(self.gate_url, method, path, token, headers={WORKSPACE_HEADER: self.workspace}, **kwargs)

    def direct(self, method: str, path: str, **kwargs) -> requests.Response:
        return http(self.mlflow_url, method, path, headers={WORKSPACE_HEADER: self.workspace}, **kwargs)

    def version(self, name: str, version: str) -> dict | None:
        """The model version as MLflow has it, or None when it does not exist."""
        response = self.direct("GET", "/api/2.0/mlflow/model-versions/get", params={"name": name, "version": version})
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return response.json()["model_version"]

    def stage(self, name: str, version: str) -> str | None:
        mv = self.version(name, version)
        return mv and mv["current_stage"]


@dataclass(frozen=True)
class Deployment:
    """MLflow with workspaces, the gate in front of it, and the gate's webhook receiver."""

    mlflow: Server
    gate: Server
    receiver: Receiver

    def tenant(self, workspace: str) -> Tenant:
        return Tenant(workspace, self.gate.url, self.mlflow.url)

    @property
    def logs(self) -> list[tuple[str, Path]]:  # attached to failure reports by conftest
        return [("workspaces gate", self.gate.log), ("workspaces mlflow", self.mlflow.log)]

    def events_for(self, model: str, count: int, timeout: float = 30) -> list[dict]:
        """Waits until `count` webhook events about `model` arrived and returns them."""
        deadline = time.monotonic() + timeout
        while True:
            with self.receiver.lock:
                events = [e for e in self.receiver.events if e.get("model_name") == model]
            if len(events) >= count or time.monotonic() > deadline:
                return events
            time.sleep(POLL_INTERVAL_SECS)


@pytest.fixture(scope="module")
def deployment(gate_keys, tmp_path_factory) -> Iterator[Deployment]:
    receiver = Receiver()
    hooks = {
        "webhook_delivery": {"spool_dir": str(tmp_path_factory.mktemp("ws-spool")), "initial_backoff_ms": 50,
                             "max_backoff_ms": 400},
        "webhooks": [{"url": receiver.url, "events": HOOK_EVENTS, "secret_env": "E2E_HOOK_SECRET"}],
    }
    try:
        with mlflow_process(tmp_path_factory.mktemp("ws-mlflow"), "--enable-workspaces") as mlflow_server:
            created = http(mlflow_server.url, "POST", "/api/3.0/mlflow/workspaces", json={"name": TEAM})
            assert created.status_code == 201, created.text
            config = gate_settings(mlflow_server.url, gate_keys.jwks, hooks)
            with gate_process(tmp_path_factory.mktemp("ws-gate"), config, {"E2E_HOOK_SECRET": SECRET}) as gate:
                yield Deployment(mlflow_server, gate, receiver)
    finally:
        receiver.close()


@pytest.fixture(scope="module")
def people(gate_keys) -> dict[str, str]:
    return {
        "alice": gate_keys.token("alice"),
        "bob": gate_keys.token("bob", groups=["ml-senior"]),
        "ci": gate_keys.token("ci-bot", groups=["mlflow-ci"]),
    }


def seed_version(tenant: Tenant, name: str, stage: str) -> str:
    """Version 1 of a new model `name`, made straight in MLflow (no gate) and put in `stage`; the model carries the
    creator stamp of alice (as if she had registered it through the gate), so resource permissions let her act."""
    creator = [{"key": "mlflow_gate.created_by", "value": "alice"}]
    created = tenant.direct("POST", "/api/2.0/mlflow/registered-models/create", json={"name": name, "tags": creator})
    assert created.status_code == 200, created.text
    created = tenant.direct("POST", "/api/2.0/mlflow/model-versions/create",
                            json={"name": name, "source": "s3://models/fraud"})
    assert created.status_code == 200, created.text
    version = created.json()["model_version"]["version"]
    if stage != "None":
        moved = tenant.direct("POST", "/api/2.0/mlflow/model-versions/transition-stage",
                              json={"name": name, "version": version, "stage": stage,
                                    "archive_existing_versions": False})
        assert moved.status_code == 200, moved.text
    return version


def gated_version(tenant: Tenant, token: str, name: str) -> str:
    """Version 1 of a new model `name` registered through the gate by the token's subject, from a finished run that
    passes the default evaluation gate (the REST calls the MLflow client makes)."""
    def ok(path: str, body: dict) -> dict:
        response = tenant.call("POST", f"/api/2.0/mlflow/{path}", token, json=body)
        assert response.status_code == 200, f"{path}: {response.text}"
        return response.json()

    experiment = ok("experiments/create", {"name": unique("exp")})["experiment_id"]
    tags = [{"key": k, "value": v} for k, v in GOOD_TAGS.items()]
    run = ok("runs/create", {"experiment_id": experiment, "start_time": int(time.time() * 1000), "tags": tags})["run"]
    run_id = run["info"]["run_id"]
    now = int(time.time() * 1000)
    ok("runs/log-metric", {"run_id": run_id, "key": "val_auc", "value": 0.91, "timestamp": now, "step": 0})
    ok("runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": now})
    ok("registered-models/create", {"name": name})
    source = f"{run['info']['artifact_uri']}/model"
    return ok("model-versions/create", {"name": name, "source": source, "run_id": run_id})["model_version"]["version"]


def transition(tenant: Tenant, token: str, name: str, version: str, stage: str) -> requests.Response:
    return tenant.call("POST", "/api/2.0/mlflow/model-versions/transition-stage", token,
                       json={"name": name, "version": version, "stage": stage,
                             "archive_existing_versions": stage == "Production"})


@pytest.mark.parametrize("protected_in, open_in", [(TEAM, DEFAULT), (DEFAULT, TEAM)])
def test_engineer_cannot_delete_a_production_version_even_if_its_namesake_elsewhere_is_unprotected(
        deployment, people, protected_in, open_in):
    protected, unprotected = deployment.tenant(protected_in), deployment.tenant(open_in)
    name = unique("shared")
    version = seed_version(protected, name, "Production")
    assert seed_version(unprotected, name, "None") == version

    denied = protected.call("DELETE", "/api/2.0/mlflow/model-versions/delete", people["alice"],
                            json={"name": name, "version": version})
    message = assert_mlflow_error(denied, 403, "PERMISSION_DENIED")
    assert "is in Production" in message, message
    assert protected.stage(name, version) == "Production"
    assert unprotected.stage(name, version) == "None"

    # Where the policy allows it, the delete goes through, and only in the workspace the request named.
    allowed = unprotected.call("DELETE", "/api/2.0/mlflow/model-versions/delete", people["alice"],
                               json={"name": name, "version": version})
    assert allowed.status_code == 200, allowed.text
    assert unprotected.version(name, version) is None
    assert protected.stage(name, version) == "Production"


def test_engineer_cannot_move_a_production_version_out_of_production_in_its_workspace(deployment, people):
    team, default = deployment.tenant(TEAM), deployment.tenant(DEFAULT)
    name = unique("shared")
    version = seed_version(team, name, "Production")
    assert seed_version(default, name, "Staging") == version

    denied = transition(team, people["alice"], name, version, "Archived")
    message = assert_mlflow_error(denied, 403, "PERMISSION_DENIED")
    assert "out of Production" in message, message
    assert team.stage(name, version) == "Production"
    assert default.stage(name, version) == "Staging"

    allowed = transition(default, people["alice"], name, version, "Archived")
    assert allowed.status_code == 200, allowed.text
    assert default.stage(name, version) == "Archived"
    assert team.stage(name, version) == "Production"


def test_approvals_count_only_in_the_workspace_they_were_given_in(deployment, people):
    team, default = deployment.tenant(TEAM), deployment.tenant(DEFAULT)
    name = unique("shared")
    version = gated_version(team, people["alice"], name)
    assert gated_version(default, people["alice"], name) == version
    for tenant in (team, default):
        staged = transition(tenant, people["ci"], name, version, "Staging")
        assert staged.status_code == 200, staged.text

    # The review happens in team.
    requested = team.call("POST", "/api/2.0/mlflow/transition-requests/create", people["alice"],
                          json={"name": name, "version": version, "stage": "Production"})
    assert requested.status_code == 200, requested.text
    approved = team.call("POST", "/api/2.0/mlflow/transition-requests/approve", people["bob"],
                         json={"name": name, "version": version, "stage": "Production",
                               "archive_existing_versions": True})
    assert approved.status_code == 200, approved.text
    team_tags, default_tags = tags_of(team.version(name, version)), tags_of(default.version(name, version))
    assert sum(k.startswith(ACTIVITY_PREFIX) for k in team_tags) == 2
    assert not any(k.startswith(ACTIVITY_PREFIX) for k in default_tags), default_tags

    # team's approval does not let CI promote default's namesake.
    denied = transition(default, people["ci"], name, version, "Production")
    assert "approval" in assert_mlflow_error(denied, 403, "PERMISSION_DENIED")
    assert default.stage(name, version) == "Staging"
    listed = default.call("GET", "/api/2.0/mlflow/transition-requests/list", people["alice"],
                          params={"name": name, "version": version, "include_history": "true"})
    assert listed.status_code == 200 and listed.json()["requests"] == [], listed.text

    promoted = transition(team, people["ci"], name, version, "Production")
    assert promoted.status_code == 200, promoted.text
    assert team.stage(name, version) == "Production"
    assert default.stage(name, version) == "Staging"

    events = deployment.events_for(name, 3)
    assert sorted((e["event"], e.get("workspace")) for e in events) == [
        ("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", TEAM), ("POLICY_DENIED", DEFAULT),
        ("TRANSITION_REQUEST_CREATED", TEAM)]


def test_stage_history_is_written_to_the_version_in_the_requests_workspace(deployment, people):
    team, default = deployment.tenant(TEAM), deployment.tenant(DEFAULT)
    name = unique("shared")
    version = gated_version(team, people["alice"], name)
    assert gated_version(default, people["alice"], name) == version

    staged = transition(team, people["alice"], name, version, "Staging")
    assert staged.status_code == 200, staged.text
    aliased = team.call("POST", "/api/2.0/mlflow/registered-models/alias", people["alice"],
                        json={"name": name, "alias": "candidate", "version": version})
    assert aliased.status_code == 200, aliased.text

    tags = tags_of(team.version(name, version))
    history = sorted((json.loads(v) for k, v in tags.items() if k.startswith(HISTORY_PREFIX)), key=lambda h: h["at"])
    assert [(h.get("stage"), h.get("alias"), h["by"]) for h in history] == [
        ("Staging", None, "alice"), (None, "candidate", "alice")]
    assert history[0]["request_id"] == staged.headers["x-mlflow-gate-request-id"]
    assert not any(k.startswith(HISTORY_PREFIX) for k in tags_of(default.version(name, version)))
    assert team.stage(name, version) == "Staging"
    assert default.stage(name, version) == "None"


def test_webhook_events_name_the_workspace_of_same_named_models(deployment, people):
    team, default = deployment.tenant(TEAM), deployment.tenant(DEFAULT)
    name = unique("shared")
    version = seed_version(team, name, "None")
    assert seed_version(default, name, "None") == version

    for tenant, alias in ((team, "candidate"), (default, "shadow")):
        moved = tenant.call("POST", "/api/2.0/mlflow/registered-models/alias", people["alice"],
                            json={"name": name, "alias": alias, "version": version})
        assert moved.status_code == 200, moved.text
    denied = transition(team, people["alice"], name, version, "Production")
    assert_mlflow_error(denied, 403, "PERMISSION_DENIED")

    events = deployment.events_for(name, 3)
    assert sorted((e["event"], e.get("alias"), e.get("workspace")) for e in events) == [
        ("MODEL_VERSION_ALIAS_SET", "candidate", TEAM), ("MODEL_VERSION_ALIAS_SET", "shadow", DEFAULT),
        ("POLICY_DENIED", None, TEAM)]
    assert deployment.receiver.bad_signatures == 0
    for tenant, alias in ((team, "candidate"), (default, "shadow")):
        model = tenant.direct("GET", "/api/2.0/mlflow/registered-models/get", params={"name": name}).json()
        assert model["registered_model"]["aliases"] == [{"alias": alias, "version": version}]
    assert team.stage(name, version) == default.stage(name, version) == "None"


def test_an_invalid_or_repeated_workspace_header_is_refused_before_anything_reaches_mlflow(deployment, people):
    name = unique("shared")
    for bad in ("Team", "t", "api", "team,default"):
        tenant = deployment.tenant(bad)
        response = tenant.call("POST", "/api/2.0/mlflow/registered-models/create", people["alice"],
                               json={"name": name})
        assert "X-MLFLOW-WORKSPACE" in assert_mlflow_error(response, 400, "INVALID_PARAMETER_VALUE")
    # Two headers: the policy could judge one workspace while MLflow acts in the other.
    status, body = raw_post(deployment.gate.url, "/api/2.0/mlflow/registered-models/create", people["alice"],
                            json.dumps({"name": name}).encode(),
                            extra=f"{WORKSPACE_HEADER}: {DEFAULT}\r\n{WORKSPACE_HEADER}: {TEAM}\r\n")
    assert status == 400 and json.loads(body)["error_code"] == "INVALID_PARAMETER_VALUE", body
    for workspace in (TEAM, DEFAULT):
        missing = deployment.tenant(workspace).direct("GET", "/api/2.0/mlflow/registered-models/get",
                                                      params={"name": name})
        assert missing.status_code == 404, missing.text
