"""A throwaway PostgreSQL cluster for the fleet suites: initdb in a temporary directory, the server on 127.0.0.1 and
a free port (no Unix socket), password authentication, `fsync=off` (a test cluster that dies with the test), run as
an unprivileged user because PostgreSQL refuses to run as root.

The server binaries come from Debian's `postgresql` package (scripts/test.sh installs it and creates the user
`mlflow-gate-pg`): `MLFLOW_GATE_PG_BIN` names their directory, otherwise the newest /usr/lib/postgresql/*/bin.
`MLFLOW_GATE_PG_USER` names the user the cluster runs as when the tests run as root."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import free_port, start, tail, wait_for

PG_USER = os.environ.get("MLFLOW_GATE_PG_USER", "mlflow-gate-pg")
SUPERUSER = "mlflow_gate_admin"
PASSWORD = "pg-e2e-Secret-5b2f"  # a test cluster's password; the tests also check it never reaches a gate's log
STARTUP_TIMEOUT_SECS = 60


@dataclass(frozen=True)
class Postgres:
    """A running cluster: where it listens and how to reach one of its databases."""

    port: int
    log: Path

    def url(self, database: str = "postgres", scheme: str = "postgresql") -> str:
        return f"{scheme}://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, password=PASSWORD,
                                dbname=database, connect_timeout=5)
        conn.autocommit = True
        return conn

    def create_database(self, name: str) -> str:
        self.query("postgres", f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, database: str, sql: str, *args) -> list[tuple]:
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args or None)  # no args: a literal % stays a %
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()


def server_binaries() -> Path:
    configured = os.environ.get("MLFLOW_GATE_PG_BIN")
    if configured:
        return Path(configured)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not found:
        pytest.fail("PostgreSQL server binaries not found: install Debian's `postgresql` package (scripts/test.sh "
                    "does) or set MLFLOW_GATE_PG_BIN")
    return found[-1].parent


def as_cluster_user() -> list[str]:
    """The command prefix that runs a program as the cluster's owner: nothing unless we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        pytest.fail(f"user {PG_USER} does not exist: PostgreSQL refuses to run as root; scripts/test.sh creates it "
                    "(useradd --system), or set MLFLOW_GATE_PG_USER to an unprivileged user")
    return ["runuser", "-u", PG_USER, "--"]


@contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """initdb + postgres on a free loopback port; stopped (fast shutdown) and removed on exit. If the port picked
    is taken before the server binds it, the server is started again on another."""
    bindir, prefix = server_binaries(), as_cluster_user()
    # Not under pytest's tmp_path: that is private to root, and the cluster's owner must reach its directory.
    base = Path(tempfile.mkdtemp(prefix="mlflow-gate-pg-"))
    try:
        data, pwfile, log = base / "data", base / "pwfile", base / "postgres.log"
        pwfile.write_text(PASSWORD + "\n")
        if prefix:
            shutil.chown(base, PG_USER)
            shutil.chown(pwfile, PG_USER)
        init = subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--pwfile",
                               str(pwfile), "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                              capture_output=True, text=True, timeout=120)
        assert init.returncode == 0, f"initdb failed: {init.stderr}"
        for attempt in range(1, 4):
            port = free_port()
            proc = start([*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                          "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                          "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                          "-c", "max_connections=200"], log)
            try:
                cluster = Postgres(port, log)

                def ready() -> str | None:
                    try:
                        cluster.connect().close()
                        return "up"
                    except Exception:  # noqa: BLE001 (any failure to connect means "not yet")
                        if proc.poll() is not None and attempt < 3 and "could not bind" in tail(log).lower():
                            return "port taken"
                        return None

                if wait_for(ready, "postgres", proc, log, STARTUP_TIMEOUT_SECS) == "up":
                    yield cluster
                    return
            finally:
                stop_postgres(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def stop_postgres(proc: subprocess.Popen) -> None:
    """SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for every client to disconnect)."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(30)
            return
        except subprocess.TimeoutExpired:
            continue
