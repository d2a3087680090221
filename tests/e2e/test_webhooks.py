"""Signed webhooks, end to end: the gate (in front of the real MLflow) tells a receiver what happened and who did it,
only after MLflow confirmed a permitted mutation, signed as Databricks signs, at least once, across a crash."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from conftest import gate_process, gate_settings, http_server_on, poll, reserve_port
from helpers import http, new_model_version, workflow

SECRET = "whsec-e2e-0123456789"


class Receiver:
    """An HTTP receiver that verifies X-Databricks-Signature and records events; it can fail the first N attempts."""

    def __init__(self, fail_first: int = 0, sock: socket.socket | None = None):
        """Listens on a port of its own, or on `sock` (bound, not listening yet), which it takes over."""
        self.events: list[dict] = []
        self.bad_signatures = 0
        self.attempts = 0
        self.fail_first = fail_first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.attempts += 1
                    if receiver.attempts <= receiver.fail_first:
                        self.send_response(500)
                        self.end_headers()
                        return
                    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                    if not hmac.compare_digest(expected, self.headers.get("X-Databricks-Signature", "")):
                        receiver.bad_signatures += 1
                    event = json.loads(body)
                    event["_delivery"] = self.headers.get("X-MLflow-Gate-Delivery-Id")
                    receiver.events.append(event)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http_server_on(sock or reserve_port(), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def names(self) -> list[tuple[str, str | None]]:
        with self.lock:
            return [(e["event"], e.get("version")) for e in self.events]

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len({e["_delivery"] for e in self.events}) >= count:
                    return
            time.sleep(0.05)
        raise AssertionError(f"expected {count} events, got {self.names()}")

    def close(self):
        self.server.shutdown()


class WebhookGate:
    """A gate of its own with a [[webhooks]] section (and a spool that outlives restarts), started by conftest's
    launcher; it can be killed and started again."""

    def __init__(self, tmp: Path, mlflow_url: str, jwks: Path, hook_url: str):
        self.tmp = tmp
        self.config = gate_settings(mlflow_url, jwks, {
            "webhook_delivery": {"spool_dir": str(tmp / "spool"), "initial_backoff_ms": 50, "max_backoff_ms": 400,
                                 "timeout_secs": 5},
            "webhooks": [{"url": hook_url, "secret_env": "E2E_HOOK_SECRET", "events": [
                "REGISTERED_MODEL_CREATED", "MODEL_VERSION_CREATED", "MODEL_VERSION_TRANSITIONED_STAGE",
                "MODEL_VERSION_TRANSITIONED_TO_STAGING", "TRANSITION_REQUEST_CREATED",
                "TRANSITION_REQUEST_TO_PRODUCTION_CREATED", "COMMENT_CREATED", "MODEL_VERSION_ALIAS_SET",
                "POLICY_DENIED"]}],
        })
        self.running = ExitStack()
        self.gate = None

    def start(self) -> str:
        self.gate = self.running.enter_context(gate_process(self.tmp, self.config, {"E2E_HOOK_SECRET": SECRET},
                                                            name="webhook gate"))
        return self.gate.url

    def kill(self):
        os.killpg(self.gate.proc.pid, signal.SIGKILL)
        self.gate.proc.wait(10)

    def stop(self):
        self.running.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_each_permitted_mutation_produces_its_signed_events(tmp_path, mlflow_server, gate_keys, client_as, receiver):
    hook_gate = WebhookGate(tmp_path, mlflow_server.url, gate_keys.jwks, receiver.url)
    url = hook_gate.start()
    try:
        alice, ci = gate_keys.token("alice"), gate_keys.token("ci-bot", groups=["mlflow-ci"])
        client_as(alice)
        from mlflow import MlflowClient
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        os.environ["MLFLOW_TRACKING_TOKEN"] = alice
        name, version = new_model_version(client)
        receiver.wait_for(2)
        assert sorted(receiver.names(), key=str) == sorted([("REGISTERED_MODEL_CREATED", None),
                                                            ("MODEL_VERSION_CREATED", version)], key=str)

        os.environ["MLFLOW_TRACKING_TOKEN"] = ci
        MlflowClient(tracking_uri=url, registry_uri=url).transition_model_version_stage(name, version, "Staging")
        receiver.wait_for(4)
        assert sorted(receiver.names()[2:]) == [("MODEL_VERSION_TRANSITIONED_STAGE", version),
                                                ("MODEL_VERSION_TRANSITIONED_TO_STAGING", version)]

        assert workflow(url, alice, "create", name=name, version=version, stage="Production").status_code == 200
        assert http(url, "POST", "/api/2.0/mlflow/comments/create", alice,
                    json={"name": name, "version": version, "comment": "ready"}).status_code == 200
        receiver.wait_for(7)
        assert sorted(n for n, _ in receiver.names()[4:]) == ["COMMENT_CREATED", "TRANSITION_REQUEST_CREATED",
                                                               "TRANSITION_REQUEST_TO_PRODUCTION_CREATED"]

        # A denied mutation produces POLICY_DENIED (and nothing else); a failed one (MLflow says no) produces nothing.
        denied = http(url, "POST", "/api/2.0/mlflow/model-versions/transition-stage", alice,
                      json={"name": name, "version": version, "stage": "Production", "archive_existing_versions": True})
        assert denied.status_code == 403
        failed = http(url, "POST", "/api/2.0/mlflow/registered-models/alias", alice,
                      json={"name": name, "alias": "candidate", "version": "999"})
        assert failed.status_code >= 400
        receiver.wait_for(8)
        # Nothing else may arrive: every event is spooled before its request is answered and leaves the spool once
        # delivered, so with the spool empty everything these requests produced has arrived.
        poll(lambda: not any(p.is_file() for p in (tmp_path / "spool").iterdir()), "the spool to drain")
        denial = [e for e in receiver.events if e["event"] == "POLICY_DENIED"]
        assert len(denial) == 1
        last = denial[0]
        assert [n for n, _ in receiver.names()[7:]] == ["POLICY_DENIED"], receiver.names()
        assert last["principal"] == "alice" and last["decision_id"] == denied.headers["x-mlflow-gate-request-id"]
        assert any("only the CI service account" in r for r in last["reasons"])

        for event in receiver.events:
            assert event["model_name"] == name and event["event_timestamp"] > 0 and event["decision_id"]
        assert receiver.bad_signatures == 0
        assert {e["principal"] for e in receiver.events} == {"alice", "ci-bot"}
    finally:
        hook_gate.stop()
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)


def test_failing_receiver_and_crashed_gate_still_deliver_every_event(tmp_path, mlflow_server, gate_keys):
    # The receiver's port is held by a socket that does not listen yet: deliveries are refused until it does.
    reserved = reserve_port()
    port = reserved.getsockname()[1]
    hook_gate = WebhookGate(tmp_path, mlflow_server.url, gate_keys.jwks, f"http://127.0.0.1:{port}/hook")
    flaky = None
    try:
        url = hook_gate.start()
        alice = gate_keys.token("alice")
        names = [f"e2e-hook-{i}-{os.getpid()}-{time.time_ns()}" for i in range(3)]
        for name in names:
            assert http(url, "POST", "/api/2.0/mlflow/registered-models/create", alice, json={"name": name}).status_code == 200
        # Nobody listens on the receiver's port yet: the deliveries are pending in the spool when the gate is killed.
        hook_gate.kill()
        assert any(p.is_file() for p in (tmp_path / "spool").rglob("*")), "nothing was spooled"
        # The receiver comes up (and fails its first 3 attempts); the restarted gate delivers everything.
        flaky = Receiver(fail_first=3, sock=reserved)
        hook_gate.start()
        flaky.wait_for(3, timeout=60)
        assert sorted(e["model_name"] for e in flaky.events) == sorted(names)
        assert flaky.attempts >= 6 and flaky.bad_signatures == 0
    finally:
        hook_gate.stop()
        if flaky:
            flaky.close()
