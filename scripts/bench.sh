#!/usr/bin/env bash
# Policy evaluation benchmark: the default bundle against a trivial bundle measured in the same run (criterion).
# Prints each median and the default/baseline ratio from the bench's closing summary, which reads criterion's
# target/criterion/<group>/<input>/new/estimates.json. Arguments go to criterion, e.g. `scripts/bench.sh default`.
# Without arguments it then runs the request_path bench (JWT authentication cold and cached, classification).
# The whole-proxy benchmark is scripts/bench-proxy.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo bench --bench policy_eval -- "$@" 2>&1 | tee "$log" >/dev/null || { cat "$log"; exit 1; }
grep -E "^default bundle, " "$log" || true
sed -n '/^policy_eval summary/,$p' "$log"
if [ $# -eq 0 ]; then
  cargo bench --bench request_path 2>&1 | tee "$log" >/dev/null || { cat "$log"; exit 1; }
  sed -n '/^request_path summary/,$p' "$log"
fi
# Resource permissions: what a cached read check adds, and filtering a page of 1,000 search results (medians).
echo
echo "permissions:"
cargo bench --bench permissions 2>/dev/null
