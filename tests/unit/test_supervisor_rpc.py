"""supervisord's XML-RPC calls run on the Supervisor's own threads with socket timeouts (issue 22): a hung
supervisord fails the call with a SupervisorError instead of wedging status, the monitor and loads, and never
occupies the event loop's default thread pool."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from router.supervisor import Supervisor, SupervisorError


@pytest.fixture
def hung_supervisord(tmp_path):
    """A Unix socket that accepts connections and never answers."""
    path = tmp_path / "supervisor.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_supervisord_fails_the_call_within_its_timeout(hung_supervisord):
    async def scenario():
        supervisor = Supervisor(hung_supervisord, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(SupervisorError, match="no answer within 0.3 s"):
            await supervisor.info("vllm")
        return time.monotonic() - started
    took = asyncio.run(scenario())
    print(f"\nhung supervisord: the call failed after {took:.2f} s (timeout 0.3 s)")
    assert 0.3 <= took < 3


def test_calls_run_on_the_supervisors_own_threads_and_leave_the_default_pool_free(hung_supervisord,
                                                                                   monkeypatch):
    threads: set[str] = set()
    original = Supervisor._call

    def recording(self, method, *args):
        threads.add(threading.current_thread().name)
        return original(self, method, *args)
    monkeypatch.setattr(Supervisor, "_call", recording)

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(__import__("concurrent.futures").futures.ThreadPoolExecutor(1))
        supervisor = Supervisor(hung_supervisord, timeout=1.0)
        hung = [asyncio.ensure_future(supervisor.info("vllm")) for _ in range(4)]  # every RPC thread hangs
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 0.5) == 42  # the default pool still works
        free = time.monotonic() - started
        results = await asyncio.gather(*hung, return_exceptions=True)
        return free, results
    free, results = asyncio.run(scenario())
    assert all(isinstance(r, SupervisorError) for r in results), results
    assert threads and all(name.startswith("supervisor-rpc") for name in threads), threads
    print(f"\ndefault pool answered in {free:.3f} s while 4 supervisord calls hung")
