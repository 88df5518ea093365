#!/usr/bin/env bash
# Reproduces the document figures in BENCHMARKS.md: REPS runs (default 3) of `idstream bench
# documents` (upload → decision at a fixed rate for a 500 KB and a 5 MB image against a
# zero-latency sandbox, the sandbox's ID verification called directly at the same rate, and the
# server's peak memory with CONC uploads in flight); prints the medians.
set -euo pipefail
bin=${BIN:-target/release/idstream}
out=${OUT:-bench-results}
reps=${REPS:-3}
rate=${RATE:-10}
conc=${CONC:-16}
dur=${DURATION:-10}
mkdir -p "$out"
for i in $(seq "$reps"); do
  echo "run $i of $reps" >&2
  "$bin" bench documents --rate "$rate" --concurrency "$conc" --duration "$dur" --json "$out/documents-$i.json"
done
python3 - "$out" "$reps" <<'PY'
import json, statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{out}/documents-{i}.json")) for i in range(1, reps + 1)]
med = lambda part, idx, key: statistics.median(r[part][idx][key] for r in runs)
print(f"medians of {reps} runs")
print("| target | rate/s | p50 ms | p99 ms | failed |")
print("|---|---|---|---|---|")
for idx, r in enumerate(runs[0]["latency"]):
    print(f"| {r['target']} | {r['rate']:.0f} | {med('latency', idx, 'p50_ms'):.2f} | {med('latency', idx, 'p99_ms'):.2f} | {sum(x['latency'][idx]['failed'] for x in runs)} |")
print()
print("| image | concurrent uploads | server RSS before (MiB) | peak (MiB) |")
print("|---|---|---|---|")
for idx, m in enumerate(runs[0]["memory"]):
    print(f"| {m['size_bytes']} B | {m['concurrency']} | {med('memory', idx, 'rss_before_mib'):.1f} | {med('memory', idx, 'rss_peak_mib'):.1f} |")
PY
