"""Resource permissions with the default bundle, against the real MLflow: two teams, each with engineers, a shared
reviewer and an admin. Out of the box team B reads team A's experiment, runs and model, but cannot log to, tag,
rename, restore or delete any of them (every such route, each time asserting MLflow's state did not change);
team A's creator manages what she created; an admin does anything; grants stored in the reserved grants tag are
honoured (READ lets read, not write; NO_PERMISSIONS beats a group's EDIT); a resource made before the gate (no
stamps) gets the default."""

from __future__ import annotations

import json

import pytest

from helpers import http, strip_request_id, tags_of, unique, upstream

CREATED_BY = "mlflow_gate.created_by"
GRANTS = "mlflow_gate.grants"  # the legacy combined grants tag (still read, no longer written)
GRANT_PREFIX = "mlflow_gate.grant."  # one tag per grantee: mlflow_gate.grant.user.<sub> / .group.<group>


class Team:
    """Team A's objects, made through the gate by ana."""

    def __init__(self, gate, token: str):
        def call(method: str, path: str, payload: dict) -> dict:
            response = http(gate.url, method, path, token, json=payload)
            assert response.status_code == 200, (path, response.text)
            return response.json()

        self.experiment_name = unique("team-a-exp")
        self.experiment_id = call("POST", "/api/2.0/mlflow/experiments/create",
                                  {"name": self.experiment_name})["experiment_id"]
        run = call("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": self.experiment_id})["run"]["info"]
        self.run_id, self.artifact_uri = run["run_id"], run["artifact_uri"]
        call("POST", "/api/2.0/mlflow/runs/log-metric",
             {"run_id": self.run_id, "key": "val_auc", "value": 0.9, "timestamp": 1, "step": 0})
        self.model = unique("team-a-model")
        call("POST", "/api/2.0/mlflow/registered-models/create", {"name": self.model})
        self.version = call("POST", "/api/2.0/mlflow/model-versions/create",
                            {"name": self.model, "source": f"{self.artifact_uri}/model",
                             "run_id": self.run_id})["model_version"]["version"]


@pytest.fixture(scope="module")
def people(two_teams) -> dict[str, str]:
    return two_teams


@pytest.fixture(scope="module")
def team_a(gate, people) -> Team:
    return Team(gate, people["ana"])


def state(mlflow_server, team: Team) -> dict:
    """Everything a write could change, read straight from MLflow."""
    exp = upstream(mlflow_server, "/api/2.0/mlflow/experiments/get", experiment_id=team.experiment_id)["experiment"]
    run = upstream(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=team.run_id)["run"]
    model = upstream(mlflow_server, "/api/2.0/mlflow/registered-models/get", name=team.model)["registered_model"]
    version = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/get", name=team.model,
                       version=team.version)["model_version"]
    for entity in (exp, model, version):
        entity.pop("last_update_time", None)
        entity.pop("last_updated_timestamp", None)
    return {"experiment": exp, "run": run, "model": model, "version": version}


