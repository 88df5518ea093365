#!/usr/bin/env bash
# Durable ingest as a new user would measure it: a release `idstream serve` on its default
# configuration, `wrk` (Debian's package, installed here if missing) posting unique signed
# Didit v3 webhooks over keep-alive connections, and the same server's /healthz as the baseline
# in the same run. Prints the medians of REPS runs per configuration (decision worker off / on).
#
#   scripts/bench-wrk.sh                 # REPS=3 DURATION=10 CONNS=64 MODES="off on"
#   BIN=target/release/idstream OUT=bench-results/wrk scripts/bench-wrk.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/release/idstream}
reps=${REPS:-3}
duration=${DURATION:-10}
conns=${CONNS:-64}
threads=${THREADS:-2}
modes=${MODES:-"off on"}
out=${OUT:-bench-results/wrk}
mkdir -p "$out"

if ! command -v wrk >/dev/null; then
  echo "installing wrk from Debian's packages ..." >&2
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
[ -x "$bin" ] || cargo build --release -p idstream

work=$(mktemp -d)
# (Not `kill "${server:-0}"`: kill 0 signals the whole process group, the caller included.)
trap '[ -n "${server:-}" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
secret="bench-wrk-secret-0123456789abcdefghijklmn"
# Enough unique webhooks for the longest run at 60,000/s, with room; valid for an hour (the
# bench source's timestamp tolerance), so one file serves every run.
count=${COUNT:-$((60000 * duration * 12 / 10))}
echo "preparing $count signed webhooks ..." >&2
IDSTREAM_BENCH_SECRET=$secret "$bin" bench prepare --count "$count" --out "$work/requests.tsv"

# Bytes written (wchar) and CPU time (utime + stime, clock ticks) so far by each of the storage
# threads (store-writer, store-ckpt, log-writer, log-ckpt, log-index): "name bytes ticks" lines.
thread_io() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s %s\n' "$(cat "$t/comm" 2>/dev/null)" "$(awk '/^wchar/ {print $2}' "$t/io" 2>/dev/null)" \
      "$(sed 's/^.*) //' "$t/stat" 2>/dev/null | awk '{print $12 + $13}')"
  done | awk '$1 ~ /^(store|log)-/ && $3 != "" {a[$1] += $2; c[$1] += $3} END {for (k in a) print k, a[k], c[k]}'
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# run MODE REP: one server, the /healthz baseline then the webhooks; results in $out.
run() {
  local mode=$1 rep=$2 port data
  port=$(free_port)
  data="$work/data-$mode-$rep"
  enabled=true
  [ "$mode" = off ] && enabled=false
  cat >"$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
data_dir = "$data"
[decisions]
enabled = $enabled
[[sources]]
id = "bench"
provider = "didit"
tenant = "bench"
secrets = ["$secret"]
timestamp_tolerance_secs = 3600
TOML
  IDSTREAM_LOG=warn "$bin" serve --config "$work/config.toml" 2>"$out/serve-$mode-$rep.log" &
  server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  wrk -t"$threads" -c"$conns" -d"${duration}s" --latency "http://127.0.0.1:$port/healthz" >"$out/healthz-$mode-$rep.txt"
  thread_io "$server" >"$out/io-$mode-$rep-before.txt"
  IDSTREAM_WRK_REQUESTS="$work/requests.tsv" IDSTREAM_WRK_THREADS=$threads IDSTREAM_WRK_SOURCE=bench \
    wrk -t"$threads" -c"$conns" -d"${duration}s" --latency -s scripts/wrk-ingest.lua "http://127.0.0.1:$port" \
    >"$out/ingest-$mode-$rep.txt"
  if [ "$mode" = on ]; then
    # Let the decision worker finish (its decision count stops moving), then keep its latency
    # histogram: append (= acknowledgement) -> decision committed, per decided event.
    local last=-1 now
    for _ in $(seq 120); do
      now=$(curl -sf "http://127.0.0.1:$port/metrics" | awk '/^idstream_decision_latency_seconds_count/ {print $2}')
      [ "${now:-0}" = "$last" ] && break
      last=${now:-0}
      sleep 1
    done
  fi
  thread_io "$server" >"$out/io-$mode-$rep-after.txt"
  curl -sf "http://127.0.0.1:$port/metrics" >"$out/metrics-$mode-$rep.txt" || true
  kill -TERM "$server"
  wait "$server" || true
  server=""
}

