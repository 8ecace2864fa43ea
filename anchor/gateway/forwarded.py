"""Client addresses behind a load balancer (``[anchor] trusted_proxies``).

Behind HAProxy or Caddy every request reaches the gateway from the proxy's address, so the per-IP rate limit would
put all clients in one bucket. :class:`TrustedProxies` wraps the ASGI app: a request whose peer address lies in a
trusted network (the proxies' addresses, given by the operator) has its client address replaced with the **last**
``X-Forwarded-For`` entry — the one the proxy itself appended (HAProxy ``option forwardfor``, Caddy's default); what
the client wrote before it is ignored, so a client cannot choose its bucket. A request from anywhere else keeps its
peer address and its ``X-Forwarded-For`` is ignored. An entry that is not an IP address leaves the peer address.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from anchor.settings import Network


class TrustedProxies:
    def __init__(self, app: ASGIApp, networks: Sequence[Network]) -> None:
        self.app = app
        self.networks = tuple(networks)

    def trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client and self.trusted(client[0]):
            forwarded = b",".join(v for k, v in scope["headers"] if k == b"x-forwarded-for")
            last = forwarded.rsplit(b",", 1)[-1].strip().decode("latin-1") if forwarded else ""
            with contextlib.suppress(ValueError):  # no usable entry: the proxy's own address stays
                scope = {**scope, "client": (str(ipaddress.ip_address(last)), 0)}
        await self.app(scope, receive, send)
