"""BetaNet's QUIC side: which transports the libp2p host gets, and the order addresses are dialled in.

Security over QUIC. libp2p's QUIC (the spec, py-libp2p's, and ours in :mod:`.quic_transport`) secures a
connection with TLS 1.3 whose self-signed certificate carries the libp2p peer-ID extension (the host key signs
the TLS key); there is no Noise inside libp2p QUIC. BetaNet's rule "security always Noise" is read as: never
plaintext, and the remote identity always authenticated. TCP negotiates Noise only (plaintext is refused);
QUIC uses the spec's TLS 1.3 with the peer-ID extension, so a dial to ``/udp/N/quic-v1/p2p/<id>`` fails
unless the remote proves the key behind ``<id>``, and an inbound client that proves no peer ID is closed; and
on both, the mesh binds the libp2p peer ID (derived from the node's Ed25519 key) to the BitChat announce
(:attr:`BetanetLink.authenticated_signing_key`).

Dialling. A QUIC address is tried first, for at most :data:`QUIC_ATTEMPT_S` (an ICMP port unreachable ends
it at once); if it does not connect, the same host's TCP address on the same port number is tried
(``betanet.listen`` defaults to both on port 4001), then the peer's other addresses the peerstore knows.
"""

from __future__ import annotations

from collections.abc import Callable

import multiaddr
import trio
from libp2p.abc import ITransport
from libp2p.crypto.keys import KeyPair
from libp2p.transport.tcp.tcp import TCP

from node.transports.betanet.counters import BetanetCounters
from node.transports.betanet.quic_admission import DEFAULT_LIMITS, Limits
from node.transports.betanet.quic_transport import QuicTransport

QUIC_ATTEMPT_S = 3.0  # a QUIC dial that has not connected by then gives way to TCP (UDP may be blocked)


def is_quic(addr: multiaddr.Multiaddr | str) -> bool:
    text = str(addr)
    return "/quic-v1" in text or text.endswith("/quic") or "/quic/" in text


def host_transports(
    key_pair: KeyPair,
    limits: Limits = DEFAULT_LIMITS,
    counters: BetanetCounters | None = None,
    notify: Callable[[], None] = lambda: None,
) -> tuple[list[ITransport], QuicTransport]:
    """TCP and our QUIC (:mod:`.quic_transport`), always both: a node listening on one can still dial the
    other. The QUIC transport is also returned so that the caller can close it (:func:`close_quic`)."""
    quic = QuicTransport(key_pair.private_key, limits=limits, counters=counters, notify=notify)
    return [TCP(), quic], quic


async def close_quic(quic: QuicTransport) -> None:
    """End our QUIC connections and listeners while the host still runs (the swarm closes transports too,
    but only after their connections' tasks may already have been cancelled)."""
    with trio.CancelScope(shield=True):
        await quic.close()


def tcp_twin(addr: multiaddr.Multiaddr) -> multiaddr.Multiaddr | None:
    """``/ip4/A/udp/N/quic-v1`` → ``/ip4/A/tcp/N``: where the same node listens on TCP by default."""
    parts = str(addr).split("/")
    # ['', 'ip4', A, 'udp', N, 'quic-v1', ...]
    if len(parts) < 6 or parts[3] != "udp" or not parts[5].startswith("quic"):
        return None
    return multiaddr.Multiaddr("/".join([*parts[:3], "tcp", parts[4]]))


def dial_order(first: multiaddr.Multiaddr, known: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """Addresses to try for one peer, without ``/p2p/``: ``first`` (what was asked for); if it is QUIC, its TCP
    twin; then the peer's other known direct addresses, QUIC before TCP. Duplicates removed."""
    out: list[multiaddr.Multiaddr] = [first]
    twin = tcp_twin(first) if is_quic(first) else None
    if twin is not None:
        out.append(twin)
    if is_quic(first):
        out += sorted((a for a in known if "/p2p-circuit" not in str(a)), key=lambda a: not is_quic(a))
    seen: set[str] = set()
    unique = []
    for a in out:
        if str(a) not in seen:
            seen.add(str(a))
            unique.append(a)
    return unique
