"""`python -m router`: serve the router on the configured host and port (supervisord runs this)."""

import logging
import os
import sys

import uvloop
from aiohttp import web

from router.app import create_app
from router.config import ConfigError, load_config


def main() -> None:
    logging.basicConfig(level=os.environ.get("ULLM_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"router: {exc}", file=sys.stderr)
        sys.exit(78)
    port = int(os.environ.get("ULLM_ROUTER_PORT", config.router.port))
    uvloop.install()  # a faster event loop: the streaming path is a per-chunk copy loop
    # handler_cancellation: a client that hangs up cancels its handler, so the engine request is closed and
    # stops generating (loads, unloads and reloads are shielded from it and finish regardless).
    web.run_app(create_app(config), host=config.router.host, port=port, access_log=None, handler_cancellation=True,
                print=lambda msg: logging.info(msg.strip()))


if __name__ == "__main__":
    main()