def writes(team: Team) -> list[tuple[str, str, dict, str]]:
    """Every write route to team A's experiment, run and model: (method, path, body, level it needs)."""
    exp, run, model, version = team.experiment_id, team.run_id, team.model, team.version
    return [
        ("POST", "/api/2.0/mlflow/runs/log-metric", {"run_id": run, "key": "m", "value": 1.0, "timestamp": 2}, "EDIT"),
        ("POST", "/api/2.0/mlflow/runs/log-parameter", {"run_id": run, "key": "p", "value": "x"}, "EDIT"),
        ("POST", "/api/2.0/mlflow/runs/log-batch", {"run_id": run, "metrics": [
            {"key": "m", "value": 1.0, "timestamp": 2, "step": 0}]}, "EDIT"),
        ("POST", "/ajax-api/2.0/mlflow/runs/set-tag", {"run_uuid": run, "key": "t", "value": "x"}, "EDIT"),
        ("POST", "/api/2.0/mlflow/runs/delete-tag", {"run_id": run, "key": "mlflow.runName"}, "EDIT"),
        ("POST", "/api/2.0/mlflow/runs/update", {"run_id": run, "status": "FAILED"}, "EDIT"),
        ("POST", "/api/2.0/mlflow/runs/log-inputs", {"run_id": run, "datasets": []}, "EDIT"),
        ("POST", "/api/2.0/mlflow/runs/delete", {"run_id": run}, "MANAGE"),
        ("POST", "/api/2.0/mlflow/runs/restore", {"run_id": run}, "MANAGE"),
        ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": exp}, "EDIT"),
        ("POST", "/api/2.0/mlflow/experiments/set-experiment-tag", {"experiment_id": exp, "key": "t", "value": "x"},
         "EDIT"),
        ("POST", "/api/2.0/mlflow/experiments/update", {"experiment_id": exp, "new_name": unique("renamed")},
         "MANAGE"),
        ("POST", "/api/2.0/mlflow/experiments/delete", {"experiment_id": exp}, "MANAGE"),
        ("POST", "/api/2.0/mlflow/experiments/restore", {"experiment_id": exp}, "MANAGE"),
        ("POST", "/api/2.0/mlflow/logged-models", {"experiment_id": exp, "name": "m"}, "EDIT"),
        ("PATCH", "/api/2.0/mlflow/registered-models/update", {"name": model, "description": "x"}, "EDIT"),
        ("POST", "/api/2.0/mlflow/registered-models/set-tag", {"name": model, "key": "t", "value": "x"}, "EDIT"),
        ("POST", "/api/2.0/mlflow/model-versions/create", {"name": model, "source": f"{team.artifact_uri}/model",
                                                           "run_id": run}, "EDIT"),
        ("POST", "/api/2.0/mlflow/model-versions/set-tag", {"name": model, "version": version, "key": "t",
                                                            "value": "x"}, "EDIT"),
        ("POST", "/api/2.0/mlflow/registered-models/alias", {"name": model, "alias": "challenger",
                                                             "version": version}, "EDIT"),
        ("PATCH", "/api/2.0/mlflow/model-versions/update", {"name": model, "version": version, "description": "x"},
         "EDIT"),
        ("POST", "/api/2.0/mlflow/registered-models/rename", {"name": model, "new_name": unique("renamed")},
         "MANAGE"),
        ("DELETE", "/api/2.0/mlflow/model-versions/delete", {"name": model, "version": version}, "MANAGE"),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": model}, "MANAGE"),
    ]


def test_another_team_cannot_write_to_a_teams_experiment_runs_or_model(gate, mlflow_server, team_a, people):
    before = state(mlflow_server, team_a)
    for method, path, payload, level in writes(team_a):
        response = http(gate.url, method, path, people["ben"], json=payload)
        assert response.status_code == 403, (path, response.text)
        message = response.json()["message"]
        assert f"that needs {level}, and ben has READ" in message, (path, message)
        assert "ask its owner ana" in message, (path, message)
    assert state(mlflow_server, team_a) == before


def test_a_colleague_without_a_grant_reads_but_the_reviewer_cannot_write_either(gate, mlflow_server, team_a, people):
    for token in (people["ben"], people["rita"], people["alex"]):
        for path, params in [
            ("/api/2.0/mlflow/experiments/get", {"experiment_id": team_a.experiment_id}),
            ("/api/2.0/mlflow/runs/get", {"run_id": team_a.run_id}),
            ("/api/2.0/mlflow/registered-models/get", {"name": team_a.model}),
            ("/api/2.0/mlflow/model-versions/get", {"name": team_a.model, "version": team_a.version}),
        ]:
            response = http(gate.url, "GET", path, token, params=params)
            assert response.status_code == 200, (path, response.text)
    before = state(mlflow_server, team_a)
    payload = {"run_id": team_a.run_id, "key": "m", "value": 1.0, "timestamp": 3}
    response = http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["rita"], json=payload)
    assert response.status_code == 403, response.text
    assert state(mlflow_server, team_a) == before


def test_the_creator_is_stamped_and_manages_her_experiment(gate, mlflow_server, people):
    team = Team(gate, people["ana"])
    exp = upstream(mlflow_server, "/api/2.0/mlflow/experiments/get", experiment_id=team.experiment_id)["experiment"]
    assert tags_of(exp)[CREATED_BY] == "ana"
    renamed = unique("renamed")
    for method, path, payload in [
        ("POST", "/api/2.0/mlflow/runs/log-parameter", {"run_id": team.run_id, "key": "p", "value": "1"}),
        ("POST", "/api/2.0/mlflow/experiments/update", {"experiment_id": team.experiment_id, "new_name": renamed}),
        ("POST", "/api/2.0/mlflow/runs/delete", {"run_id": team.run_id}),
        ("POST", "/api/2.0/mlflow/experiments/delete", {"experiment_id": team.experiment_id}),
    ]:
        response = http(gate.url, method, path, people["ana"], json=payload)
        assert response.status_code == 200, (path, response.text)
    exp = upstream(mlflow_server, "/api/2.0/mlflow/experiments/get", experiment_id=team.experiment_id)["experiment"]
    assert (exp["name"], exp["lifecycle_stage"]) == (renamed, "deleted")


