"""``GET /metrics``: the anchor's node and gateway counters in the Prometheus text format, for keys holding the
``metrics:read`` scope (admin keys; a key narrowed to that scope alone is what a Prometheus server should hold,
sent as ``authorization: Bearer <access token>``). The same families as the node's own listener
(:mod:`node.metrics`), plus the gateway's refusals by HTTP status and its queue consumer's outcomes; each scrape
reads the counters then. A read: no audit row; the per-IP and per-key limits apply as on every route; scrapes
share the node listener's cache (:class:`~node.metrics.service.Scraper`, ``metrics.scrape_reuse_s``). The twin's
figures are never sent from here (a scrape of an anchor leaves the machine):
:data:`~node.metrics.collect.PERSONAL_SUBSYSTEMS`.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time.
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import Response

from anchor.gateway.auth import Principal
from anchor.gateway.roles import SCOPE_METRICS_READ
from node.metrics.collect import CONTENT_TYPE, PERSONAL_SUBSYSTEMS
from node.metrics.service import Scraper
from node.metrics.settings import MetricsSection

if TYPE_CHECKING:
    from anchor.gateway.app import GatewayContext

GATEWAY_REFUSALS = "village_gateway_refusals"
GATEWAY_QUEUE = "village_gateway_queue"


def add_metrics_route(
    app: FastAPI,
    ctx: "GatewayContext",
    scoped: Callable[[str], Callable[..., Awaitable[Principal]]],
    errors: dict[int | str, dict[str, Any]],
) -> None:
    def refusals() -> dict[str, tuple[str, str, dict[str, int]]]:
        help_text = "Requests the gateway answered with an error, by HTTP status (401, 403 scope, 429 rate limit, ...)."
        families = {GATEWAY_REFUSALS: (help_text, "status", dict(ctx.counters))}
        if ctx.queue is not None:
            queue_help = (
                "Queued messages this gateway's consumer handled, by outcome (accepted, failed, duplicates, malformed; "
                "with replicas: claimed from a stopped replica, in_doubt left to the replica handing it over)."
            )
            families[GATEWAY_QUEUE] = (queue_help, "outcome", dict(ctx.queue.counters))
        return families

    # The node listener's cache: scrapes within metrics.scrape_reuse_s share one reading, one reading at a time.
    reuse_s = ctx.node.config.section(MetricsSection).scrape_reuse_s
    scraper = Scraper(ctx.node, reuse_s, exclude=PERSONAL_SUBSYSTEMS, extra=refusals)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {}}, "description": "Prometheus text"}, **errors},
    )
    async def metrics(principal: Annotated[Principal, Depends(scoped(SCOPE_METRICS_READ))]) -> Response:
        """Every counter of the anchor's node and of this gateway, in the Prometheus text exposition format."""
        return Response(content=await scraper.text(), media_type=CONTENT_TYPE)
