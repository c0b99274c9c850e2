"""The engine lifecycle against a fake supervisord: the state machine, loads in order, swaps that serve the
outgoing model's requests, unloads that drain, cancellation at every await, restore after a router restart."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from engines.spec import StateFileError, plan_file, read_plan, read_resume, unloaded_on_request
from router import load_runner
from router.engine_state import State
from router.errors import EngineUnavailable, LoadFailed, StateNotRecorded
from tests.unit.fakes import Held, make_manager, no_illegal_transitions, spec, until  # noqa: F401 (an autouse fixture)

A, B, C = spec("a"), spec("b"), spec("c")


def test_each_move_is_logged_once_with_its_cause(caplog, tmp_path):
    async def scenario():
        manager, _, events = make_manager(tmp_path)
        await manager.load(A)
        return events
    events = asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "router.engine_state"]
    assert len(lines) == 2 and lines[0] == "llamacpp: idle -> loading (load requested: a)"
    assert re.fullmatch(r"llamacpp: loading -> loaded \(a ready after \d+\.\d\d s\)", lines[1]), lines
    assert events.moves == [("idle", "loading"), ("loading", "loaded")]


# ---- loads -------------------------------------------------------------------------------------------------

def test_a_load_accounts_for_its_time_phase_by_phase(tmp_path, caplog):
    async def scenario():
        manager, _, _ = make_manager(tmp_path)
        await manager.load(A)
        return manager.details
    d = asyncio.run(scenario())
    assert list(d.load_phases) == ["draining the requests in flight", "stopping the engine's previous process",
                                   "starting the engine", "waiting until the engine answers (loading the model)"]
    assert all(seconds >= 0 for seconds in d.load_phases.values()) and d.load_phase is None
    assert sum(d.load_phases.values()) <= d.load_seconds + 0.01
    assert any("where the time went: draining the requests in flight" in r.getMessage() for r in caplog.records)


def test_a_load_writes_the_plan_first_then_stops_and_starts(tmp_path):
    async def scenario():
        manager, sup, events = make_manager(tmp_path)
        seconds = await manager.load(A)
        plan = read_plan(tmp_path, "llamacpp")
        assert plan.spec == A and plan.port == 18002 and "-m" in plan.argv and plan == sup.started_plans[-1]
        assert [c for c in sup.calls if c != "info"] == ["stop", "start"]
        assert manager.state is State.LOADED and manager.details.plan == plan and seconds > 0
        assert events.loads == [("a", True)]
        sup.calls.clear()
        assert await manager.load(A) == 0.0 and "start" not in sup.calls  # already served: no restart
    asyncio.run(scenario())


def test_concurrent_loads_of_one_model_share_one_start(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await asyncio.gather(*(manager.load(A) for _ in range(5)))
        assert sup.calls.count("start") == 1
    asyncio.run(scenario())


def test_loads_run_in_arrival_order(tmp_path):
    async def scenario():
        manager, sup, events = make_manager(tmp_path)
        await asyncio.gather(manager.load(B), manager.load(A), manager.load(C))
        assert [p.spec.served_name for p in sup.started_plans] == ["b", "a", "c"]
        assert manager.details.spec == C and manager.state is State.LOADED
    asyncio.run(scenario())


def test_a_failed_load_is_an_error_that_forgets_the_model(tmp_path):
    async def scenario():
        manager, sup, events = make_manager(tmp_path)
        sup.start_fails = True
        with pytest.raises(LoadFailed) as err:
            await manager.load(A)
        assert "failed to load model" in err.value.message  # the engine's own log lines
        assert manager.state is State.ERROR and manager.details.last_error == err.value.message
        assert read_plan(tmp_path, "llamacpp") is None and manager.details.spec is None
        assert events.loads == [("a", False)]
        sup.start_fails = False
        await manager.load(A)  # a later good load recovers
        assert manager.state is State.LOADED and manager.details.last_error is None
    asyncio.run(scenario())


def test_a_plan_that_cannot_be_written_changes_nothing(tmp_path, monkeypatch):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)

        def disk_full(*_):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(load_runner, "write_plan", disk_full)
        with pytest.raises(StateNotRecorded, match="No space left on device.*nothing was changed") as err:
            await manager.load(B)
        assert err.value.status == 507 and err.value.code == "run_folder_full"
        assert manager.state is State.LOADED and manager.details.spec == A
        assert read_plan(tmp_path, "llamacpp").spec == A and len(sup.started_plans) == 1
        async with manager.admitted("a", None, timeout=1) as served:  # and A keeps serving
            assert served == A
    asyncio.run(scenario())


# ---- cancellation is not failure (a router restart mid-load) -----------------------------------------------

@pytest.mark.parametrize("interrupted_in", ["stop", "start", "ready"])
def test_an_interrupted_load_keeps_the_wanted_model_and_resumes_after_a_restart(tmp_path, interrupted_in):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        if interrupted_in == "ready":
            sup.auto_ready = False  # B's process starts but does not answer yet
        else:
            sup.gate(interrupted_in)
        loading = asyncio.ensure_future(manager.load(B))
        await until(lambda: interrupted_in in sup.blocked or len(sup.started_plans) == 2, what="the interruption point")
        await manager.close()  # the router stops: its tasks are cancelled
        with pytest.raises(asyncio.CancelledError):
            await loading
        assert manager.state is State.LOADING  # not error: cancellation is not failure
        assert read_plan(tmp_path, "llamacpp").spec == B  # still the wanted model
        sup.gates.clear()
        sup.auto_ready = True
        sup.ready_pids.add(sup.pid)
        starts = len(sup.started_plans)

        restarted, _, _ = make_manager(tmp_path, sup)  # the router comes back
        await restarted.restore(default=A)
        await until(lambda: not restarted.queue.loads, what="the resumed load")
        await restarted.refresh()
        assert restarted.state is State.LOADED and restarted.details.spec == B
        assert sup.started_plans[-1].spec == B
        # already started with B's plan: adopted as it is; otherwise started once more, with B
        assert len(sup.started_plans) == starts + (0 if interrupted_in == "ready" else 1)
    asyncio.run(scenario())


def test_an_engine_running_an_older_plan_is_replaced_at_restore(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        plan_b = manager.plan_for(B)
        from engines.spec import write_plan
        write_plan(tmp_path, plan_b)  # a load of B was interrupted before it stopped A
        restarted, _, _ = make_manager(tmp_path, sup)
        await restarted.restore(default=None)
        await until(lambda: restarted.state is State.LOADED and restarted.details.spec == B, what="B")
    asyncio.run(scenario())


@pytest.mark.parametrize("content", ["", "{trunc", "null", '{"spec": 1}'])
def test_a_corrupt_plan_file_is_reported_and_ignored(tmp_path, content):
    async def scenario():
        plan_file(tmp_path, "llamacpp").parent.mkdir(parents=True)
        plan_file(tmp_path, "llamacpp").write_text(content)
        manager, _, _ = make_manager(tmp_path)
        await manager.restore(default=A)  # the router starts anyway, with its default
        assert "unusable" in manager.details.last_error and str(plan_file(tmp_path, "llamacpp")) in \
            manager.details.last_error
        await until(lambda: manager.state is State.LOADED, what="the default model")
    asyncio.run(scenario())


# ---- unloads drain -----------------------------------------------------------------------------------------

def test_unload_leaves_loaded_at_once_and_lets_requests_in_flight_finish(tmp_path):
    async def scenario():
        manager, sup, events = make_manager(tmp_path)
        await manager.load(A)
        finished = asyncio.Event()

        async def in_flight():
            async with manager.admitted(None, None, timeout=5):
                await finished.wait()
        request = asyncio.ensure_future(in_flight())
        await until(lambda: manager.in_flight == 1, what="the request to be in flight")
        unloading = asyncio.ensure_future(manager.unload())
        await until(lambda: manager.state is State.STOPPING, what="stopping")
        assert manager.machine.status == "idle" and "stop" not in sup.calls[-1:]
        with pytest.raises(EngineUnavailable) as err:  # a new request: the documented 503 hint, at once
            async with manager.admitted(None, None, timeout=5):
                pass
        assert err.value.code == "engine_idle" and "/v1/models/load" in err.value.message
        assert sup.state == "RUNNING"  # nothing stopped yet: the request in flight is still being answered
        finished.set()
        await asyncio.gather(request, unloading)
        assert manager.state is State.IDLE and sup.state == "STOPPED"
        assert unloaded_on_request(tmp_path, "llamacpp") and read_plan(tmp_path, "llamacpp") is None
        assert events.moves[-2:] == [("loaded", "stopping"), ("stopping", "idle")]
    asyncio.run(scenario())


def test_an_idle_unload_is_remembered_and_the_next_request_brings_the_model_back(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        await manager.unload(reason="idle for 2 s", resume=True)
        assert read_resume(tmp_path, "llamacpp").spec == A and not unloaded_on_request(tmp_path, "llamacpp")
        assert manager.details.resume_spec == A
        async with manager.admitted(None, manager.details.resume_spec, timeout=5) as served:
            assert served == A
        assert read_resume(tmp_path, "llamacpp") is None
    asyncio.run(scenario())


def test_unload_of_an_idle_engine_changes_no_state(tmp_path):
    async def scenario():
        manager, sup, events = make_manager(tmp_path)
        await manager.unload()
        assert manager.state is State.IDLE and events.moves == [] and unloaded_on_request(tmp_path, "llamacpp")
    asyncio.run(scenario())


# ---- observation (the monitor) -----------------------------------------------------------------------------

def test_the_monitor_follows_stop_start_crash_and_fatal(tmp_path):
    async def scenario():
        manager, sup, events = make_manager(tmp_path)
        await manager.load(A)
        sup.state, sup.pid = "STOPPED", 0  # supervisorctl stop
        await manager.refresh()
        assert manager.state is State.IDLE and manager.details.spec == A  # `start` resumes the same model
        sup.run(read_plan(tmp_path, "llamacpp"))  # supervisorctl start
        await manager.refresh()
        assert manager.state is State.LOADED
        sup.crash_and_restart()
        await manager.refresh()
        assert manager.state is State.LOADING and events.restarts == 1
        sup.ready_pids.add(sup.pid)
        await manager.refresh()
        assert manager.state is State.LOADED
        sup.state, sup.pid = "FATAL", 0
        await manager.refresh()
        assert manager.state is State.ERROR and "failed to load model" in manager.details.last_error
        assert events.moves == [("idle", "loading"), ("loading", "loaded"), ("loaded", "idle"), ("idle", "loading"),
                                ("loading", "loaded"), ("loaded", "loading"), ("loading", "loaded"),
                                ("loaded", "error")]
    asyncio.run(scenario())


def test_a_crash_loop_is_stopped_after_crash_restarts_within_the_window(tmp_path):
    """supervisord restarts an engine that keeps dying after it came up, for ever; the router counts those
    restarts and, past router.crash_restarts within the window, stops it and shows the error with the log."""
    async def scenario():
        manager, sup, events = make_manager(tmp_path, crash_restarts=2, crash_window_seconds=60)
        await manager.load(A)
        for crash in range(1, 4):
            sup.crash_and_restart()
            await manager.refresh()
            assert manager.restarts == crash and events.restarts == crash
            if crash <= 2:  # within the allowance: it comes back and serves
                sup.ready_pids.add(sup.pid)
                await manager.refresh()
                assert manager.state is State.LOADED
        await until(lambda: manager.state is State.ERROR, what="the crash loop to be stopped")
        error = manager.details.last_error
        assert "restarted 3 times within 60 s serving a" in error and "failed to load model" in error, error
        assert sup.state == "STOPPED" and read_plan(tmp_path, "llamacpp") is None  # no restart at router start
        assert manager.machine.cause == "a crash loop"
        await manager.load(B)  # a later good load recovers
        assert manager.state is State.LOADED and manager.details.last_error is None
    asyncio.run(scenario())


def test_restarts_spread_beyond_the_window_are_not_a_crash_loop(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, crash_restarts=1, crash_window_seconds=0.05)
        await manager.load(A)
        for _ in range(3):
            await asyncio.sleep(0.06)  # each crash comes more than a window after the previous one
            sup.crash_and_restart()
            sup.ready_pids.add(sup.pid)
            await manager.refresh()
            await manager.refresh()
            assert manager.state is State.LOADED
        assert manager.restarts == 3 and not manager._background
    asyncio.run(scenario())


def test_the_router_talks_only_to_the_port_of_the_launch_in_effect(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, port=18002)
        await manager.load(A)
        manager.configure(manager.settings.model_copy(update={"port": 18099}), manager.router_settings)
        assert manager.port == 18002  # the engine still runs its old launch
        sup.probed_ports.clear()
        await manager.load(A)  # the new settings make a new launch: a restart on the new port
        assert manager.port == 18099 and read_plan(tmp_path, "llamacpp").port == 18099
        assert set(sup.probed_ports) == {18099}
    asyncio.run(scenario())


def test_restore_adopts_a_running_engine_without_restarting_it(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        pid, starts = sup.pid, sup.calls.count("start")
        again, _, events = make_manager(tmp_path, sup)
        await again.restore(default=B)
        await again.refresh()
        assert again.state is State.LOADED and again.details.spec == A and sup.pid == pid
        assert sup.calls.count("start") == starts and events.restarts == 0
    asyncio.run(scenario())


def test_restore_stops_an_engine_that_runs_without_a_wanted_model(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        plan_file(tmp_path, "llamacpp").unlink()  # e.g. an unload interrupted after recording its intent
        again, _, _ = make_manager(tmp_path, sup)
        await again.restore(default=B)
        await until(lambda: sup.state == "STOPPED", what="the stop")
        assert again.state is State.IDLE
    asyncio.run(scenario())


def test_state_file_errors_name_the_file(tmp_path):
    plan_file(tmp_path, "llamacpp").parent.mkdir(parents=True)
    plan_file(tmp_path, "llamacpp").write_text(json.dumps({"spec": {}}))
    with pytest.raises(StateFileError, match="llamacpp.json"):
        read_plan(tmp_path, "llamacpp")


def test_a_stop_under_way_outside_the_router_holds_new_requests_and_is_not_an_error(tmp_path):
    async def scenario():
        manager, sup, events = make_manager(tmp_path)
        await manager.load(A)
        sup.state = "STOPPING"  # supervisorctl stop, caught half way
        await manager.refresh()
        assert manager.state is State.LOADING and manager.details.last_error is None
        held = Held(manager, None)
        await until(lambda: manager.waiting == 1, what="a request to wait instead of failing")
        sup.state, sup.pid = "STOPPED", 0
        await manager.refresh()
        assert manager.state is State.IDLE and manager.details.last_error is None
        with pytest.raises(EngineUnavailable, match="no model loaded"):  # a stop: the held request is refused
            await held.served()
    asyncio.run(scenario())


def test_a_restart_outside_the_router_holds_new_requests_until_the_engine_answers(tmp_path):
    async def scenario():
        manager, sup, events = make_manager(tmp_path)
        await manager.load(A)
        sup.state = "STOPPING"  # supervisorctl restart: first the stop
        await manager.refresh()
        held = Held(manager, None)
        await until(lambda: manager.waiting == 1, what="a request to wait")
        sup.crash_and_restart()  # then the start, under a new PID
        await manager.refresh()
        sup.ready_pids.add(sup.pid)
        await manager.refresh()
        assert manager.state is State.LOADED and await held.served() == A
        await held.release()
        assert manager.in_flight == 0
    asyncio.run(scenario())
