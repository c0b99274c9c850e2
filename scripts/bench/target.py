"""What a benchmark measures: MODEL (a catalog name, a path under the model roots, or a Hugging Face repo id
that is downloaded first) on an engine of the router, or a model of any OpenAI-compatible API (remote), and
the engine options it is loaded with."""

from __future__ import annotations

import argparse
import os
import re
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

from bench.admin import Router, RouterError
from engines.registry import guess_engine

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_ROUTER = "http://127.0.0.1:8080"
PROMPT_ROOM = 512  # tokens kept per llama.cpp slot for the prompt and chat template
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class Target:
    label: str  # names the output folder and the rows
    model: str  # what the requests name (the served name for the router; the API's model id when remote)
    engine: str  # vllm, llamacpp, or remote
    model_path: str | None = None  # what the load request names (None: remote)
    options: dict = field(default_factory=dict)  # engine options for the load request
    remote_url: str | None = None

    @property
    def remote(self) -> bool:
        return self.remote_url is not None


def add_where_arguments(parser: argparse.ArgumentParser, verb: str, marked: str, output_dir: Path,
                        label: bool = True) -> argparse._ArgumentGroup:
    """The "where" options the benchmark, the evaluation and the quality report share: --router, --base-url,
    --api-key-env, --label (unless `label` is False) and --output-dir; the group, for a script's own additions."""
    where = parser.add_argument_group("where")
    where.add_argument("--router", default=os.environ.get("ULLM_ROUTER_URL", DEFAULT_ROUTER),
                       help=f"the unified-llm router (default: $ULLM_ROUTER_URL or {DEFAULT_ROUTER})")
    where.add_argument("--base-url", help=f"{verb} any OpenAI-compatible API instead (…/v1); marked {marked}")
    where.add_argument("--api-key-env", help="environment variable holding the API key (router default: "
                                             "ULLM_ADMIN_KEY, then ULLM_API_KEY)")
    if label:
        where.add_argument("--label", help="names the results (default: the model name)")
    where.add_argument("--output-dir", type=Path, default=output_dir,
                       help=f"results go to OUTPUT_DIR{'/<label>' if label else ''}/ "
                            f"(default: {os.path.relpath(output_dir, PROJECT)}/)")
    return where


def api_headers(api_key_env: str | None, remote: bool) -> dict:
    """--api-key-env's key; for the router without it, ULLM_ADMIN_KEY then ULLM_API_KEY (the first of a list)."""
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(f"--api-key-env {api_key_env}: that environment variable is not set")
    elif remote:
        key = None
    else:  # the router's own keys; either may list several, separated by commas
        key = (os.environ.get("ULLM_ADMIN_KEY") or os.environ.get("ULLM_API_KEY") or "").split(",")[0].strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def folder_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "model"


def parse_options(pairs: list[str]) -> dict:
    """--option KEY=VALUE → {KEY: VALUE} with numbers and booleans typed as the router expects them."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option takes KEY=VALUE, not {pair!r}")
        for cast in (int, float):
            try:
                options[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            options[key] = {"true": True, "false": False}.get(value.lower(), value)
    return options


def llamacpp_slots(options: dict, lengths: list[int], levels: list[int], parallel_tokens: int) -> dict:
    """Give every parallel stream its own llama.cpp slot with room for its prompt and the longest answer,
    unless the user chose ctx_size or parallel. llama-server splits ctx_size evenly over its slots."""
    if "ctx_size" in options or "parallel" in options:
        return options
    slots = max(levels, default=1)
    longest = max([*lengths, parallel_tokens if levels else 0])
    return {**options, "parallel": slots, "ctx_size": slots * (longest + PROMPT_ROOM)}


def download(args: Namespace) -> Path:
    """The local model path of a Hub repo id: downloaded with download_model.py's code (or, with
    --skip-download, where that code would have put it)."""
    import download_model
    from router.config import load_config, model_roots
    config = load_config()
    fetch_args = Namespace(name=None, repo=args.model, file=None, gguf=args.gguf, path=args.download_dir,
                           revision=None, add_to_catalog=False, catalog_name=None)
    if not args.skip_download:
        return download_model.fetch(fetch_args, config)
    root = Path(args.download_dir).resolve() if args.download_dir else model_roots(config)[0]
    if args.gguf:
        from hub.files import pick_gguf
        files = [str(p.relative_to(root)) for p in root.rglob("*.gguf")]
        return root / pick_gguf(files, args.gguf)[0]
    return root / args.model.split("/")[-1]


def resolve(args: Namespace, router: Router | None) -> Target:
    """MODEL and the flags → what to load and how to name it."""
    if router is None:
        return Target(label=args.label or args.model, model=args.model, engine="remote", remote_url=args.base_url)
    options = parse_options(args.option)
    catalog = router.catalog()
    entry = catalog.get(args.model) or next((m for m in catalog.values() if args.model in m.get("aliases", [])),
                                            None)
    if entry is not None:
        engine, path, label = entry["engine"], entry["id"], args.label or entry["id"]
    elif REPO_ID.match(args.model) and not Path(args.model).exists():
        local = download(args)
        engine = guess_engine(local)
        path, label = str(local), args.label or (local.stem if local.suffix == ".gguf" else local.name)
    else:
        path = args.model
        engine = args.engine or guess_engine(Path(path))
        label = args.label or (Path(path).stem if path.endswith(".gguf") else Path(path).name)
    if args.engine and args.engine != engine:
        raise RouterError(f"{args.model} is a {engine} model, not {args.engine}")
    if engine == "llamacpp" and not args.keep_options:
        options = llamacpp_slots(options, args.lengths, args.parallel, args.parallel_tokens)
    return Target(label=label, model=path, engine=engine, model_path=path, options=options)
