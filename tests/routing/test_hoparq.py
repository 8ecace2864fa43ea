"""Hop-by-hop acks and retransmission (node.routing.hoparq) between mesh cores.

Most tests drive real :class:`MeshCore` instances through :class:`Wire`, a small event loop whose links deliver
every frame after 10 ms unless the test's filter drops it, and which records every frame put on a link (so a test
sees retransmissions and acks as they go on the air). The lossy-line test uses the simulator (node.sim); one test
runs real Nodes over memory links.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import nacl.signing
import pytest
import trio
import trio.testing

from node.identity import Identity
from node.routing.dedupe import dedupe_key
from node.routing.hoparq import (
    ACK_DIGEST_BYTES,
    HOP_ACK_CAPABILITY,
    RTO_MAX_S,
    RTO_MIN_S,
    HopArqTable,
    HopEntry,
    ack_digest,
)
from node.routing.mesh import MeshCore, MessageReceived
from node.routing.meshbase import SETTLED_ANNOUNCE_CAPABILITY
from node.routing.settings import MeshSection
from node.sim import LinkModel, Simulation, line
from node.transports.memory import Faults
from node.wire import (
    DEFAULT_LIMITS,
    MessageType,
    Packet,
    decode_announce_untrusted,
    decode_packet_untrusted,
    encode_packet,
)
from tests.routing.harness import EPOCH_MS, start_mesh
from tests.routing.test_neighbours import SIM_TIMEOUT_S

LATENCY_S = 0.01
WARM_S = 40.0  # two announce rounds: every node knows the topology of a short line


@dataclass(frozen=True)
class Sent:
    at: float
    src: int
    dst: int
    frame: bytes
    pkt: Packet


@dataclass
class Wire:
    """Cores on point-to-point links, in simulated time. ``drop(sent)`` decides a frame's fate."""

    cores: list[MeshCore]
    drop: Callable[[Sent], bool] = lambda s: False
    now: float = 0.0
    sent: list[Sent] = field(default_factory=list)
    received: list[tuple[int, MessageReceived]] = field(default_factory=list)
    _peer: dict[tuple[int, str], int] = field(default_factory=dict)
    _heap: list[tuple[float, int, int, str, bytes]] = field(default_factory=list)
    _seq: int = 0

    def connect(self, i: int, j: int, mtu: int = 512) -> str:
        link_id = f"{i}-{j}"
        self._peer[(i, link_id)], self._peer[(j, link_id)] = j, i
        self.cores[i].link_up(link_id, mtu, self.now)
        self.cores[j].link_up(link_id, mtu, self.now)
        self._drain(i)
        self._drain(j)
        return link_id

    def send_private(self, i: int, j: int, text: str) -> str:
        message_id = self.cores[i].send_private(self.cores[j].peer_id, text, self.now)
        self._drain(i)
        return message_id

    def link_down(self, i: int, link_id: str) -> None:
        self.cores[i].link_down(link_id, self.now)
        self._drain(i)

    def _drain(self, i: int) -> None:
        core = self.cores[i]
        for link_id, frame in core.frames_to_send():
            j = self._peer[(i, link_id)]
            s = Sent(self.now, i, j, frame, decode_packet_untrusted(frame))
            self.sent.append(s)
            if not self.drop(s):
                self._seq += 1
                heapq.heappush(self._heap, (self.now + LATENCY_S, self._seq, j, link_id, frame))
        while (ev := core.next_event()) is not None:
            if isinstance(ev, MessageReceived):
                self.received.append((i, ev))

    def run_until(self, t_end: float) -> None:
        while True:
            timers = [(t, i) for i, c in enumerate(self.cores) if (t := c.get_timer()) is not None]
            t_timer, who = min(timers) if timers else (float("inf"), -1)
            t_frame = self._heap[0][0] if self._heap else float("inf")
            t = min(t_timer, t_frame)
            if t > t_end:
                break
            self.now = max(self.now, t)
            if t_frame <= t_timer:
                _, _, j, link_id, frame = heapq.heappop(self._heap)
                self.cores[j].receive_frame(link_id, frame, self.now)
                self._drain(j)
            else:
                self.cores[who].handle_timer(self.now)
                self._drain(who)
        self.now = t_end

    def of_type(self, t: int, src: int | None = None, dst: int | None = None, since: float = 0.0) -> list[Sent]:
        return [
            s
            for s in self.sent
            if s.pkt.type == t and s.at >= since and (src is None or s.src == src) and (dst is None or s.dst == dst)
        ]


