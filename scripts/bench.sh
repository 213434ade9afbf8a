#!/usr/bin/env bash
# Intake benchmark: builds the deployed binary (profile dist), starts the daemon on the example
# configuration with a fresh data directory, posts signed webhooks at the given
# concurrency and prints orders/s, acknowledgement latency and the daemon's memory.
#
#   scripts/bench.sh [ORDERS] [CONCURRENCY]      (defaults: 50000 64)
#
# BENCH_BIN names a binary built before (to compare two builds); without it the
# deployed binary is built first (cargo build --profile dist: ~20 min from clean on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
ORDERS=${1:-50000}
CONCURRENCY=${2:-64}
PORT=${BENCH_PORT:-18080}
ADMIN_PORT=${BENCH_ADMIN_PORT:-18081}   # /metrics is served on the admin listener
SINK=${BENCH_SINK:-127.0.0.1:19090}

if [ -z "${BENCH_BIN:-}" ]; then cargo build --profile dist --locked -q; fi
BIN=${BENCH_BIN:-target/dist/orderbridge}
WORK=$(mktemp -d)
trap 'kill $DAEMON 2>/dev/null || true; wait $DAEMON 2>/dev/null || true; rm -rf "$WORK"' EXIT
cp -r config connectors mappings "$WORK"/
sed -i "s#http://127.0.0.1:9090#http://$SINK#" "$WORK/connectors/demo-erp.toml"
sed -i "s#http://127.0.0.1:9092#http://$SINK#" "$WORK/connectors/demo-finance.toml"
# Intake and the ERP push only: no mail (the customer confirmations would queue
# behind an SMTP server that is not there and skew the outbox).
echo "# no notifications in the benchmark" > "$WORK/config/notifications.toml"

export DEMO_CRM_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
export DEMO_ERP_TOKEN=bench-erp-token
export ORDERBRIDGE_ADMIN_TOKEN=bench-admin-token
export SERVICE_DESK_TOKEN=bench-desk-token
export DEMO_ERP_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
export DEMO_FINANCE_TOKEN=bench-finance-token
export DEMO_FINANCE_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
export ORDERBRIDGE_LINK_SECRET=bench-link-key-0123456789abcdef0123456789
export ORDERBRIDGE_EVIDENCE_KEY=29218f698af6658ffd99d22334e3f7b400c3176fd69f3005272aebdc9d63eb97
export ORDERBRIDGE__SERVER__PORT=$PORT
export ORDERBRIDGE__SERVER__ADMIN__PORT=$ADMIN_PORT
export ORDERBRIDGE__LOG__LEVEL=warn

$BIN run --config-dir "$WORK" &
DAEMON=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

$BIN bench --url "http://127.0.0.1:$PORT" --orders "$ORDERS" --concurrency "$CONCURRENCY" \
  --pid "$DAEMON" --sink "$SINK"
echo "store size on disk: $(du -sh "$WORK/data" | cut -f1)"
curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" | grep -E '^orderbridge_(commit_(batch_size|duration_seconds)_(sum|count)|outbox_pending|outbox_lag_seconds) '
