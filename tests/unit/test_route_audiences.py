"""Every route of the real app declares who may call it (router/auth.py's `@audience`), and this table pins each
one: a route added or an audience changed shows up here as a diff."""

from __future__ import annotations

import pytest

from router.app import create_app
from router.auth import declared_audience, route_audiences
from router.config import PROJECT_HOME, load_config

EXPECTED = {
    ("GET", "/"): "open",
    ("GET", "/static/{path}"): "open",
    ("GET", "/health"): "open",
    ("GET", "/v1/status"): "open",
    ("GET", "/v1/peers"): "open",
    ("GET", "/metrics"): "open",
    ("GET", "/metrics/engines/{engine}"): "open",
    ("GET", "/openapi.json"): "open",
    ("POST", "/v1/completions"): "inference",
    ("POST", "/v1/chat/completions"): "inference",
    ("GET", "/v1/models"): "inference",
    ("POST", "/v1/models/load"): "admin",
    ("POST", "/v1/models/unload"): "admin",
    ("POST", "/v1/models/pin"): "admin",
    ("POST", "/v1/config/reload"): "admin",
    ("GET", "/v1/engines/{engine}/logs"): "admin",
}


@pytest.fixture
def app(tmp_path):
    return create_app(load_config(PROJECT_HOME / "config" / "models.yaml"), tmp_path)


def test_every_route_declares_its_audience(app):
    undeclared = [f"{route.method} {route.resource.canonical}" for route in app.router.routes()
                  if declared_audience(route.handler) is None]
    assert not undeclared, f"add @audience(...) to: {', '.join(undeclared)}"


def test_each_routes_audience_is_the_expected_one(app):
    assert {route: who.value for route, who in route_audiences(app.router).items()} == EXPECTED
