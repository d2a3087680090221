"""Fixtures for the end-to-end suite: a real MLflow server, the gate in front of it, signing keys and tokens,
and the MLflow client pointed at the gate.

Run with the venv from scripts/venv.sh: `"$(scripts/venv.sh | tail -n1)/bin/python" -m pytest tests/e2e`.
The gate binary is `target/debug/mlflow-gate` unless MLFLOW_GATE_BIN says otherwise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow import MlflowClient

REPO = Path(__file__).resolve().parents[2]
GATE_BIN = Path(os.environ.get("MLFLOW_GATE_BIN", REPO / "target" / "debug" / "mlflow-gate"))
# The suite runs under the venv's python, so the venv's `mlflow` sits next to it. MLFLOW_SERVER_BIN runs the server
# of another venv instead (the compatibility matrix: an older client against a newer server).
MLFLOW_BIN = Path(os.environ.get("MLFLOW_SERVER_BIN") or Path(sys.executable).with_name("mlflow"))
ISSUER = "https://idp.test"
AUDIENCE = "mlflow"
STARTUP_TIMEOUT_SECS = 120  # MLflow needs ~10 s on a warm machine to create its tables and import everything
POLL_INTERVAL_SECS = 0.1


@dataclass(frozen=True)
class Server:
    """A process we started: where it listens and where its output goes."""

    url: str
    log: Path


@dataclass(frozen=True)
class GateKeys:
    """A directory made by `mlflow-gate dev keygen`, and a way to mint tokens signed with it."""

    dir: Path

    @property
    def jwks(self) -> Path:
        return self.dir / "jwks.json"

    def token(self, sub: str, groups: tuple[str, ...] | list[str] = (), ttl: int = 3600, **claims) -> str:
        """A JWT for `sub` from issuer https://idp.test, audience mlflow; extra claims are JSON-encoded."""
        cmd = ["dev", "token", "--key-dir", str(self.dir), "--issuer", ISSUER, "--audience", AUDIENCE]
        # `--ttl=N` rather than `--ttl N` so that a negative N is not mistaken for a flag.
        cmd += ["--sub", sub, f"--ttl={ttl}"]
        if groups:
            cmd += ["--groups", ",".join(groups)]
        for key, value in claims.items():
            cmd += ["--claim", f"{key}={json.dumps(value)}"]
        return run_gate(*cmd).strip()