def make_cores(n: int, *, seed: int = 1, **mesh: object) -> list[MeshCore]:
    cores = []
    for i in range(n):
        rng = random.Random(seed * 1000 + i)
        identity = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
        settings = dataclasses.replace(MeshSection(), **mesh)  # type: ignore[arg-type]
        cores.append(MeshCore(identity, settings, DEFAULT_LIMITS, f"n{i}", EPOCH_MS, rng))
    return cores


def line_of(cores: list[MeshCore]) -> tuple[Wire, list[str]]:
    wire = Wire(cores)
    links = [wire.connect(i, i + 1) for i in range(len(cores) - 1)]
    wire.run_until(WARM_S)
    return wire, links


def is_private(s: Sent) -> bool:
    return s.pkt.type in (MessageType.NOISE_HANDSHAKE, MessageType.NOISE_ENCRYPTED)


# ---------------------------------------------------------------- on the air
def test_our_announce_carries_the_capability_bit_and_bitchat_bits_stay_clear() -> None:
    wire, _ = line_of(make_cores(2))
    ann = decode_announce_untrusted(wire.of_type(MessageType.ANNOUNCE, src=0)[-1].pkt.payload)
    assert ann.capabilities == HOP_ACK_CAPABILITY | SETTLED_ANNOUNCE_CAPABILITY == 1 << 32 | 1 << 33
    assert ann.capabilities & 0x7FF == 0  # BitChat's bits 0-10 (BITCHAT.md §2.1) are not claimed
    tlv = wire.of_type(MessageType.ANNOUNCE, src=0)[-1].pkt.payload
    assert bytes([5, 5, 0, 0, 0, 0, 3]) in tlv  # TLV 05: UInt64 little-endian, trailing zero bytes dropped
    plain, _ = line_of(make_cores(2, hop_retries=0))
    plain_caps = decode_announce_untrusted(plain.of_type(MessageType.ANNOUNCE, src=0)[-1].pkt.payload).capabilities
    assert plain_caps == SETTLED_ANNOUNCE_CAPABILITY  # no hop-ack bit


def _burst(retries: int) -> tuple[Wire, list[MeshCore], float, set[bytes]]:
    """Node 0 sends to node 3 over 1 and 2; for one second the link 1 -> 2 loses the first copy of each private
    frame (a loss burst)."""
    cores = make_cores(4, hop_retries=retries)
    wire, _ = line_of(cores)
    start = wire.now
    lost: set[bytes] = set()

    def drop(s: Sent) -> bool:
        if is_private(s) and s.src == 1 and s.dst == 2 and s.frame not in lost and s.at < start + 1.0:
            lost.add(s.frame)
            return True
        return False

    wire.drop = drop
    wire.send_private(0, 3, "over three hops")
    return wire, cores, start, lost


