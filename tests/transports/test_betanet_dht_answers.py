"""What one DHT answer can cost a BetaNet node, over real loopback TCP with a hostile DHT server: py-libp2p 0.8
reads answers of up to 4 MiB and de-duplicates their peers in quadratic loops with no checkpoint, so the node reads
each answer first (bounded in bytes, cut to k peers); and what a DHT server's GET_PROVIDERS answer tells an asker
(each provider at the addresses of the asker's scope, like FIND_NODE's closer peers)."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import multiaddr
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import create_signed_peer_record
from libp2p.utils import varint
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from node.transports.betanet.dht import (
    ANSWER_PEERS,
    MAX_ANSWER_PEERS,
    MAX_DHT_ANSWER_BYTES,
    BoundedMessage,
    _bound_message_untrusted,
)
from node.transports.betanet.scope import MAX_OWN_ADDRS, PUBLIC, dialable
from node.transports.betanet.transport import BetanetTransport
from tests.transports.test_betanet import LOOPBACK, WAIT_S, start_transport

# The asker: no DHT upkeep (its own lookups alone query the hostile server), a lookup given time to run.
ASKER = dataclasses.replace(LOOPBACK, auto_connect="off", dial_timeout_s=10.0)
TICK_S = 0.005  # the watcher's sleep: how often a healthy event loop lets it run
MAX_GAP_S = 0.5  # the longest the event loop may go without running it (a loaded 2-core CI machine included)
CLOSED = "/ip4/127.0.0.1/tcp/1"  # where the answers put the peers they name: refused at once, on this machine


def _fake_id() -> ID:
    return ID(b"\x12\x20" + os.urandom(32))  # a SHA-256 multihash: shaped like a peer ID, no key behind it


def _answer(target: ID | None, named: list[ID], addr: str | None) -> bytes:
    """A FIND_NODE answer naming ``named`` (then ``target`` last), each at ``addr`` if given."""
    answer = Message(type=Message.MessageType.FIND_NODE)
    for peer_id in [*named, *([target] if target is not None else [])]:
        peer = answer.closerPeers.add()
        peer.id = peer_id.to_bytes()
        if addr is not None:
            peer.addrs.append(multiaddr.Multiaddr(addr).to_bytes())
    return answer.SerializeToString()


async def _hostile_server(nursery: trio.Nursery, body: bytes) -> BetanetTransport:
    """A peer serving the DHT protocol that answers every request with ``body``."""

    async def answer_everything(stream: INetStream) -> None:
        try:
            while True:
                await read_varint_prefixed_bytes_limited(stream, 1 << 20)
                await stream.write(bytes(varint.encode_uvarint(len(body))) + body)
        except Exception:  # noqa: BLE001 - the asker closed or reset the stream
            return

    server, _ = await start_transport(nursery)
    assert server.host is not None
    server.host.set_stream_handler(KAD_PROTOCOL, answer_everything)  # in identify: the asker routes to it
    return server


async def _lookup_watched(asker: BetanetTransport, target: ID) -> tuple[list[multiaddr.Multiaddr], float, float]:
    """``asker`` looks ``target`` up while a watcher sleeps TICK_S in a loop: the addresses found, the lookup's
    duration and the longest gap between the watcher's turns (how long the event loop was held), seconds."""
    assert asker.routing is not None
    gaps = [0.0]
    found: list[multiaddr.Multiaddr] = []
    async with trio.open_nursery() as watch:

        async def watcher() -> None:
            while True:
                before = trio.current_time()
                await trio.sleep(TICK_S)
                gaps.append(trio.current_time() - before - TICK_S)

        watch.start_soon(watcher)
        await trio.sleep(TICK_S)  # the watcher runs before the lookup starts
        started = trio.current_time()
        found = await asker.routing.find(target)
        took = trio.current_time() - started
        watch.cancel_scope.cancel()
    return found, took, max(gaps)


async def _connected(asker: BetanetTransport, server: BetanetTransport) -> None:
    await asker.dial(server.listen_addresses()[0])
    await asker.wait_counters(lambda c: c.dht_routing_added >= 1)


async def test_a_huge_find_node_answer_is_refused_without_holding_the_event_loop(nursery: trio.Nursery) -> None:
    """A hostile DHT server answers a lookup with 6,000 peers (~230 KB, well under py-libp2p's 4 MiB): the answer
    is refused unread past MAX_DHT_ANSWER_BYTES, the lookup ends at once and the event loop keeps running.
    (py-libp2p alone: its de-duplication held the event loop ~3 s for 4,000 peers, ~36 s for 20,000.)"""
    body = _answer(None, [_fake_id() for _ in range(6000)], None)
    assert MAX_DHT_ANSWER_BYTES < len(body) < 1 << 20
    server = await _hostile_server(nursery, body)
    asker, _ = await start_transport(nursery, settings=ASKER)
    with trio.fail_after(WAIT_S):
        await _connected(asker, server)
        found, took, held = await _lookup_watched(asker, _fake_id())
    assert found == [] and took < ASKER.dial_timeout_s
    assert held < MAX_GAP_S, f"the event loop was held {held:.2f} s"
    assert asker.counters.dht_answers_refused >= 1 and asker.counters.dht_answers_cut == 0


