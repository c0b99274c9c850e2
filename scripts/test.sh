#!/usr/bin/env bash
# The test command: install what is missing (same cached steps as setup), then run the whole suite against
# real supervisord, llama-server and vLLM. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -ra "$@"
