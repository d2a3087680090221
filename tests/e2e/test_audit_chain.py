"""The hash-chained audit log, end to end: what each decision record says, the chain and its verifier (tampering
found, naming the line), rotation and restarts keeping one chain, `keep`, and the stdout sink."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import Gate, poll, stop, tail
from helpers import GOOD_TAGS, assert_mlflow_error, new_model_version, unique, upstream_has_experiment, upstream_stage
from support.audit import AUDIT_KEY, audit_records, audit_verify, bundle_revision, logged_checkpoints, tampered
from support.client import REQUEST_ID, Reply, as_response, request
from support.ops import PRODUCTION_DENIAL_MENTIONS, gates  # noqa: F401 (fixtures)


# Made straight in MLflow, the run carries its owner as the gate would have stamped it (the evaluation gate checks
# that a version's files are its run owner's output).
OWNED_BY_ALICE = {**GOOD_TAGS, "mlflow.user": "alice"}
AUDIT_FIELDS = {"seq", "kind", "decision_id", "time", "principal", "operation", "target", "decision", "allow",
                "reasons", "would_deny", "break_glass", "bundle_revision", "upstream_status", "status", "latency_ms",
                "key_id", "prev", "mac"}


def test_audit_records_and_chain(gates, gate_keys, mlflow_server, tmp_path):
    gate = gates("audit", audit={"sink": "file", "max_bytes": 10 * 1024 * 1024, "keep": 3})
    alice, ci = gate_keys.token("alice"), gate_keys.token("ci-bot", groups=["mlflow-ci"])
    expired = gate_keys.token("alice", ttl=-600)
    # A model version made straight in MLflow (not through this gate): only the requests below are audited here.
    name, version = new_model_version(MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url),
                                          tags=OWNED_BY_ALICE)

    expected: dict[str, dict] = {}  # decision id -> what its record must say

    def call(method, path, token=None, body=None, *, status, decision, sub=None, groups=(), rpc=None,
             upstream_status=None) -> Reply:
        reply = request(gate, method, path, token, json_body=body)
        assert reply.status == status, reply.body
        decision_id = reply.headers[REQUEST_ID]
        assert re.fullmatch(r"[0-9a-f]{16}", decision_id), decision_id
        if decision in ("denied", "unauthenticated"):  # the gate's own errors quote the decision id
            assert f"(request id {decision_id})" in reply.json()["message"], reply.body
        if decision is not None:
            expected[decision_id] = {"decision": decision, "status": status, "rpc": rpc, "upstream_status":
                                     upstream_status, "principal": {"sub": sub, "groups": list(groups)} if sub
                                     else None}
        return reply

    exp_name = unique("audit-exp")
    created = call("POST", "/api/2.0/mlflow/experiments/create", alice, {"name": exp_name}, status=200,
                   decision="allow", sub="alice", rpc="CreateExperiment", upstream_status=200)
    experiment_id = created.json()["experiment_id"]
    call("GET", f"/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}", alice, status=200,
         decision="allow", sub="alice", rpc="GetExperiment", upstream_status=200)
    call("GET", "/api/2.0/mlflow/experiments/get?experiment_id=987654321", alice, status=404, decision="allow",
         sub="alice", rpc="GetExperiment", upstream_status=404)
    transition = {"name": name, "version": version, "stage": "Production", "archive_existing_versions": True}
    denied = call("POST", "/api/2.0/mlflow/model-versions/transition-stage", alice, transition, status=403,
                  decision="denied", sub="alice", rpc="TransitionModelVersionStage")
    call("POST", "/api/2.0/mlflow/model-versions/transition-stage", ci, {**transition, "stage": "Staging"},
         status=200, decision="allow", sub="ci-bot", groups=["mlflow-ci"], rpc="TransitionModelVersionStage",
         upstream_status=200)
    anonymous = unique("audit-anon")
    call("POST", "/api/2.0/mlflow/experiments/create", None, {"name": anonymous}, status=401,
         decision="unauthenticated")
    call("POST", "/api/2.0/mlflow/experiments/create", expired, {"name": anonymous}, status=401,
         decision="unauthenticated")
    public = call("GET", "/health", status=200, decision=None)  # public: no decision, no record

    # The real upstream state matches the decisions.
    assert upstream_has_experiment(mlflow_server, exp_name)
    assert not upstream_has_experiment(mlflow_server, anonymous)
    assert upstream_stage(mlflow_server, name, version) == "Staging"

    # The denial as the client sees it quotes the decision id, which is also the response header.
    denied_id = denied.headers[REQUEST_ID]
    message = assert_mlflow_error(as_response(denied), 403, "PERMISSION_DENIED")
    assert PRODUCTION_DENIAL_MENTIONS in message and f"(request id {denied_id})" in message, message

    records = poll(lambda: len(r := audit_records(gate.audit)) >= len(expected) and r, "audit records", log=gate.log)
    by_id = {r["decision_id"]: r for r in records}
    assert len(by_id) == len(records) == len(expected), [r["decision_id"] for r in records]
    assert by_id.keys() == expected.keys()
    assert public.headers[REQUEST_ID] not in by_id
    revision = bundle_revision(gate.dir / "gate.toml")
    now = datetime.datetime.now(datetime.timezone.utc)
    for decision_id, want in expected.items():
        record = by_id[decision_id]
        assert AUDIT_FIELDS <= record.keys(), sorted(AUDIT_FIELDS - record.keys())
        assert record["decision"] == want["decision"], record
        assert record["allow"] is (want["decision"] == "allow"), record
        assert record["status"] == want["status"], record
        assert record["upstream_status"] == want["upstream_status"], record
        assert record["principal"] == want["principal"], record
        if want["rpc"]:
            assert record["operation"]["rpc"] == want["rpc"], record
        assert record["bundle_revision"] == revision, record
        assert record["break_glass"] is False and record["would_deny"] == [], record
        assert isinstance(record["latency_ms"], (int, float)) and 0 <= record["latency_ms"] < 60_000, record
        when = datetime.datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
        assert abs((now - when).total_seconds()) < 120, record
        assert re.fullmatch(r"[0-9a-f]{64}", record["mac"]) and re.fullmatch(r"[0-9a-f]{64}", record["prev"])
    chain = audit_records(gate.audit, everything=True)  # the genesis record, then the decisions
    assert chain[0]["kind"] == "genesis" and chain[0]["seq"] == 0 and chain[0]["prev"] == "0" * 64, chain[0]
    assert [r["seq"] for r in chain] == list(range(len(chain)))
    assert [r["prev"] for r in chain[1:]] == [r["mac"] for r in chain[:-1]]
    assert len({r["key_id"] for r in chain}) == 1 and AUDIT_KEY not in gate.audit.read_text()
    times = [r["time"] for r in records]
    assert times == sorted(times)

    denial = by_id[denied_id]
    assert any(PRODUCTION_DENIAL_MENTIONS in reason for reason in denial["reasons"]), denial
    assert denial["target"]["name"] == name and str(denial["target"]["version"]) == version, denial
    assert denial["target"]["stage"] == "Production", denial
    assert denial["upstream_status"] is None

    # Never a token (nor its signature alone, nor the word Bearer) in the file.
    text = gate.audit.read_text()
    for token in (alice, ci, expired):
        assert token not in text and token.rsplit(".", 1)[1] not in text
    assert "Bearer" not in text

    # Clean shutdown: exit 0, everything flushed, the chain verifies up to the checkpoint published at shutdown.
    stop(gate.proc)
    assert gate.proc.returncode == 0, tail(gate.log)
    assert audit_records(gate.audit) == records
    verified = audit_verify(gate.audit, args=("--checkpoint", str(gate.log)))
    assert verified.returncode == 0, verified.stderr
    assert f"{len(records) + 1} records" in verified.stdout, verified.stdout
    assert f"checkpoint of record {len(records)}: matches" in verified.stdout, verified.stdout

    # Tampered copies: a field edited, a line deleted, two lines swapped. Each is found, naming the line.
    chain = audit_records(gate.audit, everything=True)
    line_of_denial = next(i for i, r in enumerate(chain) if r.get("decision_id") == denied_id)  # = its seq

    def cover_up(lines: list[str]) -> None:
        record = json.loads(lines[line_of_denial])
        record.update(decision="allow", allow=True, status=200)
        lines[line_of_denial] = json.dumps(record, separators=(",", ":"))

    def delete(lines: list[str]) -> None:
        del lines[3]

    def swap(lines: list[str]) -> None:
        lines[2], lines[3] = lines[3], lines[2]

    for label, edit, line, words in (("edited", cover_up, line_of_denial + 1, f"record {line_of_denial} was altered"),
                                     ("deleted", delete, 4, "record 3 is missing"),
                                     ("swapped", swap, 3, "record 2 is missing")):
        copy = tampered(gate.audit, tmp_path, f"audit-{label}.log", edit)
        result = audit_verify(copy)
        assert result.returncode != 0, f"{label}: verify passed: {result.stdout}"
        assert f"{copy} line {line}:" in result.stderr and words in result.stderr, f"{label}: {result.stderr}"


def test_audit_rotation_and_restart_keep_one_chain(gates, gate_keys, tmp_path):
    """Small files (a rotation every record or two) and restarts: the rotated files, oldest first, verify as one
    chain; a restarted gate continues the chain, whether its active file holds records or was just rotated."""
    audit_file = tmp_path / "rotating-audit" / "audit.log"
    audit_file.parent.mkdir()
    settings = {"sink": "file", "file": str(audit_file), "max_bytes": 1024, "keep": 50}
    alice = gate_keys.token("alice")
    ids: list[str] = []

    def files() -> list[Path]:  # oldest first: audit.log.N ... audit.log.1, audit.log
        return sorted(audit_file.parent.glob("audit.log.*"), key=lambda p: -int(p.suffix[1:])) + [audit_file]

    def active_size() -> int:
        return audit_file.stat().st_size if audit_file.exists() else 0

    def requests_until(gate: Gate, done: Callable[[], bool], at_least: int) -> None:
        for i in range(40):
            if i >= at_least and done():
                return
            reply = request(gate, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", alice)
            assert reply.status == 200, reply.body
            ids.append(reply.headers[REQUEST_ID])
            poll(lambda: [r["decision_id"] for f in files() for r in audit_records(f)] == ids, "records written",
                 log=gate.log)
        pytest.fail(f"the audit files never reached the state wanted: {[(f.name, f.stat().st_size) for f in files()]}")

    def verify_all(when: str) -> None:
        result = audit_verify(*files())
        assert result.returncode == 0, f"{when}: {result.stderr}"
        assert f"{len(ids) + 1} records in {len(files())} file(s)" in result.stdout, result.stdout  # + genesis

    # Rotation: several files, one chain; out of order it does not verify.
    gate = gates("audit-rotation-1", audit=settings)
    requests_until(gate, lambda: len(files()) >= 3 and active_size() > 0, at_least=4)
    stop(gate.proc)
    assert gate.proc.returncode == 0
    verify_all("after rotations")
    assert audit_verify(*reversed(files())).returncode != 0

    # Restart with records in the active file: the chain continues.
    gate = gates("audit-rotation-2", audit=settings)
    requests_until(gate, lambda: active_size() == 0, at_least=1)
    stop(gate.proc)
    verify_all("after a restart with a non-empty active file")

    # Restart right after a rotation (the active file is empty): the chain must still continue.
    assert active_size() == 0
    gate = gates("audit-rotation-3", audit=settings)
    requests_until(gate, lambda: True, at_least=1)
    stop(gate.proc)
    verify_all("after a restart with a freshly rotated, empty active file")


def test_audit_rotation_keeps_the_newest_files(gates, gate_keys):
    """keep = 2: older rotated files are deleted; what is kept is the newest records, still one chain, verifiable
    from the checkpoint published when the oldest kept file's predecessor was rotated (and not without it)."""
    gate = gates("audit-keep", audit={"sink": "file", "max_bytes": 1024, "keep": 2})
    alice = gate_keys.token("alice")
    ids = [request(gate, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", alice).headers[REQUEST_ID]
           for _ in range(10)]
    stop(gate.proc)
    assert gate.proc.returncode == 0
    directory = gate.audit.parent
    assert sorted(p.name for p in directory.glob("audit.log*")) == ["audit.log", "audit.log.1", "audit.log.2"]
    files = [directory / "audit.log.2", directory / "audit.log.1", gate.audit]
    kept = [r["decision_id"] for f in files for r in audit_records(f)]
    assert kept and kept == ids[-len(kept):] and len(kept) < len(ids), (kept, ids)
    first = audit_records(files[0], everything=True)[0]["seq"]
    unanchored = audit_verify(*files)
    assert unanchored.returncode != 0 and f"records 0..{first - 1} are missing" in unanchored.stderr, unanchored.stderr
    anchor = next(c for c in logged_checkpoints(gate.log) if c["seq"] == first - 1)
    verified = audit_verify(*files, args=("--from-checkpoint", json.dumps(anchor), "--checkpoint", str(gate.log)))
    assert verified.returncode == 0, verified.stderr


def test_audit_to_stdout(gates, gate_keys, tmp_path):
    """sink = "stdout": the same chained records, one JSON line each on stdout (the gate's own logs go to stderr;
    here both land in one file, told apart by their shape), flushed by the time the gate exits."""
    gate = gates("audit-stdout", audit={"sink": "stdout"})
    alice = gate_keys.token("alice")
    ids = [request(gate, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", alice).headers[REQUEST_ID],
           request(gate, "POST", "/api/2.0/mlflow/experiments/create", json_body={"name": "x"}).headers[REQUEST_ID]]
    stop(gate.proc)
    assert gate.proc.returncode == 0, tail(gate.log)
    lines = [line for line in gate.log.read_text().splitlines() if line.startswith("{")]
    records = [line for line in lines if {"seq", "prev", "mac"} <= json.loads(line).keys()]
    assert [json.loads(r).get("decision_id") for r in records] == [None, *ids]  # the genesis record first
    assert alice not in gate.log.read_text()
    copy = tmp_path / "stdout-records.log"
    copy.write_text("\n".join(records) + "\n")
    verified = audit_verify(copy, args=("--checkpoint", str(gate.log)))
    assert verified.returncode == 0, verified.stderr
