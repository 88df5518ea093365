#!/usr/bin/env bash
# Browser tests of the dashboard (issue 17): a real `idstream serve` with a temporary config on
# 127.0.0.1:<free port>, users of several roles made through the API, then Debian's chromium
# driven by playwright-core (tests/browser/dashboard.test.mjs). Screenshots go to
# docs/screenshots/ (or $SHOTS). Needs: `apt-get install -y chromium`; npm.
#   scripts/browser-test.sh [path/to/idstream]     (default: target/debug/idstream, built if missing)
# TEST=feed-bench.mjs runs another script of tests/browser/ against the same server.
# BACKEND=shared runs the same test on NATS JetStream + PostgreSQL (IDSTREAM_TEST_NATS_URL,
# IDSTREAM_TEST_POSTGRES_URL; a fresh database and stream) with two nodes: the browser uses the
# first, while webhooks and the test's API calls go to the second.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/debug/idstream}
[ -x "$bin" ] || (cd "$root" && cargo build -q -p idstream)
bin=$(realpath "$bin")
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "chromium is missing: apt-get install -y chromium"; exit 1; }
work=$(mktemp -d)
pid=""
pid2=""
trap 'for p in $pid $pid2; do kill "$p" 2>/dev/null; done; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
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
wait_healthy() { # port pid log
  for _ in $(seq 300); do
    curl -fsS "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3"; exit 1; }
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$1/healthz" >/dev/null || { echo "server did not start"; cat "$3"; exit 1; }
}
api_port=$port
if [ "${BACKEND:-embedded}" = shared ]; then
  : "${IDSTREAM_TEST_POSTGRES_URL:?BACKEND=shared needs IDSTREAM_TEST_POSTGRES_URL}"
  : "${IDSTREAM_TEST_NATS_URL:?BACKEND=shared needs IDSTREAM_TEST_NATS_URL}"
  tag="browser_$(date +%s)_$$"
  psql -q "$IDSTREAM_TEST_POSTGRES_URL" -c "CREATE DATABASE $tag" >/dev/null
  cat >>"$work/idstream.toml" <<TOML

[log]
url = "$IDSTREAM_TEST_NATS_URL"
nats_stream = "T_$tag"
nats_subject_prefix = "t_$tag"
nats_replicas = 1

[store]
url = "${IDSTREAM_TEST_POSTGRES_URL%/*}/$tag"
TOML
  # The second node: same config, its own port and data directory.
  api_port=$(free_port)
  sed -e "s#^listen = .*#listen = \"127.0.0.1:$api_port\"#" -e "s#^data_dir = .*#data_dir = \"$work/data2\"#" \
    "$work/idstream.toml" >"$work/idstream2.toml"
fi
"$bin" serve --config "$work/idstream.toml" >"$work/serve.log" 2>&1 &
pid=$!
wait_healthy "$port" "$pid" "$work/serve.log"
if [ "$api_port" != "$port" ]; then
  "$bin" serve --config "$work/idstream2.toml" >"$work/serve2.log" 2>&1 &
  pid2=$!
  wait_healthy "$api_port" "$pid2" "$work/serve2.log"
  echo "two nodes on NATS + PostgreSQL: the browser on :$port, webhooks and API calls on :$api_port"
fi

cd "$root/tests/browser"
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
status=0
IDSTREAM_URL="http://127.0.0.1:$port" IDSTREAM_API_URL="http://127.0.0.1:$api_port" \
  IDSTREAM_ADMIN_KEY="$admin_key" IDSTREAM_BIN="$bin" \
  IDSTREAM_SIM_SECRET="$secret" SHOTS="${SHOTS:-$root/docs/screenshots}" node "${TEST:-dashboard.test.mjs}" || status=$?
if [ "$status" != 0 ]; then
  for log in "$work"/serve*.log; do
    echo "--- $(basename "$log") (last 40 lines)"
    tail -n 40 "$log"
  done
fi
exit "$status"
