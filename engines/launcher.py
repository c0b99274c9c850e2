"""What supervisord runs for an engine program: read the desired model, then exec the engine in place.

`python -m engines.launcher vllm|llamacpp`. The desired model is the spec file the router wrote under the run
folder; it outlives restarts, so a crashed or `supervisorctl restart`-ed engine comes back with the same model.
Exec (not a child process) keeps supervisord's PID the engine's PID, so signals and crash detection are direct.
Exit codes: 2 = no model requested, 3 = bad model path, 127 = engine binary missing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engines import build, llamacpp
from engines.registry import ADAPTERS, ENGINE_NAMES
from engines.process_group import kill_leftovers, record_group
from engines.spec import read_spec
from router.config import ConfigError, load_config, run_dir


def fail(engine: str, message: str, code: int) -> None:
    print(f"[launcher] {engine}: {message}", flush=True)
    sys.exit(code)


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in ENGINE_NAMES:
        print(f"usage: python -m engines.launcher {{{'|'.join(ENGINE_NAMES)}}}", file=sys.stderr)
        sys.exit(64)
    engine = argv[0]
    try:
        config = load_config()
    except ConfigError as exc:
        fail(engine, str(exc), 78)
    settings = config.engines.get(engine)
    if settings is None:
        fail(engine, f"engine {engine!r} is not configured in models.yaml", 78)
    spec = read_spec(run_dir(), engine)
    if spec is None:
        fail(engine, "no model requested; load one with POST /v1/models/load", 2)

    adapter = ADAPTERS[engine]
    problem = adapter.check_model(Path(spec.path))
    if problem:
        fail(engine, problem, 3)
    if engine == "llamacpp":
        binary = build.find_binary(settings.binary)
        if not os.access(binary, os.X_OK):
            fail(engine, f"llama-server binary not found at {binary}; run scripts/setup.sh "
                         "or set LLAMA_SERVER_BIN to an existing llama-server", 127)
        command = llamacpp.build_command(spec, settings.port, settings.extra_args, binary)
    else:
        command = adapter.build_command(spec, settings.port, settings.extra_args)

    leftovers = kill_leftovers(run_dir(), engine)
    if leftovers:
        print(f"[launcher] {engine}: killed leftover processes of the previous run: {leftovers}", flush=True)
    record_group(run_dir(), engine)
    env = {**os.environ, **adapter.default_env(), **settings.env}
    print(f"[launcher] {engine}: serving {spec.served_name} from {spec.path}", flush=True)
    print(f"[launcher] {engine}: exec {' '.join(command)}", flush=True)
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv[1:])
