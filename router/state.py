"""Typed keys for what the app shares between handlers (aiohttp's AppKey, no module globals)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from router.config import Config
from router.lifecycle import EngineManager
from router.supervisor import Supervisor

CONFIG = web.AppKey("config", Config)
ENGINES = web.AppKey("engines", dict[str, EngineManager])
HTTP = web.AppKey("http", aiohttp.ClientSession)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
