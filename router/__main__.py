"""`python -m router`: serve the router on the configured host and port (supervisord runs this)."""

import logging
import os
import resource
import sys

import uvloop
from aiohttp import web

from router import router_env
from router.app import create_app
from router.config import ConfigError, load_config, run_dir
from router.exposure import bind_address
from router.state import WARNINGS


# Each stream holds two sockets (client and engine): 256 streams need over 512 descriptors, past the soft limit
# of 1024 that many systems give, once the UI, metrics and logs are counted. The hard limit allows more.
OPEN_FILES_WANTED = 65536


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        logging.info("open files limit raised from %d to %d", soft, wanted)


def main() -> None:
    from_up_sh = router_env.apply(run_dir())  # before anything reads the keys, host, port or log level
    logging.basicConfig(level=os.environ.get("ULLM_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if from_up_sh is not None:
        logging.info("keys, host, port and log level as scripts/up.sh last gave them (%s): %s",
                     router_env.env_file(run_dir()), ", ".join(router_env.changes(None, from_up_sh)))
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"router: {exc}", file=sys.stderr)
        sys.exit(78)
    host, port = bind_address(config)
    raise_open_files_limit()
    app = create_app(config)
    for warning in app[WARNINGS]:
        logging.warning("%s", warning)
    uvloop.install()  # a faster event loop: the streaming path is a per-chunk copy loop
    # handler_cancellation: a client that hangs up cancels its handler, so the engine request is closed and
    # stops generating (loads, unloads and reloads are shielded from it and finish regardless).
    web.run_app(app, host=host, port=port, access_log=None, handler_cancellation=True,
                print=lambda msg: logging.info(msg.strip()))


if __name__ == "__main__":
    main()
