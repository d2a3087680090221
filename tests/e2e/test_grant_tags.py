"""How grants are stored, and grants of logged models and traces, against the real MLflow: each grant is one tag
per grantee (`mlflow_gate.grant.user.<encoded sub>` / `mlflow_gate.grant.group.<encoded group>` = LEVEL), so grants
for many different principals made at the same time through two gate processes in front of one MLflow all take
effect; the legacy combined tag `mlflow_gate.grants` is still read (a per-grantee tag wins); no client can set or
delete a grant tag on any tag route; a logged model's READ for team B lets team B read that model but not its
siblings, and a trace's NO_PERMISSIONS hides it from its owner's team mate; a grant tag forged on a trace itself
(OTLP ingest writes trace tags; sent straight to MLflow here, as the gate refuses reserved keys in OTLP) grants
nothing."""

from __future__ import annotations

import json
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import gate_config, gate_process, run_gate
from helpers import http, tags_of, unique, upstream

GRANTS = "mlflow_gate.grants"
GRANT_PREFIX = "mlflow_gate.grant."


@pytest.fixture(scope="module")
def people(two_teams) -> dict[str, str]:
    return two_teams


@pytest.fixture(scope="module")
def second_gate(mlflow_server, gate_keys, tmp_path_factory):
    """A second gate process (a replica) in front of the same MLflow."""
    config = gate_config(mlflow_server.url, gate_keys.jwks)
    with gate_process(tmp_path_factory.mktemp("gate-2"), config, name="gate-2") as g:
        yield g


def ok(response) -> dict:
    assert response.status_code == 200, (response.request.method, response.request.url, response.text)
    return response.json()


def new_experiment(gate, token: str) -> str:
    return ok(http(gate.url, "POST", "/api/2.0/mlflow/experiments/create", token,
                   json={"name": unique("grant-tags")}))["experiment_id"]


def experiment_tags(mlflow_server, experiment_id: str) -> dict[str, str]:
    return tags_of(upstream(mlflow_server, "/api/2.0/mlflow/experiments/get", experiment_id=experiment_id)["experiment"])


def grant_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k.startswith(GRANT_PREFIX) or k == GRANTS}


def new_trace(mlflow_server, experiment_id: str) -> str:
    """A finished trace in the experiment, started through MLflow's own v3 API; its id."""
    trace_id = f"tr-{uuid.uuid4().hex}"
    info = {"trace_id": trace_id, "state": "OK", "request_time": "2026-01-01T00:00:00Z", "execution_duration": "1s",
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}}
    ok(http(mlflow_server.url, "POST", "/api/3.0/mlflow/traces", json={"trace": {"trace_info": info}}))
    return trace_id


# Subjects and groups as IdPs spell them: e-mail addresses, `issuer#sub`, pipes, capitals, spaces, non-ASCII.
def principals(n: int) -> list[tuple[str, str]]:
    shapes = ["user{i}@corp.example.com", "https://idp.example.com/#sub-{i}", "auth0|{i}", "Team {i}", "équipe-{i}"]
    return [("username" if i % 3 else "group_name", shapes[i % len(shapes)].format(i=i)) for i in range(n)]