async def test_an_answer_naming_more_than_2k_peers_is_refused(nursery: trio.Nursery) -> None:
    """An answer within the byte bound names 2k peers and, last, the target: refused (an honest server names at
    most k), so the lookup does not find the target through it and none of the named peers is stored. (Without
    the refusal: cut to the k closest, after a sort of every named peer; 10,000 of them fit in 192 KiB.)"""
    target = _fake_id()
    named = [_fake_id() for _ in range(MAX_ANSWER_PEERS)]
    body = _answer(target, named, CLOSED)
    assert len(body) <= MAX_DHT_ANSWER_BYTES
    server = await _hostile_server(nursery, body)
    asker, _ = await start_transport(nursery, settings=ASKER)
    assert asker.host is not None
    with trio.fail_after(WAIT_S):
        await _connected(asker, server)
        found, _took, _held = await _lookup_watched(asker, target)
    assert found == []
    known = set(asker.host.get_peerstore().peer_ids())
    assert target not in known and not any(p in known for p in named)
    assert asker.counters.dht_answers_refused >= 1 and asker.counters.dht_answers_cut == 0


async def test_an_answer_naming_more_than_2k_providers_is_refused_unwalked(nursery: trio.Nursery) -> None:
    """An answer within the byte bound names as many empty providerPeers as fit (~98,000): refused on their
    number, before any walk over them, so the event loop keeps running and no cut is made. (Unrefused: the record
    walk and the de-duplication ran over every one before the cut to k: 0.33 s of the event loop per answer.)"""
    answer = Message(type=Message.MessageType.FIND_NODE)
    for _ in range((MAX_DHT_ANSWER_BYTES - 64) // 2):  # an empty Peer is 2 bytes: its tag and a zero length
        answer.providerPeers.add()
    body = answer.SerializeToString()
    assert len(body) <= MAX_DHT_ANSWER_BYTES
    server = await _hostile_server(nursery, body)
    asker, _ = await start_transport(nursery, settings=ASKER)
    with trio.fail_after(WAIT_S):
        await _connected(asker, server)
        _found, _took, held = await _lookup_watched(asker, _fake_id())
    assert asker.counters.dht_answers_refused >= 1 and asker.counters.dht_answers_cut == 0
    assert held < MAX_GAP_S, f"the event loop was held {held:.2f} s"


@pytest.mark.parametrize("field", ["closerPeers", "providerPeers"])
async def test_a_request_naming_more_than_2k_peers_is_refused(nursery: trio.Nursery, field: str) -> None:
    """A DHT server gets an ADD_PROVIDER naming 2k + 1 peers (an honest one names one provider, itself): refused
    unread (the stream is reset, ``dht_requests_refused``), nothing stored; 2k are taken as usual."""
    server, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, dht_mode="server"))
    asker, _ = await start_transport(nursery)
    assert server.routing is not None
    key = hashlib.sha256(b"content").digest()
    with trio.fail_after(WAIT_S):
        await asker.dial(server.listen_addresses()[0])
        for named in (MAX_ANSWER_PEERS, MAX_ANSWER_PEERS + 1):
            request = Message(type=Message.MessageType.ADD_PROVIDER, key=key)
            for _ in range(named):
                peer = getattr(request, field).add()
                peer.id = _fake_id().to_bytes()
            try:  # the server's echo, or the reset
                answered = bool((await _ask(asker, server, request)).key)
            except Exception:  # noqa: BLE001 - reset: libp2p raises one of several stream errors
                answered = False
            assert answered == (named == MAX_ANSWER_PEERS), named
    assert server.counters.dht_requests_refused == 1


async def test_an_answer_naming_more_than_k_peers_is_cut_to_the_closest(nursery: trio.Nursery) -> None:
    """An answer names 2k - 1 peers and, last, the target (2k: the most an answer may name): py-libp2p reads only
    the k closest to the target (the target first), so the lookup finds it, and no more than k peers of that answer
    enter the peerstore. (Uncut: every named peer was read, up to the answerer's 64 places stored.)"""
    target = _fake_id()
    named = [_fake_id() for _ in range(MAX_ANSWER_PEERS - 1)]
    body = _answer(target, named, CLOSED)
    assert len(body) <= MAX_DHT_ANSWER_BYTES
    server = await _hostile_server(nursery, body)
    asker, _ = await start_transport(nursery, settings=ASKER)
    assert asker.host is not None
    with trio.fail_after(WAIT_S):
        await _connected(asker, server)
        found, _took, held = await _lookup_watched(asker, target)
    assert [str(a) for a in found] == [CLOSED]
    known = set(asker.host.get_peerstore().peer_ids())
    assert target in known and 0 < sum(1 for p in named if p in known) <= ANSWER_PEERS - 1
    assert asker.counters.dht_answers_cut >= 1 and asker.counters.dht_answers_refused == 0
    assert held < MAX_GAP_S, f"the event loop was held {held:.2f} s"


