"""The router's environment settings as the last `scripts/up.sh` gave them: keys, host, port, log level, and the
variables models.yaml's peers take their keys from (`api_key_env`, `admin_key_env`).

supervisord gives a program the environment supervisord itself was started with. `up.sh` run again while
supervisord runs only restarts the router, which would then keep that old environment: new keys would be
silently ignored and the router left open. So up.sh writes its own values of NAMES to `run/router-env.json`
(0600) with the PID of the supervisord it applies to, then restarts the router; the router applies the file at
start, before it reads any of them, when its parent is that supervisord. A name up.sh ran without is unset. A
supervisord started later (a fresh `up.sh`, or by hand) has another PID: the file no longer applies.

`python -m router.router_env write RUN_DIR SUPERVISORD_PID` (up.sh) writes the file and prints which settings
changed, never their values.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Mapping

from engines.spec import write_atomically

NAMES = ("ULLM_API_KEY", "ULLM_ADMIN_KEY", "ULLM_ROUTER_HOST", "ULLM_ROUTER_PORT", "ULLM_LOG_LEVEL")
FILE_NAME = "router-env.json"


def env_file(run: Path) -> Path:
    return run / FILE_NAME


def governed() -> tuple[str, ...]:
    """NAMES, and the peers' key variables that models.yaml names (none when it cannot be read)."""
    from router.config import ConfigError, load_config
    try:
        peers = load_config().peers.values()
    except ConfigError:
        return NAMES
    return NAMES + tuple(sorted({v for p in peers for v in (p.api_key_env, p.admin_key_env) if v} - set(NAMES)))


def _recorded(run: Path, supervisord_pid: int) -> tuple[tuple[str, ...], dict[str, str]] | None:
    try:
        raw = json.loads(env_file(run).read_text())
        if raw["supervisord_pid"] != supervisord_pid:
            return None
        names = tuple(str(n) for n in raw.get("names", NAMES))
        return names, {name: str(value) for name, value in raw["env"].items() if name in names}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def read(run: Path, supervisord_pid: int) -> dict[str, str] | None:
    """The settings recorded for that supervisord, or None (no file, another supervisord's, unreadable)."""
    recorded = _recorded(run, supervisord_pid)
    return recorded[1] if recorded else None


def write(run: Path, supervisord_pid: int, environ: Mapping[str, str],
          names: tuple[str, ...] = NAMES) -> dict[str, str]:
    settings = {name: environ[name] for name in names if environ.get(name)}
    write_atomically(env_file(run), json.dumps({"supervisord_pid": supervisord_pid, "names": list(names),
                                                "env": settings}))
    return settings


def apply(run: Path, environ=os.environ) -> dict[str, str] | None:
    """Make the recorded settings the router's own (called first thing at start); None when none apply."""
    recorded = _recorded(run, os.getppid())
    settings = recorded[1] if recorded else None
    if recorded is not None:
        for name in recorded[0]:
            if name in settings:
                environ[name] = settings[name]
            else:
                environ.pop(name, None)
    return settings


def process_environ(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def changes(before: Mapping[str, str] | None, after: Mapping[str, str], names: tuple[str, ...] = NAMES) -> list[str]:
    """What changed, by name and set/unset only: the values may be secrets."""
    def shown(settings: Mapping[str, str], name: str) -> str:
        return "set" if settings.get(name) else "unset"
    if before is None:
        return [f"{name} {shown(after, name)}" for name in names]
    return [f"{name} {shown(before, name)} -> {shown(after, name)}" if before.get(name) != after.get(name)
            else f"{name} unchanged ({shown(after, name)})" for name in names]


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "write" or not argv[2].isdigit():
        print("usage: python -m router.router_env write RUN_DIR SUPERVISORD_PID", file=sys.stderr)
        return 64
    run, pid, names = Path(argv[1]), int(argv[2]), governed()
    before = read(run, pid)
    if before is None:  # the first rerun since supervisord started: it runs with its own environment
        started_with = process_environ(pid)
        before = {n: started_with[n] for n in names if started_with.get(n)} if started_with is not None else None
    after = write(run, pid, os.environ, names)
    print(f"router settings from this shell ({env_file(run)}): {', '.join(changes(before, after, names))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
