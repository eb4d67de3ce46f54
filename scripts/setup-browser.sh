#!/usr/bin/env bash
# Installs Debian's chromium, which the headless browser test of the Host and Origin
# guard drives (crates/foreman/tests/it/browser.rs). Idempotent: skipped when a
# chromium is already on PATH.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium installed: $(chromium --version)"
