#!/usr/bin/env bash
# make demo: the nightly pipeline on the demo shop, through Airflow, into a local SMTP sink.
# Everything lives under var/ (warehouse.db, shop.db, airflow/, mail/); `make clean` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BIN="$ROOT/.venv/bin"
NIGHT="${DEMO_NIGHT:-2026-11-22}"
CUSTOMERS="${DEMO_CUSTOMERS:-2000}"
SMTP_PORT="${DEMO_SMTP_PORT:-8025}"

export RETENTION_HOME="$ROOT/var"
export RETENTION_UNSUBSCRIBE_SECRET="${RETENTION_UNSUBSCRIBE_SECRET:-demo-only-secret-not-for-production}"
# The messages' unsubscribe links point at the api-server that `make ui` starts (plugins/retention_ui.py).
export RETENTION_UNSUBSCRIBE_BASE_URL="${RETENTION_UNSUBSCRIBE_BASE_URL:-http://localhost:${UI_PORT:-8080}/retention-public}"
export AIRFLOW_HOME="$ROOT/var/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__LOGGING__LOGGING_LEVEL="${AIRFLOW_LOG_LEVEL:-WARNING}"
export AIRFLOW_CONN_SMTP_DEFAULT="{\"conn_type\": \"smtp\", \"host\": \"127.0.0.1\", \"port\": $SMTP_PORT, \"extra\": {\"disable_ssl\": true, \"disable_tls\": true}}"
export PYTHONWARNINGS=ignore
export PATH="$BIN:$PATH"

mkdir -p var/mail
before=$(find var/mail -name '*.eml' | wc -l)

echo "==> Airflow metadata database (SQLite) in var/airflow"
airflow db migrate >var/airflow-migrate.log 2>&1 || { cat var/airflow-migrate.log; exit 1; }

if [ ! -f var/shop.db ]; then
  echo "==> Demo shop: $CUSTOMERS customers (var/shop.db)"
  retention demo-data --customers "$CUSTOMERS" --seed 42
else
  echo "==> Demo shop exists (var/shop.db); \`make clean\` to start over"
fi

echo "==> Local SMTP sink on 127.0.0.1:$SMTP_PORT, saving to var/mail"
retention smtp-sink start --port "$SMTP_PORT" --dir var/mail
trap 'retention smtp-sink stop >/dev/null' EXIT

echo "==> airflow dags test retention_nightly $NIGHT"
airflow dags test retention_nightly "$NIGHT" >var/nightly.log 2>&1 || { tail -50 var/nightly.log; exit 1; }

# The delivery DAG's "now" is its logical date: 15:00 UTC on the night's date, inside every
# demo customer's local 09:00-18:00 window (Tallinn's closes at 16:00 UTC, New York's opens at 14:00).
echo "==> airflow dags test retention_delivery ${NIGHT}T15:00:00+00:00"
airflow dags test retention_delivery "${NIGHT}T15:00:00+00:00" >var/delivery.log 2>&1 || { tail -50 var/delivery.log; exit 1; }

after=$(find var/mail -name '*.eml' | wc -l)
echo
retention report --date "$NIGHT"
echo
echo "Messages received by the SMTP sink in this run: $((after - before)) (all runs: $after)"
echo "Read them in: $ROOT/var/mail"
find var/mail -name '*.eml' | sort | tail -n 4 | sed 's/^/  /'
