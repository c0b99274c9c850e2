"""Peers: other routers (or any OpenAI-compatible server) whose models this router serves, configured under
`peers:` in models.yaml (docs/scale-out.md).

Each peer is probed in the background: `GET /health` within its connect and first-byte timeouts, every
probe_interval_seconds while it answers. One failure marks it down: its models are refused at once (503) instead
of hanging, and it is probed again after 1, 2, 4... seconds (at most max_backoff_seconds apart) until it
answers. A peer whose /health is a unified-llm router's also lends its catalog (`/v1/models`, refreshed), its
figures (`/v1/status`, at most a second old when a request has to choose between here and there) and its admin
API (loads and unloads there). What a peer is sent carries the peer's own key from the environment variable its
settings name, never a key of this router.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import aiohttp

from router.auth import Keys
from router.config import Config, PeerSettings
from router.errors import ApiError, InvalidRequest

log = logging.getLogger(__name__)

FIGURES_MAX_AGE = 1.0  # seconds: how old a peer's /v1/status may be when a request chooses a side
FIRST_BACKOFF = 1.0  # seconds before the first probe of a peer that just went down; doubled at each failure
# Sent with every request forwarded to a peer: a router never forwards a request that carries it again, so two
# routers that list each other cannot pass one request back and forth.
HOP_HEADER = "X-Unified-LLM-Peer-Hop"


class PeerDown(ApiError):
    status = 503
    type = "server_error"


class Health(enum.Enum):
    UNKNOWN = "unknown"  # not probed yet
    UP = "up"
    DOWN = "down"


class PeerHealth:
    """Whether a peer answers, since when, and when to look again. One failure (no connection, no answer within
    the timeouts) marks it down; each further one doubles the wait before the next probe, up to the maximum."""

    def __init__(self, settings: PeerSettings, clock: Callable[[], float] = time.monotonic):
        self.settings, self.clock = settings, clock
        self.state, self.since, self.changed_at = Health.UNKNOWN, clock(), time.time()
        self.failures = 0  # in a row
        self.last_error: str | None = None
        self.latency: float | None = None  # seconds the last successful probe took
        self.next_probe = clock()  # at once

    def succeeded(self, latency: float) -> bool:
        """Record an answer; True when the peer was not up before."""
        came_up = self._move(Health.UP)
        self.failures, self.latency = 0, latency
        self.next_probe = self.clock() + self.settings.probe_interval_seconds
        return came_up

    def failed(self, error: str) -> bool:
        """Record a failure; True when the peer was not down before."""
        went_down = self._move(Health.DOWN)
        self.failures += 1
        self.last_error = error
        self.next_probe = self.clock() + self.backoff()
        return went_down

    def backoff(self) -> float:
        return min(FIRST_BACKOFF * 2 ** max(0, self.failures - 1), self.settings.max_backoff_seconds)

    def probe_soon(self) -> None:
        """Something looked wrong (a request to it failed): probe at once rather than at the next interval."""
        self.next_probe = min(self.next_probe, self.clock())

    def seconds_to_probe(self) -> float:
        return max(0.0, self.next_probe - self.clock())

    @property
    def refuses(self) -> bool:
        return self.state is Health.DOWN

    def _move(self, target: Health) -> bool:
        if self.state is target:
            return False
        self.state, self.since, self.changed_at = target, self.clock(), time.time()
        return True

    def why_down(self, name: str) -> str:
        down_for = self.clock() - self.since
        return (f"peer {name} is down (for {down_for:.0f} s, {self.failures} failed probe(s): {self.last_error}); "
                f"it is probed again in {self.seconds_to_probe():.0f} s")


@dataclass(frozen=True)
class PeerModel:
    """A model as the peer lists it."""
    name: str
    engine: str | None = None
    state: str | None = None
    resident: bool | None = None  # None: the peer does not say (not a unified-llm router)
    aliases: tuple[str, ...] = ()


class PeerEvents(Protocol):
    def peer_probed(self, peer: str, up: bool, seconds: float | None) -> None: ...

    def forget_peer(self, peer: str) -> None: ...


class Peer:
    def __init__(self, name: str, settings: PeerSettings, http: aiohttp.ClientSession, own_keys: Keys,
                 events: PeerEvents | None = None):
        self.name, self.settings, self.http, self.own_keys, self.events = name, settings, http, own_keys, events
        self.health = PeerHealth(settings)
        self.kind = None if settings.kind == "auto" else settings.kind  # known after the first answer when auto
        self.models: dict[str, PeerModel] = {m: PeerModel(m) for m in settings.models or []}
        self.models_at: float | None = None  # when the list was last discovered (monotonic)
        self.status: dict | None = None  # its /v1/status, for a unified-llm peer
        self.status_at: float | None = None
        self.in_flight: Counter[str] = Counter()  # this router's requests to it, by the peer's model name
        self.answers: set = set()  # its answers being relayed or waited for, each with a close() (router/proxy.py)
        self.wake = asyncio.Event()
        self._status_fetch: asyncio.Task | None = None

    @property
    def is_router(self) -> bool:
        return self.kind == "unified-llm"

    # ---- what it is sent ------------------------------------------------------------------------------------

    def key(self, admin: bool = False) -> str | None:
        """The peer's key from the environment; never one of this router's own keys (refused with an error)."""
        variable = (self.settings.admin_key_env if admin else None) or self.settings.api_key_env
        if not variable:
            return None
        key = os.environ.get(variable, "").strip()
        if not key:
            raise ApiError(f"peer {self.name}'s key variable {variable} is not set in the router's environment",
                           code="peer_key_missing", status=503)
        if key in (*self.own_keys.api, *self.own_keys.admin_only):
            raise ApiError(f"{variable} holds one of this router's own keys; a peer is never sent them: give "
                           f"{self.name} its own key", code="peer_key_refused", status=503)
        return key

    def headers(self, admin: bool = False) -> dict[str, str]:
        key = self.key(admin)
        return {HOP_HEADER: "1", **({"Authorization": f"Bearer {key}"} if key else {})}

    def timeout(self, read: float | None = None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout_seconds,
                                     sock_read=read or self.settings.first_byte_timeout_seconds)

    async def call(self, method: str, path: str, body: Any = None, admin: bool = False,
                   read_timeout: float | None = None, key: bool = True) -> tuple[int, Any]:
        """One JSON request to the peer: (status, decoded body). Connection failures raise aiohttp's errors."""
        headers = self.headers(admin) if key else {HOP_HEADER: "1"}
        async with self.http.request(method, self.settings.url + path, json=body, headers=headers,
                                     timeout=self.timeout(read_timeout)) as response:
            data = await response.read()
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, {"error": {"message": data[:500].decode(errors="replace"),
                                               "type": "server_error", "code": "peer_answer_not_json"}}

    # ---- probing --------------------------------------------------------------------------------------------

    async def probe(self) -> None:
        started = time.monotonic()
        try:
            status, body = health = await self.call("GET", "/health", key=False)
            if 400 <= status < 500:  # another OpenAI-compatible server: no /health, or one behind its key
                status, body = await self.call("GET", "/v1/models")
            if status != 200:
                raise PeerProblem(f"{'/health' if health[0] >= 500 else '/v1/models'} answered {status}: "
                                  f"{_message(body)}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, PeerProblem, ApiError) as exc:
            if self.health.failed(_describe(exc, self.settings)):
                self.went_down()
            if self.events:
                self.events.peer_probed(self.name, False, None)
            return
        latency = time.monotonic() - started
        if self.settings.kind == "auto":
            answer = health[1]
            self.kind = "unified-llm" if health[0] == 200 and isinstance(answer, dict) and "engines" in answer \
                and "ready" in answer else "openai"
        came_up = self.health.succeeded(latency)
        if came_up:
            log.info("peer %s is up (%s, %.0f ms)", self.name, self.kind, latency * 1000)
        if self.events:
            self.events.peer_probed(self.name, True, latency)
        stale = self.models_at is None or time.monotonic() - self.models_at > self.settings.refresh_seconds
        if self.settings.models is None and (came_up or stale):
            await self.refresh_models()

    async def refresh_models(self) -> None:
        """List the peer's models again (not those it serves from its own peers: no chains)."""
        try:
            status, body = await self.call("GET", "/v1/models")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ApiError) as exc:
            log.warning("peer %s: listing its models failed: %s", self.name, _describe(exc, self.settings))
            return
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
            log.warning("peer %s: /v1/models answered %s: %s", self.name, status, _message(body))
            return
        models = {}
        for entry in body["data"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or entry.get("peer"):
                continue
            aliases = entry.get("aliases") if isinstance(entry.get("aliases"), list) else []
            models[entry["id"]] = PeerModel(entry["id"], entry.get("engine"), entry.get("state"),
                                            entry.get("resident"), tuple(a for a in aliases if isinstance(a, str)))
        self.models, self.models_at = models, time.monotonic()

    async def run(self) -> None:
        """Probe whenever due (or at once when woken), for as long as the peer is configured."""
        while True:
            self.wake.clear()
            if self.health.seconds_to_probe() <= 0:
                await self.probe()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.05, self.health.seconds_to_probe()))

    def suspect(self) -> None:
        """A request to the peer failed on the way: probe it now."""
        self.health.probe_soon()
        self.wake.set()

    def unreachable(self, error: str) -> None:
        """A request could not connect: down at once (the probe brings it back)."""
        if self.health.failed(error):
            self.went_down()
        self.wake.set()

    def went_down(self) -> None:
        """Answers still being relayed from it end now (an error event, a 502), not at the read timeout: a box
        that vanished without closing its connections would leave them waiting."""
        log.warning("peer %s is down: %s", self.name, self.health.last_error)
        for answer in list(self.answers):
            answer.close()

    # ---- figures ----------------------------------------------------------------------------------------------

    async def figures(self, max_age: float = FIGURES_MAX_AGE) -> dict | None:
        """Its /v1/status, at most `max_age` old (fetched once for all the requests that want it meanwhile);
        None for a peer that is not a unified-llm router or did not answer."""
        if not self.is_router or self.health.refuses:
            return None
        if self.status_at is not None and time.monotonic() - self.status_at <= max_age:
            return self.status
        if self._status_fetch is None or self._status_fetch.done():
            self._status_fetch = asyncio.ensure_future(self._fetch_status())
        return await asyncio.shield(self._status_fetch)

    async def _fetch_status(self) -> dict | None:
        try:
            status, body = await self.call("GET", "/v1/status", key=False)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.suspect()
            log.info("peer %s: its status could not be read: %s", self.name, _describe(exc, self.settings))
            return self.status
        if status == 200 and isinstance(body, dict):
            self.status, self.status_at = body, time.monotonic()
        return self.status

    def load_of(self, model: str) -> tuple[bool, int]:
        """(resident, requests in flight and waiting) for `model` on the peer, from its last figures and this
        router's own requests to it (more than the figures when they were sent after them)."""
        ours = self.in_flight[model]
        if not self.is_router:
            return True, ours  # a plain server serves what it lists
        resident, theirs = False, 0
        for engine in (self.status or {}).values():
            for instance in engine.get("instances", []) if isinstance(engine, dict) else []:
                if instance.get("model") == model and instance.get("state") in ("loaded", "loading"):
                    resident = True
                    theirs += int(instance.get("in_flight") or 0) + int(instance.get("waiting") or 0)
        return resident, max(ours, theirs)

    # ---- names --------------------------------------------------------------------------------------------

    def model_named(self, name: str) -> str | None:
        """The peer's name for `name` (one of its models or their aliases), if it lists it."""
        if name in self.models:
            return name
        return next((m.name for m in self.models.values() if name in m.aliases), None)

    def report(self, for_admin: bool) -> dict:
        h = self.health
        return {"url": self.settings.url if for_admin else None, "kind": self.kind, "health": h.state.value,
                "since": h.changed_at, "failures": h.failures, "last_error": h.last_error,
                "latency_ms": round(h.latency * 1000, 1) if h.latency is not None else None,
                "next_probe_seconds": round(h.seconds_to_probe(), 1),
                "models": sorted(self.models), "models_from": "config" if self.settings.models is not None
                else "discovered", "in_flight": sum(self.in_flight.values()), "prefer": self.settings.prefer}


