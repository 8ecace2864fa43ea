"""What a BetaNet node tells its peers about itself, and how it reads what it stored about them: our record and
identify carry at most MAX_OWN_ADDRS addresses (what a peer keeps), prioritised for the asker; identify pushes go to
all peers even while one never reads; a peer's addresses are read in one step (unknown or expired: none)."""

from __future__ import annotations

import dataclasses

import multiaddr
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.identity.identify_push.identify_push import ID_PUSH
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStoreError
from multiaddr.protocols import P_P2P

from node.transports.betanet.scope import (
    LAN,
    LOOPBACK,
    MAX_OWN_ADDRS,
    PUBLIC,
    GuardedPeerStore,
    capped,
    peer_addrs,
)
from tests.transports.test_betanet import LOOPBACK as LOOPBACK_SETTINGS
from tests.transports.test_betanet import WAIT_S, start_transport

ANNOUNCED = ("/ip4/8.8.4.4/tcp/4001", "/ip4/9.9.9.9/udp/4001/quic-v1")
MANY_LISTENERS = 40  # loopback listen addresses of the multi-homed node: more than MAX_OWN_ADDRS
PUSH_TIMEOUT_S = 4.0  # betanet.dial_timeout_s of the pushing node: how long a stalled push holds its pusher
PROMPT_S = 1.0  # a push to a reading peer is "prompt": well before the stalled push ahead of it is cut


def _ma(text: str) -> multiaddr.Multiaddr:
    return multiaddr.Multiaddr(text)


def test_our_addresses_are_capped_for_the_asker() -> None:
    """Beyond MAX_OWN_ADDRS: the announce addresses first, then the asker's own scope class, direct before relayed,
    by text within each; the same addresses in another order give the same list."""
    relay = "/p2p/12D3KooWLQkMuJkNKjD8pRMmjTNQyVE3oPfcfmF4KpB7z5fTQy6K"
    lan = sorted((_ma(f"/ip4/192.168.1.{i}/tcp/4001") for i in range(1, 41)), key=str)
    public = sorted((_ma(f"/ip4/8.8.8.{i}/tcp/4001") for i in range(1, 11)), key=str)
    circuits = [_ma(f"/ip4/8.8.7.{i}/tcp/4001{relay}/p2p-circuit") for i in range(1, 5)]
    announced = _ma(ANNOUNCED[0])
    everything = [*lan, *circuits, *public, announced]
    for_lan = capped(everything, LAN, frozenset({ANNOUNCED[0]}))
    assert for_lan == [announced, *lan[: MAX_OWN_ADDRS - 1]]
    assert capped(list(reversed(everything)), LAN, frozenset({ANNOUNCED[0]})) == for_lan  # deterministic
    for_public = capped([a for a in everything if a not in lan], PUBLIC, frozenset({ANNOUNCED[0]}))
    assert for_public == [announced, *public, *circuits]  # (under the cap: all of them, in that order)
    loopback = sorted((_ma(f"/ip4/127.0.0.{i}/tcp/4001") for i in range(1, 41)), key=str)
    assert capped([*public, *loopback, *loopback], LOOPBACK, frozenset()) == loopback[:MAX_OWN_ADDRS]


async def test_a_peer_keeps_the_record_of_a_node_with_many_addresses(nursery: trio.Nursery) -> None:
    """A node listening on 40 addresses, plus two announce addresses: the peer that identifies it keeps its
    signed record (at most MAX_OWN_ADDRS addresses) with the announce addresses in it. (Unchecked: a record of
    42 addresses, refused by the peer, which kept identify's first 32 listen addresses, the announced ones cut.)"""
    many = dataclasses.replace(
        LOOPBACK_SETTINGS,
        listen=tuple(f"/ip4/127.0.0.{i}/tcp/0" for i in range(1, MANY_LISTENERS + 1)),
        announce_addrs=ANNOUNCED,
    )
    big, _ = await start_transport(nursery, settings=many)
    peer, _ = await start_transport(nursery)
    assert big.host is not None and peer.host is not None
    assert len(big.listen_addresses()) > MAX_OWN_ADDRS
    with trio.fail_after(WAIT_S):
        await peer.dial(next(a for a in big.listen_addresses() if a.startswith("/ip4/127.")))
        await peer.wait_counters(lambda c: c.identified >= 1)
    store = peer.host.get_peerstore()
    big_id = big.host.get_id()
    record = store.get_peer_record(big_id)
    assert record is not None, "the peer refused our signed record"
    signed = {str(a.decapsulate_code(P_P2P)) for a in record.record().addrs}
    assert len(signed) == MAX_OWN_ADDRS and set(ANNOUNCED) <= signed
    stored = {str(a.decapsulate_code(P_P2P)) for a in store.addrs(big_id)}
    assert len(stored) <= MAX_OWN_ADDRS and set(ANNOUNCED) <= stored
    assert peer.counters.peer_addrs_refused == 0  # nothing we said was over its bounds


