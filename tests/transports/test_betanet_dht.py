"""Kademlia peer routing over real loopback TCP, with py-libp2p's KadDHT: A and C know only B, and A reaches
C by its peer ID alone."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest
import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from node.clock import Clock
from node.identity import Identity
from node.node import Node
from node.settings import Config, NodeSection
from node.transports.base import Link
from node.transports.betanet.settings import BetanetSection
from node.transports.betanet.transport import BetanetTransport, DialError
from tests.transports.test_betanet import LOOPBACK, WAIT_S, start_transport

SERVER = dataclasses.replace(LOOPBACK, dht_mode="server")  # a hub others look peers up through (an anchor)


async def test_peer_id_alone_is_found_through_the_dht(nursery: trio.Nursery) -> None:
    hub, _ = await start_transport(nursery, settings=SERVER)
    a, _ = await start_transport(nursery)
    c, c_links = await start_transport(nursery)
    with trio.fail_after(WAIT_S):
        await a.dial(hub.listen_addresses()[0])
        await c.dial(hub.listen_addresses()[0])
        # The hub identifies both (they dialled it; it never dialled them). They are DHT clients: not in its
        # routing table, but a lookup of one by its peer ID is answered from the hub's peerstore (FIND_PEER).
        await hub.wait_counters(lambda n: n.identified >= 2)
        await a.wait_counters(lambda n: n.dht_routing_added >= 1)
        assert a.host is not None and c.host is not None
        assert not a.host.get_network().get_connections(c.host.get_id())
        started = trio.current_time()
        link = await a.dial(f"/p2p/{c.peer_id}")
        elapsed = trio.current_time() - started
        inbound = await c_links.receive()
        while c.peer_id not in link.remote_address or a.peer_id not in inbound.remote_address:
            inbound = await c_links.receive()  # c's link to the hub came first
        await link.send(b"found you")
        assert await inbound.receive() == b"found you"
    # The link is direct: C's real address, not through the hub.
    assert link.remote_address.startswith("/ip4/127.0.0.1/tcp/") and "/p2p-circuit" not in link.remote_address
    assert link.remote_address in c.listen_addresses()
    assert (a.counters.dht_lookups, a.counters.dht_found) == (1, 1)
    print(f"DHT lookup + connect + mesh stream: {elapsed * 1000:.0f} ms")


async def test_unknown_peer_id_and_dht_off_are_clear_errors(nursery: trio.Nursery) -> None:
    hub, _ = await start_transport(nursery, settings=SERVER)
    a, _ = await start_transport(nursery)
    nobody = ID.from_pubkey(create_new_key_pair().public_key)
    with trio.fail_after(WAIT_S):
        await a.dial(hub.listen_addresses()[0])
        with pytest.raises(DialError, match="no connected peer knows this peer"):
            await a.dial(f"/p2p/{nobody}")
    assert (a.counters.dht_lookups, a.counters.dht_found, a.counters.dial_failures) == (1, 0, 1)
    off, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, dht=False))
    with pytest.raises(DialError, match=r"betanet\.dht is off"):
        await off.dial(f"/p2p/{hub.peer_id}")


def _node(ident: Identity, transport: BetanetTransport, name: str) -> Node:
    d = Path(tempfile.mkdtemp(prefix="vlg-", dir="/tmp"))
    cfg = Config(data_dir=d, node=NodeSection(nickname=name), betanet=transport.settings)
    return Node(cfg, ident, transports=[transport], clock=Clock(), control=False, persistent_inbox=False)


async def test_node_connects_by_peer_id_and_messages_go_direct(nursery: trio.Nursery) -> None:
    """Three nodes; A and C bootstrap to B only. A connects to C by peer ID (the DHT finds C through B),
    then a private message from A reaches C in one hop over the new direct link."""
    b_ident = Identity.generate()
    b_transport = BetanetTransport(b_ident, SERVER)
    b = _node(b_ident, b_transport, "b")
    await nursery.start(b.run)
    boot = dataclasses.replace(LOOPBACK, bootstrap=(b_transport.listen_addresses()[0],))
    nodes: dict[str, tuple[Node, BetanetTransport]] = {}
    for name in ("a", "c"):
        ident = Identity.generate()
        t = BetanetTransport(ident, boot)
        node = _node(ident, t, name)
        await nursery.start(node.run)
        nodes[name] = (node, t)
    (a, a_t), (c, c_t) = nodes["a"], nodes["c"]
    with trio.fail_after(WAIT_S):
        await b_transport.wait_counters(lambda n: n.identified >= 2)
        await a_t.wait_counters(lambda n: n.dht_routing_added >= 1)
        link: Link = await a.connect(f"/p2p/{c_t.peer_id}")
        assert link.remote_address in c_t.listen_addresses()
        await a.wait_until(lambda: a.core is not None and a.core.peers.get(c.identity.peer_id) is not None)
        message_id = a.send_private(c.identity.peer_id_hex, "hello by peer id")
        await a.wait_until(lambda: a.outgoing[message_id].state == "delivered")
    assert c.inbox is not None
    [received] = [m for m in c.inbox.list() if m.text == "hello by peer id"]
    assert received.private and received.sender == a.identity.peer_id_hex and received.hops == 1
    view = {p["nickname"]: p for p in c.peers_view()}
    assert view["a"]["address"].startswith("/ip4/127.0.0.1/tcp/") and view["a"]["address"].endswith(a_t.peer_id)
    assert a_t.counters.dht_found == 1
    for node in (a, b, c):
        node.request_stop()


@pytest.mark.parametrize("auto_connect", ["off", "peerstore"])
async def test_a_peer_only_a_dht_answer_named_is_not_dialled_unless_configured(
    nursery: trio.Nursery, auto_connect: str
) -> None:
    """py-libp2p's auto-connector dials peers of the peerstore: a peer that a DHT answer named (FIND_NODE replies
    put their addresses there, as below) would learn this node's IP address and peer ID, at an address of the
    answering peer's choosing. With betanet.auto_connect = "off" it never runs: the peer is not dialled.
    "peerstore" (the default) keeps py-libp2p's behaviour (the control: the same peer is dialled)."""
    me, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, auto_connect=auto_connect))
    stranger, _ = await start_transport(nursery)
    assert me.host is not None and stranger.host is not None
    swarm = me.host.get_network()
    assert isinstance(swarm, Swarm)
    named = stranger.host.get_id()
    addrs = [Multiaddr(a) for a in stranger.listen_addresses()]  # (host.get_addrs() is what a stranger may see)
    me.host.get_peerstore().add_addrs(named, addrs, 3600)  # what peer_routing.py does
    connector = swarm.auto_connector
    if auto_connect == "off":
        await connector.maybe_connect()  # a cycle (it also runs on every disconnect): nothing to do
        assert not connector._started and not swarm.get_connections(named) and not connector._in_flight_dials
        assert not stranger.host.get_network().get_connections(me.host.get_id())
        return
    with trio.fail_after(WAIT_S):
        while not swarm.get_connections(named):  # a cycle may already be running: the next one dials it
            await connector.maybe_connect()
            await trio.sleep(0.05)


