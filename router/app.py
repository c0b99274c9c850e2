"""The app factory: shared state, middlewares, routes, and the background tasks tied to the app's life."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import Counter
from pathlib import Path
from typing import AsyncIterator, Callable

from aiohttp import web

from router.auth import Keys, auth_middleware
from router.browser_guard import add_cors_headers, browser_guard
from router.config import Config, config_path, run_dir
from router.errors import ApiError, MethodNotAllowed, NotFound, PayloadTooLarge, error_response
from router.handlers import admin, logs, openai_api, openapi, peers, ui
from router import http_errors, supervisor_events
from router.handlers import metrics as metrics_routes
from router.engine_state import State
from router.engine_group import EngineGroup, instance_names
from router.lifecycle import EngineManager
from engines.spec import ModelSpec
from router.memory_guard import MemoryLedger
from router.models import resolve_spec
from router.proxy import engine_session
from router.reload import reload
from router.requests import json_bodies
from router.metrics import RouterMetrics
from router.exposure import bind_address, exposure_warnings
from router.peers import Peers
from router.state import (CONFIG, ENGINES, HTTP, KEYS, LOG_FOLLOWERS, METRICS, PEERS, SUPERVISOR, WARNINGS,
                          LiveConfig)
from router.supervisor import Supervisor, SupervisorError

log = logging.getLogger(__name__)
MONITOR_INTERVAL = 0.5
# Once supervisord's events arrive they report every process change, and the monitor looks on its own only this
# often while every engine is settled (loaded, idle or in error): a py-spy profile of the router at 64 and 256
# streams found its XML-RPC polling and the threads running it at 8-11% of the router's CPU samples.
SETTLED_INTERVAL = 5.0


@web.middleware
async def openai_errors(request: web.Request, handler) -> web.StreamResponse:
    """Render every failure, ours or aiohttp's (404, 405, 413), as OpenAI-style JSON."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPNotFound:
        return error_response(NotFound(f"no route for {request.method} {request.path}", code="unknown_route"))
    except web.HTTPMethodNotAllowed as exc:
        return error_response(MethodNotAllowed(f"{request.method} is not allowed on {request.path}; use "
                                               f"{', '.join(sorted(exc.allowed_methods))}", code="method_not_allowed"),
                              headers={"Allow": ",".join(sorted(exc.allowed_methods))})
    except web.HTTPRequestEntityTooLarge:
        return error_response(PayloadTooLarge(f"request body is larger than the limit of "
                                              f"{request.app[CONFIG].current.router.max_body_bytes} bytes",
                                              code="body_too_large"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(ApiError(exc.reason, status=exc.status, code=f"http_{exc.status}"))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # a bug: answer cleanly, keep serving, log the trace
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ApiError(f"internal router error: {exc!r}", code="internal_error"))


def instances_of(engines: dict[str, EngineGroup]) -> list[EngineManager]:
    return [instance for group in engines.values() for instance in group.instances]


def monitor_interval(instances: list[EngineManager], events_arrive: bool) -> float:
    """How long the monitor may wait before it looks again: a loading or stopping engine is followed every
    MONITOR_INTERVAL (its readiness comes from polling it), as is every engine while supervisord's events are not
    (yet) arriving; otherwise the events wake it and it only checks every SETTLED_INTERVAL."""
    settled = all(m.state in (State.LOADED, State.IDLE, State.ERROR) for m in instances)
    return SETTLED_INTERVAL if events_arrive and settled else MONITOR_INTERVAL


async def monitor(engines: dict[str, EngineGroup], wake: asyncio.Event, events_arrive: Callable[[], bool]) -> None:
    """Follow each engine, and at once when supervisord reports a change (`wake`)."""
    while True:
        wake.clear()  # an event during this round wakes the next one
        for manager in instances_of(engines):
            try:
                await manager.refresh()
                manager.unload_if_idle()
            except SupervisorError as exc:  # supervisord restarting or shutting down: try again next round
                log.warning("monitor: %s", exc)
            except Exception:
                log.exception("monitor: refreshing %s failed", manager.name)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), monitor_interval(instances_of(engines), events_arrive()))


async def restore_models(config: Config, engines: dict[str, EngineGroup]) -> None:
    """At start, adopt each running engine instance or bring it back to its last model, else (instance 0) its
    configured default. Runs before the router accepts requests, so no one sees an engine that is about to load
    as idle."""
    for name, group in engines.items():
        spec, skipped = default_spec(config, name)
        if skipped:
            group.instances[0].details.last_error = "; ".join(skipped)
            log.warning("%s: %s", name, "; ".join(skipped))
        for instance in group.instances:
            await instance.restore(spec if instance.index == 0 else None)


