#!/usr/bin/env bash
# Installs what the README test (crates/foreman/tests/it/readme.rs) runs the
# README's examples with, besides the Python clients of scripts/setup-python.sh:
# curl, and `unshare` and `ip` to give the run a network namespace of its own.
# Idempotent: skipped when all three are on PATH.
set -euo pipefail

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-readme: installed ${missing[*]}"
