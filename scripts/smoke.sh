#!/usr/bin/env bash
# Smoke test of the README's first commands: `idstream serve` with no configuration (sandbox
# mode), then `idstream simulate` against it, then a graceful SIGTERM. Fails on any rejection.
set -euo pipefail
bin=$(realpath "${1:-target/release/idstream}")
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
# Port 0: the kernel picks a free port (never one of the machine's services); the server logs it.
IDSTREAM_SERVER__LISTEN="127.0.0.1:0" IDSTREAM_SERVER__LOG_FORMAT=json "$bin" serve >serve.log 2>&1 &
pid=$!
addr=""
for _ in $(seq 300); do
  addr=$(python3 -c 'import json,sys
for line in open("serve.log"):
    try: v = json.loads(line)
    except ValueError: continue
    if v.get("fields", {}).get("message") == "idstream serving": print(v["fields"]["listen"]); break' 2>/dev/null || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start"; cat serve.log; exit 1; }
curl -fsS "http://$addr/healthz" >/dev/null
"$bin" simulate --target "http://$addr/webhooks/sandbox" --sessions 100 --quiet
key=$(cat idstream-data/sandbox.apikey)
count=$(curl -fsS -H "Authorization: Bearer $key" "http://$addr/v1/events?limit=5" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["events"]))')
[ "$count" = 5 ] || { echo "expected 5 events from the read API, got $count"; exit 1; }
# The decision worker decided the simulated results: reviews are queued, and a backtest of the
# shipped default ruleset over them (read-only, beside the running server) changes nothing.
for _ in $(seq 100); do
  reviews=$(curl -fsS -H "Authorization: Bearer $key" "http://$addr/v1/reviews?limit=1000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["reviews"]))')
  [ "$reviews" -gt 0 ] && break
  sleep 0.1
done
[ "$reviews" -gt 0 ] || { echo "no review case was opened"; exit 1; }
"$bin" rules default > default.yaml
changed=$("$bin" backtest --ruleset default.yaml --data-dir idstream-data --json | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["decisions"] > 0, r; print(r["changed"])')
[ "$changed" = 0 ] || { echo "backtest of the live ruleset changed $changed decisions"; exit 1; }
kill -TERM "$pid"
wait "$pid"
grep -q "stopped cleanly" serve.log || { cat serve.log; exit 1; }
if grep -q "$(cat idstream-data/sandbox.secret)" serve.log; then echo "secret leaked into the log"; exit 1; fi
echo "smoke: ok"