def test_an_admin_writes_anywhere(gate, mlflow_server, people):
    team = Team(gate, people["ana"])
    response = http(gate.url, "POST", "/api/2.0/mlflow/experiments/delete", people["root"],
                    json={"experiment_id": team.experiment_id})
    assert response.status_code == 200, response.text
    response = http(gate.url, "POST", "/api/2.0/mlflow/registered-models/rename", people["root"],
                    json={"name": team.model, "new_name": unique("admin-renamed")})
    assert response.status_code == 200, response.text


def set_grants(gate, people, team: Team, grants: dict) -> None:
    """Replaces the experiment's grants through the gate's grants API, as its creator ana."""
    exp = {"experiment_id": team.experiment_id}
    for kind, field in (("users", "username"), ("groups", "group_name")):
        for who in ("ben", "alex", "team-a", "team-b"):
            http(gate.url, "DELETE", "/api/2.0/mlflow/experiments/permissions/delete", people["ana"],
                 json={**exp, field: who})
        for who, level in grants[kind].items():
            response = http(gate.url, "POST", "/api/2.0/mlflow/experiments/permissions/create", people["ana"],
                            json={**exp, field: who, "permission": level})
            assert response.status_code == 200, response.text


def test_a_grant_of_read_lets_read_but_not_write_and_edit_lets_log(gate, mlflow_server, people):
    team = Team(gate, people["ana"])
    set_grants(gate, people, team, {"users": {}, "groups": {"team-b": "READ"}})
    log = {"run_id": team.run_id, "key": "m", "value": 1.0, "timestamp": 3}
    response = http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["ben"], json=log)
    assert response.status_code == 403, response.text
    assert "ben has READ (a grant to the group team-b on the experiment" in response.json()["message"]
    set_grants(gate, people, team, {"users": {"ben": "EDIT"}, "groups": {}})
    response = http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["ben"], json=log)
    assert response.status_code == 200, response.text
    response = http(gate.url, "POST", "/api/2.0/mlflow/experiments/delete", people["ben"],
                    json={"experiment_id": team.experiment_id})
    assert response.status_code == 403, response.text


def test_no_permissions_beats_a_groups_edit_and_hides_the_experiment(gate, mlflow_server, people):
    team = Team(gate, people["ana"])
    set_grants(gate, people, team, {"users": {"alex": "NO_PERMISSIONS"}, "groups": {"team-a": "EDIT"}})
    response = http(gate.url, "GET", "/api/2.0/mlflow/runs/get", people["alex"], params={"run_id": team.run_id})
    assert response.status_code == 403, response.text
    assert "alex has NO_PERMISSIONS (a grant to alex on the experiment" in response.json()["message"]
    before = upstream(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=team.run_id)
    log = {"run_id": team.run_id, "key": "m", "value": 1.0, "timestamp": 3}
    assert http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["alex"], json=log).status_code == 403
    assert upstream(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=team.run_id) == before
    # The rest of team A still has EDIT through the group grant.
    assert http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["ana"], json=log).status_code == 200


def test_a_resource_made_before_the_gate_gets_the_default(gate, mlflow_server, people):
    """Made straight in MLflow: no creator stamp, so nobody is its creator; everyone reads, nobody but admins
    writes (the default for authenticated users without a grant is READ)."""
    created = http(mlflow_server.url, "POST", "/api/2.0/mlflow/experiments/create", json={"name": unique("legacy")})
    experiment_id = created.json()["experiment_id"]
    run_id = http(mlflow_server.url, "POST", "/api/2.0/mlflow/runs/create",
                  json={"experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
    response = http(gate.url, "GET", "/api/2.0/mlflow/runs/get", people["ana"], params={"run_id": run_id})
    assert response.status_code == 200, response.text
    log = {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 3}
    response = http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["ana"], json=log)
    assert response.status_code == 403, response.text
    assert strip_request_id(response.json()["message"]).endswith(
        "that needs EDIT, and ana has READ (the default for authenticated users without a grant); "
        "ask an admin for a grant")
    assert http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["root"], json=log).status_code == 200


