"""What a proxy costs: the same streamed workload sent to an engine directly, through the router and through
other proxies (LiteLLM), alternating target by target so all see the same machine state; then the rows of the
side-by-side table, ratios to direct included."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil

from bench import client, stats

PROMPT = "Once upon a time"


@dataclass
class Target:
    name: str  # direct, router, litellm
    endpoint: client.Endpoint
    pid: int | None = None  # the proxy whose CPU time and memory are charged to it (none for direct)


@dataclass
class Level:
    """One target at one concurrency, over all repeats."""
    rates: list[float] = field(default_factory=list)  # streamed tokens/s of all clients together, per repeat
    ttfts_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: list[str] = field(default_factory=list)
    cpu_s: float | None = None  # CPU time the target's proxy process tree spent in these runs (None: no proxy)

    @property
    def rate(self) -> float | None:
        return stats.median(self.rates)

    @property
    def cpu_us_per_token(self) -> float | None:
        return self.cpu_s / self.tokens * 1e6 if self.tokens and self.cpu_s is not None else None


def tree(pid: int | None) -> list[psutil.Process]:
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(pid: int | None) -> float:
    total = 0.0
    for proc in tree(pid):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of a process and its children (MiB); None when it is gone or unknown."""
    total = 0
    for proc in tree(pid):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20 if total else None


def peak_rss_mib(pid: int | None) -> float | None:
    """The largest resident memory each process of the tree has had since it started (Linux's VmHWM), summed
    (MiB); None where it cannot be read."""
    total = 0
    for proc in tree(pid):
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return total / 2**20 if total else None


async def run_level(target: Target, streams: int, rounds: int, max_tokens: int, level: Level,
                    timeout_s: float = 600) -> str:
    """`streams` concurrent clients, each sending `rounds` streamed requests one after another. A line that
    says how the turn went."""
    cpu_before = cpu_seconds(target.pid)
    async with client.session(timeout_s) as session:
        async def one_client() -> list[client.StreamResult]:
            return [await client.stream(session, target.endpoint, PROMPT, max_tokens) for _ in range(rounds)]

        started = time.perf_counter()
        results = [r for batch in await asyncio.gather(*(one_client() for _ in range(streams))) for r in batch]
        elapsed = time.perf_counter() - started
    if target.pid is not None:
        level.cpu_s = (level.cpu_s or 0.0) + cpu_seconds(target.pid) - cpu_before
    tokens = sum(r.completion_tokens for r in results if r.ok)
    errors = [r.error for r in results if r.error]
    level.tokens += tokens
    level.rates.append(tokens / elapsed)
    level.ttfts_ms += [r.ttft_s * 1000 for r in results if r.ok and r.ttft_s is not None]
    level.errors += errors
    return (f"{streams} streams, {target.name}: {tokens:,} tokens in {elapsed:.1f} s ({tokens / elapsed:,.0f} tok/s)"
            + (f", {len(errors)} errors (first: {errors[0]})" if errors else ""))


def rotated(items: Sequence, n: int) -> list:
    """The turn order of repeat n: each target follows each other one in turn, so none always runs right
    after the same neighbour."""
    n %= len(items) or 1
    return [*items[n:], *items[:n]]


