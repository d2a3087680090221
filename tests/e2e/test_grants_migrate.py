"""`mlflow-gate grants migrate` against a database made by a real `mlflow server --app-name basic-auth`: users and
per-experiment / per-model permissions are created through MLflow's own auth REST API, then the migration's dry-run
prints what it would write (and writes nothing), the real run writes the grants through the gate (policy-checked:
a non-manager's run is refused), the grants read back and are enforced for the subjects `--subject-prefix` makes
of the basic-auth usernames, and what cannot be migrated (the basic-auth admin, a type-wide pattern, a scorer
permission) is listed with what to do instead. Also migrated: an AI-gateway endpoint permission, a role's permission
in another MLflow workspace (written in that workspace), and, with `--roles-as-groups`, a named role as a group
grant."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from conftest import GATE_BIN, MLFLOW_BIN, REPO, gate_config, gate_process, mlflow_process, run_gate
from helpers import http, tags_of, unique, upstream

ADMIN_PASSWORD = "migrate-admin-password-1"
PREFIX = "ba:"
GRANTS = "mlflow_gate.grants"  # the legacy combined tag (no longer written)
GRANT_PREFIX = "mlflow_gate.grant."  # one tag per grantee; ':' is encoded as .3a
WORKSPACE = "team-ws"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def basic_auth(tmp_path_factory):
    """MLflow's basic-auth app on its own sqlite files; yields (server, path of its permissions database)."""
    venv = MLFLOW_BIN.parent.parent
    deps = subprocess.run([str(REPO / "scripts" / "basic-auth-deps.sh"), str(venv)], capture_output=True, text=True,
                          timeout=600, check=True).stdout.strip().splitlines()[-1]
    tmp = tmp_path_factory.mktemp("basic-auth")
    db = tmp / "basic_auth.db"
    (tmp / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{db}\nadmin_username = admin\nadmin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(tmp / "auth.ini"), "PYTHONPATH": deps,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "migrate-test-secret"}
    with mlflow_process(tmp, "--app-name", "basic-auth", env=env) as server:
        yield server, db


@pytest.fixture(scope="module")
def own_gate(gate_keys, tmp_path_factory):
    """A fresh MLflow (so experiment ids line up with the basic-auth server's), with workspaces and a second one,
    and a gate in front of it."""
    with mlflow_process(tmp_path_factory.mktemp("mlflow-migrate"), "--enable-workspaces") as mlflow:
        created = http(mlflow.url, "POST", "/api/3.0/mlflow/workspaces", json={"name": WORKSPACE})
        assert created.status_code == 201, created.text
        with gate_process(tmp_path_factory.mktemp("gate-migrate"), gate_config(mlflow.url, gate_keys.jwks)) as gate:
            yield mlflow, gate


@pytest.fixture(scope="module")
def people(gate_keys) -> dict[str, str]:
    return {
        "alice": gate_keys.token(PREFIX + "alice", groups=["team-a"]),
        "bob": gate_keys.token(PREFIX + "bob", groups=["team-b"]),
        "carol": gate_keys.token("carol", groups=["reviewers", "ws-editors"]),
        "root": gate_keys.token("root", groups=["mlflow-admin"]),
    }


