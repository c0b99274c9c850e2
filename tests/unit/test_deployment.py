"""The Docker deployment (Dockerfile, docker-compose*.yml, docker/), checked without a Docker daemon or a GPU:
hadolint, the Compose specification's schema (vendored in tests/schemas/compose), and consistency with the
router's, Prometheus's and Grafana's own configuration and with the CPU install's build code. Nothing here
builds or runs an image; tests/unit/test_grafana_schema.py checks the dashboards against Grafana's schema."""

from __future__ import annotations

import asyncio
import fnmatch
import importlib.resources
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath

import jsonschema
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from engines import build
from router.browser_guard import trusted_host
from router.config import load_config

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE_SCHEMA = PROJECT / "tests" / "schemas" / "compose" / "compose-spec.json"
CONTAINER_CONFIG = "docker/config/models.yaml"


# ---- reading the files as Docker and Compose do -----------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments and parser directives dropped."""
    out, pending = [], ""
    for line in (PROJECT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions by stage name; "" holds the global ARGs before the first FROM."""
    found, name = {"": []}, ""
    for word, rest in dockerfile():
        if word == "FROM":
            name = rest.split(" AS ")[-1].strip()
            found[name] = []
        found[name].append((word, rest))
    return found


def args_in(stage: list[tuple[str, str]]) -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in stage if word == "ARG" and "=" in rest)


def env_in(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for word, rest in stage:
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return env


def one(stage: list[tuple[str, str]], word: str) -> str:
    (value,) = [rest for w, rest in stage if w == word]
    return value


def interpolate(value, env: dict[str, str]):
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `${VAR:?error}`, recursively."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one_var(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        got = env.get(name)
        if op in (":-", "-") and (got is None or (op == ":-" and got == "")):
            return arg
        if op == ":?" and not got:
            raise KeyError(f"${{{name}}} is required: {arg}")
        return got or ""
    return re.sub(r"\$\{(\w+)(?:(:-|-|:\?)([^}]*))?\}", one_var, value)


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags: `!reset` removes the key, `!override` replaces instead of merging."""


class Reset:
    pass


class Override:
    def __init__(self, value):
        self.value = value


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())
ComposeLoader.add_constructor(
    "!override", lambda loader, node: Override(loader.construct_object(node, deep=True)))


def merge(base, over):
    """Compose's merge rules, as far as these files use them: mappings merge, `!reset`/`!override` win."""
    if isinstance(over, Override):
        return over.value
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            if isinstance(value, Reset):
                merged.pop(key, None)
            else:
                merged[key] = merge(base.get(key), value) if key in base else merge(None, value)
        return merged
    if isinstance(over, dict):
        return {k: merge(None, v) for k, v in over.items() if not isinstance(v, Reset)}
    if isinstance(base, list) and isinstance(over, list):
        return base + over
    return over


def compose(*names: str) -> dict:
    model = None
    for name in names:
        model = merge(model, yaml.load((PROJECT / name).read_text(), Loader=ComposeLoader))
    return model


ENV = {"GRAFANA_ADMIN_PASSWORD": "x"}  # the only key without a default; every other value is compose's default
GPU = interpolate(compose("docker-compose.yml"), ENV)
SERVICE = GPU["services"]["unified-llm"]
FINAL = stages()["unified-llm"]
WORKDIR = PurePosixPath(one(FINAL, "WORKDIR"))


def container_config():
    return load_config(PROJECT / CONTAINER_CONFIG)


def binds(service: dict) -> dict[str, str]:
    """Bind mounts (short syntax) as {container path: host path relative to the project}."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out[target] = source
    return out


def container_to_host(path: str, service: dict) -> Path | None:
    """The project file that a container path comes from through the service's bind mounts, if any."""
    for target, source in binds(service).items():
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return (PROJECT / source / PurePosixPath(path).relative_to(target)).resolve()
    return None


