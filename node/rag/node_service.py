"""The ``rag`` service of the node (registered by :mod:`node.rag.plugin`): the knowledge base and the responder to
peers' federated queries, owned by the Node's root nursery.

The knowledge base's modules (numpy, hnswlib, the store, the embedder's wrapper) load on first use, not at start:
:meth:`RagNodeService.load` builds the :class:`~node.rag.service.RagService` the first time something asks for it (a
``rag.*`` control call, an agent's or MCP tool, a peer's federated query), so an idle node never imports them; it
imports them in a worker thread, so the event loop goes on meanwhile (~0.3 s). Its store and index then open on the
first call that needs them (:mod:`node.rag.service`), as before. Once the node stops, nothing builds or returns it
again: a late caller gets "not running", never a store reopened that nobody closes."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import trio

from node.rag import federated
from node.rag.errors import RagError
from node.rag.settings import RagSection

if TYPE_CHECKING:
    from node.node import Node
    from node.rag.service import RagService

SERVICE_NAME = "rag"
MODULE = "node.rag.service"  # numpy, hnswlib, the store: what the first use loads
LOAD_FAILED = "the knowledge base could not be loaded on this node (the node's log says why)"

log = logging.getLogger("village.rag")


class RagNodeService:
    """The node's knowledge base: built on first use, closed when the node stops. It answers peers' federated
    queries from shared documents only (:mod:`node.rag.federated`)."""

    name = SERVICE_NAME

    def __init__(self, settings: RagSection) -> None:
        self.settings = settings
        self._rag: RagService | None = None
        self._node: Node | None = None  # set when run() starts: the service is built only for a running node
        self._stopped = False  # set when run() ends: never built nor handed out again
        self._import_lock = trio.Lock()
        self._load_failure_logged = False

    def _load_failed(self, exc: ImportError) -> RagError:
        """A generic error for the caller (it may be a gateway client or a peer's agent request: an ImportError names
        this node's installed paths); why goes to the node's log, once."""
        if not self._load_failure_logged:
            self._load_failure_logged = True
            log.warning("rag: the knowledge base's modules could not be imported: %s", exc)
        return RagError(LOAD_FAILED)

    @property
    def rag(self) -> RagService | None:
        """The knowledge base (built on the first access once the service runs; None before it runs and once it
        stopped). Raises :class:`~node.rag.errors.RagError` when its modules cannot be imported. Async callers use
        :meth:`load`, which imports them off the event loop."""
        if self._stopped:
            return None
        if self._rag is None and self._node is not None:
            try:
                from node.rag.service import RagService  # numpy, hnswlib: here, on first use
            except ImportError as exc:  # a broken install: the log gets why, the node goes on
                raise self._load_failed(exc) from exc
            node = self._node
            self._rag = RagService(
                self.settings,
                node.config.data_dir / "rag" if node.persistent else None,
                wall_s=lambda: node.clock.wall_ms() / 1000.0,
            )
        return self._rag

    @rag.setter
    def rag(self, service: RagService | None) -> None:
        self._rag = service

    async def load(self) -> RagService | None:
        """:attr:`rag`, its modules imported in a worker thread on first use (one import at a time)."""
        if self._rag is None and self._node is not None and not self._stopped:
            async with self._import_lock:
                if sys.modules.get(MODULE) is None:
                    try:
                        await trio.to_thread.run_sync(importlib.import_module, MODULE)
                    except ImportError as exc:  # a broken install: the log gets why
                        raise self._load_failed(exc) from exc
        return self.rag

    @property
    def loaded(self) -> bool:
        """Whether the knowledge base was built (something used it since the node started)."""
        return self._rag is not None

    async def run(self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._node = node
        federated.register(node, _FirstUseSearch(self._running))
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self._node = None  # stopping: a late caller gets "not running", never a new service nobody closes
            self._stopped = True  # nor the closed one, whose next call would reopen its store
            if self._rag is not None:
                with trio.CancelScope(shield=True):
                    await self._rag.aclose()

    async def _running(self) -> RagService:
        rag = await self.load()
        if rag is None:  # the node is stopping: a clear error rather than an AttributeError
            raise RagError("the knowledge base is not running")
        return rag


class _FirstUseSearch:
    """:class:`~node.rag.federated.SharedSearch` over the knowledge base, built on a peer's first query."""

    def __init__(self, rag: Callable[[], Awaitable[RagService]]) -> None:
        self._rag = rag

    async def search_shared(self, text: str, k: int) -> list[federated.SharedHit]:
        return await federated.RagServiceSearch(await self._rag()).search_shared(text, k)

    async def shared_doc_ids(self, doc_ids: Sequence[int]) -> set[int]:
        return await federated.RagServiceSearch(await self._rag()).shared_doc_ids(doc_ids)
