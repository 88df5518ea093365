#!/usr/bin/env bash
# Reproduces the verification figures in BENCHMARKS.md: three runs of `idstream bench
# verifications` (POST /v1/verifications against a zero-latency sandbox, and the sandbox's
# create-session called directly in the same run); prints the medians.
set -euo pipefail
bin=${BIN:-target/release/idstream}
out=${OUT:-bench-results}
reps=${REPS:-3}
conns=${CONNS:-16}
mkdir -p "$out"
for i in $(seq "$reps"); do
  "$bin" bench verifications --connections "$conns" --duration 10 --json "$out/verifications-$i.json"
done
python3 - "$out" "$reps" <<'PY'
import json, statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{out}/verifications-{i}.json")) for i in range(1, reps + 1)]
med = lambda idx, key: statistics.median(r[idx][key] for r in runs)
print(f"medians of {reps} runs")
print("| target | conns | ok/s | p50 ms | p99 ms | failed |")
print("|---|---|---|---|---|---|")
for idx in (0, 1):
    r = runs[0][idx]
    print(f"| {r['target']} | {r['connections']} | {med(idx, 'per_sec'):.0f} | {med(idx, 'p50_ms'):.2f} | {med(idx, 'p99_ms'):.2f} | {sum(x[idx]['failed'] for x in runs)} |")
print("idstream overhead at p50 (median of per-run differences):",
      f"{statistics.median(r[0]['p50_ms'] - r[1]['p50_ms'] for r in runs):+.2f} ms;",
      "throughput ratio idstream/baseline:", f"{statistics.median(r[0]['per_sec'] / r[1]['per_sec'] for r in runs):.2f}")
PY
