#!/usr/bin/env bash
# Reproduces the end-to-end decision figures in BENCHMARKS.md: `idstream bench decide` at each
# rate, REPS times; prints the medians. Each run measures the verification-event path (webhook →
# WebSocket) as the baseline next to the decision path (webhook → decision.made → WebSocket).
set -euo pipefail
bin=${BIN:-target/release/idstream}
out=${OUT:-bench-results}
reps=${REPS:-3}
rates=${RATES:-"1000 2500 5000"}
mkdir -p "$out"
for rate in $rates; do
  for i in $(seq "$reps"); do
    "$bin" bench decide --rate "$rate" --duration 15 --connections 256 --json "$out/decide-$rate-$i.json" >/dev/null
  done
done
python3 - "$out" "$reps" $rates <<'PY'
import json, statistics, sys
out, reps, rates = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"medians of {reps} runs")
print("| rate asked | accepted/s | ack p50/p99 ms | webhook→event on WS p50/p99 ms (baseline) | webhook→decision on WS p50/p99 ms | accepted→decision in log p50/p99 ms |")
print("|---|---|---|---|---|---|")
for rate in rates:
    runs = [json.load(open(f"{out}/decide-{rate}-{i}.json")) for i in range(1, reps + 1)]
    m = lambda path, k: statistics.median(r[path][k] for r in runs)
    cell = lambda path: f"{m(path, 'p50_ms'):.2f} / {m(path, 'p99_ms'):.2f}"
    acc = statistics.median(r["sent_per_sec"] for r in runs)
    print(f"| {rate} | {acc:.0f} | {cell('webhook_ack')} | {cell('webhook_to_ws_verification')} | {cell('webhook_to_ws_decision')} | {cell('accepted_to_decision_in_log')} |")
PY
