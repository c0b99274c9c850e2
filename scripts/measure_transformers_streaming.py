#!/usr/bin/env python3
"""How the Transformers engine's streams arrive, per model kind: starts the server on one model folder, sends
greedy streamed completions and prints the text chunks, the time to the first and last, tokens/s and diffusion
steps. `scripts/measure_transformers_streaming.py MODEL_DIR [--max-tokens N] [--steps N] [-- SERVER ARGS]`."""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server exited with {proc.returncode}")


def measure(url: str, max_tokens: int, steps: int | None) -> dict:
    body = {"prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if steps:
        body["steps"] = steps
    request = urllib.request.Request(f"{url}/v1/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    started, times, usage, mode, steps_run = time.monotonic(), [], {}, None, None
    with urllib.request.urlopen(request) as response:
        mode = response.headers.get("X-Diffusion-Streaming", "token")
        for line in response:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["text"]:
                times.append(time.monotonic() - started)
            usage = chunk.get("usage") or usage
            steps_run = (chunk.get("diffusion") or {}).get("steps", steps_run)
    total = time.monotonic() - started
    return {"streaming": mode, "chunks": len(times), "first_s": times[0] if times else None, "total_s": total,
            "tokens": usage.get("completion_tokens"), "tok_per_s": (usage.get("completion_tokens") or 0) / total,
            "steps": steps_run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.server_args = argv[split + 1:]
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.Popen([sys.executable, "-m", "engines.transformers_server", "--model", str(args.model),
                             "--port", str(port), *args.server_args], cwd=PROJECT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        measure(url, args.max_tokens, args.steps)  # warm-up: the first run of a shape is several times slower
        for _ in range(args.runs):
            print(json.dumps({"model": args.model.name, **measure(url, args.max_tokens, args.steps)}))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
