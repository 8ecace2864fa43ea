"""What other peers can make a BetaNet DHT server store (node/transports/betanet/dht_store.py), shown by hostile
clients over real loopback TCP against a real server host: PUT_VALUE refused, requests bounded in bytes, provider
records bounded in addresses, records and bytes per peer and in all, with fair eviction; and a node that is not a
DHT server takes no DHT request at all. (py-libp2p 0.8 alone: values of up to 1 MiB for any key, 50,000 of them;
providers with any number of addresses for any number of keys.)"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import multiaddr
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.host.exceptions import StreamFailure
from libp2p.kad_dht import DHTMode
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.utils import varint
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from node.transports.betanet import dht_store
from node.transports.betanet.dht_store import (
    DHT_STREAMS_PER_PEER,
    MAX_DHT_REQUEST_BYTES,
    MAX_PROVIDER_BYTES_PER_PEER,
    MAX_PROVIDER_RECORD_BYTES,
    MAX_PROVIDER_RECORDS_PER_PEER,
    PROVIDER_ADDRS,
)
from node.transports.betanet.transport import BetanetTransport
from tests.transports.test_betanet import LOOPBACK, WAIT_S, start_transport

SERVER = dataclasses.replace(LOOPBACK, dht_mode="server")
NO_RATE_LIMIT = 1 << 30  # py-libp2p's own ADD_PROVIDER limit (10 per 10 s per peer, wall clock) lifted in tests


def _key(n: int) -> bytes:
    return hashlib.sha256(b"content %d" % n).digest()


def _addrs(n: int, name_bytes: int = 0) -> list[bytes]:
    """``n`` distinct binary addresses: IPv6 QUIC ones, or DNS names of ``name_bytes`` characters."""
    if name_bytes:
        labels = ".".join(["a" * 50] * (name_bytes // 51))  # a DNS label is at most 63 characters
        return [multiaddr.Multiaddr(f"/dns4/{labels}.{i:05d}.x/tcp/1").to_bytes() for i in range(n)]
    return [multiaddr.Multiaddr(f"/ip6/2001:db8::{i:x}/udp/4001/quic-v1").to_bytes() for i in range(n)]


def _add_provider(sender: BetanetTransport, key: bytes, addrs: list[bytes]) -> Message:
    assert sender.host is not None
    request = Message(type=Message.MessageType.ADD_PROVIDER, key=key)
    provider = request.providerPeers.add()
    provider.id = sender.host.get_id().to_bytes()
    provider.addrs.extend(addrs)
    return request


async def _open(sender: BetanetTransport, server: BetanetTransport) -> INetStream:
    assert sender.host is not None and server.host is not None
    await sender.dial(server.listen_addresses()[0])
    return await sender.host.new_stream(server.host.get_id(), [KAD_PROTOCOL])


async def _send(stream: INetStream, request: Message) -> Message | None:
    """Send ``request``; the answer, or None when the server reset the stream instead."""
    body = request.SerializeToString()
    try:
        await stream.write(bytes(varint.encode_uvarint(len(body))) + body)
        return Message.FromString(await read_varint_prefixed_bytes_limited(stream, MAX_DHT_REQUEST_BYTES))
    except Exception:  # noqa: BLE001 - reset, closed, or ended: no answer
        return None


async def _server(nursery: trio.Nursery) -> BetanetTransport:
    server, _ = await start_transport(nursery, settings=SERVER)
    assert server.routing is not None and server.routing.dht.mode == DHTMode.SERVER
    server.routing.dht._provider_rate_max = NO_RATE_LIMIT
    return server


def _stored(server: BetanetTransport, sender: BetanetTransport) -> dict[bytes, int]:
    """The provider records ``sender`` holds on ``server``, as py-libp2p's store has them: key -> addresses."""
    assert server.routing is not None and sender.host is not None
    who = str(sender.host.get_id())
    providers = server.routing.dht.provider_store.providers
    return {key: len(held[who].addresses) for key, held in providers.items() if who in held}


async def test_put_value_is_refused_and_nothing_is_stored(nursery: trio.Nursery) -> None:
    """A PUT_VALUE of a 1 KB value under a key no validator claims (py-libp2p alone stored any value of up to
    1 MiB under such keys, 50,000 of them): the stream is reset, no value stored, counted."""
    server = await _server(nursery)
    client, _ = await start_transport(nursery)
    assert server.routing is not None
    request = Message(type=Message.MessageType.PUT_VALUE, key=b"junk")
    request.record.key, request.record.value = b"junk", b"x" * 1000
    with trio.fail_after(WAIT_S):
        answer = await _send(await _open(client, server), request)
    assert answer is None
    assert server.routing.dht.value_store.size() == 0
    assert server.counters.dht_puts_refused == 1