def run_gate(*args: str) -> str:
    """Runs the gate binary to completion; returns stdout, or raises RuntimeError carrying its stderr."""
    if not GATE_BIN.is_file():
        pytest.fail(f"gate binary {GATE_BIN} not found: run `cargo build` or set MLFLOW_GATE_BIN")
    result = subprocess.run([str(GATE_BIN), *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"mlflow-gate {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def keygen(directory: Path) -> GateKeys:
    run_gate("dev", "keygen", "--dir", str(directory))
    return GateKeys(directory)


# ---------------------------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    """A port free now, for a program that cannot listen on port 0 and report its address (MLflow): it may be
    taken by someone else before the program binds it, so its callers retry on a bind failure."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reserve_port() -> socket.socket:
    """A socket bound to a free port and not listening: connections to it are refused, and nothing else can take the
    port until `http_server_on` listens on it (a peer that is down now and comes up later on the same address)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def http_server_on(sock: socket.socket, handler: type) -> ThreadingHTTPServer:
    """An HTTP server (in a thread) listening on `sock` from `reserve_port`, which it takes over."""
    server = ThreadingHTTPServer(sock.getsockname(), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.server_activate()  # listen(): from now on connections are accepted
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start(cmd: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """Starts `cmd` in a new session (its own process group, so `stop` reaches the children it spawns)."""
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM to the process group we created, then SIGKILL if it has not exited within `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"(no log: {err})"


def wait_for(check: Callable[[], object], what: str, proc: subprocess.Popen, log: Path, timeout: float):
    """Polls `check` until it returns something truthy (and returns that), failing with the log's tail if the
    process exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}; log tail ({log}):\n{tail(log)}")
        time.sleep(POLL_INTERVAL_SECS)
    pytest.fail(f"{what}: not ready after {timeout}s; log tail ({log}):\n{tail(log)}")


def answers_200(url: str, **kwargs) -> bool:
    try:
        with requests.Session() as session:
            session.trust_env = False  # no HTTP(S)_PROXY for loopback
            return session.get(url, timeout=5, **kwargs).status_code == 200
    except requests.RequestException:
        return False


def read_addr(path: Path) -> str | None:
    """The `host:port` the gate wrote to its addr file, once the file is complete."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text if re.fullmatch(r"\S+:\d+", text) else None


# ---------------------------------------------------------------------------------------------------------------
# Servers


@contextmanager
def mlflow_process(tmp: Path, *options: str, backend_store_uri: str | None = None,
                   artifacts: Path | None = None, env: dict[str, str] | None = None) -> Iterator[Server]:
    """A real `mlflow server` (sqlite, served artifacts, one worker, no job runner) on a free port, with further
    server `options` (e.g. `--enable-workspaces`); stopped on exit. MLflow cannot report a port of its own choosing:
    if the port picked is taken before MLflow binds it, MLflow is started again on another. `backend_store_uri`
    (e.g. PostgreSQL) and `artifacts` (a directory several servers share) replace the sqlite file and the
    server's own artifact directory. `env` adds to the environment (e.g. the basic-auth app's config)."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    for attempt in range(1, 4):
        port = free_port()
        cmd = [str(MLFLOW_BIN), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        cmd += ["--backend-store-uri", backend_store_uri or f"sqlite:///{tmp}/mlflow.db"]
        cmd += ["--serve-artifacts", "--artifacts-destination", str(artifacts or tmp / "artifacts"), *options]
        server = Server(f"http://127.0.0.1:{port}", tmp / "mlflow.log")
        proc = start(cmd, server.log, env=env, cwd=tmp)
        try:
            def up_or_port_taken() -> str | None:
                if answers_200(f"{server.url}/health"):
                    return "up"
                taken = ("address already in use", "connection in use")  # uvicorn's words, gunicorn's
                if proc.poll() is not None and attempt < 3 and any(t in tail(server.log).lower() for t in taken):
                    return "port taken"
                return None

            if wait_for(up_or_port_taken, "mlflow server", proc, server.log, STARTUP_TIMEOUT_SECS) == "up":
                yield server
                return
        finally:
            stop(proc)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[Server]:
    """A real `mlflow server` (sqlite, served artifacts, one worker, no job runner) on a free port."""
    with mlflow_process(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture(scope="session")
def gate_keys(tmp_path_factory) -> GateKeys:
    """The signing key the gate trusts (issuer https://idp.test, audience mlflow)."""
    return keygen(tmp_path_factory.mktemp("keys") / "keys")


@pytest.fixture(scope="session")
def two_teams(gate_keys) -> dict[str, str]:
    """The resource-permission suites' cast: team A (ana, alex), team B (ben), a senior reviewer (rita), an admin."""
    return {
        "ana": gate_keys.token("ana", groups=["team-a"]),
        "alex": gate_keys.token("alex", groups=["team-a"]),
        "ben": gate_keys.token("ben", groups=["team-b"]),
        "rita": gate_keys.token("rita", groups=["ml-senior"]),
        "root": gate_keys.token("root", groups=["mlflow-admin"]),
    }


@pytest.fixture(scope="session")
def foreign_keys(tmp_path_factory) -> GateKeys:
    """A second key pair the gate does not trust: tokens signed with it must be refused."""
    return keygen(tmp_path_factory.mktemp("foreign-keys") / "keys")


def toml_value(value) -> str:
    # JSON's strings, numbers, booleans and arrays of them are TOML values too (same escapes).
    return json.dumps(value)


def to_toml(sections: dict) -> str:
    """A gate config from structured options: {"server": {...}, "server.tls": {...}, "auth.issuers": [{...}]}. A
    dict is a `[table]`, a list of dicts an `[[array of tables]]`; keys whose value is None are left out."""
    out = []
    for header, body in sections.items():
        tables = [(f"[{header}]", body)] if isinstance(body, dict) else [(f"[[{header}]]", v) for v in body]
        for heading, values in tables:
            out.append(heading)
            out += [f"{key} = {toml_value(value)}" for key, value in values.items() if value is not None]
            out.append("")
    return "\n".join(out)


def gate_settings(upstream: str, jwks: Path, overrides: dict | None = None) -> dict:
    """The e2e gate's config as sections (see `to_toml`), with `overrides` merged in: a table's keys are set (None
    leaves a default alone), an array of tables is extended, a new section is added."""
    sections: dict = {
        "server": {"listen": "127.0.0.1:0", "max_body_bytes": 10485760},
        "upstream": {"url": upstream, "connect_timeout_secs": 5, "timeout_secs": 60},
        "auth.issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["RS256"],
                          "jwks_file": str(jwks), "groups_claim": "groups"}],
        "policy": {"dir": str(REPO / "policies")},
    }
    for header, body in (overrides or {}).items():
        if isinstance(body, dict):
            merged = sections.setdefault(header, {})
            merged.update({k: v for k, v in body.items() if v is not None})
        else:
            sections.setdefault(header, []).extend(body)
    return sections


