"""Each component of the mesh core, alone: its state, bounds and timers (``next_deadline`` / ``on_timer``)."""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from typing import Any

import nacl.signing

from node.identity import Identity
from node.routing.announcing import AnnounceRelays, AnnounceSchedule
from node.routing.app import AppChannel
from node.routing.delivery import PrivateDelivery
from node.routing.events import DeliveryAcked, MeshCounters, MeshEvent, MessageReceived
from node.routing.meshbase import ANNOUNCE_ANSWER_GAP_S, PING_EXPIRY_S
from node.routing.output import LinkOutput
from node.routing.paths import PathTable
from node.routing.peers import PeerInfo, PeerTable
from node.routing.pending import PendingMessage
from node.routing.pinging import PingTracker
from node.routing.settings import MeshSection
from node.wire import DEFAULT_LIMITS, MessageType, Packet, decode_fragment_untrusted, decode_packet_untrusted

SETTINGS = MeshSection()


def _identity(seed: int) -> Identity:
    rng = random.Random(seed)
    return Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))


# ---------------------------------------------------------------- PingTracker
def test_ping_tracker_measures_rtt_and_expires_lost_pings_on_its_own_timer() -> None:
    pings = PingTracker(max_outstanding=4)
    assert pings.next_deadline() is None
    pings.sent_ping(b"n1", b"peer-a", "l1", 10.0)
    pings.sent_ping(b"n2", b"peer-b", "l2", 11.0)
    assert pings.next_deadline() == 10.0 + PING_EXPIRY_S
    assert pings.on_pong(b"n1", b"someone-else", 10.2) is None  # wrong sender: not an answer (and consumed)
    assert pings.on_pong(b"n2", b"peer-b", 11.5) == ("l2", 0.5)
    assert pings.answered == 1 and pings.sent == 2
    pings.sent_ping(b"n3", b"peer-c", "l3", 20.0)
    assert pings.on_timer(20.0 + PING_EXPIRY_S - 0.1) == []
    assert pings.on_timer(pings.next_deadline() or 0.0) == ["l3"]  # due exactly at its deadline: no busy loop
    assert pings.next_deadline() is None


def test_ping_tracker_is_bounded_and_judges_loss() -> None:
    pings = PingTracker(max_outstanding=4)
    for i in range(10):
        pings.sent_ping(bytes([i]), b"p", "l", float(i))
    assert pings.bounded_sizes()["pings_outstanding"] == (4, 4)
    assert pings.lossy()  # 10 sent, none answered
    assert pings.on_pong(bytes([9]), b"p", 9.1) is not None
    assert pings.on_pong(bytes([0]), b"p", 9.1) is None  # forgotten beyond the bound


# ---------------------------------------------------------------- AnnounceSchedule and AnnounceRelays
def test_announce_schedule_defers_an_answer_and_fires_it_on_its_timer() -> None:
    sched = AnnounceSchedule(SETTINGS, random.Random(1))
    sched.schedule(0.0, links=1)
    periodic_at = sched.next_announce
    assert periodic_at is not None and 11.0 <= periodic_at <= 19.0  # 15 ± 4 s
    sched.announced(["l1"], 1.0)
    assert not sched.answer_now("l1", 1.05)  # one just went out: deferred
    assert sched.answer_now("l2", 1.05)
    assert sched.next_deadline() == 1.0 + ANNOUNCE_ANSWER_GAP_S
    assert sched.on_timer(1.0 + ANNOUNCE_ANSWER_GAP_S) == (False, ["l1"])
    assert sched.next_deadline() == periodic_at
    assert sched.on_timer(periodic_at) == (True, [])


def test_announce_schedule_settles_at_most_once_per_interval() -> None:
    sched = AnnounceSchedule(SETTINGS, random.Random(1))
    sched.schedule(0.0, links=1)
    sched.settle_soon(1.0)
    first = sched.next_announce
    assert first is not None and 4.0 <= first <= 5.0
    sched.next_announce = 100.0
    sched.settle_soon(2.0)  # within the announce interval of the last: not brought forward again
    assert sched.next_announce == 100.0