def test_a_routed_message_is_acked_hop_by_hop_and_a_lost_frame_is_resent() -> None:
    wire, cores, start, lost = _burst(5)
    wire.run_until(start + 1.0)
    assert [(i, ev.text) for i, ev in wire.received] == [(3, "over three hops")]
    # Every frame relay 1 lost towards 2 went out again, byte for byte, on the same link — and was acked then.
    resent = [s for s in wire.sent if s.src == 1 and s.dst == 2 and s.frame in lost]
    assert lost and len(resent) == 2 * len(lost)
    acks = wire.of_type(MessageType.HOP_ACK, since=start)
    assert acks and all(a.pkt.ttl == 1 and a.pkt.recipient_id == cores[a.dst].peer_id for a in acks)
    assert all(a.pkt.sender_id == cores[a.src].peer_id and len(a.pkt.payload) == ACK_DIGEST_BYTES for a in acks)
    # Each hop acknowledges what it got: 0 <- 1 <- 2 <- 3 for the message, and back for the handshake and ack.
    assert {(a.src, a.dst) for a in acks} == {(1, 0), (2, 1), (3, 2), (0, 1), (1, 2), (2, 3)}
    assert sum(c.counters.hop_retransmits for c in cores) == len(lost)
    wire.run_until(start + 10.0)
    assert sum(c.counters.hop_give_ups for c in cores) == 0
    assert all(len(c.hoparq) == 0 for c in cores)  # everything was acknowledged
    assert sum(c.counters.sent_flooded for c in cores) == 0  # no end-to-end escalation was needed


def test_without_hop_acks_the_same_loss_waits_for_the_end_to_end_retry() -> None:
    wire, cores, start, lost = _burst(0)
    wire.run_until(start + 5.0)
    assert lost and not wire.of_type(MessageType.HOP_ACK)
    assert Counter(s.frame for s in wire.sent if s.src == 1 and is_private(s)).most_common(1)[0][1] == 1
    assert sum(c.counters.hop_tracked + c.counters.hop_retransmits for c in cores) == 0
    assert wire.received == []  # the lost handshake message costs the 5 s handshake timeout, then a flood ...
    wire.run_until(start + 30.0)
    assert [(i, ev.text) for i, ev in wire.received] == [(3, "over three hops")]  # ... which gets through
    assert sum(c.counters.sent_flooded for c in cores) > 0


def test_a_resent_duplicate_is_acked_again_but_relayed_and_delivered_once() -> None:
    cores = make_cores(3)
    wire, _ = line_of(cores)
    dropped_acks: list[Sent] = []

    def drop_relays_first_acks(s: Sent) -> bool:  # node 1's first two acks of node 0's first frame
        if s.pkt.type != MessageType.HOP_ACK or s.src != 1 or s.dst != 0 or len(dropped_acks) >= 2:
            return False
        if dropped_acks and s.pkt.payload != dropped_acks[0].pkt.payload:
            return False
        dropped_acks.append(s)
        return True

    wire.drop = drop_relays_first_acks
    start = wire.now
    wire.send_private(0, 2, "once only")
    wire.run_until(start + 10.0)
    assert [(i, ev.text) for i, ev in wire.received] == [(2, "once only")]
    assert len(dropped_acks) == 2
    first = wire.of_type(MessageType.NOISE_HANDSHAKE, src=0, dst=1, since=start)
    # Node 0's first handshake frame went out three times (two acks lost); node 1 acked every copy ...
    copies = [s for s in first if s.frame == first[0].frame]
    assert len(copies) == 3
    digest = ack_digest(dedupe_key(first[0].pkt.sender_id, first[0].pkt.timestamp_ms, 0x10, first[0].pkt.payload))
    assert len([a for a in wire.of_type(MessageType.HOP_ACK, src=1, dst=0) if a.pkt.payload == digest]) == 3
    # ... but passed it on once.
    handshakes_on = wire.of_type(MessageType.NOISE_HANDSHAKE, src=1, dst=2)
    onward = [s for s in handshakes_on if s.pkt.payload == first[0].pkt.payload]
    assert len(onward) == 1
    assert cores[1].counters.duplicate >= 2 and cores[0].counters.hop_retransmits == 2


