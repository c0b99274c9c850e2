"""Leftover engine processes are killed only when they are really ours: in the recorded process group *and*
carrying the token of the recorded start. Real processes, no engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from engines import process_group
from engines.process_group import TOKEN_ENV, kill_leftovers, leftovers


@pytest.fixture
def group(tmp_path):
    """A process group like an engine's: its leader carries the token; a second member does not (as a process
    that reused the group's number would not)."""
    env = {**os.environ, TOKEN_ENV: "token-1"}
    leader = subprocess.Popen(["sh", "-c", f"env -u {TOKEN_ENV} sleep 60 & exec sleep 60"], env=env,
                              start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # both exec'd into sleep: their environments are final
        names = []
        for proc in process_group.members(leader.pid):
            try:
                names.append(proc.name())
            except psutil.Error:
                pass
        if names == ["sleep", "sleep"]:
            break
        time.sleep(0.01)
    stranger = next(p for p in process_group.members(leader.pid) if p.pid != leader.pid)
    (tmp_path / "engines").mkdir()
    write_record(tmp_path, pgid=leader.pid, pid=leader.pid, token="token-1", plan_id="p",
                 exe="/opt/some-engine/bin/engine", started_at=psutil.Process(leader.pid).create_time())
    yield leader, stranger
    for pid in (leader.pid, stranger.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    leader.wait()


def write_record(run, **fields) -> None:
    (run / "engines" / "vllm.process.json").write_text(json.dumps(fields))


def edit_record(run, **changes) -> None:
    path = run / "engines" / "vllm.process.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_only_processes_carrying_the_token_are_leftovers(tmp_path, group):
    leader, stranger = group
    assert [p.pid for p in leftovers(tmp_path, "vllm")] == [leader.pid]
    assert kill_leftovers(tmp_path, "vllm") == [leader.pid]
    assert not psutil.pid_exists(leader.pid)  # killed and reaped
    assert stranger.is_running() and stranger.status() != psutil.STATUS_ZOMBIE  # not ours: untouched


def test_a_record_of_another_start_kills_nothing(tmp_path, group):
    leader, stranger = group
    edit_record(tmp_path, token="token-of-a-later-start")
    assert leftovers(tmp_path, "vllm") == [] and kill_leftovers(tmp_path, "vllm") == []
    assert leader.poll() is None


def test_a_process_that_rewrote_its_environment_counts_by_executable_and_age(tmp_path, group):
    """vLLM's EngineCore sets its process title over its environment: it is ours when it runs the engine's
    executable and was created after the start."""
    leader, stranger = group
    edit_record(tmp_path, exe=os.path.realpath(stranger.exe()))
    assert sorted(p.pid for p in leftovers(tmp_path, "vllm")) == sorted([leader.pid, stranger.pid])
    leader.kill()  # the engine killed with SIGKILL: its helper is an orphan in the group
    leader.wait()
    assert [p.pid for p in leftovers(tmp_path, "vllm")] == [stranger.pid]
    edit_record(tmp_path, started_at=stranger.create_time() + 5)  # created before the recorded start: not ours
    assert leftovers(tmp_path, "vllm") == []


def test_a_group_whose_number_another_leader_holds_is_left_alone(tmp_path, group):
    leader, _ = group
    edit_record(tmp_path, started_at=psutil.Process(leader.pid).create_time() - 100)  # a different start
    assert leftovers(tmp_path, "vllm") == [] and leader.poll() is None


def test_no_or_unreadable_record_means_no_leftovers(tmp_path):
    assert leftovers(tmp_path, "vllm") == []
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "vllm.process.json").write_text("{half")
    assert leftovers(tmp_path, "vllm") == []


def test_the_launcher_records_its_own_group_and_a_fresh_token(tmp_path):
    code = ("import sys; from pathlib import Path; from engines.process_group import record_group; "
            "r = record_group(Path(sys.argv[1]), 'vllm', 'plan-9', sys.executable); print(r.token)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True,
                         start_new_session=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    record = process_group.read_record(tmp_path, "vllm")
    assert record.plan_id == "plan-9" and record.token == out.stdout.strip() and record.pgid == record.pid
    assert record.exe == os.path.realpath(sys.executable) and record.started_at > 0
    process_group.forget_group(tmp_path, "vllm")
    assert process_group.read_record(tmp_path, "vllm") is None