def test_announce_relays_suppress_unchanged_announces_and_stay_bounded() -> None:
    relays = AnnounceRelays(max_entries=3)
    kw: dict[str, Any] = {"interval_s": 60.0, "early_interval_s": 60.0}
    assert relays.decide(b"o1", b"payload", 0.0, **kw) == "all"
    assert relays.decide(b"o1", b"payload", 10.0, **kw) == "phones"  # unchanged, within the interval
    assert relays.decide(b"o1", b"changed", 20.0, **kw) == "phones"  # changed, but within 30 s
    assert relays.decide(b"o1", b"changed", 31.0, **kw) == "all"
    assert relays.decide(b"o1", b"changed", 92.0, **kw) == "all"  # the interval passed
    for i in range(10):
        relays.decide(bytes([i]), b"x" * 100_000, 100.0, **kw)
    assert relays.bounded_sizes()["announce_relays"] == (3, 3)


# ---------------------------------------------------------------- LinkOutput
def _output(mtu: int) -> LinkOutput:
    counters = MeshCounters()
    ident = _identity(1)
    out = LinkOutput(
        peer_id=ident.peer_id,
        settings=SETTINGS,
        limits=DEFAULT_LIMITS,
        rng=random.Random(1),
        paths=PathTable(ident.peer_id, path_ttl_s=60, max_hops=7, max_entries=100),
        peers=PeerTable(100),
        counters=counters,
        wall_offset_ms=1_700_000_000_000.0,
    )
    out.link_up("l1", mtu, 0.0, None)
    return out


def test_link_output_fragments_to_the_link_mtu() -> None:
    out = _output(200)
    out.emit(["l1"], out.packet(MessageType.MESSAGE, bytes(range(256)) * 4, 1.0))
    frames = out.take()
    assert len(frames) > 1 and all(len(f) <= 200 for _, f in frames)
    frag = decode_fragment_untrusted(decode_packet_untrusted(frames[0][1]).payload)
    assert frag.total == len(frames) and frag.original_type == MessageType.MESSAGE


def test_link_output_drops_and_counts_what_it_cannot_encode() -> None:
    out = _output(64)
    out.emit(["l1"], out.packet(MessageType.MESSAGE, random.Random(2).randbytes(70_000), 1.0))  # > v1's 64 KiB
    out.emit(["l1"], out.packet(MessageType.MESSAGE, random.Random(3).randbytes(40_000), 1.0))  # > 256 fragments
    assert out.take() == []
    assert out.counters.unencodable == 2


# ---------------------------------------------------------------- PrivateDelivery
class _Host:
    """Records what private delivery sends; the peer's delivery receives it as packets from us."""

    def __init__(self, me: bytes) -> None:
        self.me = me
        self.sent: list[tuple[int, bytes, bytes, bool]] = []  # (type, payload, peer, flood)

    def send_directed(
        self, msg_type: int, payload: bytes, peer_id: bytes, now: float, *, flood: bool = False, tag: str | None = None
    ) -> list[str]:
        self.sent.append((msg_type, payload, peer_id, flood))
        return ["l1"]

    def hop_route(self, peer_id: bytes, now: float) -> bool:
        return False

    def routed(self, peer_id: bytes, now: float) -> bool:
        return True

    def send_on_link(self, link_id: str, msg_type: int, payload: bytes, peer_id: bytes, now: float) -> None:
        self.sent.append((msg_type, payload, peer_id, False))

    def peer_expiry_for(self, info: PeerInfo) -> float:
        return 60.0

    def seal_for_couriers(self, p: PendingMessage, now: float) -> None:
        raise AssertionError("not expected here")

    def session_established(self, peer_id: bytes, now: float) -> None:
        pass

    def peer_state(self, peer_id: bytes, signing_public_key: bytes, now: float, link_id: str = "") -> None:
        pass


