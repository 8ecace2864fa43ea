"""What a subsystem plugs into the composition root (:mod:`node.daemon`) with: a :class:`Plugin`.

A plugin names the settings sections it owns (frozen dataclasses with ``SECTION``, see :mod:`node.settings`), builds
its :class:`Service` objects for a given configuration, adds ``village`` command groups
(:class:`node.cli_support.CliRegistry`) and control-socket methods (:class:`node.control.rpc.Registry`).

Built-in plugins are listed in :data:`node.daemon.BUILTIN_PLUGINS`; external ones (the anchor) are found through
the ``aivillage.plugins`` entry-point group. This module imports nothing but the standard library and trio's types
(only for type checking), so any package may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import trio

    from node.cli_support import CliRegistry
    from node.control.rpc import Registry as MethodRegistry
    from node.node import Node
    from node.settings import Config

ENTRY_POINT_GROUP = "aivillage.plugins"


class Service(Protocol):
    """A long-running part of the daemon, owned by the Node's root nursery.

    The Node starts each with ``await nursery.start(service.run, node)`` in list order, after the inbox, outbox and
    control socket and before the transports; ``run`` calls ``task_status.started()`` once it is ready and then runs
    until it returns or is cancelled at shutdown (after the Node's drain)."""

    name: str

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = ...) -> None: ...


@dataclass(frozen=True)
class Plugin:
    """One subsystem's contribution to the daemon (every field optional but the name)."""

    name: str
    sections: Sequence[type] = ()  # settings dataclasses (with SECTION) this plugin owns
    services: Callable[[Config], Sequence[Service]] | None = None  # [] when its section says disabled
    cli: Callable[[CliRegistry], None] | None = None  # adds `village <group> ...` commands
    rpc: Callable[[Node, MethodRegistry], None] | None = None  # adds control-socket methods