async def test_a_request_over_the_byte_bound_is_refused_unread(nursery: trio.Nursery) -> None:
    """An ADD_PROVIDER of ~100 KB (4,000 addresses; py-libp2p reads up to 4 MiB and stored them all): the stream
    is reset before py-libp2p reads it, nothing stored, counted."""
    server = await _server(nursery)
    client, _ = await start_transport(nursery)
    request = _add_provider(client, _key(0), _addrs(4000))
    assert len(request.SerializeToString()) > MAX_DHT_REQUEST_BYTES
    with trio.fail_after(WAIT_S):
        answer = await _send(await _open(client, server), request)
    assert answer is None
    assert _stored(server, client) == {}
    assert server.counters.dht_requests_refused == 1


async def test_a_provider_record_keeps_at_most_its_address_bound(nursery: trio.Nursery) -> None:
    """An ADD_PROVIDER within the byte bound names 500 addresses: the record keeps PROVIDER_ADDRS (32), the rest
    counted as refused addresses."""
    server = await _server(nursery)
    client, _ = await start_transport(nursery)
    request = _add_provider(client, _key(0), _addrs(500))
    assert len(request.SerializeToString()) <= MAX_DHT_REQUEST_BYTES
    with trio.fail_after(WAIT_S):
        answer = await _send(await _open(client, server), request)
    assert answer is not None and answer.type == Message.MessageType.ADD_PROVIDER
    assert _stored(server, client) == {_key(0): PROVIDER_ADDRS}
    assert server.counters.peer_addrs_refused >= 500 - PROVIDER_ADDRS


async def test_one_peer_holds_at_most_its_records(nursery: trio.Nursery) -> None:
    """One peer provides MAX_PROVIDER_RECORDS_PER_PEER + 5 keys: it holds that many, the rest refused (counted);
    a refresh of a key it holds is still taken. (py-libp2p alone: every key, without end.)"""
    server = await _server(nursery)
    client, _ = await start_transport(nursery)
    with trio.fail_after(WAIT_S):
        stream = await _open(client, server)
        for n in range(MAX_PROVIDER_RECORDS_PER_PEER + 5):
            assert await _send(stream, _add_provider(client, _key(n), _addrs(2))) is not None
        assert await _send(stream, _add_provider(client, _key(0), _addrs(3))) is not None  # a refresh
    stored = _stored(server, client)
    assert len(stored) == MAX_PROVIDER_RECORDS_PER_PEER and stored[_key(0)] == 3
    assert server.counters.dht_providers_refused == 5


async def test_one_peer_holds_at_most_its_bytes(nursery: trio.Nursery) -> None:
    """One peer provides keys with 32 long DNS addresses each (~3.9 KB a record): it holds at most
    MAX_PROVIDER_BYTES_PER_PEER, well before its record bound; a record over MAX_PROVIDER_RECORD_BYTES is refused
    outright."""
    server = await _server(nursery)
    client, _ = await start_transport(nursery)
    big = _addrs(PROVIDER_ADDRS, name_bytes=120)
    assert sum(map(len, big)) < MAX_PROVIDER_RECORD_BYTES < sum(map(len, _addrs(PROVIDER_ADDRS, name_bytes=200)))
    sent = MAX_PROVIDER_BYTES_PER_PEER // sum(map(len, big)) + 5
    with trio.fail_after(WAIT_S):
        stream = await _open(client, server)
        for n in range(sent):
            assert await _send(stream, _add_provider(client, _key(n), big)) is not None
        assert await _send(stream, _add_provider(client, _key(-1), _addrs(PROVIDER_ADDRS, name_bytes=200)))
    stored = _stored(server, client)
    assert len(stored) < sent and _key(-1) not in stored
    assert server.routing is not None and server.routing.providers is not None and client.host is not None
    records, held = server.routing.providers.held(client.host.get_id())
    assert len(stored) == records
    assert held <= MAX_PROVIDER_BYTES_PER_PEER < held + sum(map(len, big)) + 32
    assert server.counters.dht_providers_refused == sent - records + 1


