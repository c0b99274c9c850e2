#!/usr/bin/env python3
"""What the router costs: the same workload sent straight to each engine's internal port and through the
router, in one run, alternating so both see the same machine state.

Prints, per engine: streamed tokens/s at each concurrency (direct, router, ratio), the CPU time the router
process spent per relayed token (what it takes from an engine that shares its cores), and the latency a
non-streaming 1-token request gains through the router (p50/p99). Needs a running stack (scripts/up.sh).

  .venv/bin/python scripts/bench_router.py --streams 1 64 --tokens 256 --output docs/performance.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from collections import Counter

import aiohttp
import psutil


# llama-server's cpp-httplib closes a kept-alive connection after a stream; the next request on it fails
# before any byte is sent back. Clients (and the router) send such a request again; so does the benchmark,
# for both targets, so that direct and routed runs do the same work.
RESENDABLE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


async def post(session: aiohttp.ClientSession, url: str, body: dict, stats: dict) -> aiohttp.ClientResponse:
    for attempt in range(3):
        try:
            return await session.post(url, json=body)
        except RESENDABLE:
            if attempt == 2:
                raise
            stats["resent"] += 1
    raise AssertionError("unreachable")


async def one_stream(session: aiohttp.ClientSession, url: str, body: dict, stats: dict) -> int:
    """Stream one completion; return the completion tokens the engine reported (or chunks seen)."""
    chunks, usage = 0, None
    async with await post(session, url, body, stats) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]["completion_tokens"]
            if event.get("choices"):
                chunks += 1
    return usage if usage is not None else chunks


async def throughput(url: str, body: dict, streams: int, rounds: int, stats: dict) -> float:
    """Total streamed tokens/s with `streams` concurrent clients, each sending `rounds` requests."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def client() -> int:
            total = 0
            for _ in range(rounds):
                try:
                    total += await one_stream(session, url, body, stats)
                except aiohttp.ClientError:
                    stats["errors"] += 1
            return total

        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(client() for _ in range(streams))))
        stats["tokens"] += tokens
        return tokens / (time.perf_counter() - started)


async def latencies(targets: dict[str, tuple[str, dict]], count: int) -> dict[str, list[float]]:
    """Milliseconds per sequential request, sent to each target in turn so drift hits all alike."""
    out, stats = {name: [] for name in targets}, Counter()
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            for name, (url, body) in targets.items():
                started = time.perf_counter()
                async with await post(session, url, body, stats) as resp:
                    await resp.read()
                    resp.raise_for_status()
                out[name].append((time.perf_counter() - started) * 1000)
    return out


def router_process(url: str) -> psutil.Process | None:
    """The process listening on the router's port, to charge it the CPU it spends relaying."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    except psutil.Error:
        pass
    return None


def cpu_seconds(proc: psutil.Process | None) -> float:
    if proc is None:
        return float("nan")
    times = proc.cpu_times()
    return times.user + times.system


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


async def bench_engine(router: str, engine: str, info: dict, args) -> list[str]:
    direct = f"http://127.0.0.1:{info['port']}/v1/completions"
    routed = f"{router}/v1/completions"
    # Every sampling field explicit, so the router adds no default that changes the engine's work
    # (top_p < 1 makes vLLM sort the vocabulary each step: a different workload, not router overhead).
    base = {"prompt": "Once upon a time", "max_tokens": args.tokens, "temperature": 0.7, "top_p": 0.95,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    targets = {"direct": (direct, {**base, "model": info["model"]}),
               "router": (routed, {**base, "engine": engine, "model": info["model"]})}
    await throughput(*targets["direct"], streams=1, rounds=2, stats=Counter())  # warm-up
    rows = []
    for streams in args.streams:
        rate = {"direct": [], "router": []}
        stats = {name: Counter() for name in targets}  # errors, resent, tokens
        router_cpu = 0.0
        for _ in range(args.repeats):  # alternate direct/router so drift hits both
            for name, (url, body) in targets.items():
                cpu_before = cpu_seconds(args.router_proc)
                rate[name].append(await throughput(url, body, streams, args.rounds, stats[name]))
                if name == "router":
                    router_cpu += cpu_seconds(args.router_proc) - cpu_before
        d, r = statistics.median(rate["direct"]), statistics.median(rate["router"])
        routed_tokens = stats["router"]["tokens"]
        per_token_us = router_cpu / routed_tokens * 1e6 if routed_tokens else float("nan")
        rows.append(f"| {engine} | {info['model']} | {streams} | {d:,.0f} | {r:,.0f} | {r / d:.3f} | "
                    f"{per_token_us:.1f} | {stats['direct']['errors']}/{stats['router']['errors']} | "
                    f"{stats['direct']['resent']}/{stats['router']['resent']} |")
        print(rows[-1], flush=True)
    one = {"prompt": "Hi", "max_tokens": 1, "temperature": 0, "top_p": 1, "stream": False, "model": info["model"]}
    lat = await latencies({"direct": (direct, one), "router": (routed, {**one, "engine": engine})},
                          args.latency_requests)
    lat_direct, lat_router = lat["direct"], lat["router"]
    lat = (f"| {engine} | {pct(lat_direct, 50):.2f} | {pct(lat_router, 50):.2f} | "
           f"{pct(lat_router, 50) - pct(lat_direct, 50):+.2f} | {pct(lat_direct, 99):.2f} | "
           f"{pct(lat_router, 99):.2f} | {pct(lat_router, 99) - pct(lat_direct, 99):+.2f} |")
    print(lat, flush=True)
    return rows + [lat]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--router", default="http://127.0.0.1:8080")
    parser.add_argument("--engines", nargs="+", default=["llamacpp", "vllm"])
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--tokens", type=int, default=256, help="max_tokens per request (ignore_eos)")
    parser.add_argument("--rounds", type=int, default=3, help="requests per client per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="alternating direct/router measurements")
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--output", help="append the tables to this markdown file")
    args = parser.parse_args()

    async with aiohttp.ClientSession() as session:
        async with session.get(args.router + "/v1/status") as resp:
            status = await resp.json()
    args.router_proc = router_process(args.router)
    tput_head = ["| engine | model | streams | direct tok/s | router tok/s | ratio | router CPU µs/token | "
                 "errors d/r | resent d/r |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lat_head = ["| engine | direct p50 ms | router p50 ms | added p50 | direct p99 ms | router p99 ms | added p99 |",
                "|---|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(tput_head))
    tput, lat = [], []
    for engine in args.engines:
        if status[engine]["status"] != "loaded":
            print(f"skipping {engine}: {status[engine]['status']}")
            continue
        rows = await bench_engine(args.router, engine, status[engine], args)
        tput += rows[:-1]
        lat.append(rows[-1])
    report = "\n".join([
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{__import__('os').cpu_count()} cores; {args.tokens} tokens per request, {args.rounds} requests per "
        f"client, median of {args.repeats} alternating runs.", "",
        *tput_head, *tput, "", "Non-streaming 1-token request, sequential:", "", *lat_head, *lat, ""])
    print("\n" + report)
    if args.output:
        with open(args.output, "a") as out:
            out.write(report + "\n")


if __name__ == "__main__":
    asyncio.run(main())