def test_a_write_naming_an_unknown_run_is_left_to_mlflow_and_one_naming_none_is_refused(gate, people):
    response = http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["ben"],
                    json={"run_id": "0" * 32, "key": "m", "value": 1.0, "timestamp": 3})
    assert response.status_code == 404, response.text
    response = http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["ben"],
                    json={"key": "m", "value": 1.0, "timestamp": 3})
    assert response.status_code == 403, response.text
    assert "names no run_id" in response.json()["message"]


def hide_from(gate, people, team: Team, group: str) -> None:
    """NO_PERMISSIONS for `group` on team A's experiment and registered model, through the grants API."""
    for family, payload in [
        ("experiments", {"experiment_id": team.experiment_id}),
        ("registered-models", {"name": team.model}),
    ]:
        response = http(gate.url, "POST", f"/api/2.0/mlflow/{family}/permissions/create", people["ana"],
                        json={**payload, "group_name": group, "permission": "NO_PERMISSIONS"})
        assert response.status_code == 200, response.text


def reads(gate, team: Team, token: str) -> dict[str, int]:
    """Every read route of team A's objects: path -> status."""
    store_path = team.artifact_uri.split("mlflow-artifacts:/", 1)[1]
    routes = [
        ("/api/2.0/mlflow/experiments/get", {"experiment_id": team.experiment_id}),
        ("/api/2.0/mlflow/experiments/get-by-name", {"experiment_name": team.experiment_name}),
        ("/api/2.0/mlflow/runs/get", {"run_id": team.run_id}),
        ("/api/2.0/mlflow/metrics/get-history", {"run_id": team.run_id, "metric_key": "val_auc"}),
        ("/ajax-api/2.0/mlflow/metrics/get-history-bulk", {"run_id": team.run_id, "metric_key": "val_auc"}),
        ("/get-artifact", {"run_uuid": team.run_id, "path": "notes.txt"}),
        ("/api/2.0/mlflow/artifacts/list", {"run_id": team.run_id}),
        ("/api/2.0/mlflow-artifacts/artifacts", {"path": store_path}),
        (f"/api/2.0/mlflow-artifacts/artifacts/{store_path}/notes.txt", {}),
        ("/api/2.0/mlflow/registered-models/get", {"name": team.model}),
        ("/api/2.0/mlflow/model-versions/get", {"name": team.model, "version": team.version}),
        ("/api/2.0/mlflow/model-versions/get-download-uri", {"name": team.model, "version": team.version}),
        ("/api/2.0/mlflow/registered-models/get-latest-versions", {"name": team.model}),
        (f"/api/2.0/mlflow/logged-models/{team.logged_model}", {}),
        (f"/api/3.0/mlflow/traces/{team.trace_id}", {}),
        ("/ajax-api/2.0/mlflow/get-trace-artifact", {"request_id": team.trace_id}),
    ]
    return {path: http(gate.url, "GET", path, token, params=params).status_code for path, params in routes}


@pytest.fixture(scope="module")
def hidden_team(gate, mlflow_server, people) -> Team:
    """Team A's objects with a file, a logged model and a trace, hidden from team B by NO_PERMISSIONS."""
    team = Team(gate, people["ana"])
    store_path = team.artifact_uri.split("mlflow-artifacts:/", 1)[1]
    put = http(gate.url, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{store_path}/notes.txt", people["ana"],
               data=b"team A only")
    assert put.status_code == 200, put.text
    logged = http(gate.url, "POST", "/api/2.0/mlflow/logged-models", people["ana"],
                  json={"experiment_id": team.experiment_id, "name": "model", "source_run_id": team.run_id})
    assert logged.status_code == 200, logged.text
    team.logged_model = logged.json()["model"]["info"]["model_id"]
    team.trace_id = f"tr-{unique('t')[-12:]}"
    info = {"trace_id": team.trace_id, "request_time": "2026-11-29T09:00:00Z", "execution_duration": "0.005s",
            "state": "OK", "trace_location": {"type": "MLFLOW_EXPERIMENT",
                                              "mlflow_experiment": {"experiment_id": team.experiment_id}}}
    started = http(gate.url, "POST", "/api/3.0/mlflow/traces", people["ana"], json={"trace": {"trace_info": info}})
    assert started.status_code == 200, started.text
    hide_from(gate, people, team, "team-b")
    return team