def test_a_neighbour_without_the_capability_gets_no_hop_ack_and_no_retransmission() -> None:
    # Node 1 is a core without hop ARQ (as a BitChat phone: its announce lacks the bit); 0 and 2 have it.
    cores = make_cores(3)
    cores[1] = make_cores(2, hop_retries=0)[1]
    wire, _ = line_of(cores)
    assert not cores[0].peers.get(cores[1].peer_id).capabilities & HOP_ACK_CAPABILITY  # type: ignore[union-attr,operator]
    start = wire.now
    wire.send_private(0, 2, "through a plain relay")
    wire.send_private(2, 0, "and back")
    wire.run_until(start + 20.0)
    assert sorted((i, ev.text) for i, ev in wire.received) == [(0, "and back"), (2, "through a plain relay")]
    assert [s for s in wire.sent if s.pkt.type == MessageType.HOP_ACK] == []
    assert [s for s in wire.sent if s.dst == 1 and s.pkt.type == MessageType.HOP_ACK] == []
    assert all(c.counters.hop_tracked == 0 and c.counters.hop_retransmits == 0 for c in cores)


def test_the_flooding_baseline_never_uses_hop_acks() -> None:
    cores = make_cores(3, routing="flood")
    wire, _ = line_of(cores)
    wire.send_private(0, 2, "flooded")
    wire.run_until(wire.now + 10.0)
    assert [ev.text for _, ev in wire.received] == ["flooded"]
    assert not wire.of_type(MessageType.HOP_ACK)
    announces = wire.of_type(MessageType.ANNOUNCE)
    assert not any((decode_announce_untrusted(s.pkt.payload).capabilities or 0) & HOP_ACK_CAPABILITY for s in announces)


def test_a_ciphertext_that_overtakes_its_handshakes_last_message_waits_for_it() -> None:
    cores = make_cores(3)
    wire, _ = line_of(cores)
    msg3: list[Sent] = []

    def drop_first_message_3(s: Sent) -> bool:  # XX message 3 is 64 bytes: node 1 loses its first copy
        if s.pkt.type == MessageType.NOISE_HANDSHAKE and len(s.pkt.payload) == 64 and s.src == 1 and not msg3:
            msg3.append(s)
            return True
        return False

    wire.drop = drop_first_message_3
    start = wire.now
    wire.send_private(0, 2, "patience")
    wire.run_until(start + 1.0)
    assert msg3 and [(i, ev.text) for i, ev in wire.received] == [(2, "patience")]
    c = cores[2].counters
    assert c.early_ciphertext >= 1 and c.decrypt_failed == 0  # held, then opened: no new handshake
    assert sum(core.counters.sent_flooded for core in cores) == 0


def test_a_flooded_handshake_is_answered_along_a_source_route() -> None:
    for retries, routed in ((5, True), (0, False)):
        cores = make_cores(4, hop_retries=retries)
        wire, _ = line_of(cores)
        start = wire.now
        cores[0].delivery.start_handshake(cores[3].peer_id, wire.now, flood=True)  # as after a lost routed attempt
        wire._drain(0)
        wire.run_until(start + 1.0)
        replies = wire.of_type(MessageType.NOISE_HANDSHAKE, src=3, since=start)
        assert replies and bool(replies[0].pkt.route) is routed
        assert cores[0].sessions.session(cores[3].peer_id) is not None


