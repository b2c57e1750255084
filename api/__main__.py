"""`python -m api`: uvicorn with uvloop and httptools, API_WORKERS processes."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
from functools import partial
from typing import cast

import uvicorn
import uvloop
from uvicorn.config import STARTUP_FAILURE

from api.http_server import HttpLimits, LimitedHttpToolsProtocol
from api.keys_cli import main as keys_main
from api.preflight import services_reachable
from api.settings import ApiSettings
from api.workers import run_workers
from telemetry.logs import configure_logging


def main() -> None:
    if sys.argv[1:2] == ["keys"]:
        sys.exit(keys_main(sys.argv[2:]))
    argparse.ArgumentParser(
        prog="python -m api",
        description="The REST API (uvicorn). Settings come from the environment: README.md, "
        "docs/api.md.",
    ).parse_args()
    settings = ApiSettings()
    configure_logging(level=settings.log_level, process="api")
    if not uvloop.run(services_reachable(settings)):
        raise SystemExit(1)
    if settings.api_workers > 1:
        # Workers are separate processes: they must share the cursor key (a cursor from one
        # must be valid on the next) and a metrics directory (/metrics sums them all).
        os.environ.setdefault("CURSOR_SECRET", secrets.token_hex(32))
        metrics_dir = tempfile.mkdtemp(prefix="robosense-api-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    else:
        metrics_dir = None
    try:
        config = uvicorn.Config(
            "api.app:serve",
            factory=True,
            host=settings.api_host,
            port=settings.api_port,
            workers=settings.api_workers,
            loop="uvloop",
            # httptools, with the header size and time limits and the connection cap it lacks.
            # uvicorn only calls it with its keywords: a partial (picklable for the workers'
            # processes, unlike a class made here) carries ours.
            http=cast(
                "type[asyncio.Protocol]",
                partial(
                    LimitedHttpToolsProtocol,
                    limits=HttpLimits(
                        max_header_bytes=settings.max_header_bytes,
                        header_timeout_s=settings.header_timeout_s,
                        max_connections=settings.max_connections,
                        retry_after_s=settings.retry_after_s,
                    ),
                ),
            ),
            timeout_keep_alive=settings.keepalive_timeout_s,
            access_log=False,
            # Our JSON logging, set up in each worker by the app factory, not uvicorn's own.
            log_config=None,
            proxy_headers=False,
        )
        if settings.api_workers > 1:
            # A listening socket per worker, so that connections spread (api/workers.py).
            run_workers(config)
        else:
            server = uvicorn.Server(config)
            server.run()
            if not server.started:
                sys.exit(STARTUP_FAILURE)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
