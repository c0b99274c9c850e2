"""Typed view of config/models.yaml. Unknown keys are errors, so a typo fails loudly instead of being ignored."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from engines.registry import ADAPTERS, ENGINE_NAMES
from engines.spec import INSTANCE_PORT_STEP, MAX_INSTANCES, PROJECT_HOME, home_dir, run_dir  # noqa: F401 (re-exported)
from router.worker_config import WorkerSettings, check_vllm_worker


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RouterSettings(StrictModel):
    host: str = "127.0.0.1"  # where the router listens (loopback: this machine only); engines bind 127.0.0.1
    port: int = Field(8080, ge=1, le=65535)
    model_roots: list[str] = ["models"]  # load requests may only name paths under these (relative to home)
    load_timeout_seconds: float = Field(600, gt=0)  # how long a load may take before it is reported failed
    request_wait_seconds: float = Field(120, ge=0)  # how long a request waits for a loading engine
    max_queued_requests: int = Field(256, ge=0)  # requests waiting per engine beyond this get 503
    # an on-demand swap waits until the served model has been loaded this long while its requests keep coming
    # (they are served meanwhile): requests are grouped by model instead of swapping for each one
    min_residency_seconds: float = Field(10, ge=0)
    drain_seconds: float = Field(30, ge=0)  # a swap waits this long for in-flight requests to finish
    upstream_read_timeout_seconds: float = Field(600, gt=0)  # engine silent this long: 504, or an error event
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # an engine restarted after crashes more than crash_restarts times within crash_window_seconds is stopped
    # and shown in error (with its log tail) instead of restarting forever
    crash_restarts: int = Field(3, ge=0)
    crash_window_seconds: float = Field(300, gt=0)
    # a load that would leave less available memory than this is refused (409) unless forced; null: no check
    memory_reserve_gib: float | None = Field(4.0, ge=0)
    # after an engine stops, a memory check that fails waits at most this long for MemAvailable to stop rising
    memory_settle_seconds: float = Field(10, ge=0)
    body_read_timeout_seconds: float = Field(60, gt=0)  # a request body not fully received by then gets 408
    # browser pages on these origins (scheme://host[:port]) may call the API: CORS answered, not refused as
    # cross-site (router/browser_guard.py)
    allowed_origins: list[str] = []
    # Host names (besides loopback and router.host) the router answers while ULLM_API_KEY is unset; "*": any
    allowed_hosts: list[str] = []

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            scheme, sep, rest = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or "/" in rest or origin != origin.strip():
                raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port], e.g. "
                                 f"https://app.example.org (no path, no trailing slash)")
        return [origin.lower() for origin in origins]

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not host or any(c in host for c in "/: ") and not host.startswith("["):
                raise ValueError(f"{host!r} is not a host name: write the name without scheme or port, "
                                 f"e.g. router or llm.example.org")
        return [host.lower().rstrip(".") for host in hosts]


class EngineSettings(StrictModel):
    port: int = Field(ge=1, le=65535)  # internal port on 127.0.0.1
    # catalog name loaded when the engine has no model yet; a list: the first whose files are on disk (the real
    # models, with the tiny ones behind them for a setup that could not build the real ones)
    default_model: str | list[str] | None = None
    extra_args: list[str] = []  # appended verbatim to the engine's command line
    env: dict[str, str] = {}  # extra environment for the engine process
    # llama.cpp: the llama-server path (else $LLAMA_SERVER_BIN, else the build cache); transformers: the Python that
    # runs its server (another environment, e.g. transformers 4.51 for Dream's own code; else the router's); vLLM: unused
    binary: str | None = None
    on_demand: bool = True  # a request naming a catalog model of this engine loads it (swapping models)
    idle_unload_seconds: float | None = Field(None, gt=0)  # unload after this long without requests; null: never
    # processes of this engine that may each hold a model at once (several models resident, chosen by memory);
    # supervisord.conf defines MAX_INSTANCES per engine. Instance k listens on port + INSTANCE_PORT_STEP × k
    max_instances: int = Field(1, ge=1, le=MAX_INSTANCES)

    def instance_port(self, index: int) -> int:
        return self.port + INSTANCE_PORT_STEP * index

    @property
    def default_models(self) -> list[str]:
        """default_model as a list of candidates, in order."""
        if self.default_model is None:
            return []
        return [self.default_model] if isinstance(self.default_model, str) else list(self.default_model)


class ModelEntry(StrictModel):
    engine: str
    path: str  # a folder (vLLM) or .gguf file (llama.cpp), relative to a model root or absolute
    repo: str | None = None  # Hugging Face repo id that scripts/download_model.py fetches into `path`
    file: str | None = None  # for GGUF repos: the one file to fetch
    options: dict[str, Any] = {}  # engine options, checked against that engine's option model
    aliases: list[str] = []
    description: str | None = None
    keep_loaded: bool = False  # once loaded, never evicted to make room for another model (an unload still works)

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, engine: str) -> str:
        if engine not in ENGINE_NAMES:
            raise ValueError(f"engine must be one of {', '.join(ENGINE_NAMES)}, not {engine!r}")
        return engine

    @field_validator("options")
    @classmethod
    def _engine_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        engine = info.data.get("engine")
        if engine in ADAPTERS:
            try:
                ADAPTERS[engine].Options(**options)
            except ValidationError as exc:
                err = exc.errors()[0]
                raise ValueError(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} "
                                 f"(valid {engine} options: {', '.join(ADAPTERS[engine].Options.model_fields)})")
        return options


# This router's own keys: a peer never receives them (router/peers.py), so no peer may be given them by name
OWN_KEY_VARIABLES = ("ULLM_API_KEY", "ULLM_ADMIN_KEY")
PEER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class PeerSettings(StrictModel):
    """Another router (or any OpenAI-compatible server) whose models this one serves (docs/scale-out.md)."""
    url: str  # http(s)://host:port, optionally with a path prefix; no /v1
    # the environment variable holding the key sent to the peer (its ULLM_API_KEY); the key is never in this file
    api_key_env: str | None = None
    admin_key_env: str | None = None  # the peer's admin key, for loads and unloads there (else api_key_env)
    models: list[str] | None = None  # the peer's models, by its names; null: discovered from its /v1/models
    kind: Literal["auto", "unified-llm", "openai"] = "auto"  # auto: unified-llm when its /health says so
    connect_timeout_seconds: float = Field(3, gt=0)  # no connection by then: the peer is down
    first_byte_timeout_seconds: float = Field(10, gt=0)  # a probe, or a stream's first byte, later: down
    probe_interval_seconds: float = Field(5, gt=0)  # how often an answering peer is checked
    max_backoff_seconds: float = Field(30, gt=0)  # a down peer is probed after 1, 2, 4... s, at most this apart
    refresh_seconds: float = Field(30, gt=0)  # how often discovered models are listed again
    # a model resident here and there: `balanced` sends each request to the side with fewer requests in flight
    # and waiting; `local` keeps it here until this side has spill_after requests in flight or any waiting
    prefer: Literal["balanced", "local"] = "balanced"
    spill_after: int = Field(4, ge=1)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        scheme, sep, rest = url.partition("://")
        if scheme not in ("http", "https") or not sep or not rest.strip("/") or url != url.strip():
            raise ValueError(f"{url!r} is not an http(s) URL: write e.g. http://box2:8080")
        url = url.rstrip("/")
        if url.endswith("/v1"):
            raise ValueError(f"{url!r}: leave out /v1 (the router adds it), e.g. http://box2:8080")
        return url

    @field_validator("api_key_env", "admin_key_env")
    @classmethod
    def _not_own_key(cls, name: str | None) -> str | None:
        if name in OWN_KEY_VARIABLES:
            raise ValueError(f"{name} holds this router's own key, which a peer must never receive: put the "
                             f"peer's key in a variable of its own, e.g. PEER_BOX2_KEY")
        return name


class Config(StrictModel):
    router: RouterSettings = RouterSettings()
    engines: dict[str, EngineSettings]
    models: dict[str, ModelEntry] = {}
    peers: dict[str, PeerSettings] = {}
    workers: WorkerSettings = WorkerSettings()  # this box's part of a model spanning boxes (router/worker_config.py)

    @model_validator(mode="after")
    def _check(self) -> "Config":
        check_vllm_worker(self.workers, self.models)
        unknown = set(self.engines) - set(ENGINE_NAMES)
        if unknown:
            raise ValueError(f"unknown engine(s) {sorted(unknown)}; known: {', '.join(ENGINE_NAMES)}")
        ports: dict[int, str] = {self.router.port: "router.port"}
        for name, engine in self.engines.items():
            for index in range(engine.max_instances):
                port, owner = engine.instance_port(index), f"engines.{name}" + (f" instance {index}" if index else "")
                if port in ports or port > 65535:
                    raise ValueError(f"{owner} would listen on port {port}, "
                                     f"{'which ' + ports[port] + ' uses' if port in ports else 'out of range'} "
                                     f"(instance k listens on port + {INSTANCE_PORT_STEP} × k)")
                ports[port] = owner
            for default in engine.default_models:
                if default not in self.models:
                    raise ValueError(f"engines.{name}.default_model {default!r} is not in models")
                if self.models[default].engine != name:
                    raise ValueError(f"engines.{name}.default_model {default!r} is a "
                                     f"{self.models[default].engine} model")
        for peer in self.peers:
            if not PEER_NAME.fullmatch(peer):
                raise ValueError(f"peer name {peer!r}: use letters, digits, '-', '_' or '.' (it prefixes model "
                                 f"names as {peer}/MODEL)")
            shadowed = [n for name, entry in self.models.items() for n in (name, *entry.aliases)
                        if n.startswith(peer + "/")]
            if shadowed:
                raise ValueError(f"models {shadowed} start with {peer + '/'!r}, which names peer {peer!r}'s "
                                 f"models; rename the peer or the models")
        return self


class ConfigError(Exception):
    """models.yaml could not be read or is invalid; the message lists every problem."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


def config_path() -> Path:
    return Path(os.environ.get("ULLM_CONFIG", home_dir() / "config" / "models.yaml"))


def _position(text: str, loc: tuple) -> str:
    """`line L, column C` of the deepest YAML node on the error's path (for an unknown key: the key itself)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return ""
    mark = node.start_mark if node else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            mark, node = match[0].start_mark, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            mark = node.start_mark
        else:
            break
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def parse_config(text: str, source: str = "models.yaml") -> Config:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not str(p).startswith("function-after"))
            where = _position(text, loc)
            problems.append(f"{'.'.join(str(p) for p in loc) or '(top level)'}"
                            f"{f' ({where})' if where else ''}: {err['msg']}")
        raise ConfigError(f"{source}: " + "; ".join(problems), problems) from exc


def load_config(path: Path | None = None) -> Config:
    path = path or config_path()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return parse_config(text, str(path))


def model_roots(config: Config) -> list[Path]:
    home = home_dir()
    return [(home / root).resolve() for root in config.router.model_roots]
