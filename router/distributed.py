"""What /v1/status says about a model that spans boxes (docs/distributed.md): llama.cpp's rpc workers and whether
each answers; vLLM's ranks and nodes. The router talks only to the head; this only looks.

Whether an rpc worker answers: ggml-rpc-server serves one client at a time and its listen backlog is 1, so a
probe connection to a worker that the head's llama-server is using would wait in that backlog (and a few of them
would fill it). A worker the engine holds an established connection to therefore counts as answering without a
probe; any other is probed with a TCP connect, which the server accepts, reads as a hang-up and forgets.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import psutil

from engines.registry import ADAPTERS
from engines.spec import ModelSpec
from router.engine_state import State

PROBE_SECONDS = 1.0


def _held_endpoints(pid: int | None) -> set[tuple[str, int]]:
    """(address, port) of the engine process's established TCP connections."""
    if not pid:
        return set()
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return set()
    return {(c.raddr.ip, c.raddr.port) for c in connections if c.raddr and c.status == psutil.CONN_ESTABLISHED}


async def _connects(host: str, port: int) -> str | None:
    """None when a TCP connection opens, else why not."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_SECONDS)
    except (OSError, asyncio.TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None


async def _resolved(host: str) -> set[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None)
    except OSError:
        return {host}
    return {info[4][0] for info in infos} | {host}


async def rpc_workers(endpoints: list[str], pid: int | None) -> list[dict]:
    held = await asyncio.to_thread(_held_endpoints, pid)

    async def one(endpoint: str) -> dict:
        host, _, port = endpoint.rpartition(":")
        host = host.strip("[]")
        if any((address, int(port)) in held for address in await _resolved(host)):
            return {"address": endpoint, "answers": True, "how": "the engine holds a connection to it"}
        problem = await _connects(host, int(port))
        return {"address": endpoint, "answers": problem is None,
                "how": "a TCP connection opened" if problem is None else f"no connection: {problem}"}
    return list(await asyncio.gather(*(one(endpoint) for endpoint in endpoints)))


async def report(spec: ModelSpec | None, pid: int | None, recent_log: Callable[[], Awaitable[str]] | None = None
                 ) -> dict | None:
    """The `distributed` entry of an instance in /v1/status (its adapter's, with each rpc worker checked), None
    for a model on this box alone. `recent_log` while it loads: its `waiting_for` (the other boxes to join)."""
    adapter = ADAPTERS[spec.engine] if spec else None
    found = adapter.distributed(spec) if adapter else None
    if not found:
        return None
    if found.get("rpc_workers"):
        found["rpc_workers"] = await rpc_workers(found["rpc_workers"], pid)
    found["waiting_for"] = adapter.waiting_on(spec, await recent_log()) if recent_log else None
    return found


async def add_to_status(engines: dict, reports: dict, for_admin: bool) -> None:
    """Add `distributed` to each engine's entry in /v1/status and to each of its instances. Not `for_admin`
    (keys are set, and the reader has no admin key): the boxes' addresses are left out, as model paths are."""
    for name, group in engines.items():
        found = {}
        for instance in group.shown():
            process = instance.details.process
            loading = instance.state is State.LOADING
            found[instance.name] = found_report = await report(instance.details.spec, process.pid if process else None,
                                                               instance.proc.recent_log if loading else None)
            if found_report and not for_admin:
                _without_addresses(found_report)
        entry = reports[name]
        entry["distributed"] = found.get(entry.get("instance"))
        for item in entry.get("instances", []):
            item["distributed"] = found.get(item.get("name"))


async def rpc_worker_answers(engines: dict) -> dict[tuple[str, str], bool]:
    """(engine instance, worker's place in the rpc list) → whether it answers, for each rpc worker of a model an
    engine holds (loaded, or in error since one went away), for the metrics."""
    found: dict[tuple[str, str], bool] = {}
    for group in engines.values():
        for instance in group.instances:
            process = instance.details.process
            if instance.state in (State.IDLE, State.STOPPING):
                continue
            entry = await report(instance.details.spec, process.pid if process else None) or {}
            found |= {(instance.name, str(index)): w["answers"] for index, w in enumerate(entry.get("rpc_workers", []))}
    return found


def _without_addresses(found: dict) -> None:
    for index, worker in enumerate(found.get("rpc_workers", [])):
        worker["address"] = f"worker {index}"
        worker["how"] = None
    for key in ("master_addr", "ray_address"):
        if found.get(key):
            if found.get("waiting_for"):
                found["waiting_for"] = found["waiting_for"].replace(found[key], "(admin only)")
            found[key] = "(admin only)"
