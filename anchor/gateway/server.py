"""Serve an ASGI app with hypercorn's trio worker inside the caller's nursery.

``await nursery.start(serve_http, app, "127.0.0.1:0", stop)`` returns the bound URLs (``http://HOST:PORT``, or
``https://`` with ``tls=(certfile, keyfile)``; port 0 reports the port it got) once the socket listens; setting
``stop`` lets in-flight requests finish (up to ``graceful_s``) and returns. :func:`tls_files` refuses plain HTTP
on a non-loopback address unless ``[anchor] allow_plaintext_public``.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import Framework

from anchor.settings import AnchorSection
from node.errors import StartupError
from node.schema import parse_host_port

log = logging.getLogger("village.anchor.http")

GRACEFUL_S = 5.0  # seconds open requests get to finish at shutdown
KEEP_ALIVE_S = 30.0  # idle keep-alive connections are closed after this
WS_MAX_MESSAGE_BYTES = 4096  # event-stream clients have nothing to say; hypercorn's default is 16 MiB


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def tls_files(section: AnchorSection) -> tuple[str, str] | None:
    """(certfile, keyfile) when the gateway serves HTTPS, None for plain HTTP; a StartupError naming the keys
    when the TLS settings are incomplete, or when plain HTTP would listen on a non-loopback address without
    ``[anchor] allow_plaintext_public = true`` (for a reverse proxy that terminates TLS)."""
    if bool(section.tls_cert) != bool(section.tls_key):
        raise StartupError("[anchor] tls_cert and tls_key go together: set both (PEM files) or neither")
    if section.tls_cert:
        for key, value in (("tls_cert", section.tls_cert), ("tls_key", section.tls_key)):
            if not Path(value).expanduser().is_file():
                raise StartupError(f"[anchor] {key} = {value!r}: no such file")
        return str(Path(section.tls_cert).expanduser()), str(Path(section.tls_key).expanduser())
    host, _port = parse_host_port("anchor.gateway_listen", section.gateway_listen)
    if not is_loopback(host) and not section.allow_plaintext_public:
        raise StartupError(
            f"[anchor] gateway_listen = {section.gateway_listen!r} is not a loopback address and the gateway has no "
            "TLS: set [anchor] tls_cert and tls_key (PEM files), or [anchor] allow_plaintext_public = true when a "
            "reverse proxy in front terminates TLS"
        )
    return None


async def serve_http(
    app: Framework,
    listen: str,
    stop: trio.Event,
    *,
    tls: tuple[str, str] | None = None,
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
    if tls is not None:  # the URLs reported are then https://
        config.certfile, config.keyfile = tls
    await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)
