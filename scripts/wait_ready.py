#!/usr/bin/env python3
"""Wait until the router answers and every engine has finished loading, showing progress; then print where
everything is. Exit 1 if an engine ends in `error` (its error, with the engine's log lines, is printed)."""

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
from router.config import load_config  # noqa: E402


def get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    port = load_config().router.port
    base = f"http://127.0.0.1:{port}"
    started, last_line = time.monotonic(), ""
    while time.monotonic() - started < args.timeout:
        status = get_json(f"{base}/v1/status")
        engines = status or {}
        line = ("router not answering yet" if status is None else
                ", ".join(f"{name}: {e['status']}" + (f" ({e['model']})" if e["model"] else "")
                          for name, e in engines.items()))
        if line != last_line or int(time.monotonic() - started) % 15 == 0:
            print(f"[{time.monotonic() - started:5.0f}s] {line}", flush=True)
            last_line = line
        if engines and all(e["status"] in ("loaded", "idle", "error") for e in engines.values()):
            failed = {n: e for n, e in engines.items() if e["status"] == "error"}
            for name, e in failed.items():
                print(f"\n{name} failed to load:\n{e['last_error']}", file=sys.stderr)
            print(f"""
unified-llm is up.
  API (OpenAI-compatible):  {base}/v1   (send "engine": "vllm" or "llamacpp")
  status:                   curl {base}/v1/status
  chat example:             curl {base}/v1/chat/completions -H 'Content-Type: application/json' \\
                              -d '{{"engine": "llamacpp", "messages": [{{"role": "user", "content": "Hi"}}]}}'
  processes:                .venv/bin/supervisorctl -c supervisord.conf status
  logs:                     run/logs/ (router.log, vllm.log, llamacpp.log)
  stop everything:          .venv/bin/supervisorctl -c supervisord.conf shutdown""")
            return 1 if failed else 0
        time.sleep(1)
    print(f"timed out after {args.timeout:.0f}s waiting for the engines; see run/logs/", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
