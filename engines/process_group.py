"""Leftover engine processes: an engine killed with SIGKILL can orphan its helpers (vLLM's EngineCore keeps
running, holding memory and the listening port). supervisord makes each program its own process group, so the
launcher records the group and, before the next start, kills whatever of it is left.

Only our own processes are ever killed. A process counts as a leftover only when it is in the recorded group
*and* is of that start: it carries the start's token in its environment (the launcher puts it there and the
engine's processes inherit it), or, where a process rewrote its environment area to set its title (vLLM's
`VLLM::EngineCore` does), it runs the engine's executable and was created after the start. A process that
later reuses the group's number has neither, and a group whose leader number was taken by another process is
left alone entirely.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from engines.spec import StateFileError, write_atomically

TOKEN_ENV = "ULLM_ENGINE_TOKEN"


@dataclass(frozen=True)
class GroupRecord:
    pgid: int
    pid: int  # the launcher's PID, which exec makes the engine's
    token: str  # in the environment of every process of this start
    plan_id: str  # the launch plan it started (the router adopts a running engine only when this matches)
    exe: str  # the engine's executable, resolved
    started_at: float  # the launcher's creation time (psutil's clock)


def _record_file(run: Path, engine: str) -> Path:
    return run / "engines" / f"{engine}.process.json"


def read_record(run: Path, engine: str) -> GroupRecord | None:
    path = _record_file(run, engine)
    try:
        raw = json.loads(path.read_text())
        return GroupRecord(pgid=int(raw["pgid"]), pid=int(raw["pid"]), token=str(raw["token"]),
                           plan_id=str(raw["plan_id"]), exe=str(raw["exe"]), started_at=float(raw["started_at"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateFileError(path, repr(exc)) from exc


def record_group(run: Path, engine: str, plan_id: str, exe: str) -> GroupRecord:
    """Record this process's group and a fresh token (put it in the engine's environment before exec)."""
    record = GroupRecord(pgid=os.getpgrp(), pid=os.getpid(), token=uuid.uuid4().hex, plan_id=plan_id,
                         exe=os.path.realpath(exe), started_at=psutil.Process().create_time())
    write_atomically(_record_file(run, engine), json.dumps(asdict(record)))
    return record


def forget_group(run: Path, engine: str) -> None:
    """After a confirmed stop: nothing of that start is left to look for."""
    _record_file(run, engine).unlink(missing_ok=True)


def members(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def of_start(proc: psutil.Process, record: GroupRecord) -> bool:
    """True when `proc` belongs to the recorded start (see the module's docstring)."""
    try:
        if proc.environ().get(TOKEN_ENV) == record.token:
            return True
        return proc.exe() == record.exe and proc.create_time() >= record.started_at
    except psutil.Error:  # gone, or not ours to read: not ours to kill either
        return False


def leader_replaced(record: GroupRecord) -> bool:
    """True when a process other than the recorded start's leader now holds the group's number."""
    try:
        return psutil.Process(record.pgid).create_time() != record.started_at
    except psutil.Error:
        return False  # the leader is gone (an engine killed with SIGKILL): its orphans may remain


def leftovers(run: Path, engine: str) -> list[psutil.Process]:
    """Processes of the engine's last recorded start that are still alive (none when nothing was recorded)."""
    try:
        record = read_record(run, engine)
    except StateFileError:
        return []
    if record is None or leader_replaced(record):
        return []
    return [p for p in members(record.pgid) if p.pid != os.getpid() and of_start(p, record)]


def kill_leftovers(run: Path, engine: str, timeout: float = 10) -> list[int]:
    """SIGKILL every process left from the engine's last recorded start; return their PIDs."""
    left = leftovers(run, engine)
    for proc in left:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout)
    return [p.pid for p in left]