def test_fragments_are_acked_and_resent_one_by_one() -> None:
    cores = make_cores(3)
    wire = Wire(cores)
    for i in range(2):
        wire.connect(i, i + 1, mtu=200)  # a 256-byte padded Noise frame needs two fragments
    wire.run_until(WARM_S)
    lost: set[bytes] = set()

    def drop_every_other_new_fragment(s: Sent) -> bool:  # relay 1 loses its 1st, 3rd, ... distinct fragment
        if s.pkt.type != MessageType.FRAGMENT or s.src != 1 or s.frame in lost or s.frame in seen:
            return False
        seen.add(s.frame)
        if len(seen) % 2:
            lost.add(s.frame)
            return True
        return False

    seen: set[bytes] = set()
    wire.drop = drop_every_other_new_fragment
    start = wire.now
    wire.send_private(0, 2, "x" * 200)
    wire.run_until(start + 3.0)
    assert [(i, ev.text) for i, ev in wire.received] == [(2, "x" * 200)]
    fragments = wire.of_type(MessageType.FRAGMENT, since=start)
    assert lost and all(bool(f.pkt.route) for f in fragments)
    # Only the lost fragments went out again (each once), not the whole frame.
    assert cores[1].counters.hop_retransmits == len(lost)
    resent = Counter(f.frame for f in fragments if f.src == 1)
    assert {frame for frame, n in resent.items() if n > 1} == lost
    assert all(len(c.hoparq) == 0 for c in cores)


# ---------------------------------------------------------------- acks are local and checked
def _hop_ack(sender: MeshCore, recipient: MeshCore, payload: bytes, now: float, ttl: int = 1) -> bytes:
    pkt = Packet(
        version=1,
        type=MessageType.HOP_ACK,
        ttl=ttl,
        timestamp_ms=int(EPOCH_MS + now * 1000),
        sender_id=sender.peer_id,
        recipient_id=recipient.peer_id,
        payload=payload,
    )
    return encode_packet(pkt)


def test_a_hop_ack_is_never_relayed_and_a_forged_or_misdirected_one_is_ignored() -> None:
    cores = make_cores(3)
    wire, links = line_of(cores)
    # An ack for node 2 with TTL 7 arriving at node 1: not relayed (and not taken by node 1 either).
    before = len(wire.sent)
    cores[1].receive_frame(links[0], _hop_ack(cores[0], cores[2], b"\x01" * 16, wire.now, ttl=7), wire.now)
    wire._drain(1)
    wire.run_until(wire.now + 1.0)
    assert not [s for s in wire.sent[before:] if s.pkt.type == MessageType.HOP_ACK]
    assert cores[1].counters.hop_acks_ignored == 1

    # Node 0 keeps its first frame to node 2 while its acks are withheld.
    wire.drop = lambda s: s.pkt.type == MessageType.HOP_ACK
    wire.send_private(0, 2, "hello")
    entries = list(cores[0].hoparq._entries.values())
    assert len(entries) == 1
    digest = entries[0].digest
    # A forged digest, the right digest from the wrong peer, and the right digest on the wrong link: all ignored.
    cores[0].receive_frame(links[0], _hop_ack(cores[1], cores[0], b"\x02" * 16, wire.now), wire.now)
    cores[0].receive_frame(links[0], _hop_ack(cores[2], cores[0], digest, wire.now), wire.now)
    cores[0].receive_frame("nowhere", _hop_ack(cores[1], cores[0], digest, wire.now), wire.now)
    assert cores[0].counters.hop_acks_ignored == 3 and len(cores[0].hoparq) == 1
    # The genuine one settles it.
    cores[0].receive_frame(links[0], _hop_ack(cores[1], cores[0], digest, wire.now), wire.now)
    assert cores[0].counters.hop_acks_received == 1 and len(cores[0].hoparq) == 0


