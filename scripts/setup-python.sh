#!/usr/bin/env bash
# Installs the Python side of the tests into a project-local virtualenv (.venv):
# the official `ollama` and `openai` clients and pytest. Idempotent: a stamp of the
# requirements file's hash skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
requirements=scripts/requirements-test.txt
stamp="$venv/.requirements.sha256"
wanted=$(sha256sum "$requirements" | cut -d' ' -f1)

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi

if ! python3 -m venv "$venv" 2>/dev/null; then
  # Debian's python3 may lack ensurepip until python3-venv is installed.
  rm -rf "$venv"
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
echo "$wanted" > "$stamp"
echo "python test clients installed in $venv"
