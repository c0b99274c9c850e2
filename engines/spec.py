"""What an engine should run, and the files in the run folder that carry it across router and engine restarts.

The router decides and writes; the launcher only reads. Every write is atomic and durable (write, fsync,
rename, fsync the folder), so a crash or power cut leaves the old file or the new one, never half of one.
A file that is empty, truncated or unparseable anyway raises `StateFileError`, which callers report and ignore.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ENGINE_NAMES = ("vllm", "llamacpp", "transformers")  # the first also takes a model path no engine's format claims (a folder)
MAX_INSTANCES = 4  # per engine: supervisord.conf runs instance 0 as the engine's program, 1-3 as its -extra group
INSTANCE_PORT_STEP = 100  # instance k listens on the engine's port + k × this
PROJECT_HOME = Path(__file__).resolve().parent.parent


def instance_name(engine: str, index: int) -> str:
    """One process of an engine: `llamacpp` (instance 0, the original program), `llamacpp-1`, `llamacpp-2`..."""
    return engine if index == 0 else f"{engine}-{index}"


def instance_index(instance: str) -> int:
    """`llamacpp` → 0, `llamacpp-2` → 2."""
    return 0 if engine_of(instance) == instance else int(instance.rpartition("-")[2])


def engine_of(instance: str) -> str:
    """The engine an instance name belongs to: `llamacpp-2` → `llamacpp`."""
    base, _, index = instance.rpartition("-")
    return base if base and index.isdigit() else instance


def home_dir() -> Path:
    return Path(os.environ.get("ULLM_HOME", PROJECT_HOME)).resolve()


def run_dir() -> Path:
    return Path(os.environ.get("ULLM_RUN_DIR", home_dir() / "run"))


@dataclass(frozen=True)
class ModelSpec:
    engine: str
    path: str  # absolute path of a model folder (vLLM) or a .gguf file (llama.cpp)
    served_name: str  # the model name the engine answers to
    options: dict[str, Any] = field(default_factory=dict)  # typed engine options, already validated
    catalog_name: str | None = None  # the models.yaml entry it came from, if any (re-resolved on reload)
    overrides: dict[str, Any] = field(default_factory=dict)  # options the load request set over the catalog's


@dataclass(frozen=True)
class LaunchPlan:
    """Exactly what the launcher starts: the router builds it from its config in force, so an edited but not
    reloaded models.yaml never changes what a crash restart runs."""
    spec: ModelSpec
    port: int
    argv: list[str]
    env: dict[str, str]  # added to the environment supervisord gives the launcher
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # tells one start of the same model from another

    def same_launch(self, other: "LaunchPlan | None") -> bool:
        """True when `other` would start the same process (the id aside)."""
        return other is not None and (self.spec, self.port, self.argv, self.env) == (
            other.spec, other.port, other.argv, other.env)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


class StateFileError(Exception):
    """A state file exists but cannot be used (empty, truncated, unparseable, from an unknown version)."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"state file {path} is unusable and was ignored: {why}")
        self.path = path


@dataclass(frozen=True)
class Resume:
    """A model unloaded for idleness, which the engine's next request brings back (kept across restarts)."""
    spec: ModelSpec
    reason: str
    unloaded_at: float


def plan_file(run: Path, engine: str) -> Path:
    return run / "engines" / f"{engine}.json"


def _unloaded_marker(run: Path, engine: str) -> Path:
    return run / "engines" / f"{engine}.unloaded"


def _resume_file(run: Path, engine: str) -> Path:
    return run / "engines" / f"{engine}.resume.json"


def _pins_file(run: Path, engine: str) -> Path:
    return run / "engines" / f"{engine}.pinned.json"


def _read_json(path: Path) -> dict | None:
    """The file's JSON object, None when there is no file; StateFileError for anything unusable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateFileError(path, str(exc)) from exc
    if not text.strip():
        raise StateFileError(path, "the file is empty")
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise StateFileError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise StateFileError(path, "not a JSON object")
    return raw


def _spec_from(raw: Any, path: Path) -> ModelSpec:
    try:
        return ModelSpec(**raw)
    except TypeError as exc:
        raise StateFileError(path, f"not a model spec ({exc})") from exc


def read_plan(run: Path, engine: str) -> LaunchPlan | None:
    """The launch plan of an engine (or an instance of one: `llamacpp-1`). A file from before plans (a bare model spec) comes back with `argv` empty:
    the router rebuilds it from its config; the launcher refuses it."""
    path = plan_file(run, engine)
    raw = _read_json(path)
    if raw is None:
        return None
    if "spec" not in raw:
        return LaunchPlan(spec=_spec_from(raw, path), port=0, argv=[], env={}, id="legacy")
    try:
        plan = LaunchPlan(spec=_spec_from(raw["spec"], path), port=int(raw["port"]), argv=list(raw["argv"]),
                          env=dict(raw["env"]), id=str(raw["id"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StateFileError(path, f"not a launch plan ({exc!r})") from exc
    if plan.spec.engine != engine_of(engine):
        raise StateFileError(path, f"it names engine {plan.spec.engine!r}")
    return plan


def write_plan(run: Path, plan: LaunchPlan, instance: str | None = None) -> None:
    """Make `plan` the desired launch of its engine's `instance` (default: instance 0); the model is no longer
    unloaded or waiting to resume."""
    engine = instance or plan.spec.engine
    write_atomically(plan_file(run, engine), plan.to_json())
    _unloaded_marker(run, engine).unlink(missing_ok=True)
    _resume_file(run, engine).unlink(missing_ok=True)


def clear_plan(run: Path, engine: str, on_request: bool = False, resume: Resume | None = None) -> None:
    """Forget the engine's model. `on_request` (an explicit unload) also keeps the default from coming back when
    the router restarts; `resume` (an idle unload) remembers what the next request brings back."""
    if on_request:
        write_atomically(_unloaded_marker(run, engine), "")
    if resume:
        write_atomically(_resume_file(run, engine), json.dumps(asdict(resume), indent=2))
    else:
        _resume_file(run, engine).unlink(missing_ok=True)
    plan_file(run, engine).unlink(missing_ok=True)
    _fsync_dir(plan_file(run, engine).parent)


def read_resume(run: Path, engine: str) -> Resume | None:
    path = _resume_file(run, engine)
    raw = _read_json(path)
    if raw is None:
        return None
    try:
        return Resume(spec=_spec_from(raw["spec"], path), reason=str(raw["reason"]),
                      unloaded_at=float(raw["unloaded_at"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StateFileError(path, f"not a resume record ({exc!r})") from exc


def read_pins(run: Path, engine: str) -> set[str]:
    """The served names pinned on the engine through the admin API (kept across router restarts)."""
    path = _pins_file(run, engine)
    raw = _read_json(path)
    pinned = [] if raw is None else raw.get("pinned")
    if not isinstance(pinned, list) or not all(isinstance(name, str) for name in pinned):
        raise StateFileError(path, "not a list of pinned models")
    return set(pinned)


def write_pins(run: Path, engine: str, pinned: set[str]) -> None:
    write_atomically(_pins_file(run, engine), json.dumps({"pinned": sorted(pinned)}, indent=2))


def unloaded_on_request(run: Path, engine: str) -> bool:
    return _unloaded_marker(run, engine).exists()


def write_atomically(target: Path, text: str) -> None:
    """Replace `target` with `text` so that a crash at any moment leaves the old file or the new one. The file is
    the owner's alone (0600, whatever the umask): a plan holds the engine's environment from models.yaml."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            os.fchmod(handle.fileno(), 0o600)  # a leftover tmp file of another mode is reused by O_CREAT
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in `folder` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