def test_a_silent_first_hop_is_given_up_and_the_message_fails_over_to_a_flood() -> None:
    # A diamond: 0 reaches 3 through 1 or through 2.
    cores = make_cores(4, hop_retries=3)
    wire = Wire(cores)
    links = {(i, j): wire.connect(i, j) for i, j in ((0, 1), (0, 2), (1, 3), (2, 3))}
    wire.run_until(WARM_S)
    route = cores[0].paths.route(cores[3].peer_id, wire.now)
    assert route is not None and route.hops == 2
    via = [c.peer_id for c in cores].index(route.via[0])
    # A session first (the handshake and the peers' authenticated state go through), then the chosen first hop
    # loses every routed ciphertext from 0.
    wire.send_private(0, 3, "hello")
    wire.run_until(wire.now + 5.0)
    assert [(i, ev.text) for i, ev in wire.received] == [(3, "hello")]
    c = cores[0].counters
    before = (c.hop_retransmits, c.hop_give_ups, c.hop_failovers, c.sent_flooded, c.private_retries)
    wire.drop = lambda s: (s.src, s.dst, s.pkt.type) == (0, via, MessageType.NOISE_ENCRYPTED) and bool(s.pkt.route)
    start = wire.now
    wire.send_private(0, 3, "around the hole")
    wire.run_until(start + 2.5)  # before the end-to-end resend (mesh.private_retry_interval_s = 3)
    after = (c.hop_retransmits, c.hop_give_ups, c.hop_failovers, c.sent_flooded, c.private_retries)
    delta = tuple(a - b for a, b in zip(after, before, strict=True))
    assert delta[:3] == (3, 1, 1)
    assert [(i, ev.text) for i, ev in wire.received] == [(3, "hello"), (3, "around the hole")]
    assert delta[3:] == (1, 0)  # one flooded send; the failover send is not an extra attempt
    routed = [
        s
        for s in wire.sent
        if s.src == 0 and s.pkt.type == MessageType.NOISE_ENCRYPTED and s.pkt.route and s.at >= start
    ]
    assert len(routed) == 4 and routed[-1].at - routed[0].at < 2.0  # 1 + 3 resends, then given up
    assert cores[0].paths.links[links[(0, via)]].loss > 0.2  # the link's loss estimate rose


def test_link_down_drops_the_links_entries() -> None:
    cores = make_cores(2)
    wire, links = line_of(cores)
    wire.drop = lambda s: s.pkt.type == MessageType.HOP_ACK
    wire.send_private(0, 1, "hi")
    assert len(cores[0].hoparq) == 1
    wire.link_down(0, links[0])
    assert len(cores[0].hoparq) == 0 and cores[0].hoparq.next_deadline() is None


# ---------------------------------------------------------------- the table
def _entry(link: str, n: int, size: int = 10, due: float = 1.0) -> HopEntry:
    return HopEntry(link, bytes([n]) * ACK_DIGEST_BYTES, b"x" * size, sent_at=0.0, due=due, tries=1)


def test_the_table_is_bounded_by_entries_and_bytes_and_counts_overflow() -> None:
    t = HopArqTable(max_entries=2, max_bytes=100)
    assert t.track(_entry("a", 1)) and t.track(_entry("a", 2))
    assert not t.track(_entry("a", 3))
    assert t.overflows == 1 and len(t) == 2
    t = HopArqTable(max_entries=10, max_bytes=100)
    assert t.track(_entry("a", 1, size=60))
    assert not t.track(_entry("a", 2, size=60))
    assert t.overflows == 1 and t.queued_bytes == 60
    assert t.ack("a", bytes([1]) * ACK_DIGEST_BYTES, 0.5) is not None and t.queued_bytes == 0


def test_a_full_table_sends_unprotected_and_counts_it() -> None:
    cores = make_cores(2)
    wire, _ = line_of(cores)
    cores[0].output.hoparq = HopArqTable(max_entries=0)
    wire.send_private(0, 1, "hi")
    wire.run_until(wire.now + 5.0)
    assert [ev.text for _, ev in wire.received] == ["hi"]
    assert cores[0].counters.hop_table_full >= 1 and cores[0].counters.hop_tracked == 0