def test_no_permissions_hides_every_read_route_and_the_creator_still_reads(gate, hidden_team, people):
    for path, status in reads(gate, hidden_team, people["ben"]).items():
        assert status == 403, (path, status)
    for path, status in reads(gate, hidden_team, people["ana"]).items():
        assert status in (200, 404), (path, status)  # 404: a trace without stored spans has no artifact
    assert reads(gate, hidden_team, people["ana"])["/get-artifact"] == 200


def test_a_read_denial_names_the_object_and_the_deny(gate, hidden_team, people):
    response = http(gate.url, "GET", "/get-artifact", people["ben"],
                    params={"run_uuid": hidden_team.run_id, "path": "notes.txt"})
    message = response.json()["message"]
    assert response.status_code == 403, message
    assert f'in the experiment "{hidden_team.experiment_name}" ({hidden_team.experiment_id}): that needs READ, ' \
           "and ben has NO_PERMISSIONS (a grant to the group team-b on the experiment" in message, message
    assert "team A only" not in response.text


def walk(gate, token: str, method: str, path: str, field: str, request: dict) -> tuple[list[dict], list[str]]:
    """Every page of a search through the gate: (all results, each page's raw text)."""
    results, texts, token_ = [], [], None
    for _ in range(50):
        payload = {**request, **({"page_token": token_} if token_ else {})}
        if method == "GET":
            response = http(gate.url, method, path, token, params=payload)
        else:
            response = http(gate.url, method, path, token, json=payload)
        assert response.status_code == 200, response.text
        texts.append(response.text)
        page = response.json()
        results.extend(page.get(field, []))
        token_ = page.get("next_page_token")
        if not token_:
            return results, texts
    raise AssertionError("more than 50 pages")


@pytest.fixture(scope="module")
def mixed(gate, mlflow_server, people) -> dict:
    """Team A's objects under one prefix, every other one hidden from team B: 7 experiments with 2 runs and a
    logged model each, 7 registered models with a version each."""
    prefix = unique("mixed")
    made = {"visible": [], "hidden": []}
    for i in range(7):
        team = Team(gate, people["ana"])
        renamed = f"{prefix}-{i}"
        for path, payload in [
            ("/api/2.0/mlflow/experiments/update", {"experiment_id": team.experiment_id, "new_name": renamed}),
            ("/api/2.0/mlflow/registered-models/rename", {"name": team.model, "new_name": renamed}),
        ]:
            response = http(gate.url, "POST", path, people["root"], json=payload)
            assert response.status_code == 200, response.text
        team.experiment_name = team.model = renamed
        http(gate.url, "POST", "/api/2.0/mlflow/runs/create", people["ana"], json={"experiment_id": team.experiment_id})
        logged = http(gate.url, "POST", "/api/2.0/mlflow/logged-models", people["ana"],
                      json={"experiment_id": team.experiment_id, "name": "m"})
        assert logged.status_code == 200, logged.text
        if i % 2:
            hide_from(gate, people, team, "team-b")
        made["hidden" if i % 2 else "visible"].append(team)
    made["prefix"] = prefix
    return made


def test_searches_walk_every_page_and_see_exactly_the_visible_results(gate, mixed, people):
    prefix = mixed["prefix"]
    visible, hidden = mixed["visible"], mixed["hidden"]
    all_ids = [t.experiment_id for t in visible + hidden]
    searches = [
        ("POST", "/api/2.0/mlflow/experiments/search", "experiments",
         {"filter": f"name LIKE '{prefix}%'", "max_results": 2}, lambda r: r["experiment_id"],
         lambda t: {t.experiment_id}),
        ("POST", "/api/2.0/mlflow/runs/search", "runs", {"experiment_ids": all_ids, "max_results": 3},
         lambda r: r["info"]["experiment_id"], lambda t: {t.experiment_id}),
        ("GET", "/api/2.0/mlflow/registered-models/search", "registered_models",
         {"filter": f"name LIKE '{prefix}%'", "max_results": 2}, lambda r: r["name"], lambda t: {t.model}),
        ("GET", "/api/2.0/mlflow/model-versions/search", "model_versions",
         {"filter": f"name LIKE '{prefix}%'", "max_results": 2}, lambda r: r["name"], lambda t: {t.model}),
        ("POST", "/api/2.0/mlflow/logged-models/search", "models", {"experiment_ids": all_ids, "max_results": 2},
         lambda r: r["info"]["experiment_id"], lambda t: {t.experiment_id}),
    ]
    for method, path, field, request, key, of in searches:
        seen_b, texts = walk(gate, people["ben"], method, path, field, request)
        want = set().union(*(of(t) for t in visible))
        assert {key(r) for r in seen_b} == want, path
        for text in texts:  # nothing of the hidden objects, not even a name, is in any page
            assert not any(t.experiment_name in text or f'"{t.run_id}"' in text for t in hidden), path
        seen_a, _ = walk(gate, people["ana"], method, path, field, request)
        assert {key(r) for r in seen_a} == want | set().union(*(of(t) for t in hidden)), path


