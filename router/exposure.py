"""Who can reach the router: the address it binds, and the warning when that is wider than loopback while the
admin endpoints (load, unload, reload, engine logs) are open to whoever connects."""

from __future__ import annotations

import ipaddress
import os

from router.auth import Keys
from router.config import Config


def bind_address(config: Config) -> tuple[str, int]:
    """Where the router listens: router.host/port, overridden by ULLM_ROUTER_HOST/ULLM_ROUTER_PORT."""
    host = os.environ.get("ULLM_ROUTER_HOST") or config.router.host
    return host, int(os.environ.get("ULLM_ROUTER_PORT", config.router.port))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it resolves to some interface's address
        return False


def exposure_warnings(host: str, port: int, keys: Keys) -> list[str]:
    if is_loopback(host) or keys.admin:
        return []
    return [f"the router listens on {host}:{port} without an admin key: anyone who can reach that address can "
            f"load and unload models, read engine logs and run inference. Set ULLM_ADMIN_KEY (and ULLM_API_KEY) "
            f"or bind router.host to 127.0.0.1"]
