#!/usr/bin/env bash
# Browser tests of the dashboard (issue 17): a real `idstream serve` with a temporary config on
# 127.0.0.1:<free port>, users of several roles made through the API, then Debian's chromium
# driven by playwright-core (tests/browser/dashboard.test.mjs). Screenshots go to
# docs/screenshots/ (or $SHOTS). Needs: `apt-get install -y chromium`; npm.
#   scripts/browser-test.sh [path/to/idstream]     (default: target/debug/idstream, built if missing)
# TEST=feed-bench.mjs runs another script of tests/browser/ against the same server.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/debug/idstream}
[ -x "$bin" ] || (cd "$root" && cargo build -q -p idstream)
bin=$(realpath "$bin")
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "chromium is missing: apt-get install -y chromium"; exit 1; }
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
admin_key="adm-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
secret="didit-$(python3 -c 'import secrets; print(secrets.token_hex(20))')"
cat >"$work/idstream.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
data_dir = "$work/data"

[[sources]]
id = "didit"
provider = "didit"
tenant = "acme"
secrets = ["$secret"]

[[api_keys]]
name = "browser-test-setup"
tenant = "acme"
role = "admin"
sha256 = "$(printf %s "$admin_key" | sha256sum | cut -d' ' -f1)"

[rate_limits]
enabled = false

# Four-eyes activation of rulesets (a second policy admin or admin approves).
[decisions]
require_second_approver = true

# The overview's alert fires once a case has waited 5 s.
[reviews]
alert_oldest_open_secs = 5

# Short stream tokens, so the test sees the page renew one.
[dashboard]
stream_token_ttl_secs = 30
TOML
"$bin" serve --config "$work/idstream.toml" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { echo "server did not start"; cat "$work/serve.log"; exit 1; }

cd "$root/tests/browser"
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
status=0
IDSTREAM_URL="http://127.0.0.1:$port" IDSTREAM_ADMIN_KEY="$admin_key" IDSTREAM_BIN="$bin" \
  IDSTREAM_SIM_SECRET="$secret" SHOTS="${SHOTS:-$root/docs/screenshots}" node "${TEST:-dashboard.test.mjs}" || status=$?
if [ "$status" != 0 ]; then
  echo "--- server log (last 40 lines)"
  tail -n 40 "$work/serve.log"
fi
exit "$status"
