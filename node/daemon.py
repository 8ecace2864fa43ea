"""The composition root: plugins in, a running daemon out.

:func:`load_plugins` finds the plugins (the built-in ones listed in :data:`BUILTIN_PLUGINS`, then the
``aivillage.plugins`` entry points, e.g. the anchor); :func:`build_node` builds the transports the config asks for,
the :class:`~node.node.Node` and the plugins' services; :func:`run_daemon` runs it until SIGINT/SIGTERM. The CLI
(``village run``) and the plugins' own commands (``village anchor run``) call these; nothing else assembles a node.

The core never imports a plugin's package by name: built-in plugins are import strings resolved here on first use,
external ones come from package metadata.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from node.errors import NodeError
from node.logs import install_log_handler
from node.plugin import ENTRY_POINT_GROUP, Plugin, Service

if TYPE_CHECKING:
    from node.identity import Identity
    from node.node import Node
    from node.settings import Config
    from node.transports.base import Transport
    from node.transports.ble.factory import ManagedBleTransport

log = logging.getLogger("village.daemon")

# Subsystems shipped with the node, as "module:attribute" (imported lazily, in this order).
BUILTIN_PLUGINS: tuple[str, ...] = (
    "node.rag.plugin:PLUGIN",
    "node.mailbox.plugin:PLUGIN",
    "node.twin.plugin:PLUGIN",
    "node.mcp.plugin:PLUGIN",
    "node.agents.plugin:PLUGIN",
    "node.metrics.plugin:PLUGIN",
)


def _load(spec: str) -> Plugin:
    module, _, attr = spec.partition(":")
    plugin = getattr(importlib.import_module(module), attr)
    if not isinstance(plugin, Plugin):
        raise TypeError(f"{spec} is not a node.plugin.Plugin")
    return plugin


@functools.cache
def load_plugins() -> tuple[Plugin, ...]:
    """The built-in plugins, then those registered in the ``aivillage.plugins`` entry-point group. An entry point
    that fails to load is logged and skipped (a broken extra must not take the CLI down)."""
    plugins = [_load(spec) for spec in BUILTIN_PLUGINS]
    names = {p.name for p in plugins}
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - a third-party package's import error: report it, keep the node usable
            log.warning("plugin %s (%s) could not be loaded: %s", ep.name, ep.value, exc)
            continue
        if not isinstance(plugin, Plugin):
            log.warning("plugin %s (%s) is not a node.plugin.Plugin; ignored", ep.name, ep.value)
            continue
        if plugin.name in names:
            continue  # the same distribution seen twice on sys.path (an editable install and a checkout)
        names.add(plugin.name)
        plugins.append(plugin)
    return tuple(plugins)


def build_transports(cfg: Config, ident: Identity) -> list[Transport]:
    """BetaNet (``betanet.enabled``) and BLE (``ble.enabled``, if an adapter is found), as configured."""
    from node.transports.betanet.transport import BetanetTransport
    from node.transports.ble.factory import ble_transport

    transports: list[Transport] = []
    if cfg.betanet.enabled:
        transports.append(BetanetTransport(ident, cfg.betanet))
    ble = ble_transport(cfg, cfg.node.nickname or f"village-{ident.peer_id_hex[:4]}")  # None: BLE off
    if ble is not None:
        transports.append(ble)
    return transports


def build_services(cfg: Config, plugins: Sequence[Plugin]) -> list[Service]:
    """Every plugin's services for ``cfg``, in plugin order."""
    services: list[Service] = []
    for plugin in plugins:
        if plugin.services is not None:
            services.extend(plugin.services(cfg))
    return services


def build_node(
    cfg: Config,
    ident: Identity,
    *,
    plugins: Sequence[Plugin] | None = None,
    transports: Sequence[Transport] | None = None,
    extra_services: Sequence[Service] = (),
    **node_options: Any,
) -> Node:
    """The daemon's Node: transports (built from ``cfg`` unless given), the plugins' services, their RPC methods.
    ``node_options`` go to :class:`~node.node.Node` (``control``, ``persistent_inbox``, ``clock``, ``rng``)."""
    from node.node import Node
    from node.transports.ble.factory import ManagedBleTransport

    plugins = load_plugins() if plugins is None else plugins
    services = [*build_services(cfg, plugins), *extra_services]
    transports = build_transports(cfg, ident) if transports is None else transports
    node = Node(cfg, ident, transports=transports, services=services, plugins=plugins, **node_options)
    for t in transports:
        if isinstance(t, ManagedBleTransport):  # certified ble.power_mode / max_central_links reach the radio
            node.on_config_change(_ble_follower(t))
    return node


