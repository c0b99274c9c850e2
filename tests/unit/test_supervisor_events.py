"""router/supervisor_events.py: supervisord's event-listener protocol on one side, the router's socket on the other."""

import asyncio
import io
import logging
import socket

import pytest
import uvloop

from router import supervisor_events


def event(name: str, payload: str) -> str:
    header = (f"ver:3.0 server:supervisor serial:21 pool:engine-events poolserial:10 eventname:{name} "
              f"len:{len(payload)}\n")
    return header + payload


def test_each_process_state_event_is_forwarded_and_acknowledged():
    stdin = io.StringIO(event("PROCESS_STATE_STOPPING", "processname:llamacpp groupname:llamacpp "
                                                        "from_state:RUNNING pid:4242")
                        + event("TICK_5", "when:1795767566")
                        + event("PROCESS_STATE_EXITED", "processname:vllm groupname:vllm from_state:RUNNING "
                                                        "expected:0 pid:77"))
    stdout, sent = io.StringIO(), []
    supervisor_events.forward(stdin, stdout, sent.append)  # returns when supervisord closes the pipe
    assert sent == [b"llamacpp PROCESS_STATE_STOPPING", b"vllm PROCESS_STATE_EXITED"]
    # READY before each event, OK after each (the TICK too), and READY again before the pipe closed
    assert stdout.getvalue() == "READY\nRESULT 2\nOK" * 3 + "READY\n"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # the router runs on uvloop
def test_the_router_receives_what_the_listener_sends(tmp_path, loop):
    path = tmp_path / supervisor_events.SOCKET_NAME
    path.write_text("a socket file left by an earlier router")

    async def scenario():
        got = asyncio.Queue()
        transport = supervisor_events.receive(path, lambda program, ev: got.put_nowait((program, ev)))
        assert transport is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.sendto(b"llamacpp PROCESS_STATE_STARTING", str(path))
        try:
            return await asyncio.wait_for(got.get(), 10)
        finally:
            sock.close()
            transport.close()
    run = uvloop.run if loop == "uvloop" else asyncio.run
    assert run(scenario()) == ("llamacpp", "PROCESS_STATE_STARTING")


def test_a_socket_that_cannot_be_made_leaves_polling(tmp_path, caplog):
    path = tmp_path / ("x" * 120) / supervisor_events.SOCKET_NAME  # longer than a Unix socket path may be
    path.parent.mkdir()

    async def scenario():
        return supervisor_events.receive(path, lambda program, ev: None)
    assert asyncio.run(scenario()) is None
    assert "seen by polling" in caplog.text


def test_a_second_router_leaves_the_socket_to_the_first_and_a_stale_one_is_replaced(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="router.supervisor_events")
    path = tmp_path / supervisor_events.SOCKET_NAME

    async def scenario():
        first = supervisor_events.receive(path, lambda program, ev: None)
        second = supervisor_events.receive(path, lambda program, ev: None)  # the first still reads it
        assert first is not None and second is None and path.is_socket()
        first.close()  # a router that stops takes its socket file with it
        assert not path.exists()
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # one left by a router killed with -9
        stale.bind(str(path))
        stale.close()
        third = supervisor_events.receive(path, lambda program, ev: None)
        assert third is not None
        third.close()
    asyncio.run(scenario())
    assert "another router receives supervisord's events" in caplog.text


def test_the_monitor_looks_rarely_only_while_events_arrive_and_every_engine_is_settled():
    from types import SimpleNamespace

    from router.app import MONITOR_INTERVAL, SETTLED_INTERVAL, monitor_interval
    from router.engine_state import State

    def engines(*states):
        return [SimpleNamespace(state=state) for state in states]  # every engine instance
    assert monitor_interval(engines(State.LOADED, State.IDLE, State.ERROR), events_arrive=True) == SETTLED_INTERVAL
    assert monitor_interval(engines(State.LOADED, State.IDLE), events_arrive=False) == MONITOR_INTERVAL
    for busy in (State.LOADING, State.STOPPING):  # readiness and the end of a stop come from polling
        assert monitor_interval(engines(State.LOADED, busy), events_arrive=True) == MONITOR_INTERVAL
    assert MONITOR_INTERVAL < SETTLED_INTERVAL
