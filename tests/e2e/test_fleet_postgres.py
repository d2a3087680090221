"""The governance story on a fleet, on real parts: MLflow on PostgreSQL (two `mlflow server` processes on one
database, one artifact root), a gate in front of each, and every step of the story sent through a different gate
than the step before. Stamps, approvals, stage history, voided approvals and webhooks must come out as with one
gate: every fact the gates act on lives in MLflow's database, none in a replica.

Slow (PostgreSQL and two MLflow servers start once for the test_fleet_* modules, ~25 s); run in one process:
`MLFLOW_GATE_BIN=... python -m pytest tests/e2e/test_fleet_postgres.py`."""

from __future__ import annotations

import json

from helpers import http, new_model_version, tags_of, upstream_stage, workflow
from support.audit import audit_records, audit_verify
from support.fleet import people, promote, version_of, via  # noqa: F401 (fixtures)
from support.ops import mlflow_env  # noqa: F401 (a fixture)
from support.postgres import PASSWORD

HISTORY_PREFIX = "mlflow_gate.history."  # one tag per entry (concurrent writers never overwrite each other)


def test_both_mlflow_servers_share_one_postgresql_database(fleet, via, people):
    name, version = new_model_version(via(0, people["alice"]))
    # Written through gate A and MLflow A, read straight from MLflow B and from the database itself.
    assert version_of(fleet, 1, name, version)["version"] == version
    rows = fleet.pg.query(fleet.database, "SELECT version FROM model_versions WHERE name = %s", name)
    assert rows == [(int(version),)]


