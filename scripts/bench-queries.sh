#!/usr/bin/env bash
# Reproduces the dashboard read-API figures in BENCHMARKS.md (issue 17): `idstream bench
# queries` with 1,000,000 decisions, on the embedded backends and on NATS JetStream + PostgreSQL
# (its own database and stream). Each prints a table of medians of RUNS runs.
#   bash scripts/bench-queries.sh
# Environment: DECISIONS (1000000), RUNS (3), REQUESTS (200), NATS_URL
# (nats://127.0.0.1:4222), POSTGRES_URL (postgres://postgres@127.0.0.1:5432/test); SKIP_SHARED=1
# measures the embedded backends only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build -q --release -p idstream
bin=target/release/idstream
args=(--decisions "${DECISIONS:-1000000}" --runs "${RUNS:-3}" --requests "${REQUESTS:-200}")
echo "--- embedded (SQLite)"
"$bin" bench queries "${args[@]}"
if [ "${SKIP_SHARED:-0}" != 1 ]; then
  echo "--- NATS JetStream + PostgreSQL"
  "$bin" bench queries "${args[@]}" --nats "${NATS_URL:-nats://127.0.0.1:4222}" \
    --postgres "${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
fi
