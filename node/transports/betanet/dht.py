"""Kademlia peer routing for BetaNet: py-libp2p's own ``KadDHT`` on our host, fed by identify.

libp2p's DHT only knows the peers someone adds to its routing table. We dial with ``Swarm.dial_addr`` (not
``host.connect``), and a hub never dials its inbound peers, so on every new connection, in either direction,
we run identify ourselves (``/ipfs/id/1.0.0``): the peer's listen addresses and protocols go into the
peerstore, and the peer goes into the routing table if it serves the DHT. A lookup
(:meth:`PeerRouting.find`) then asks the connected peers closest to the target, as Kademlia does.

py-libp2p 0.8's host also starts an identify of its own on each connection (``_IdentifyNotifee`` in
``host/basic_host.py``), as a system task with no completion signal; ours runs in this node's nursery, is
bounded, and tells us when the routing table may be fed.

Bounds: connections waiting to be identified (:data:`IDENTIFY_QUEUE`), identifies at once
(:data:`IDENTIFY_CONCURRENCY`), identify message size (:data:`MAX_IDENTIFY_BYTES`), one timeout per identify
and per lookup. The DHT speaks ``/ipfs/kad/1.0.0`` whatever prefix is asked for (0.8 ignores
``protocol_prefix``); its routing table holds at most 256 buckets of 20 peers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.identity.identify.identify import ID as IDENTIFY_PROTOCOL
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.identity.update import update_peerstore_from_identify
from libp2p.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import read_length_prefixed_protobuf

from node.transports.betanet.counters import BetanetCounters

log = logging.getLogger("village.betanet.dht")

IDENTIFY_QUEUE = 256  # new connections waiting for our identify; beyond this they are skipped (and counted)
IDENTIFY_CONCURRENCY = 8  # identifies running at once
MAX_IDENTIFY_BYTES = 64 * 1024  # largest identify message read from a peer (listen addrs, protocols, record)


class _ConnectionWatch(INotifee):
    """Swarm notifee: queue each new connection's peer for identify. Never blocks the swarm."""

    def __init__(self, queue: trio.MemorySendChannel[ID], counters: BetanetCounters) -> None:
        self._queue = queue
        self._counters = counters

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer_id = getattr(conn.muxed_conn, "peer_id", None)
        if peer_id is None:
            return
        try:
            self._queue.send_nowait(peer_id)
        except trio.WouldBlock:
            self._counters.identify_skipped += 1
        except trio.ClosedResourceError:
            pass

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


class PeerRouting:
    """libp2p's KadDHT (server mode) on ``host``, owned by the BetaNet transport's nursery."""

    def __init__(self, host: IHost, counters: BetanetCounters, notify: Callable[[], None], timeout_s: float) -> None:
        self._host = host
        self._counters = counters
        self._notify = notify
        self._timeout_s = timeout_s
        self.dht = KadDHT(host, DHTMode.SERVER)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        send, recv = trio.open_memory_channel[ID](IDENTIFY_QUEUE)
        watch = _ConnectionWatch(send, self._counters)
        network = self._host.get_network()
        network.register_notifee(watch)
        try:
            async with background_trio_service(self.dht), trio.open_nursery() as nursery:
                limiter = trio.CapacityLimiter(IDENTIFY_CONCURRENCY)
                for peer_id in network.get_connections_map():  # connections made before we started watching
                    send.send_nowait(peer_id)
                task_status.started()
                async for peer_id in recv:
                    token = object()  # one borrower per identify (a peer may reconnect while one runs)
                    await limiter.acquire_on_behalf_of(token)
                    nursery.start_soon(self._identify_and_route, peer_id, limiter, token)
        finally:
            network.remove_notifee(watch)
            send.close()

    async def _identify_and_route(self, peer_id: ID, limiter: trio.CapacityLimiter, token: object) -> None:
        try:
            with trio.move_on_after(self._timeout_s) as scope:
                await self._identify(peer_id)
                added = await self.dht.add_peer(peer_id)
            if scope.cancelled_caught:
                log.debug("identify of %s timed out after %.0f s (betanet.dial_timeout_s)", peer_id, self._timeout_s)
                return
            self._counters.identified += 1
            if added:
                self._counters.dht_routing_added += 1
            self._notify()
        except Exception as exc:  # libp2p raises assorted errors for closed/refusing/garbled peers; ends here
            log.debug("identify of %s failed: %s", peer_id, exc or type(exc).__name__)
        finally:
            limiter.release_on_behalf_of(token)

    async def _identify(self, peer_id: ID) -> None:
        stream = await self._host.new_stream(peer_id, [IDENTIFY_PROTOCOL])
        try:
            data = await read_length_prefixed_protobuf(stream, True, MAX_IDENTIFY_BYTES)
        finally:
            await stream.close()
        msg = Identify()
        msg.ParseFromString(data)
        await update_peerstore_from_identify(self._host.get_peerstore(), peer_id, msg)

    async def find(self, peer_id: ID) -> list[multiaddr.Multiaddr]:
        """Look ``peer_id`` up through the DHT; its known addresses (empty when nobody knows it)."""
        self._counters.dht_lookups += 1
        info = None
        with trio.move_on_after(self._timeout_s):
            info = await self.dht.find_peer(peer_id)
        addrs = [a for a in (info.addrs if info is not None else []) if str(a)]
        if addrs:
            self._counters.dht_found += 1
        self._notify()
        return addrs
