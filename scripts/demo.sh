#!/usr/bin/env bash
# One-command demo: builds the gate, prepares the Python venv, starts MLflow (sqlite + served artifacts) and the
# gate in front of it, prints tokens for a few demo users and a copy-paste example, then runs until Ctrl-C.
#
#   scripts/demo.sh          # MLflow on 127.0.0.1:5000, the gate on 127.0.0.1:8080, state in <repo>/.demo
#   DEMO_DIR=/tmp/d MLFLOW_PORT=5001 GATE_PORT=8081 IDP_PORT=8091 scripts/demo.sh
#
# Browsers: with node (20+) on the machine, a local OpenID Connect provider (tests/browser/idp, oidc-provider) runs
# on 127.0.0.1:$IDP_PORT (default 8090) and the gate's [browser] sign-in uses it: open the printed URL, sign in as
# engineer, reviewer or ci (any password), and use the MLflow UI under the policy.
#
# The demo directory keeps the MLflow database, artifacts and signing key between runs (so old tokens stay
# valid); delete it to start afresh. Logs: $DEMO_DIR/mlflow.log and $DEMO_DIR/gate.log.
# MLFLOW_GATE_BIN=/path/to/mlflow-gate skips the build and uses that binary.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
demo=${DEMO_DIR:-$root/.demo}
mkdir -p "$demo"
demo=$(cd "$demo" && pwd)
cd "$root"
mlflow_port=${MLFLOW_PORT:-5000}
gate_port=${GATE_PORT:-8080}
idp_port=${IDP_PORT:-8090}
idp_pid=""
issuer="https://idp.example"
audience="mlflow"
token_ttl=$((8 * 3600))
bin=${MLFLOW_GATE_BIN:-}
mlflow_pid=""
gate_pid=""

