#!/usr/bin/env bash
# The UI page-load benchmark of issue 11, one command: `scripts/bench-ui-pages.sh [--rounds N] [--experiments N]
# [--runs N]`. Builds the gate in release mode, gets the Python venv with mlflow (scripts/venv.sh), starts a real
# `mlflow server` (sqlite) and the gate with the default bundle in front of it, seeds two teams' experiments with
# grants and one experiment with 200 runs, and replays the MLflow UI's first-load calls of the experiments list and
# of one experiment's runs page directly and through the gate, in interleaved rounds; prints the medians and the
# ratios against the 1.5x budget (scripts/bench_ui_pages.py). Takes about two minutes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
echo "bench-ui: building the gate (release, $target)" >&2
cargo build --release --bin mlflow-gate >&2
# A copy, so that another build into the same target directory cannot swap the binary mid-run.
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
cp "$target/release/mlflow-gate" "$bin/"
venv=$(scripts/venv.sh | tail -n1)
"$venv/bin/python" scripts/bench_ui_pages.py --gate "$bin/mlflow-gate" --venv "$venv" "$@"
