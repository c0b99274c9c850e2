"""A real unified-llm process tree in a temp folder: the project's own supervisord.conf (symlinked, so its
%(here)s is the temp folder), the project venv and models (symlinked), and a models.yaml on free ports."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

PROJECT = Path(__file__).resolve().parent.parent
# Secrets in the environment that starts the session's supervisord, as a user's shell may hold them; the engines
# must not receive them. (The router's own keys would turn keys on for the whole session:
# tests/e2e/test_keys_apply.py has a stack for them.)
DECOY_SECRETS = {"HF_TOKEN": "hf_decoy_session_token", "HUGGING_FACE_HUB_TOKEN": "hf_decoy_session_token"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(method: str, url: str, body: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    """Poll until predicate() is truthy; fail with `what` after `timeout` seconds (never waits forever)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")


def steady(read: Callable[[], int], what: str, timeout: float = 60) -> int:
    """A figure the router samples every 5 s (an engine's memory), once it holds: two reads a sample apart that
    agree within 5 %. Just after a load, /v1/status may still show the last sample of the process before, or of
    this one half loaded."""
    last = 0

    def settled() -> int:
        nonlocal last
        now, previous = read() or 0, last
        last = now
        return now if now and previous and abs(now - previous) <= 0.05 * previous else 0
    return wait_for(settled, timeout, f"{what} to settle", interval=6)