def dockerignored(path: str) -> bool:
    patterns = [p.strip() for p in (PROJECT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "the checks below do not model negated patterns"
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        pattern = pattern.strip("/")
        deep = pattern.startswith("**/")
        for prefix in prefixes:
            candidates = [prefix] + (["/".join(prefix.split("/")[i:]) for i in range(1, prefix.count("/") + 1)]
                                     if deep else [])
            if any(fnmatch.fnmatchcase(c, pattern.removeprefix("**/")) for c in candidates):
                return True
    return False


# ---- the Dockerfile ---------------------------------------------------------------------------------------

def test_hadolint_passes_and_each_ignored_rule_says_why():
    result = subprocess.run([str(BIN / "hadolint"), "--no-color", str(PROJECT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (PROJECT / "Dockerfile").read_text().splitlines()
    ignores = [(i, line) for i, line in enumerate(lines) if line.startswith("# hadolint ignore=")]
    assert ignores, "expected the justified ignores of DL3006/DL3008"
    for i, line in ignores:
        for rule in line.split("=", 1)[1].split(","):
            assert lines[i - 1].startswith(f"# {rule.strip()}: "), f"line {i + 1}: no justification of {rule}"


def test_the_container_runs_the_same_supervisord_conf_as_the_tests():
    # tests/stack.py symlinks the project's supervisord.conf; the image copies that same file into WORKDIR
    assert '"supervisord.conf"' in (PROJECT / "tests/stack.py").read_text()
    assert json.loads(one(FINAL, "ENTRYPOINT")) == ["/usr/bin/tini", "--"]
    assert json.loads(one(FINAL, "CMD")) == [str(WORKDIR / ".venv/bin/supervisord"), "-n", "-c",
                                             str(WORKDIR / "supervisord.conf")]
    assert ". ." in [rest for word, rest in FINAL if word == "COPY"] and not dockerignored("supervisord.conf")
    conf = (PROJECT / "supervisord.conf").read_text()
    assert "command=%(here)s/.venv/bin/python -m router" in conf  # the venv docker/install-venv.sh makes
    assert "python3 -m venv" in (PROJECT / "docker/install-venv.sh").read_text()
    # nothing moves the home, run folder or config away from what supervisord.conf gives the programs
    env = env_in(FINAL)
    assert not {"ULLM_HOME", "ULLM_RUN_DIR", "ULLM_ROUTER_PORT"} & set(env)
    assert env["PATH"].startswith(f"{WORKDIR}/.venv/bin:")
    assert not {"command", "entrypoint", "working_dir", "user"} & set(SERVICE)


def test_the_image_builds_llama_server_with_the_installers_code(monkeypatch, tmp_path):
    stage = stages()["llama-server"]
    runs = [rest for word, rest in stage if word == "RUN" and "engines.build" in rest]
    (command,) = runs
    argv = shlex.split(command)
    assert argv[:3] == ["python3", "-m", "engines.build"]
    # one place decides the version and the flags: none of them is repeated in the Dockerfile
    text = (PROJECT / "Dockerfile").read_text()
    assert build.SOURCE_VERSION not in text and build.SOURCE_PACKAGE not in text and "cmake -S" not in text
    copied = one(stage, "COPY").split()[:-1]
    imported = re.findall(r"^from engines\.(\w+) import", (PROJECT / "engines/build.py").read_text(), re.M)
    needed = {"engines/build.py", "engines/__init__.py"} | {f"engines/{m}.py" for m in imported}
    assert needed <= set(copied)
    defaults = args_in(stages()[""]) | args_in(stage)
    args = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], a) for a in argv[3:]]
    # run the image's build step as `python3 -m engines.build` would on the GPU base, recording the commands
    monkeypatch.setattr(build, "fetch_source", lambda say: tmp_path)
    monkeypatch.setenv("ULLM_DEVICE", env_in(stages()["base-gpu"])["ULLM_DEVICE"])
    build.has_cuda_gpu.cache_clear()
    recorded = []
    try:
        assert build.main(args, run=lambda step, cmd: recorded.append((step, cmd))) == 0
    finally:
        build.has_cuda_gpu.cache_clear()
    built = PurePosixPath(parse_build_dir(args)) / "bin" / "llama-server"
    bench = built.parent / "llama-bench"
    build_dir = Path(parse_build_dir(args))
    assert recorded == [*build.build_commands(tmp_path, build_dir, True, "121a-real"),
                        (build.BENCH_COMPILE, build.bench_command(build_dir))]
    assert "-DGGML_CUDA=ON" in recorded[0][1] and "-DCMAKE_CUDA_ARCHITECTURES=121a-real" in recorded[0][1]
    # the final image takes that binary and tells the launcher where it is
    copies = [rest for word, rest in FINAL if word == "COPY"]
    assert f"--from=llama-server {built} {built}" in copies
    assert f"--from=llama-server {bench} {bench}" in copies  # found beside LLAMA_SERVER_BIN (find_llama_bench)
    assert env_in(FINAL)["LLAMA_SERVER_BIN"] == str(built)


def parse_build_dir(args: list[str]) -> str:
    return str(build.parser().parse_args(args).build_dir)


def test_gpu_and_cpu_variants():
    all_stages = stages()
    assert args_in(all_stages[""])["VARIANT"] == "gpu"
    assert one(all_stages["base-gpu"], "FROM").startswith("nvcr.io/nvidia/vllm:${VLLM_TAG}-py3 ")
    assert env_in(all_stages["base-gpu"])["ULLM_DEVICE"] == "cuda"
    assert env_in(all_stages["base-cpu"])["ULLM_DEVICE"] == "cpu"
    for name in ("llama-server", "unified-llm"):
        assert one(all_stages[name], "FROM") == f"base-${{VARIANT}} AS {name}"
    # the CPU venv removes what the CPU install removes, and installs the same extra
    spec = importlib.util.spec_from_file_location("install", PROJECT / "scripts" / "install.py")
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    script = (PROJECT / "docker/install-venv.sh").read_text()
    assert f"pip uninstall -y {' '.join(install.CPU_TORCH_MISMATCHES)}" in script
    assert '-e ".[cpu]"' in script and "--system-site-packages" in script
    cpu = interpolate(compose("docker-compose.yml", "docker-compose.cpu.yml"), ENV)["services"]["unified-llm"]
    assert cpu["build"]["args"]["VARIANT"] == "cpu" and "deploy" not in cpu
    assert SERVICE["build"]["args"]["VARIANT"] == "gpu" and SERVICE["image"] != cpu["image"]
    assert SERVICE["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_build_arguments_agree_everywhere():
    defaults = args_in(stages()[""]) | args_in(stages()["llama-server"])
    example = dict(line.split("=", 1) for line in (PROJECT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    for name in ("VLLM_TAG", "CMAKE_CUDA_ARCHITECTURES"):
        assert SERVICE["build"]["args"][name] == defaults[name] == example[name], name
    assert defaults["CMAKE_CUDA_ARCHITECTURES"] == "121a-real"  # the GB10 (sm_121)


# ---- the container's configuration ----------------------------------------------------------------------

def test_the_container_config_is_valid_and_binds_the_router_on_all_interfaces():
    config = container_config()
    assert config.router.host == "0.0.0.0" and config.router.port == 8080
    assert env_in(FINAL)["ULLM_CONFIG"] == str(WORKDIR / CONTAINER_CONFIG)
    assert container_to_host(env_in(FINAL)["ULLM_CONFIG"], SERVICE) == PROJECT / CONTAINER_CONFIG
    assert not dockerignored(CONTAINER_CONFIG)  # `docker run` without compose uses the copy in the image
    assert one(FINAL, "EXPOSE") == str(config.router.port)
    (url,) = re.findall(r"'(http://[^']+)'", one(FINAL, "HEALTHCHECK"))
    host_port, _, path = url.removeprefix("http://").partition("/")
    assert host_port == f"127.0.0.1:{config.router.port}" and router_serves("GET", "/" + path), url


def test_models_live_on_the_workspace_volume():
    config = container_config()
    assert config.router.model_roots[0] == "/workspace/models"
    assert '"/workspace/models"' in one(FINAL, "VOLUME")
    assert binds(SERVICE)["/workspace/models"] == "./models"  # gitignored; Docker creates it when missing
    # the Hugging Face cache (and vLLM's compile cache) on a named volume, never in the image's layers
    cache = next(v for v in SERVICE["volumes"] if v.startswith("cache:"))
    assert env_in(FINAL)["HF_HOME"].startswith(cache.split(":")[1] + "/") and "cache" in GPU["volumes"]
    assert '"/root/.cache"' in one(FINAL, "VOLUME")


def test_gb10_defaults_in_the_container_catalog():
    config = container_config()
    for name, entry in config.models.items():
        if entry.engine == "vllm":  # unified memory: 0.85 at most (docs/deployment.md)
            assert entry.options.get("gpu_memory_utilization", 1) <= 0.85, name
        else:  # --no-mmap loads large GGUFs far faster there
            assert entry.options.get("mmap") is False, name
    assert all(engine.default_model is None for engine in config.engines.values()), "no model is downloaded"


def test_download_model_runs_in_the_container():
    # `docker compose run --rm unified-llm python3 scripts/download_model.py --model ...` runs in WORKDIR with the
    # venv's python3 first on PATH, writes into the first model root (the volume), with HF_TOKEN passed through
    assert (PROJECT / "scripts/download_model.py").is_file() and not dockerignored("scripts/download_model.py")
    assert env_in(FINAL)["PATH"].split(":")[0] == str(WORKDIR / ".venv/bin")
    assert "HF_TOKEN" in SERVICE["environment"]
    assert [m for m in container_config().models.values() if m.repo], "catalog entries to download by name"


def test_the_build_context_leaves_out_host_state():
    for path in (".venv", "run/logs/router.log", "models/tiny-llama-a.gguf", ".env", ".git",
                 "tests/schemas/grafana/node_modules", "router/__pycache__/app.cpython-311.pyc"):
        assert dockerignored(path), path
    for path in ("pyproject.toml", "supervisord.conf", "engines/build.py", "router/app.py",
                 "router/static/index.html", "scripts/download_model.py", "docker/install-venv.sh"):
        assert not dockerignored(path), path


# ---- docker-compose.yml ---------------------------------------------------------------------------------

def test_vendored_compose_schema_is_the_one_check_jsonschema_ships():
    shipped = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    assert json.loads(COMPOSE_SCHEMA.read_text()) == json.loads(shipped.read_text())


def test_compose_file_matches_the_compose_specification():
    result = subprocess.run([str(BIN / "check-jsonschema"), "--schemafile", str(COMPOSE_SCHEMA),
                             str(PROJECT / "docker-compose.yml")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cpu_override_merged_matches_the_compose_specification():
    # check-jsonschema cannot read Compose's `!reset` tag: merge as Compose does, then validate the result
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.validate(compose("docker-compose.yml", "docker-compose.cpu.yml"), schema)
    broken = compose("docker-compose.yml")
    broken["services"]["unified-llm"]["ipc_mode"] = "host"  # a typo the schema must catch
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_every_mounted_project_file_exists():
    for name, service in GPU["services"].items():
        for target, source in binds(service).items():
            if target != "/workspace/models":
                assert (PROJECT / source).exists(), f"{name}: {source} (mounted at {target})"


def router_serves(method: str, path: str) -> bool:
    from router.handlers import admin, logs, metrics, openai_api, openapi, ui
    app = web.Application()
    for module in (admin, logs, openai_api, openapi, metrics, ui):
        app.add_routes(module.routes)
    match = asyncio.run(app.router.resolve(make_mocked_request(method, path)))
    return match.http_exception is None


def test_prometheus_scrapes_the_router_over_the_compose_network():
    config = yaml.safe_load((PROJECT / "prometheus/prometheus.yml").read_text())
    prometheus = GPU["services"]["prometheus"]
    assert container_to_host("/etc/prometheus/prometheus.yml", prometheus) == PROJECT / "prometheus/prometheus.yml"
    assert "command" not in prometheus  # the image's default --config.file=/etc/prometheus/prometheus.yml
    names = {"unified-llm", *SERVICE["networks"]["default"]["aliases"]}
    for job in config["scrape_configs"]:
        for target in (t for sc in job["static_configs"] for t in sc["targets"]):
            host, port = target.rsplit(":", 1)
            assert host in names and int(port) == container_config().router.port, target
            # the scrape's Host is the service name: the router must answer to it without keys (DNS-rebinding
            # rule, router/browser_guard.py)
            assert trusted_host(target, container_config().router.host, container_config().router.allowed_hosts)
        assert router_serves("GET", job["metrics_path"]), job["metrics_path"]


def test_the_containers_healthcheck_uses_a_loopback_host():
    healthcheck = one(FINAL, "HEALTHCHECK")
    assert "http://127.0.0.1:8080/health" in healthcheck
    assert trusted_host("127.0.0.1:8080", container_config().router.host, [])


def test_ports_published_are_the_routers_grafanas_and_prometheus():
    def container_ports(service):
        return [int(p.rsplit(":", 1)[1]) for p in service.get("ports", [])]
    assert container_ports(SERVICE) == [container_config().router.port]
    assert SERVICE["ports"][0].startswith("127.0.0.1:")  # loopback unless ULLM_BIND says otherwise
    assert GPU["services"]["prometheus"]["ports"][0].startswith("127.0.0.1:")
    assert container_ports(GPU["services"]["prometheus"]) == [9090]
    assert container_ports(GPU["services"]["grafana"]) == [3000]


def test_grafana_gets_the_projects_provisioning_dashboards_and_datasource():
    grafana = GPU["services"]["grafana"]
    assert container_to_host("/etc/grafana/provisioning", grafana) == PROJECT / "grafana/provisioning"
    provider = yaml.safe_load((PROJECT / "grafana/provisioning/dashboards/unified-llm.yml").read_text())
    assert container_to_host(provider["providers"][0]["options"]["path"], grafana) == PROJECT / "grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert container_to_host(home, grafana).is_file()
    (source,) = yaml.safe_load((PROJECT / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and 9090 in [
        int(p.rsplit(":", 1)[1]) for p in GPU["services"]["prometheus"]["ports"]]
    # the admin password only from .env: compose refuses to start without one
    raw = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())["services"]["grafana"]["environment"]
    assert raw["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    with pytest.raises(KeyError):
        interpolate(compose("docker-compose.yml"), {})


def test_env_example_documents_every_variable_the_compose_files_use():
    used = set()
    for name in ("docker-compose.yml", "docker-compose.cpu.yml"):
        used |= set(re.findall(r"\$\{(\w+)", (PROJECT / name).read_text()))
    example = (PROJECT / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?(\w+)=", example, re.M))
    assert used <= documented, used - documented
    assert documented - used <= {"COMPOSE_FILE"}, documented - used


def test_stopping_leaves_supervisord_time_to_stop_every_program():
    conf = (PROJECT / "supervisord.conf").read_text()
    total = sum(int(s) for s in re.findall(r"^stopwaitsecs=(\d+)", conf, re.M))
    assert int(SERVICE["stop_grace_period"].removesuffix("s")) >= total
