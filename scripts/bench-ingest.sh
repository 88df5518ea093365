#!/usr/bin/env bash
# Reproduces the ingest figures in BENCHMARKS.md: three repetitions of each configuration,
# idstream and the bare-handler baseline measured in the same run; prints the medians.
set -euo pipefail
bin=${BIN:-target/release/idstream}
out=${OUT:-bench-results}
reps=${REPS:-3}
mkdir -p "$out"
for i in $(seq "$reps"); do
  "$bin" bench ingest --connections 64 --duration 10 --json "$out/max-$i.json"
  "$bin" bench ingest --connections 64 --duration 10 --rate 10000 --no-baseline --json "$out/rate10k-$i.json"
done
python3 - "$out" "$reps" <<'PY'
import json, statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
def med(kind, idx, key):
    return statistics.median(json.load(open(f"{out}/{kind}-{i}.json"))[idx][key] for i in range(1, reps + 1))
print(f"medians of {reps} runs")
print("| target | load | ok/s | p50 ms | p99 ms | p99.9 ms |")
print("|---|---|---|---|---|---|")
for kind, idx, load in [("max", 0, "64 conns, max"), ("max", 1, "64 conns, max"), ("rate10k", 0, "10,000/s")]:
    name = json.load(open(f"{out}/{kind}-1.json"))[idx]["target"]
    print(f"| {name} | {load} | {med(kind, idx, 'per_sec'):.0f} | {med(kind, idx, 'p50_ms'):.2f} | {med(kind, idx, 'p99_ms'):.2f} | {med(kind, idx, 'p999_ms'):.2f} |")
ratios = [json.load(open(f"{out}/max-{i}.json")) for i in range(1, reps + 1)]
print("ratio idstream/bare (median):", f"{statistics.median(r[0]['per_sec'] / r[1]['per_sec'] for r in ratios):.2f}")
PY
