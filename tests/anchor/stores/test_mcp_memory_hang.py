"""The MCP memory on a Bolt server that stops answering: each call costs its deadline and answers StoreUnavailable,
the service stays usable and shuts down; a write abandoned past its deadline drops the in-memory mirror, so the
next operation reloads what the storage really holds."""

from __future__ import annotations

import functools
import struct
import threading
from typing import Any

import pytest
import trio

from anchor.mcp_memory import storage_factory
from anchor.stores._runner import BlockingRunner
from anchor.stores.errors import StoreUnavailable
from node.mcp.graph import Changes, EntityRow, GraphStore, RelationRow
from tests.mcp.helpers import mcp_settings

WAIT_S = 20.0  # far above the deadlines below; a hang fails the test instead of blocking it


def _tiny(s: str) -> bytes:
    b = s.encode()
    return bytes([0x80 + len(b)]) + b


async def _silent_bolt(stream: trio.SocketStream) -> None:
    """Bolt 4.4: the handshake and HELLO are answered, then nothing ever again (a SIGSTOPped or partitioned
    server with its connections open)."""
    buf = b""

    async def need(n: int) -> bytes:
        nonlocal buf
        while len(buf) < n:
            chunk = await stream.receive_some(4096)
            if not chunk:
                raise trio.EndOfChannel
            buf += chunk
        out, buf = buf[:n], buf[n:]
        return out

    try:
        await need(20)  # magic + four versions
        await stream.send_all(bytes([0, 0, 4, 4]))
        while True:  # the first message (HELLO): read its chunks up to the 0-size end marker
            (n,) = struct.unpack(">H", await need(2))
            if n == 0:
                break
            await need(n)
        meta = _tiny("server") + _tiny("Neo4j/4.4.0") + bytes([0x8D]) + b"connection_id" + _tiny("bolt-1")
        body = bytes([0xB1, 0x70, 0xA2]) + meta
        await stream.send_all(struct.pack(">H", len(body)) + body + b"\0\0")
        await trio.sleep_forever()
    except (trio.EndOfChannel, trio.BrokenResourceError):
        pass


async def test_a_silent_bolt_server_costs_a_call_its_deadline_and_does_not_hold_shutdown(
    nursery: trio.Nursery,
) -> None:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, _silent_bolt, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    factory = storage_factory(f"bolt://127.0.0.1:{port}", namespace="mcp:x", key=bytes(32), timeout_s=0.5)
    store = GraphStore(None, mcp_settings(), storage=factory, run_blocking=factory.run_blocking)
    with trio.fail_after(WAIT_S):
        for _ in range(3):  # each call answers within its deadline, more than the runner's threads
            with pytest.raises(StoreUnavailable, match="no answer within 2 s"):
                await store.run("stats")
        await store.aclose()  # shutdown is not held by the hung threads
    assert factory.runner.limiter.borrowed_tokens <= 2  # hung threads stay bounded


class _Blocking:
    """A storage whose ``apply`` waits for ``release`` (then commits): the write the runner abandoned happens
    anyway, later."""

    name = "blocking"

    def __init__(self, rows: list[EntityRow], release: threading.Event) -> None:
        self.rows = rows
        self.release = release
        self.loads = 0
        self.committed = threading.Event()

    def load(self) -> tuple[list[EntityRow], list[RelationRow]]:
        self.loads += 1
        return list(self.rows), []

    def apply(self, changes: Changes) -> None:
        self.release.wait(WAIT_S)
        self.rows.extend((e.id, e.name, e.entity_type, list(e.observations)) for e in changes.add_entities)
        self.committed.set()

    def close(self) -> None:
        pass


async def test_a_write_abandoned_past_its_deadline_drops_the_mirror() -> None:
    release = threading.Event()
    rows: list[EntityRow] = []
    storage = _Blocking(rows, release)
    runner = BlockingRunner("graph", 2, (), deadline_s=0.2)
    store = GraphStore(None, mcp_settings(), storage=lambda: storage, run_blocking=runner.run)
    ent: dict[str, Any] = {"name": "Ada", "entityType": "person", "observations": []}
    with trio.fail_after(WAIT_S):
        with pytest.raises(StoreUnavailable):
            await store.run("create_entities", [ent])  # the lock is not held past the deadline
        release.set()
        assert await trio.to_thread.run_sync(storage.committed.wait, WAIT_S)  # the abandoned write commits after all
        graph = await store.run("read_graph")
    assert graph == {"entities": [ent], "relations": []}  # reloaded: the mirror did not miss the late write
    assert storage.loads == 2
