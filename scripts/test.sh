#!/usr/bin/env bash
# Runs every test of mlflow-gate on a fresh machine, installing what it needs: format and lint checks, the Rust
# unit and integration tests (including the route-table check against the installed MLflow), and the end-to-end
# suite that drives the real MLflow Python client through the gate in front of a real `mlflow server`.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
step() { printf '\n==> [%4ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

# The older MLflow versions of the compatibility matrix (README "MLflow versions") get their own cached venvs, built
# in the background from here on (pip downloads are slow) and waited for where they are first needed.
compat_versions=(2.10.2 2.22.5)
declare -A compat_pid compat_venv
mkdir -p target
step "Python environments of the compatibility matrix (MLflow ${compat_versions[*]}), in the background"
for v in "${compat_versions[@]}"; do
  scripts/venv.sh "$v" > "target/venv-$v.path" 2> "target/venv-$v.log" &
  compat_pid[$v]=$!
  echo "MLflow $v: building or reusing its venv (log: target/venv-$v.log)"
done
compat_venv_of() {
  local v=$1
  if [ -z "${compat_venv[$v]:-}" ]; then
    echo "waiting for the MLflow $v venv (log: target/venv-$v.log)"
    if ! wait "${compat_pid[$v]}"; then
      tail -n 40 "target/venv-$v.log"
      echo "the MLflow $v venv could not be built" >&2
      exit 1
    fi
    compat_venv[$v]=$(tail -n1 "target/venv-$v.path")
    echo "MLflow $v: ${compat_venv[$v]}"
  fi
}

step "Python environment (mlflow==3.17.2; cached under ~/.cache/mlflow-gate)"
venv=$(scripts/venv.sh | tail -n1)

step "Flask-WTF for MLflow's basic-auth app (the grants migration test; cached beside the venv)"
scripts/basic-auth-deps.sh "$venv"

step "make and a C compiler for the jemalloc allocator (tikv-jemalloc-sys builds it from source; from Debian)"
command -v make && command -v cc || (apt-get update -qq && apt-get install -y -qq make gcc)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "MLflow's own route table (read from the installed package)"
mkdir -p target
"$venv/bin/python" tests/e2e/dump_mlflow_routes.py > target/mlflow-routes.txt
echo "$(wc -l < target/mlflow-routes.txt) routes"

step "The route tables of MLflow ${compat_versions[*]} (the compatibility matrix)"
routes_files=""  # the older versions' lists, separated like PATH (3.17.2's is MLFLOW_ROUTES_FILE)
for v in "${compat_versions[@]}"; do
  compat_venv_of "$v"
  "${compat_venv[$v]}/bin/python" tests/e2e/dump_mlflow_routes.py > "target/mlflow-routes-$v.txt"
  echo "MLflow $v: $(wc -l < "target/mlflow-routes-$v.txt") routes"
  routes_files="${routes_files:+$routes_files:}$PWD/target/mlflow-routes-$v.txt"
done

step "cargo test (unit and integration tests; the route table against every MLflow version's routes)"
df -h . | tail -n1 | awk '{print "disk: " $4 " free of " $2}'
MLFLOW_ROUTES_FILE="$PWD/target/mlflow-routes.txt" MLFLOW_ROUTES_FILES="$routes_files" cargo test --locked

step "cargo build (the binary the end-to-end suite and the policy tests run)"
cargo build --locked

step "policy unit tests (mlflow-gate policy test policies)"
target/debug/mlflow-gate policy test policies

step "TLS scanner for the end-to-end TLS test (sslscan, from Debian)"
command -v sslscan || (apt-get update -qq && apt-get install -y -qq sslscan)

step "browser sign-in: the test OpenID Connect provider (node oidc-provider, npm ci in tests/browser/idp)"
command -v node >/dev/null || { echo "node (20 or later) is needed for the test IdP" >&2; exit 1; }
(cd tests/browser/idp && npm ci --no-audit --no-fund --loglevel=error)

step "browser tests: Debian's chromium and chromium-driver (WebDriver for Selenium)"
command -v chromium && command -v chromedriver || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)

step "end-to-end: the real MLflow client through the gate in front of a real MLflow server"
MLFLOW_MATRIX_CELL="client 3.17.2, server 3.17.2" "$venv/bin/python" -m pytest tests/e2e -v -p no:cacheprovider \
  --ignore=tests/e2e/test_browser_ui.py --ignore-glob='tests/e2e/test_fleet_*'

# The compatibility suite once per other cell of the README's matrix (3.17.2 with 3.17.2 ran in the step above).
for v in "${compat_versions[@]}"; do
  step "compatibility: MLflow $v client and MLflow $v server through the gate"
  compat_venv_of "$v"
  MLFLOW_MATRIX_CELL="client $v, server $v" \
    "${compat_venv[$v]}/bin/python" -m pytest tests/e2e/test_mlflow_versions.py -v -p no:cacheprovider
done

step "compatibility: MLflow 2.22.5 client against the MLflow 3.17.2 server through the gate"
MLFLOW_MATRIX_CELL="client 2.22.5, server 3.17.2" MLFLOW_SERVER_BIN="$venv/bin/mlflow" \
  "${compat_venv[2.22.5]}/bin/python" -m pytest tests/e2e/test_mlflow_versions.py -v -p no:cacheprovider

step "browser: the MLflow UI in chromium through the gate with sign-in (screenshots in test-artifacts/browser/)"
"$venv/bin/python" -m pytest tests/e2e/test_browser_ui.py -v -p no:cacheprovider

step "PostgreSQL server for the fleet suite (postgresql, from Debian) and the unprivileged user it runs as"
ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null || (apt-get update -qq && apt-get install -y -qq postgresql)
if [ "$(id -u)" = 0 ] && ! id -u mlflow-gate-pg >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin mlflow-gate-pg  # initdb refuses to run as root
fi

step "end-to-end on a fleet: two gates, two MLflow servers on one PostgreSQL (one process, servers shared)"
"$venv/bin/python" -m pytest tests/e2e/test_fleet_*.py -v -p no:cacheprovider

step "all tests passed"
