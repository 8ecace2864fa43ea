"""A DHT server's answer writes are whole (shielded from the stream's cut) but never unbounded: a peer that stopped
reading cannot hold a shutdown, and pre-empting a stream stuck in its write frees its slot for the newcomer (the
session 9 review of a660015: with an open-ended shield, 6 stalling identities held the node's teardown > 25 s)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.utils import varint

from node.transports.betanet import dht_store
from node.transports.betanet.transport import BetanetTransport
from tests.transports.test_betanet import WAIT_S, start_transport
from tests.transports.test_betanet_dht_slots import PIPELINED_REQUESTS, _tcp_stream
from tests.transports.test_betanet_dht_store import NO_RATE_LIMIT, SERVER, _open, _send

STALLERS = 6  # identities, 2 streams each: every one of py-libp2p's 12 handler slots
TEARDOWN_BOUND_S = 12.0  # the stream's life (5 s) + the write's grace (1 s) + the closes' bounds (2 x 2 s) + slack


async def _server(nursery: trio.Nursery) -> BetanetTransport:
    server, recv = await start_transport(nursery, settings=SERVER)
    assert server.routing is not None
    server.routing.dht._provider_rate_max = NO_RATE_LIMIT

    async def drain() -> None:
        async for _ in recv:
            pass

    nursery.start_soon(drain)
    for _ in range(5):  # peers the answers name: an answer is a real write
        named, _ = await start_transport(nursery)
        await named.dial(server.listen_addresses()[0])
    return server


async def _stall(nursery: trio.Nursery, server: BetanetTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that opens 2 DHT streams, pipelines requests on both and stops reading its TCP socket."""
    attacker, _ = await start_transport(nursery)
    assert attacker.host is not None and server.host is not None
    held = [await _open(attacker, server) for _ in range(2)]
    (conn,) = attacker.host.get_network().get_connections(server.host.get_id())
    tcp = _tcp_stream(conn.muxed_conn)

    async def never(max_bytes: Any = None) -> bytes:
        await trio.sleep_forever()
        raise AssertionError  # (unreachable)

    monkeypatch.setattr(tcp, "receive_some", never)
    body = Message(type=Message.MessageType.FIND_NODE, key=b"k" * 34).SerializeToString()
    for s in held:
        await s.write((bytes(varint.encode_uvarint(len(body))) + body) * PIPELINED_REQUESTS)


async def test_a_shutdown_does_not_wait_on_peers_that_stopped_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    ended = trio.Event()

    async def serve(task_status: trio.TaskStatus[tuple[BetanetTransport, trio.Nursery]]) -> None:
        async with trio.open_nursery() as inner:
            task_status.started((await _server(inner), inner))
        ended.set()

    async with trio.open_nursery() as outer:
        server, inner = await outer.start(serve)
        for _ in range(STALLERS):
            await _stall(inner, server, monkeypatch)
        assert server.routing is not None
        limiter = server.routing.dht._inbound_limiter
        # (each handler took its slot as its stream opened; the settle lets the pipelined answers fill the socket's
        # buffers, so the writes block — nothing signals that — well before the streams' 5 s deadlines)
        await trio.sleep(1.0)
        assert limiter.borrowed_tokens == limiter.total_tokens
        t0 = trio.current_time()
        inner.cancel_scope.cancel()
        with trio.move_on_after(TEARDOWN_BOUND_S):
            await ended.wait()
        took = trio.current_time() - t0
        assert ended.is_set(), f"the server's teardown still waits after {took:.1f} s"


async def test_pre_empting_a_stream_stuck_in_its_write_frees_its_slot(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dht_store, "DHT_PREEMPT_AFTER_S", 0.0)
    server = await _server(nursery)
    for _ in range(STALLERS):
        await _stall(nursery, server, monkeypatch)
    assert server.routing is not None
    limiter = server.routing.dht._inbound_limiter
    await trio.sleep(1.0)  # the writes block (see above)
    assert limiter.borrowed_tokens == limiter.total_tokens
    honest, _ = await start_transport(nursery)
    with trio.fail_after(WAIT_S):
        answer = await _send(await _open(honest, server), Message(type=Message.MessageType.FIND_NODE, key=b"h" * 34))
    assert answer is not None  # the first ask: answered, not refused
    assert server.counters.dht_slots_refused == 0 and server.counters.dht_streams_preempted >= 1
