#!/usr/bin/env bash
# Runs every test of mlflow-gate on a fresh machine, installing what it needs: format and lint checks, the Rust
# unit and integration tests (including the route-table check against the installed MLflow), and the end-to-end
# suite that drives the real MLflow Python client through the gate in front of a real `mlflow server`.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
step() { printf '\n==> [%4ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

step "Python environment (mlflow==3.17.2; cached under ~/.cache/mlflow-gate)"
venv=$(scripts/venv.sh | tail -n1)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "MLflow's own route table (read from the installed package)"
mkdir -p target
"$venv/bin/python" tests/e2e/dump_mlflow_routes.py > target/mlflow-routes.txt
echo "$(wc -l < target/mlflow-routes.txt) routes"

step "cargo test (unit and integration tests)"
MLFLOW_ROUTES_FILE="$PWD/target/mlflow-routes.txt" cargo test --locked

step "cargo build (the binary the end-to-end suite and the policy tests run)"
cargo build --locked

step "policy unit tests (mlflow-gate policy test policies)"
target/debug/mlflow-gate policy test policies

step "TLS scanner for the end-to-end TLS test (sslscan, from Debian)"
command -v sslscan || (apt-get update -qq && apt-get install -y -qq sslscan)

step "end-to-end: the real MLflow client through the gate in front of a real MLflow server"
"$venv/bin/python" -m pytest tests/e2e -v -p no:cacheprovider --ignore-glob='tests/e2e/test_fleet_*'

step "PostgreSQL server for the fleet suite (postgresql, from Debian) and the unprivileged user it runs as"
ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null || (apt-get update -qq && apt-get install -y -qq postgresql)
if [ "$(id -u)" = 0 ] && ! id -u mlflow-gate-pg >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin mlflow-gate-pg  # initdb refuses to run as root
fi

step "end-to-end on a fleet: two gates, two MLflow servers on one PostgreSQL (one process, servers shared)"
"$venv/bin/python" -m pytest tests/e2e/test_fleet_*.py -v -p no:cacheprovider

step "all tests passed"
