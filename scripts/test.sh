#!/usr/bin/env bash
# The test command: install what is missing (the same cached steps as setup, plus the test-only tools:
# Chromium, Prometheus, npm and Grafana's schema, the test extra), then run the whole suite against real
# supervisord, llama-server and vLLM. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --for-tests
exec .venv/bin/python -m pytest -ra "$@"
