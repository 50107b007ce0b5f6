#!/usr/bin/env bash
# make ui: a real Airflow api-server with the Retention plugin (plugins/retention_ui.py) on the
# demo's data in var/ (run `make demo` first). Prints the page's URL and how to log in; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BIN="$ROOT/.venv/bin"
PORT="${UI_PORT:-8080}"

if [ ! -f var/warehouse.db ]; then
  echo "No demo data in var/: run \`make demo\` first." >&2
  exit 1
fi

export RETENTION_HOME="$ROOT/var"
# The same signing secret as scripts/demo.sh, so that the links in var/mail verify.
export RETENTION_UNSUBSCRIBE_SECRET="${RETENTION_UNSUBSCRIBE_SECRET:-demo-only-secret-not-for-production}"
export AIRFLOW_HOME="$ROOT/var/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# Simple auth manager (development only): an admin and a viewer, passwords kept in var/airflow.
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer:viewer"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$AIRFLOW_HOME/ui-passwords.json"
# Saving templates: the simple auth manager lets every user see every custom view, so the
# setting names who may save (here the admin); the viewer previews only.
export RETENTION_TEMPLATE_EDITORS="${RETENTION_TEMPLATE_EDITORS:-role:admin}"
export PYTHONWARNINGS=ignore
export PATH="$BIN:$PATH"

if [ ! -f "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" ]; then
  python -c 'import json, secrets, sys; json.dump({u: secrets.token_urlsafe(9) for u in ("admin", "viewer")}, open(sys.argv[1], "w"))' \
    "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
fi
airflow db migrate >var/airflow-migrate.log 2>&1 || { cat var/airflow-migrate.log; exit 1; }

password() { python -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" "$1"; }
cat <<INFO

  Retention page:  http://localhost:$PORT/plugin/retention   (or the "Retention" entry in the nav bar)
  Log in as:       viewer / $(password viewer)     (admin / $(password admin): may also save templates)
  Unsubscribe:     the links in var/mail/*.eml (List-Unsubscribe) point at
                   http://localhost:$PORT/retention-public/unsubscribe, served without a login

INFO
exec airflow api-server --host 127.0.0.1 --port "$PORT"
