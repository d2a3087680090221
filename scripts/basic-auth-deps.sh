#!/usr/bin/env bash
# Installs what MLflow's basic-auth app (`mlflow server --app-name basic-auth`) needs beyond the test venv
# (Flask-WTF and WTForms, the `mlflow[auth]` extra) into a directory beside the venv, for that server only (its
# PYTHONPATH), and prints the directory on the last line of stdout. Cached: a second run costs nothing.
#
#   scripts/basic-auth-deps.sh <venv>    the venv scripts/venv.sh printed
set -euo pipefail
venv="${1:?usage: scripts/basic-auth-deps.sh <venv>}"
extra="$(dirname "$venv")/bench-basic-auth-deps"
if [ ! -d "$extra/flask_wtf" ] || [ ! -d "$extra/wtforms" ]; then
  echo "basic-auth-deps: installing Flask-WTF and WTForms into $extra" >&2
  "$venv/bin/python" -m pip install --quiet --no-deps --target "$extra" Flask-WTF WTForms >&2
else
  echo "basic-auth-deps: reusing $extra" >&2
fi
echo "$extra"
