"""In-process nodes for the agents' and the twin's tests (tests/agents/test_king.py, test_workers.py, test_remote.py,
test_agent_registry.py, tests/twin/test_ask.py) and for bench/agent_tasks.py (a bench does not import tests): a node
on a :class:`MemoryNetwork` with a seeded identity, BM25 RAG (its knowledge base as the daemon builds it, unless
``rag`` is False) and the given services. Development tooling: not part of the installed packages."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nacl.signing
import trio

from node.clock import Clock
from node.identity import Identity
from node.node import Node
from node.rag.plugin import PLUGIN as RAG_PLUGIN
from node.rag.settings import RagSection
from node.settings import Config, NodeSection
from node.transports.memory import MemoryNetwork

EPOCH_MS = 1_700_000_000_000.0


async def start_node(
    nursery: trio.Nursery,
    net: MemoryNetwork,
    tmp: Path,
    name: str,
    seed: int,
    *,
    nickname: str | None = None,
    rag: bool = True,
    services: Sequence[Any] | Callable[[Config], Sequence[Any]] = (),
    **node_kw: Any,
) -> Node:
    """Start node ``name`` (data in ``tmp/name``, identity from ``seed``) on ``net``. ``services`` may be built from
    the node's config (a callable); they start after the knowledge base. ``node_kw`` go to :class:`Node`."""
    cfg = Config(
        data_dir=tmp / name,
        node=NodeSection(nickname=nickname or name),
        rag=dataclasses.replace(RagSection(), mode="bm25"),
    )
    cfg.data_dir.mkdir(parents=True)
    rng = random.Random(seed)
    ident = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
    assert RAG_PLUGIN.services is not None
    base = list(RAG_PLUGIN.services(cfg)) if rag else []
    extra = services(cfg) if callable(services) else services
    node = Node(
        cfg,
        ident,
        transports=[net.transport(name)],
        clock=Clock(epoch_offset_ms=EPOCH_MS),
        rng=rng,
        services=[*base, *extra],
        **node_kw,
    )
    await nursery.start(node.run)
    return node
