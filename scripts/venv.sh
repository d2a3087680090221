#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment the demo and the end-to-end tests run in, and prints its path
# on the last line of stdout. The environment is cached under ~/.cache/mlflow-gate, keyed by a hash of
# tests/e2e/requirements.txt, so a second run costs nothing; a missing or broken cache is rebuilt from scratch.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
req="$root/tests/e2e/requirements.txt"
key=$(sha256sum "$req" | cut -c1-16)
cache="${MLFLOW_GATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlflow-gate}"
venv="$cache/venv-$key"
if [ -x "$venv/bin/python" ] && [ -f "$venv/.complete" ] && "$venv/bin/python" -c 'import mlflow, sklearn, pytest' 2>/dev/null; then
  echo "venv: reusing $venv" >&2
else
  echo "venv: creating $venv (installs mlflow==3.17.2 and scikit-learn; takes a few minutes the first time)" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --progress-bar off -r "$req" >&2
  touch "$venv/.complete"
  echo "venv: ready" >&2
fi
echo "$venv"
