"""What an engine's lifecycle tells observers; the router's metrics (router/metrics.py) listen."""

from __future__ import annotations

from typing import Protocol

from router.engine_state import State


class LifecycleEvents(Protocol):
    def engine_moved(self, engine: str, source: State, target: State) -> None: ...

    def engine_restarted(self, engine: str) -> None: ...

    def observe_load(self, engine: str, model: str, seconds: float, ok: bool) -> None: ...

    def model_swapped(self, engine: str, model: str) -> None: ...

    def waited(self, engine: str, seconds: float) -> None: ...

    def waiting_changed(self, engine: str, by_model: dict[str, int]) -> None: ...

    def on_demand_failed(self, engine: str, model: str, refused: bool) -> None: ...


class NoEvents:
    """Nobody listens (a manager built without the router's metrics, as in the unit tests)."""

    def engine_moved(self, engine: str, source: State, target: State) -> None:
        pass

    def engine_restarted(self, engine: str) -> None:
        pass

    def observe_load(self, engine: str, model: str, seconds: float, ok: bool) -> None:
        pass

    def model_swapped(self, engine: str, model: str) -> None:
        pass

    def waited(self, engine: str, seconds: float) -> None:
        pass

    def waiting_changed(self, engine: str, by_model: dict[str, int]) -> None:
        pass

    def on_demand_failed(self, engine: str, model: str, refused: bool) -> None:
        pass