async def act_on_peer(peer: Peer, path: str, body: dict, read_timeout: float) -> tuple[int, Any]:
    """POST an admin request (a load, an unload) to a unified-llm peer with its admin key: (status, its answer,
    with `peer` added). A peer that is down, or is not a unified-llm router, is refused here."""
    if peer.health.refuses:
        raise PeerDown(peer.health.why_down(peer.name), code="peer_down", retry_after=peer.health.seconds_to_probe())
    if not peer.is_router:
        raise InvalidRequest(f"peer {peer.name} is {'an OpenAI-compatible server' if peer.kind else 'not probed yet'}"
                             f", not a unified-llm router: it has no admin API to load or unload models",
                             param="peer", code="peer_not_a_router")
    try:
        status, answer = await peer.call("POST", path, body, admin=True, read_timeout=read_timeout)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        peer.suspect()
        raise PeerDown(f"peer {peer.name} failed during {path}: {_describe(exc, peer.settings)}",
                       code="peer_failed") from exc
    peer.status_at = None  # its figures changed
    if status == 200:
        await peer.refresh_models()
    if isinstance(answer, dict):
        answer["peer"] = peer.name
    return status, answer


class PeerProblem(Exception):
    pass


def _message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message"))[:300]
    return str(body)[:300]


def _describe(exc: BaseException, settings: PeerSettings) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"no connection within {settings.connect_timeout_seconds:g} s"
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within {settings.first_byte_timeout_seconds:g} s"
    if isinstance(exc, ApiError):
        return exc.message
    return str(exc) or type(exc).__name__


