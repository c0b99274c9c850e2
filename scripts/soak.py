#!/usr/bin/env python3
"""Soak the router on loopback: concurrent streaming and non-streaming clients on both engines for a set time,
with model swaps, an unload, a config reload and one engine restart interleaved. Every outcome is counted by
kind; an error is "explained" only when it hit the engine a lifecycle operation was disturbing at that moment
and is one the router documents for it (503 while no model is loaded, an upstream error when the engine is cut).
The router's RSS, open FDs and asyncio tasks (its unified_router_* gauges) are sampled every few seconds.

    .venv/bin/python scripts/soak.py --seconds 60 --streams 16            # short: CI runs this size
    .venv/bin/python scripts/soak.py --seconds 600 --streams 64 --report soak.json

Exits 1 on any unexplained error, a stream that ended without [DONE] or an error event, or RSS/FD/task growth
beyond the bounds once the load has stopped (see docs/reliability.md); 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import aiohttp

PROJECT = Path(__file__).resolve().parent.parent
ROUTER_GAUGES = {"unified_router_memory_rss_bytes": "rss_bytes", "unified_router_open_fds": "fds",
                 "unified_router_asyncio_tasks": "tasks"}
# What the router documents for a request that meets an engine being swapped, unloaded or restarted
# (and 503 upstream_error: the engine's port refused the connection, mid-restart; 503 unavailable_error:
# llama-server's own "Loading model", passed through when a request reaches the restarted engine before the
# router has seen the restart: supervisord's events now tell it within milliseconds, before the new process can
# listen, so this is left for a request resent across the restart)
EXPLAINABLE = {"http_503:engine_unavailable", "http_503:upstream_error", "http_502:upstream_error",
               "http_503:unavailable_error", "stream_error:upstream_error", "stream_error:engine_unavailable"}
GRACE_SECONDS = 3.0  # after the engine is back, in-flight answers of the disturbed engine may still fail
MAX_SECONDS = 3600
MAX_STREAMS = 256


@dataclass
class Outcome:
    engine: str
    kind: str  # "ok", "http_<status>:<error type>", "stream_error:<type>", "stream_truncated", "client_timeout"...
    started: float
    ended: float


@dataclass
class Disturbance:
    """A lifecycle operation on one engine, from its start until the engine serves again."""
    engine: str
    operation: str
    started: float
    ended: float = float("inf")
    result: str = "running"


@dataclass
class Soak:
    url: str
    streams: int
    seconds: float
    max_requests: int
    max_tokens: int
    engines: list[str]
    lifecycle_engine: str | None
    restart_command: list[str] | None
    sample_seconds: float
    outcomes: list[Outcome] = field(default_factory=list)
    disturbances: list[Disturbance] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    deadline: float = 0.0
    started: float = 0.0
    sample_errors: Counter = field(default_factory=Counter)

    # --- clients -------------------------------------------------------------------------------------------
    def body(self, number: int) -> tuple[str, str, dict]:
        engine = self.engines[number % len(self.engines)]
        stream = (number // len(self.engines)) % 2 == 0
        chat = (number // (2 * len(self.engines))) % 2 == 0
        body = {"engine": engine, "max_tokens": self.max_tokens, "stream": stream, "ignore_eos": True}
        if chat:
            body["messages"] = [{"role": "user", "content": f"soak request {number}"}]
        else:
            body["prompt"] = f"soak request {number}:"
        return engine, "/v1/chat/completions" if chat else "/v1/completions", body

    def requests_left(self) -> bool:
        return time.monotonic() < self.deadline and len(self.outcomes) < self.max_requests

    async def client(self, http: aiohttp.ClientSession, index: int) -> None:
        number = index
        while self.requests_left():
            engine, path, body = self.body(number)
            number += self.streams
            started = time.monotonic()
            kind = await self.one_request(http, path, body)
            self.outcomes.append(Outcome(engine, kind, started, time.monotonic()))
            if kind != "ok":
                await asyncio.sleep(0.2)  # an engine without a model answers at once: do not spin on it

    async def one_request(self, http: aiohttp.ClientSession, path: str, body: dict) -> str:
        try:
            async with http.post(self.url + path, json=body) as resp:
                if resp.status != 200:
                    return f"http_{resp.status}:{error_type(await resp.read())}"
                if not body["stream"]:
                    answer = await resp.json()
                    return "ok" if answer.get("choices") else "ok_without_choices"
                return await stream_outcome(resp)
        except asyncio.TimeoutError:
            return "client_timeout"  # the router left a client hanging
        except aiohttp.ClientError as exc:
            return f"connection_error:{type(exc).__name__}"

    # --- lifecycle -----------------------------------------------------------------------------------------
    async def lifecycle(self, http: aiohttp.ClientSession) -> None:
        """Swap, swap back, unload and load, reload the config; one restart in the middle of the run."""
        engine = self.lifecycle_engine
        if engine is None:
            return
        home_model = (await self.get(http, "/v1/status"))[engine]["model"]
        catalog = (await self.get(http, "/v1/models"))["data"]
        other = next((m["id"] for m in catalog if m["engine"] == engine and m["id"] != home_model), home_model)
        restart_at = time.monotonic() + self.seconds / 2
        steps = [("unload", None), ("load", home_model), ("reload", None), ("load", other), ("load", home_model)]
        step = 0
        while time.monotonic() < self.deadline - 10:
            await asyncio.sleep(min(3.0, max(0.0, self.deadline - 10 - time.monotonic())))
            if time.monotonic() >= self.deadline - 10:
                break
            loaded = (await self.get(http, "/v1/status"))[engine]["status"] == "loaded"
            if self.restart_command and restart_at and time.monotonic() >= restart_at and loaded:
                # (a restart of an unloaded engine would only show its launcher refusing to start)
                restart_at = 0
                await self.disturb(http, engine, "restart", self.restart(http, engine))
                continue
            operation, model = steps[step % len(steps)]
            step += 1
            if operation == "load":
                await self.disturb(http, engine, f"load {model}", self.post(
                    http, "/v1/models/load", {"engine": engine, "model_path": model}))
            elif operation == "unload":
                await self.disturb(http, engine, "unload", self.post(http, "/v1/models/unload", {"engine": engine}))
            else:  # an unchanged models.yaml: restarts nothing, so it disturbs nothing
                self.disturbances.append(Disturbance("router", "config reload", time.monotonic(), time.monotonic()))
                result = await self.post(http, "/v1/config/reload", None)
                self.disturbances[-1].result = result
        if home_model:  # leave the engine as it was found (a no-op when that model is loaded)
            await self.disturb(http, engine, f"load {home_model}", self.post(
                http, "/v1/models/load", {"engine": engine, "model_path": home_model}))

    async def disturb(self, http: aiohttp.ClientSession, engine: str, operation: str, action) -> None:
        disturbance = Disturbance(engine, operation, time.monotonic())
        self.disturbances.append(disturbance)
        old_pid = (await self.get(http, "/v1/status"))[engine]["pid"]
        try:
            disturbance.result = await action
            if operation != "unload":
                await self.wait_loaded(http, engine, old_pid if operation == "restart" else None)
        except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError) as exc:
            disturbance.result = f"failed: {exc!r}"
        disturbance.ended = time.monotonic() + GRACE_SECONDS
        if operation == "unload":  # requests meet "no model" until the next load ends
            disturbance.ended = float("inf")
        else:
            for earlier in self.disturbances:
                if earlier.engine == engine and earlier.ended == float("inf"):
                    earlier.ended = disturbance.ended

    async def restart(self, http: aiohttp.ClientSession, engine: str) -> str:
        process = await asyncio.create_subprocess_exec(*self.restart_command, engine, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.STDOUT)
        out, _ = await process.communicate()
        return "ok" if process.returncode == 0 else f"exit {process.returncode}: {out.decode(errors='replace')[:200]}"

    async def wait_loaded(self, http: aiohttp.ClientSession, engine: str, old_pid: int | None = None,
                          timeout: float = 120) -> None:
        """Until the engine serves again (after a restart: a new process, not the old one's stale state)."""
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            state = (await self.get(http, "/v1/status"))[engine]
            if state["status"] == "loaded" and (old_pid is None or state["pid"] not in (None, old_pid)):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{engine} was not loaded again within {timeout:.0f} s")

    async def get(self, http: aiohttp.ClientSession, path: str) -> dict:
        async with http.get(self.url + path) as resp:
            return await resp.json()

    async def post(self, http: aiohttp.ClientSession, path: str, body: dict | None) -> str:
        async with http.post(self.url + path, json=body) as resp:
            return "ok" if resp.status == 200 else f"http_{resp.status}:{(await resp.read())[:200]!r}"

    # --- sampling ------------------------------------------------------------------------------------------
    async def sample(self, phase: str) -> dict:
        """The router's gauges, read on a connection of its own (closed after), so the soak's idle keep-alive
        connections are not counted as the router's."""
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                         timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.get(self.url + "/metrics") as resp:
                text = await resp.text()
        sample = {"t": round(time.monotonic() - self.started, 1), "phase": phase}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in ROUTER_GAUGES:
                sample[ROUTER_GAUGES[name]] = float(value)
        self.samples.append(sample)
        return sample

    async def sampler(self) -> None:
        while time.monotonic() < self.deadline:
            await asyncio.sleep(self.sample_seconds)
            try:
                await self.sample("load")
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self.sample_errors[type(exc).__name__] += 1

    async def settle(self, baseline: dict, timeout: float = 30) -> dict:
        """After the load: wait (bounded) for FDs and tasks to come back to the idle baseline; a leak never does.
        Pooled keep-alive connections to the engines close within seconds. The bounds are judged on the result."""
        give_up = time.monotonic() + timeout
        while True:
            sample = await self.sample("idle after")
            if sample["fds"] <= baseline["fds"] and sample["tasks"] <= baseline["tasks"] or time.monotonic() > give_up:
                return sample
            await asyncio.sleep(1)

    # --- the run -------------------------------------------------------------------------------------------
    async def run(self, fd_bound: int, task_bound: int, rss_bound_mib: float) -> dict:
        timeout = aiohttp.ClientTimeout(total=300, sock_read=120)  # no answer for minutes is a hang
        self.started = time.monotonic()
        before = await self.sample("idle before")
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
            self.deadline = time.monotonic() + self.seconds
            workers = [asyncio.create_task(self.client(http, i)) for i in range(self.streams)]
            background = [asyncio.create_task(self.sampler()), asyncio.create_task(self.lifecycle(http))]
            await asyncio.gather(*workers)
            await asyncio.gather(*background)
        await asyncio.sleep(1)
        after = await self.settle(before)
        return self.report(before, after, fd_bound, task_bound, rss_bound_mib)

    def explained(self, outcome: Outcome) -> bool:
        if outcome.kind not in EXPLAINABLE:
            return False
        return any(d.engine == outcome.engine and outcome.ended >= d.started and outcome.started <= d.ended
                   for d in self.disturbances)

    def report(self, before: dict, after: dict, fd_bound: int, task_bound: int, rss_bound_mib: float) -> dict:
        kinds = Counter(o.kind for o in self.outcomes)
        errors = [o for o in self.outcomes if o.kind != "ok"]
        explained = Counter(o.kind for o in errors if self.explained(o))
        unexplained = Counter(o.kind for o in errors if not self.explained(o))
        failed_ops = [f"{d.operation}: {d.result}" for d in self.disturbances if d.result != "ok"]
        under_load = [s for s in self.samples if s["phase"] == "load"]
        warm = under_load[len(under_load) // 4] if under_load else before  # after a quarter of the run
        problems = [f"{n} unexplained {kind}" for kind, n in unexplained.items()] + failed_ops
        problems += [f"{n} failed /metrics samples ({kind})" for kind, n in self.sample_errors.items()]
        if after["fds"] > before["fds"] + fd_bound:
            problems.append(f"open FDs {before['fds']:.0f} before, {after['fds']:.0f} after (bound +{fd_bound})")
        if after["tasks"] > before["tasks"] + task_bound:
            problems.append(f"asyncio tasks {before['tasks']:.0f} before, {after['tasks']:.0f} after "
                            f"(bound +{task_bound})")
        rss_growth = (after["rss_bytes"] - warm["rss_bytes"]) / 2**20
        if rss_growth > rss_bound_mib:
            problems.append(f"RSS grew {rss_growth:.1f} MiB after warm-up (bound {rss_bound_mib} MiB)")
        return {
            "seconds": self.seconds, "streams": self.streams, "requests": len(self.outcomes),
            "by_engine": dict(Counter(o.engine for o in self.outcomes)),
            "outcomes": dict(kinds), "explained_errors": dict(explained), "unexplained_errors": dict(unexplained),
            "errors": [{"engine": o.engine, "kind": o.kind, "explained": self.explained(o),
                        "at_seconds": round(o.started - self.started, 1),
                        "took_seconds": round(o.ended - o.started, 2)} for o in errors[:500]],
            "lifecycle": [{"engine": d.engine, "operation": d.operation, "result": d.result,
                           "at_seconds": round(d.started - self.started, 1)} for d in self.disturbances],
            "router": {"before": before, "warm": warm, "after": after, "peak_fds": max(s["fds"] for s in self.samples),
                       "peak_rss_bytes": max(s["rss_bytes"] for s in self.samples),
                       "peak_tasks": max(s["tasks"] for s in self.samples)},
            "samples": self.samples, "problems": problems,
        }


async def stream_outcome(resp: aiohttp.ClientResponse) -> str:
    """ok when the stream ended with [DONE]; stream_error:<type> when it carried an error event; otherwise the
    client was left with a stream cut short without being told."""
    error = None
    async for raw in resp.content:
        line = raw.strip()
        if line == b"data: [DONE]":
            return f"stream_error:{error}" if error else "ok"
        if line.startswith(b"data: {") and b'"error"' in line:
            error = error_type(line[len(b"data: "):])
    return f"stream_error:{error}" if error else "stream_truncated"


def error_type(raw: bytes) -> str:
    try:
        return json.loads(raw)["error"]["type"] or "null"
    except (ValueError, KeyError, TypeError):
        return "not_openai_shaped"


def loopback_only(url: str) -> str:
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"soak: {url} is not a loopback address; this tool only loads a router on this machine")
    return url.rstrip("/")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the router (loopback only)")
    p.add_argument("--seconds", type=float, default=60, help=f"how long the clients run (at most {MAX_SECONDS})")
    p.add_argument("--streams", type=int, default=16, help=f"concurrent clients (at most {MAX_STREAMS})")
    p.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--engines", default="vllm,llamacpp", help="engines the clients use, round robin")
    p.add_argument("--lifecycle-engine", default="llamacpp",
                   help="the engine that is swapped, unloaded and restarted ('none': no lifecycle operations)")
    p.add_argument("--supervisor-conf", default=str(PROJECT / "supervisord.conf"),
                   help="supervisord.conf of the running stack, for the one `supervisorctl restart`")
    p.add_argument("--no-restart", action="store_true", help="skip the engine restart")
    p.add_argument("--sample-seconds", type=float, default=3)
    p.add_argument("--fd-bound", type=int, default=16, help="open FDs may end this many above the start")
    p.add_argument("--task-bound", type=int, default=4, help="asyncio tasks may end this many above the start")
    p.add_argument("--rss-bound-mib", type=float, default=64, help="RSS may grow this much after warm-up")
    p.add_argument("--report", type=Path, help="write the full report (with every sample) as JSON here")
    args = p.parse_args(argv)
    if not (0 < args.seconds <= MAX_SECONDS and 0 < args.streams <= MAX_STREAMS and args.max_requests > 0):
        p.error(f"--seconds must be in (0, {MAX_SECONDS}], --streams in [1, {MAX_STREAMS}], --max-requests > 0")
    args.url = loopback_only(args.url)
    return args


def summary(report: dict) -> str:
    r = report["router"]
    lines = [f"soak: {report['requests']} requests in {report['seconds']:.0f} s at {report['streams']} streams "
             f"({', '.join(f'{e} {n}' for e, n in report['by_engine'].items())})",
             f"  outcomes: {report['outcomes']}",
             f"  explained errors (during a lifecycle operation): {report['explained_errors'] or 0}",
             f"  unexplained errors: {report['unexplained_errors'] or 0}",
             "  lifecycle: " + ", ".join(f"{d['operation']} at {d['at_seconds']} s: {d['result']}"
                                         for d in report["lifecycle"])]
    for key, label, scale in (("rss_bytes", "RSS MiB", 2**20), ("fds", "open FDs", 1), ("tasks", "asyncio tasks", 1)):
        lines.append(f"  router {label}: before {r['before'][key] / scale:.1f}, warm {r['warm'][key] / scale:.1f}, "
                     f"after {r['after'][key] / scale:.1f}")
    lines.append("  PASS" if not report["problems"] else "  FAIL: " + "; ".join(report["problems"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lifecycle_engine = None if args.lifecycle_engine == "none" else args.lifecycle_engine
    restart = None if args.no_restart else [sys.executable, "-m", "supervisor.supervisorctl", "-c",
                                            args.supervisor_conf, "restart"]
    soak = Soak(url=args.url, streams=args.streams, seconds=args.seconds, max_requests=args.max_requests,
                max_tokens=args.max_tokens, engines=args.engines.split(","), lifecycle_engine=lifecycle_engine,
                restart_command=restart, sample_seconds=args.sample_seconds)
    report = asyncio.run(soak.run(args.fd_bound, args.task_bound, args.rss_bound_mib))
    if args.report:
        args.report.write_text(json.dumps(report, indent=1))
    print(summary(report))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