class World:
    """The same experiments and model on both servers; the permissions only in the basic-auth database."""

    def __init__(self, basic_auth, own_gate, people):
        server, self.db = basic_auth
        self.mlflow, self.gate = own_gate
        admin = basic("admin", ADMIN_PASSWORD)

        def on_basic(path: str, payload: dict) -> dict:
            response = http(server.url, "POST", path, headers=admin, json=payload)
            assert response.status_code == 200, (path, response.text)
            return response.json()

        def on_gate(path: str, payload: dict, workspace: str | None = None) -> dict:
            headers = {"X-MLFLOW-WORKSPACE": workspace} if workspace else {}
            response = http(self.gate.url, "POST", path, people["root"], json=payload, headers=headers)
            assert response.status_code == 200, (path, response.text)
            return response.json()

        self.experiments = []
        for name in (unique("mig-a"), unique("mig-b")):
            behind_gate = on_gate("/api/2.0/mlflow/experiments/create", {"name": name})["experiment_id"]
            in_basic = on_basic("/api/2.0/mlflow/experiments/create", {"name": name})["experiment_id"]
            assert behind_gate == in_basic, "both MLflows are fresh: their experiment ids line up"
            self.experiments.append(behind_gate)
        self.model = unique("mig-model")
        on_gate("/api/2.0/mlflow/registered-models/create", {"name": self.model})
        on_basic("/api/2.0/mlflow/registered-models/create", {"name": self.model})
        for user in ("alice", "bob"):
            on_basic("/api/2.0/mlflow/users/create", {"username": user, "password": f"{user}-password-1234"})
        exp_a, exp_b = self.experiments
        for user, rtype, resource, level in [("alice", "experiment", exp_a, "EDIT"),
                                             ("bob", "experiment", exp_b, "READ"),
                                             ("bob", "registered_model", self.model, "MANAGE")]:
            on_basic("/api/3.0/mlflow/users/permissions/grant",
                     {"username": user, "resource_type": rtype, "resource_id": resource, "permission": level})
        role = on_basic("/api/3.0/mlflow/roles/create", {"name": "reviewers", "workspace": "default"})["role"]["id"]
        for pattern in (exp_b, "*"):
            on_basic("/api/3.0/mlflow/roles/permissions/add",
                     {"role_id": role, "resource_type": "experiment", "resource_pattern": pattern,
                      "permission": "READ"})
        on_basic("/api/3.0/mlflow/roles/assign", {"username": "alice", "role_id": role})
        # Behind the gate only: an experiment in another workspace, and an AI-gateway endpoint (ids the basic-auth
        # database names as they are: it does not check that they exist).
        self.ws_experiment = on_gate("/api/2.0/mlflow/experiments/create", {"name": unique("mig-ws")},
                                     WORKSPACE)["experiment_id"]
        ws_role = on_basic("/api/3.0/mlflow/roles/create", {"name": "ws-editors", "workspace": WORKSPACE})["role"]["id"]
        on_basic("/api/3.0/mlflow/roles/permissions/add",
                 {"role_id": ws_role, "resource_type": "experiment", "resource_pattern": self.ws_experiment,
                  "permission": "EDIT"})
        on_basic("/api/3.0/mlflow/roles/assign", {"username": "bob", "role_id": ws_role})
        gateway = "/api/3.0/mlflow/gateway"
        secret = on_gate(f"{gateway}/secrets/create", {"secret_name": unique("key"), "provider": "openai",
                                                        "secret_value": {"api_key": "sk-test"}})["secret"]
        definition = on_gate(f"{gateway}/model-definitions/create",
                             {"name": unique("def"), "secret_id": secret["secret_id"], "provider": "openai",
                              "model_name": "gpt-4o-mini"})["model_definition"]
        self.endpoint = on_gate(f"{gateway}/endpoints/create", {"name": unique("chat"), "model_configs": [
            {"model_definition_id": definition["model_definition_id"], "linkage_type": "PRIMARY"}]})["endpoint"][
            "endpoint_id"]
        for rtype, resource in [("gateway_endpoint", self.endpoint), ("scorer", f"{exp_a}/judge")]:
            on_basic("/api/3.0/mlflow/users/permissions/grant",
                     {"username": "alice", "resource_type": rtype, "resource_id": resource, "permission": "EDIT"})

    def migrate(self, token: str, *extra: str) -> subprocess.CompletedProcess:
        cmd = [str(GATE_BIN), "grants", "migrate", "--gate-url", self.gate.url, "--token", token,
               "--from", str(self.db), "--subject-prefix", PREFIX, *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def tag_experiment(self, token: str) -> int:
        tag = {"experiment_id": self.experiments[0], "key": "migrated", "value": "yes"}
        return http(self.gate.url, "POST", "/api/2.0/mlflow/experiments/set-experiment-tag", token,
                    json=tag).status_code

    def describe_model(self, token: str) -> int:
        return http(self.gate.url, "PATCH", "/api/2.0/mlflow/registered-models/update", token,
                    json={"name": self.model, "description": "migrated"}).status_code

    def tag_ws_experiment(self, token: str) -> int:
        tag = {"experiment_id": self.ws_experiment, "key": "migrated", "value": "yes"}
        return http(self.gate.url, "POST", "/api/2.0/mlflow/experiments/set-experiment-tag", token, json=tag,
                    headers={"X-MLFLOW-WORKSPACE": WORKSPACE}).status_code

    def tag_endpoint(self, token: str) -> int:
        tag = {"endpoint_id": self.endpoint, "key": "migrated", "value": "yes"}
        return http(self.gate.url, "POST", "/api/3.0/mlflow/gateway/endpoints/set-tag", token, json=tag).status_code

    def grants_upstream(self) -> tuple[dict[str, str], dict[str, str]]:
        """The grant tags of the first experiment and of the model (one tag per grantee; the legacy combined tag
        too, if anything wrote it)."""
        exp = upstream(self.mlflow, "/api/2.0/mlflow/experiments/get", experiment_id=self.experiments[0])
        model = upstream(self.mlflow, "/api/2.0/mlflow/registered-models/get", name=self.model)

        def grant_tags(tags: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in tags.items() if k.startswith(GRANT_PREFIX) or k == GRANTS}

        return grant_tags(tags_of(exp["experiment"])), grant_tags(tags_of(model["registered_model"]))


@pytest.fixture(scope="module")
def world(basic_auth, own_gate, people) -> World:
    return World(basic_auth, own_gate, people)


def expected_lines(world: World, verb: str) -> list[str]:
    a, b = world.experiments
    return [
        f"{verb} EDIT on experiment {a} to user ba:alice (basic-auth user alice, user permission)",
        f"{verb} READ on experiment {b} to user ba:bob (basic-auth user bob, user permission)",
        f'{verb} MANAGE on registered model "{world.model}" to user ba:bob (basic-auth user bob, user permission)',
        f"{verb} READ on experiment {b} to user ba:alice (basic-auth user alice, role reviewers)",
        # MLflow gave the creator (its admin made both sides' objects) MANAGE on each: migrated like any grant.
        f"{verb} MANAGE on experiment {a} to user ba:admin (basic-auth user admin, user permission)",
        f"{verb} MANAGE on experiment {b} to user ba:admin (basic-auth user admin, user permission)",
        f'{verb} MANAGE on registered model "{world.model}" to user ba:admin (basic-auth user admin, user permission)',
        f"{verb} EDIT on experiment {world.ws_experiment} in workspace {WORKSPACE} to user ba:bob "
        "(basic-auth user bob, role ws-editors)",
        f"{verb} EDIT on gateway endpoint {world.endpoint} to user ba:alice (basic-auth user alice, user permission)",
    ]


NOT_MIGRATED = [
    "not migrated: user admin is an MLflow admin: admins are not grants: make the subject a gate admin (the policy "
    "data's admin groups)",
    'not migrated: READ on experiment "*" (role reviewers, workspace default): a type-wide pattern: add the pattern '
    'grant {"group":"reviewers","type":"experiment","name":"*","level":"READ"} to data.permissions.patterns in the '
    "policy data",
]


def scorer_line(world: World) -> str:
    return (f'not migrated: EDIT on scorer "{world.experiments[0]}/judge" (user permission, workspace default): the '
            f"gate's scorers take their experiment's permissions: grant EDIT on experiment {world.experiments[0]} "
            "instead if the grantee should have it on the whole experiment (its runs, traces and scorers)")


def test_the_dry_run_prints_every_grant_and_what_is_not_migrated_and_writes_nothing(world, people):
    done = world.migrate(people["root"], "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(line for line in lines if line.startswith("would grant")) == sorted(expected_lines(world,
                                                                                                     "would grant"))
    assert sorted(line for line in lines if line.startswith("not migrated")) == sorted(NOT_MIGRATED
                                                                                      + [scorer_line(world)])
    assert lines[-1] == "summary: 9 grant(s) to write, 0 failed, 3 item(s) not migrated"
    assert world.grants_upstream() == ({}, {})
    assert world.tag_experiment(people["alice"]) == 403
    assert world.describe_model(people["bob"]) == 403
    assert world.tag_ws_experiment(people["bob"]) == 403
    assert world.tag_endpoint(people["alice"]) == 403