class Peers:
    """The configured peers, each with its probe task; a reload adds, replaces and removes them."""

    def __init__(self, http: aiohttp.ClientSession, own_keys: Keys, events: PeerEvents | None = None):
        self.http, self.own_keys, self.events = http, own_keys, events
        self.peers: dict[str, Peer] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    def configure(self, config: Config) -> dict[str, list[str]]:
        """Match the peers to `config`: a peer whose settings changed starts afresh. What changed, by name."""
        wanted = config.peers
        changes = {"added": sorted(set(wanted) - set(self.peers)),
                   "removed": sorted(set(self.peers) - set(wanted)),
                   "changed": sorted(n for n in set(wanted) & set(self.peers) if wanted[n] != self.peers[n].settings)}
        for name in changes["removed"] + changes["changed"]:
            self.tasks.pop(name).cancel()
            del self.peers[name]
            if self.events:
                self.events.forget_peer(name)
        for name in changes["added"] + changes["changed"]:
            peer = self.peers[name] = Peer(name, wanted[name], self.http, self.own_keys, self.events)
            self.tasks[name] = asyncio.ensure_future(peer.run())
        return changes

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()

    def named(self, name: str) -> Peer:
        if name not in self.peers:
            raise InvalidRequest(f"unknown peer {name!r}; configured: {', '.join(self.peers) or 'none'}",
                                 param="peer", code="unknown_peer")
        return self.peers[name]

    def explicit(self, requested: str) -> tuple[Peer, str] | None:
        """`peer/model`: that peer, and the model's name there."""
        prefix, sep, model = requested.partition("/")
        if sep and model and prefix in self.peers:
            return self.peers[prefix], model
        return None

    def listing(self, requested: str) -> list[tuple[Peer, str]]:
        """Every peer that lists `requested` (by name or alias), with its name there."""
        return [(peer, model) for peer in self.peers.values() if (model := peer.model_named(requested))]
