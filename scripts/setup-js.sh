#!/usr/bin/env bash
# Installs the JavaScript side of the tests (the official `ollama` package) into
# tests/js/node_modules from the lock file. Idempotent: a stamp of the lock file's
# hash skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/../tests/js"

if ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
stamp=node_modules/.lock.sha256
wanted=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "$wanted" > "$stamp"
echo "JavaScript test client installed in tests/js/node_modules"
