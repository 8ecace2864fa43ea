"""Circuit relay v2 for BetaNet: py-libp2p's own implementation (``libp2p.relay.circuit_v2``) on our host.

* Every mode but ``off`` runs libp2p's ``CircuitV2Protocol``: its STOP handler accepts connections relayed to
  us, and hands them to the swarm's upgrader like any inbound connection, so they are secured with Noise
  (the only security transport our host has) end to end; the relay sees ciphertext only. In ``hop`` mode it
  also serves HOP (reservations and circuits for others) within :class:`RelayLimits` from
  ``betanet.relay_max_reservations`` / ``relay_max_circuits_per_peer``.
* Dials of ``.../p2p/<relay>/p2p-circuit/p2p/<peer>`` go through libp2p's ``CircuitV2Transport.dial``, which
  upgrades the relayed stream with the same swarm upgrader: Noise, then yamux.
* In ``client`` mode the transport asks each bootstrap peer it connects to for a reservation
  (:meth:`Relay.reserve`); while one is held we advertise ``<relay addr>/p2p/<relay>/p2p-circuit/p2p/<us>``
  (:meth:`Relay.circuit_addrs`) and push identify to connected peers, so their peerstores, and the DHT's
  answers, carry the circuit address. The push runs in the relay's nursery, one at a time (a reservation made
  while one runs asks for one more after it), so neither the reservation nor bootstrap waits on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service
from multiaddr.protocols import P_P2P

from node.transports.betanet.counters import BetanetCounters
from node.transports.betanet.scope import peer_addrs, push_identify_to_all
from node.transports.betanet.settings import BetanetSection

log = logging.getLogger("village.betanet.relay")

CIRCUIT_MAX_BYTES = 1 << 30  # bytes one relayed connection may carry before the relay resets it (libp2p default)
CIRCUIT_MAX_DURATION_S = 24 * 3600  # a relayed connection is reset after a day; bootstrap redials it
RESERVATION_TTL_S = 3600  # a slot we grant lasts this long unless refreshed (libp2p default; clients refresh)
MAX_RESERVED_RELAYS = 4  # relays we hold a slot on at once
MAX_ADDRS_PER_RELAY = 4  # circuit addresses advertised per relay


def is_circuit(addr: multiaddr.Multiaddr | str) -> bool:
    return "/p2p-circuit" in str(addr)


def without_peer_suffix(addr: multiaddr.Multiaddr) -> multiaddr.Multiaddr:
    """``addr`` without a trailing ``/p2p/<id>`` (a circuit's inner ``/p2p/<relay>`` stays)."""
    protos = list(addr.protocols())
    return addr.decapsulate_code(P_P2P) if protos and protos[-1].code == P_P2P else addr


class Relay:
    """libp2p's circuit relay v2 on ``host``, owned by the BetaNet transport's nursery."""

    def __init__(
        self,
        host: IHost,
        settings: BetanetSection,
        counters: BetanetCounters,
        notify: Callable[[], None],
    ) -> None:
        self._host = host
        self._mode = settings.relay
        self._timeout_s = settings.dial_timeout_s
        self._counters = counters
        self._notify = notify
        limits = RelayLimits(
            duration=CIRCUIT_MAX_DURATION_S,
            data=CIRCUIT_MAX_BYTES,
            max_circuit_conns=settings.relay_max_circuits_per_peer,
            max_reservations=settings.relay_max_reservations,
            reservation_ttl=RESERVATION_TTL_S,
        )
        self.protocol = CircuitV2Protocol(host, limits=limits, allow_hop=self._mode == "hop")
        # No CLIENT role: libp2p would then reserve a slot on the relay before every dial through it. We
        # reserve only where we mean to be reachable (bootstrap relays, client mode) with `reserve`.
        roles = RelayRole.STOP | (RelayRole.HOP if self._mode == "hop" else RelayRole(0))
        self._circuits = CircuitV2Transport(host, self.protocol, RelayConfig(roles=roles, limits=limits))
        self._reserved: dict[ID, None] = {}  # relays holding a slot for us, in reservation order
        self._nursery: trio.Nursery | None = None
        self._pushing = False  # an identify push to all connected peers is running in our nursery
        self._push_again = False  # our addresses changed while it ran: push once more when it ends

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with background_trio_service(self.protocol), trio.open_nursery() as nursery:
            await self.protocol.event_started.wait()  # STOP (and HOP) handlers are registered
            self._nursery = nursery
            log.info("circuit relay v2: %s", "relaying for others (hop)" if self._mode == "hop" else self._mode)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # ------------------------------------------------------------ reservations (client mode)
    async def reserve(self, relay_id: ID) -> bool:
        """Ask ``relay_id`` (a connected bootstrap peer) for a slot; on success advertise circuit addresses
        through it and start an identify push to connected peers (not waited on). False if it is no relay,
        refuses, or we hold enough slots already. Takes at most ``betanet.dial_timeout_s``."""
        nursery = self._nursery
        if self._mode != "client" or nursery is None or relay_id in self._reserved:
            return False
        if len(self._reserved) >= MAX_RESERVED_RELAYS:
            return False
        ok = False
        with trio.move_on_after(self._timeout_s):
            try:
                stream = await self._host.new_stream(relay_id, [HOP_PROTOCOL])
            except Exception as exc:  # noqa: BLE001 - libp2p: protocol refused (not a relay), connection gone, ...
                log.info("%s offers no circuit relay (its betanet.relay is not hop): %s", relay_id, exc)
                return False
            try:
                ok = await self._circuits.reserve(stream, relay_id, nursery)  # also starts libp2p's refresher
            finally:
                await stream.close()
        if not ok:
            log.warning("relay %s refused a reservation or did not answer in time", relay_id)
            return False
        self._reserved[relay_id] = None
        self._counters.relay_reservations += 1
        log.info("reserved a relay slot on %s; reachable at %s", relay_id, ", ".join(map(str, self.circuit_addrs())))
        self._notify()
        self._push_identify()
        return True

    def release(self, relay_id: ID) -> None:
        """The link to ``relay_id`` is gone: stop advertising circuit addresses through it, and tell connected peers."""
        if relay_id in self._reserved:
            del self._reserved[relay_id]
            log.info("relay %s lost; its circuit address is no longer advertised", relay_id)
            self._notify()
            self._push_identify()  # tell connected peers it is gone (merged into a round already running)

    def circuit_addrs(self) -> list[multiaddr.Multiaddr]:
        """``<relay addr>/p2p/<relay>/p2p-circuit/p2p/<us>`` for every relay holding a slot for us."""
        me = self._host.get_id()
        out: list[multiaddr.Multiaddr] = []
        store = self._host.get_peerstore()
        for relay_id in self._reserved:
            seen: set[str] = set()
            for addr in peer_addrs(store, relay_id):  # none if the relay was evicted from the peerstore (or expired)
                if is_circuit(addr):
                    continue
                base = str(without_peer_suffix(addr))
                if not base or base in seen or base.startswith("/ip4/0.0.0.0/"):
                    continue
                seen.add(base)
                out.append(multiaddr.Multiaddr(f"{base}/p2p/{relay_id}/p2p-circuit/p2p/{me}"))
                if len(seen) >= MAX_ADDRS_PER_RELAY:
                    break
        return out

    def _push_identify(self) -> None:
        """Tell each connected peer the addresses of its scope, the new circuit ones included (:mod:`.scope`), in
        the background: each push gets ``betanet.dial_timeout_s`` (a peer that never reads is cut then and counted;
        one whose cut is stuck too, on a connection we cannot write to, has its connections closed a grace later),
        so one round takes at most ceil(peers / IDENTIFY_PUSH_CONCURRENCY) x (dial_timeout_s +
        IDENTIFY_PUSH_CUT_GRACE_S + 2 x CONNECTION_CLOSE_BOUND_S) (scope.py). One round runs at a
        time: asked while one runs, we push again once it ends (it may have read our addresses before the change),
        so reservations coming in quick succession start at most two rounds, never a task each."""
        nursery = self._nursery
        if nursery is None:
            return
        if self._pushing:
            self._push_again = True
            return
        self._pushing = True
        nursery.start_soon(self._push_rounds)

    async def _push_rounds(self) -> None:
        try:
            while True:
                self._push_again = False
                await push_identify_to_all(
                    self._host,
                    timeout_s=self._timeout_s,
                    on_timeout=self._count_push_timeout,
                    on_cut=self._count_push_close,
                )
                if not self._push_again:
                    return
        finally:
            self._pushing = False

    def _count_push_timeout(self) -> None:
        self._counters.identify_push_timeouts += 1
        self._notify()

    def _count_push_close(self) -> None:
        self._counters.identify_push_closes += 1
        self._notify()

    # ------------------------------------------------------------ dialling through relays
    async def dial(self, addr: multiaddr.Multiaddr) -> None:
        """Open a Noise-secured connection through the relay named in ``addr`` (``.../p2p-circuit/p2p/<id>``)."""
        relay_addr, _ = self._circuits.parse_circuit_ma(addr)
        relay_id = ID.from_base58(str(relay_addr.get_peer_id()))
        network = self._host.get_network()
        transport_part = without_peer_suffix(relay_addr)
        if not network.get_connections(relay_id) and str(transport_part):
            # Reach the relay with a direct dial first: libp2p's CircuitV2Transport would use host.connect,
            # whose dial_peer waits a fixed 250 ms "happy eyeballs" delay (swarm.py _HAPPY_EYEBALLS_DELAY).
            await network.dial_addr(transport_part, relay_id)
        await self._circuits.dial(addr)
        self._counters.relay_dials += 1
        self._notify()

    def connected_relays(self) -> list[ID]:
        """Connected peers that (per identify) serve circuit relay v2's HOP protocol."""
        store = self._host.get_peerstore()
        out = []
        for peer_id in self._host.get_connected_peers():
            if store.supports_protocols(peer_id, [str(HOP_PROTOCOL)]):  # [] for a peer not identified yet
                out.append(peer_id)
        return out
