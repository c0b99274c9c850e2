#!/usr/bin/env bash
# The setup-and-run command: install what is missing, start supervisord (router + engines), wait until the
# router answers on its port and the engines have loaded their models, then say where everything is.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
mkdir -p run/logs
ctl=(.venv/bin/supervisorctl -c supervisord.conf)
if "${ctl[@]}" pid >/dev/null 2>&1; then
  echo "supervisord already running (pid $("${ctl[@]}" pid)); reloading the router"
  "${ctl[@]}" restart router
else
  .venv/bin/supervisord -c supervisord.conf
fi
exec .venv/bin/python scripts/wait_ready.py --timeout "${ULLM_START_TIMEOUT:-600}"
