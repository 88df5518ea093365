#!/usr/bin/env bash
# The dashboard's live feed at ~1,000 log entries/s (issue 17), in Debian's chromium: frame
# intervals and long tasks under load next to the same page idle, the page's backlog, and a
# check that the page counted every entry. Medians of RUNS (3) runs; see BENCHMARKS.md.
#   scripts/bench-feed.sh            (builds the release binary; needs chromium and npm)
# Tunables (environment): RUNS, SIM_RATE (webhook deliveries/s, default 750), LOAD_SECS (20).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build -q --release -p idstream
TEST=feed-bench.mjs SHOTS=/tmp exec scripts/browser-test.sh "$root/target/release/idstream"
