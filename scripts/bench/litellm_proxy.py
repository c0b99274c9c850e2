"""LiteLLM's proxy as a reference target: a pinned `litellm[proxy]` installed from PyPI into its own venv in the
user cache (on first use), a generated config.yaml that points one model per engine at the engine's own port,
and the proxy started on a free loopback port, waited for, and stopped."""

from __future__ import annotations

import os
import secrets
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

VERSION = "1.108.5"  # newest whose [proxy] extra resolves on PyPI here (see docs/performance.md); never 1.107.0
# Offline and quiet: the bundled cost map instead of fetching it, no telemetry, no database.
ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR",
       "DISABLE_SCHEMA_UPDATE": "True"}


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unified-llm"


def venv_dir() -> Path:
    return cache_root() / f"litellm-{VERSION}"


def ensure_installed(say=print) -> tuple[list[str], float]:
    """The command that runs LiteLLM's proxy CLI, and the seconds spent installing it now (0 when cached).

    ULLM_LITELLM_COMMAND names one already installed (e.g. `litellm`, or `python3 -m litellm.proxy.proxy_cli` on a
    machine without PyPI); otherwise the cached venv's `litellm`, installed on first use. A marker written last
    tells a finished install from an interrupted one, which is started over."""
    if os.environ.get("ULLM_LITELLM_COMMAND"):
        return shlex.split(os.environ["ULLM_LITELLM_COMMAND"]), 0.0
    venv = venv_dir()
    binary, done = venv / "bin" / "litellm", venv / "installed"
    if done.exists():
        return [str(binary)], 0.0
    started = time.monotonic()
    say(f"installing litellm[proxy]=={VERSION} from PyPI into {venv} (once; a minute or two)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                    f"litellm[proxy]=={VERSION}"], check=True)
    done.write_text(VERSION + "\n")
    seconds = time.monotonic() - started
    say(f"litellm installed in {seconds:.0f} s", flush=True)
    return [str(binary)], seconds


def model_name(engine: str) -> str:
    """What a client sends LiteLLM to reach `engine`'s loaded model."""
    return f"{engine}-direct"


def config(engines: dict[str, tuple[int, str]]) -> dict:
    """LiteLLM's config for {engine: (port, served model name)}: each engine's OpenAI server, as it is."""
    return {"model_list": [
        {"model_name": model_name(engine),
         "litellm_params": {"model": f"openai/{served}", "api_base": f"http://127.0.0.1:{port}/v1",
                            "api_key": "none"}}
        for engine, (port, served) in engines.items()]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiteLLMProxy:
    """`with LiteLLMProxy(engines, folder) as proxy:` → `proxy.base_url`, `proxy.pid`; stopped on exit."""

    def __init__(self, engines: dict[str, tuple[int, str]], folder: Path, ready_timeout: float = 180):
        self.engines, self.folder, self.ready_timeout = engines, folder, ready_timeout
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.key = "sk-" + secrets.token_hex(16)  # it refuses to start without one; clients send it
        self.install_seconds = 0.0
        self.start_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> "LiteLLMProxy":
        command, self.install_seconds = ensure_installed()
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = self.folder / "litellm.yaml"
        cfg.write_text(yaml.safe_dump(config(self.engines), sort_keys=False))
        log = (self.folder / "litellm.log").open("wb")
        started = time.monotonic()
        self.process = subprocess.Popen(
            [*command, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(self.port), "--num_workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ENV, "LITELLM_MASTER_KEY": self.key},
            start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"litellm exited with {self.process.returncode}; see {self.folder}/litellm.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/liveliness", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"litellm not ready after {self.ready_timeout:.0f} s; see {self.folder}/litellm.log")

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
