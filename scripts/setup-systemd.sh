#!/usr/bin/env bash
# Installs Debian's systemd package for its `systemd-analyze verify`, which checks
# packaging/foreman.service in crates/foreman/tests/it/packaging.rs. Nothing is
# started: the tool reads unit files only. Idempotent: skipped when
# systemd-analyze is already on PATH.
set -euo pipefail

if command -v systemd-analyze >/dev/null 2>&1; then
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
echo "systemd-analyze installed: $(systemd-analyze --version | head -n1)"