def _ble_follower(t: ManagedBleTransport) -> Callable[[Config], None]:
    return lambda c: t.reconfigure(c.ble)


def prepare_process_env() -> None:
    """Process-wide environment the daemon's libraries read once: set here, on the main thread, before any worker
    thread exists (``setenv`` is not thread-safe: a worker reading the environment meanwhile may crash).

    ``OMP_WAIT_POLICY=PASSIVE``: llama.cpp's OpenMP workers (the local language model) spin while they wait; with 2
    threads on a loaded machine a generation ran 6-8x slower (3.6-4.7 tokens/s against ~30 with passive waiting or
    1 thread, measured at load 6 on 2 cores). Read when the OpenMP runtime loads; it only affects libgomp users.
    A user's value wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run_command(args: argparse.Namespace, *, configure: Callable[[Config], Config] | None = None) -> int:
    """``village run`` (and a plugin's own, ``village anchor run``, whose ``configure`` adjusts the config): log
    setup, the identity (refused with loose permissions), :func:`build_node`, then :func:`run_daemon`. Returns the
    exit code; a start that fails prints why."""
    from node.cli_support import EXIT_FAIL, EXIT_OK
    from node.cli_support import load_config as config_for
    from node.identity import ensure_private_dir, load_identity

    prepare_process_env()  # first: nothing has started a thread yet
    cfg = config_for(args)
    if configure is not None:
        cfg = configure(cfg)
    from node import malloc

    malloc.set_arena_max(cfg.node.malloc_arena_max)  # still no thread: the cap holds for every arena
    malloc.set_mmap_threshold(cfg.node.malloc_mmap_threshold_bytes)
    level = (getattr(args, "log_level", None) or cfg.node.log_level).upper()
    from node.libp2p_slim import install as slim_libp2p

    slim_libp2p()  # only the parts of py-libp2p BetaNet uses will load (node/libp2p_slim.py)
    import libp2p  # noqa: F401 - the bare package: configures py-libp2p's loggers; install_log_handler rewires them

    fmt = getattr(args, "log_format", None) or cfg.node.log_format
    install_log_handler(level, sys.stderr, fmt=fmt)  # peers' text in log lines shown escaped (node/textsafe.py)
    ensure_private_dir(cfg.data_dir)
    ident = load_identity(cfg.data_dir)  # refuses loose permissions with a how-to-fix message
    node = build_node(cfg, ident)  # the daemon's heavy imports (libp2p, ...) happen here only
    code = EXIT_OK
    try:
        run_daemon(node)
    except* NodeError as group:
        for exc in _leaves(group):
            log.error("node failed: %s", exc)
            print(f"village: {exc}", file=sys.stderr)
        code = EXIT_FAIL
    if code == EXIT_OK:
        log.info("node stopped cleanly")
    return code


def _leaves(exc: BaseException) -> list[BaseException]:
    """The real errors inside (possibly nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def run_daemon(node: Node, runner: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run ``node`` (or ``runner``, which runs it) until SIGINT/SIGTERM; a second signal stops without draining.
    Errors propagate (NodeError leaves inside an exception group)."""
    import trio  # here, not at the top: config loading and plugin discovery stay free of it

    trio.run(_serve, node, runner or node.run)


async def _serve(node: Node, runner: Callable[[], Awaitable[None]]) -> None:
    import trio

    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

            async def watch_signals() -> None:
                async for signum in signals:
                    if not node.stop_requested:
                        log.info("received %s: stopping (again to stop at once)", signal.Signals(signum).name)
                        node.request_stop()
                    else:
                        log.warning("second signal: stopping now without draining")
                        nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            if node.config.node.gc_freeze:
                node.on_services_started(_freeze_heap)
            await runner()
            nursery.cancel_scope.cancel()


def _freeze_heap() -> None:
    """Once the node's services started and before its transports start, keep the start-up objects out of later
    full garbage collections (:mod:`node.heap`; ``[node] gc_freeze``). No peer's link exists yet, so nothing built
    from remote input is frozen; the control socket (owner-only) and the services (an anchor's HTTP gateway) are
    listening already, so a connection accepted while later services start can be frozen too."""
    from node.heap import freeze_startup_heap

    frozen = freeze_startup_heap()
    log.info("start-up heap frozen: the garbage collector no longer walks its %d objects ([node] gc_freeze)", frozen)