async def settle(pids: Sequence[int], quiet_cpu: float = 0.05, window_s: float = 0.5, limit_s: float = 30) -> float:
    """Wait until the proxies have finished work left over from the last turn (LiteLLM logs and accounts for
    requests after answering them): until their processes use less than `quiet_cpu` of a core over a
    `window_s`, for at most `limit_s`. The seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = sum(cpu_seconds(pid) for pid in pids)
        await asyncio.sleep(window_s)
        if sum(cpu_seconds(pid) for pid in pids) - before < quiet_cpu * window_s:
            break
    return time.monotonic() - started


async def measure(targets: Sequence[Target], levels: Sequence[int], repeats: int, rounds: int,
                  max_tokens: int, say=print, deadline: float | None = None) -> dict[int, dict[str, Level]]:
    """{streams: {target name: Level}}, each level measured `repeats` times, targets taking turns (in a rotated
    order each repeat), each turn starting once the proxies are quiet. Past `deadline` (time.monotonic()) no
    turn starts: what was measured is returned, and the levels not reached are missing."""
    for target in targets:  # warm-up: connections, the engine's first batch
        await run_level(target, 1, 1, max_tokens, Level())
    out = {}
    pids = [t.pid for t in targets if t.pid is not None]
    for streams in levels:
        for repeat in range(repeats):
            for target in rotated(targets, repeat):
                if deadline is not None and time.monotonic() > deadline:
                    say(f"  time limit reached: stopped before {streams} streams, repeat {repeat + 1}", flush=True)
                    return out
                waited = await settle(pids)
                line = await run_level(target, streams, rounds, max_tokens,
                                       out.setdefault(streams, {t.name: Level() for t in targets})[target.name])
                say(f"    {line}" + (f" (after {waited:.1f} s waiting for the proxies to go quiet)"
                                     if waited > 2 else ""), flush=True)
        say("  " + ", ".join(f"{name} {lv.rate or 0:,.0f} tok/s" for name, lv in out[streams].items())
            + f" at {streams} streams", flush=True)
    return out


async def latencies(targets: Sequence[Target], count: int) -> dict[str, list[float]]:
    """Milliseconds per sequential non-streaming 1-token request, sent to each target in turn."""
    out: dict[str, list[float]] = {t.name: [] for t in targets}
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            for target in targets:
                url, headers = target.endpoint.url, target.endpoint.headers
                body = {**target.endpoint.body("Hi", 1), "stream": False, "temperature": 0, "top_p": 1}
                body.pop("stream_options", None)
                started = time.perf_counter()
                for attempt in range(3):  # a pooled connection llama-server closed: sent again, not timed apart
                    try:
                        async with session.post(url, json=body, headers=headers) as resp:
                            await resp.read()
                            resp.raise_for_status()
                        break
                    except client.RESENDABLE:
                        if attempt == 2:
                            raise
                out[target.name].append((time.perf_counter() - started) * 1000)
    return out


def digits(header: list[str]) -> list[int]:
    """Decimals per column of the tables below: ratios 2, milliseconds 1, rates and the rest 0."""
    return [2 if "ratio" in h else 1 if h.endswith(" ms") else 0 for h in header]


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def throughput_rows(engine: str, model: str, measured: dict[int, dict[str, Level]], proxies: Sequence[str]
                    ) -> tuple[list[str], list[list]]:
    """The side-by-side table: per concurrency, direct tok/s, then each proxy's tok/s and ratio to direct,
    TTFT p50 of every target, each proxy's CPU µs per relayed token, and errors."""
    names = ["direct", *proxies]
    header = ["engine", "model", "streams", "direct tok/s"]
    for p in proxies:
        header += [f"{p} tok/s", f"{p} ratio"]
    header += [f"{n} TTFT p50 ms" for n in names]
    header += [f"{p} CPU µs/token" for p in proxies] + ["errors " + "/".join(n[0] for n in names)]
    rows = []
    for streams, by_target in sorted(measured.items()):
        direct = by_target["direct"].rate
        row = [engine, model, streams, direct]
        for p in proxies:
            row += [by_target[p].rate, ratio(by_target[p].rate, direct)]
        row += [stats.percentile(by_target[n].ttfts_ms, 50) for n in names]
        row += [by_target[p].cpu_us_per_token for p in proxies]
        row.append("/".join(str(len(by_target[n].errors)) for n in names))
        rows.append(row)
    return header, rows


def latency_rows(engine: str, lat: dict[str, list[float]]) -> tuple[list[str], list[list]]:
    """p50 and p99 of each target, and what each proxy adds to direct at p50."""
    proxies = [n for n in lat if n != "direct"]
    header = ["engine", *[f"{n} p50 ms" for n in lat], *[f"{n} p99 ms" for n in lat],
              *[f"{p} adds p50 ms" for p in proxies]]
    p50 = {n: stats.percentile(v, 50) for n, v in lat.items()}
    p99 = {n: stats.percentile(v, 99) for n, v in lat.items()}
    added = [p50[p] - p50["direct"] if p50[p] is not None and p50["direct"] is not None else None for p in proxies]
    return header, [[engine, *p50.values(), *p99.values(), *added]]
