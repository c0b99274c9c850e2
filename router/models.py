"""Model resolution: what a user names (a catalog name, an alias, a path) becomes a validated ModelSpec for
one engine; what a client request names becomes the engine to use and the model it must be served by."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydantic import ValidationError

from engines.registry import ADAPTERS, ENGINE_NAMES, guess_engine
from engines.spec import ModelSpec
from router.config import Config, model_roots
from router.engine_state import State
from router.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from router.engine_group import EngineGroup
    from router.lifecycle import EngineManager


def catalog_lookup(config: Config, name: str) -> tuple[str, Any] | None:
    """(catalog name, entry) for a catalog name or alias."""
    if name in config.models:
        return name, config.models[name]
    for catalog_name, entry in config.models.items():
        if name in entry.aliases:
            return catalog_name, entry
    return None


def confine_path(config: Config, raw: str) -> Path:
    """Resolve a user-given path under one of the model roots; refuse anything that escapes them."""
    roots = model_roots(config)
    if "\0" in raw:
        raise InvalidRequest("model path contains a NUL byte", param="model_path", code="invalid_path")
    candidate = Path(raw)
    tries = [candidate] if candidate.is_absolute() else [root / candidate for root in roots]
    inside = False
    for path in tries:
        try:
            resolved = path.resolve()  # follows symlinks, removes `..`
            if not any(resolved.is_relative_to(root) for root in roots):
                continue
            inside = True
            if resolved.exists():
                return resolved
        except (OSError, RuntimeError, ValueError) as exc:  # a name too long, a symlink loop: no model is there
            why = getattr(exc, "strerror", None) or str(exc)
            raise InvalidRequest(f"model path {raw[:200]!r} cannot be used: {why}",
                                 param="model_path", code="invalid_path") from exc
    if not inside:
        raise InvalidRequest(f"model path {raw!r} is outside the model roots "
                             f"({', '.join(str(r) for r in roots)})", param="model_path", code="path_not_allowed")
    raise NotFound(f"model {raw!r} is neither a catalog model nor a file under the model roots "
                   f"({', '.join(str(r) for r in roots)})", param="model_path", code="model_not_found")


def resolve_spec(config: Config, name: str, engine: str | None, options: dict[str, Any]) -> ModelSpec:
    if engine is not None and engine not in ENGINE_NAMES:
        raise InvalidRequest(f"unknown engine {engine!r}; choose one of {', '.join(ENGINE_NAMES)}",
                             param="engine", code="unknown_engine")
    found = catalog_lookup(config, name)
    catalog_name = found[0] if found else None
    if found:
        served_name, entry = found
        if engine and engine != entry.engine:
            raise InvalidRequest(f"model {served_name!r} is a {entry.engine} model, not {engine}",
                                 param="engine", code="engine_mismatch")
        engine, path, merged = entry.engine, confine_path(config, entry.path), {**entry.options, **options}
    else:
        path = confine_path(config, name)
        engine = engine or guess_engine(path)
        served_name, merged = path.stem if path.suffix == ".gguf" else path.name, options
    adapter = ADAPTERS[engine]
    try:
        typed = adapter.Options(**merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InvalidRequest(f"invalid {engine} option {field}: {err['msg']}", param=field,
                             code="invalid_option") from exc
    problem = adapter.FILES.check_model(path)
    if problem:
        raise InvalidRequest(problem, param="model_path", code="wrong_model_format")
    return ModelSpec(engine=engine, path=str(path), served_name=served_name, options=typed.model_dump(),
                     catalog_name=catalog_name, overrides=dict(options))


def re_resolve(config: Config, spec: ModelSpec) -> ModelSpec | None:
    """The spec `config` would give for what was loaded (None when its catalog entry is gone)."""
    # A spec file written before specs recorded their catalog name: its served name is the catalog name.
    catalog_name = spec.catalog_name or (spec.served_name if spec.served_name in config.models else None)
    if catalog_name and catalog_lookup(config, catalog_name) is None:
        return None
    return resolve_spec(config, catalog_name or spec.path, spec.engine, spec.overrides)


def names_of(spec: ModelSpec, config: Config) -> set[str]:
    """Every string a user may send for a loaded model: served name, path, catalog name and aliases."""
    names = {spec.served_name, spec.path, Path(spec.path).name}
    found = catalog_lookup(config, spec.served_name)
    if found:
        names |= {found[0], *found[1].aliases}
    return names


def infer_engine(engines: dict[str, "EngineGroup"], config: Config, engine: str | None,
                 model: str | None) -> "EngineGroup":
    """The engine a request names, else the one engine whose resident or catalog model matches `model`."""
    if engine is not None:
        if engine not in engines:
            raise InvalidRequest(f"unknown engine {engine!r}; choose one of: {', '.join(engines)}",
                                 param="engine", code="unknown_engine")
        return engines[engine]
    candidates = set()
    if model:
        candidates = {n for n, g in engines.items() if any(model in names_of(s, config) for s in g.known_specs())}
        if not candidates and (found := catalog_lookup(config, model)) and found[1].engine in engines:
            candidates = {found[1].engine}
    if len(candidates) == 1:
        return engines[candidates.pop()]
    why = f"model {model!r} matches {len(candidates) or 'no'} engine(s)" if model else "no 'engine' or 'model' given"
    raise InvalidRequest(f"cannot tell which engine to use ({why}); send \"engine\": one of {', '.join(engines)}",
                         param="engine", code="engine_required")


@dataclass(frozen=True)
class Routing:
    """What a request needs from its engine instance."""
    wanted: str | None  # the served name it must be answered by; None: whichever model the instance serves
    load: ModelSpec | None = None  # the on-demand load that brings it, when the instance will not serve it anyway


async def route_request(group: "EngineGroup", requested: str | None, config: Config
                        ) -> tuple["EngineManager", Routing]:
    """Map the `model` a client sent to the instance that answers it and what that instance must serve. A
    catalog model of this engine, or one it serves or swaps, is waited for (and loaded on demand where the group
    places it); another engine's model or an unknown path is a 400; any other name (e.g. "gpt-4o" from an
    unmodified client) takes the model of the engine's most recently used instance."""
    if requested is not None:
        found = catalog_lookup(config, requested)
        if found and found[1].engine == group.name:
            return await _wanted(group, found[0], lambda: resolve_spec(config, found[0], group.name, {}))
        for spec in group.known_specs():
            if requested in names_of(spec, config):
                return await _wanted(group, spec.served_name, lambda spec=spec: spec)
        if found or "/" in requested or requested.endswith(".gguf"):
            raise group.primary.not_loaded(requested)
    primary = group.primary
    resume = primary.details.resume_spec
    if resume and group.settings.on_demand and primary.state in (State.IDLE, State.STOPPING):
        return primary, Routing(None, resume)  # an idle unload took it away: the next request brings it back
    return primary, Routing(None)


async def _wanted(group: "EngineGroup", served_name: str, spec: Callable[[], ModelSpec]
                  ) -> tuple["EngineManager", Routing]:
    if instance := group.serving(served_name):
        return instance, Routing(served_name)
    if not group.settings.on_demand:
        raise group.primary.not_loaded(served_name)
    wanted = spec()
    instance = await group.place(wanted)
    if joined := group.serving(served_name):  # placed by another request while this one was choosing
        return joined, Routing(served_name)
    return instance, Routing(served_name, wanted)