def grant(gate, token: str, method: str, action: str, payload: dict, family: str = "experiments"):
    return http(gate.url, method, f"/api/2.0/mlflow/{family}/permissions/{action}", token, json=payload)


def test_the_grants_api_grants_revokes_at_once_and_needs_manage(gate, mlflow_server, people):
    team = Team(gate, people["ana"])
    exp = {"experiment_id": team.experiment_id}
    log = {"run_id": team.run_id, "key": "m", "value": 1.0, "timestamp": 3}

    def tags():
        return tags_of(upstream(mlflow_server, "/api/2.0/mlflow/experiments/get",
                                experiment_id=team.experiment_id)["experiment"])

    refused = grant(gate, people["ben"], "POST", "create", {**exp, "username": "ben", "permission": "MANAGE"})
    assert refused.status_code == 403, refused.text
    assert "that needs MANAGE, and ben has READ" in refused.json()["message"]

    def grant_tags():
        return {k: v for k, v in tags().items() if k.startswith(GRANT_PREFIX) or k == GRANTS}

    assert grant_tags() == {}

    created = grant(gate, people["ana"], "POST", "create", {**exp, "username": "ben", "permission": "EDIT"})
    assert created.status_code == 200, created.text
    assert created.json() == {"experiment_permission": {"experiment_id": team.experiment_id, "username": "ben",
                                                        "user_id": "ben", "permission": "EDIT"}}
    assert grant_tags() == {"mlflow_gate.grant.user.ben": "EDIT"}
    assert http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["ben"], json=log).status_code == 200
    got = http(gate.url, "GET", "/api/2.0/mlflow/experiments/permissions/get", people["ana"],
               params={**exp, "username": "ben"})
    assert got.json()["experiment_permission"]["permission"] == "EDIT", got.text
    again = grant(gate, people["ana"], "POST", "create", {**exp, "username": "ben", "permission": "EDIT"})
    assert again.status_code == 400 and again.json()["error_code"] == "INVALID_STATE", again.text

    # Revoking takes effect on the very next request.
    updated = grant(gate, people["ana"], "PATCH", "update", {**exp, "username": "ben", "permission": "READ"})
    assert updated.status_code == 200, updated.text
    assert http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["ben"], json=log).status_code == 403
    group = grant(gate, people["ana"], "POST", "create", {**exp, "group_name": "team-b",
                                                         "permission": "NO_PERMISSIONS"})
    assert group.status_code == 200, group.text
    response = http(gate.url, "GET", "/api/2.0/mlflow/runs/get", people["ben"], params={"run_id": team.run_id})
    assert response.status_code == 403, response.text
    for payload in ({**exp, "username": "ben"}, {**exp, "group_name": "team-b"}):
        assert grant(gate, people["ana"], "DELETE", "delete", payload).status_code == 200
    assert grant_tags() == {}
    response = http(gate.url, "GET", "/api/2.0/mlflow/runs/get", people["ben"], params={"run_id": team.run_id})
    assert response.status_code == 200, response.text
    missing = grant(gate, people["ana"], "DELETE", "delete", {**exp, "username": "ben"})
    assert missing.status_code == 404, missing.text
    # The grants tag itself stays out of reach of clients.
    forged = http(gate.url, "POST", "/api/2.0/mlflow/experiments/set-experiment-tag", people["ana"],
                  json={**exp, "key": GRANTS, "value": '{"users": {"ben": "MANAGE"}, "groups": {}}'})
    assert forged.status_code == 403, forged.text
    forged = http(gate.url, "POST", "/api/2.0/mlflow/experiments/set-experiment-tag", people["ana"],
                  json={**exp, "key": "mlflow_gate.grant.user.ben", "value": "MANAGE"})
    assert forged.status_code == 403, forged.text
    assert grant_tags() == {}


