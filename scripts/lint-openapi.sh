#!/usr/bin/env bash
# scripts/lint-openapi.sh - lints docs/openapi.yaml with Redocly CLI (its recommended
# rules), the version pinned in scripts/openapi/package-lock.json, installed from the npm
# registry on first use (`npm ci`). Fails, never skips, when npm or the package is
# missing: the API description is part of the feature. A stage of scripts/test.sh.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_DIR=$ROOT/scripts/openapi

if ! command -v npm >/dev/null 2>&1; then
    echo "lint-openapi: npm is not installed (Node.js 18.17 or later with npm is needed)" >&2
    exit 1
fi
if ! (cd "$NODE_DIR" && { [ -x node_modules/.bin/redocly ] && npm ls >/dev/null 2>&1 ||
    npm ci --no-audit --no-fund --loglevel=error; }); then
    echo "lint-openapi: cannot install @redocly/cli (npm ci in scripts/openapi)" >&2
    exit 1
fi
cd "$NODE_DIR" && npx --no-install redocly lint --format=stylish "$ROOT/docs/openapi.yaml"