def default_spec(config: Config, engine: str) -> tuple[ModelSpec | None, list[str]]:
    """The first of the engine's default models that resolves (its files are on disk), and why each one before it
    did not: a setup that could not build the real models leaves the tiny ones as the default."""
    skipped = []
    for default in config.engines[engine].default_models:
        try:
            spec = resolve_spec(config, default, engine, {})
        except ApiError as exc:
            skipped.append(f"default model {default!r}: {exc.message}")
            continue
        if skipped:
            skipped.append(f"loading {default!r} instead")
        return spec, skipped
    return None, skipped


async def reload_on_sighup(app: web.Application) -> None:
    try:
        await asyncio.shield(reload(app[CONFIG], app[ENGINES], app[PEERS]))
    except ApiError as exc:
        log.error("SIGHUP reload refused: %s", exc.message)


def create_app(config: Config, run_path: Path | None = None, config_file: Path | None = None) -> web.Application:
    run_path = run_path or run_dir()
    http_errors.install()  # the HTTP parser's own 400s in the OpenAI error shape too
    keys = Keys.from_env()
    # the browser's rules first: a preflight carries no key, and a refused cross-site request learns nothing more
    app = web.Application(middlewares=[openai_errors, browser_guard(keys), json_bodies, auth_middleware(keys)],
                          client_max_size=config.router.max_body_bytes)
    app.on_response_prepare.append(add_cors_headers)
    app[KEYS] = keys
    app[WARNINGS] = exposure_warnings(*bind_address(config), keys)
    app[CONFIG] = LiveConfig(config, config_file or config_path())
    app[SUPERVISOR] = Supervisor(run_path / "supervisor.sock")
    app[METRICS] = RouterMetrics()
    app[LOG_FOLLOWERS] = Counter()

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        app[HTTP] = engine_session()
        app[PEERS] = Peers(app[HTTP], keys, app[METRICS])
        app[PEERS].configure(config)
        ledger = MemoryLedger(settle_seconds=config.router.memory_settle_seconds)  # one for every engine
        samples = app[METRICS].processes.samples

        def watch(manager: EngineManager) -> None:
            """An instance placement may use: its metrics are exported from now on (never for the instances
            beyond max_instances, which would be idle series on every dashboard)."""
            app[METRICS].watch(manager.name, lambda: manager.state, lambda: manager.in_flight,
                               lambda: manager.waiting)
        engines = app[ENGINES] = {
            name: EngineGroup(name, config, app[SUPERVISOR], run_path, app[HTTP], events=app[METRICS], ledger=ledger,
                              watch=watch)
            for name in config.engines}
        for manager in instances_of(engines):
            manager.others_memory = lambda me=manager.name: {name: int(sample.rss_bytes or 0) for name, sample
                                                             in samples.items() if name != me}
        await restore_models(config, engines)

        def engine_pids() -> dict[str, int]:
            return {m.name: m.details.process.pid if m.details.process else 0 for group in engines.values()
                    for m in group.shown()}
        wake, heard = asyncio.Event(), False

        def on_supervisor_event(program: str, event: str) -> None:
            nonlocal heard
            heard = True  # the listener works: the monitor can rely on it
            if program in instance_names(engines):
                log.info("supervisord: %s %s", program, event)
                app[METRICS].supervisor_events.labels(program, event).inc()
                wake.set()
        events = supervisor_events.receive(run_path / supervisor_events.SOCKET_NAME, on_supervisor_event)
        tasks = [asyncio.ensure_future(monitor(engines, wake, lambda: heard)),
                 asyncio.ensure_future(app[METRICS].sample_processes(engine_pids))]
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: tasks.append(asyncio.ensure_future(reload_on_sighup(app))))
        yield
        loop.remove_signal_handler(signal.SIGHUP)
        if events:
            events.close()
        await app[PEERS].close()
        await asyncio.gather(*(manager.close() for manager in instances_of(engines)))
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await app[HTTP].close()

    app.cleanup_ctx.append(lifespan)
    app.add_routes(admin.routes)
    app.add_routes(logs.routes)
    app.add_routes(openai_api.routes)
    app.add_routes(openapi.routes)
    app.add_routes(peers.routes)
    app.add_routes(metrics_routes.routes)
    app.add_routes(ui.routes)
    return app