async def test_a_full_store_drops_expired_then_the_largest_share_never_a_smaller_one(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's global bound (shrunk to 8 records here): a hostile peer fills it. Its oldest record expires: its
    next record takes that one's room (nothing evicted). An honest peer's record then evicts the hostile peer's
    oldest (the largest share), and the hostile peer's next record is refused instead of evicting the honest one."""
    monkeypatch.setattr(dht_store, "MAX_PROVIDER_RECORDS", 8)
    server = await _server(nursery)
    assert server.routing is not None and server.routing.providers is not None
    hostile, _ = await start_transport(nursery)
    honest, _ = await start_transport(nursery)
    assert hostile.host is not None
    with trio.fail_after(WAIT_S):
        flood = await _open(hostile, server)
        for n in range(8):
            await _send(flood, _add_provider(hostile, _key(n), _addrs(2)))
        server.routing.dht.provider_store.providers[_key(0)][str(hostile.host.get_id())].timestamp = 0.0  # expired
        await _send(flood, _add_provider(hostile, _key(8), _addrs(2)))
        assert sorted(_stored(server, hostile)) == sorted(_key(n) for n in range(1, 9))
        assert server.counters.dht_providers_evicted == 0 and server.counters.dht_providers_refused == 0
        await _send(await _open(honest, server), _add_provider(honest, _key(100), _addrs(2)))
        await _send(flood, _add_provider(hostile, _key(9), _addrs(2)))
    assert sorted(_stored(server, hostile)) == sorted(_key(n) for n in range(2, 9))  # its oldest evicted
    assert list(_stored(server, honest)) == [_key(100)]
    assert server.counters.dht_providers_evicted == 1 and server.counters.dht_providers_refused == 1
    assert server.routing.providers.records == 8


async def test_one_peers_silent_streams_do_not_lock_other_askers_out(nursery: trio.Nursery) -> None:
    """A hostile peer opens 12 DHT streams to a server and sends nothing (py-libp2p serves 12 at once and resets
    the rest, with no timeout: every other asker was refused for as long as it liked): it is served on
    DHT_STREAMS_PER_PEER, the rest reset, and an honest asker's FIND_NODE is answered."""
    server = await _server(nursery)
    hostile, _ = await start_transport(nursery)
    honest, _ = await start_transport(nursery)
    assert hostile.host is not None and server.host is not None and honest.host is not None
    with trio.fail_after(WAIT_S):
        await hostile.dial(server.listen_addresses()[0])
        for _ in range(12):
            with contextlib.suppress(StreamFailure):  # the server may reset it before negotiation has ended
                await hostile.host.new_stream(server.host.get_id(), [KAD_PROTOCOL])
        await server.wait_counters(lambda c: c.dht_streams_refused >= 12 - DHT_STREAMS_PER_PEER)
        find = Message(type=Message.MessageType.FIND_NODE, key=honest.host.get_id().to_bytes())
        answer = await _send(await _open(honest, server), find)
    assert answer is not None and answer.type == Message.MessageType.FIND_NODE
    assert server.counters.dht_streams_refused == 12 - DHT_STREAMS_PER_PEER


async def test_a_stream_without_a_whole_request_in_time_is_reset(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer's DHT streams send nothing, or half a request, for longer than DHT_REQUEST_TIMEOUT_S (shrunk to
    0.5 s here): each is reset and its slot freed (py-libp2p alone held them as long as the connection lived)."""
    monkeypatch.setattr(dht_store, "DHT_REQUEST_TIMEOUT_S", 0.5)
    server = await _server(nursery)
    client, _ = await start_transport(nursery)
    with trio.fail_after(WAIT_S):
        silent = await _open(client, server)
        half = await _open(client, server)
        await half.write(b"\x40" + b"\x08" * 10)  # a request of 64 bytes announced, 10 sent
        await server.wait_counters(lambda c: c.dht_requests_timed_out >= 2)
        for stream in (silent, half):
            with pytest.raises(Exception):  # noqa: B017 - reset: py-libp2p's stream error (or EOF)
                if not await stream.read(1):
                    raise EOFError
        answer = await _send(await _open(client, server), Message(type=Message.MessageType.PING))
    assert answer is not None and answer.type == Message.MessageType.PING
    assert server.counters.dht_requests_timed_out == 2 and server.counters.dht_streams_refused == 0


async def test_a_node_that_is_not_a_dht_server_takes_no_request(nursery: trio.Nursery) -> None:
    """A DHT client (the default: dht_mode "auto" without a hop relay) does not speak the DHT protocol to askers:
    a peer's DHT stream is refused at protocol negotiation, and nothing is read or stored."""
    node, _ = await start_transport(nursery)
    client, _ = await start_transport(nursery)
    assert node.routing is not None and node.routing.dht.mode == DHTMode.CLIENT
    with trio.fail_after(WAIT_S), pytest.raises(StreamFailure):  # multistream-select: protocol not supported
        await _open(client, node)
    assert node.routing.dht.value_store.size() == 0 and node.routing.dht.provider_store.size() == 0
