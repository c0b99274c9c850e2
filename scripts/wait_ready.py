#!/usr/bin/env python3
"""Wait until the router answers and every engine has finished loading, showing progress; then print where
everything is. The router's address is the one it binds: router.host/port from the config (ULLM_CONFIG), with
ULLM_ROUTER_HOST/ULLM_ROUTER_PORT over them, as the router itself reads them. Exit 1 if an engine ends in
`error`: it names the engine and prints its error (with the engine's log lines when ULLM_ADMIN_KEY, or the API
key that then guards admin, is in the environment)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOME = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HOME))
from router.auth import Keys  # noqa: E402
from router.config import load_config  # noqa: E402
from router.exposure import bind_address  # noqa: E402

WILDCARDS = ("0.0.0.0", "::", "[::]", "")


def router_url(host: str, port: int) -> str:
    """Where to reach a router bound to host:port from this machine."""
    if host in WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def get_json(url: str, key: str | None) -> dict | None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def failures(engines: dict) -> dict[str, str]:
    return {name: e.get("last_error") or "no error recorded" for name, e in engines.items() if e["status"] == "error"}


def key_summary(keys: Keys) -> str:
    if keys.inference:
        return "set: every API call needs one (ULLM_API_KEY; load, unload, reload and logs: the admin key)"
    if keys.admin:
        return "admin key set: load, unload, reload and logs need it; inference is open"
    return "none: open to whoever reaches the port"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    base = router_url(*bind_address(load_config()))
    keys = Keys.from_env()
    admin_key = (keys.admin or (None,))[0]
    started, last_line = time.monotonic(), ""
    while time.monotonic() - started < args.timeout:
        status = get_json(f"{base}/v1/status", admin_key)
        engines = status or {}
        line = (f"router not answering yet at {base}" if status is None else
                ", ".join(f"{name}: {e['status']}" + (f" ({e['model']})" if e["model"] else "")
                          for name, e in engines.items()))
        if line != last_line or int(time.monotonic() - started) % 15 == 0:
            print(f"[{time.monotonic() - started:5.0f}s] {line}", flush=True)
            last_line = line
        if engines and all(e["status"] in ("loaded", "idle", "error") for e in engines.values()):
            failed = failures(engines)
            if failed:
                for name, error in failed.items():
                    print(f"\nunified-llm started, but {name} failed to load: {error}", file=sys.stderr)
                print(f"\nThe router answers at {base}; fix the model and load it again (POST /v1/models/load), "
                      f"or see run/logs/. Failed: {', '.join(failed)}", file=sys.stderr)
                return 1
            key_header = " -H 'Authorization: Bearer $ULLM_API_KEY'" if keys.inference else ""
            print(f"""
unified-llm is up.
  API (OpenAI-compatible):  {base}/v1   (send "engine": "vllm" or "llamacpp")
  status:                   curl {base}/v1/status
  chat example:             curl {base}/v1/chat/completions -H 'Content-Type: application/json'{key_header} \\
                              -d '{{"engine": "llamacpp", "messages": [{{"role": "user", "content": "Hi"}}]}}'
  API keys:                 {key_summary(keys)}
  processes:                .venv/bin/supervisorctl -c supervisord.conf status
  logs:                     run/logs/ (router.log, vllm.log, llamacpp.log)
  stop everything:          .venv/bin/supervisorctl -c supervisord.conf shutdown""")
            return 0
        time.sleep(1)
    print(f"timed out after {args.timeout:.0f}s waiting for the engines at {base}; see run/logs/", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
