"""The OpenAPI document and the app's routes do not drift apart."""

from router.app import create_app
from router.config import PROJECT_HOME, load_config
from router.handlers.openapi import build_spec


def test_every_route_is_documented_and_every_documented_path_exists(tmp_path):
    app = create_app(load_config(PROJECT_HOME / "config" / "models.yaml"), tmp_path)
    served = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    documented = {(method, path) for path, ops in build_spec()["paths"].items() for method in ops}
    assert served == documented
