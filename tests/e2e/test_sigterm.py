"""SIGTERM under load: the gate stops accepting, finishes what is in flight (a slow upload included) within the
grace period, and loses no audit record."""

from __future__ import annotations

import concurrent.futures
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import poll, tail
from helpers import unique, upstream_has_experiment
from support.audit import audit_records, audit_verify
from support.client import REQUEST_ID, request
from support.ops import LOADED_POLICY_TIMEOUT_MS, gates  # noqa: F401 (fixtures)
from support.prometheus import metric_value, scrape


def test_sigterm_under_load_loses_no_audit_record(gates, gate_keys, mlflow_server):
    grace = 20
    gate = gates("sigterm", audit={"sink": "file"}, admin=True, grace_secs=grace,
                 policy_timeout_ms=LOADED_POLICY_TIMEOUT_MS)  # as in the rotation test: the budget is not under test
    alice = gate_keys.token("alice")

    # A slow upload that is in flight when SIGTERM arrives: the gate has its headers (it authenticated it) and
    # is streaming its body to MLflow; the rest of the body is sent only after the gate stopped accepting.
    # Written by an admin: the path belongs to no run, and only admins write where nobody owns (artifacts.rego).
    uploader = gate_keys.token("root", groups=["mlflow-admin"])
    artifact = f"{unique('sigterm')}/slow.bin"
    chunks = [os.urandom(64 * 1024) for _ in range(4)]
    slow = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=60)
    slow.putrequest("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{artifact}")
    for header, value in (("Authorization", f"Bearer {uploader}"), ("Content-Type", "application/octet-stream"),
                          ("Content-Length", str(sum(map(len, chunks))))):
        slow.putheader(header, value)
    slow.endheaders()
    slow.send(chunks[0])
    poll(lambda: metric_value(scrape(gate), "mlflow_gate_auth_duration_seconds_count") >= 1,
         "the gate is processing the slow upload", log=gate.log)

    total, terminate_after = 200, 100
    done = threading.Semaphore(0)
    outcomes: list[dict] = [{} for _ in range(total)]

    def one(i: int) -> None:
        kind = ("create", "search", "search", "anonymous")[i % 4]
        name = unique(f"sigterm-{i}")
        path = "/api/2.0/mlflow/experiments/create" if kind != "search" else \
            "/api/2.0/mlflow/experiments/search?max_results=2"
        try:
            reply = request(gate, "POST" if kind != "search" else "GET", path, None if kind == "anonymous" else alice,
                            json_body={"name": name} if kind != "search" else None, timeout=60)
            outcomes[i] = {"kind": kind, "name": name, "status": reply.status, "id": reply.headers.get(REQUEST_ID)}
        except (OSError, http.client.HTTPException) as err:
            outcomes[i] = {"kind": kind, "name": name, "error": f"{type(err).__name__}: {err}"}
        finally:
            done.release()

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(one, i) for i in range(total)]
        for _ in range(terminate_after):
            done.acquire()
        os.kill(gate.proc.pid, signal.SIGTERM)  # the gate's pid only
        terminated = time.monotonic()
        # Stopped accepting: new connections are refused while the slow upload is still unfinished.
        poll(lambda: not can_connect(gate.port), "the gate stops accepting", log=gate.log)
        assert gate.proc.poll() is None, "the gate exited with a request in flight"
        for chunk in chunks[1:]:
            slow.send(chunk)
        upload = slow.getresponse()
        upload_body, upload_id = upload.read(), upload.getheader(REQUEST_ID)
        slow.close()
        concurrent.futures.wait(futures)

    try:
        code = gate.proc.wait(grace + 5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the gate did not exit within {grace + 5}s of SIGTERM; log tail:\n{tail(gate.log)}")
    exited = time.monotonic() - terminated
    assert code == 0, tail(gate.log)
    assert exited < grace, exited

    assert upload.status == 200, upload_body
    with requests.Session() as session:
        session.trust_env = False
        stored = session.get(f"{mlflow_server.url}/api/2.0/mlflow-artifacts/artifacts/{artifact}", timeout=30)
    assert stored.status_code == 200 and stored.content == b"".join(chunks)

    answered = [o for o in outcomes if "status" in o]
    failed = [o for o in outcomes if "error" in o]
    assert len(answered) >= terminate_after, (len(answered), failed[:5])
    expected_status = {"create": 200, "search": 200, "anonymous": 401}
    assert [o for o in answered if o["status"] != expected_status[o["kind"]]] == []
    assert all(o["id"] for o in answered)
    for o in answered:
        if o["kind"] == "create":
            assert upstream_has_experiment(mlflow_server, o["name"]), o
        if o["kind"] == "anonymous":
            assert not upstream_has_experiment(mlflow_server, o["name"]), o
    # Requests that got no answer failed at the connection (refused or reset), not halfway through a response.
    assert all(re.match(r"(ConnectionRefusedError|ConnectionResetError|RemoteDisconnected|BrokenPipeError)", o["error"])
               for o in failed), failed[:5]

    records = {r["decision_id"]: r for r in audit_records(gate.audit)}
    missing = [o for o in answered if o["id"] not in records]
    assert missing == [], f"{len(missing)} answered requests have no audit record: {missing[:5]}"
    assert all(records[o["id"]]["status"] == o["status"] for o in answered)
    assert upload_id in records and records[upload_id]["status"] == 200
    assert records[upload_id]["operation"]["rpc"] == "UploadArtifact"
    assert len(records) <= total + 1
    verified = audit_verify(gate.audit, args=("--checkpoint", str(gate.log)))  # the checkpoint taken at shutdown
    assert verified.returncode == 0, verified.stderr
    assert re.search(r"checkpoint of record \d+: matches", verified.stdout), verified.stdout
    log = gate.log.read_text()
    assert "shutting down" in log and "grace period over" not in log


def can_connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False
