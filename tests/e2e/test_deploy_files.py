"""The deployment files can't be run here (no container engine, no cluster, no kustomize binary), so they are
validated: every Kubernetes manifest against the Kubernetes schemas (kubernetes-validate, offline), every YAML file
with yamllint, the kustomizations' references, the gate configs they ship pass `mlflow-gate check`, MLflow is
reachable only on the pod's (or the compose sidecar's) loopback, the probes use the admin port, and the Dockerfile
builds the binary the way CI does (same toolchain, --locked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import GATE_BIN, REPO

K8S = REPO / "deploy/kubernetes"
COMPOSE = REPO / "deploy/compose"
K8S_VERSION = "1.37.0"


def check(config_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    text = config_text.replace("/etc/mlflow-gate/policies", str(REPO / "policies"))
    path = tmp_path / "gate.toml"
    path.write_text(text)
    return subprocess.run([str(GATE_BIN), "check", "--config", str(path)], capture_output=True, text=True, timeout=60)


def manifests(directory: Path) -> list[dict]:
    return [d for f in sorted(directory.glob("*.yaml")) if f.name != "kustomization.yaml"
            for d in yaml.safe_load_all(f.read_text()) if d]


def kustomization(directory: Path) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def test_every_yaml_file_passes_yamllint():
    files = [str(p) for p in sorted((REPO / "deploy").rglob("*.yaml"))]
    config = "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}"
    result = subprocess.run([sys.executable, "-m", "yamllint", "-s", "-d", config, *files],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(files) >= 9, files


@pytest.mark.parametrize("directory", [K8S / "base", K8S / "overlays/production"], ids=["base", "production"])
def test_kubernetes_manifests_match_the_schemas(directory):
    checked = 0
    for doc in manifests(directory):
        if doc["apiVersion"].startswith("cert-manager.io/"):
            # A custom resource: not in the Kubernetes schemas; its required fields are checked by shape.
            assert {"secretName", "dnsNames", "issuerRef"} <= set(doc["spec"]), doc
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked or directory.name == "production"


def test_kustomizations_reference_files_that_exist():
    base = kustomization(K8S / "base")
    for resource in base["resources"]:
        assert (K8S / "base" / resource).is_file(), resource
    for generator in base["configMapGenerator"]:
        for file in generator["files"]:
            assert (K8S / "base" / file).is_file(), file
    overlay = kustomization(K8S / "overlays/production")
    for resource in overlay["resources"]:
        assert (K8S / "overlays/production" / resource).exists(), resource
    deployment = next(d for d in manifests(K8S / "base") if d["kind"] == "Deployment")
    images = {c["image"].split(":")[0] for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert {i["name"] for i in overlay["images"]} == images, "the overlay pins every image the base uses"
    assert overlay["replicas"][0] == {"name": "mlflow", "count": 3}


def test_kubernetes_fleet_topology(tmp_path):
    docs = {d["kind"]: d for d in manifests(K8S / "base")}
    config = (K8S / "base/gate.toml").read_text()
    result = check(config, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "database from $MLFLOW_GATE_DATABASE_URL" in result.stdout
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] > 1
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    mlflow_args = containers["mlflow"]["args"]
    assert mlflow_args[mlflow_args.index("--host") + 1] == "127.0.0.1", "MLflow must not be reachable around the gate"
    assert "ports" not in containers["mlflow"]
    gate = containers["gate"]
    assert gate["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert gate["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {p["name"]: p["containerPort"] for p in gate["ports"]} == {"https": 8443, "admin": 9090}
    assert gate["resources"]["limits"]["memory"] == "512Mi"
    assert 'listen = "0.0.0.0:9090"' in config and 'url = "http://127.0.0.1:5000"' in config
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in gate["env"]}
    assert 'key_env = "MLFLOW_GATE_AUDIT_KEY"' in config and env["MLFLOW_GATE_AUDIT_KEY"]["name"] == "mlflow-gate-audit-key"
    assert 'database_url_env = "MLFLOW_GATE_DATABASE_URL"' in config
    assert env["MLFLOW_GATE_DATABASE_URL"] == {"name": "mlflow-database", "key": "url"}
    # Policies: a directory mount of a ConfigMap (hot reload); TLS: cert-manager's Secret.
    mounts = {m["name"]: m for m in gate["volumeMounts"]}
    assert "subPath" not in mounts["policies"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["policies"]["configMap"]["name"] == "mlflow-gate-policies"
    certificate = yaml.safe_load((K8S / "overlays/production/certificate.yaml").read_text())
    assert volumes["tls"]["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert "kubernetes.default.svc" in config, "the service-account issuer for in-cluster CI"
    assert [p["targetPort"] for p in docs["Service"]["spec"]["ports"]] == ["https"], "only the gate is exposed"
    assert docs["PodDisruptionBudget"]["spec"]["selector"] == deployment["spec"]["selector"]
    ingress_ports = {p["port"] for rule in docs["NetworkPolicy"]["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {8443, 9090}, "MLflow's port is never open"


def test_compose_topology(tmp_path):
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "mlflow", "gate"}
    command = services["mlflow"]["command"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--backend-store-uri") + 1].startswith("postgresql://")
    assert services["gate"]["network_mode"] == "service:mlflow", "the gate is MLflow's sidecar"
    assert "ports" not in services["gate"] and "ports" not in services["postgres"]
    assert services["mlflow"]["ports"] == ["8080:8080", "127.0.0.1:9090:9090"], "only the gate's ports"
    config = (COMPOSE / "gate.toml").read_text()
    keys = tmp_path / "keys"
    subprocess.run([str(GATE_BIN), "dev", "keygen", "--dir", str(keys)], check=True, capture_output=True, timeout=60)
    result = check(config.replace("/etc/mlflow-gate/keys", str(keys)), tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'listen = "0.0.0.0:8080"' in config and "database_url_env" in config


def test_example_config_and_dockerfile(tmp_path):
    result = check((REPO / "deploy/gate.example.toml").read_text(), tmp_path)
    assert result.returncode == 0, result.stderr
    dockerfile = (REPO / "deploy/Dockerfile").read_text()
    assert "COPY . ." in dockerfile and "COPY policies /etc/mlflow-gate/policies" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "target" in ignored and ".demo" in ignored and "deploy/compose/.env" in ignored
    assert "USER 65532:65532" in dockerfile
    # The same toolchain as CI (rust-toolchain.toml) and the committed lock file, as scripts/test.sh builds.
    channel = re.search(r'channel = "(\d+\.\d+)', (REPO / "rust-toolchain.toml").read_text()).group(1)
    assert f"FROM rust:{channel}-" in dockerfile, f"the image's Rust is not the toolchain's {channel}"
    build = re.search(r"RUN (cargo build[^\n]*)", dockerfile).group(1)
    assert "--locked" in build and "--locked" in (REPO / "scripts/test.sh").read_text()
    assert (REPO / "Cargo.lock").is_file()
