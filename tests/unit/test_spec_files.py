"""The files in run/engines/ that carry an engine's model across router and engine restarts."""

import os

import pytest

from engines import spec as files
from engines.spec import (LaunchPlan, ModelSpec, Resume, StateFileError, clear_plan, read_plan, read_resume,
                          unloaded_on_request, write_plan)

SPEC = ModelSpec(engine="llamacpp", path="/m/a.gguf", served_name="a", options={"ctx_size": 2048})
PLAN = LaunchPlan(spec=SPEC, port=8002, argv=["/bin/llama-server", "-m", "/m/a.gguf"], env={"X": "1"})


def test_a_plan_round_trips_exactly(tmp_path):
    write_plan(tmp_path, PLAN)
    assert read_plan(tmp_path, "llamacpp") == PLAN
    assert read_plan(tmp_path, "vllm") is None


def test_a_resume_survives_until_a_load_or_an_explicit_unload(tmp_path):
    clear_plan(tmp_path, "llamacpp", resume=Resume(SPEC, "idle for 300 s", 1795650000.5))  # an idle unload
    assert read_plan(tmp_path, "llamacpp") is None and not unloaded_on_request(tmp_path, "llamacpp")
    assert read_resume(tmp_path, "llamacpp") == Resume(SPEC, "idle for 300 s", 1795650000.5)
    write_plan(tmp_path, PLAN)  # the model came back: nothing left to resume
    assert read_resume(tmp_path, "llamacpp") is None and read_plan(tmp_path, "llamacpp") == PLAN
    clear_plan(tmp_path, "llamacpp", resume=Resume(SPEC, "idle for 300 s", 1.0))
    clear_plan(tmp_path, "llamacpp", on_request=True)  # an explicit unload forgets it too
    assert read_resume(tmp_path, "llamacpp") is None and unloaded_on_request(tmp_path, "llamacpp")
    write_plan(tmp_path, PLAN)
    assert not unloaded_on_request(tmp_path, "llamacpp")


@pytest.mark.parametrize("content", ["", "   \n", '{"spec": {"engine": "llamacpp", "pa', "[1, 2]", "\xff\xfe",
                                     '{"spec": {"engine": "llamacpp"}, "port": 1, "argv": [], "env": {}, "id": "x"}',
                                     '{"spec": {"engine": "llamacpp", "path": "/m", "served_name": "m"}}',
                                     '{"engine": "llamacpp", "unknown": 1}'])
def test_an_unusable_plan_file_raises_a_clear_error(tmp_path, content):
    path = files.plan_file(tmp_path, "llamacpp")
    path.parent.mkdir(parents=True)
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(StateFileError) as err:
        read_plan(tmp_path, "llamacpp")
    assert str(path) in str(err.value) and "ignored" in str(err.value)


def test_a_plan_of_another_engine_is_refused(tmp_path):
    write_plan(tmp_path, PLAN)
    os.replace(files.plan_file(tmp_path, "llamacpp"), files.plan_file(tmp_path, "vllm"))
    with pytest.raises(StateFileError, match="names engine 'llamacpp'"):
        read_plan(tmp_path, "vllm")


def test_a_bare_spec_from_before_plans_is_read_as_a_wanted_model(tmp_path):
    path = files.plan_file(tmp_path, "llamacpp")
    path.parent.mkdir(parents=True)
    path.write_text('{"engine": "llamacpp", "path": "/m/a.gguf", "served_name": "a", "options": {"ctx_size": 2048}}')
    plan = read_plan(tmp_path, "llamacpp")
    assert plan.spec == SPEC and plan.argv == []  # the router rebuilds the launch; the launcher refuses it


def test_an_unreadable_resume_file_raises(tmp_path):
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "vllm.resume.json").write_text('{"spec": {"engine": "vllm"}}')
    with pytest.raises(StateFileError):
        read_resume(tmp_path, "vllm")


def test_writes_are_atomic_and_fsynced(tmp_path, monkeypatch):
    """write, fsync the file, rename over the target, fsync the folder: in that order."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", b)), real_replace(a, b)))
    write_plan(tmp_path, PLAN)
    target = files.plan_file(tmp_path, "llamacpp")
    assert calls[:3] == [("fsync", False), ("replace", target), ("fsync", True)]
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left behind


def test_a_crash_before_the_rename_leaves_the_old_plan(tmp_path, monkeypatch):
    write_plan(tmp_path, PLAN)

    def crash(*_):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_plan(tmp_path, LaunchPlan(spec=SPEC, port=1, argv=["x"], env={}))
    assert read_plan(tmp_path, "llamacpp") == PLAN
