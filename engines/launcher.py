"""What supervisord runs for an engine program: read the launch plan the router wrote, then exec it in place.

`python -m engines.launcher vllm|llamacpp`, or an engine's further instance (`llamacpp-1`: its plan is
`run/engines/llamacpp-1.json`). The plan (`run/engines/<engine>.json`) holds the exact command line,
port and environment the router decided; it outlives restarts, so a crashed or `supervisorctl restart`-ed engine
comes back with the same model and settings, whatever models.yaml says meanwhile. The launcher reads nothing
else. Exec (not a child process) keeps supervisord's PID the engine's PID, so signals and crash detection are
direct. The engine gets the environment without secrets, with telemetry off and the hub offline
(engines/environment.py); the command line it prints has secret-named flags' values replaced.
Exit codes: 2 = no model requested, 3 = bad model path, 78 = unusable plan, 127 = engine binary missing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engines import model_files
from engines.environment import engine_environment, redacted_argv
from engines.process_group import TOKEN_ENV, kill_leftovers, record_group
from engines.spec import ENGINE_NAMES, StateFileError, engine_of, read_plan, run_dir


def since_launch(log: str, engine: str) -> str:
    """The part of an engine's log written since its last launch (all of it when the launch line is not in it)."""
    at = log.rfind(launch_line(engine))
    return log if at < 0 else log[at:]


def launch_line(engine: str) -> str:
    return f"[launcher] {engine}: launch plan "


def fail(engine: str, message: str, code: int) -> None:
    print(f"[launcher] {engine}: {message}", flush=True)
    sys.exit(code)


def main(argv: list[str]) -> None:
    if len(argv) != 1 or engine_of(argv[0]) not in ENGINE_NAMES:
        print(f"usage: python -m engines.launcher {{{'|'.join(ENGINE_NAMES)}}}[-N]", file=sys.stderr)
        sys.exit(64)
    engine, run = argv[0], run_dir()  # `engine`: the instance, whose files these are
    try:
        plan = read_plan(run, engine)
    except StateFileError as exc:
        fail(engine, f"{exc}; load a model with POST /v1/models/load", 78)
    if plan is None:
        fail(engine, "no model requested; load one with POST /v1/models/load", 2)
    if not plan.argv:
        fail(engine, "the launch plan predates this version; the router rewrites it at its next start", 78)
    files = model_files.BY_ENGINE[engine_of(engine)]
    problem = files.check_model(Path(plan.spec.path))
    if problem:
        fail(engine, problem, 3)
    if not os.access(plan.argv[0], os.X_OK):
        fail(engine, files.missing_binary(plan.argv[0]), 127)

    leftovers = kill_leftovers(run, engine)
    if leftovers:
        print(f"[launcher] {engine}: killed leftover processes of the previous run: {leftovers}", flush=True)
    record = record_group(run, engine, plan.id, plan.argv[0])
    env = {**engine_environment(os.environ, plan.env), TOKEN_ENV: record.token}
    print(f"{launch_line(engine)}{plan.id}", flush=True)
    print(f"[launcher] {engine}: serving {plan.spec.served_name} from {plan.spec.path}", flush=True)
    print(f"[launcher] {engine}: exec {' '.join(redacted_argv(plan.argv))}", flush=True)
    os.execve(plan.argv[0], plan.argv, env)


if __name__ == "__main__":
    main(sys.argv[1:])
