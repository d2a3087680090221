"""Gates started per test with their own configs (TLS, client certificates, admin listener, audit log, shutdown
grace, policy settings), through conftest's one launcher, and the MLflow client configured by environment."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from conftest import Gate, gate_process, gate_settings
from support.audit import AUDIT_KEY, AUDIT_KEY_ENV
from support.pki import Issued

PRODUCTION_DENIAL_MENTIONS = "only the CI service account may transition to Production"
LOADED_POLICY_TIMEOUT_MS = 2000


@pytest.fixture
def gates(mlflow_server, gate_keys, tmp_path) -> Iterator[Callable[..., Gate]]:
    """Starts gates with their own configs (in front of the session MLflow unless `upstream` says otherwise); stops
    them after the test. The logs of the gates started are attached to a failed test's report."""
    with ExitStack() as started:

        def launch(name: str = "gate", *, upstream: str | None = None, tls: dict | None = None,
                   client_certs: dict[str, list[str]] | None = None, admin: bool = False, audit: dict | None = None,
                   grace_secs: int | None = None, policy_timeout_ms: int | None = None,
                   health_cert: Issued | None = None, ca: Path | None = None, wait_healthy: bool = True,
                   policy_dir: Path | None = None, reload_interval_ms: int | None = None) -> Gate:
            directory = tmp_path / name
            directory.mkdir()
            sections: dict = {
                "server": {"shutdown_grace_secs": grace_secs},
                "policy": {"eval_timeout_ms": policy_timeout_ms, "reload_interval_ms": reload_interval_ms,
                           "dir": str(policy_dir) if policy_dir else None},
            }
            if tls:
                sections["server.tls"] = tls
            if client_certs:
                sections["auth.client_certs"] = [{"identity": i, "groups": g} for i, g in client_certs.items()]
            if admin:
                sections["admin"] = {"listen": "127.0.0.1:0"}
            if audit:
                audit = {"key_env": AUDIT_KEY_ENV, **audit}
                if audit.get("sink") == "file":
                    audit.setdefault("file", str(directory / "audit.log"))
                sections["audit"] = audit
            config = gate_settings(upstream or mlflow_server.url, gate_keys.jwks, sections)
            launch.logs.append((name, directory / "gate.log"))
            return started.enter_context(gate_process(
                directory, config,
                {"MLFLOW_GATE_LOG": "info", AUDIT_KEY_ENV: AUDIT_KEY}, name=name, ca=ca,
                health_cert=health_cert.pair if health_cert else None, wait_healthy=wait_healthy))

        launch.logs = []  # read by the report hook in conftest.py
        yield launch


@pytest.fixture
def mlflow_env(monkeypatch):
    """Points the MLflow Python client at a URL through the environment (token, CA, client certificate), the
    way a user configures it; restores the module-level URIs afterwards."""
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_AUTH",
                "MLFLOW_TRACKING_AWS_SIGV4", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
                "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_CLIENT_CERT_PATH",
                "MLFLOW_TRACKING_TOKEN", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    def configure(url: str, token: str | None = None, server_ca: Path | None = None,
                  client_cert: Path | None = None) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", url)
        for var, value in (("MLFLOW_TRACKING_TOKEN", token), ("MLFLOW_TRACKING_SERVER_CERT_PATH", server_ca),
                           ("MLFLOW_TRACKING_CLIENT_CERT_PATH", client_cert)):
            if value is None:
                monkeypatch.delenv(var, raising=False)
            else:
                monkeypatch.setenv(var, str(value))
        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)
        return MlflowClient(tracking_uri=url, registry_uri=url)

    try:
        yield configure
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
