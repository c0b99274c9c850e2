"""The files in run/engines/ that carry an engine's model across router and engine restarts."""

from engines.spec import ModelSpec, Resume, clear_spec, read_resume, read_spec, write_resume, write_spec

SPEC = ModelSpec(engine="llamacpp", path="/m/a.gguf", served_name="a", options={"ctx_size": 2048})


def test_a_resume_survives_until_a_load_or_an_explicit_unload(tmp_path):
    clear_spec(tmp_path, "llamacpp", on_request=True)  # what an idle unload does first
    write_resume(tmp_path, Resume(SPEC, "idle for 300 s", 1795650000.5))
    assert read_spec(tmp_path, "llamacpp") is None
    assert read_resume(tmp_path, "llamacpp") == Resume(SPEC, "idle for 300 s", 1795650000.5)
    write_spec(tmp_path, SPEC)  # the model came back: nothing left to resume
    assert read_resume(tmp_path, "llamacpp") is None and read_spec(tmp_path, "llamacpp") == SPEC
    write_resume(tmp_path, Resume(SPEC, "idle for 300 s", 1.0))
    clear_spec(tmp_path, "llamacpp", on_request=True)  # an explicit unload forgets it too
    assert read_resume(tmp_path, "llamacpp") is None


def test_an_unreadable_resume_file_is_ignored(tmp_path):
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "vllm.resume.json").write_text('{"spec": {"engine": "vllm"}}')
    assert read_resume(tmp_path, "vllm") is None
