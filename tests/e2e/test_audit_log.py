"""The audit log against a tamperer, end to end: one real `mlflow-gate serve` (in front of the session's MLflow)
writes a keyed audit chain and publishes signed checkpoints on its process log, on an AUDIT_CHECKPOINT webhook and
on its admin listener; `mlflow-gate audit verify` then judges tampered copies of that file. Each tampering of
issue 17 (first records deleted; a denial rewritten as an allowed CI call with the unkeyed parts recomputed; last
records cut) is reported with the record number and a non-zero exit; the intact file still verifies."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import GATE_BIN, gate_config, gate_process, gate_settings, poll
from helpers import GOOD_TAGS, http, new_model_version

DENIAL = "only the CI service account may transition to Production"


@dataclass
class AuditRun:
    log: Path  # the gate's process log (checkpoints are JSON lines in it)
    audit: Path
    key_file: Path
    lines: list[str]  # the audit file as the gate left it
    admin_checkpoint: dict  # GET /audit/checkpoint while it ran
    metrics: str  # /metrics at the same moment
    hooked: list[dict] = field(default_factory=list)  # AUDIT_CHECKPOINT webhook bodies received
    denied_seq: int = -1  # alice's denied transition
    tmp: Path = Path()


class Receiver:
    """Collects webhook bodies."""

    def __init__(self):
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


# Made straight in MLflow, the run carries its owner as the gate would have stamped it (the evaluation gate checks
# that a version's files are its run owner's output).
OWNED_BY_ALICE = {**GOOD_TAGS, "mlflow.user": "alice"}


@pytest.fixture(scope="module")
def run(mlflow_server, gate_keys, tmp_path_factory) -> AuditRun:
    tmp = tmp_path_factory.mktemp("audit-log")
    key_file = tmp / "audit.key"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    receiver = Receiver()
    audit = tmp / "audit.log"
    config = gate_settings(mlflow_server.url, gate_keys.jwks, {
        "admin": {"listen": "127.0.0.1:0"},
        "audit": {"sink": "file", "file": str(audit), "key_file": str(key_file), "checkpoint_every_records": 3},
        "webhook_delivery": {"spool_dir": str(tmp / "spool")},
        "webhooks": [{"url": receiver.url, "events": ["AUDIT_CHECKPOINT"]}],
    })
    try:
        with gate_process(tmp, config, name="audit gate") as gate:
            url, admin, log, proc = gate.url, gate.admin_url, gate.log, gate.proc
            name, version = new_model_version(MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url),
                                              tags=OWNED_BY_ALICE)
            alice, ci = gate_keys.token("alice"), gate_keys.token("ci-bot", groups=["mlflow-ci"])
            move = {"name": name, "version": version, "stage": "Production", "archive_existing_versions": False}
            for _ in range(3):
                assert http(url, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", alice).status_code == 200
            denied = http(url, "POST", "/api/2.0/mlflow/model-versions/transition-stage", alice, json=move)
            assert denied.status_code == 403 and DENIAL in denied.text, denied.text
            staged = http(url, "POST", "/api/2.0/mlflow/model-versions/transition-stage", ci, json={**move, "stage": "Staging"})
            assert staged.status_code == 200, staged.text
            for _ in range(3):
                assert http(url, "GET", "/api/2.0/mlflow/experiments/search?max_results=1", ci).status_code == 200
            # 1 genesis + 8 decisions; a checkpoint every 3 records: the one of record 6 is published by now.
            checkpoint = poll(lambda: (r := http(admin, "GET", "/audit/checkpoint")).status_code == 200
                              and r.json()["seq"] >= 6 and r.json(), "checkpoint of record 6 on the admin listener")
            metrics = http(admin, "GET", "/metrics").text
            hooked = poll(lambda: [b for b in receiver.bodies if b["event"] == "AUDIT_CHECKPOINT"
                                   and b["checkpoint"]["seq"] >= 6], "AUDIT_CHECKPOINT webhook of record 6")
    finally:
        receiver.server.shutdown()
    assert proc.returncode == 0, log.read_text()[-3000:]
    lines = audit.read_text().splitlines()
    denied_seq = next(i for i, line in enumerate(lines) if json.loads(line).get("decision") == "denied")
    return AuditRun(log, audit, key_file, lines, checkpoint, metrics, hooked, denied_seq, tmp)


def verify(run: AuditRun, lines: list[str], *args: str, key_file: Path | None = None) -> subprocess.CompletedProcess:
    copy = run.tmp / f"copy-{len(list(run.tmp.glob('copy-*')))}.log"
    copy.write_text("\n".join(lines) + "\n")
    cmd = [str(GATE_BIN), "audit", "verify", "--key-file", str(key_file or run.key_file), *args, str(copy)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_the_intact_log_verifies_against_every_published_checkpoint(run):
    records = [json.loads(line) for line in run.lines]
    assert records[0]["kind"] == "genesis" and [r["seq"] for r in records] == list(range(9))
    assert run.key_file.read_text().strip() not in run.log.read_text() + "\n".join(run.lines)
    admin, hooked = run.admin_checkpoint, run.hooked[-1]
    assert f'mlflow_gate_audit_checkpoint_info{{seq="{admin["seq"]}",mac="{admin["mac"]}"' in run.metrics, run.metrics
    assert hooked["checkpoint"]["mac"] == records[hooked["checkpoint"]["seq"]]["mac"]
    result = verify(run, run.lines, "--checkpoint", str(run.log), "--checkpoint", json.dumps(admin),
                    "--checkpoint", json.dumps(hooked))
    assert result.returncode == 0, result.stderr
    assert "audit chain intact: 9 records in 1 file(s), records 0..8 from the genesis record" in result.stdout
    assert "checkpoint of record 8: matches" in result.stdout  # the one published at shutdown
    assert f"checkpoint of record {admin['seq']}: matches" in result.stdout


def test_deleting_the_first_records_is_reported_with_their_numbers(run):
    result = verify(run, run.lines[3:])
    assert result.returncode != 0, result.stdout
    assert "line 1: records 0..2 are missing (deleted from the start)" in result.stderr, result.stderr
    assert "--from-checkpoint" in result.stderr  # what to do if the files were rotated away on purpose


def test_a_denial_rewritten_as_an_allowed_ci_call_is_reported_with_its_record_number(run):
    lines = list(run.lines)
    record = json.loads(lines[run.denied_seq])
    assert record["principal"]["sub"] == "alice" and DENIAL in " ".join(record["reasons"])
    record.update(principal={"sub": "ci-bot", "groups": ["mlflow-ci"]}, decision="allow", allow=True, status=200,
                  upstream_status=200, reasons=[])
    # The parts a tamperer can recompute without the key: a digest in place of the MAC, and the next record's link.
    del record["mac"]
    record["mac"] = hashlib.sha256(json.dumps(record, separators=(",", ":")).encode()).hexdigest()
    lines[run.denied_seq] = json.dumps(record, separators=(",", ":"))
    following = json.loads(lines[run.denied_seq + 1])
    following["prev"] = record["mac"]
    lines[run.denied_seq + 1] = json.dumps(following, separators=(",", ":"))
    result = verify(run, lines, "--checkpoint", str(run.log))
    assert result.returncode != 0, result.stdout
    line = run.denied_seq + 1
    assert re.search(rf"line {line}: record {run.denied_seq} was altered", result.stderr), result.stderr


def test_cutting_the_last_records_is_reported_against_the_published_checkpoint(run):
    cut = run.lines[:-3]  # records 6, 7 and 8 removed
    unaware = verify(run, cut)
    assert unaware.returncode == 0 and "--checkpoint" in unaware.stdout, "without a checkpoint a cut is invisible"
    published = ((str(run.log), 8),  # the process log: its last checkpoint, taken at shutdown
                 (json.dumps(run.admin_checkpoint), run.admin_checkpoint["seq"]),  # GET /audit/checkpoint
                 (json.dumps(run.hooked[-1]), run.hooked[-1]["checkpoint"]["seq"]))  # the webhook body
    for checkpoint, seq in published:
        result = verify(run, cut, "--checkpoint", checkpoint)
        assert result.returncode != 0, result.stdout
        missing = "record 6 is" if seq == 6 else f"records 6..{seq} are"
        assert "the log ends at record 5" in result.stderr, result.stderr
        assert f"{missing} missing from the end (cut, truncated)" in result.stderr, result.stderr


def test_a_wrong_key_is_reported_as_a_wrong_key(run):
    other = run.tmp / "other.key"
    other.write_text(base64.b64encode(os.urandom(32)).decode())
    result = verify(run, run.lines, key_file=other)
    assert result.returncode != 0 and "record 0 was written with audit key id" in result.stderr, result.stderr
    assert "wrong key" in result.stderr


def test_a_gate_with_an_audit_log_and_no_usable_key_refuses_to_start(mlflow_server, gate_keys, tmp_path):
    for extra, words in (({}, "audit.key_file: missing"),
                         ({"key_env": "MLFLOW_GATE_E2E_UNSET_KEY"}, "$MLFLOW_GATE_E2E_UNSET_KEY): not set"),
                         ({"key_file": str(tmp_path / "short.key")}, "at least 32")):
        (tmp_path / "short.key").write_text(base64.b64encode(b"too short").decode())
        config = gate_config(mlflow_server.url, gate_keys.jwks, {"audit": {"sink": "stdout", **extra}})
        (tmp_path / "gate.toml").write_text(config)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_GATE_E2E_UNSET_KEY"}
        result = subprocess.run([str(GATE_BIN), "serve", "--config", str(tmp_path / "gate.toml")], capture_output=True,
                                text=True, timeout=60, env=env)
        assert result.returncode != 0, f"{extra!r}: the gate started"
        assert words in result.stderr and "head -c 32 /dev/urandom | base64" in result.stderr, result.stderr