def test_deadlines_follow_the_rtt_with_a_floor_a_ceiling_and_backoff() -> None:
    t = HopArqTable()
    assert t.rto("a", None, 1) == 0.5  # nothing measured yet
    assert t.rto("a", 0.01, 1) == RTO_MIN_S
    assert [t.rto("a", 0.2, k) for k in (1, 2, 3)] == pytest.approx([0.6, 1.2, 2.4])
    assert t.rto("a", 0.2, 9) == RTO_MAX_S
    t.track(_entry("a", 1, due=5.0))
    t.track(_entry("a", 2, due=3.0))
    assert t.next_deadline() == 3.0
    assert t.ack("a", bytes([1]) * ACK_DIGEST_BYTES, 0.1) is not None  # first transmission: an RTT sample
    assert t.rto("a", 5.0, 1) == pytest.approx(3 * 0.1)  # the hop-ack RTT wins over the ping RTT
    assert [e.digest[0] for e in t.pop_due(10.0)] == [2]


# ---------------------------------------------------------------- at scale, and real nodes
def _lossy_line(retries: int) -> Simulation:
    topo = line(8)
    sim = Simulation(topo, LinkModel(), dataclasses.replace(MeshSection(), hop_retries=retries), seed=4)
    sim.run_until(WARM_S)  # lossless while the path tables fill
    for a, b in topo.edges:
        sim.set_link_model(a, b, LinkModel(loss=0.3))
        sim.set_link_model(b, a, LinkModel(loss=0.3))
    for k in range(5):
        sim.send_private(0, 7, f"m{k}")
        sim.run_until(sim.now + 1.0)
    sim.run_until(sim.now + 30.0)
    return sim


def test_a_seven_hop_line_at_30_percent_loss_delivers_with_hop_acks() -> None:
    arq, plain = _lossy_line(5).report(), _lossy_line(0).report()
    assert arq.unicast_delivered == 5
    assert arq.core_counters["hop_retransmits"] > 0 and arq.frames_by_type.get("hop_ack", 0) > 0
    # Without hop acks, 7 hops at 30 % loss: 0.7^7 = 8 % per crossing, and a message needs five crossings.
    assert plain.unicast_delivered < 5
    assert plain.core_counters["hop_tracked"] == 0 and "hop_ack" not in plain.frames_by_type


def _routed(core: MeshCore | None, target: bytes) -> bool:
    route = core.paths.route(target, trio.current_time()) if core is not None else None
    return route is not None and bool(route.via)


async def test_real_nodes_over_lossy_memory_links_ack_and_resend_on_the_air(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await start_mesh(nursery, tmp_path, 3, seed=5)
    for i in range(2):
        mesh.connect(i, i + 1, Faults(drop=0.3, latency_s=0.01))
    a, c = mesh.nodes[0], mesh.nodes[2]
    with trio.fail_after(SIM_TIMEOUT_S):
        for i, j in ((0, 2), (2, 0)):  # both ends know the topology: their frames carry a source route
            await mesh.wait_until_known(i, j)
            await mesh.nodes[i].wait_until(partial(_routed, mesh.nodes[i].core, mesh.nodes[j].identity.peer_id))
        mesh.net.tap = []
        ids = [a.send_private(c.identity.peer_id_hex, f"note {k}") for k in range(3)]
        for message_id in ids:
            await a.wait_until(lambda m=message_id: a.outgoing[m].state == "delivered")  # type: ignore[misc]
    tap = mesh.net.tap
    frames = [(src, dst, f, decode_packet_untrusted(f)) for src, dst, f in tap]
    acks = [(src, dst, p) for src, dst, _, p in frames if p.type == MessageType.HOP_ACK]
    assert acks and all(p.ttl == 1 for _, _, p in acks)
    noise = [(src, dst, f) for src, dst, f, p in frames if p.type in (0x10, 0x11)]
    assert len(noise) > len(set(noise))  # some Noise frames went on the same link twice, byte for byte
    # `village status --json` shows the counters (Node.status is what the control socket returns).
    counters = [node.status()["counters"] for node in mesh.nodes]
    assert all(c["hop_acks_sent"] > 0 and c["hop_acks_received"] > 0 for c in counters)
    assert sum(c["hop_retransmits"] for c in counters) > 0
