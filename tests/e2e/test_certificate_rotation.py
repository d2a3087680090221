"""Certificate rotation under load: new handshakes present the new pair, a bad pair is refused and the last good
one kept, and a keep-alive connection made before any rotation keeps working."""

from __future__ import annotations

import http.client
import shutil
import ssl
import threading
import time
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import Gate, poll
from support.client import request, tls_context
from support.ops import LOADED_POLICY_TIMEOUT_MS, gates  # noqa: F401 (fixtures)
from support.pki import pem_key, pki, replace_atomically  # noqa: F401 (fixture)


@dataclass
class Load:
    """Client threads that keep the gate busy: new TLS connections (recording the serial each handshake presents)
    and one long-lived keep-alive connection that must survive every rotation."""

    gate: Gate
    ctx: ssl.SSLContext
    token: str
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    handshakes: list[tuple[float, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    keepalive_requests: int = 0
    keepalive_serial: int | None = None
    keepalive_sockets: set[int] = field(default_factory=set)

    def fresh_connections(self, worker: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            authed = i % 4 == 0
            path = "/api/2.0/mlflow/experiments/search?max_results=1" if authed else "/health"
            # Stamped before connecting: a handshake begun before the rotation may finish after it.
            started = time.monotonic()
            try:
                reply = request(self.gate, "GET", path, self.token if authed else None, ctx=self.ctx, timeout=20)
                ok = reply.status == 200 and (authed or reply.body == b"OK")
                outcome = None if ok else f"{path}: HTTP {reply.status} {reply.body[:200]!r}"
            except Exception as err:  # noqa: BLE001 (every failure counts)
                reply, outcome = None, f"{path}: {type(err).__name__}: {err}"
            with self.lock:
                self.requests += 1
                if reply is not None:
                    self.handshakes.append((started, reply.serial))
                if outcome:
                    self.failures.append(f"worker {worker}: {outcome}")

    def keepalive(self) -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", self.gate.port, context=self.ctx, timeout=20)
        try:
            conn.connect()
            self.keepalive_serial = x509.load_der_x509_certificate(
                conn.sock.getpeercert(binary_form=True)).serial_number
            while not self.stop.is_set():
                self.keepalive_sockets.add(id(conn.sock))
                try:
                    conn.request("GET", "/health")
                    response = conn.getresponse()
                    body = response.read()
                    if response.status != 200 or body != b"OK":
                        self.failures.append(f"keep-alive: HTTP {response.status} {body[:200]!r}")
                except Exception as err:  # noqa: BLE001
                    self.failures.append(f"keep-alive: {type(err).__name__}: {err}")
                    return
                with self.lock:
                    self.keepalive_requests += 1
                self.keepalive_sockets.add(id(conn.sock))
        finally:
            conn.close()

    def serials_since(self, when: float) -> list[int]:
        with self.lock:
            return [s for t, s in self.handshakes if t >= when]


def test_certificate_rotation_under_load(gates, pki, gate_keys, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    cert_file, key_file = live / "tls.crt", live / "tls.key"
    first = pki.ca.issue("rotation-1", cn="mlflow-gate", server=True)
    shutil.copy(first.cert, cert_file)
    shutil.copy(first.key, key_file)
    tls = {"cert_file": str(cert_file), "key_file": str(key_file), "reload_interval_secs": 1}
    # The policy's wall-clock budget is not under test: under this load a debug build on a small machine can
    # exceed the default 50 ms (and the gate then denies, failing closed).
    gate = gates("rotating", tls=tls, ca=pki.ca.pem, policy_timeout_ms=LOADED_POLICY_TIMEOUT_MS)

    load = Load(gate, tls_context(pki.ca.pem), gate_keys.token("alice"))
    threads = [threading.Thread(target=load.fresh_connections, args=(n,), daemon=True) for n in range(3)]
    threads.append(threading.Thread(target=load.keepalive, daemon=True))
    for thread in threads:
        thread.start()
    try:
        poll(lambda: load.requests >= 20 and load.keepalive_requests >= 5, "load running", log=gate.log)
        assert set(load.serials_since(0)) == {first.serial}
        assert load.keepalive_serial == first.serial

        # Rotate to a new pair (new key, new serial, same CA), each file replaced atomically.
        second = pki.ca.issue("rotation-2", cn="mlflow-gate", server=True)
        replace_atomically(key_file, second.key.read_bytes())
        replace_atomically(cert_file, second.cert.read_bytes())
        poll(lambda: second.serial in load.serials_since(0), "new handshakes present the rotated certificate",
             log=gate.log)
        switched = time.monotonic()
        poll(lambda: len(load.serials_since(switched)) >= 10, "handshakes after the rotation", log=gate.log)
        assert set(load.serials_since(switched)) == {second.serial}

        # A bad new pair is refused and the last good one kept: first a key that does not fit the certificate,
        # then a key file that is not a key at all.
        refusal = "new TLS certificate refused"
        for bad_key in (pem_key(ec.generate_private_key(ec.SECP256R1())), b"-----BEGIN PRIVATE KEY-----\nbroken\n"):
            seen = gate.log.read_text().count(refusal)
            replace_atomically(key_file, bad_key)
            poll(lambda: gate.log.read_text().count(refusal) > seen, "the gate refuses the bad key", log=gate.log)
            after = time.monotonic()
            poll(lambda: len(load.serials_since(after)) >= 10, "handshakes after the refusal", log=gate.log)
            assert set(load.serials_since(after)) == {second.serial}

        # The watcher is not wedged by a refusal: the next good pair is picked up.
        third = pki.ca.issue("rotation-3", cn="mlflow-gate", server=True)
        replace_atomically(cert_file, third.cert.read_bytes())
        replace_atomically(key_file, third.key.read_bytes())
        poll(lambda: third.serial in load.serials_since(0), "recovery to a good pair", log=gate.log)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(30)

    assert load.failures == [], f"{len(load.failures)} of {load.requests} requests failed: {load.failures[:10]}"
    # The keep-alive connection made before any rotation kept working on its original socket and certificate.
    assert load.keepalive_requests >= 20 and len(load.keepalive_sockets) == 1, \
        (load.keepalive_requests, load.keepalive_sockets)
    assert load.requests >= 60, load.requests
