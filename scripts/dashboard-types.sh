#!/usr/bin/env bash
# The dashboard's types (issue 17): regenerates crates/idstream-server/dashboard/types/ from
# docs/openapi.json and docs/events.schema.json (npm: openapi-typescript,
# json-schema-to-typescript), fails when the committed files differ (stale), then type-checks the
# dashboard's JavaScript against them (npm: typescript, `tsc` with checkJs; nothing is emitted:
# the browser loads the same files it always did, no build step).
#   bash scripts/dashboard-types.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/crates/idstream-server/dashboard"
[ -d node_modules/typescript ] || npm ci --no-audit --no-fund --loglevel=error
npm run -s gen >/dev/null
if ! git diff --exit-code --stat -- types/; then
  echo "crates/idstream-server/dashboard/types/ is stale: run scripts/dashboard-types.sh and commit it" >&2
  exit 1
fi
npm run -s check
echo "dashboard types: fresh; tsc --checkJs: no errors"
