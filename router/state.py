"""Typed keys for what the app shares between handlers (aiohttp's AppKey, no module globals)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from router.auth import Keys
from router.config import Config
from router.engine_group import EngineGroup
from router.metrics import RouterMetrics
from router.peers import Peers
from router.supervisor import Supervisor


@dataclass
class LiveConfig:
    """The config in force; `POST /v1/config/reload` and SIGHUP swap `current` for the re-read file."""
    current: Config
    path: Path


CONFIG = web.AppKey("config", LiveConfig)
ENGINES = web.AppKey("engines", dict[str, EngineGroup])  # by engine name: its instances
HTTP = web.AppKey("http", aiohttp.ClientSession)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
METRICS = web.AppKey("metrics", RouterMetrics)
LOG_FOLLOWERS = web.AppKey("log_followers", Counter)  # open `follow=1` log streams, per engine
KEYS = web.AppKey("keys", Keys)
PEERS = web.AppKey("peers", Peers)  # other routers whose models this one serves (router/peers.py)
WARNINGS = web.AppKey("warnings", list)  # about how the router is exposed; logged at start, shown in /v1/status
