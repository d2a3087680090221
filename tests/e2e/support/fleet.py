"""A fleet on real parts for the PostgreSQL suites: one PostgreSQL cluster, two `mlflow server` processes on the same
database with one shared artifact root (the several stateless MLflow instances of the design), and a gate in front
of each (the sidecar topology), each gate with its own webhook spool and audit file; plus a webhook receiver that
records which replica sent what. Tests spread their requests over the gates by index."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from conftest import Gate, GateKeys, Server, gate_process, gate_settings, http_server_on, mlflow_process, poll
from helpers import http, upstream
from support.audit import AUDIT_KEY, AUDIT_KEY_ENV, audit_records
from support.postgres import Postgres, postgres_cluster

HOOK_SECRET = "whsec-fleet-0123456789"
HOOK_SECRET_ENV = "MLFLOW_GATE_E2E_FLEET_HOOK_SECRET"
FLEET_EVENTS = ["REGISTERED_MODEL_CREATED", "MODEL_VERSION_CREATED", "MODEL_VERSION_TRANSITIONED_STAGE",
                "MODEL_VERSION_TRANSITIONED_TO_STAGING", "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
                "TRANSITION_REQUEST_CREATED", "COMMENT_CREATED", "MODEL_VERSION_ALIAS_SET", "POLICY_DENIED"]


@dataclass
class Delivery:
    path: str
    delivery_id: str
    event: dict


class Recorder:
    """A webhook receiver on loopback: verifies X-Databricks-Signature, records every delivery with the path it was
    posted to. Listens on `sock` (from `reserve_port`) if given: until then deliveries to it are refused."""

    def __init__(self, sock: socket.socket):
        self.deliveries: list[Delivery] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
                with recorder.lock:
                    if not hmac.compare_digest(expected, self.headers.get("X-Databricks-Signature", "")):
                        recorder.bad_signatures += 1
                    recorder.deliveries.append(Delivery(self.path, self.headers.get("X-MLflow-Gate-Delivery-Id", ""),
                                                        json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http_server_on(sock, Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def about(self, model: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.event.get("model_name") == model]

    def wait_for(self, model: str, events: set[tuple[str, str]], label: Callable[[Delivery], str | None],
                 timeout: float = 30) -> set[tuple[str, str | None]]:
        """Waits until every (event, label) pair has arrived for `model`; returns the pairs that arrived."""

        def arrived():
            seen = {(d.event["event"], label(d)) for d in self.about(model)}
            return seen if events <= seen else None

        return poll(arrived, f"webhook events {sorted(events)} for {model}", timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


DATABASE_URL_ENV = "MLFLOW_GATE_E2E_DATABASE_URL"


def fleet_gate_settings(mlflow_url: str, jwks: Path, directory: Path, name: str, hook: str,
                        extra: dict | None = None) -> dict:
    """A fleet gate's config: replica id `name`, admin listener, audit file, the fleet's PostgreSQL (URL in
    DATABASE_URL_ENV) for the webhook outbox and the promotion locks, every fleet event to `hook` (the same
    [[webhooks]] on every replica: a delivery is claimed by replicas that know its webhook id); `extra` sections
    are merged in (see `gate_settings`)."""
    sections = {
        "admin": {"listen": "127.0.0.1:0"},
        "audit": {"sink": "file", "file": str(directory / "audit.log"), "key_env": AUDIT_KEY_ENV},
        "fleet": {"replica_id": name, "database_url_env": DATABASE_URL_ENV, "poll_interval_ms": 200,
                  "lease_secs": 6},
        "webhook_delivery": {"initial_backoff_ms": 50, "max_backoff_ms": 400, "timeout_secs": 5},
        "webhooks": [{"url": hook, "secret_env": HOOK_SECRET_ENV, "events": FLEET_EVENTS}],
    }
    for header, body in (extra or {}).items():
        if isinstance(body, dict):
            sections.setdefault(header, {}).update(body)
        else:
            sections[header] = body
    return gate_settings(mlflow_url, jwks, sections)


GATE_ENV = {"MLFLOW_GATE_LOG": "info", AUDIT_KEY_ENV: AUDIT_KEY, HOOK_SECRET_ENV: HOOK_SECRET}


def gate_env(pg: Postgres, database: str) -> dict[str, str]:
    return {**GATE_ENV, DATABASE_URL_ENV: pg.url(database)}


@dataclass
class Fleet:
    """The running fleet. `gate(i)` and `mlflow(i)` wrap around, so a test can spread over them by counting."""

    pg: Postgres
    database: str
    mlflows: list[Server]
    gates: list[Gate]
    recorder: Recorder
    keys: GateKeys
    logs: list[tuple[str, Path]] = field(default_factory=list)

    def gate(self, i: int) -> Gate:
        return self.gates[i % len(self.gates)]

    def replica_of(self, delivery: Delivery) -> str | None:
        """The gate (`gate-a`, ...) whose audit log holds the decision a delivery's event came from."""
        decision = delivery.event.get("decision_id")
        for gate in self.gates:
            if any(r.get("decision_id") == decision for r in audit_records(gate.audit)):
                return gate.dir.name
        return None

    def mlflow(self, i: int) -> Server:
        return self.mlflows[i % len(self.mlflows)]