def test_the_grants_api_covers_registered_models(gate, mlflow_server, people):
    team = Team(gate, people["ana"])
    tag = {"name": team.model, "key": "reviewed", "value": "yes"}
    assert http(gate.url, "POST", "/api/2.0/mlflow/registered-models/set-tag", people["ben"], json=tag).status_code == 403
    created = grant(gate, people["ana"], "POST", "create",
                    {"name": team.model, "group_name": "team-b", "permission": "EDIT"}, "registered-models")
    assert created.status_code == 200, created.text
    assert created.json()["registered_model_permission"] == {"name": team.model, "group_name": "team-b",
                                                             "user_id": "team-b", "permission": "EDIT"}
    response = http(gate.url, "POST", "/api/2.0/mlflow/registered-models/set-tag", people["ben"], json=tag)
    assert response.status_code == 200, response.text


def test_the_grants_cli_sets_shows_and_revokes(gate, people):
    from conftest import run_gate

    team = Team(gate, people["ana"])
    who = ["--gate-url", gate.url, "--token", people["ana"], "--experiment-id", team.experiment_id, "--user", "ben"]
    log = {"run_id": team.run_id, "key": "m", "value": 1.0, "timestamp": 3}
    assert json.loads(run_gate("grants", "set", *who, "--level", "EDIT"))["experiment_permission"]["permission"] == "EDIT"
    assert http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["ben"], json=log).status_code == 200
    run_gate("grants", "set", *who, "--level", "READ")  # the grant exists: it is updated
    assert json.loads(run_gate("grants", "get", *who))["experiment_permission"]["permission"] == "READ"
    assert http(gate.url, "POST", "/api/2.0/mlflow/runs/log-metric", people["ben"], json=log).status_code == 403
    run_gate("grants", "revoke", *who)
    with pytest.raises(RuntimeError, match="404"):
        run_gate("grants", "get", *who)
    not_manager = ["--gate-url", gate.url, "--token", people["ben"], "--experiment-id", team.experiment_id,
                   "--group", "team-b"]
    with pytest.raises(RuntimeError, match="PERMISSION_DENIED"):
        run_gate("grants", "set", *not_manager, "--level", "MANAGE")


def test_a_copy_from_a_model_closed_to_the_caller_is_refused_and_never_created(gate, mlflow_server, people):
    """Team B copies team A's version into its own registered model (copy_model_version's wire call: a
    model-versions/create whose source is models:/<name>/<version>). While team B may read team A's model the copy
    is made; once team A's model is NO_PERMISSIONS for team B, the gate refuses it naming the hop, although the gate
    itself could read every hop, and MLflow never sees the creation."""
    team = Team(gate, people["ana"])
    own = unique("team-b-model")
    created = http(gate.url, "POST", "/api/2.0/mlflow/registered-models/create", people["ben"], json={"name": own})
    assert created.status_code == 200, created.text
    source = f"models:/{team.model}/{team.version}"
    copy = {"name": own, "source": source, "run_id": team.run_id}
    copied = http(gate.url, "POST", "/api/2.0/mlflow/model-versions/create", people["ben"], json=copy)
    assert copied.status_code == 200, copied.text

    closed = grant(gate, people["ana"], "POST", "create",
                   {"name": team.model, "group_name": "team-b", "permission": "NO_PERMISSIONS"}, "registered-models")
    assert closed.status_code == 200, closed.text
    refused = http(gate.url, "POST", "/api/2.0/mlflow/model-versions/create", people["ben"], json=copy)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error_code"] == "PERMISSION_DENIED"
    assert (f'ben may not CreateModelVersion from version {team.version} of the registered model "{team.model}" '
            f"(hop 1 of its source chain from {source}): ben may not read that model (ben has NO_PERMISSIONS there: "
            f'a grant to the group team-b on the registered_model "{team.model}"); ask its owner or an admin for READ'
            ) in refused.json()["message"]
    versions = upstream(mlflow_server, "/api/2.0/mlflow/model-versions/search", filter=f"name='{own}'")
    assert [v["version"] for v in versions["model_versions"]] == ["1"]

    # An admin reads every model: the same copy is hers to make.
    assert http(gate.url, "POST", "/api/2.0/mlflow/model-versions/create", people["root"], json=copy).status_code == 200