def test_governance_story_across_replicas(fleet, via, people):
    # alice registers through gate A; MLflow B sees gate A's stamps.
    name, version = new_model_version(via(0, people["alice"]))
    assert tags_of(version_of(fleet, 1, name, version))["mlflow_gate.created_by"] == "alice"

    # CI moves it to Staging through gate B; alice asks for Production through gate A.
    assert promote(fleet, 1, people["ci"], name, version, "Staging").status_code == 200
    asked = workflow(fleet.gate(0).url, people["alice"], "create", name=name, version=version, stage="Production")
    assert asked.status_code == 200, asked.text

    # Without an approval CI is refused, on either gate.
    for i in (0, 1):
        refused = promote(fleet, i, people["ci"], name, version, "Production")
        assert refused.status_code == 403 and "approval" in refused.text, refused.text
    # alice's own approval is refused through gate B (gate A stamped her as the creator); bob's is recorded.
    own = workflow(fleet.gate(1).url, people["alice"], "approve", name=name, version=version, stage="Production",
                   archive_existing_versions=True)
    assert own.status_code == 403, own.text
    approved = workflow(fleet.gate(1).url, people["bob"], "approve", name=name, version=version, stage="Production",
                        archive_existing_versions=True)
    assert approved.status_code == 200, approved.text
    assert upstream_stage(fleet.mlflow(0), name, version) == "Staging"

    # Gate A sees the approval gate B recorded: CI promotes through gate A.
    assert promote(fleet, 0, people["ci"], name, version, "Production").status_code == 200
    assert upstream_stage(fleet.mlflow(1), name, version) == "Production"
    tags = tags_of(version_of(fleet, 1, name, version))
    history = [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(HISTORY_PREFIX)]
    assert [(h["stage"], h["by"]) for h in history] == [("Staging", "ci-bot"), ("Production", "ci-bot")]

    # The review history is the same through either gate.
    listed = [http(g.url, "GET", "/api/2.0/mlflow/transition-requests/list", people["alice"],
                   params={"name": name, "version": version, "include_history": "true"}).json()["requests"]
              for g in fleet.gates]
    assert listed[0] == listed[1]
    assert [(a["activity_type"], a["user_id"]) for a in listed[0]] == [("REQUESTED_TRANSITION", "alice"),
                                                                        ("APPROVED_REQUEST", "bob")]

    # Each replica's events reached the receiver (through the shared outbox), and only what that replica did: the
    # decision id of each event is in the audit log of the gate that made the decision.
    seen = fleet.recorder.wait_for(name, {
        ("MODEL_VERSION_CREATED", "gate-a"), ("MODEL_VERSION_TRANSITIONED_TO_STAGING", "gate-b"),
        ("TRANSITION_REQUEST_CREATED", "gate-a"), ("POLICY_DENIED", "gate-a"), ("POLICY_DENIED", "gate-b"),
        ("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "gate-a")}, fleet.replica_of)
    assert ("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "gate-b") not in seen
    assert fleet.recorder.bad_signatures == 0


def test_approval_voided_on_one_replica_is_void_on_the_other(fleet, via, people):
    name, version = new_model_version(via(1, people["alice"]))
    assert promote(fleet, 0, people["ci"], name, version, "Staging").status_code == 200
    assert workflow(fleet.gate(1).url, people["alice"], "create", name=name, version=version,
                    stage="Production").status_code == 200
    assert workflow(fleet.gate(0).url, people["bob"], "approve", name=name, version=version, stage="Production",
                    archive_existing_versions=True).status_code == 200
    # The evidence changes through gate B after the review; CI is refused on gate A.
    run_id = version_of(fleet, 0, name, version)["run_id"]
    via(1, people["alice"]).log_metric(run_id, "val_auc", 0.99)
    refused = promote(fleet, 0, people["ci"], name, version, "Production")
    assert refused.status_code == 403 and "approval" in refused.text, refused.text
    assert upstream_stage(fleet.mlflow(1), name, version) == "Staging"


def test_one_production_version_after_promotions_through_both_gates(fleet, via, people):
    alice = via(0, people["alice"])
    name, first = new_model_version(alice)
    _, second = new_model_version(alice, name)
    for i, version in enumerate((first, second)):
        assert promote(fleet, i, people["ci"], name, version, "Staging").status_code == 200
        assert workflow(fleet.gate(i).url, people["alice"], "create", name=name, version=version,
                        stage="Production").status_code == 200
        assert workflow(fleet.gate(i + 1).url, people["bob"], "approve", name=name, version=version,
                        stage="Production", archive_existing_versions=True).status_code == 200
        assert promote(fleet, i, people["ci"], name, version, "Production").status_code == 200
    assert upstream_stage(fleet.mlflow(0), name, first) == "Archived"
    assert upstream_stage(fleet.mlflow(0), name, second) == "Production"


def test_each_replica_keeps_its_own_intact_audit_chain_and_never_logs_the_database_password(fleet):
    for gate in fleet.gates:
        records = audit_records(gate.audit, everything=True)
        assert records and {r["replica"] for r in records} == {gate.dir.name}, f"{gate.audit}: replica ids"
        assert PASSWORD not in gate.log.read_text()
    # Both replicas' files at once: one chain each, each against its own latest published checkpoint.
    for gate in fleet.gates:
        flushed_metrics = http(gate.admin_url, "GET", "/metrics").text
        assert f'mlflow_gate_replica_info{{replica="{gate.dir.name}"}} 1' in flushed_metrics
        assert "mlflow_gate_policy_bundle_info{revision=" in flushed_metrics
    checkpoints = [http(g.admin_url, "GET", "/audit/checkpoint").json() for g in fleet.gates]
    assert [c["replica"] for c in checkpoints] == ["gate-a", "gate-b"]
    args = tuple(a for c in checkpoints for a in ("--checkpoint", json.dumps(c)))
    verified = audit_verify(*(g.audit for g in fleet.gates), args=args)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit chain of replica gate-a intact" in verified.stdout
    assert "audit chain of replica gate-b intact" in verified.stdout
    assert "all 2 replicas' audit chains intact" in verified.stdout


def test_verify_names_the_replica_whose_chain_was_tampered_with(fleet, tmp_path):
    a, b = fleet.gates
    lines = a.audit.read_text().splitlines()
    record = json.loads(lines[1])
    record["decision"] = "allow" if record["decision"] != "allow" else "denied"
    lines[1] = json.dumps(record, separators=(",", ":"))
    forged = tmp_path / "gate-a-audit.log"
    forged.write_text("\n".join(lines) + "\n")
    verified = audit_verify(forged, b.audit)
    assert verified.returncode != 0
    assert "audit chain of replica gate-a broken" in verified.stderr and "record 1 was altered" in verified.stderr
    assert "audit chain of replica gate-b intact" in verified.stdout
    # A replica's checkpoint cannot stand in for another's: it names its replica, and is signed with it.
    checkpoint = http(b.admin_url, "GET", "/audit/checkpoint").json()
    checkpoint["replica"] = "gate-a"
    moved = audit_verify(a.audit, b.audit, args=("--checkpoint", json.dumps(checkpoint)))
    assert moved.returncode != 0 and "does not verify" in moved.stdout + moved.stderr
