"""supervisord's process-state events, delivered to the router as they happen.

supervisord runs `python -m router.supervisor_events SOCKET` as an event listener (`[eventlistener:engine-events]`
in supervisord.conf). For each PROCESS_STATE event it sends one datagram, "<program> <event name>", to a Unix
socket in the run folder, where the router wakes its monitor at once. So a `supervisorctl restart` or a crash is
seen within milliseconds, while the old process is still stopping, and requests are held from then on instead
of reaching a new engine that still loads. Without the listener, or when the socket cannot be made, the router
still follows the engines by polling supervisord every 0.5 s.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path
from typing import Callable, TextIO

log = logging.getLogger(__name__)

SOCKET_NAME = "supervisor-events.sock"


# ---- the listener: a process of its own, started by supervisord -----------------------------------------------

def forward(stdin: TextIO, stdout: TextIO, send: Callable[[bytes], None]) -> None:
    """supervisord's event-listener protocol (supervisor.childutils), until supervisord closes the pipe: each
    PROCESS_STATE event becomes `send(b"<program> <event name>")`; every event is acknowledged."""
    from supervisor import childutils  # the listener alone needs it

    while True:
        childutils.listener.ready(stdout)
        line = stdin.readline()
        if not line:
            return
        headers = childutils.get_headers(line)
        payload = stdin.read(int(headers["len"]))
        event = headers.get("eventname", "")
        program = childutils.get_headers(payload.split("\n", 1)[0]).get("processname")
        if event.startswith("PROCESS_STATE") and program:
            send(f"{program} {event}".encode())
        childutils.listener.ok(stdout)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m router.supervisor_events SOCKET_PATH")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send(message: bytes) -> None:
        try:
            sock.sendto(message, argv[0])
        except OSError:  # the router is not listening (starting, restarting): it polls meanwhile
            pass
    forward(sys.stdin, sys.stdout, send)


# ---- the router's end ------------------------------------------------------------------------------------------

class Receiver:
    """The router's end: a Unix datagram socket watched by the event loop (add_reader works on asyncio's loop and
    on uvloop, whose datagram endpoints take no Unix paths)."""

    def __init__(self, sock: socket.socket, path: Path, on_event: Callable[[str, str], None]):
        self.sock, self.path, self.on_event = sock, path, on_event
        self.inode = path.stat().st_ino  # the socket file this router made
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # closed under us
                return
            program, _, event = data.decode(errors="replace").partition(" ")
            self.on_event(program, event)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        try:  # the socket file goes with it, unless another router has bound the path since
            if self.path.stat().st_ino == self.inode:
                self.path.unlink()
        except OSError:
            pass
        self.sock.close()


def receive(path: Path, on_event: Callable[[str, str], None]) -> Receiver | None:
    """Listen at `path` and call `on_event(program, event)` for each event. A socket left there by a router that
    has gone is replaced; one a running router still reads is left to it (a second router on the same folder
    follows the engines by polling). None, after a message, when this router does not receive the events."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if _in_use(path):
            sock.close()
            log.info("another router receives supervisord's events at %s: this one follows the engines by "
                     "polling every 0.5 s", path)
            return None
        path.unlink(missing_ok=True)
        sock.bind(str(path))
    except OSError as exc:  # e.g. a path longer than a Unix socket allows (108 bytes)
        sock.close()
        log.warning("cannot receive supervisord's events at %s (%s): engine changes made outside the router are "
                    "seen by polling, up to 0.5 s late", path, exc)
        return None
    sock.setblocking(False)
    return Receiver(sock, path, on_event)


def _in_use(path: Path) -> bool:
    """A socket at `path` that a live process reads (connecting to a stale one is refused)."""
    if not path.is_socket():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    main(sys.argv[1:])