@contextmanager
def running_fleet(tmp: Path, keys: GateKeys, replicas: int = 2) -> Iterator[Fleet]:
    """PostgreSQL, `replicas` MLflow servers on one database and one artifact root, a gate in front of each."""
    with ExitStack() as stack:
        pg = stack.enter_context(postgres_cluster())
        database = "mlflow"
        store = pg.create_database(database).replace("postgresql://", "postgresql+psycopg2://", 1)
        artifacts = tmp / "artifacts"
        recorder = stack.enter_context(closing_recorder())
        mlflows, gates, logs = [], [], []
        # One at a time: the first server creates MLflow's tables (alembic), the others find them.
        for i in range(replicas):
            directory = tmp / f"mlflow-{i}"
            directory.mkdir()
            mlflows.append(stack.enter_context(mlflow_process(directory, backend_store_uri=store, artifacts=artifacts)))
            logs.append((f"mlflow-{i}", directory / "mlflow.log"))
        for i, server in enumerate(mlflows):
            name = f"gate-{'ab'[i] if i < 2 else i}"
            directory = tmp / name
            directory.mkdir()
            config = fleet_gate_settings(server.url, keys.jwks, directory, name, f"{recorder.base}/hook")
            gates.append(stack.enter_context(gate_process(directory, config, gate_env(pg, database), name=name)))
            logs.append((name, directory / "gate.log"))
        yield Fleet(pg, database, mlflows, gates, recorder, keys, logs)


@contextmanager
def closing_recorder() -> Iterator[Recorder]:
    from conftest import reserve_port

    recorder = Recorder(reserve_port())
    try:
        yield recorder
    finally:
        recorder.close()


# ---------------------------------------------------------------------------------------------------------------
# What the fleet tests share


@pytest.fixture
def people(gate_keys) -> dict[str, str]:
    return {
        "alice": gate_keys.token("alice"),
        "bob": gate_keys.token("bob", groups=["ml-senior"]),
        "dave": gate_keys.token("dave", groups=["ml-senior"]),
        "ci": gate_keys.token("ci-bot", groups=["mlflow-ci"]),
    }


@pytest.fixture
def via(fleet, mlflow_env):
    """`via(i, token)`: an MlflowClient that talks to gate i as the token's holder."""
    return lambda i, token: mlflow_env(fleet.gate(i).url, token)


def version_of(fleet: Fleet, i: int, name: str, version: str) -> dict:
    """The model version as MLflow server i has it (straight, not through a gate)."""
    return upstream(fleet.mlflow(i), "/api/2.0/mlflow/model-versions/get", name=name, version=version)["model_version"]


def promote(fleet: Fleet, i: int, token: str, name: str, version: str, stage: str):
    """A transition through gate i; to Production it archives the other Production versions (as the policy asks)."""
    return http(fleet.gate(i).url, "POST", "/api/2.0/mlflow/model-versions/transition-stage", token,
                json={"name": name, "version": version, "stage": stage,
                      "archive_existing_versions": stage == "Production"})
