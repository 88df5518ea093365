#!/usr/bin/env bash
# Smoke test of the README's first commands: `idstream serve` with no configuration (sandbox
# mode), then `idstream simulate` against it, then a graceful SIGTERM. Fails on any rejection.
set -euo pipefail
bin=${1:-target/release/idstream}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
port=$((20000 + RANDOM % 20000))
IDSTREAM_SERVER__LISTEN="127.0.0.1:$port" "$OLDPWD/$bin" serve >serve.log 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
"$OLDPWD/$bin" simulate --target "http://127.0.0.1:$port/webhooks/sandbox" --sessions 100 --quiet
key=$(cat idstream-data/sandbox.apikey)
count=$(curl -fsS -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/events?limit=5" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["events"]))')
[ "$count" = 5 ] || { echo "expected 5 events from the read API, got $count"; exit 1; }
kill -TERM "$pid"
wait "$pid"
grep -q "stopped cleanly" serve.log || { cat serve.log; exit 1; }
if grep -q "$(cat idstream-data/sandbox.secret)" serve.log; then echo "secret leaked into the log"; exit 1; fi
echo "smoke: ok"