def test_the_auto_connector_runs_by_default() -> None:
    """py-libp2p's auto-connector is on unless configured off: it is what redials a dropped link to an mDNS or
    `village connect` peer (only bootstrap peers have a redial of their own)."""
    assert BetanetSection().auto_connect == "peerstore"
    assert LOOPBACK.auto_connect == "peerstore"


class _Disconnects(INotifee):
    """Which peers' connections the swarm has reported closed (after its own bookkeeping of the close)."""

    def __init__(self) -> None:
        self._gone: set[ID] = set()
        self._changed = trio.Event()

    async def disconnected_from(self, peer: ID) -> None:
        while peer not in self._gone:
            await self._changed.wait()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._gone.add(conn.muxed_conn.peer_id)
        self._changed.set()
        self._changed = trio.Event()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None


@pytest.mark.parametrize("auto_connect", ["off", "peerstore"])
async def test_off_keeps_no_disconnect_record_of_remote_peers(nursery: trio.Nursery, auto_connect: str) -> None:
    """The swarm records every closed connection for the auto-connector's backoff, in a table only a running
    auto-connector prunes. With "off" nothing is recorded: peers connecting under fresh peer IDs and closing
    leave nothing behind. ("peerstore", the control: each is recorded, and pruned by the connector's cycles.)"""
    victim, links = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, auto_connect=auto_connect))
    assert victim.host is not None
    swarm = victim.host.get_network()
    assert isinstance(swarm, Swarm)
    watcher = _Disconnects()
    swarm.register_notifee(watcher)
    for _ in range(3):
        async with trio.open_nursery() as inner:
            visitor, _ = await start_transport(inner)
            assert visitor.host is not None
            with trio.fail_after(WAIT_S):
                await visitor.dial(victim.listen_addresses()[0])
                await links.receive()
                await visitor.host.get_network().close_peer(victim.host.get_id())
                await watcher.disconnected_from(visitor.host.get_id())  # the swarm is told after it recorded
            inner.cancel_scope.cancel()
    recorded = len(swarm.auto_connector._recent_disconnects)
    assert recorded == (0 if auto_connect == "off" else 3)


@pytest.mark.parametrize("auto_connect", ["off", "peerstore"])
async def test_off_skips_the_dht_upkeep_that_dials_peers_answers_named(
    nursery: trio.Nursery, auto_connect: str
) -> None:
    """KadDHT's upkeep (at start and every 600 s) looks up random keys through the routing table and dials the
    peers the answers name. With "off" it does nothing: a stranger known only to the hub stays undialled; a lookup
    the node is asked for still finds it. ("peerstore", the control: the upkeep connects to the stranger.)"""
    hub, _ = await start_transport(nursery, settings=SERVER)
    me, _ = await start_transport(nursery, settings=dataclasses.replace(LOOPBACK, auto_connect=auto_connect))
    stranger, _ = await start_transport(nursery, settings=SERVER)  # a server: lookups' answers name servers only
    assert me.host is not None and stranger.host is not None
    sid = stranger.host.get_id()
    with trio.fail_after(WAIT_S):
        await stranger.dial(hub.listen_addresses()[0])
        await me.dial(hub.listen_addresses()[0])
        await hub.wait_counters(lambda c: c.dht_routing_added >= 1 and c.identified >= 2)
        await me.wait_counters(lambda c: c.dht_routing_added >= 1)
    routing = me.routing
    assert routing is not None
    with trio.fail_after(WAIT_S):
        await routing.dht.refresh_routing_table()  # what KadDHT's upkeep runs
    connected = bool(me.host.get_network().get_connections(sid))
    if auto_connect == "peerstore":
        assert connected
        return
    assert not connected and not stranger.host.get_network().get_connections(me.host.get_id())
    # Nor does a peer enter the routing table on an answer's word (the table's own upkeep would ping it later).
    table = routing.dht.routing_table
    named = [Multiaddr(a) for a in stranger.listen_addresses()]
    me.host.get_peerstore().add_addrs(sid, named, 3600)  # as an answer would
    assert not await table.add_peer(PeerInfo(sid, named))
    assert not table.peer_in_table(sid) and not me.host.get_network().get_connections(sid)
    with trio.fail_after(WAIT_S):
        link = await me.dial(f"/p2p/{stranger.peer_id}")  # a lookup the node is asked for still works
    assert link.remote_address in stranger.listen_addresses()
