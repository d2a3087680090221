"""Promotion the way MLflow teaches it now, end to end with the real MLflow 3.17.2 and its client through the gate:
aliases without stages (challenger, then a reviewed champion moved by CI), a serving process loading
`models:/fraud-detector@champion`, promotion across registered models with `copy_model_version` into the governed
environment `prod.fraud-detector`, lineage through copies to the original run, deletion and break-glass rollback of
the champion, and the registry's history (`mlflow-gate history`) of that whole story. Then two gates in front of
one MLflow move aliases and stages of one version at once: the history keeps every entry.

The module has its own MLflow and two gates (gate A with an audit file), so its fraud-detector is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from conftest import GATE_BIN, gate_process, gate_settings, mlflow_process
from helpers import denied, http, tags_of, train_and_register, unique, upstream, workflow
from support.audit import AUDIT_KEY, AUDIT_KEY_ENV

MODEL = "fraud-detector"
PROD = "prod.fraud-detector"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gate_keys):
    """One MLflow and two gates in front of it (A writes an audit file)."""
    with ExitStack() as started:
        server = started.enter_context(mlflow_process(tmp_path_factory.mktemp("alias-mlflow")))
        gates = []
        for name in ("a", "b"):
            directory = tmp_path_factory.mktemp(f"alias-gate-{name}")
            audit = {"audit": {"sink": "file", "file": str(directory / "audit.log"), "key_env": AUDIT_KEY_ENV}}
            config = gate_settings(server.url, gate_keys.jwks, audit if name == "a" else None)
            gates.append(started.enter_context(gate_process(directory, config, {AUDIT_KEY_ENV: AUDIT_KEY},
                                                            name=f"gate-{name}")))
        yield server, gates[0], gates[1]


@pytest.fixture(scope="module")
def people(gate_keys) -> dict[str, str]:
    return {
        "alice": gate_keys.token("alice"),
        "bob": gate_keys.token("bob", groups=["ml-senior"]),
        "ci": gate_keys.token("ci-bot", groups=["mlflow-ci"]),
        "carol": gate_keys.token("carol", groups=["ml-oncall"]),
    }


@pytest.fixture
def act(stack, monkeypatch):
    """Acts as a caller through gate A (client and fluent API): act(token) -> MlflowClient."""
    gate = stack[1]
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_EXPERIMENT_ID",
                "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", gate.url)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", gate.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    mlflow.set_tracking_uri(gate.url)
    mlflow.set_registry_uri(gate.url)

    def as_caller(token: str) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
        return MlflowClient(tracking_uri=gate.url, registry_uri=gate.url)

    try:
        yield as_caller
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def champion_of(server, name: str = MODEL) -> str | None:
    model = upstream(server, "/api/2.0/mlflow/registered-models/get", name=name)["registered_model"]
    return {a["alias"]: a["version"] for a in model.get("aliases", [])}.get("champion")


def versions_of(server, name: str) -> list[dict]:
    return upstream(server, "/api/2.0/mlflow/model-versions/search", filter=f"name='{name}'").get("model_versions", [])


def approve_alias(gate_url: str, people: dict, version: str) -> None:
    created = workflow(gate_url, people["alice"], "create", name=MODEL, version=version, to_alias="champion",
                       comment="ready to serve")
    assert created.status_code == 200, created.text
    assert created.json()["request"]["to_alias"] == "champion", created.text
    approved = workflow(gate_url, people["bob"], "approve", name=MODEL, version=version, to_alias="champion")
    assert approved.status_code == 200, approved.text
    activity = approved.json()["activity"]
    assert activity["to_alias"] == "champion" and activity["activity_type"] == "APPROVED_REQUEST", activity
    # bob may not move champion, so the approval only records.
    assert "not applied" in activity["system_comment"], activity


def refused_copy(call) -> str:
    """copy_model_version wraps the gate's refusal of its model-versions/create in a generic error; returns it."""
    with pytest.raises(MlflowException) as raised:
        call()
    message = str(raised.value)
    assert "PERMISSION_DENIED: mlflow-gate:" in message, message
    return message


