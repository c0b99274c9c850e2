"""Async wrapper over supervisord's own XML-RPC interface, reached through its Unix control socket.

xmlrpc.client is blocking, so each call runs in a worker thread with a fresh proxy (proxies are not
thread-safe, and a fresh one costs a socket connect on a local Unix socket: microseconds).
"""

from __future__ import annotations

import asyncio
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

# supervisord process states that mean "not running and not trying to" vs "trying to start".
STOPPED_STATES = {"STOPPED", "EXITED", "FATAL", "UNKNOWN"}
STARTING_STATES = {"STARTING", "BACKOFF"}


class SupervisorError(Exception):
    pass


@dataclass(frozen=True)
class ProcessInfo:
    name: str
    state: str  # supervisord's statename: RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL, ...
    pid: int  # 0 when not running
    start: int  # epoch seconds of the last start
    now: int
    exit_status: int
    spawn_error: str  # supervisord's own description, e.g. "Exited too quickly"
    logfile: str

    @classmethod
    def from_rpc(cls, info: dict[str, Any]) -> "ProcessInfo":
        return cls(name=info["name"], state=info["statename"], pid=info["pid"], start=info["start"],
                   now=info["now"], exit_status=info["exitstatus"], spawn_error=info.get("spawnerr", ""),
                   logfile=info.get("stdout_logfile", ""))


class Supervisor:
    def __init__(self, socket_path: Path):
        self.socket_path = socket_path

    def _call(self, method: str, *args: Any) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket_path}")
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        try:
            return getattr(proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as exc:
            raise SupervisorError(f"supervisord {method}{args}: {exc.faultString}") from exc
        except OSError as exc:
            raise SupervisorError(f"cannot reach supervisord at {self.socket_path}: {exc}") from exc
        finally:
            transport.close()

    async def call(self, method: str, *args: Any) -> Any:
        return await asyncio.to_thread(self._call, method, *args)

    async def info(self, name: str) -> ProcessInfo:
        return ProcessInfo.from_rpc(await self.call("getProcessInfo", name))

    async def start(self, name: str) -> None:
        """Ask supervisord to start the program without waiting for startsecs; readiness is ours to judge."""
        await self.call("startProcess", name, False)

    async def stop(self, name: str) -> None:
        """Stop and wait until supervisord has reaped the process (SIGTERM, then SIGKILL after stopwaitsecs)."""
        try:
            await self.call("stopProcess", name, True)
        except SupervisorError as exc:
            if "NOT_RUNNING" not in str(exc):
                raise

    async def tail_log(self, name: str, nbytes: int = 4096) -> str:
        text, _offset, _overflow = await self.call("tailProcessStdoutLog", name, 0, nbytes)
        return text
