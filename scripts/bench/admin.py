"""The unified-llm router's own endpoints the benchmark needs: the catalog, engine status, load and unload."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


class RouterError(Exception):
    """The router could not be reached, or refused a request; the message says which and why."""


class Router:
    def __init__(self, url: str, headers: dict | None = None):
        self.url = url.rstrip("/")
        self.headers = headers or {}

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **self.headers})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", {}).get("message")
            except (ValueError, AttributeError):
                detail = None
            raise RouterError(f"{method} {path}: HTTP {exc.code}: {detail or exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RouterError(f"cannot reach the router at {self.url} ({reason}): start it with ./scripts/up.sh, "
                              "pass --router URL, or measure another API with --base-url") from exc

    def status(self) -> dict:
        return self.call("GET", "/v1/status")

    def catalog(self) -> dict[str, dict]:
        """Catalog models (and loaded ones) by name, each with its engine and aliases."""
        return {m["id"]: m for m in self.call("GET", "/v1/models").get("data", [])}

    def load(self, engine: str, model_path: str, options: dict, timeout: float) -> dict:
        return self.call("POST", "/v1/models/load", {"engine": engine, "model_path": model_path, **options},
                         timeout=timeout)

    def unload(self, engine: str, timeout: float) -> dict:
        return self.call("POST", "/v1/models/unload", {"engine": engine}, timeout=timeout)
