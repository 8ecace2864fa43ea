"""The metrics listener: ``GET /metrics`` in the Prometheus text format on ``[metrics] listen``, served by hypercorn's
trio worker inside the service's nursery.

Every scrape reads the node's counters at that moment (:mod:`node.metrics.collect`); scrapes closer together than
``metrics.scrape_reuse_s`` share one reading, and one reading runs at a time, so a flood of requests costs the node
no more than one scrape per interval. Every request needs ``Authorization: Bearer <token>``, the token in
``<data dir>/metrics/token`` (0600, created on first start; `village metrics token` prints it; Prometheus reads it
with ``authorization: {credentials_file: ...}``): other local users and processes must not read the node's figures.
A request whose ``Host`` is neither an IP literal, ``localhost`` nor one of ``metrics.allowed_hosts`` is refused,
whatever the listen address (DNS rebinding: a web page must not read the metrics through a browser that can reach
the listener). The control method lives in :mod:`node.metrics.rpc`.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from node.metrics.collect import CONTENT_TYPE, render, take_snapshot
from node.metrics.rpc import SERVICE_NAME
from node.metrics.settings import MetricsSection, is_ip_literal

if TYPE_CHECKING:
    from node.httpserve import ConnectionCap
    from node.node import Node

log = logging.getLogger("village.metrics")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Scraper:
    """One reading at a time, reused for ``reuse_s`` (trio clock). ``exclude``: subsystems left out (the anchor's
    route: :data:`~node.metrics.collect.PERSONAL_SUBSYSTEMS`); ``extra``: labelled counter families a front end adds
    (read with the node's, cached with them)."""

    def __init__(
        self,
        node: Node,
        reuse_s: float,
        *,
        exclude: frozenset[str] = frozenset(),
        extra: Callable[[], Mapping[str, tuple[str, str, Mapping[str, int]]]] | None = None,
    ) -> None:
        self.node = node
        self.reuse_s = reuse_s
        self.exclude = exclude
        self.extra = extra
        self.scrapes = 0  # readings taken (not requests answered)
        self._lock = trio.Lock()
        self._last: tuple[float, bytes] | None = None

    async def text(self) -> bytes:
        async with self._lock:
            now = trio.current_time()
            if self._last is None or now - self._last[0] >= self.reuse_s or self.reuse_s == 0:
                self.scrapes += 1
                snapshot = await take_snapshot(self.node, exclude=self.exclude)
                if self.extra is not None:
                    snapshot = dataclasses.replace(snapshot, labelled_counters=self.extra())
                self._last = (now, render(snapshot))
            return self._last[1]


class MetricsApp:
    """The ASGI app: ``GET /metrics`` only."""

    def __init__(self, scraper: Scraper, allowed_hosts: frozenset[str], token: str) -> None:
        self.scraper = scraper
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts) | {"localhost"}  # and every IP literal
        self._expected = f"Bearer {token}".encode()
        self.unauthorised = 0  # requests refused for a missing or wrong token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # nothing to set up or tear down
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        name = host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() else host
        if not is_ip_literal(name) and name.lower() not in self.allowed_hosts:
            await _respond(send, 421, b"misdirected request: unexpected Host\n")
        elif not hmac.compare_digest(headers.get(b"authorization", b""), self._expected):
            self.unauthorised += 1
            await _respond(
                send,
                401,
                b"unauthorized: send Authorization: Bearer <village metrics token>\n",
                [(b"www-authenticate", b'Bearer realm="aivillage-metrics"')],
            )
        elif scope["path"] != "/metrics":
            await _respond(send, 404, b"not found: the metrics are at /metrics\n")
        elif scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
        else:
            body = await self.scraper.text()
            await _respond(send, 200, body if scope["method"] == "GET" else b"", content_type=CONTENT_TYPE)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: str = "text/plain; charset=utf-8",
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


class MetricsService:
    """Serves ``GET /metrics`` on ``metrics.listen`` until cancelled."""

    name = SERVICE_NAME

    def __init__(self, settings: MetricsSection) -> None:
        self.settings = settings
        self.url: str | None = None
        self.scraper: Scraper | None = None
        self.connections: ConnectionCap | None = None

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config as HypercornConfig

        from node.httpserve import ConnectionCap, serve_capped, short_timeouts
        from node.tokenfile import ensure_token, metrics_token_path

        token = ensure_token(metrics_token_path(node.config.data_dir), "metrics token")
        host, port = self.settings.host_port()
        self.scraper = Scraper(node, self.settings.scrape_reuse_s)
        allowed = frozenset(self.settings.allowed_hosts)
        config = HypercornConfig()
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = log
        short_timeouts(config)
        app = MetricsApp(self.scraper, allowed, token)
        self.connections = ConnectionCap(self.settings.max_connections)
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(partial(serve_capped, app, config, self.connections))
            self.url = binds[0] + "/metrics"
            log.info("Prometheus metrics at %s", self.url)
            task_status.started()
