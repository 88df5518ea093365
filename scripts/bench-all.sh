#!/usr/bin/env bash
# The regression guard: the headline figures of BENCHMARKS.md in a few minutes, one table.
# Each figure is the median of REPS runs (default 3) next to its baseline measured in the same
# run, so a change can show it did not slow anything down: run it before and after. The last
# step runs scripts/bench-wrk.sh with the decision worker on (it installs wrk if missing).
#
#   bash scripts/bench-all.sh                 # a few minutes after the release build
#   REPS=1 DURATION=3 bash scripts/bench-all.sh   # a quick look
#   BIN=/tmp/idstream-old OUT=bench-results/old bash scripts/bench-all.sh   # another build (not rebuilt)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${REPS:-3}
dur=${DURATION:-5}
out=${OUT:-bench-results/all}
bin=${BIN:-target/release/idstream}
mkdir -p "$out"
t0=$SECONDS
if [ -z "${BIN:-}" ]; then
  echo "== building the release binary (once)"
  cargo build --release -q -p idstream
fi
step() { printf '== [%3ds] %s\n' $((SECONDS - t0)) "$*"; }
for i in $(seq "$reps"); do
  step "run $i/$reps: ingest, as fast as possible (idstream and a bare axum handler)"
  "$bin" bench ingest --connections 64 --duration "$dur" --json "$out/ingest-max-$i.json" >/dev/null
  step "run $i/$reps: ingest at a fixed 10,000/s"
  "$bin" bench ingest --connections 64 --duration "$dur" --rate 10000 --no-baseline --json "$out/ingest-10k-$i.json" >/dev/null
  step "run $i/$reps: webhook → decision on a WebSocket at 1,000/s"
  "$bin" bench decide --rate 1000 --duration "$dur" --connections 64 --json "$out/decide-1k-$i.json" >/dev/null
  step "run $i/$reps: idle WebSocket memory, 2,000 connections (idstream and a minimal server)"
  "$bin" bench stream --mode idle --connections 2000 --idle-secs 2 --json "$out/idle-$i.json" >/dev/null
done
step "ingest with the decision worker on, wrk (Debian's package), $reps runs of 10 s: events/s and decided within 1 s"
BIN="$bin" OUT="$out/wrk" REPS="$reps" MODES=on DURATION=10 bash scripts/bench-wrk.sh >"$out/wrk.txt"
step "done"
python3 - "$out" "$reps" <<'PY'
import json, statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
load = lambda name: [json.load(open(f"{out}/{name}-{i}.json")) for i in range(1, reps + 1)]
med = lambda xs: statistics.median(xs)
rows = []
ingest = load("ingest-max")
rows.append(("durable ingest, 64 conns", f"{med(r[0]['per_sec'] for r in ingest):,.0f} events/s",
             f"{med(r[1]['per_sec'] for r in ingest):,.0f}/s (bare axum handler)",
             f"{med(r[0]['per_sec'] / r[1]['per_sec'] for r in ingest):.2f}×"))
fixed = load("ingest-10k")
rows.append(("ingest p99 at 10,000/s", f"{med(r[0]['p99_ms'] for r in fixed):.2f} ms",
             f"p50 {med(r[0]['p50_ms'] for r in fixed):.2f} ms", ""))
decide = load("decide-1k")
rows.append(("webhook → decision.made on WS, 1,000/s", f"p99 {med(r['webhook_to_ws_decision']['p99_ms'] for r in decide):.2f} ms",
             f"p99 {med(r['webhook_to_ws_verification']['p99_ms'] for r in decide):.2f} ms (webhook → its own event on WS)",
             f"p50 {med(r['webhook_to_ws_decision']['p50_ms'] for r in decide):.2f} ms"))
wrk = json.load(open(f"{out}/wrk/summary.json"))["on"]
on, hz = wrk["ingest_rps"], wrk["healthz_rps"]
rows.append(("durable ingest, decision worker on (wrk, 64 conns)", f"{med(on):,.0f} events/s",
             f"{med(hz):,.0f}/s (the same server's /healthz)", f"{med(a / b for a, b in zip(on, hz)):.2f}×"))
within = wrk["decided_within_1s"]
rows.append(("decided within 1 s of the ack, at that rate", f"{100 * med(within):.1f}%",
             "runs: " + ", ".join(f"{100 * w:.1f}%" for w in within), ""))
idle = load("idle")
kb = lambda r, i: r[i].get("kb_per_connection") or 0.0
rows.append(("idle WebSocket memory", f"{med(kb(r, 0) for r in idle):.1f} KB/conn",
             f"{med(kb(r, 1) for r in idle):.1f} KB/conn (minimal tokio-tungstenite server)",
             f"{med(kb(r, 0) / kb(r, 1) for r in idle if kb(r, 1)):.2f}×"))
print(f"\nmedians of {reps} runs, {out}/")
print("| figure | idstream | baseline (same run) | ratio / note |")
print("|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
PY
