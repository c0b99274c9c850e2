"""`python -m engines.transformers_server --model DIR --served-model-name NAME --port N [...]`"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engines.transformers_server.loading import DTYPES
from engines.transformers_server.protocol import DIFFUSION_ALGS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m engines.transformers_server",
                                description="OpenAI-compatible server over Hugging Face Transformers: causal LMs, "
                                            "Dream-family and DiffusionGemma diffusion models (docs/transformers-engine.md)")
    p.add_argument("--model", type=Path, required=True, help="a Hugging Face-format model folder")
    p.add_argument("--served-model-name", help="the name clients use (default: the folder's name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8003)
    p.add_argument("--dtype", choices=DTYPES, default="auto", help="weights' dtype (auto: the checkpoint's)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default auto: CUDA when torch sees a GPU)")
    p.add_argument("--max-queue", type=int, default=8,
                   help="requests that may wait behind the one generating; more get 503 (default: %(default)s)")
    p.add_argument("--diffusion-steps", type=int, default=None,
                   help="denoising steps when a request gives none (default: Dream one per token, DiffusionGemma "
                        "its generation config's)")
    p.add_argument("--diffusion-alg", choices=DIFFUSION_ALGS, default="entropy",
                   help="Dream's unmasking order when a request gives none (default: %(default)s)")
    p.add_argument("--diffusion-alg-temp", type=float, default=0.0,
                   help="Dream's alg_temp when a request gives none (0: the most confident first)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model folder's own Python code (Dream-family models need it)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.max_queue < 0 or (args.diffusion_steps is not None and args.diffusion_steps < 1):
        p.error("--max-queue must be >= 0 and --diffusion-steps >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from aiohttp import web

    from engines.transformers_server.app import Settings, create_app
    from engines.transformers_server.dream import DiffusionDefaults

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    settings = Settings(model=args.model.resolve(), served_name=args.served_model_name or args.model.resolve().name,
                        dtype=args.dtype, trust_remote_code=args.trust_remote_code, max_queue=args.max_queue,
                        device=args.device,
                        diffusion=DiffusionDefaults(args.diffusion_steps, args.diffusion_alg,
                                                    args.diffusion_alg_temp))
    web.run_app(create_app(settings), host=args.host, port=args.port, handler_cancellation=True, access_log=None,
                shutdown_timeout=3,  # open streams are cancelled (their generation stops) rather than awaited
                print=lambda *_: None)


if __name__ == "__main__":
    main()
