"""Turn what a user names (a catalog name, an alias, or a path) into a validated ModelSpec for one engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engines.registry import ADAPTERS, ENGINE_NAMES
from engines.spec import ModelSpec
from router.config import Config, model_roots
from router.errors import InvalidRequest, NotFound


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
    for path in tries:
        try:
            resolved = path.resolve()  # follows symlinks, removes `..`
            if not any(resolved.is_relative_to(root) for root in roots):
                continue
            if resolved.exists():
                return resolved
        except OSError as exc:  # a name too long, a symlink loop: no model can be there
            raise InvalidRequest(f"model path {raw[:200]!r} cannot be used: {exc.strerror}",
                                 param="model_path", code="invalid_path") from exc
    if not any(p.resolve().is_relative_to(root) for p in tries for root in roots):
        raise InvalidRequest(f"model path {raw!r} is outside the model roots "
                             f"({', '.join(str(r) for r in roots)})", param="model_path", code="path_not_allowed")
    raise NotFound(f"model {raw!r} is neither a catalog model nor a file under the model roots "
                   f"({', '.join(str(r) for r in roots)})", param="model_path", code="model_not_found")


def guess_engine(path: Path) -> str:
    return "llamacpp" if path.suffix == ".gguf" else "vllm"


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
    problem = adapter.check_model(path)
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
