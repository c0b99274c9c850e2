"""Leftover engine processes: an engine killed with SIGKILL can orphan its helpers (vLLM's EngineCore keeps
running, holding memory and the listening port). supervisord makes each program its own process group, so the
launcher records the group and, before the next start, kills whatever is left in the previous one."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil


def _group_file(run_dir: Path, engine: str) -> Path:
    return run_dir / "engines" / f"{engine}.pgid"


def members(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def leftovers(run_dir: Path, engine: str) -> list[psutil.Process]:
    """Processes still in the engine's last recorded process group (none when nothing was recorded)."""
    try:
        pgid = int(_group_file(run_dir, engine).read_text())
    except (OSError, ValueError):
        return []
    return [p for p in members(pgid) if p.pid != os.getpid()]


def kill_leftovers(run_dir: Path, engine: str, timeout: float = 10) -> list[int]:
    """SIGKILL every process still in the engine's last recorded group; return their PIDs."""
    left = leftovers(run_dir, engine)
    for proc in left:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout)
    return [p.pid for p in left]


def record_group(run_dir: Path, engine: str) -> None:
    path = _group_file(run_dir, engine)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(os.getpgrp()))
