#!/usr/bin/env bash
# Several daemons on one PostgreSQL database under `orderbridge bench` load (docs/src/admin/operations.md,
# "Running several daemons"): starts N daemons on the example configuration and a new
# database of the test cluster, posts ORDERS_PER_DAEMON orders to each at once (16 in
# flight per daemon; the first bench also serves the ERP sink on 127.0.0.1:9090),
# prints orders/s, the bench's latency lines and PostgreSQL's CPU per order.
#
#   source scripts/test-postgres.sh && scripts/bench-replicas.sh 3 1500
#
# BIN picks the binary (default target/debug/orderbridge; a release build measures
# what production would see). Ports 18081.. and 18181.. must be free.
set -u
N=$1; PER=$2
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/debug/orderbridge}
export DEMO_CRM_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw DEMO_ERP_TOKEN=demo-erp-token ORDERBRIDGE_ADMIN_TOKEN=demo-admin-token SERVICE_DESK_TOKEN=demo-desk-token DEMO_ERP_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw DEMO_FINANCE_TOKEN=demo-finance-token DEMO_FINANCE_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ORDERBRIDGE_LINK_SECRET=demo-link-key-change-me-0123456789abcdef ORDERBRIDGE_EVIDENCE_KEY=29218f698af6658ffd99d22334e3f7b400c3176fd69f3005272aebdc9d63eb97
DB="bench_${N}_$RANDOM$RANDOM"
psql "$ORDERBRIDGE_TEST_DATABASE_URL" -qc "CREATE DATABASE $DB" >/dev/null
URL="${ORDERBRIDGE_TEST_DATABASE_URL%/*}/$DB"
PIDS=()
for i in $(seq 1 $N); do
  ORDERBRIDGE__STORE__BACKEND=postgres ORDERBRIDGE_DATABASE_URL="$URL" ORDERBRIDGE__STORE__URL='${ORDERBRIDGE_DATABASE_URL}' ORDERBRIDGE__STORE__PATH=/tmp/bench-docs-$i \
  ORDERBRIDGE__SERVER__PORT=$((18080+i)) ORDERBRIDGE__SERVER__ADMIN__PORT=$((18180+i)) ORDERBRIDGE__LOG__LEVEL=warn \
  $BIN run >/tmp/bench-daemon-$i.log 2>&1 &
  PIDS+=($!)
done
for i in $(seq 1 $N); do for t in $(seq 1 100); do curl -sf http://127.0.0.1:$((18080+i))/readyz >/dev/null && break; sleep 0.2; done; done
PGPID=$(head -1 "${PG_DIR:-target/pg}/data/postmaster.pid")
pgcpu() { { awk '{print $14+$15+$16+$17}' /proc/$PGPID/stat; for c in $(pgrep -P $PGPID); do awk '{print $14+$15}' /proc/$c/stat 2>/dev/null; done; } | awk '{s+=$1} END {print s/100}'; }
C0=$(pgcpu)
BPIDS=()
for i in $(seq 1 $N); do
  SINK=(); [ $i = 1 ] && SINK=(--sink 127.0.0.1:9090)
  $BIN bench --url http://127.0.0.1:$((18080+i)) --concurrency 16 --orders $PER --prefix B$N-$i-$RANDOM "${SINK[@]}" >/tmp/bench-out-$i.txt 2>&1 &
  BPIDS+=($!)
done
T0=$(date +%s.%N)
wait "${BPIDS[@]}"
T1=$(date +%s.%N)
C1=$(pgcpu)
echo "replicas=$N orders=$((N*PER)) wall=$(echo "$T1-$T0" | bc) total_orders_per_s=$(echo "$N*$PER/($T1-$T0)" | bc -l | cut -c1-6) pg_cpu_s=$(echo "$C1-$C0" | bc) pg_cpu_ms_per_order=$(echo "($C1-$C0)*1000/($N*$PER)" | bc -l | cut -c1-5)"
for i in $(seq 1 $N); do grep -iE "orders/s|p99|p50|accepted" /tmp/bench-out-$i.txt | tr '\n' ' '; echo; done
kill "${PIDS[@]}" 2>/dev/null; wait "${PIDS[@]}" 2>/dev/null
