#!/usr/bin/env python3
"""Markdown table of one run-all.sh invocation, for the README: medians per target
and concurrency, with the columns that matter when a target answers before it pushes
(orderbridge answers after its durable commit and pushes from its outbox): sink
pushes, drain time and end-to-end pushes/s next to the answered requests/s.

usage: table.py results.jsonl
The peers' summarize.py prints the same runs without the drain column.
"""
import json
import statistics as st
import sys
from collections import OrderedDict

NAMES = {"orderbridge": "orderbridge", "nodered": "Node-RED", "n8n": "n8n", "sink": "sink alone"}

groups = OrderedDict()
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line)
        groups.setdefault((r["peer"], r["variant"], r["concurrency"]), []).append(r)

print("| target | conc | runs | req/s answered | p50 ms | p99 ms | errors | peak RSS MB | CPU ms per push "
      "| sink pushes | drain s | e2e pushes/s | foreign CPU % |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (peer, variant, c), rs in groups.items():
    def med(k):
        return st.median(r[k] for r in rs)
    name = NAMES.get(peer, peer) + ("" if variant in ("alone", "default") else f" ({variant})")
    print(f"| {name} | {c} | {len(rs)} | {med('rps'):,.0f} | {med('p50_ms'):,.1f} "
          f"| {med('p99_ms'):,.1f} | {sum(r['errors'] for r in rs)} | {max(r['peak_tree_rss_mb'] for r in rs):,.0f} "
          f"| {med('server_cpu_ms_per_push'):.3g} | {med('sink_posts'):,.0f} | {med('drain_s'):.1f} "
          f"| {med('e2e_rps'):,.0f} | {med('foreign_cpu_pct'):.0f} |")
