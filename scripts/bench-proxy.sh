#!/usr/bin/env bash
# The proxy benchmark, one command: `scripts/bench-proxy.sh [--quick] [--skip-mlflow] [--skip-artifacts]
# [--rounds N] [--duration SECS]`. Installs what it needs (wrk, h2load, nginx and curl from Debian when missing;
# the Python venv with mlflow through scripts/venv.sh), builds the gate and the benchmark's helpers in release mode,
# and prints ONE table (see scripts/bench_proxy.py): the gate against a static upstream directly, through nginx and
# through the gate; against a real MLflow directly, through the gate and MLflow's basic-auth app; a 1 GiB artifact
# up and down; with the budgets of issue 13 checked at the end. `--quick` (one round of 1 s at 32 connections, no
# MLflow, 64 MiB) is for development. A full run takes about 10 minutes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]} from Debian" >&2
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}" >&2
fi
target="${CARGO_TARGET_DIR:-$root/target}"
echo "bench: building the gate and the benchmark helpers (release, $target)" >&2
cargo build --release --bin mlflow-gate --example static_upstream --example bench_tokens --example hyper_floor >&2
# Copies, so that another build into the same target directory cannot swap the binaries mid-run.
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
cp "$target/release/mlflow-gate" "$target/release/examples/static_upstream" "$target/release/examples/bench_tokens" \
  "$target/release/examples/hyper_floor" "$bin/"
venv_args=()
case " $* " in
  *" --quick "*|*" --skip-mlflow "*|*" --only-artifacts "*) ;;
  *)
    venv=$(scripts/venv.sh | tail -n1)
    # MLflow's basic-auth app needs Flask-WTF (mlflow[auth]); kept beside the venv, for that server only.
    extra="$(dirname "$venv")/bench-basic-auth-deps"
    if [ ! -d "$extra/flask_wtf" ]; then
      echo "bench: installing Flask-WTF for mlflow --app-name basic-auth into $extra" >&2
      "$venv/bin/python" -m pip install --quiet --no-deps --target "$extra" Flask-WTF WTForms >&2
    fi
    venv_args=(--venv "$venv" --basic-auth-pythonpath "$extra") ;;
esac
python3 scripts/bench_proxy.py --gate "$bin/mlflow-gate" --upstream "$bin/static_upstream" \
  --tokens "$bin/bench_tokens" --floor "$bin/hyper_floor" "${venv_args[@]}" "$@"
