"""models.yaml parsing: the shipped file is valid, and mistakes are errors that name the problem."""

import pytest

from router.config import PROJECT_HOME, ConfigError, load_config, parse_config

BASE = """
engines:
  vllm: {port: 8001}
  llamacpp: {port: 8002}
"""


def test_shipped_config_is_valid():
    config = load_config(PROJECT_HOME / "config" / "models.yaml")
    assert config.router.port == 8080
    # the real models first; the tiny ones stand in when setup could not build them
    assert config.engines["vllm"].default_models == ["smollm2-135m-instruct", "tiny-llama-a"]
    assert config.engines["llamacpp"].default_models == ["smollm2-135m-instruct-gguf", "tiny-llama-a-gguf"]
    assert config.models["tiny-llama-a-gguf"].engine == "llamacpp"


def test_unknown_key_is_named_with_its_position():
    with pytest.raises(ConfigError, match=r"router\.prot \(line 5, column 10\): Extra inputs are not permitted"):
        parse_config(BASE + "router: {prot: 1}\n")
    text = BASE + "models:\n  m:\n    engine: vllm\n    path: x\n    optons: {}\n"
    with pytest.raises(ConfigError, match=r"models\.m\.optons \(line 9, column 5\)"):
        parse_config(text)


def test_invalid_yaml_is_reported():
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_config("engines: [\n")


def test_unknown_engine_in_a_model_is_refused():
    with pytest.raises(ConfigError, match="engine must be one of"):
        parse_config(BASE + "models:\n  m: {engine: tgi, path: x}\n")


def test_model_options_are_checked_against_its_engine():
    with pytest.raises(ConfigError, match=r"models\.m\.options .*ctx_size: Extra inputs .*valid vllm options"):
        parse_config(BASE + "models:\n  m: {engine: vllm, path: x, options: {ctx_size: 10}}\n")


def test_default_model_must_exist_and_match_the_engine():
    with pytest.raises(ConfigError, match="not in models"):
        parse_config(BASE.replace("{port: 8001}", "{port: 8001, default_model: nope}"))
    text = BASE.replace("{port: 8001}", "{port: 8001, default_model: g}") + \
        "models:\n  g: {engine: llamacpp, path: g.gguf}\n"
    with pytest.raises(ConfigError, match="is a llamacpp model"):
        parse_config(text)
    listed = BASE.replace("{port: 8001}", "{port: 8001, default_model: [v, nope]}") + \
        "models:\n  v: {engine: vllm, path: v}\n"
    with pytest.raises(ConfigError, match="'nope' is not in models"):
        parse_config(listed)


def test_every_router_and_engine_setting_is_documented():
    """docs/configuration.md has a table row per setting of `router:` and `engines.<engine>:`."""
    import re

    from router.config import EngineSettings, RouterSettings
    doc = (PROJECT_HOME / "docs" / "configuration.md").read_text()
    rows = set(re.findall(r"^\| `(\w+)` \|", doc, re.M))
    for settings in (RouterSettings, EngineSettings):
        missing = set(settings.model_fields) - rows
        assert not missing, f"docs/configuration.md does not document {sorted(missing)}"
