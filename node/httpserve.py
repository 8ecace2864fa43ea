"""Serving an ASGI app on the node's loopback HTTP listeners (metrics, MCP) with hypercorn's trio worker, with a cap on
concurrent connections.

``hypercorn.trio.serve`` accepts every connection the kernel hands it: a local process that opens thousands of idle
connections exhausts the daemon's file descriptors (and with them every transport and the control socket). Here the
accept loop takes a slot of a :class:`ConnectionCap` before each ``accept()``; a connection returns its slot when it
closes. Past the cap, new connections wait in the kernel's listen backlog (``config.backlog``) and cost the node no
descriptor. Each connection is hypercorn's own ``TCPServer`` (its HTTP/1.1 and HTTP/2 handling, ``read_timeout`` and
``keep_alive_timeout`` apply), and the app's lifespan runs as hypercorn runs it; only the listener loop is ours.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

import trio

from node.errors import StartupError

log = logging.getLogger("village.http")
# accept() failing for lack of resources: wait and retry, as trio.serve_listeners does.
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

# Short timeouts for local scrapers and MCP clients: a connection idle this long gives its slot back.
READ_TIMEOUT_S = 10
KEEP_ALIVE_TIMEOUT_S = 2


class ConnectionCap:
    """At most ``limit`` connections open at once; ``active`` and ``peak`` for tests and status."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.active = 0
        self.peak = 0
        self.accepted = 0
        self._slots = trio.Semaphore(limit)

    def waiting_for_a_slot(self) -> bool:
        """Whether the accept loop is blocked on the cap (connections past it wait in the kernel backlog)."""
        return self._slots.statistics().tasks_waiting > 0

    async def acquire(self) -> None:
        await self._slots.acquire()
        self.active += 1
        self.peak = max(self.peak, self.active)

    def release(self) -> None:
        self.active -= 1
        self._slots.release()


def short_timeouts(config: Any) -> None:
    """Hypercorn's per-read and keep-alive timeouts for the node's listeners."""
    config.read_timeout = READ_TIMEOUT_S
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT_S


# What serve_capped uses of hypercorn beyond its public API (hypercorn 0.17/0.18; pyproject pins <0.19): each name,
# the parameters its call passes (in order), or the attributes it needs. hypercorn_internals_problem() checks them.
HYPERCORN_INTERNALS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("hypercorn.trio.tcp_server", "TCPServer", ("app", "config", "context", "state", "stream")),
    ("hypercorn.trio.lifespan", "Lifespan", ("app", "config", "state")),
    ("hypercorn.trio.worker_context", "WorkerContext", ("max_requests",)),
    ("hypercorn.typing", "ConnectionState", ()),
    ("hypercorn.utils", "wrap_app", ("app", "wsgi_max_body_size", "mode")),
    ("hypercorn.utils", "repr_socket_addr", ("family", "address")),
)
HYPERCORN_METHODS = (("Lifespan", "handle_lifespan"), ("Lifespan", "wait_for_startup"), ("TCPServer", "__await__"))
HYPERCORN_CONFIG_ATTRS = ("wsgi_max_body_size", "backlog", "create_sockets", "read_timeout", "keep_alive_timeout")


def hypercorn_internals_problem() -> str | None:
    """None when the installed hypercorn has every internal :func:`serve_capped` uses, else a message naming what is
    missing or changed and the installed version (the start refuses with it; tests/test_httpserve.py checks it)."""
    import importlib
    import importlib.metadata
    import inspect

    try:
        version = importlib.metadata.version("hypercorn")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    missing: list[str] = []
    found: dict[str, Any] = {}
    for module_name, name, params in HYPERCORN_INTERNALS:
        try:
            obj = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            missing.append(f"{module_name}.{name}")
            continue
        found[name] = obj
        if params:
            target = obj.__init__ if inspect.isclass(obj) else obj
            got = [p for p in inspect.signature(target).parameters if p != "self"]
            if got[: len(params)] != list(params):
                missing.append(f"{module_name}.{name}({', '.join(params)}) (now: {', '.join(got)})")
    for cls, method in HYPERCORN_METHODS:
        if cls in found and not hasattr(found[cls], method):
            missing.append(f"{cls}.{method}")
    try:
        from hypercorn.config import Config

        config = Config()
        missing += [f"Config.{a}" for a in HYPERCORN_CONFIG_ATTRS if not hasattr(config, a)]
    except ImportError:
        missing.append("hypercorn.config.Config")
    if not missing:
        return None
    return (
        f"hypercorn {version} lacks internals node/httpserve.py relies on: {'; '.join(missing)}. Install the "
        f"version pyproject.toml pins (hypercorn>=0.17,<0.19) or port serve_capped to this one"
    )


async def serve_capped(
    app: Any, config: Any, cap: ConnectionCap, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the ASGI ``app`` on ``config.bind`` (plain HTTP) until cancelled; ``task_status.started`` with the bound
    URLs (``http://HOST:PORT``). :class:`~node.errors.StartupError` if the installed hypercorn lacks an internal
    this relies on (:func:`hypercorn_internals_problem`)."""
    problem = hypercorn_internals_problem()
    if problem is not None:
        raise StartupError(problem)
    from hypercorn.trio.lifespan import Lifespan
    from hypercorn.trio.tcp_server import TCPServer
    from hypercorn.trio.worker_context import WorkerContext
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import repr_socket_addr, wrap_app

    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, state)
    context = WorkerContext(None)
    async with trio.open_nursery() as nursery:
        await nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        sockets = config.create_sockets()
        listeners = []
        binds = []
        for sock in sockets.insecure_sockets:
            sock.listen(config.backlog)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
            binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")

        async def connection(stream: trio.SocketStream) -> None:
            try:
                await TCPServer(wrapped, config, context, ConnectionState(state.copy()), stream)  # type: ignore[arg-type]
            finally:
                cap.release()

        async def accept_loop(listener: trio.SocketListener) -> None:
            async with listener:
                while True:
                    await cap.acquire()
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        cap.release()
                        if exc.errno not in _RESOURCE_ERRORS:
                            raise
                        log.warning("accept failed (%s); retrying in 0.1 s", exc.strerror)
                        await trio.sleep(0.1)
                        continue
                    except BaseException:
                        cap.release()
                        raise
                    cap.accepted += 1
                    nursery.start_soon(connection, stream)

        for listener in listeners:
            nursery.start_soon(accept_loop, listener)
        task_status.started(binds)
