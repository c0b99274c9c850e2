#!/usr/bin/env bash
# The setup-and-run command: install what is missing, start supervisord (router + engines), wait until the
# router answers on its port and the engines have loaded their models, then say where everything is.
# ULLM_API_KEY, ULLM_ADMIN_KEY, ULLM_ROUTER_HOST, ULLM_ROUTER_PORT and ULLM_LOG_LEVEL apply on every run: with
# supervisord already running, the router is restarted with this shell's values (router/router_env.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export ULLM_HOME="$PWD"   # wait_ready.py reads this checkout's config, as supervisord's programs do
./scripts/setup.sh
mkdir -p run/logs
chmod 700 run   # logs, launch plans, the control socket: this user's alone on a shared machine
ctl=(.venv/bin/supervisorctl -c supervisord.conf)
if pid=$("${ctl[@]}" pid 2>/dev/null) && [[ "$pid" =~ ^[0-9]+$ ]]; then
  echo "supervisord already running (pid $pid): restarting the router with this shell's settings; the engines keep running"
  .venv/bin/python -m router.router_env write run "$pid"
  "${ctl[@]}" restart router
else
  rm -f run/router-env.json   # a new supervisord starts with this shell's environment itself
  .venv/bin/supervisord -c supervisord.conf
  echo "started supervisord (router and engines)"
fi
exec .venv/bin/python scripts/wait_ready.py --timeout "${ULLM_START_TIMEOUT:-600}"