for rep in $(seq "$reps"); do
  for mode in $modes; do
    echo "run $rep, decision worker $mode ..." >&2
    run "$mode" "$rep"
  done
done

python3 - "$out" "$reps" "$modes" <<'PY'
import json, re, statistics, sys
out, reps, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
# Per mode, each run's figures, for scripts that build on this one (bench-all.sh).
summary = {}

def wrk(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    lat = {}
    for p, v, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        lat[p] = float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return rps, lat, int(bad.group(1)) if bad else 0, errors.group(1) if errors else ""

def decided_within(path, limit="1"):
    """Fraction of decisions made within `limit` s of their event's append (Prometheus buckets)."""
    text = open(path).read()
    buckets = dict(re.findall(r'^idstream_decision_latency_seconds_bucket\{le="([^"]+)"\} (\d+)', text, re.M))
    if not buckets:
        return None, 0
    total = int(buckets.get("+Inf", 0))
    return (int(buckets.get(limit, 0)) / total if total else None), total

print(f"medians of {reps} runs (wrk, keep-alive connections, release serve)")
print("| decision worker | target | req/s | p50 ms | p99 ms | non-2xx | ratio to /healthz | decided within 1 s |")
print("|---|---|---|---|---|---|---|---|")
for mode in modes:
    ing = [wrk(f"{out}/ingest-{mode}-{r}.txt") for r in range(1, reps + 1)]
    hz = [wrk(f"{out}/healthz-{mode}-{r}.txt") for r in range(1, reps + 1)]
    ratio = statistics.median(i[0] / h[0] for i, h in zip(ing, hz))
    within = ""
    summary[mode] = {"ingest_rps": [i[0] for i in ing], "healthz_rps": [h[0] for h in hz]}
    if mode == "on":
        fr = [decided_within(f"{out}/metrics-{mode}-{r}.txt") for r in range(1, reps + 1)]
        within = ", ".join(f"{f * 100:.1f}% of {n}" if f is not None else "n/a" for f, n in fr)
        summary[mode]["decided_within_1s"] = [f for f, _ in fr]
    for name, rows in [("/healthz (baseline)", hz), ("POST /webhooks (durable)", ing)]:
        med = lambda k: statistics.median(r[1].get(k, float("nan")) for r in rows)
        print(f"| {mode} | {name} | {statistics.median(r[0] for r in rows):,.0f} | {med('50'):.2f} | {med('99'):.2f} | "
              f"{max(r[2] for r in rows)} | {'' if 'healthz' in name else f'{ratio:.2f}'} | {'' if 'healthz' in name else within} |")
    for r in ing:
        if r[3]:
            print(f"  (socket errors in a run: {r[3]})")

json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)

def metric(path, name):
    m = re.search(rf"^{name} ([\d.e+]+)$", open(path).read(), re.M)
    return float(m.group(1)) if m else 0.0

def io(path):
    """name -> (bytes written, CPU clock ticks)"""
    return {k: (int(b), int(t)) for k, b, t in (l.split() for l in open(path) if l.strip())}

tick = __import__("os").sysconf("SC_CLK_TCK")

# What the writers wrote during the load (wchar of each named thread, /proc/PID/task/*/io), per
# log entry appended and, with the decision worker on, per decision.
print()
print("| decision worker | thread | KB written per log entry | KB written per decision | CPU µs per log entry | CPU µs per decision |")
print("|---|---|---|---|---|---|")
for mode in modes:
    per = {}
    for r in range(1, reps + 1):
        before, after = io(f"{out}/io-{mode}-{r}-before.txt"), io(f"{out}/io-{mode}-{r}-after.txt")
        entries = metric(f"{out}/metrics-{mode}-{r}.txt", "idstream_log_batch_entries_sum")
        decisions = metric(f"{out}/metrics-{mode}-{r}.txt", "idstream_decision_latency_seconds_count")
        for name in after:
            b = after[name][0] - before.get(name, (0, 0))[0]
            cpu = (after[name][1] - before.get(name, (0, 0))[1]) / tick * 1e6
            per.setdefault(name, []).append([x / n if n else None for x in (b, cpu) for n in (entries, decisions)])
    for name in sorted(per):
        col = lambda i, scale: (lambda v: f"{statistics.median(v) / scale:.1f}" if v else "n/a")(
            [row[i] for row in per[name] if row[i] is not None])
        on = mode == "on"
        print(f"| {mode} | {name} | {col(0, 1024)} | {col(1, 1024) if on else ''} | {col(2, 1)} | {col(3, 1) if on else ''} |")
PY
