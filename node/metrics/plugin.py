"""Metrics as a plugin of the composition root: the ``[metrics]`` section, the listener service when
``metrics.listen`` is set, and the ``metrics.scrape`` control method (the same text, over the socket).

Importing this module is cheap (no trio, no prometheus_client): the service loads when a node builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.metrics.settings import MetricsSection
from node.plugin import Plugin, Service

if TYPE_CHECKING:
    from node.cli_support import CliRegistry
    from node.control.rpc import Registry
    from node.node import Node
    from node.settings import Config


def _services(cfg: Config) -> list[Service]:
    settings = cfg.section(MetricsSection)
    if not settings.listen:
        return []
    from node.metrics.service import MetricsService

    return [MetricsService(settings)]


def _cli(cli: CliRegistry) -> None:
    from node.metrics.cli import add_commands

    add_commands(cli)


def _rpc(node: Node, reg: Registry) -> None:
    from node.metrics.rpc import register

    register(reg, node)


PLUGIN = Plugin(name="metrics", sections=(MetricsSection,), services=_services, rpc=_rpc, cli=_cli)
