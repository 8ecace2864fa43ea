"""The twin as a plugin of the composition root: the ``[twin]`` section, its service, ``village twin``, the
``twin.*`` control methods, the ``ask`` entry point (node.twin.ask) and the observer that turns the user's own
control-socket calls into twin events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from node.plugin import Plugin, Service
from node.twin.settings import TwinSettings

if TYPE_CHECKING:
    from node.cli_support import CliRegistry
    from node.control.rpc import Registry
    from node.node import Node
    from node.settings import Config


def _services(cfg: Config) -> Sequence[Service]:
    settings = cfg.section(TwinSettings)
    if not settings.enabled:
        return []
    from node.twin.service import TwinService

    return [TwinService(settings, cfg.data_dir)]


def _rpc(node: Node, reg: Registry) -> None:
    from node.twin import rpc

    rpc.register_ask(reg, node)  # the entry point: with the twin off, the request goes on without personal context
    svc = node.service("twin")
    if svc is None:
        return  # twin.enabled = false: its modules (numpy) are never imported
    from node.twin.service import TwinService

    if not isinstance(svc, TwinService):
        return
    rpc.observe_socket_calls(reg, svc, node)  # calls on the control socket only: the user's, never MCP clients'
    rpc.register(reg, svc)


def _cli(cli: CliRegistry) -> None:
    from node.twin.cli import add_commands

    add_commands(cli)


PLUGIN = Plugin(name="twin", sections=(TwinSettings,), services=_services, cli=_cli, rpc=_rpc)