def gate_config(upstream: str, jwks: Path, overrides: dict | None = None) -> str:
    """The e2e gate's config text (see `gate_settings` for `overrides`)."""
    return to_toml(gate_settings(upstream, jwks, overrides))


@dataclass(frozen=True)
class Gate(Server):
    """A gate process we started (see `gate_process`)."""

    proc: subprocess.Popen | None = None
    dir: Path = Path()
    admin: str | None = None  # the admin listener's base URL, when the config has [admin]
    audit: Path | None = None  # the audit file, when the config's [audit] sink is a file

    @property
    def addr(self) -> str:
        return self.url.split("://", 1)[1]

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])

    @property
    def admin_url(self) -> str:
        assert self.admin, "this gate has no [admin] listener"
        return self.admin


def poll(check: Callable[[], object], what: str, timeout: float = 30, log: Path | None = None):
    """Polls `check` until it returns something truthy (and returns that); fails at the deadline, with the tail of
    `log` if given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(POLL_INTERVAL_SECS)
    pytest.fail(f"{what}: not true after {timeout}s" + (f"; log tail ({log}):\n{tail(log)}" if log else ""))


@contextmanager
def gate_process(tmp: Path, config: str | dict, env: dict[str, str] | None = None, *, name: str = "gate",
                 ca: Path | None = None, health_cert: tuple[str, str] | None = None,
                 wait_healthy: bool = True) -> Iterator[Gate]:
    """`mlflow-gate serve` with this configuration (text, or sections for `to_toml`; written to `tmp`), on the port
    its addr file reports (listen on port 0: no port is picked and released), once it answers /health (over TLS
    verified with `ca`, presenting `health_cert` if given; skipped with `wait_healthy=False`) and its admin listener
    (if any) answers /healthz; stopped on exit. `env` adds to the environment (e.g. a webhook secret)."""
    sections = config if isinstance(config, dict) else {}
    text = to_toml(config) if isinstance(config, dict) else config
    config_file, addr_file, log = tmp / "gate.toml", tmp / "gate.addr", tmp / "gate.log"
    admin_file = tmp / "gate.admin-addr"
    config_file.write_text(text)
    addr_file.unlink(missing_ok=True)
    admin_file.unlink(missing_ok=True)
    if not GATE_BIN.is_file():
        pytest.fail(f"gate binary {GATE_BIN} not found: run `cargo build` or set MLFLOW_GATE_BIN")
    env = {"RUST_LOG": "info", **os.environ, **(env or {})}
    proc = start([str(GATE_BIN), "serve", "--config", str(config_file), "--addr-file", str(addr_file),
                  "--admin-addr-file", str(admin_file)], log, env=env)
    try:
        addr = wait_for(lambda: read_addr(addr_file), f"{name}: addr file", proc, log, 30)
        tls = "server.tls" in sections or "[server.tls]" in text
        url = f"{'https' if tls else 'http'}://{addr}"
        admin = None
        if "admin" in sections or "\n[admin]" in text:
            admin = "http://" + wait_for(lambda: read_addr(admin_file), f"{name}: admin address", proc, log, 30)
        audit = sections.get("audit", {})
        gate = Gate(url, log, proc, tmp, admin, Path(audit["file"]) if audit.get("sink") == "file" else None)
        if wait_healthy:
            verify = str(ca) if ca else True
            wait_for(lambda: answers_200(f"{url}/health", verify=verify, cert=health_cert), f"{name}: /health", proc,
                     log, 30)
        if admin:
            wait_for(lambda: answers_200(f"{admin}/healthz"), f"{name}: admin /healthz", proc, log, 30)
        yield gate
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def gate(mlflow_server: Server, gate_keys: GateKeys, tmp_path_factory) -> Iterator[Server]:
    """The gate on port 0 in front of `mlflow_server`, with the repository's policies."""
    with gate_process(tmp_path_factory.mktemp("gate"), gate_config(mlflow_server.url, gate_keys.jwks)) as server:
        yield server


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    """The test OpenID Connect provider (tests/browser/idp), one per browser test module."""
    from support.browser import idp_process  # support.browser imports this module

    with idp_process(tmp_path_factory.mktemp("idp")) as running:
        yield running