def history_cli(gate_url: str, token: str, *args: str) -> str:
    out = subprocess.run([str(GATE_BIN), "history", "--gate-url", gate_url, "--token", token, *args],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "NO_PROXY": "127.0.0.1"})
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def story(stack, people):
    """Filled in by the story test for the history test that follows it."""
    return {}


def test_the_alias_promotion_story(stack, people, act, story):
    server, gate, _ = stack

    # An engineer logs and registers a model, the MLflow 3 way, in stage None, and makes it the challenger.
    alice = act(people["alice"])
    v1 = train_and_register(MODEL, val_auc=0.91)
    alice.set_registered_model_alias(MODEL, "challenger", v1)

    # Evaluate the challenger as MLflow's docs do: load it by its alias and score data.
    import numpy as np
    challenger = mlflow.pyfunc.load_model(f"models:/{MODEL}@challenger")
    assert list(challenger.predict(np.array([[0.1, 0.9], [0.8, 0.2]]))) == [0, 1]

    # champion: CI only, and only after a reviewer other than the author approved the move.
    message = denied(lambda: act(people["alice"]).set_registered_model_alias(MODEL, "champion", v1))
    assert "only the CI service account may move the alias champion of fraud-detector" in message, message
    message = denied(lambda: act(people["ci"]).set_registered_model_alias(MODEL, "champion", v1))
    assert "has no approval from a reviewer other than its creator for the alias champion" in message, message
    assert champion_of(server) is None
    approve_alias(gate.url, people, v1)
    act(people["ci"]).set_registered_model_alias(MODEL, "champion", v1)
    assert champion_of(server) == v1

    # A serving process loads the champion through the gate.
    serve = ("import mlflow, numpy as np; m = mlflow.pyfunc.load_model('models:/fraud-detector@champion'); "
             "print(list(m.predict(np.array([[0.0, 1.0]]))))")
    env = {**os.environ, "MLFLOW_TRACKING_URI": gate.url, "MLFLOW_TRACKING_TOKEN": people["alice"],
           "NO_PROXY": "127.0.0.1"}
    served = subprocess.run([sys.executable, "-c", serve], capture_output=True, text=True, timeout=120, env=env)
    assert served.returncode == 0, served.stderr
    assert served.stdout.strip() == "[np.int64(0)]" or served.stdout.strip() == "[0]", served.stdout

    # Promotion across registered models: an engineer cannot copy into prod.*; CI can, once approved.
    message = denied(lambda: act(people["alice"]).copy_model_version(f"models:/{MODEL}/{v1}", PROD))
    assert f"only the CI service account may create the registered model {PROD}, a governed environment" in message
    copy = act(people["ci"]).copy_model_version(f"models:/{MODEL}/{v1}", PROD)
    prod_versions = versions_of(server, PROD)
    assert [v["version"] for v in prod_versions] == [copy.version]
    prod_tags = tags_of(prod_versions[0])
    assert prod_tags["mlflow_gate.created_by"] == "ci-bot", prod_tags
    assert not any(k.startswith("mlflow_gate.activity.") for k in prod_tags), "the source's approvals were copied"
    # The model exists now; an engineer's version in it is refused with the reason.
    response = http(gate.url, "POST", "/api/2.0/mlflow/model-versions/create", people["alice"],
                    json={"name": PROD, "source": f"models:/{MODEL}/{v1}", "run_id": prod_versions[0]["run_id"]})
    assert response.status_code == 403, response.text
    assert f"only the CI service account may create versions in {PROD}, a governed environment" in response.json()["message"]
    assert len(versions_of(server, PROD)) == 1

    # A copy whose chain of copies leads to a run below the gate is refused, with the gate's reason.
    v2 = train_and_register(MODEL, val_auc=0.5)
    staging = act(people["alice"]).copy_model_version(f"models:/{MODEL}/{v2}", "staging.fraud-detector")
    message = refused_copy(
        lambda: act(people["ci"]).copy_model_version(f"models:/staging.fraud-detector/{staging.version}", PROD))
    assert f"val_auc 0.50 is below the gate 0.80 for {PROD}" in message, message
    response = http(gate.url, "POST", "/api/2.0/mlflow/model-versions/create", people["ci"],
                    json={"name": PROD, "source": "models:/staging.fraud-detector/99"})
    assert response.status_code == 403, response.text
    assert "models:/staging.fraud-detector/99 does not exist" in response.json()["message"], response.text
    assert len(versions_of(server, PROD)) == 1

    # An engineer does not delete the champion (CI does, with an approved removal: see the last test).
    message = denied(lambda: act(people["alice"]).delete_registered_model_alias(MODEL, "champion"))
    assert ("only the CI service account, with 1 approval(s) of its removal, or admins may delete the protected "
            "alias champion of fraud-detector") in message, message
    assert champion_of(server) == v1

    # A new champion, v3 ... then an incident: on-call puts the champion back on v1, flagged break-glass.
    act(people["alice"])
    v3 = train_and_register(MODEL, val_auc=0.93)
    approve_alias(gate.url, people, v3)
    act(people["ci"]).set_registered_model_alias(MODEL, "champion", v3)
    assert champion_of(server) == v3
    message = denied(lambda: act(people["carol"]).set_registered_model_alias(MODEL, "champion", v2))
    assert "on-call break-glass applies only to versions that held it before" in message, message
    act(people["carol"]).set_registered_model_alias(MODEL, "champion", v1)
    assert champion_of(server) == v1
    records = [json.loads(line) for line in gate.audit.read_text().splitlines() if line.strip()]
    rollbacks = [r for r in records if r.get("operation", {}).get("rpc") == "SetRegisteredModelAlias"
                 and r.get("principal", {}).get("sub") == "carol" and r.get("allow")]
    assert len(rollbacks) == 1 and rollbacks[0]["break_glass"] is True, rollbacks
    story.update(v1=v1, v2=v2, v3=v3, rollback_decision=rollbacks[0]["decision_id"], staging=staging.version)


