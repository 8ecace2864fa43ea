"""A link's send queue is bounded in bytes as well as frames (node.link_send_queue_bytes)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import trio

from node.clock import Clock
from node.identity import Identity
from node.node import LINK_SEND_QUEUE_FRAMES, Node
from node.settings import Config, NodeSection
from node.transports.base import Link, LinkCapabilities, LinkSink, Transport
from node.transports.sendqueue import LinkSendQueue


def test_the_queue_refuses_frames_beyond_its_bytes_but_always_takes_one() -> None:
    q = LinkSendQueue(max_frames=100, max_bytes=1000)
    q.send_nowait(b"x" * 600)
    with pytest.raises(trio.WouldBlock):
        q.send_nowait(b"y" * 600)  # 1200 > 1000 bytes, though only one of 100 frames is queued
    q.send_nowait(b"z" * 400)
    assert (q.queued_frames, q.queued_bytes) == (2, 1000)
    big = LinkSendQueue(max_frames=100, max_bytes=1000)
    big.send_nowait(b"b" * 5000)  # an empty queue takes one frame of any size (a frame is bounded by the MTU)
    with pytest.raises(trio.WouldBlock):
        big.send_nowait(b"c")
    big.close()
    with pytest.raises(trio.ClosedResourceError):
        big.send_nowait(b"c")


async def test_draining_frees_bytes() -> None:
    q = LinkSendQueue(max_frames=10, max_bytes=100)
    for _ in range(4):
        q.send_nowait(b"x" * 25)
    q.close()
    got = [frame async for frame in q]
    assert len(got) == 4 and q.queued_bytes == 0


class _StuckLink(Link):
    """A neighbour that never accepts a frame (a hostile or wedged peer): send blocks, nothing arrives."""

    @property
    def link_id(self) -> str:
        return "stuck:1"

    @property
    def transport_name(self) -> str:
        return "stuck"

    @property
    def mtu(self) -> int:
        return 65_536

    @property
    def capabilities(self) -> LinkCapabilities:
        return LinkCapabilities(native_streams=True, reliable=True, ordered=True)

    @property
    def remote_address(self) -> str:
        return "stuck"

    async def send(self, frame: bytes) -> None:
        await trio.sleep_forever()

    async def receive(self) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class _StuckTransport(Transport):
    counters = None

    @property
    def name(self) -> str:
        return "stuck"

    def listen_addresses(self) -> list[str]:
        return []

    async def run(self, link_sink: LinkSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        link_sink.send_nowait(_StuckLink())
        task_status.started()
        await trio.sleep_forever()


async def test_a_peer_that_never_reads_holds_at_most_the_byte_bound(nursery: trio.Nursery) -> None:
    """Broadcasts of 3 KB of hex each to a link that never accepts a frame: frames are dropped (and counted) once the
    queue holds node.link_send_queue_bytes (64 KiB here), long before its 256-frame bound."""
    d = Path(tempfile.mkdtemp(prefix="vlg-", dir="/tmp"))
    cfg = Config(data_dir=d, node=NodeSection(nickname="q", link_send_queue_bytes=65_536))
    node = Node(cfg, Identity.generate(), transports=[_StuckTransport()], clock=Clock(), control=False)
    await nursery.start(node.run)
    with trio.fail_after(10):
        await node.wait_until(lambda: "stuck:1" in node._queues)
    queue = node._queues["stuck:1"]
    for n in range(100):
        node.broadcast(f"{n:03d} " + os.urandom(1500).hex())
    assert node.dropped_link_frames > 0
    assert queue.queued_bytes <= 65_536 + node.links["stuck:1"].mtu
    assert queue.queued_frames < LINK_SEND_QUEUE_FRAMES
