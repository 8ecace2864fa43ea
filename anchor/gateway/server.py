"""Serve an ASGI app with hypercorn's trio worker inside the caller's nursery.

``await nursery.start(serve_http, app, "127.0.0.1:0", stop)`` returns the bound URLs (``http://HOST:PORT``,
so port 0 reports the port it got) once the socket listens; setting ``stop`` lets in-flight requests finish
(up to ``graceful_s``) and returns.
"""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import Framework

from node.config import parse_host_port

log = logging.getLogger("village.anchor.http")

GRACEFUL_S = 5.0  # seconds open requests get to finish at shutdown
KEEP_ALIVE_S = 30.0  # idle keep-alive connections are closed after this
WS_MAX_MESSAGE_BYTES = 4096  # event-stream clients have nothing to say; hypercorn's default is 16 MiB


async def serve_http(
    app: Framework,
    listen: str,
    stop: trio.Event,
    *,
    graceful_s: float = GRACEFUL_S,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    host, port = parse_host_port("anchor.gateway_listen", listen)
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = graceful_s
    config.keep_alive_timeout = KEEP_ALIVE_S
    config.include_server_header = False
    config.websocket_max_message_size = WS_MAX_MESSAGE_BYTES
    await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
