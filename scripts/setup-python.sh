#!/usr/bin/env bash
# Installs the Python side of the tests into a project-local virtualenv, <repo>/.venv:
# the official `ollama` and `openai` clients, pytest and standardwebhooks, at the exact
# versions in scripts/requirements-test.txt. Idempotent and fast when already done: a
# stamp inside .venv holds the hash of the requirements file (and the interpreter
# version), and a matching stamp skips the install.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
requirements=scripts/requirements-test.txt
stamp="$venv/.requirements.sha256"

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "setup-python: $python not found; install Python 3.11 first" >&2
  exit 1
fi

wanted="$(sha256sum "$requirements" | cut -d' ' -f1) $("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"

venv_works() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys' >/dev/null 2>&1
}

if venv_works && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi

# A venv made by another interpreter (or left broken) is rebuilt from scratch.
if venv_works && [ "$("$venv/bin/python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')" != "${wanted#* }" ]; then
  rm -rf "$venv"
fi

if ! venv_works || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  rm -rf "$venv"
  if ! "$python" -m venv "$venv"; then
    # Debian's own python3 has no ensurepip until python3-venv is installed.
    echo "setup-python: '$python -m venv' failed; installing python3-venv" >&2
    rm -rf "$venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$python" -m venv "$venv"
  fi
fi

rm -f "$stamp"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
echo "$wanted" >"$stamp"
echo "setup-python: test clients installed in $venv"
