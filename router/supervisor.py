"""Async wrapper over supervisord's own XML-RPC interface, reached through its Unix control socket.

xmlrpc.client is blocking, so each call runs in a worker thread with a fresh proxy (proxies are not
thread-safe, and a fresh one costs a socket connect on a local Unix socket: microseconds). The threads are the
Supervisor's own (not the event loop's default pool, which status, the monitor, loads, psutil sampling and file
reads share), and every call has a socket timeout: a slow or hung supervisord fails its calls with a
SupervisorError instead of wedging the router.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import re
import socket
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

from engines.spec import engine_of

RPC_THREADS = 4
RPC_TIMEOUT_SECONDS = 10.0  # any call; supervisord answers a local call in milliseconds
# stopProcess(wait=True) returns once the process is reaped: up to the program's stopwaitsecs (30 s for vLLM in
# supervisord.conf) before supervisord's SIGKILL, and a little after
STOP_TIMEOUT_SECONDS = 60.0

# supervisord process states that mean "not running and not trying to" vs "trying to start".
STOPPED_STATES = {"STOPPED", "EXITED", "FATAL", "UNKNOWN"}
STARTING_STATES = {"STARTING", "BACKOFF"}



def program_of(instance: str) -> str:
    """supervisord's name for an engine instance: the engine's own program for instance 0 (`llamacpp`), a member
    of the engine's -extra group for the others (`llamacpp-extra:llamacpp-1`, supervisord.conf)."""
    engine = engine_of(instance)
    return instance if instance == engine else f"{engine}-extra:{instance}"

class SupervisorError(Exception):
    pass


class SupervisorInternalError(SupervisorError):
    """supervisord answered HTTP 500: the method itself raised (e.g. a log window cut inside a UTF-8 character)."""


# supervisord sends log text raw inside its XML answer, and XML 1.0 forbids most control characters, so a
# log holding a terminal colour code or a stray byte would make every read of it fail. Colour codes (CSI
# sequences) are dropped, other forbidden characters become U+FFFD. Only string content can hold them.
_ANSI_CSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]")
_NOT_XML = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]|&#6553[45];")


class _XmlSafeParser:
    def __init__(self, parser: Any):
        self._parser = parser

    def feed(self, data: bytes) -> None:
        self._parser.feed(_NOT_XML.sub(b"&#65533;", _ANSI_CSI.sub(b"", data)))

    def close(self) -> None:
        self._parser.close()


class _TimedConnection(UnixStreamHTTPConnection):
    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)  # connect, send and every read
        self.sock.connect(self.socketfile)


class _Transport(SupervisorTransport):
    def __init__(self, serverurl: str, timeout: float):
        super().__init__(None, None, serverurl)

        def connection() -> _TimedConnection:
            conn = _TimedConnection("localhost", timeout=timeout)
            conn.socketfile = serverurl[len("unix://"):]
            return conn
        self._get_connection = connection

    def getparser(self) -> tuple[Any, Any]:
        parser, unmarshaller = super().getparser()
        return _XmlSafeParser(parser), unmarshaller


@dataclass(frozen=True)
class ProcessInfo:
    name: str
    state: str  # supervisord's statename: RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL, ...
    pid: int  # 0 when not running
    start: int  # epoch seconds of the last start
    exit_status: int
    spawn_error: str  # supervisord's own description, e.g. "Exited too quickly"
    logfile: str

    @classmethod
    def from_rpc(cls, info: dict[str, Any]) -> "ProcessInfo":
        return cls(name=info["name"], state=info["statename"], pid=info["pid"], start=info["start"],
                   exit_status=info["exitstatus"], spawn_error=info.get("spawnerr", ""),
                   logfile=info.get("stdout_logfile", ""))


class Supervisor:
    """supervisord's XML-RPC for the router. Engine instances are named as the router names them (`llamacpp-1`);
    `program_of` gives supervisord's name."""

    def __init__(self, socket_path: Path, timeout: float = RPC_TIMEOUT_SECONDS,
                 stop_timeout: float = STOP_TIMEOUT_SECONDS):
        self.socket_path, self.timeout, self.stop_timeout = socket_path, timeout, stop_timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(RPC_THREADS, thread_name_prefix="supervisor-rpc")

    def _call(self, method: str, *args: Any) -> Any:
        timeout = self.stop_timeout if method == "stopProcess" else self.timeout
        transport = _Transport(f"unix://{self.socket_path}", timeout)
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        try:
            return getattr(proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as exc:
            raise SupervisorError(f"supervisord {method}{args}: {exc.faultString}") from exc
        except xmlrpc.client.ProtocolError as exc:
            error = SupervisorInternalError if exc.errcode == 500 else SupervisorError
            raise error(f"supervisord {method}{args}: HTTP {exc.errcode} {exc.errmsg}") from exc
        except ExpatError as exc:
            raise SupervisorError(f"supervisord {method}{args}: unreadable answer: {exc}") from exc
        except TimeoutError as exc:  # socket.timeout
            raise SupervisorError(f"supervisord {method}{args}: no answer within {timeout:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise SupervisorError(f"cannot reach supervisord at {self.socket_path}: {exc!r}") from exc
        finally:
            transport.close()

    async def call(self, method: str, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, method, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def info(self, name: str) -> ProcessInfo:
        return ProcessInfo.from_rpc(await self.call("getProcessInfo", program_of(name)))

    async def start(self, name: str) -> None:
        """Ask supervisord to start the program without waiting for startsecs; readiness is ours to judge."""
        await self.call("startProcess", program_of(name), False)

    async def stop(self, name: str) -> None:
        """Stop and wait until supervisord has reaped the process (SIGTERM, then SIGKILL after stopwaitsecs)."""
        try:
            await self.call("stopProcess", program_of(name), True)
        except SupervisorError as exc:
            if "NOT_RUNNING" not in str(exc):
                raise

    async def tail_log(self, name: str, nbytes: int = 4096) -> str:
        size = await self.log_size(name)
        return await self.read_log(name, max(0, size - nbytes), size)

    async def log_size(self, name: str) -> int:
        """The program log's size in bytes, read from none of it: tailProcessStdoutLog(name, 0, 0) returns
        ['', size, overflow] (0 while the log does not exist yet)."""
        _text, size, _overflow = await self.call("tailProcessStdoutLog", program_of(name), 0, 0)
        return size

    async def read_log(self, name: str, start: int, end: int) -> str:
        """The program log's bytes [start, end) as text; fewer past its end (rotated since), "" for none.

        tailProcessStdoutLog cannot do this: it always answers the log's last `length` bytes, old ones included.
        supervisord decodes the bytes as UTF-8 and fails (HTTP 500) when `start` falls inside a character, as a
        window cut from the end can; then the window starts one to three bytes earlier, on the boundary."""
        if end <= start:
            return ""
        for extra in range(min(start, 3) + 1):
            try:
                return await self.call("readProcessStdoutLog", program_of(name), start - extra, end - start + extra)
            except SupervisorInternalError:
                if extra == min(start, 3):
                    raise
        raise AssertionError("unreachable")
