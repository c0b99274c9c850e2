"""What an evaluation talks to: a model on one of the router's engines (loaded first when needed, like the
benchmark does) or a model of any OpenAI-compatible API."""

from __future__ import annotations

from argparse import Namespace

from bench import target as bench_target
from bench.admin import Router
from bench.target import Target, api_headers, folder_name  # noqa: F401 (re-exported for the scripts)


def resolve(args: Namespace, router: Router | None) -> Target:
    """MODEL and the flags → the target, exactly as benchmark_full.py resolves them (catalog names, paths
    under the model roots, Hugging Face repo ids), keeping the catalog's load options."""
    return bench_target.resolve(Namespace(
        model=args.model, label=args.label, engine=args.engine, option=getattr(args, "option", []),
        keep_options=True, lengths=[], parallel=[], parallel_tokens=0,
        skip_download=getattr(args, "skip_download", False), gguf=getattr(args, "gguf", None),
        download_dir=getattr(args, "download_dir", None), base_url=args.base_url), router)


def ensure_loaded(router: Router, target: Target, timeout_s: float) -> dict:
    """Load the target on its engine (a model already loaded with these options is not restarted) and return
    the engine's status; target.model becomes the name the engine serves."""
    answer = router.load(target.engine, target.model_path, target.options, timeout_s)
    target.model = answer.get("model") or target.model
    return router.status().get(target.engine, {})


def request_fields(target: Target, extra_body: dict) -> dict:
    """Fields added to every request: the router's `engine`; for llama.cpp `cache_prompt: false`, because a
    prompt whose prefix is served from another request's cache is computed in other batches, and its answer
    then differs even with the same seed; then --extra-body, which may override both."""
    fields = {}
    if not target.remote:
        fields["engine"] = target.engine
    if target.engine == "llamacpp":
        fields["cache_prompt"] = False
    return {**fields, **extra_body}