def _delivery(ident: Identity, other: Identity) -> tuple[PrivateDelivery, _Host, deque[MeshEvent]]:
    host = _Host(ident.peer_id)
    peers = PeerTable(10)
    peers.upsert(PeerInfo(other.peer_id, other.noise_public, other.signing_public, "other", 0.0, 0.0, hops=1))
    events: deque[MeshEvent] = deque()
    d = PrivateDelivery(
        host=host,
        noise_private=ident.noise_private,
        peer_id=ident.peer_id,
        settings=SETTINGS,
        peers=peers,
        counters=MeshCounters(),
        events=events,
        app=AppChannel(random.Random(1)),
        hop_arq=False,
    )
    return d, host, events


def _carry(host: _Host, to: PrivateDelivery, now: float) -> int:
    """Hand what ``host`` sent to ``to`` as one-hop packets; the number of packets carried."""
    sent, host.sent = host.sent, []
    for msg_type, payload, _, _ in sent:
        pkt = Packet(1, msg_type, 7, 0, host.me, to.peer_id, (), payload, None, False)
        if msg_type == MessageType.NOISE_HANDSHAKE:
            to.on_handshake(pkt, now)
        else:
            to.on_encrypted(pkt, now)
    return len(sent)


def test_private_delivery_alone_handshakes_delivers_and_settles_on_the_ack() -> None:
    a_id, b_id = _identity(1), _identity(2)
    a, a_host, a_events = _delivery(a_id, b_id)
    b, b_host, b_events = _delivery(b_id, a_id)
    a.queue_private("M1", b_id.peer_id, "hello", 0.0)
    assert a.next_deadline() is not None  # the handshake's deadline and the retry
    while _carry(a_host, b, 0.1) + _carry(b_host, a, 0.1):
        a.on_timer(0.1)
    received = [e for e in b_events if isinstance(e, MessageReceived)]
    assert [(e.message_id, e.text, e.private) for e in received] == [("M1", "hello", True)]
    assert list(a_events) == [DeliveryAcked("M1", b_id.peer_id)]
    assert len(a.pending) == 0 and a.sessions.session(b_id.peer_id) is not None


def test_private_delivery_retries_on_its_timer_and_fails_after_the_expiry() -> None:
    a_id, b_id = _identity(1), _identity(2)
    settings = dataclasses.replace(SETTINGS, private_expiry_s=30.0)
    a, a_host, a_events = _delivery(a_id, b_id)
    a.settings = settings
    a.queue_private("M1", b_id.peer_id, "hello", 0.0)
    handshakes = 0
    now = 0.0
    while (t := a.next_deadline()) is not None and t < 100:
        now = t
        a.on_timer(now)
        handshakes += sum(1 for s in a_host.sent if s[0] == MessageType.NOISE_HANDSHAKE)
        a_host.sent.clear()
    assert handshakes >= 2  # the peer never answers: handshakes are retried on the timer
    assert [type(e).__name__ for e in a_events] == ["PrivateFailed"] and now >= 30.0
    assert len(a.pending) == 0


# ---------------------------------------------------------------- OriginLimiter
def test_origin_limiter_bounds_each_origin_and_the_total() -> None:
    from node.routing.ratelimit import OriginLimiter

    lim = OriginLimiter(per_origin_per_s=1.0, burst=2.0, global_per_s=1.0, global_burst=5.0, max_origins=3)
    assert [lim.allow(b"a", 0.0) for _ in range(3)] == [True, True, False]  # a's burst of 2
    assert lim.allow(b"a", 1.0)  # refilled one token in 1 s
    assert sum(lim.allow(bytes([i]), 1.0) for i in range(10)) == 3  # then the global bucket (5, +1/s) is empty
    assert len(lim) == 3  # origins remembered: bounded
