"""Policy hot reload under traffic: a rule change takes effect without a restart, a broken file leaves the last
good bundle in force, and the requests flowing the whole time all succeed."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException

from conftest import REPO, poll, tail
from helpers import new_model_version, unique, upstream_stage
from support.ops import PRODUCTION_DENIAL_MENTIONS, gates, mlflow_env  # noqa: F401 (fixtures)
from support.prometheus import metric_value, scrape


def write_atomically(path: Path, text: str) -> None:
    """Write then rename, as deploy tools and ConfigMap updates do (dot-files are not policy files)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_policy_reload_while_the_mlflow_client_works(gates, gate_keys, mlflow_server, mlflow_env, tmp_path):
    """The security team edits the bundle of a running gate (as a ConfigMap update or a deploy would): a rule change
    takes effect without a restart, a broken file leaves the last good bundle in force, and requests flowing the
    whole time all succeed."""
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies, ignore=shutil.ignore_patterns("*_test.rego"))
    gate = gates("reload", admin=True, policy_dir=policies, reload_interval_ms=100)
    alice = gate_keys.token("alice")
    client = mlflow_env(gate.url, alice)
    name, version = new_model_version(client, metrics={"val_auc": 0.75})

    # Traffic from another engineer for the whole test: searches, experiment creation, run logging.
    bob = gate_keys.token("bob")
    stop_traffic, outcomes = threading.Event(), []

    def traffic():
        with requests.Session() as session:
            session.trust_env = False
            session.headers["Authorization"] = f"Bearer {bob}"
            experiment = session.post(f"{gate.url}/api/2.0/mlflow/experiments/create",
                                      json={"name": unique("reload-traffic")}, timeout=30).json()["experiment_id"]
            while not stop_traffic.is_set():
                for method, path, body in (
                        ("GET", "/api/2.0/mlflow/experiments/search?max_results=5", None),
                        ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment}),
                        ("GET", f"/api/2.0/mlflow/registered-models/get?name={name}", None)):
                    response = session.request(method, gate.url + path, json=body, timeout=30)
                    outcomes.append((method, path, response.status_code, response.text[:200]))

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        def reloads():
            samples = scrape(gate)
            revision = next(l["revision"] for n, l, _ in samples if n == "mlflow_gate_policy_bundle_info")
            return (metric_value(samples, "mlflow_gate_policy_reloads_total"),
                    metric_value(samples, "mlflow_gate_policy_reload_failures_total"), revision)

        assert reloads()[:2] == (0, 0)
        first_revision = reloads()[2]

        # 1. A stricter evaluation gate for this model: val_auc 0.75 may no longer enter Staging.
        data = json.loads((policies / "data.json").read_text())
        data["gates"]["models"][name] = {"metrics": {"val_auc": {"min": 0.80}}}
        write_atomically(policies / "data.json", json.dumps(data))
        poll(lambda: reloads()[0] == 1, "the stricter gate to be loaded", log=gate.log)
        with pytest.raises(MlflowException) as denied:
            client.transition_model_version_stage(name, version, "Staging")
        assert f"val_auc 0.75 is below the gate 0.80 for {name}" in str(denied.value), denied.value
        assert upstream_stage(mlflow_server, name, version) == "None"

        # 2. The threshold relaxed to 0.70: the same request now passes.
        data["gates"]["models"][name] = {"metrics": {"val_auc": {"min": 0.70}}}
        write_atomically(policies / "data.json", json.dumps(data))
        poll(lambda: reloads()[0] == 2, "the relaxed gate to be loaded", log=gate.log)
        client.transition_model_version_stage(name, version, "Staging")
        assert upstream_stage(mlflow_server, name, version) == "Staging"
        good_revision = reloads()[2]
        assert good_revision != first_revision

        # 3. A broken file: refused, counted and logged with its file and line; the last good bundle stays.
        write_atomically(policies / "zz_broken.rego", "package mlflow_gate\n\nimport rego.v1\n\nhalf_written if {\n")
        poll(lambda: reloads()[1] >= 1, "the broken bundle to be refused", log=gate.log)
        assert reloads()[0] == 2 and reloads()[2] == good_revision
        log = gate.log.read_text()
        assert "zz_broken.rego" in log and "reload" in log, tail(gate.log)
        with pytest.raises(MlflowException) as denied:
            client.transition_model_version_stage(name, version, "Production", archive_existing_versions=True)
        assert PRODUCTION_DENIAL_MENTIONS in str(denied.value), denied.value
        assert upstream_stage(mlflow_server, name, version) == "Staging"

        # 4. Fixed again: loaded.
        (policies / "zz_broken.rego").unlink()
        data["gates"]["models"][name] = {"metrics": {"val_auc": {"min": 0.90}}}
        write_atomically(policies / "data.json", json.dumps(data))
        poll(lambda: reloads()[0] == 3, "the fixed bundle to be loaded", log=gate.log)
    finally:
        stop_traffic.set()
        thread.join(timeout=60)
    failures = [o for o in outcomes if o[2] != 200]
    assert not failures, failures[:5]
    assert len(outcomes) >= 30, len(outcomes)
