"""The OpenAPI document and the app's routes do not drift apart."""

from router.app import create_app
from router.auth import Audience, route_audiences
from router.config import PROJECT_HOME, load_config
from router.handlers.openapi import build_spec


def test_every_route_is_documented_and_every_documented_path_exists(tmp_path):
    app = create_app(load_config(PROJECT_HOME / "config" / "models.yaml"), tmp_path)
    served = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    spec = build_spec(route_audiences(app.router))
    documented = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert served == documented


def test_what_needs_a_key_follows_each_routes_audience(tmp_path):
    audiences = route_audiences(create_app(load_config(PROJECT_HOME / "config" / "models.yaml"), tmp_path).router)
    for path, ops in build_spec(audiences)["paths"].items():
        for method, operation in ops.items():
            who = audiences[(method.upper(), path)]
            assert operation["x-audience"] == who.value, (method, path)
            assert ("401" in operation["responses"]) == (who is not Audience.OPEN), (method, path)