def test_the_dry_run_with_roles_as_groups_plans_group_grants_and_says_who_the_idp_must_put_in_them(world, people):
    done = world.migrate(people["root"], "--dry-run", "--roles-as-groups")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    b = world.experiments[1]
    assert f"would grant READ on experiment {b} to group reviewers (role reviewers; the IdP must put its users alice " \
           "in the group reviewers)" in lines
    assert f"would grant EDIT on experiment {world.ws_experiment} in workspace {WORKSPACE} to group ws-editors (role " \
           "ws-editors; the IdP must put its users bob in the group ws-editors)" in lines
    assert not any("(basic-auth user alice, role reviewers)" in line for line in lines)
    assert lines[-1] == "summary: 9 grant(s) to write, 0 failed, 3 item(s) not migrated"


def test_a_caller_who_may_not_change_the_grants_migrates_nothing(world, people):
    done = world.migrate(people["alice"])
    assert done.returncode != 0
    assert "FAILED MANAGE on registered model" in done.stdout
    assert "PERMISSION_DENIED" in done.stdout
    assert "summary: 0 grant(s) written, 9 failed, 3 item(s) not migrated" in done.stdout
    assert world.grants_upstream() == ({}, {})


def test_the_migration_writes_grants_that_read_back_and_are_enforced(world, people):
    done = world.migrate(people["root"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(line for line in done.stdout.splitlines() if line.startswith("granted")) == sorted(
        expected_lines(world, "granted"))
    exp_grants, model_grants = world.grants_upstream()
    assert exp_grants == {"mlflow_gate.grant.user.ba.3aalice": "EDIT", "mlflow_gate.grant.user.ba.3aadmin": "MANAGE"}
    assert model_grants == {"mlflow_gate.grant.user.ba.3abob": "MANAGE", "mlflow_gate.grant.user.ba.3aadmin": "MANAGE"}
    got = run_gate("grants", "get", "--gate-url", world.gate.url, "--token", people["root"],
                   "--experiment-id", world.experiments[0], "--user", "ba:alice")
    assert json.loads(got)["experiment_permission"]["permission"] == "EDIT"
    from_role = run_gate("grants", "get", "--gate-url", world.gate.url, "--token", people["root"],
                         "--experiment-id", world.experiments[1], "--user", "ba:alice")
    assert json.loads(from_role)["experiment_permission"]["permission"] == "READ"
    assert world.tag_experiment(people["alice"]) == 200
    assert world.tag_experiment(people["bob"]) == 403
    assert world.describe_model(people["bob"]) == 200
    assert world.describe_model(people["alice"]) == 403
    assert world.tag_ws_experiment(people["bob"]) == 200  # the grant was written in its workspace
    assert world.tag_ws_experiment(people["alice"]) == 403
    assert world.tag_endpoint(people["alice"]) == 200
    assert world.tag_endpoint(people["bob"]) == 403

    again = world.migrate(people["root"])  # the grants exist: they are updated, not refused
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[-1] == "summary: 9 grant(s) written, 0 failed, 3 item(s) not migrated"


def test_roles_as_groups_writes_group_grants_in_the_roles_workspace(world, people):
    assert world.tag_ws_experiment(people["carol"]) == 403  # her groups have no grant yet
    done = world.migrate(people["root"], "--roles-as-groups")
    assert done.returncode == 0, done.stdout + done.stderr
    assert world.tag_ws_experiment(people["carol"]) == 200  # the group grant of role ws-editors, in its workspace
    got = run_gate("grants", "get", "--gate-url", world.gate.url, "--token", people["root"],
                   "--experiment-id", world.experiments[1], "--group", "reviewers")
    assert json.loads(got)["experiment_permission"] == {
        "experiment_id": world.experiments[1], "group_name": "reviewers", "user_id": "reviewers", "permission": "READ"}
    ws_tags = http(world.mlflow.url, "GET", "/api/2.0/mlflow/experiments/get",
                   headers={"X-MLFLOW-WORKSPACE": WORKSPACE},
                   params={"experiment_id": world.ws_experiment}).json()["experiment"]
    assert tags_of(ws_tags)["mlflow_gate.grant.group.ws-editors"] == "EDIT"
