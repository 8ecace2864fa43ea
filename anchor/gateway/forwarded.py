"""Client addresses behind a load balancer (``[anchor] trusted_proxies``).

Behind HAProxy or Caddy every request reaches the gateway from the proxy's address, so the per-IP rate limit would
put all clients in one bucket. :class:`TrustedProxies` wraps the ASGI app: a request whose peer address lies in a
trusted network (the proxies' addresses, given by the operator) has its client address replaced with the **last**
``X-Forwarded-For`` entry — the one the proxy itself appended (HAProxy ``option forwardfor``, Caddy's default); what
the client wrote before it is ignored, so a client cannot choose its bucket. A request from anywhere else keeps its
peer address and its ``X-Forwarded-For`` is ignored. An entry may carry a port (``203.0.113.7:5555``,
``[2001:db8::1]:443``, as some proxies write it): the brackets and port are stripped. An entry that is not an IP
address leaves the peer address.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from anchor.settings import Network


def forwarded_address(entry: str) -> str:
    """The IP address of one ``X-Forwarded-For`` entry, without ``[..]`` or ``:port``; ValueError if none."""
    entry = entry.strip()
    if entry.startswith("["):  # [v6] or [v6]:port
        inner, sep, rest = entry[1:].partition("]")
        if not sep or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            raise ValueError(f"not an address: {entry!r}")
        entry = inner
    elif entry.count(":") == 1:  # v4:port (a bare IPv6 address has two colons or more)
        host, _, port = entry.partition(":")
        if not port.isdigit():
            raise ValueError(f"not an address: {entry!r}")
        entry = host
    return str(ipaddress.ip_address(entry))


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
            last = forwarded.rsplit(b",", 1)[-1].decode("latin-1") if forwarded else ""
            with contextlib.suppress(ValueError):  # no usable entry: the proxy's own address stays
                scope = {**scope, "client": (forwarded_address(last), 0)}
        await self.app(scope, receive, send)