def test_the_policy_input_shows_every_hop_of_a_copy(stack, story):
    if not story:
        pytest.skip("the story did not run")
    _, gate, _ = stack
    body = json.dumps({"name": PROD, "source": f"models:/staging.fraud-detector/{story['staging']}"})
    out = subprocess.run([str(GATE_BIN), "explain", "POST", "/api/2.0/mlflow/model-versions/create", "--body", body,
                          "--sub", "ci-bot", "--groups", "mlflow-ci", "--config", str(gate.dir / "gate.toml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout.split("input:\n", 1)[1].split("\ndecision:", 1)[0])
    lineage = document["resource"]["lineage"]
    assert [(h["source"], h["name"], h["version"]) for h in lineage["hops"]] == [
        (f"models:/staging.fraud-detector/{story['staging']}", "staging.fraud-detector", story["staging"]),
        (f"models:/{MODEL}/{story['v2']}", MODEL, story["v2"]),
    ]
    assert lineage["origin"] == {"name": MODEL, "version": story["v2"]}
    assert lineage["copied_from"]["name"] == "staging.fraud-detector" and lineage["chain_error"] is None
    assert document["resource"]["source_run"]["metrics"]["val_auc"] == 0.5
    decision = json.loads(out.stdout.split("\ndecision:\n", 1)[1])
    assert "val_auc 0.50 is below the gate 0.80 for prod.fraud-detector" in decision["reasons"], decision


def test_an_alias_approval_is_void_once_the_evidence_changes(stack, people, act):
    server, gate, _ = stack
    act(people["alice"])
    name = unique("void")
    version = train_and_register(name)
    created = workflow(gate.url, people["alice"], "create", name=name, version=version, to_alias="champion")
    assert created.status_code == 200, created.text
    approved = workflow(gate.url, people["bob"], "approve", name=name, version=version, to_alias="champion")
    assert approved.status_code == 200, approved.text
    # After the review the run's metric changes: the approval no longer vouches for it.
    run_id = upstream(server, "/api/2.0/mlflow/model-versions/get", name=name, version=version)["model_version"]["run_id"]
    act(people["alice"]).log_metric(run_id, "val_auc", 0.95)
    message = denied(lambda: act(people["ci"]).set_registered_model_alias(name, "champion", version))
    assert "has no approval from a reviewer other than its creator for the alias champion" in message, message
    listed = http(gate.url, "GET", "/api/2.0/mlflow/transition-requests/list", people["alice"],
                  params={"name": name, "version": version, "include_history": "true"})
    assert [(a["activity_type"], a.get("to_alias"), a["to_stage"]) for a in listed.json()["requests"]] == [
        ("REQUESTED_TRANSITION", "champion", None), ("APPROVED_REQUEST", "champion", None)]


def test_history_prints_the_whole_story(stack, people, story):
    if not story:
        pytest.skip("the story did not run")
    _, gate, _ = stack
    v1, v3 = story["v1"], story["v3"]
    answer = json.loads(history_cli(gate.url, people["alice"], "--name", MODEL, "--json"))
    rows = [(p["kind"], p["name"], p["version"], p["by"], p["until"] is None, p["ended_by"], p["break_glass"])
            for p in answer["periods"]]
    assert rows == [
        ("alias", "challenger", v1, "alice", True, None, False),
        ("alias", "champion", v1, "ci-bot", False, "ci-bot", False),
        ("alias", "champion", v3, "ci-bot", False, "carol", False),
        ("alias", "champion", v1, "carol", True, None, True),
    ], rows
    periods = answer["periods"]
    assert periods[3]["decision_id"] == story["rollback_decision"]
    assert len({p["decision_id"] for p in periods}) == 4
    assert periods[1]["until"] == periods[2]["from"] and periods[2]["until"] == periods[3]["from"]

    # What was serving while v3 was champion, and the text form of the champion's timeline.
    during = periods[2]["from"] + (periods[2]["until"] - periods[2]["from"]) // 2
    at = json.loads(history_cli(gate.url, people["alice"], "--name", MODEL, "--alias", "champion", "--at",
                                str(during), "--json"))
    assert [(p["name"], p["version"]) for p in at["periods"]] == [("champion", v3)]
    text = history_cli(gate.url, people["alice"], "--name", MODEL, "--alias", "champion").splitlines()
    assert len(text) == 3, text
    assert text[2].startswith(f"alias champion version {v1} from ") and text[2].endswith(" BREAK-GLASS"), text
    assert f"(ended by carol) by ci-bot decision {periods[2]['decision_id']}" in text[1], text

    # The JSON endpoint answers the same; the audit log adds nothing the stamps lack.
    response = http(gate.url, "GET", "/api/2.0/mlflow/registry-history/get", people["alice"],
                    params={"name": MODEL, "alias": "champion"})
    assert response.status_code == 200, response.text
    assert response.json()["periods"] == answer["periods"][1:]
    with_audit = json.loads(history_cli(gate.url, people["alice"], "--name", MODEL, "--json", "--audit",
                                        str(gate.audit)))
    assert with_audit["periods"] == answer["periods"]


def test_two_gates_moving_aliases_and_stages_of_one_version_at_once_keep_every_entry(stack, people, act):
    server, gate_a, gate_b = stack
    act(people["alice"])
    name = unique("race")
    version = train_and_register(name)
    aliases = [f"exp-{i}" for i in range(24)]
    stages = ["Staging", "None"] * 4

    def move(i: int) -> int:
        gate = (gate_a, gate_b)[i % 2]
        if i < len(aliases):
            return http(gate.url, "POST", "/api/2.0/mlflow/registered-models/alias", people["alice"],
                        json={"name": name, "alias": aliases[i], "version": version}).status_code
        return http(gate.url, "POST", "/api/2.0/mlflow/model-versions/transition-stage", people["ci"],
                    json={"name": name, "version": version, "stage": stages[i - len(aliases)],
                          "archive_existing_versions": False}).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(move, range(len(aliases) + len(stages))))
    assert statuses == [200] * len(statuses)
    # Read straight from MLflow, in both representations (the list tag earlier gates read, appended and wrote back).
    tags = tags_of(upstream(server, "/api/2.0/mlflow/model-versions/get", name=name, version=version)["model_version"])
    entries = json.loads(tags.get("mlflow_gate.stage_history", "[]"))
    entries += [json.loads(v) for k, v in tags.items() if k.startswith("mlflow_gate.history.")]
    assert sorted(e["alias"] for e in entries if "alias" in e) == sorted(aliases)
    assert sorted(e["stage"] for e in entries if "stage" in e) == sorted(stages)
    assert len({e["request_id"] for e in entries}) == len(statuses)
    response = http(gate_b.url, "GET", "/api/2.0/mlflow/registry-history/get", people["alice"],
                    params={"name": name, "include_entries": "true"})
    assert response.status_code == 200, response.text
    assert sorted(json.dumps(e, sort_keys=True) for e in response.json()["versions"][0]["entries"]) == sorted(
        json.dumps(e, sort_keys=True) for e in entries)


def test_ci_deletes_a_champion_once_its_removal_is_approved(stack, people, act):
    """Deleting champion is governed like moving it: an engineer is refused; CI needs an approval of the removal (a
    transition request with to_alias champion and alias_action "delete" on the version holding it), which the
    approval of the move onto that version is not; then CI deletes it."""
    server, gate, _ = stack
    name = unique("fraud-retired")
    act(people["alice"])
    version = train_and_register(name, val_auc=0.93)
    for who, action in (("alice", "create"), ("bob", "approve")):
        response = workflow(gate.url, people[who], action, name=name, version=version, to_alias="champion")
        assert response.status_code == 200, response.text
    act(people["ci"]).set_registered_model_alias(name, "champion", version)

    message = denied(lambda: act(people["alice"]).delete_registered_model_alias(name, "champion"))
    assert ("only the CI service account, with 1 approval(s) of its removal, or admins may delete the protected "
            f"alias champion of {name}") in message, message
    message = denied(lambda: act(people["ci"]).delete_registered_model_alias(name, "champion"))
    assert (f"version {version} of {name}, which holds the alias champion, has 0 of the 1 approvals of the alias's "
            "removal required") in message, message
    assert champion_of(server, name) == version

    removal = {"name": name, "version": version, "to_alias": "champion", "alias_action": "delete"}
    # The author asks with the CLI (`--remove-alias`), the reviewer approves through the API.
    env = {**os.environ, "MLFLOW_TRACKING_URI": gate.url, "MLFLOW_TRACKING_TOKEN": people["alice"]}
    created = subprocess.run([str(GATE_BIN), "request-transition", "--name", name, "--version", version,
                              "--remove-alias", "champion"], env=env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["request"]["alias_action"] == "delete", created.stdout
    approved = workflow(gate.url, people["bob"], "approve", **removal)
    assert approved.status_code == 200, approved.text
    activity = approved.json()["activity"]
    assert (activity["to_alias"], activity["alias_action"]) == ("champion", "delete"), activity
    assert champion_of(server, name) == version, "an approval of the removal only records"
    act(people["ci"]).delete_registered_model_alias(name, "champion")
    assert champion_of(server, name) is None
