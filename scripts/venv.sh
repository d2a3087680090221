#!/usr/bin/env bash
# Creates (or reuses) the Python virtual environment the demo and the end-to-end tests run in, and prints its path
# on the last line of stdout. The environment is cached under ~/.cache/mlflow-gate, keyed by a hash of its
# requirements file, so a second run costs nothing; a missing or broken cache is rebuilt from scratch.
#
#   scripts/venv.sh           MLflow 3.17.2 (tests/e2e/requirements.txt), the version the gate is built against
#   scripts/venv.sh 2.22.5    an older MLflow of the compatibility suite (tests/e2e/requirements-mlflow-2.22.5.txt)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version="${1:-}"
if [ -z "$version" ]; then
  req="$root/tests/e2e/requirements.txt"
  what="mlflow==3.17.2 and scikit-learn"
  prefix="venv"
else
  req="$root/tests/e2e/requirements-mlflow-$version.txt"
  if [ ! -f "$req" ]; then
    echo "venv: no requirements for MLflow $version: $req does not exist" >&2
    exit 2
  fi
  what="mlflow==$version and scikit-learn"
  prefix="venv-mlflow-$version"
fi
key=$(sha256sum "$req" | cut -c1-16)
cache="${MLFLOW_GATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlflow-gate}"
venv="$cache/$prefix-$key"
if [ -x "$venv/bin/python" ] && [ -f "$venv/.complete" ] && "$venv/bin/python" -c 'import mlflow, sklearn, pytest' 2>/dev/null; then
  echo "venv: reusing $venv" >&2
else
  echo "venv: creating $venv (installs $what; takes a few minutes the first time)" >&2
  rm -rf "$venv"
  if [ -n "$version" ]; then
    # Venvs of this version built from an older requirements file are stale: free their disk.
    find "$cache" -maxdepth 1 -type d -name "$prefix-*" ! -name "$(basename "$venv")" -exec rm -rf {} + 2>/dev/null || true
  fi
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --progress-bar off -r "$req" >&2
  touch "$venv/.complete"
  echo "venv: ready" >&2
fi
echo "$venv"
