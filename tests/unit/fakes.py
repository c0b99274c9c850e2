"""A fake supervisord client for lifecycle tests: one program per engine whose process starts, becomes ready,
crashes or stops on cue, and a readiness probe that answers for it. No real process is ever touched: fake PIDs
are above the kernel's pid_max, so psutil finds nothing to wait for or kill."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from engines.spec import LaunchPlan, ModelSpec, read_plan
from router.config import EngineSettings, RouterSettings
from router.lifecycle import EngineManager

if TYPE_CHECKING:
    from router.config import Config
    from router.engine_group import EngineGroup
    from router.memory_guard import MemoryLedger
from router.supervisor import ProcessInfo

FIRST_FAKE_PID = 100_000_000


def spec(name: str, engine: str = "llamacpp") -> ModelSpec:
    return ModelSpec(engine=engine, path=f"/models/{name}.gguf", served_name=name,
                     options={"ctx_size": 2048, "n_gpu_layers": 999, "parallel": 4})


class FakeSupervisor:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.state, self.pid, self.exit_status = "STOPPED", 0, 0
        self.next_pid = FIRST_FAKE_PID
        self.calls: list[str] = []
        self.ready_pids: set[int] = set()
        self.probed_ports: list[int] = []
        self.auto_ready = True  # a started process answers its readiness URLs at once
        self.start_fails = False  # a started process exits at once (a broken model)
        self.broken: set[str] = set()  # served names whose process exits at once
        self.start_state = "RUNNING"  # "STARTING": supervisord's startsecs have not passed yet
        self.gates: dict[str, asyncio.Event] = {}  # "start"/"stop"/"info": block that call until set
        self.blocked: set[str] = set()  # gated calls waiting now
        self.started_plans: list[LaunchPlan] = []
        self.program: str | None = None  # the instance last started (its run files are named after it)

    def gate(self, call: str) -> asyncio.Event:
        self.gates[call] = asyncio.Event()
        return self.gates[call]

    async def _pass(self, call: str) -> None:
        self.calls.append(call)
        if call in self.gates:
            self.blocked.add(call)
            try:
                await self.gates[call].wait()
            finally:
                self.blocked.discard(call)

    async def info(self, name: str) -> ProcessInfo:
        await self._pass("info")
        return ProcessInfo(name=name, state=self.state, pid=self.pid, start=int(time.time()),
                           exit_status=self.exit_status, spawn_error="", logfile="")

    async def start(self, name: str) -> None:
        await self._pass("start")
        self.program = name
        plan = read_plan(self.run_dir, name)  # what the launcher does
        assert plan is not None and plan.argv, "the launcher would refuse to start without a plan"
        if self.start_fails or plan.spec.served_name in self.broken:
            self.state, self.pid, self.exit_status = "FATAL", 0, 1
            return
        self.run(plan)

    def run(self, plan: LaunchPlan) -> None:
        """A process of `plan` is now running, recorded as the launcher records it."""
        self.started_plans.append(plan)
        self.state, self.pid, self.next_pid = self.start_state, self.next_pid, self.next_pid + 1
        record = {"pgid": self.pid, "pid": self.pid, "token": "t", "plan_id": plan.id, "exe": plan.argv[0],
                  "started_at": time.time()}
        (self.run_dir / "engines" / f"{self.program or plan.spec.engine}.process.json").write_text(json.dumps(record))
        if self.auto_ready:
            self.ready_pids.add(self.pid)

    def crash_and_restart(self) -> None:
        """supervisord restarting a crashed engine: a new PID, same plan, not ready yet."""
        plan = read_plan(self.run_dir, self.program or self.started_plans[-1].spec.engine)
        auto, self.auto_ready = self.auto_ready, False
        self.run(plan)
        self.auto_ready = auto

    async def stop(self, name: str) -> None:
        await self._pass("stop")
        self.state, self.pid = "STOPPED", 0

    async def tail_log(self, name: str, nbytes: int = 4096) -> str:
        return "fake engine: failed to load model\n"

    async def probe(self, base_url: str) -> bool:
        self.probed_ports.append(int(base_url.rsplit(":", 1)[1]))
        return self.state in ("STARTING", "RUNNING") and self.pid in self.ready_pids


class FakeSupervisors:
    """Several programs (an engine's instances: llamacpp, llamacpp-1...), each a FakeSupervisor of its own with
    PIDs of its own; the readiness probe answers for the program whose last start listens on the port."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.programs: dict[str, FakeSupervisor] = {}

    def __getitem__(self, name: str) -> FakeSupervisor:
        if name not in self.programs:
            sup = self.programs[name] = FakeSupervisor(self.run_dir)
            sup.next_pid += 1_000_000 * (len(self.programs) - 1)
        return self.programs[name]

    async def info(self, name: str) -> ProcessInfo:
        return await self[name].info(name)

    async def start(self, name: str) -> None:
        await self[name].start(name)

    async def stop(self, name: str) -> None:
        await self[name].stop(name)

    async def tail_log(self, name: str, nbytes: int = 4096) -> str:
        return await self[name].tail_log(name, nbytes)

    async def probe(self, base_url: str) -> bool:
        port = int(base_url.rsplit(":", 1)[1])
        owner = next((s for s in self.programs.values() if s.started_plans and s.started_plans[-1].port == port), None)
        return owner is not None and await owner.probe(base_url)

    def starts(self) -> int:
        return sum(len(s.started_plans) for s in self.programs.values())


def make_group(run_dir: Path, config: "Config", engine: str = "llamacpp", ledger: MemoryLedger | None = None
               ) -> tuple["EngineGroup", FakeSupervisors, RecordingEvents]:
    """An engine's instances (router/engine_group.py) over fake programs."""
    from router.engine_group import EngineGroup
    supervisors, events = FakeSupervisors(run_dir), RecordingEvents()
    group = EngineGroup(engine, config, supervisors, run_dir, probe=supervisors.probe, events=events, ledger=ledger)
    return group, supervisors, events


class RecordingEvents:
    def __init__(self) -> None:
        self.moves: list[tuple[str, str]] = []
        self.restarts = 0
        self.loads: list[tuple[str, bool]] = []
        self.swapped_in: list[str] = []
        self.waits: list[float] = []
        self.waiting: dict[str, int] = {}
        self.on_demand_failures: list[tuple[str, str]] = []

    def engine_moved(self, engine, source, target) -> None:
        self.moves.append((source.value, target.value))

    def engine_restarted(self, engine) -> None:
        self.restarts += 1

    def observe_load(self, engine, model, seconds, ok) -> None:
        self.loads.append((model, ok))

    def model_swapped(self, engine, model) -> None:
        self.swapped_in.append(model)

    def waited(self, engine, seconds) -> None:
        self.waits.append(seconds)

    def waiting_changed(self, engine, by_model) -> None:
        self.waiting = dict(by_model)

    def on_demand_failed(self, engine, model, refused) -> None:
        self.on_demand_failures.append((model, "refused" if refused else "failed"))


def make_manager(run_dir: Path, supervisor: FakeSupervisor | None = None, port: int = 18002,
                 engine: str = "llamacpp", ledger: MemoryLedger | None = None,
                 **router: float) -> tuple[EngineManager, FakeSupervisor, RecordingEvents]:
    supervisor = supervisor or FakeSupervisor(run_dir)
    events = RecordingEvents()
    settings = RouterSettings(**{"load_timeout_seconds": 5, "request_wait_seconds": 5, "drain_seconds": 5,
                                 **router})
    shared = {"ledger": ledger} if ledger is not None else {}
    manager = EngineManager(engine, EngineSettings(port=port), settings, supervisor, run_dir,
                            probe=supervisor.probe, events=events, **shared)
    return manager, supervisor, events


async def until(predicate, timeout: float = 5.0, what: str = "the condition") -> None:
    """Yield to the event loop until `predicate()` holds (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture(autouse=True)
def no_illegal_transitions(caplog):
    """Any transition outside the table is a bug, wherever it happens (also inside a background task)."""
    caplog.set_level(logging.INFO)
    yield
    illegal = [r.getMessage() for r in caplog.records if "illegal transition" in r.getMessage()]
    assert not illegal, illegal


class Held:
    """One request through the real `admitted` context manager, kept inside it until `release()`: what the
    tests used to do with a bare `__aenter__` (and a hand-made `in_flight -= 1`), with the real exit."""

    def __init__(self, manager: EngineManager, wanted: str | None, load: ModelSpec | None = None,
                 timeout: float = 5, notify=None):
        self._released = asyncio.Event()
        self._served: asyncio.Future = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._run(manager, wanted, load, timeout, notify))

    async def _run(self, manager, wanted, load, timeout, notify) -> ModelSpec:
        async with manager.admitted(wanted, load, timeout, notify) as spec:
            self._served.set_result(spec)
            await self._released.wait()
            return spec

    def done(self) -> bool:
        return self._served.done() or self.task.done()

    async def served(self) -> ModelSpec:
        """The model the request was let through to (inside the block); its error when it was refused."""
        await asyncio.wait({self._served, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if self._served.done():
            return self._served.result()
        return self.task.result()  # raises the refusal

    def cancel(self) -> None:
        """The client hangs up."""
        self.task.cancel()

    async def release(self) -> ModelSpec:
        """The request ends: out of the block through the real exit."""
        self._released.set()
        return await self.task