async def test_a_peer_that_never_reads_does_not_hold_the_push_to_the_others(nursery: trio.Nursery) -> None:
    """Our addresses change: identify push goes to every peer. The first connected peer accepts each new stream
    and never reads (py-libp2p's negotiation waits 30 s on it): the other still gets its push promptly (before the
    stalled push is cut: the pushes run side by side), and the stalled push is cut at betanet.dial_timeout_s and
    counted. (Unchecked: one peer at a time, no timeout; with one pusher the other waits PUSH_TIMEOUT_S.)"""
    settings = dataclasses.replace(LOOPBACK_SETTINGS, dial_timeout_s=PUSH_TIMEOUT_S)
    pusher, _ = await start_transport(nursery, settings=settings)
    stall, _ = await start_transport(nursery)
    other, _ = await start_transport(nursery)
    assert pusher.host is not None and stall.host is not None and other.host is not None
    with trio.fail_after(WAIT_S):
        await stall.dial(pusher.listen_addresses()[0])  # first: the unfixed loop pushed to it first
        await other.dial(pusher.listen_addresses()[0])
        await pusher.wait_counters(lambda c: c.identified >= 2)
    assert pusher.host.get_connected_peers()[0] == stall.host.get_id()

    async def never_read(stream: INetStream) -> None:
        await trio.sleep_forever()  # holds the stream open, never answers multistream-select

    stall.host.get_network().set_stream_handler(never_read)
    pushed = trio.Event()

    async def take_push(stream: INetStream) -> None:
        pushed.set()
        await stream.close()

    other.host.set_stream_handler(ID_PUSH, take_push)
    nursery.start_soon(pusher.host._push_identify_to_all_peers)  # type: ignore[attr-defined]  # scope_host's
    with trio.fail_after(PROMPT_S):
        await pushed.wait()
    with trio.fail_after(WAIT_S):
        await pusher.wait_counters(lambda c: c.identify_push_timeouts >= 1)
    assert pusher.counters.identify_push_timeouts == 1  # the stalled peer alone


def _peer() -> ID:
    return ID.from_pubkey(create_new_key_pair().public_key)


def test_a_peer_unknown_or_expired_reads_as_no_addresses() -> None:
    """peer_addrs reads in one step under the store's lock: an unknown peer, or one still listed whose entry
    expired, has no addresses, and nothing raises. (Unchecked: ``addrs(p) if p in peer_ids()`` raised
    PeerStoreError for the expired one, as it did for a peer zeroconf's thread dropped between check and read.)"""
    store = GuardedPeerStore()
    gone, expired, known = _peer(), _peer(), _peer()
    addr = _ma("/ip4/8.8.8.8/tcp/4001")
    assert peer_addrs(store, gone) == [] and store.known_addrs(gone) == []
    store.add_addrs(expired, [addr], 60)
    store.peer_data_map[expired].last_identified -= 3600  # its TTL passed; the cleanup task has not run yet
    assert expired in store.peer_ids()
    with pytest.raises(PeerStoreError):
        store.addrs(expired)  # what the old check-then-read did
    assert peer_addrs(store, expired) == []
    store.add_addrs(known, [addr], 0)
    got = peer_addrs(store, known)
    assert got == [addr]
    got.append(_ma("/ip4/8.8.8.9/tcp/4001"))  # a copy: the caller's list is not the store's
    assert store.addrs(known) == [addr]


async def test_a_dial_goes_through_when_the_peer_s_entry_expired(nursery: trio.Nursery) -> None:
    """Dialling a peer whose peerstore entry expired (listed, not yet cleaned up) connects at the given address.
    (Unchecked: the dial's read of the known addresses raised PeerStoreError, and the dial failed.)"""
    a, _ = await start_transport(nursery)
    b, _ = await start_transport(nursery)
    assert a.host is not None and b.host is not None
    store = a.host.get_peerstore()
    store.add_addrs(b.host.get_id(), [_ma("/ip4/127.0.0.1/tcp/9")], 60)
    store.peer_data_map[b.host.get_id()].last_identified -= 3600  # type: ignore[attr-defined]  # expired
    with trio.fail_after(WAIT_S):
        link = await a.dial(b.listen_addresses()[0])
    assert link is not None and a.host.get_network().get_connections(b.host.get_id())