@dataclass
class Stack:
    home: Path
    router_port: int
    engine_ports: dict[str, int]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    @property
    def config_path(self) -> Path:
        return self.home / "config" / "models.yaml"

    def ctl(self, *args: str, check: bool = True) -> str:
        out = subprocess.run([str(PROJECT / ".venv/bin/supervisorctl"), "-c", str(self.home / "supervisord.conf"),
                              *args], capture_output=True, text=True, timeout=120)
        if check and out.returncode not in (0, 3):  # 3: some program is not RUNNING (status output)
            raise RuntimeError(f"supervisorctl {' '.join(args)} failed ({out.returncode}): {out.stdout}{out.stderr}")
        return out.stdout

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 600) -> tuple[int, dict]:
        return http_json(method, self.base_url + path, body, timeout)

    def api_raw(self, method: str, path: str, data: bytes | None, content_type: str | None = "application/json",
                timeout: float = 300) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": content_type} if content_type else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def crashes_on_purpose(self):
        """For a test that kills engines on purpose: the crash-loop guard looks away for the block (new crash
        limits start their count afresh, and so do the shipped ones it puts back)."""
        return self.router_settings(crash_restarts=100)

    @contextlib.contextmanager
    def router_settings(self, **settings):
        """models.yaml's router section changed and reloaded for the block, then put back."""
        original = self.config_path.read_text()
        config = yaml.safe_load(original)
        config["router"].update(settings)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        try:
            status, report = self.api("POST", "/v1/config/reload")
            assert status == 200, report
            yield
        finally:
            self.config_path.write_text(original)
            assert self.api("POST", "/v1/config/reload")[0] == 200

    def status(self) -> dict:
        return self.api("GET", "/v1/status", timeout=10)[1]

    def engine_metric(self, engine: str, name: str) -> float:
        """The sum of an engine's own metric over its series, read through the router."""
        with urllib.request.urlopen(f"{self.base_url}/metrics/engines/{engine}", timeout=10) as resp:
            text = resp.read().decode()
        pattern = rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$"
        values = re.findall(pattern, text, re.M)
        assert values, f"{name} is not among {engine}'s metrics"  # a misspelt name must not read as 0
        return sum(float(v) for v in values)

    def router_metric(self, name: str, **labels: str) -> float:
        """The sum of the router's own metric over the series whose labels include `labels` (0 when none has
        been recorded yet: the router creates labelled series as events happen)."""
        with urllib.request.urlopen(f"{self.base_url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        family = re.sub(r"_(total|count|sum|bucket)$", "", name)
        exported = re.search(rf"^# TYPE {re.escape(family)}(_total)? ", text, re.M)
        assert exported, f"the router exports no {family}"  # a misspelt name must not read 0
        total = 0.0
        for series, value in re.findall(rf"^{re.escape(name)}(?:{{([^}}]*)}})? ([0-9.e+-]+)$", text, re.M):
            found = dict(re.findall(r'(\w+)="([^"]*)"', series))
            if all(found.get(key) == want for key, want in labels.items()):
                total += float(value)
        return total

    def router_log(self) -> str:
        """The router's log, rotated parts included."""
        logs = sorted((self.home / "run" / "logs").glob("router.log*"), reverse=True)
        return "".join(path.read_text(errors="replace") for path in logs)

    def engine_pid(self, engine: str) -> int:
        return self.status()[engine]["pid"]

    def wait_loaded(self, engine: str, timeout: float = 300) -> dict:
        def loaded():
            try:
                state = self.status()[engine]
            except (OSError, KeyError, ValueError):
                return None
            if state["status"] == "error":
                raise AssertionError(f"{engine} went to error: {state['last_error']}")
            return state if state["status"] == "loaded" else None
        return wait_for(loaded, timeout, f"{engine} to be loaded")

    def start(self, env: dict[str, str] | None = None) -> None:
        """`env`: variables added to the environment supervisord (and so every program) starts with."""
        (self.home / "run" / "logs").mkdir(parents=True, exist_ok=True)
        subprocess.run([str(PROJECT / ".venv/bin/supervisord"), "-c", str(self.home / "supervisord.conf")],
                       check=True, timeout=60, env={**os.environ, **(env or {})})
        wait_for(lambda: self._router_up(), 60, "the router to answer")

    def _router_up(self) -> bool:
        try:
            return http_json("GET", self.base_url + "/health", timeout=2)[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        pid_file = self.home / "run" / "supervisord.pid"
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        self.ctl("shutdown", check=False)
        if pid:
            try:
                wait_for(lambda: not _alive(pid), 60, "supervisord to exit")
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)


def engine_environ(pid: int) -> dict[str, str]:
    """The environment a process was started with (/proc/<pid>/environ)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def make_stack(home: Path, edit: Callable[[dict], None] | None = None, plumbing: bool = True) -> Stack:
    """Lay out `home` like a checkout and write a models.yaml on free ports (the shipped one otherwise, changed
    by `edit` when given). `plumbing`: the tiny models are the defaults; else the shipped (real) ones."""
    for name in ("supervisord.conf", ".venv", "models"):
        (home / name).symlink_to(PROJECT / name)
    config = yaml.safe_load((PROJECT / "config" / "models.yaml").read_text())
    router_port, ports = free_port(), {engine: free_port() for engine in config["engines"]}
    # request_wait_seconds, load_timeout_seconds and the crash limits stay as shipped (120 s: shorter than a real
    # model's vLLM load; 600 s; 3 restarts in 300 s): tests that kill engines on purpose set their own
    # (`Stack.router_settings`), tests that need a wait longer than a load say so the same way
    config["router"].update(host="127.0.0.1", port=router_port, model_roots=["models", "scratch"],
                            body_read_timeout_seconds=5)  # the trickled-body tests wait 5 s, not 60
    for engine, port in ports.items():
        config["engines"][engine]["port"] = port
    if plumbing:  # the tiny models: a 3,000 tok/s engine makes the fault, swap and load tests quick
        config["engines"]["vllm"]["default_model"] = "tiny-llama-a"
        config["engines"]["llamacpp"]["default_model"] = "tiny-llama-a-gguf"
    if edit:
        edit(config)
    (home / "scratch").mkdir()  # a second model root for files the tests make (corrupt models, symlinks)
    (home / "config").mkdir()
    (home / "config" / "models.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return Stack(home=home, router_port=router_port, engine_ports=ports)
