#!/usr/bin/env bash
# Install everything (idempotent; the second run takes seconds). See scripts/install.py.
# --for-tests (scripts/test.sh) adds the test-only tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null || ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup: needs Python >= 3.10 as '$PY' (set PYTHON=/path/to/python3)" >&2
  exit 1
fi
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "setup: installing python3-venv with apt-get (the venv module is missing)"
  sudo=${SUDO:-$( [ "$(id -u)" = 0 ] || echo sudo )}
  $sudo apt-get update   # a fresh image has no package lists yet
  $sudo apt-get install -y --no-install-recommends python3-venv
fi
exec "$PY" scripts/install.py "$@"
