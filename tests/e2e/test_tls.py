"""TLS termination, end to end: the real MLflow client over TLS (the certificate really verified, HTTP/2 by
ALPN through to MLflow), and a TLS scanner's view of the protocols and ciphers offered."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess

import pytest
import requests
from mlflow.exceptions import MlflowException

from helpers import unique, upstream, upstream_has_experiment
from support.client import tls_context
from support.h2 import h2_get
from support.ops import gates, mlflow_env  # noqa: F401 (fixtures)
from support.pki import pki  # noqa: F401 (fixture)


def test_mlflow_client_over_tls(gates, pki, gate_keys, mlflow_server, mlflow_env):
    tls = {"cert_file": str(pki.server.cert), "key_file": str(pki.server.key)}
    gate = gates("tls", tls=tls, ca=pki.ca.pem)
    assert gate.url.startswith("https://127.0.0.1:")

    client = mlflow_env(gate.url, gate_keys.token("alice"), server_ca=pki.ca.pem)
    name = unique("tls-exp")
    experiment_id = client.create_experiment(name)
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "val_auc", 0.93, step=2)
    client.set_terminated(run.info.run_id)

    data = upstream(mlflow_server, "/api/2.0/mlflow/runs/get", run_id=run.info.run_id)["run"]
    assert data["info"]["experiment_id"] == experiment_id
    assert data["info"]["status"] == "FINISHED"
    assert data["info"]["user_id"] == "alice"  # stamped by the gate from the token
    assert [(m["key"], m["value"], m["step"]) for m in data["data"]["metrics"]] == [("val_auc", 0.93, 2)]
    assert upstream(mlflow_server, "/api/2.0/mlflow/experiments/get",
                    experiment_id=experiment_id)["experiment"]["name"] == name

    # The certificate is really verified: without the CA the client refuses the gate; plain HTTP gets nothing.
    unverified = mlflow_env(gate.url, gate_keys.token("alice"))
    other = unique("tls-exp-unverified")
    with pytest.raises(MlflowException) as raised:
        unverified.create_experiment(other)
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value) or "certificate verify failed" in str(raised.value)
    assert not upstream_has_experiment(mlflow_server, other)
    with pytest.raises((requests.RequestException, OSError)):
        with requests.Session() as session:
            session.trust_env = False
            session.get(f"http://{gate.addr}/health", timeout=10)

    # ALPN: offered h2 and http/1.1, the gate picks h2, and the connection then speaks HTTP/2 through to MLflow.
    ctx = tls_context(pki.ca.pem, alpn=["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", gate.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert sock.selected_alpn_protocol() == "h2"
        assert sock.version() in ("TLSv1.3", "TLSv1.2")
        status, body = h2_get(sock, gate.addr, "/health")
    assert (status, body) == (200, b"OK")
    ctx = tls_context(pki.ca.pem, alpn=["http/1.1"])
    with socket.create_connection(("127.0.0.1", gate.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
def test_tls_scanner_reports_only_modern_protocols(gates, pki):
    scanner = shutil.which("sslscan")
    if scanner is None:
        pytest.skip("sslscan is not installed (scripts/test.sh installs it: apt-get install sslscan)")
    tls = {"cert_file": str(pki.server.cert), "key_file": str(pki.server.key)}
    gate = gates("tls-scan", tls=tls, ca=pki.ca.pem)

    result = subprocess.run([scanner, "--no-colour", f"127.0.0.1:{gate.port}"], capture_output=True, text=True,
                            timeout=180)
    out = result.stdout
    assert result.returncode == 0, f"sslscan exited {result.returncode}:\n{out}\n{result.stderr}"

    protocols = dict(re.findall(r"^(SSLv2|SSLv3|TLSv1\.[0-3])\s+(enabled|disabled)\s*$",
                                section(out, "SSL/TLS Protocols"), re.M))
    assert protocols == {"SSLv2": "disabled", "SSLv3": "disabled", "TLSv1.0": "disabled", "TLSv1.1": "disabled",
                         "TLSv1.2": "enabled", "TLSv1.3": "enabled"}, out
    ciphers = re.findall(r"^(?:Preferred|Accepted)\s+(\S+)\s+\d+\s+bits\s+(\S+)",
                         section(out, "Supported Server Cipher"), re.M)
    assert {version for version, _ in ciphers} == {"TLSv1.2", "TLSv1.3"}, out
    weak = [c for _, c in ciphers if re.search(r"RC4|DES|NULL|EXP|MD5|anon", c, re.I)]  # DES also matches 3DES
    assert not weak, f"weak cipher suites offered: {weak}\n{out}"
    # Beyond the list: TLS 1.2 suites all have forward secrecy (ECDHE) and are AEAD (no CBC).
    assert all(c.startswith("ECDHE-") and "CBC" not in c for v, c in ciphers if v == "TLSv1.2"), out
    assert not re.search(r"^Insecure session renegotiation supported", out, re.M), out
    assert not [line for line in section(out, "Heartbleed").splitlines() if "vulnerable" in line
                and "not vulnerable" not in line], out


def section(report: str, heading: str) -> str:
    """The lines of an sslscan report section, from its heading to the next blank line."""
    match = re.search(rf"^\s*{re.escape(heading)}[^\n]*\n(.*?)(?:\n\s*\n|\Z)", report, re.M | re.S)
    assert match, f"no {heading!r} section in:\n{report}"
    return match.group(1)