def test_an_honest_answer_at_the_bounds_fits_the_byte_bound() -> None:
    """k peers behind NAT, each at MAX_OWN_ADDRS relayed addresses (/ip6/<16 bytes>/udp/<port>/quic-v1/p2p/<relay>
    /p2p-circuit/p2p/<peer>, ~110 bytes: the longest kind a peer advertises) sent twice, as py-libp2p sends them
    (the peerstore's addresses and the signed record of them), and the server's own record alike: passes
    untouched, so an honest answer is never refused. (At 64 KiB, 20 peers of 16 relayed and 4 direct addresses
    were refused: 73.9 KB.)"""
    relays = [ID.from_pubkey(create_new_key_pair().public_key) for _ in range(MAX_OWN_ADDRS)]

    def relayed(n: int, peer_id: ID) -> list[multiaddr.Multiaddr]:
        return [
            multiaddr.Multiaddr(
                f"/ip6/2a00:1450:ffff:{n:x}:ffff:ffff:ffff:ffff/udp/65535/quic-v1/p2p/{relay}"
            ).encapsulate(f"/p2p-circuit/p2p/{peer_id}")
            for relay in relays
        ]

    answer = Message(type=Message.MessageType.FIND_NODE)
    for n in range(ANSWER_PEERS + 1):
        pair = create_new_key_pair()
        peer_id = ID.from_pubkey(pair.public_key)
        addrs = relayed(n, peer_id)
        assert all(dialable(a, PUBLIC) for a in addrs)
        record = create_signed_peer_record(peer_id, addrs, pair.private_key).marshal_envelope()
        if n == ANSWER_PEERS:
            answer.senderRecord = record
            continue
        peer = answer.closerPeers.add()
        peer.id = peer_id.to_bytes()
        peer.addrs.extend(a.to_bytes() for a in addrs)
        peer.signedRecord = record
    body = answer.SerializeToString()
    assert 128 * 1024 < len(body) < MAX_DHT_ANSWER_BYTES, len(body)  # ~149 KB
    assert _bound_message_untrusted(body, _fake_id().to_bytes(), inbound=False) == BoundedMessage(None, 0, cut=False)


async def _ask(asker: BetanetTransport, server: BetanetTransport, request: Message) -> Message:
    assert asker.host is not None and server.host is not None
    stream = await asker.host.new_stream(server.host.get_id(), [KAD_PROTOCOL])
    body = request.SerializeToString()
    await stream.write(bytes(varint.encode_uvarint(len(body))) + body)
    answer = Message.FromString(await read_varint_prefixed_bytes_limited(stream, MAX_DHT_ANSWER_BYTES))
    await stream.close()
    return answer


async def test_get_providers_answers_show_each_provider_at_the_askers_scope(nursery: trio.Nursery) -> None:
    """A DHT server (loopback_is_local = false: a peer on loopback counts as on its LAN) knows two providers of a
    key, each with a signed record of a loopback and a public address; the first provided at both, the second at
    the public one only. A GET_PROVIDERS answer to an asker on loopback names both at the public address only,
    without their records. (Unscoped: the addresses and records, as py-libp2p stores them, went to every asker;
    FIND_NODE's closer peers were already scoped.)"""
    settings = dataclasses.replace(LOOPBACK, dht_mode="server", loopback_is_local=False)
    server, _ = await start_transport(nursery, settings=settings)
    asker, _ = await start_transport(nursery)
    assert server.routing is not None and server.host is not None
    loopback, public = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001"), multiaddr.Multiaddr("/ip4/8.8.8.8/tcp/4001")
    key = hashlib.sha256(b"some content").digest()
    providers = []
    for provided in ([loopback, public], [public]):
        pair = create_new_key_pair()
        provider = ID.from_pubkey(pair.public_key)
        record = create_signed_peer_record(provider, [loopback, public], pair.private_key)
        assert server.host.get_peerstore().consume_peer_record(record, 7200)  # what its own identify would store
        server.routing.dht.provider_store.add_provider(key, PeerInfo(provider, provided))  # its ADD_PROVIDER
        providers.append(provider.to_bytes())
    with trio.fail_after(WAIT_S):
        await asker.dial(server.listen_addresses()[0])
        answer = await _ask(asker, server, Message(type=Message.MessageType.GET_PROVIDERS, key=key))
    assert sorted(p.id for p in answer.providerPeers) == sorted(providers)
    for shown in answer.providerPeers:
        assert [multiaddr.Multiaddr(a) for a in shown.addrs] == [public]
        assert not shown.HasField("signedRecord")
