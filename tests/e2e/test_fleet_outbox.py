"""Webhook deliveries survive the replica that made them: two gates share the fleet's PostgreSQL outbox
(`[fleet] database_url_env`), one is killed (SIGKILL) for good while its deliveries are pending because the
receiver is down, and the other delivers every one of them once the receiver is up. Also: a delivery claimed by a
replica that dies mid-attempt is taken over when its lease ends; the outbox lives in the gate's own schema.

Runs on the fleet of test_fleet_postgres (PostgreSQL, two MLflow servers); starts its own two gates."""

from __future__ import annotations

import os
import signal
import socket
import threading
from contextlib import ExitStack

import pytest

from conftest import gate_process, poll, reserve_port
from helpers import http, unique
from support.fleet import Recorder, fleet_gate_settings, gate_env

OUTBOX = "mlflow_gate.webhook_outbox"


@pytest.fixture
def pair(fleet, gate_keys, tmp_path):
    """`pair(hook_url)`: two outbox gates (replicas x and y) in front of the fleet's two MLflow servers."""
    with ExitStack() as stack:

        def start(hook: str, **fleet_keys):
            started = []
            for i, name in enumerate(("replica-x", "replica-y")):
                directory = tmp_path / name
                directory.mkdir()
                config = fleet_gate_settings(fleet.mlflow(i).url, gate_keys.jwks, directory, name, hook,
                                             {"fleet": fleet_keys} if fleet_keys else None)
                started.append(stack.enter_context(gate_process(directory, config, gate_env(fleet.pg, fleet.database),
                                                                name=name)))
            start.logs = [(g.dir.name, g.log) for g in started]
            return started

        start.logs = []
        yield start


def outbox_rows(fleet, hook_url_prefix: str) -> list[tuple]:
    """(delivery id, produced_by, attempts, claimed_by) of the outbox rows whose body names models of this test."""
    return fleet.pg.query(fleet.database, f"SELECT delivery_id, produced_by, attempts, claimed_by FROM {OUTBOX} "
                          "WHERE body LIKE %s", f"%{hook_url_prefix}%")


def kill(gate) -> None:
    os.killpg(gate.proc.pid, signal.SIGKILL)
    gate.proc.wait(10)


def test_deliveries_of_a_killed_replica_are_delivered_by_the_other(fleet, pair, gate_keys):
    reserved = reserve_port()  # the receiver's port: refused until the receiver listens on it
    hook = f"http://127.0.0.1:{reserved.getsockname()[1]}/hook"
    x, y = pair(hook)
    prefix = unique("outbox")
    names = [f"{prefix}-{i}" for i in range(3)]
    alice = gate_keys.token("alice")
    for name in names:
        assert http(x.url, "POST", "/api/2.0/mlflow/registered-models/create", alice, json={"name": name}).status_code == 200
    # The deliveries are in the shared outbox, made by x, and have been tried (the receiver is down).
    rows = poll(lambda: (r := outbox_rows(fleet, prefix)) and len(r) == 3 and all(a >= 1 for _, _, a, _ in r) and r,
                "x's deliveries to be stored and tried")
    assert {produced for _, produced, _, _ in rows} == {"replica-x"}
    kill(x)
    recorder = Recorder(reserved)
    try:
        poll(lambda: {d.event["model_name"] for d in recorder.deliveries} >= set(names), "y to deliver x's events", 60)
        poll(lambda: not outbox_rows(fleet, prefix), "the outbox to empty")
        assert recorder.bad_signatures == 0
        delivered_by_y = y.log.read_text()
        assert all(d.delivery_id in delivered_by_y for d in recorder.deliveries), "y delivered them"
        assert {d.delivery_id for d in recorder.deliveries} == {r[0] for r in rows}
    finally:
        recorder.close()


def test_a_claim_of_a_replica_that_dies_mid_attempt_is_taken_over_when_its_lease_ends(fleet, pair, gate_keys):
    # A receiver that accepts connections and never answers, until it is told to: attempts hang.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    hook = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    x, y = pair(hook, lease_secs=8)
    stalled: list[socket.socket] = []
    accepting = threading.Event()
    accepting.set()

    listener.settimeout(0.1)

    def hang():
        while accepting.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            stalled.append(conn)

    hanger = threading.Thread(target=hang, daemon=True)
    hanger.start()
    name = unique("lease")
    assert http(x.url, "POST", "/api/2.0/mlflow/registered-models/create", gate_keys.token("alice"),
                json={"name": name}).status_code == 200
    # x (which stored it and was woken) or y claims it; kill the claimer while its attempt hangs.
    claimed = poll(lambda: (r := outbox_rows(fleet, name)) and r[0][3] and r[0], "the delivery to be claimed")
    claimer = x if claimed[3].startswith("replica-x/") else y
    other = y if claimer is x else x
    kill(claimer)
    # The receiver answers from now on (a real HTTP server on the same port).
    accepting.clear()
    port = listener.getsockname()[1]
    hanger.join(5)
    listener.close()
    for conn in stalled:
        conn.close()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    recorder = Recorder(sock)
    try:
        poll(lambda: any(d.event["model_name"] == name for d in recorder.deliveries), "the survivor to deliver", 60)
        rows = outbox_rows(fleet, name)
        assert rows == [], rows
        assert claimed[0] in other.log.read_text(), "the survivor delivered it after the lease ended"
    finally:
        recorder.close()


def test_the_outbox_lives_in_the_gates_own_schema(fleet):
    tables = fleet.pg.query(fleet.database, "SELECT table_schema, table_name FROM information_schema.tables "
                            "WHERE table_name = 'webhook_outbox'")
    assert tables == [("mlflow_gate", "webhook_outbox")]
    mlflow_tables = fleet.pg.query(fleet.database, "SELECT count(*) FROM information_schema.tables "
                                   "WHERE table_schema = 'public' AND table_name LIKE '%outbox%'")
    assert mlflow_tables == [(0,)]
