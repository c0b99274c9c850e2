"""Readiness against a fake supervisord: an engine that answers is loaded, whatever supervisord's `startsecs`
bookkeeping still says (it calls a process RUNNING only that long after the spawn)."""

from __future__ import annotations

import asyncio

from router.engine_state import State
from tests.unit.fakes import FakeSupervisor, make_manager, no_illegal_transitions, spec  # noqa: F401 (autouse)


def test_a_load_ends_when_the_engine_answers_before_supervisord_calls_it_running(tmp_path):
    async def scenario():
        sup = FakeSupervisor(tmp_path)
        sup.start_state = "STARTING"
        manager, _sup, events = make_manager(tmp_path, sup)
        await asyncio.wait_for(manager.load(spec("a")), timeout=2)
        assert manager.state is State.LOADED and sup.state == "STARTING"
        await manager.refresh()  # the monitor does not take the rest of startsecs for a restart
        assert manager.state is State.LOADED and events.restarts == 0
        sup.state = "RUNNING"
        await manager.refresh()
        assert manager.state is State.LOADED
        assert events.moves == [("idle", "loading"), ("loading", "loaded")]
    asyncio.run(scenario())


def test_a_new_process_in_startsecs_is_not_taken_for_the_loaded_one(tmp_path):
    async def scenario():
        manager, sup, events = make_manager(tmp_path)
        await manager.load(spec("a"))
        sup.start_state = "STARTING"
        sup.crash_and_restart()  # supervisord restarting a crashed engine: a new PID, not answering yet
        await manager.refresh()
        assert manager.state is State.LOADING and events.restarts == 1
    asyncio.run(scenario())
