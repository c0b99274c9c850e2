"""Add a downloaded model to config/models.yaml without losing the file's comments or layout (ruamel.yaml's
round trip), and only if the result is still a valid catalog."""

from __future__ import annotations

import io
import os
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from router.config import Config, parse_config


def yaml_rt() -> YAML:
    yaml = YAML()  # round trip: comments, key order, flow maps and quotes stay as written
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines
    yaml.indent(mapping=2, sequence=4, offset=2)
    # ruamel writes a null as an empty value; keep the file's `null`
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def catalog_entry(model_path: Path, roots: list[Path], repo: str) -> tuple[str, CommentedMap]:
    """(default name, entry) for a downloaded model: GGUF → llamacpp, a folder → vllm; the path relative to the
    model root it is under."""
    gguf = model_path.suffix.lower() == ".gguf"
    root = next((r for r in roots if model_path.resolve().is_relative_to(r)), None)
    path = str(model_path.resolve().relative_to(root)) if root else str(model_path.resolve())
    entry = CommentedMap(engine="llamacpp" if gguf else "vllm", path=path)
    if repo:
        entry["repo"] = repo
        if gguf:
            entry["file"] = model_path.name
    entry["description"] = f"{repo or model_path.name}, added by scripts/download_model.py"
    name = model_path.stem if gguf else model_path.name
    return name, entry


def add_model(config_file: Path, config: Config, name: str | None, model_path: Path, repo: str,
              roots: list[Path]) -> tuple[str, bool]:
    """Add the entry; (name, added). An entry of that name for the same path is left as it is."""
    default_name, entry = catalog_entry(model_path, roots, repo)
    name = name or default_name
    existing = config.models.get(name)
    if existing is not None:
        if existing.path == entry["path"]:
            return name, False
        raise ValueError(f"models.yaml already has {name!r} (path {existing.path}); choose another name with "
                         "--catalog-name")
    yaml = yaml_rt()
    text = config_file.read_text()
    doc = yaml.load(text)
    if doc.get("models") is None:
        doc["models"] = CommentedMap()
    doc["models"][name] = entry
    out = io.StringIO()
    yaml.dump(doc, out)
    new_text = out.getvalue()
    parse_config(new_text, str(config_file))  # refuse to write a catalog the router would reject
    tmp = config_file.with_name(f".{config_file.name}.tmp")
    tmp.write_text(new_text)
    os.replace(tmp, config_file)
    return name, True
