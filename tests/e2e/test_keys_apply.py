"""Keys apply when the user sets them: the real scripts/up.sh, run in a temp folder laid out like a checkout,
first without keys, then again with keys while supervisord runs (only the router restarts, and must take the
new keys), then without them again; then a fresh start with keys, whose engine must not receive them.

Its own small stack, llama.cpp only (vLLM neither loads nor loads on demand): the keys change what every request
needs, so they cannot be tried on the session's stack. up.sh's installer is replaced by a stub in the temp
folder (everything is installed already); up.sh itself, wait_ready.py and the router are the project's."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from engines.environment import QUIET
from tests.stack import PROJECT, Stack, engine_environ, http_json, make_stack

API_KEY, ADMIN_KEY = "user-key-6b1f0c", "admin-key-93ad27"
HF_TOKEN = "hf_decoy_token_for_up_sh"
KEY_NAMES = ("ULLM_API_KEY", "ULLM_ADMIN_KEY", "ULLM_ROUTER_HOST", "ULLM_ROUTER_PORT", "ULLM_LOG_LEVEL")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    def llamacpp_only(config: dict) -> None:
        config["engines"]["vllm"].update(default_model=None, on_demand=False)

    stack = make_stack(tmp_path_factory.mktemp("keys"), edit=llamacpp_only)
    scripts = stack.home / "scripts"
    scripts.mkdir()
    for name in ("up.sh", "wait_ready.py"):
        (scripts / name).symlink_to(PROJECT / "scripts" / name)
    (scripts / "setup.sh").write_text("#!/bin/sh\necho 'setup: (test stub) everything is installed'\n")
    (scripts / "setup.sh").chmod(0o755)
    try:
        yield stack
    finally:
        stack.stop()


def up(stack: Stack, **env: str) -> str:
    """scripts/up.sh in the stack's folder with exactly these ULLM_* settings (the rest of the test's env)."""
    base = {k: v for k, v in os.environ.items() if k not in KEY_NAMES}
    run = subprocess.run([str(stack.home / "scripts" / "up.sh")], capture_output=True, text=True, timeout=300,
                         env={**base, "HF_TOKEN": HF_TOKEN, "ULLM_START_TIMEOUT": "240", **env})
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "unified-llm is up." in output
    return output


def get(stack: Stack, path: str, key: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(stack.base_url + path, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_up_sh_applies_new_keys_to_the_running_router(home):
    first = up(home)
    assert "started supervisord" in first
    assert get(home, "/v1/models")[0] == 200  # no keys: open
    pid = home.engine_pid("llamacpp")

    second = up(home, ULLM_API_KEY=API_KEY, ULLM_ADMIN_KEY=ADMIN_KEY)
    assert "supervisord already running" in second and "restarting the router" in second, second
    assert "ULLM_API_KEY unset -> set" in second and "ULLM_ADMIN_KEY unset -> set" in second, second
    assert API_KEY not in second and ADMIN_KEY not in second  # it says what changed, never the values
    status, body = get(home, "/v1/models")
    assert status == 401 and body["error"]["code"] == "invalid_api_key", body
    assert get(home, "/v1/models", API_KEY)[0] == 200
    assert http_json("POST", home.base_url + "/v1/models/unload", {"engine": "vllm"})[0] == 401
    assert home.engine_pid("llamacpp") == pid  # only the router restarted; it adopted the running engine
    # the router that answers is this checkout's code, and it read the settings up.sh wrote
    assert "as scripts/up.sh last gave them" in home.router_log()
    env_file = home.home / "run" / "router-env.json"
    assert env_file.stat().st_mode & 0o777 == 0o600

    # with keys set, non-admins see model names, not where the models lie
    anonymous = get(home, "/v1/status")[1]["llamacpp"]
    assert anonymous["model"] == "tiny-llama-a-gguf" and anonymous["model_path"] is None
    assert all(m["path"] is None for m in get(home, "/v1/models", API_KEY)[1]["data"])
    admin = get(home, "/v1/status", ADMIN_KEY)[1]["llamacpp"]
    assert admin["model_path"].startswith("/") and admin["model_path"].endswith(".gguf")

    third = up(home)  # a name up.sh runs without is unset again
    assert "ULLM_API_KEY set -> unset" in third, third
    assert get(home, "/v1/models")[0] == 200
    assert home.engine_pid("llamacpp") == pid


def test_a_fresh_start_with_keys_keeps_them_and_the_hub_token_from_the_engine(home):
    home.stop()
    output = up(home, ULLM_API_KEY=API_KEY, ULLM_ADMIN_KEY=ADMIN_KEY)
    assert "started supervisord" in output
    assert not (home.home / "run" / "router-env.json").exists()  # a new supervisord has the shell's own env
    assert get(home, "/v1/models")[0] == 401
    environ = engine_environ(home.engine_pid("llamacpp"))
    assert not {"ULLM_API_KEY", "ULLM_ADMIN_KEY", "HF_TOKEN"} & set(environ), sorted(environ)
    assert QUIET.items() <= environ.items()
    for log in (home.home / "run" / "logs").iterdir():  # no key in any log line, the engine's argv included
        text = log.read_text(errors="replace")
        assert API_KEY not in text and ADMIN_KEY not in text and HF_TOKEN not in text, log.name
    plans = list((home.home / "run" / "engines").glob("*.json"))
    assert plans and all(p.stat().st_mode & 0o777 == 0o600 for p in plans), plans
