"""One engine's process as supervisord runs it: start, stop its whole tree, readiness, failure reports.

Nothing here decides anything; the lifecycle (router/lifecycle.py) calls it and owns the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp
import psutil

from engines.launcher import since_launch
from engines.process_group import leftovers
from router.errors import LOG_LINES_MARK, LoadFailed
from router.supervisor import STOPPED_STATES, ProcessInfo, Supervisor, SupervisorError

log = logging.getLogger(__name__)

LOG_LINES_IN_ERRORS = 15
LOG_BYTES_READ = 65536  # where REASON_LINES are looked for: a dying vLLM writes ~15 KB after its reason
# Readiness is polled every tenth of the time the start has taken so far, from 10 ms up to 100 ms: a small GGUF
# answers within ~50 ms of its spawn, and a fixed 100 ms poll added up to that much to every switch.
READY_POLL_S = (0.01, 0.1)
Probe = Callable[[str], Awaitable[bool]]  # base URL -> does the engine answer its readiness URLs


class EngineProcess:
    def __init__(self, name: str, supervisor: Supervisor, run_dir: Path, ready_paths: tuple[str, ...],
                 http: aiohttp.ClientSession | None = None, probe: Probe | None = None,
                 reason_lines: re.Pattern[str] | None = None):
        self.name, self.supervisor, self.run_dir = name, supervisor, run_dir
        self.reason_lines = reason_lines
        self.ready_paths, self.http = ready_paths, http
        self.is_ready: Probe = probe or self._http_probe

    async def info(self) -> ProcessInfo:
        return await self.supervisor.info(self.name)

    async def start(self) -> None:
        await self.supervisor.start(self.name)

    async def wait_ready(self, base_url: str, timeout: float, seen: Callable[[ProcessInfo], None],
                         waiting_on: Callable[[str], str | None] = lambda log: None) -> int:
        """Wait until the started process answers at `base_url`; its PID. `seen` gets each observation.
        LoadFailed, quoting the engine's last log lines, when it exits instead or takes longer than `timeout`
        (saying what it was waiting for, when `waiting_on` reads that in its log)."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            info = await self.info()
            seen(info)
            if info.state in STOPPED_STATES or info.state == "BACKOFF":
                raise LoadFailed(await self.failure_message(info))
            # STARTING counts: supervisord calls a process RUNNING only `startsecs` after the spawn, which for a
            # small GGUF is most of the switch (docs/performance.md); an engine that answers is up.
            if info.state in ("STARTING", "RUNNING") and await self.is_ready(base_url):
                return info.pid
            fastest, slowest = READY_POLL_S
            await asyncio.sleep(min(slowest, max(fastest, (time.monotonic() - started) / 10)))
        raise LoadFailed(f"engine {self.name} did not become ready within {timeout:.0f} s"
                         f"{await self.still_waiting(waiting_on)}{LOG_LINES_MARK}{await self.log_tail()}")

    async def still_waiting(self, waiting_on: Callable[[str], str | None]) -> str:
        """For a load that timed out: what its log says it waited for (": it was still waiting for ..."), or ""."""
        why = waiting_on(await self.recent_log())
        return f": it was still waiting for {why}" if why else ""

    async def stop_tree(self) -> ProcessInfo:
        """Stop the engine and wait until every process of its tree is gone (no two copies in memory). Only
        processes of this engine are touched: supervisord's child and its descendants, and leftovers that carry
        the token of the engine's last start."""
        info = await self.info()
        procs: list[psutil.Process] = []
        if info.pid:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(info.pid)
                procs = [root, *root.children(recursive=True)]
        await self.supervisor.stop(self.name)
        procs += [p for p in await asyncio.to_thread(leftovers, self.run_dir, self.name) if p not in procs]
        if procs:
            _gone, alive = await asyncio.to_thread(psutil.wait_procs, procs, 10)
            for proc in alive:
                log.warning("%s: killing leftover pid %s", self.name, proc.pid)
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            await asyncio.to_thread(psutil.wait_procs, alive, 5)
        return await self.info()

    async def failure_message(self, info: ProcessInfo) -> str:
        why = info.spawn_error or f"exit status {info.exit_status}"
        return (f"engine {self.name} stopped during start ({info.state}: {why})"
                f"{LOG_LINES_MARK}{await self.log_tail()}")

    async def recent_log(self) -> str:
        """Its log since its last launch, as far back as LOG_BYTES_READ reaches ("" when it cannot be read)."""
        try:
            return since_launch(await self.supervisor.tail_log(self.name, LOG_BYTES_READ), self.name)
        except SupervisorError:
            return ""

    async def log_tail(self) -> str:
        """The log's last lines, after the last few earlier ones that say why the engine stopped (its adapter's
        REASON_LINES), if any."""
        try:
            text = await self.supervisor.tail_log(self.name, LOG_BYTES_READ)
        except SupervisorError as exc:
            return f"(log unavailable: {exc})"
        lines = text.splitlines()
        earlier = lines[:-LOG_LINES_IN_ERRORS]
        reasons = [line for line in earlier if self.reason_lines and self.reason_lines.search(line)][-3:]
        tail = lines[-LOG_LINES_IN_ERRORS:]
        return "\n".join([*reasons, "...", *tail] if reasons else tail)

    async def _http_probe(self, base_url: str) -> bool:
        try:
            for path in self.ready_paths:
                async with self.http.get(base_url + path, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status != 200:
                        return False
            return True
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False
