"""Trace searches are filtered like every other search, and a presigned download URL is a read of its run, against
the real MLflow: team A's experiment denies team B (a `NO_PERMISSIONS` group grant), and team B's searches of traces,
v2 (`GET /api/2.0/mlflow/traces`) and v3 (`POST /api/3.0/mlflow/traces/search`), naming both teams' experiments,
return only team B's traces (no id of team A's appears in the answer), while team A still sees its own. The traces
are logged straight to MLflow (as a client that predates the gate would have)."""

from __future__ import annotations

import uuid

import pytest

from helpers import http, unique


@pytest.fixture(scope="module")
def people(gate_keys) -> dict[str, str]:
    return {"ana": gate_keys.token("ana", groups=["team-a"]), "ben": gate_keys.token("ben", groups=["team-b"])}


def logged_trace(mlflow_server, experiment_id: str) -> str:
    """A finished trace in the experiment, started through MLflow's own v3 API; its id."""
    trace_id = f"tr-{uuid.uuid4().hex}"
    info = {"trace_id": trace_id, "state": "OK", "request_time": "2026-01-01T00:00:00Z", "execution_duration": "1s",
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}}
    response = http(mlflow_server.url, "POST", "/api/3.0/mlflow/traces", json={"trace": {"trace_info": info}})
    assert response.status_code == 200, response.text
    return trace_id


@pytest.fixture(scope="module")
def teams(gate, mlflow_server, people) -> dict[str, tuple[str, set[str]]]:
    """Each team's experiment (made through the gate by its engineer) and its traces; A's denies team B."""
    out = {}
    for who in ("ana", "ben"):
        response = http(gate.url, "POST", "/api/2.0/mlflow/experiments/create", people[who],
                        json={"name": unique(f"traces-{who}")})
        assert response.status_code == 200, response.text
        exp = response.json()["experiment_id"]
        out[who] = (exp, {logged_trace(mlflow_server, exp) for _ in range(3)})
    denied = http(gate.url, "POST", "/api/2.0/mlflow/experiments/permissions/create", people["ana"],
                  json={"experiment_id": out["ana"][0], "group_name": "team-b", "permission": "NO_PERMISSIONS"})
    assert denied.status_code == 200, denied.text
    return out


def search_v2(gate, token: str, experiments: list[str]) -> tuple[set[str], str]:
    response = http(gate.url, "GET", "/api/2.0/mlflow/traces", token,
                    params={"experiment_ids": experiments, "max_results": 100})
    assert response.status_code == 200, response.text
    return {t["request_id"] for t in response.json().get("traces", [])}, response.text


def search_v3(gate, token: str, experiments: list[str]) -> tuple[set[str], str]:
    locations = [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": e}} for e in experiments]
    response = http(gate.url, "POST", "/api/3.0/mlflow/traces/search", token,
                    json={"locations": locations, "max_results": 100})
    assert response.status_code == 200, response.text
    return {t["trace_id"] for t in response.json().get("traces", [])}, response.text


@pytest.mark.parametrize("search", [search_v2, search_v3], ids=["v2", "v3"])
def test_another_team_finds_none_of_a_teams_traces(gate, teams, people, search):
    (exp_a, traces_a), (exp_b, traces_b) = teams["ana"], teams["ben"]
    found, text = search(gate, people["ben"], [exp_a, exp_b])
    assert found == traces_b
    assert not any(t in text for t in traces_a)
    assert search(gate, people["ben"], [exp_a])[0] == set()
    assert search(gate, people["ana"], [exp_a, exp_b])[0] == traces_a | traces_b


def test_a_presigned_download_url_needs_read_on_the_run(gate, teams, people):
    """`artifacts/presigned-download-url` is a read of the run it names (MLflow's local store then refuses the
    presigning itself, but only after the gate let the request through)."""
    response = http(gate.url, "POST", "/api/2.0/mlflow/runs/create", people["ana"],
                    json={"experiment_id": teams["ana"][0]})
    assert response.status_code == 200, response.text
    payload = {"run_id": response.json()["run"]["info"]["run_id"], "path": "model/MLmodel"}
    denied = http(gate.url, "POST", "/api/2.0/mlflow/artifacts/presigned-download-url", people["ben"], json=payload)
    assert denied.status_code == 403, denied.text
    allowed = http(gate.url, "POST", "/api/2.0/mlflow/artifacts/presigned-download-url", people["ana"], json=payload)
    assert allowed.status_code != 403, allowed.text
