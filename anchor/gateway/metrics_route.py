"""``GET /metrics``: the anchor's node and gateway counters in the Prometheus text format, for keys holding the
``metrics:read`` scope (admin keys; a key narrowed to that scope alone is what a Prometheus server should hold,
sent as ``authorization: Bearer <access token>``). The same families as the node's own listener
(:mod:`node.metrics`), plus the gateway's refusals by HTTP status; each scrape reads the counters then. A read: no audit
row; the per-IP and per-key limits apply as on every route. The twin's figures are never sent from here (a scrape of
an anchor leaves the machine): :data:`~node.metrics.collect.PERSONAL_SUBSYSTEMS`.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time.
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import Response

from anchor.gateway.auth import Principal
from anchor.gateway.roles import SCOPE_METRICS_READ
from node.metrics.collect import CONTENT_TYPE, PERSONAL_SUBSYSTEMS, render, take_snapshot

if TYPE_CHECKING:
    from anchor.gateway.app import GatewayContext

GATEWAY_REFUSALS = "village_gateway_refusals"


def add_metrics_route(
    app: FastAPI,
    ctx: "GatewayContext",
    scoped: Callable[[str], Callable[..., Awaitable[Principal]]],
    errors: dict[int | str, dict[str, Any]],
) -> None:
    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {}}, "description": "Prometheus text"}, **errors},
    )
    async def metrics(principal: Annotated[Principal, Depends(scoped(SCOPE_METRICS_READ))]) -> Response:
        """Every counter of the anchor's node and of this gateway, in the Prometheus text exposition format."""
        snapshot = await take_snapshot(ctx.node, exclude=PERSONAL_SUBSYSTEMS)
        refusals = (
            "Requests the gateway answered with an error, by HTTP status (401, 403 scope, 429 rate limit, ...).",
            "status",
            dict(ctx.counters),
        )
        body = render(dataclasses.replace(snapshot, labelled_counters={GATEWAY_REFUSALS: refusals}))
        return Response(content=body, media_type=CONTENT_TYPE)
