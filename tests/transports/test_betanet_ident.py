"""What a BetaNet node tells its peers about itself: our record and identify carry at most MAX_OWN_ADDRS addresses
(what a peer keeps), prioritised for the asker."""

from __future__ import annotations

import dataclasses

import multiaddr
import trio
from multiaddr.protocols import P_P2P

from node.transports.betanet.scope import (
    LAN,
    LOOPBACK,
    MAX_OWN_ADDRS,
    PUBLIC,
    capped,
)
from tests.transports.test_betanet import LOOPBACK as LOOPBACK_SETTINGS
from tests.transports.test_betanet import WAIT_S, start_transport

ANNOUNCED = ("/ip4/8.8.4.4/tcp/4001", "/ip4/9.9.9.9/udp/4001/quic-v1")
MANY_LISTENERS = 40  # loopback listen addresses of the multi-homed node: more than MAX_OWN_ADDRS


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
