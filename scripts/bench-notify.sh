#!/usr/bin/env bash
# Reproduces the outbound-notification figures in BENCHMARKS.md (issue #14): builds the release
# binary once, runs `idstream bench notify` REPS times (throughput with 1 and 50 endpoints, then
# latency at each rate, each next to a bare-client baseline of the same run) and prints the
# medians. Extra arguments go to every run, e.g. `--events 20000`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/release/idstream}
out=${OUT:-bench-results}
reps=${REPS:-3}
rates=${RATES:-"1000,5000"}
if [ -z "${BIN:-}" ]; then
  cargo build --release -p idstream
fi
mkdir -p "$out"
for i in $(seq "$reps"); do
  echo "run $i of $reps ..." >&2
  "$bin" bench notify --rate "$rates" --json "$out/notify-$i.json" "$@"
done
python3 - "$out" "$reps" <<'PY'
import json, statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{out}/notify-{i}.json")) for i in range(1, reps + 1)]
med = statistics.median
print(f"medians of {reps} runs (max_in_flight = {runs[0]['max_in_flight']} per endpoint)")
if runs[0]["throughput"]:
    print("| endpoints | deliveries per run | idstream deliveries/s | bare client (baseline) deliveries/s | ratio | store txns per delivery | store writer busy | CPU cores, idstream run |")
    print("|---|---|---|---|---|---|---|---|")
    for j, t0 in enumerate(runs[0]["throughput"]):
        ts = [r["throughput"][j] for r in runs]
        per = [t["per_sec"] for t in ts]
        base = [t["baseline_per_sec"] for t in ts]
        ratio = [t["per_sec"] / t["baseline_per_sec"] for t in ts]
        txns = [t["usage"]["store_txns"] / max(t["delivered"], 1) for t in ts]
        busy = [t["usage"]["store_busy_pct"] for t in ts]
        cpu = [t["usage"]["cpu_total_cores"] for t in ts]
        print(f"| {t0['endpoints']} | {t0['expected']:,} | **{med(per):,.0f}** ({', '.join(f'{p:,.0f}' for p in per)}) "
              f"| {med(base):,.0f} ({', '.join(f'{b:,.0f}' for b in base)}) | {med(ratio):.2f} | {med(txns):.2f} | {med(busy):.0f}% | {med(cpu):.2f} |")
    for j, t0 in enumerate(runs[0]["throughput"]):
        groups = sorted({g for r in runs for g in r["throughput"][j]["usage"]["cpu_cores"]})
        cells = ", ".join(f"{g} {med(r['throughput'][j]['usage']['cpu_cores'].get(g, 0) for r in runs):.2f}" for g in groups)
        print(f"CPU by thread group, {t0['endpoints']} endpoint(s), idstream run (cores, median): {cells}")
if runs[0]["latency"]:
    print("| rate asked | accepted/s | delivered / expected | log append → received p50 / p99 / p99.9 ms | scheduled POST → received p50 / p99 / p99.9 ms | bare client (baseline) scheduled → received p50 / p99 / p99.9 ms | store / log writer busy | CPU cores |")
    print("|---|---|---|---|---|---|---|---|")
    for j, l0 in enumerate(runs[0]["latency"]):
        ls = [r["latency"][j] for r in runs]
        q = lambda key: " / ".join(f"{med(l[key][p] for l in ls):.2f}" for p in ("p50_ms", "p99_ms", "p999_ms"))
        print(f"| {l0['rate_asked']:,} | {med(l['accepted_per_sec'] for l in ls):,.0f} "
              f"| {', '.join(str(l['delivered']) + ' / ' + str(l['expected']) for l in ls)} "
              f"| {q('append_to_received')} | {q('sent_to_received')} | {q('baseline')} "
              f"| {med(l['usage']['store_busy_pct'] for l in ls):.0f}% / {med(l['usage']['log_busy_pct'] for l in ls):.0f}% "
              f"| {med(l['usage']['cpu_total_cores'] for l in ls):.2f} |")
        p99s = ", ".join(f"{l['append_to_received']['p99_ms']:.2f}" for l in ls)
        print(f"  p99 per run, append → received: {p99s}")
PY
