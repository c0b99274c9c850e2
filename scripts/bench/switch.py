"""What a model switch costs: from POST /v1/models/load to the first token of the new model through the router,
against the engine's own cold start measured directly: the same argv and environment the router's launch plan
holds (run/engines/<engine>.json), on a free port, started by us, timed to its first token. vLLM's start-up
phases are read from its log."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from engines.registry import ADAPTERS

POLL_S = 0.05
# vLLM's start-up, phase by phase: each ends at the first log line that contains its text (the log's clock has
# whole seconds, so phases are good to about a second).
VLLM_MILESTONES = (
    ("imports, arguments", "non-default args"),
    ("model config, engine process", "Initializing a V1 LLM engine"),
    ("worker process", "Starting to load model"),
    ("weights", "Warming up model for the compilation"),
    ("torch.compile warm-up", "Warming up done"),
    ("KV cache, API server", "Starting vLLM server on"),
)
LOG_TIME = re.compile(r"(?:INFO|WARNING|DEBUG|ERROR) (\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Start:
    """One cold start to the first token (seconds from the start request)."""
    how: str  # "router: a → b" or "direct"
    ready_s: float | None = None  # the load answer (router) or the first 200 on the ready paths (direct)
    first_token_s: float | None = None
    phases: dict[str, float] = field(default_factory=dict)  # vLLM's own timing lines
    error: str | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vllm_phases(log: str, started: float) -> dict[str, float]:
    """{phase: seconds} from vLLM's log, the first phase counted from `started` (time.time() at the spawn)."""
    clock = time.localtime(started)
    times = {}
    for line in ANSI.sub("", log).splitlines():
        stamp = LOG_TIME.search(line)
        for _, text in VLLM_MILESTONES:
            if stamp and text not in times and text in line:
                month, day, hour, minute, second = map(int, stamp.groups())
                times[text] = time.mktime((clock.tm_year, month, day, hour, minute, second, 0, 0, -1))
    phases, previous = {}, started
    for name, text in VLLM_MILESTONES:
        if text in times:
            phases[name] = max(0.0, times[text] - previous)
            previous = times[text]
    return phases


def with_port(argv: list[str], port: int) -> list[str]:
    """The plan's command line, serving on `port` instead."""
    out = list(argv)
    at = out.index("--port")
    out[at + 1] = str(port)
    return out


def first_token(base_url: str, model: str, extra: dict | None = None, timeout: float = 120) -> float:
    """Stream a 1-token completion; the perf_counter() at its first text chunk."""
    body = json.dumps({"model": model, "prompt": "Hi", "max_tokens": 1, "temperature": 0, "stream": True,
                       **(extra or {})}).encode()
    request = urllib.request.Request(f"{base_url}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        for line in resp:
            if line.startswith(b"data: {") and b'"text"' in line:
                return time.perf_counter()
    raise RuntimeError("the stream ended without text")


def ready(base_url: str, paths: tuple[str, ...]) -> bool:
    for path in paths:
        try:
            with urllib.request.urlopen(base_url + path, timeout=2) as resp:
                if resp.status != 200:
                    return False
        except (urllib.error.URLError, OSError):
            return False
    return True


def direct_start(engine: str, plan: dict, log_path: Path, timeout: float, env: dict[str, str] | None = None
                 ) -> Start:
    """Start the plan's argv ourselves on a free port; time readiness and the first token; stop it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    result = Start("direct")
    with log_path.open("wb") as log:
        started, started_wall = time.perf_counter(), time.time()
        proc = subprocess.Popen(with_port(plan["argv"], port), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **plan["env"], **(env or {})}, start_new_session=True)
        try:
            deadline = started + timeout
            while not ready(base, ADAPTERS[engine].READY_PATHS):
                if proc.poll() is not None:
                    raise RuntimeError(f"exited with {proc.returncode}")
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"not ready after {timeout:.0f} s")
                time.sleep(POLL_S)
            result.ready_s = time.perf_counter() - started
            result.first_token_s = first_token(base, plan["spec"]["served_name"]) - started
        except (RuntimeError, TimeoutError, OSError) as exc:
            result.error = f"{exc}; see {log_path}"
        finally:
            stopping = time.perf_counter()
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            stop_s = time.perf_counter() - stopping
    if engine == "vllm":
        result.phases = vllm_phases(log_path.read_text(errors="replace"), started_wall)
    result.phases["stopping it afterwards (SIGTERM to exit)"] = stop_s  # what a switch adds before the start
    return result


def routed_switch(router_url: str, engine: str, model: str, old: str, timeout: float) -> Start:
    """POST /v1/models/load, then at once a 1-token stream through the router: seconds to each."""
    result = Start(f"router: {old} → {model}")
    body = json.dumps({"engine": engine, "model_path": model}).encode()
    request = urllib.request.Request(f"{router_url}/v1/models/load", data=body,
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            answer = json.load(resp)
        result.ready_s = time.perf_counter() - started
        served = answer["model"]
        result.first_token_s = first_token(router_url, served, {"engine": engine}) - started
        with urllib.request.urlopen(f"{router_url}/v1/status", timeout=30) as resp:
            phases = json.load(resp)[engine].get("load_phases") or {}
        # the router's own account of the load (/v1/status load_phases), its long names cut at " ("
        result.phases = {name.split(" (")[0]: seconds for name, seconds in phases.items()}
    except (urllib.error.URLError, OSError, RuntimeError, KeyError) as exc:
        result.error = str(exc)
    return result


def resident_switch(router_url: str, engine: str, model: str, old: str, repeats: int = 5) -> Start:
    """Both models resident (max_instances ≥ 2): a request for `model` right after one for `old`, seconds to its
    first token (the median of `repeats`); nothing loads or restarts."""
    result = Start(f"router: {old} → {model}, both resident")
    try:
        times = []
        for _ in range(repeats):
            first_token(router_url, old, {"engine": engine})  # `old` served last
            started = time.perf_counter()
            times.append(first_token(router_url, model, {"engine": engine}) - started)
        result.ready_s, result.first_token_s = 0.0, statistics.median(times)
        result.phases = {"slowest": max(times)}
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        result.error = str(exc)
    return result


def seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def rows(engine: str, starts: list[Start]) -> list[list]:
    """Table rows: engine, how, ready s, first token s, the phases (or the error)."""
    out = []
    for s in starts:
        notes = s.error or "; ".join(f"{k} {seconds(v)}" for k, v in s.phases.items())
        out.append([engine, s.how, s.ready_s, s.first_token_s, notes])
    return out