@pytest.mark.parametrize("family,field", [("experiments", "experiment_id"), ("registered-models", "name")])
def test_concurrent_grants_for_different_principals_through_two_gates_all_take_effect(
        gate, second_gate, mlflow_server, people, family, field):
    ana = people["ana"]
    if family == "experiments":
        object_id = new_experiment(gate, ana)
    else:
        object_id = unique("grant-tags-model")
        ok(http(gate.url, "POST", "/api/2.0/mlflow/registered-models/create", ana, json={"name": object_id}))
    grantees = principals(24)
    gates = [gate, second_gate]
    start = threading.Barrier(len(grantees))

    def create(i: int):
        kind, who = grantees[i]
        start.wait(timeout=30)
        return http(gates[i % 2].url, "POST", f"/api/2.0/mlflow/{family}/permissions/create", ana,
                    json={field: object_id, kind: who, "permission": "EDIT" if i % 2 else "NO_PERMISSIONS"})

    with ThreadPoolExecutor(max_workers=len(grantees)) as pool:
        answers = list(pool.map(create, range(len(grantees))))
    assert [a.status_code for a in answers] == [200] * len(grantees), [a.text for a in answers if a.status_code != 200]
    # Every grant is there, read through the other gate than the one that wrote it.
    for i, (kind, who) in enumerate(grantees):
        got = http(gates[(i + 1) % 2].url, "GET", f"/api/2.0/mlflow/{family}/permissions/get", ana,
                   params={field: object_id, kind: who})
        assert ok(got)[next(iter(got.json()))]["permission"] == ("EDIT" if i % 2 else "NO_PERMISSIONS"), who
    if family == "experiments":
        stored = grant_tags(experiment_tags(mlflow_server, object_id))
    else:
        stored = grant_tags(tags_of(upstream(mlflow_server, "/api/2.0/mlflow/registered-models/get",
                                             name=object_id)["registered_model"]))
    assert len(stored) == len(grantees) and GRANTS not in stored, stored
    assert stored["mlflow_gate.grant.user.user5.40corp.2eexample.2ecom"] == "EDIT"  # user5@corp.example.com

    # Revocations through both gates at once are single deletes too: half of them go, the rest stay.
    revoked = threading.Barrier(len(grantees) // 2)

    def revoke(i: int):
        kind, who = grantees[i]
        revoked.wait(timeout=30)
        return http(gates[i % 2].url, "DELETE", f"/api/2.0/mlflow/{family}/permissions/delete", ana,
                    json={field: object_id, kind: who})

    with ThreadPoolExecutor(max_workers=len(grantees) // 2) as pool:
        assert [r.status_code for r in pool.map(revoke, range(0, len(grantees), 2))] == [200] * (len(grantees) // 2)
    for i, (kind, who) in enumerate(grantees):
        got = http(gates[i % 2].url, "GET", f"/api/2.0/mlflow/{family}/permissions/get", ana,
                   params={field: object_id, kind: who})
        assert got.status_code == (404 if i % 2 == 0 else 200), (who, got.text)


def test_the_legacy_grants_tag_is_still_read_and_a_per_grantee_tag_wins(gate, mlflow_server, people):
    exp = new_experiment(gate, people["ana"])
    legacy = {"users": {"ben": "NO_PERMISSIONS", "alex": "NO_PERMISSIONS"}, "groups": {}}
    ok(http(mlflow_server.url, "POST", "/api/2.0/mlflow/experiments/set-experiment-tag",
            json={"experiment_id": exp, "key": GRANTS, "value": json.dumps(legacy)}))
    read = {"experiment_id": exp}
    for who in ("ben", "alex"):
        denied = http(gate.url, "GET", "/api/2.0/mlflow/experiments/get", people[who], params=read)
        assert denied.status_code == 403 and f"{who} has NO_PERMISSIONS" in denied.json()["message"], denied.text
    # ben's grant exists (in the legacy tag): updating it writes his own tag, which wins.
    ok(http(gate.url, "PATCH", "/api/2.0/mlflow/experiments/permissions/update", people["ana"],
            json={**read, "username": "ben", "permission": "READ"}))
    ok(http(gate.url, "GET", "/api/2.0/mlflow/experiments/get", people["ben"], params=read))
    # Revoking alex removes him from the legacy tag (nothing else there changes).
    assert ok(http(gate.url, "DELETE", "/api/2.0/mlflow/experiments/permissions/delete", people["ana"],
                   json={**read, "username": "alex"})) == {}
    ok(http(gate.url, "GET", "/api/2.0/mlflow/experiments/get", people["alex"], params=read))
    tags = grant_tags(experiment_tags(mlflow_server, exp))
    assert json.loads(tags.pop(GRANTS)) == {"users": {"ben": "NO_PERMISSIONS"}, "groups": {}}
    assert tags == {"mlflow_gate.grant.user.ben": "READ"}


def test_no_client_sets_or_deletes_a_grant_tag_on_any_tag_route(gate, mlflow_server, people):
    ana = people["ana"]
    exp = new_experiment(gate, ana)
    run = ok(http(gate.url, "POST", "/api/2.0/mlflow/runs/create", ana, json={"experiment_id": exp}))["run"]["info"]
    model = ok(http(gate.url, "POST", "/api/2.0/mlflow/logged-models", ana,
                    json={"experiment_id": exp, "name": "m"}))["model"]["info"]["model_id"]
    name = unique("grant-tags-model")
    ok(http(gate.url, "POST", "/api/2.0/mlflow/registered-models/create", ana, json={"name": name}))
    trace = new_trace(mlflow_server, exp)
    key = "mlflow_gate.grant.user.ana"
    tag = {"key": key, "value": "MANAGE"}
    attempts = [
        ("POST", "/api/2.0/mlflow/experiments/set-experiment-tag", {"experiment_id": exp, **tag}),
        ("POST", "/api/2.0/mlflow/experiments/delete-experiment-tag", {"experiment_id": exp, "key": key}),
        ("POST", "/api/2.0/mlflow/experiments/create", {"name": unique("forged"), "tags": [tag]}),
        ("POST", "/api/2.0/mlflow/runs/set-tag", {"run_id": run["run_id"], **tag}),
        ("POST", "/api/2.0/mlflow/runs/log-batch", {"run_id": run["run_id"], "tags": [tag]}),
        ("POST", "/api/2.0/mlflow/registered-models/set-tag", {"name": name, **tag}),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete-tag", {"name": name, "key": key}),
        ("PATCH", f"/api/2.0/mlflow/logged-models/{model}/tags", {"tags": [tag]}),
        ("DELETE", f"/api/2.0/mlflow/logged-models/{model}/tags/{key}", None),
        ("POST", "/api/2.0/mlflow/logged-models", {"experiment_id": exp, "name": "m2", "tags": [tag]}),
        ("PATCH", f"/api/3.0/mlflow/traces/{trace}/tags", tag),
        ("DELETE", f"/api/3.0/mlflow/traces/{trace}/tags", {"key": key}),
        ("PATCH", f"/api/2.0/mlflow/traces/{trace}/tags", tag),
        ("POST", "/api/2.0/mlflow/experiments/set-experiment-tag", {"experiment_id": exp, **tag,
                                                                     "key": "MLFLOW_GATE.grant.group.team-a"}),
    ]
    before = experiment_tags(mlflow_server, exp)
    for who in ("ana", "root"):
        for method, path, payload in attempts:
            response = http(gate.url, method, path, people[who], json=payload)
            assert response.status_code == 403, (who, method, path, response.text)
            assert "reserved" in response.json()["message"], (path, response.text)
    assert experiment_tags(mlflow_server, exp) == before
    trace_tags = upstream(mlflow_server, f"/api/3.0/mlflow/traces/{trace}")["trace"]["trace_info"].get("tags", {})
    assert not any(k.lower().startswith(GRANT_PREFIX) for k in trace_tags)


def test_a_logged_models_own_read_lets_another_team_read_it_but_not_its_siblings(gate, mlflow_server, people):
    ana, ben = people["ana"], people["ben"]
    exp = new_experiment(gate, ana)
    models = [ok(http(gate.url, "POST", "/api/2.0/mlflow/logged-models", ana,
                      json={"experiment_id": exp, "name": f"m{i}"}))["model"]["info"]["model_id"] for i in range(3)]
    ok(http(gate.url, "POST", "/api/2.0/mlflow/experiments/permissions/create", ana,
            json={"experiment_id": exp, "group_name": "team-b", "permission": "NO_PERMISSIONS"}))
    created = run_gate("grants", "set", "--gate-url", gate.url, "--token", ana, "--logged-model", models[0],
                       "--group", "team-b", "--level", "READ")
    assert json.loads(created) == {"logged_model_permission": {"model_id": models[0], "group_name": "team-b",
                                                               "user_id": "team-b", "permission": "READ"}}
    model_tags = tags_of(upstream(mlflow_server, f"/api/2.0/mlflow/logged-models/{models[0]}")["model"]["info"])
    assert model_tags["mlflow_gate.grant.group.team-b"] == "READ"

    ok(http(gate.url, "GET", f"/api/2.0/mlflow/logged-models/{models[0]}", ben))
    for sibling in models[1:]:
        denied = http(gate.url, "GET", f"/api/2.0/mlflow/logged-models/{sibling}", ben)
        assert denied.status_code == 403, denied.text
        assert "ben has NO_PERMISSIONS (a grant to the group team-b on the experiment" in denied.json()["message"]
    found = ok(http(gate.url, "POST", "/api/2.0/mlflow/logged-models/search", ben,
                    json={"experiment_ids": [exp], "max_results": 50}))
    assert [m["info"]["model_id"] for m in found.get("models", [])] == [models[0]]
    # READ, not EDIT: tagging the model is refused and changes nothing.
    tagging = http(gate.url, "PATCH", f"/api/2.0/mlflow/logged-models/{models[0]}/tags", ben,
                   json={"tags": [{"key": "reviewed", "value": "yes"}]})
    assert tagging.status_code == 403, tagging.text
    assert "ben has READ (a grant to the group team-b on the logged_model" in tagging.json()["message"]
    assert "reviewed" not in tags_of(upstream(mlflow_server, f"/api/2.0/mlflow/logged-models/{models[0]}")["model"]["info"])
    # Granting on a logged model needs MANAGE like any grant: ben cannot widen his own.
    widened = http(gate.url, "PATCH", "/api/2.0/mlflow/logged-models/permissions/update", ben,
                   json={"model_id": models[0], "group_name": "team-b", "permission": "MANAGE"})
    assert widened.status_code == 403, widened.text
    # Revoked: the experiment's NO_PERMISSIONS applies again at once.
    run_gate("grants", "revoke", "--gate-url", gate.url, "--token", ana, "--logged-model", models[0],
             "--group", "team-b")
    assert http(gate.url, "GET", f"/api/2.0/mlflow/logged-models/{models[0]}", ben).status_code == 403


def test_no_permissions_on_a_trace_hides_it_from_its_owners_team_mate(gate, mlflow_server, people):
    ana, alex = people["ana"], people["alex"]
    exp = new_experiment(gate, ana)
    ok(http(gate.url, "POST", "/api/2.0/mlflow/experiments/permissions/create", ana,
            json={"experiment_id": exp, "group_name": "team-a", "permission": "EDIT"}))
    hidden, visible = new_trace(mlflow_server, exp), new_trace(mlflow_server, exp)
    created = ok(http(gate.url, "POST", "/api/2.0/mlflow/traces/permissions/create", ana,
                      json={"trace_id": hidden, "username": "alex", "permission": "NO_PERMISSIONS"}))
    assert created == {"trace_permission": {"trace_id": hidden, "username": "alex", "user_id": "alex",
                                            "permission": "NO_PERMISSIONS"}}
    # Stored on the trace's experiment (trace tags can be written by OTLP ingest, which the gate does not read).
    assert experiment_tags(mlflow_server, exp)[f"mlflow_gate.grant.trace.{hidden}.user.alex"] == "NO_PERMISSIONS"
    denied = http(gate.url, "GET", f"/api/3.0/mlflow/traces/{hidden}", alex)
    assert denied.status_code == 403, denied.text
    assert denied.json()["message"].startswith(f"mlflow-gate: alex may not GetTraceInfoV3 the trace {hidden} in the experiment")
    assert f"alex has NO_PERMISSIONS (a grant to alex on the trace {hidden})" in denied.json()["message"]
    ok(http(gate.url, "GET", f"/api/3.0/mlflow/traces/{visible}", alex))
    ok(http(gate.url, "GET", f"/api/3.0/mlflow/traces/{hidden}", ana))
    locations = [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}}]

    def search(token: str) -> set[str]:
        found = ok(http(gate.url, "POST", "/api/3.0/mlflow/traces/search", token,
                        json={"locations": locations, "max_results": 100}))
        return {t["trace_id"] for t in found.get("traces", [])}

    assert search(alex) == {visible}
    assert search(ana) == {hidden, visible}
    v2 = ok(http(gate.url, "GET", "/api/2.0/mlflow/traces", alex, params={"experiment_ids": [exp]}))
    assert {t["request_id"] for t in v2.get("traces", [])} == {visible}


def forge_trace_tags_over_otlp(mlflow_server, experiment_id: str, trace_id: str, tags: dict[str, str]) -> None:
    """What a writer that reaches MLflow's OTLP ingest may send (straight to MLflow: the gate refuses reserved keys
    there): spans of an existing trace whose resource attributes MLflow 3.17 stores as tags of that trace."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add()
    for key, value in tags.items():
        spans.resource.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    span = spans.scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes.fromhex(trace_id[3:]), os.urandom(8), "root"
    span.start_time_unix_nano = 1_767_225_600_000_000_000
    span.end_time_unix_nano = span.start_time_unix_nano + 1_000_000
    response = http(mlflow_server.url, "POST", "/v1/traces", data=request.SerializeToString(),
                    headers={"Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": experiment_id})
    assert response.status_code == 200, response.text


def test_a_grant_tag_forged_on_a_trace_grants_nothing(gate, mlflow_server, people):
    ana, ben = people["ana"], people["ben"]
    exp = new_experiment(gate, ana)
    ok(http(gate.url, "POST", "/api/2.0/mlflow/experiments/permissions/create", ana,
            json={"experiment_id": exp, "group_name": "team-b", "permission": "NO_PERMISSIONS"}))
    trace = new_trace(mlflow_server, exp)
    locations = [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": exp}}]
    for forged in ({"mlflow_gate.grant.user.ben": "MANAGE", "mlflow_gate.grant.group.team-b": "READ"},
                   {f"mlflow_gate.grant.trace.{trace}.user.ben": "READ"}):
        forge_trace_tags_over_otlp(mlflow_server, exp, trace, forged)
        stored = upstream(mlflow_server, f"/api/3.0/mlflow/traces/{trace}")["trace"]["trace_info"]["tags"]
        assert {k: stored.get(k) for k in forged} == forged, "MLflow stored the forged tags on the trace"
        denied = http(gate.url, "GET", f"/api/3.0/mlflow/traces/{trace}", ben)
        assert denied.status_code == 403, denied.text
        assert "ben has NO_PERMISSIONS (a grant to the group team-b on the experiment" in denied.json()["message"]
        found = ok(http(gate.url, "POST", "/api/3.0/mlflow/traces/search", ben,
                        json={"locations": locations, "max_results": 100}))
        assert found.get("traces", []) == []
    # The real grant, written by the gate on the experiment, does apply.
    ok(http(gate.url, "POST", "/api/2.0/mlflow/traces/permissions/create", ana,
            json={"trace_id": trace, "username": "ben", "permission": "READ"}))
    ok(http(gate.url, "GET", f"/api/3.0/mlflow/traces/{trace}", ben))
