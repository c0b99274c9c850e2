"""scripts/soak.py against the real stack: concurrent streaming and non-streaming clients on both engines, with
llama.cpp swapped, unloaded, reloaded and restarted meanwhile. Short in CI (60 s, 16 streams);
ULLM_SOAK_SECONDS and ULLM_SOAK_STREAMS make the long run that docs/reliability.md records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.stack import PROJECT

SECONDS = float(os.environ.get("ULLM_SOAK_SECONDS", 60))
STREAMS = int(os.environ.get("ULLM_SOAK_STREAMS", 16))


def test_soak_has_no_unexplained_error_and_no_leak(stack, tmp_path):
    defaults = {engine: stack.wait_loaded(engine)["model"] for engine in ("vllm", "llamacpp")}
    report_path = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, str(PROJECT / "scripts" / "soak.py"), "--url", stack.base_url,
                          "--seconds", str(SECONDS), "--streams", str(STREAMS),
                          "--supervisor-conf", str(stack.home / "supervisord.conf"), "--report", str(report_path)],
                         capture_output=True, text=True, timeout=SECONDS + 600)
    print(run.stdout, run.stderr)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(report_path.read_text())
    # the run meant something: both engines answered, streams completed, every lifecycle step happened
    assert report["outcomes"].get("ok", 0) >= STREAMS and set(report["by_engine"]) == {"vllm", "llamacpp"}
    operations = {d["operation"].split()[0] for d in report["lifecycle"]}
    assert {"load", "unload", "restart", "config"} <= operations, report["lifecycle"]
    assert not report["unexplained_errors"] and not report["problems"]
    # and the engines are back where they were
    assert {engine: stack.wait_loaded(engine)["model"] for engine in defaults} == defaults
