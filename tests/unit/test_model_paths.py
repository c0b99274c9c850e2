"""Load requests name catalog models or paths; paths are confined to the model roots."""

import json

import pytest

from router.config import parse_config
from router.errors import InvalidRequest, NotFound
from router.models import resolve_spec


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("ULLM_HOME", str(tmp_path))
    models = tmp_path / "models"
    (models / "hf").mkdir(parents=True)
    (models / "hf" / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    (models / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "outside.gguf").write_bytes(b"GGUF")
    return parse_config("""
engines: {vllm: {port: 1}, llamacpp: {port: 2}}
models:
  hf-model: {engine: vllm, path: hf, aliases: [hf-alias], options: {max_model_len: 1024}}
  gguf-model: {engine: llamacpp, path: m.gguf}
""")


def test_catalog_name_and_alias(config, tmp_path):
    spec = resolve_spec(config, "hf-alias", None, {"dtype": "float32"})
    assert (spec.engine, spec.served_name, spec.path) == ("vllm", "hf-model", str(tmp_path / "models" / "hf"))
    assert spec.options["max_model_len"] == 1024 and spec.options["dtype"] == "float32"


def test_path_under_a_root_guesses_the_engine(config):
    spec = resolve_spec(config, "m.gguf", None, {})
    assert spec.engine == "llamacpp" and spec.served_name == "m"


@pytest.mark.parametrize("name", ["../outside.gguf", "hf/../../outside.gguf", "/etc/passwd"])
def test_escapes_are_refused(config, tmp_path, name):
    with pytest.raises(InvalidRequest, match="outside the model roots"):
        resolve_spec(config, name, "llamacpp", {})


def test_symlink_out_of_the_roots_is_refused(config, tmp_path):
    (tmp_path / "models" / "link.gguf").symlink_to(tmp_path / "outside.gguf")
    with pytest.raises(InvalidRequest, match="outside the model roots"):
        resolve_spec(config, "link.gguf", "llamacpp", {})


@pytest.mark.parametrize("name", ["m\0.gguf", "a" * 5000 + ".gguf", "hf/" + "b" * 300 + "/x"])
def test_unusable_names_are_refused_not_crashed_on(config, name):
    # NUL bytes and over-long names make the OS calls raise; that is the client's error, not the router's
    with pytest.raises(InvalidRequest) as err:
        resolve_spec(config, name, None, {})
    assert err.value.code == "invalid_path"


def test_options_are_strictly_typed(config):
    for bad in ({"ctx_size": True}, {"ctx_size": "4096"}, {"parallel": 2.5}):
        with pytest.raises(InvalidRequest, match="invalid llamacpp option"):
            resolve_spec(config, "gguf-model", None, bad)


def test_missing_file_is_not_found(config):
    with pytest.raises(NotFound, match="neither a catalog model nor a file"):
        resolve_spec(config, "nope.gguf", None, {})


def test_engine_mismatch_and_bad_options(config):
    with pytest.raises(InvalidRequest, match="is a vllm model"):
        resolve_spec(config, "hf-model", "llamacpp", {})
    with pytest.raises(InvalidRequest, match="invalid vllm option max_model_len"):
        resolve_spec(config, "hf-model", None, {"max_model_len": "big"})
    with pytest.raises(InvalidRequest, match="unknown engine"):
        resolve_spec(config, "hf-model", "tgi", {})


def test_re_resolve_follows_catalog_edits_and_keeps_path_loads(config, tmp_path):
    from dataclasses import replace

    from router.config import parse_config
    from router.models import re_resolve

    spec = resolve_spec(config, "gguf-model", None, {"parallel": 2})
    assert re_resolve(config, spec) == spec  # nothing changed: nothing to restart
    edited = parse_config("""
engines: {vllm: {port: 1}, llamacpp: {port: 2}}
models:
  gguf-model: {engine: llamacpp, path: m.gguf, options: {ctx_size: 1024}}
""")
    again = re_resolve(edited, spec)
    assert again.options["ctx_size"] == 1024 and again.options["parallel"] == 2  # catalog edit + load override
    legacy = replace(spec, catalog_name=None, overrides={})  # a spec file from before catalog names were kept
    assert re_resolve(config, legacy).served_name == "gguf-model"
    by_path = resolve_spec(config, "m.gguf", "llamacpp", {})
    assert re_resolve(config, by_path) == by_path
    gone = parse_config("engines: {vllm: {port: 1}, llamacpp: {port: 2}}\n")
    assert re_resolve(gone, spec) is None


@pytest.mark.parametrize("name", ["loop.gguf", "loop.gguf/inner", "deep/loop.gguf"])
def test_a_symlink_loop_under_a_root_is_a_400(config, tmp_path, name):
    models = tmp_path / "models"
    (models / "loop.gguf").symlink_to(models / "loop.gguf")  # points at itself
    (models / "deep").mkdir()
    (models / "deep" / "loop.gguf").symlink_to(models / "deep" / "other")
    (models / "deep" / "other").symlink_to(models / "deep" / "loop.gguf")
    with pytest.raises(InvalidRequest) as err:
        resolve_spec(config, name, "llamacpp", {})
    assert err.value.code == "invalid_path" and err.value.status == 400


def test_an_unexpected_os_error_while_resolving_is_a_400(config, monkeypatch):
    from pathlib import Path

    real = Path.resolve

    def broken(self, strict=False):
        if self.name == "m.gguf":
            raise PermissionError(13, "Permission denied")
        return real(self, strict)
    monkeypatch.setattr(Path, "resolve", broken)
    with pytest.raises(InvalidRequest) as err:
        resolve_spec(config, "m.gguf", "llamacpp", {})
    assert err.value.code == "invalid_path" and "Permission denied" in err.value.message


def test_the_first_default_model_on_disk_is_loaded(tmp_path, monkeypatch):
    """A setup that could not build the real model leaves the tiny one behind it in default_model: the engine
    loads that and says why it skipped the first."""
    from router.app import default_spec

    monkeypatch.setenv("ULLM_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.gguf").write_bytes(b"GGUF")
    config = parse_config("""
engines: {vllm: {port: 1}, llamacpp: {port: 2, default_model: [real, tiny]}}
models:
  real: {engine: llamacpp, path: real.gguf}
  tiny: {engine: llamacpp, path: tiny.gguf}
""")
    spec, skipped = default_spec(config, "llamacpp")
    assert spec.served_name == "tiny"
    assert "default model 'real'" in skipped[0] and skipped[-1] == "loading 'tiny' instead"
    (tmp_path / "models" / "real.gguf").write_bytes(b"GGUF")
    spec, skipped = default_spec(config, "llamacpp")
    assert spec.served_name == "real" and skipped == []
    assert default_spec(config, "vllm") == (None, [])
