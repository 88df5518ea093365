#!/usr/bin/env bash
# Reproduces BENCHMARKS.md "Scale-out": embedded vs NATS JetStream + PostgreSQL in the same run,
# alternating, REPS times each; prints the medians. Each scale-out run gets a fresh database and
# stream. Needs NATS (with -js) and PostgreSQL at the URLs below.
set -euo pipefail
bin=${BIN:-target/release/idstream}
out=${OUT:-bench-results/scale-out}
reps=${REPS:-3}
nats=${NATS_URL:-nats://127.0.0.1:4222}
pg=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
rate=${RATE:-1000}
mkdir -p "$out"
for i in $(seq "$reps"); do
  "$bin" bench ingest --connections 64 --duration 10 --no-baseline --json "$out/ingest-embedded-$i.json"
  "$bin" bench ingest --connections 64 --duration 10 --no-baseline --json "$out/ingest-scaleout-$i.json" \
    --nats "$nats" --postgres "$pg"
  "$bin" bench decide --rate "$rate" --duration 20 --json "$out/decide-embedded-$i.json"
  "$bin" bench decide --rate "$rate" --duration 20 --json "$out/decide-scaleout-$i.json" \
    --nats "$nats" --postgres "$pg"
done
python3 - "$out" "$reps" "$rate" <<'PY'
import json, statistics, sys
out, reps, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(kind, backend, i):
    return json.load(open(f"{out}/{kind}-{backend}-{i}.json"))
def med(f):
    return statistics.median(f(i) for i in range(1, reps + 1))
print(f"medians of {reps} runs, alternating")
print("| ingest, 64 connections, max | ok/s | p50 ms | p99 ms |")
print("|---|---|---|---|")
for b in ["embedded", "scaleout"]:
    r = lambda i: load("ingest", b, i)[0]
    print(f"| {b} | {med(lambda i: r(i)['per_sec']):.0f} | {med(lambda i: r(i)['p50_ms']):.2f} | {med(lambda i: r(i)['p99_ms']):.2f} |")
print(f"ratio scale-out/embedded ok/s: {med(lambda i: load('ingest','scaleout',i)[0]['per_sec'] / load('ingest','embedded',i)[0]['per_sec']):.2f}")
print()
print(f"| end to end at {rate}/s | POST→2xx p50 | p99 | POST→decision.made on WS p50 | p99 | accepted→decision in log p50 | p99 |")
print("|---|---|---|---|---|---|---|")
for b in ["embedded", "scaleout"]:
    r = lambda i: load("decide", b, i)
    q = lambda k, p: med(lambda i: r(i)[k][p])
    print(f"| {b} | {q('webhook_ack','p50_ms'):.2f} | {q('webhook_ack','p99_ms'):.2f} | {q('webhook_to_ws_decision','p50_ms'):.2f} | {q('webhook_to_ws_decision','p99_ms'):.2f} | {q('accepted_to_decision_in_log','p50_ms'):.2f} | {q('accepted_to_decision_in_log','p99_ms'):.2f} |")
PY
