"""``metrics.scrape``: what ``GET /metrics`` serves, over the control socket (no listener needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from node.control.rpc import NoParams, Notify, Registry

if TYPE_CHECKING:
    from node.node import Node

SERVICE_NAME = "metrics"  # node.metrics.service.MetricsService.name


def register(reg: Registry, node: Node) -> None:
    async def scrape(_: NoParams, notify: Notify) -> Any:
        from node.metrics.collect import CONTENT_TYPE, render, take_snapshot  # prometheus_client: on first use
        from node.metrics.service import MetricsService

        service = node.service(SERVICE_NAME)
        url = service.url if isinstance(service, MetricsService) else None
        text = render(await take_snapshot(node, reg)).decode()
        return {"url": url, "content_type": CONTENT_TYPE, "text": text}

    reg.add(
        "metrics.scrape",
        NoParams,
        "Every counter of the node in the Prometheus text format (what GET /metrics serves) as 'text', and the "
        "listener's 'url' (null: metrics.listen is off).",
        scrape,
    )