@pytest.fixture(scope="module")
def bgate(mlflow_server, gate_keys, idp, tmp_path_factory):
    """A gate with `[browser]` sign-in at the test IdP, in front of the module's MLflow server."""
    from support.browser import browser_gate

    with browser_gate(tmp_path_factory.mktemp("browser-gate"), mlflow_server.url, gate_keys.jwks, idp) as g:
        yield g


@pytest.fixture(scope="session")
def fleet(gate_keys, tmp_path_factory):
    """PostgreSQL, two MLflow servers on one database and a gate in front of each (see support/fleet.py), shared by
    the test_fleet_* modules, which run in a process of their own."""
    from support.fleet import running_fleet  # support.fleet imports this module

    with running_fleet(tmp_path_factory.mktemp("fleet"), gate_keys) as started:
        yield started


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failed test, attach the tails of the gate's and MLflow's logs to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name in ("gate", "mlflow_server"):
        server = item.funcargs.get(name)
        if isinstance(server, Server):
            report.sections.append((f"{name} log tail ({server.log})", tail(server.log)))


# ---------------------------------------------------------------------------------------------------------------
# The MLflow client


@pytest.fixture
def client_as(gate: Server, monkeypatch) -> Iterator[Callable[[str | None], MlflowClient]]:
    """Points the MLflow client (fluent API included) at the gate for this test. Call the returned function with
    a token (or None for no token) to act as that caller from then on; it returns a fresh MlflowClient."""
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_AUTH",
                "MLFLOW_TRACKING_AWS_SIGV4", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)  # Basic credentials would win over the bearer token
    monkeypatch.setenv("MLFLOW_TRACKING_URI", gate.url)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", gate.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a failing request fails now, not after backoff
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # The module-level URIs win over the environment; set them, and clear them afterwards.
    mlflow.set_tracking_uri(gate.url)
    mlflow.set_registry_uri(gate.url)

    def as_caller(token: str | None) -> MlflowClient:
        if token is None:
            monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
        else:
            monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
        return MlflowClient(tracking_uri=gate.url, registry_uri=gate.url)

    try:
        yield as_caller
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


@pytest.hookimpl(hookwrapper=True, specname="pytest_runtest_makereport")
def pytest_runtest_makereport_started_gates(item, call):
    """On a failed test, also attach the log tails of gates a test started itself: a fixture value with a `logs`
    attribute listing (name, log path) pairs (see `gates` in support/ops.py). (pytest only reads hook
    functions named pytest_*; `specname` says which hook this one is.)"""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for value in item.funcargs.values():
        for name, log in getattr(value, "logs", None) or []:
            if isinstance(log, Path):
                report.sections.append((f"{name} log tail ({log})", tail(log)))
