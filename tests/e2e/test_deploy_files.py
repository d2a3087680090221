"""The deployment files can't be run here (no container engine), so they are validated: the gate configs they ship
pass `mlflow-gate check`, MLflow is reachable only on the pod's loopback, and the probes use the admin port."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from conftest import GATE_BIN, REPO


def check(config_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    text = config_text.replace("/etc/mlflow-gate/policies", str(REPO / "policies"))
    path = tmp_path / "gate.toml"
    path.write_text(text)
    return subprocess.run([str(GATE_BIN), "check", "--config", str(path)], capture_output=True, text=True, timeout=60)


def test_kubernetes_sidecar_manifest(tmp_path):
    docs = list(yaml.safe_load_all((REPO / "deploy/kubernetes/mlflow-with-gate.yaml").read_text()))
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["gate.toml"]
    result = check(config, tmp_path)
    assert result.returncode == 0, result.stderr
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    mlflow_args = containers["mlflow"]["args"]
    assert mlflow_args[mlflow_args.index("--host") + 1] == "127.0.0.1", "MLflow must not be reachable around the gate"
    assert "ports" not in containers["mlflow"]
    gate = containers["gate"]
    assert gate["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert gate["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {p["name"]: p["containerPort"] for p in gate["ports"]} == {"https": 8443, "admin": 9090}
    assert 'listen = "0.0.0.0:9090"' in config and 'url = "http://127.0.0.1:5000"' in config
    # The audit chain's key comes from a Secret, into the variable the config names.
    assert 'key_env = "MLFLOW_GATE_AUDIT_KEY"' in config
    key_env = {e["name"]: e for e in gate.get("env", [])}["MLFLOW_GATE_AUDIT_KEY"]
    assert key_env["valueFrom"]["secretKeyRef"] == {"name": "mlflow-gate-audit-key", "key": "key"}
    service = next(d for d in docs if d["kind"] == "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["https"], "only the gate is exposed"


def test_example_config_and_dockerfile(tmp_path):
    result = check((REPO / "deploy/gate.example.toml").read_text(), tmp_path)
    assert result.returncode == 0, result.stderr
    dockerfile = (REPO / "deploy/Dockerfile").read_text()
    assert "COPY . ." in dockerfile and "COPY policies /etc/mlflow-gate/policies" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "target" in ignored and ".demo" in ignored
    assert "USER 65532:65532" in dockerfile and "--locked" in dockerfile