say() { echo "demo: $*" >&2; }
die() { say "error: $*"; exit 1; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Stops a process group started below (each server runs in its own group, so its workers stop with it).
stop_group() {
  local pid=$1 name=$2
  [ -n "$pid" ] && kill -0 -- "-$pid" 2>/dev/null || return 0
  say "stopping $name (pid $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    say "$name did not stop within 10 s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  trap - EXIT INT TERM
  stop_group "$gate_pid" "the gate"
  stop_group "$idp_pid" "the sign-in IdP"
  stop_group "$mlflow_pid" "MLflow"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Polls URL until it answers 2xx; fails early if PID exits, or after SECS seconds, showing LOG's tail.
wait_http() {
  local url=$1 pid=$2 log=$3 secs=$4 name=$5
  local deadline=$((SECONDS + secs))
  until curl -fsS --noproxy "*" -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$log" >&2 || true
      die "$name exited during start-up (log: $log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 40 "$log" >&2 || true
      die "$name did not answer $url within $secs s (log: $log)"
    fi
    sleep 0.2
  done
}

# Starts "$@" in the background in its own process group (set -m) with output to LOG; sets $started_pid.
start_bg() {
  local log=$1
  shift
  set -m
  "$@" </dev/null >"$log" 2>&1 &
  started_pid=$!
  set +m
}

command -v curl >/dev/null || die "curl not found"
port_in_use "$mlflow_port" && die "port $mlflow_port is in use (set MLFLOW_PORT)"
port_in_use "$gate_port" && die "port $gate_port is in use (set GATE_PORT)"

if [ -n "$bin" ]; then
  say "using the gate binary $bin (MLFLOW_GATE_BIN is set; not building)"
else
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
  say "building the gate (cargo build)"
  cargo build
  bin="$root/target/debug/mlflow-gate"
fi
[ -x "$bin" ] || die "no gate binary at $bin"

say "preparing the Python environment (scripts/venv.sh)"
venv=$("$root/scripts/venv.sh" | tail -n 1)

mkdir -p "$demo/tokens" "$demo/artifacts"
say "demo directory: $demo"

if [ -f "$demo/keys/signing-key.pem" ] && [ -f "$demo/keys/jwks.json" ]; then
  say "reusing the signing key in $demo/keys"
else
  say "generating a signing key in $demo/keys"
  "$bin" dev keygen --dir "$demo/keys" --alg RS256
fi

# Browser sign-in: the local IdP (node oidc-provider), a client secret and a cookie key kept in the demo directory.
browser=""
if command -v node >/dev/null && command -v npm >/dev/null; then
  port_in_use "$idp_port" && die "port $idp_port is in use (set IDP_PORT)"
  if [ ! -d "$root/tests/browser/idp/node_modules/oidc-provider" ]; then
    say "installing the local IdP (npm ci in tests/browser/idp)"
    (cd "$root/tests/browser/idp" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  [ -f "$demo/cookie.key" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$demo/cookie.key")
  [ -f "$demo/idp-client.secret" ] || (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$demo/idp-client.secret")
  idp_issuer="http://127.0.0.1:$idp_port"
  browser="
# The local sign-in IdP (scripts/demo.sh starts it): its ID tokens, like bearer tokens, are verified with its keys.
[[auth.issuers]]
issuer = \"$idp_issuer\"
audiences = [\"$audience\"]
algorithms = [\"RS256\"]
discovery_url = \"$idp_issuer/.well-known/openid-configuration\"
groups_claim = \"groups\"

# People in browsers sign in with the IdP above; the MLflow UI then works through the gate.
[browser]
issuer = \"$idp_issuer\"
client_id = \"mlflow-gate\"
client_secret_file = \"$demo/idp-client.secret\"
redirect_url = \"http://127.0.0.1:$gate_port/gate/callback\"
public_origins = [\"http://127.0.0.1:$gate_port\"]
scopes = [\"openid\", \"profile\", \"email\", \"groups\"]
cookie_key_file = \"$demo/cookie.key\""
else
  say "node not found: browser sign-in is off (the UI needs it; API clients use the tokens below)"
fi

cat >"$demo/gate.toml" <<EOF
# Written by scripts/demo.sh on every run; edit the script, not this file.

[server]
# Address the gate listens on; clients use it as MLFLOW_TRACKING_URI.
listen = "127.0.0.1:$gate_port"
# Largest request body the gate buffers to inspect (JSON API calls); artifact uploads stream and are not capped.
max_body_bytes = 10485760

[upstream]
# The MLflow server that permitted requests are forwarded to; nothing else should be able to reach it.
url = "http://127.0.0.1:$mlflow_port"
# Seconds to wait for a connection to MLflow.
connect_timeout_secs = 5
# Seconds to wait for MLflow's response headers (bodies may stream for longer).
timeout_secs = 60

# A trusted token issuer (repeat the table for more than one).
[[auth.issuers]]
# Must equal the token's "iss" claim.
issuer = "$issuer"
# The token's "aud" claim must contain one of these.
audiences = ["$audience"]
# Signature algorithms accepted from this issuer.
algorithms = ["RS256"]
# Public keys written by "mlflow-gate dev keygen"; a real identity provider uses jwks_url or discovery_url.
jwks_file = "$demo/keys/jwks.json"
# Claim that lists the caller's groups, which the policies test (mlflow-ci, mlflow-admin, ...).
groups_claim = "groups"

[policy]
# Directory of Rego policies (and their data) evaluated on every request.
dir = "$root/policies"
$browser
EOF

if [ -n "$browser" ]; then
  say "starting the sign-in IdP on $idp_issuer (users: engineer, reviewer, ci; any password)"
  start_bg "$demo/idp.log" env IDP_PORT="$idp_port" IDP_ADDR_FILE="$demo/idp.addr" \
    IDP_CLIENT_SECRET="$(cat "$demo/idp-client.secret")" node "$root/tests/browser/idp/idp.mjs"
  idp_pid=$started_pid
  wait_http "$idp_issuer/.well-known/openid-configuration" "$idp_pid" "$demo/idp.log" 30 "the IdP"
fi

say "checking the config and compiling the policies"
"$bin" check --config "$demo/gate.toml"

say "starting MLflow on 127.0.0.1:$mlflow_port (first start creates the database; takes ~10-30 s)"
start_bg "$demo/mlflow.log" env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "$venv/bin/mlflow" server \
  --host 127.0.0.1 --port "$mlflow_port" --workers 1 \
  --backend-store-uri "sqlite:///$demo/mlflow.db" \
  --serve-artifacts --artifacts-destination "$demo/artifacts"
mlflow_pid=$started_pid
wait_http "http://127.0.0.1:$mlflow_port/health" "$mlflow_pid" "$demo/mlflow.log" 180 "MLflow"
say "MLflow is up (log: $demo/mlflow.log)"

say "starting the gate on 127.0.0.1:$gate_port"
start_bg "$demo/gate.log" "$bin" serve --config "$demo/gate.toml"
gate_pid=$started_pid
wait_http "http://127.0.0.1:$gate_port/health" "$gate_pid" "$demo/gate.log" 30 "the gate"
say "the gate is up (log: $demo/gate.log)"

say "minting demo tokens (valid for 8 h)"
# user|groups|who they are
users=(
  "alice||engineer"
  "bob|ml-senior|senior ML engineer"
  "ci-bot|mlflow-ci|CI pipeline: may promote to Production"
  "carol|ml-oncall|on-call engineer"
  "root-admin|mlflow-admin|administrator"
)
echo
echo "Tokens (also saved in $demo/tokens/<user>.jwt):"
for entry in "${users[@]}"; do
  IFS='|' read -r user groups about <<<"$entry"
  args=(dev token --key-dir "$demo/keys" --issuer "$issuer" --audience "$audience" --sub "$user" --ttl "$token_ttl")
  [ -n "$groups" ] && args+=(--groups "$groups")
  "$bin" "${args[@]}" >"$demo/tokens/$user.jwt"
  echo
  echo "  $user (${groups:-no groups}; $about):"
  echo "  $(cat "$demo/tokens/$user.jwt")"
done

cat <<EOF

Try it (in another terminal):

  # No token: the gate answers 401 UNAUTHENTICATED
  curl -s 'http://127.0.0.1:$gate_port/api/2.0/mlflow/experiments/search?max_results=1'; echo

  # As alice, with the MLflow client
  export MLFLOW_TRACKING_URI=http://127.0.0.1:$gate_port MLFLOW_TRACKING_TOKEN=\$(cat $demo/tokens/alice.jwt)
  $venv/bin/python -c 'import mlflow; mlflow.set_experiment("gate-demo"); r = mlflow.start_run(); mlflow.log_metric("loss", 0.42); mlflow.end_run(); print("logged run", r.info.run_id, "through the gate")'

  # Moving a model version to Production is denied for alice (not in group mlflow-ci) and allowed for ci-bot:
  #   MlflowClient().transition_model_version_stage(name, version, "Production")

MLflow itself listens on 127.0.0.1:$mlflow_port; go through the gate at http://127.0.0.1:$gate_port.
${browser:+
In a browser: open http://127.0.0.1:$gate_port/ and sign in as engineer, reviewer or ci (any password);
sign out at http://127.0.0.1:$gate_port/gate/logout; see who you are at http://127.0.0.1:$gate_port/gate/me.
}
Press Ctrl-C to stop both servers.
EOF

set +e
wait -n
status=$?
set -e
say "a server exited unexpectedly (status $status); see $demo/mlflow.log and $demo/gate.log"
exit 1
