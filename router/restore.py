"""At router start, one engine picks up where the run folder says it was: it adopts a running engine that was
started from the plan on file, resumes that plan's load, or loads the configured default; an engine running
without a wanted model is stopped. An unreadable state file is reported and ignored: the router always starts.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from engines.process_group import read_record
from engines.spec import ModelSpec, StateFileError, read_plan, read_resume, unloaded_on_request
from router.engine_state import State
from router.monitor import RUNNING_STATES

if TYPE_CHECKING:
    from router.lifecycle import EngineManager

log = logging.getLogger(__name__)


async def restore(engine: "EngineManager", default: ModelSpec | None) -> None:
    d, unreadable = engine.details, False
    try:
        plan = read_plan(engine.run_dir, engine.name)
    except StateFileError as exc:
        plan, unreadable = None, True
        _report(engine, exc)
    resume = _read(engine, read_resume) if plan is None else None
    record = _read(engine, read_record)
    info = d.process = await engine.proc.info()
    wanted_default = default if default and not unloaded_on_request(engine.run_dir, engine.name) else None
    if info.state in RUNNING_STATES and plan and record and (record.pid, record.plan_id) == (info.pid, plan.id):
        d.spec, d.plan, d.loading_since, engine.monitor.known_pid = plan.spec, plan, time.time(), info.pid
        engine.machine.move(State.LOADING, f"adopted the running engine (pid {info.pid}) at router start")
    elif plan:
        engine.request_load(plan.spec, "resuming the model the run folder asks for")
    elif unreadable and wanted_default:  # the plan on file cannot be read: the default replaces what runs
        engine.request_load(wanted_default, "the configured default model (the run folder's plan is unreadable)")
    elif info.state in RUNNING_STATES:  # not an unload on request: the default may come back later
        engine.spawn(engine.unload(reason="no model is wanted at router start", on_request=False))
    elif resume:
        d.resume_spec, d.unload_reason, d.unloaded_at = resume.spec, resume.reason, resume.unloaded_at
    elif wanted_default:
        engine.request_load(wanted_default, "the configured default model")


def _read(engine: "EngineManager", reader):
    try:
        return reader(engine.run_dir, engine.name)
    except StateFileError as exc:
        _report(engine, exc)
        return None


def _report(engine: "EngineManager", exc: StateFileError) -> None:
    log.error("%s: %s", engine.name, exc)
    engine.details.last_error = str(exc)
