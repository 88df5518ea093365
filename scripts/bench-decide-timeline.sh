#!/usr/bin/env bash
# Where the decision worker's time goes under load, second by second: runs one
# `idstream bench decide` (RATE webhooks/s for 15 s, 256 connections), scrapes the server's
# /metrics every half second, and prints per interval: webhooks accepted/s, decisions/s, their
# mean latency from the webhook's acknowledgement, decision batches/s with the commit, publish
# (appending the batch's entries to the log, beside the next batch) and lookup time per batch,
# the share of batches decided before the batch ahead of them was in their lookups' snapshot
# (carried), and store commits/s with the time per commit. Also the server's CPU seconds (/proc/PID/stat)
# and the bench's own summary.
#   BIN=target/release/idstream RATE=5000 bash scripts/bench-decide-timeline.sh
set -euo pipefail
bin=$(readlink -f "${BIN:-target/release/idstream}")
rate=${RATE:-5000}
work=$(mktemp -d)
"$bin" bench decide --rate "$rate" --duration 15 --connections 256 --json "$work/decide.json" >"$work/bench.log" 2>&1 &
bench=$!
pid=""
for _ in $(seq 600); do
  pid=$(pgrep -P "$bench" -f " serve " | head -1 || true)
  [ -n "$pid" ] && break
  sleep 0.2
done
[ -n "$pid" ] || { echo "the bench's server did not start" >&2; cat "$work/bench.log" >&2; exit 1; }
port=""
for _ in $(seq 600); do
  port=$(ss -ltnp 2>/dev/null | grep "pid=$pid," | awk '{print $4}' | head -1 || true)
  [ -n "$port" ] && break
  sleep 0.2
done
cpu_first=""; cpu_last=""
while kill -0 "$bench" 2>/dev/null; do
  if m=$(curl -s --max-time 1 "http://$port/metrics"); then
    echo "$(date +%s.%N) $(echo "$m" | grep -E '^idstream_(decision_batch_seconds|decision_latency_seconds|store_commit_seconds)_(sum|count)|^idstream_webhooks_total|^idstream_decision_batches_carried_total' | tr '\n' ' ')" >>"$work/metrics.txt"
  fi
  if c=$(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null); then
    [ -n "$cpu_first" ] || cpu_first=$c
    cpu_last=$c
  fi
  sleep 0.5
done
wait "$bench" || { cat "$work/bench.log" >&2; exit 1; }
tail -6 "$work/bench.log"
echo "server CPU during the run: $(( (cpu_last - cpu_first) / $(getconf CLK_TCK) )) s"
python3 - "$work/metrics.txt" <<'PY'
import re, sys
rows = []
for line in open(sys.argv[1]):
    t, _, rest = line.partition(" ")
    d = {}
    for k, v in re.findall(r"(\S+) ([0-9.e+-]+)(?= |$)", rest):
        d[k] = d.get(k, 0) + float(v)
    rows.append((float(t), d))
def g(d, prefix):
    return sum(v for k, v in d.items() if k.startswith(prefix))
def delta(a, b, prefix):
    return g(b, prefix) - g(a, prefix)
print("| s | webhooks/s | decisions/s | mean latency ms | batches/s | commit ms/batch | publish ms/batch | lookup ms/batch | carried | store commits/s | ms/store commit |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (t0, a), (t1, b) in zip(rows, rows[1:]):
    dt = t1 - t0
    n = delta(a, b, "idstream_decision_latency_seconds_count")
    if n == 0 and delta(a, b, "idstream_webhooks_total") == 0:
        continue
    lat = delta(a, b, "idstream_decision_latency_seconds_sum")
    cb = delta(a, b, 'idstream_decision_batch_seconds_count{phase="commit"}')
    cs = delta(a, b, 'idstream_decision_batch_seconds_sum{phase="commit"}')
    pc = delta(a, b, 'idstream_decision_batch_seconds_count{phase="publish"}')
    ps = delta(a, b, 'idstream_decision_batch_seconds_sum{phase="publish"}')
    lc = delta(a, b, 'idstream_decision_batch_seconds_count{phase="lookup"}')
    ls = delta(a, b, 'idstream_decision_batch_seconds_sum{phase="lookup"}')
    sc = delta(a, b, "idstream_store_commit_seconds_count")
    ss = delta(a, b, "idstream_store_commit_seconds_sum")
    wh = delta(a, b, "idstream_webhooks_total")
    carried = delta(a, b, "idstream_decision_batches_carried_total")
    print(f"| {t1 - rows[0][0]:.1f} | {wh / dt:.0f} | {n / dt:.0f} | {1000 * lat / max(n, 1):.1f} | {cb / dt:.0f} | "
          f"{1000 * cs / max(cb, 1):.1f} | {1000 * ps / max(pc, 1):.1f} | {1000 * ls / max(lc, 1):.1f} | {100 * carried / max(cb, 1):.0f}% | {sc / dt:.0f} | {1000 * ss / max(sc, 1):.1f} |")
PY
rm -rf "$work"
