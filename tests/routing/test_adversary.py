"""An adversary that keeps looking (issue 13, item 6): a hypothesis ``RuleBasedStateMachine`` drives a victim
:class:`MeshCore` V, with two honest neighbours A and B (A - V - B), through its public API only
(``receive_frame``, ``handle_timer``, ``link_up``/``link_down``, ``send_private``), interleaving honest private
messages with hostile traffic from many free identities on attacker links (:class:`node.sim.hostile.Forger`):
signed and unsigned announces, announce floods, fragments within fragments, partial fragment sets, courier
envelopes, pings, msg1 floods, handshake junk, ciphertext from nobody, replays of recorded frames (with new TTLs),
random bytes, attacker links with tiny and huge MTUs.

After every step: no exception escaped (hypothesis fails the run if one does), every bounded structure is within
its bound (``MeshCore.bounded_sizes()`` when the core has it, else the bounds this file knows), the
``contained_bugs`` counter (when the core has it) is zero; and honest private messages between A, V and B are all
delivered once the air has settled.

Known defects (issue 13's review) that meshcore's branch fixes are **pending**: while ``MeshCore`` has no
``bounded_sizes`` the rules do not draw the inputs that trigger them (``PENDING_MESHCORE``), and each has an
``xfail(strict=True)`` reproduction below. Merging the fixes flips both: the rules start drawing them and the
xfail tests XPASS, which fails them, until their marker is removed.

Pending today (rule / input withheld -> what escapes today's core):

| rule | withheld input | today |
|---|---|---|
| nested_fragments | depth > 3 (up to 700) | RecursionError in receive_frame |
| courier | the same envelope twice with copies 255 | struct.error at the next meeting (copies > 255) |
| new_attack_link | MTU 20 / 23 / 30 / 64 | EncodeError "MTU leaves no room for a fragment chunk" (link_up, relays) |
| directed_elsewhere | frames of 2 KB..60 KB | EncodeError "> 256 fragments" relayed onto a small MTU (timer) |
| ping | 60 KB (flooded pong onto MTU 185) and 70 KB (v1 pong) payloads | EncodeError in receive_frame |
| compressed_public_bomb | a 1,000,000-byte compressed public message | invariant: text > max_public_text_chars |
| forged_msg1_from_honest | msg1 in A's or B's name | replaces the in-flight handshake (honest-delivery invariant) |
| evict_and_hijack | max_peers + 1 announces, then A's Noise key, our signing key | identity hijack (delivery) |
| within_bounds | (sessions have no bound today) | a msg1 flood grows the responder table without limit |
"""

from __future__ import annotations

import heapq
import os
import random
from collections import deque

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from node.routing.mesh import MeshCore, MessageReceived
from node.sim.hostile import Forger, with_ttl
from node.wire import MessageType
from tests.routing.test_hoparq import LATENCY_S, Wire, make_cores

# meshcore's branch (issue 13's routing-core fixes) adds MeshCore.bounded_sizes(); until it is merged the inputs
# that crash today's core are not drawn (each is reproduced by an xfail test below).
PENDING_MESHCORE = not hasattr(MeshCore, "bounded_sizes")

WARM_S = 40.0  # A - V - B know each other
SETTLE_S = 120.0  # honest private messages are delivered within this of simulated quiet time
RECORDED = 256  # frames kept for replays
SAFE_MTUS = (185, 247, 512, 4096, 65_535)
HOSTILE_MTUS = (20, 23, 30, 64)  # pending: too small to fragment onto (EncodeError today)
BIG_FRAME_BYTES = 60_000  # pending: relayed onto a small-MTU link it needs > 256 fragments (EncodeError today)

STEPS = {"n": 0, "rules": 0}  # hostile frames injected and rule steps run in this process (the slow test counts)


class HostileWire(Wire):
    """:class:`Wire`, plus attacker links on the victim whose output is recorded for replays and dropped."""

    def __init__(self, cores: list[MeshCore]) -> None:
        super().__init__(cores)
        self.attack_links: set[str] = set()
        self.recorded: deque[bytes] = deque(maxlen=RECORDED)

    def _drain(self, i: int) -> None:
        core = self.cores[i]
        kept = []
        for link_id, frame in core.frames_to_send():
            self.recorded.append(frame)
            if (i, link_id) in self._peer:
                kept.append((link_id, frame))
        for link_id, frame in kept:  # (not kept in self.sent: a long run would grow it without end)
            self._seq += 1
            heapq.heappush(self._heap, (self.now + LATENCY_S, self._seq, self._peer[(i, link_id)], link_id, frame))
        while (ev := core.next_event()) is not None:
            if isinstance(ev, MessageReceived):
                self.received.append((i, ev))


def bounds(core: MeshCore) -> dict[str, tuple[int, int]]:
    """name -> (current, bound) of every structure remote input can grow."""
    return core.bounded_sizes()


class Adversary(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.wire: HostileWire | None = None

    @initialize(seed=st.integers(0, 2**16))
    def start(self, seed: int) -> None:
        cores = make_cores(3, seed=1 + seed % 7)
        self.wire = HostileWire(cores)
        self.wire.connect(0, 1)
        self.wire.connect(0, 2)
        self.wire.run_until(WARM_S)
        self.v = cores[0]
        self.forger = Forger(self.v.peer_id, random.Random(seed), seed)
        self.expected: dict[str, int] = {}  # message ID -> receiving core
        self.n_links = 0
        self.attack_link(512)

    # ---------------------------------------------------------------- plumbing
    @property
    def now(self) -> float:
        assert self.wire is not None
        return self.wire.now

    def ts(self, skew_ms: int = 0) -> int:
        return self.v.wall_ms(self.now) + skew_ms

    def inject(self, frame: bytes, link: str | None = None) -> None:
        assert self.wire is not None
        links = sorted(self.wire.attack_links)
        link_id = link or (links[-1] if links else "0-1")
        self.v.receive_frame(link_id, frame, self.now)
        self.wire._drain(0)
        STEPS["n"] += 1

    def attack_link(self, mtu: int) -> None:
        assert self.wire is not None
        self.n_links += 1
        link_id = f"X{self.n_links}"
        self.wire.attack_links.add(link_id)
        self.v.link_up(link_id, mtu, self.now)
        self.wire._drain(0)

    # ---------------------------------------------------------------- links and time
    @rule(mtu=st.sampled_from(SAFE_MTUS + (() if PENDING_MESHCORE else HOSTILE_MTUS)))
    def new_attack_link(self, mtu: int) -> None:
        self.attack_link(mtu)

    @precondition(lambda self: len(self.wire.attack_links) > 1 if self.wire else False)
    @rule(data=st.data())
    def drop_attack_link(self, data: st.DataObject) -> None:
        assert self.wire is not None
        link = data.draw(st.sampled_from(sorted(self.wire.attack_links)))
        self.wire.attack_links.discard(link)
        self.v.link_down(link, self.now)
        self.wire._drain(0)

    @rule(dt=st.floats(0.0, 40.0))
    def advance(self, dt: float) -> None:
        assert self.wire is not None
        self.wire.run_until(self.now + dt)

    # ---------------------------------------------------------------- honest traffic
    @rule(pair=st.sampled_from([(1, 2), (2, 1), (1, 0), (0, 2), (2, 0)]), size=st.integers(1, 255))
    def honest_private(self, pair: tuple[int, int], size: int) -> None:
        assert self.wire is not None
        src, dst = pair
        core = self.wire.cores[src]
        if len(core.pending) >= min(core.settings.max_pending_per_peer, 8):
            return
        # As the daemon sends (Node.send_private): by full peer ID, known or not — an announce flood may have pushed
        # the peer out of the sender's table; the message must still get there.
        message_id = core.new_message_id()
        core.queue_private(message_id, self.wire.cores[dst].peer_id, "m" * size, self.now)
        self.wire._drain(src)
        self.expected[message_id] = dst

    @rule()
    def settle_and_check_delivery(self) -> None:
        """Quiet air for SETTLE_S: every honest private message sent so far is delivered."""
        assert self.wire is not None
        self.wire.run_until(self.now + SETTLE_S)
        got = {ev.message_id for _, ev in self.wire.received if ev.private}
        missing = {m: d for m, d in self.expected.items() if m not in got}
        assert not missing, f"honest private messages not delivered under attack: {missing}"

    # ---------------------------------------------------------------- hostile traffic
    @rule(who=st.integers(0, 5000), signed=st.booleans(), ttl=st.integers(0, 255), skew_s=st.integers(-200, 200))
    def announce(self, who: int, signed: bool, ttl: int, skew_s: int) -> None:
        nick = self.forger.rng.choice((None, "a", "\x1b[31mred", "3f2a9c01", "n1", "x" * 255))
        ident = self.forger.identity(who)
        neighbours = tuple(c.peer_id for c in self.wire.cores) if self.wire and who % 3 == 0 else ()
        frame = self.forger.announce(
            ident, self.ts(skew_s * 1000), ttl=ttl, signed=signed, nickname=nick, neighbours=neighbours
        )
        self.inject(frame)

    @rule(first=st.integers(0, 10**6), count=st.integers(1, 300))
    def announce_flood(self, first: int, count: int) -> None:
        for i in range(first, first + count):
            self.inject(self.forger.announce(self.forger.identity(i), self.ts()))

    @rule(depth=st.integers(1, 3 if PENDING_MESHCORE else 700))
    def nested_fragments(self, depth: int) -> None:
        # depth > 1 is ok today only while it stays shallow; 600 levels raise RecursionError (pending)
        self.inject(self.forger.nested_fragments(self.forger.random_id(), self.ts(), depth))

    @rule(count=st.integers(1, 200), total=st.integers(1, 10_000), chunk=st.integers(0, 1200), broadcast=st.booleans())
    def partial_fragments(self, count: int, total: int, chunk: int, broadcast: bool) -> None:
        sender = self.forger.random_id()
        for _ in range(count):
            self.inject(
                self.forger.partial_fragment(sender, self.ts(), total=total, chunk_bytes=chunk, broadcast=broadcast)
            )

    @rule(copies=st.integers(1, 255), twice=st.booleans(), to_honest=st.booleans())
    def courier(self, copies: int, twice: bool, to_honest: bool) -> None:
        assert self.wire is not None
        recipient = self.wire.cores[2].peer_id if to_honest else self.forger.random_id()
        sealed = self.forger.rng.randbytes(96)
        sender = self.forger.random_id()
        repeats = 2 if twice and (not PENDING_MESHCORE or copies <= 127) else 1  # 2 x 255 overflow: pending
        for _ in range(repeats):
            self.inject(self.forger.courier(sender, self.ts(), recipient=recipient, copies=copies, sealed=sealed))

    # pending: a 70 KB echo does not fit a v1 pong; a 60 KB one needs > 256 fragments on a small-MTU link
    PING_SIZES = (0, 8, 9, 10, 1000) + (() if PENDING_MESHCORE else (60_000, 70_000))

    @rule(size=st.sampled_from(PING_SIZES), ttl=st.integers(0, 9))
    def ping(self, size: int, ttl: int) -> None:
        self.inject(self.forger.ping(self.forger.random_id(), self.ts(), size, ttl=ttl))

    @rule(count=st.integers(1, 300))
    def msg1_flood(self, count: int) -> None:
        for _ in range(count):
            self.inject(self.forger.msg1(self.forger.random_id(), self.ts()))

    @precondition(lambda self: not PENDING_MESHCORE)
    @rule(victim=st.sampled_from((1, 2)))
    def forged_msg1_from_honest(self, victim: int) -> None:
        # pending: a forged msg1 "from A" replaces our in-flight handshake with A
        assert self.wire is not None
        self.inject(self.forger.msg1(self.wire.cores[victim].peer_id, self.ts()))

    @rule(n=st.integers(1, 50))
    def handshake_junk(self, n: int) -> None:
        for _ in range(n):
            self.inject(self.forger.handshake_junk(self.forger.random_id(), self.ts()))

    @rule(size=st.integers(0, 5000), n=st.integers(1, 50))
    def ciphertext_from_nobody(self, size: int, n: int) -> None:
        for _ in range(n):
            self.inject(self.forger.ciphertext(self.forger.random_id(), self.ts(), size))

    @rule(size=st.integers(0, 2000 if PENDING_MESHCORE else BIG_FRAME_BYTES))
    def directed_elsewhere(self, size: int) -> None:
        self.inject(self.forger.directed_elsewhere(self.forger.random_id(), self.ts(), size))

    @rule(size=st.integers(0, 3000))
    def unknown_type(self, size: int) -> None:
        self.inject(self.forger.unknown_type(self.forger.random_id(), self.ts(), size))

    @rule(size=st.integers(0, 3000))
    def garbage(self, size: int) -> None:
        self.inject(self.forger.garbage(size))

    @rule(who=st.integers(0, 5000), size=st.integers(1, 2000))
    def public_message(self, who: int, size: int) -> None:
        ident = self.forger.identity(who)
        self.inject(self.forger.announce(ident, self.ts()))
        self.inject(self.forger.public(ident, self.ts(), size))

    @rule(who=st.integers(0, 5000))
    def leave(self, who: int) -> None:
        ident = self.forger.identity(who)
        self.inject(self.forger.announce(ident, self.ts()))
        self.inject(self.forger.leave(ident, self.ts()))

    @precondition(lambda self: self.wire is not None and len(self.wire.recorded) > 0)
    @rule(data=st.data(), ttl=st.one_of(st.none(), st.integers(0, 255)), times=st.integers(1, 5))
    def replay(self, data: st.DataObject, ttl: int | None, times: int) -> None:
        assert self.wire is not None
        frames = list(self.wire.recorded)
        frame = frames[data.draw(st.integers(0, len(frames) - 1))]
        for _ in range(times):
            self.inject(frame if ttl is None else with_ttl(frame, ttl))

    @precondition(lambda self: not PENDING_MESHCORE)
    @rule(victim=st.sampled_from((1, 2)), first=st.integers(0, 10**6))
    def evict_and_hijack(self, victim: int, first: int) -> None:
        # pending: max_peers announces evict an honest peer; an announce with its Noise key and our signing key
        # then pins it to the attacker
        assert self.wire is not None
        for i in range(first, first + self.v.settings.max_peers + 1):
            self.inject(self.forger.announce(self.forger.identity(i), self.ts()))
        honest = self.wire.cores[victim]
        self.inject(
            self.forger.announce(
                self.forger.identity(first), self.ts(), noise_key=honest.identity.noise_public, nickname="hijack"
            )
        )

    @precondition(lambda self: not PENDING_MESHCORE)
    @rule()
    def compressed_public_bomb(self) -> None:
        # pending: a 1.2 KB frame becomes a 1.16 MB public message (no size check on receipt)
        ident = self.forger.identity(7)
        self.inject(self.forger.announce(ident, self.ts()))
        self.inject(self.forger.public(ident, self.ts(), 1_000_000))

    # ---------------------------------------------------------------- invariants
    @invariant()
    def within_bounds(self) -> None:
        STEPS["rules"] += 1  # (invariants run after every step)
        if self.wire is None:
            return
        over = {name: cb for name, cb in bounds(self.v).items() if cb[0] > cb[1]}
        assert not over, f"structures past their bound: {over}"

    @invariant()
    def no_contained_bugs(self) -> None:
        if self.wire is None:
            return
        assert getattr(self.v.counters, "contained_bugs", 0) == 0

    @invariant()
    def public_messages_within_the_send_limit(self) -> None:
        if self.wire is None or PENDING_MESHCORE:
            return
        limit = self.v.settings.max_public_text_chars
        big = [ev for _, ev in self.wire.received if not ev.private and len(ev.text) > limit]
        assert not big

    def teardown(self) -> None:
        if self.wire is not None and self.expected:
            self.settle_and_check_delivery()


def _run(max_examples: int, steps: int) -> None:
    run_state_machine_as_test(
        Adversary,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        ),
    )


def test_adversary_finds_no_way_in() -> None:
    _run(max_examples=10, steps=20)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_adversary_long_run() -> None:
    """A long deterministic run in the slow suite (same examples every time, so CI cannot flake): 100 examples of up
    to 100 rule steps, each followed by every invariant (~7,000 rule steps, 2-3 min on 2 cores).

    To hunt for new ways in, run it randomized and longer: ``VILLAGE_ADVERSARY_STEPS=100000 pytest -m slow -k
    adversary_long`` loops over fresh random examples until that many rule steps ran (~25 min on 2 cores)."""
    target = int(os.environ.get("VILLAGE_ADVERSARY_STEPS", "0"))
    start = STEPS["rules"]
    while True:
        run_state_machine_as_test(
            Adversary,
            settings=settings(
                max_examples=100,
                stateful_step_count=100,
                deadline=None,
                database=None,
                derandomize=not target,
                suppress_health_check=list(HealthCheck),
            ),
        )
        if STEPS["rules"] - start >= target:
            break
    assert STEPS["rules"] - start >= min(target or 5_000, 5_000)


# ---------------------------------------------------------------- known defects (pending on meshcore's fixes)
def _victim(mtu: int = 512) -> tuple[MeshCore, Forger]:
    [core] = make_cores(1)
    core.link_up("X", mtu, 0.0)
    core.frames_to_send()
    return core, Forger(core.peer_id, random.Random(1))


def _timers(core: MeshCore, until: float) -> None:
    while (t := core.get_timer()) is not None and t <= until:
        core.handle_timer(t)
        core.frames_to_send()


pending = pytest.mark.xfail(PENDING_MESHCORE, strict=True, reason="fixed on meshcore's branch (issue 13)")


@pending
def test_600_nested_fragments_are_dropped_not_recursed() -> None:
    core, forger = _victim()
    core.receive_frame("X", forger.nested_fragments(forger.random_id(), core.wall_ms(1.0), 600), 1.0)  # RecursionError


@pending
def test_courier_copies_that_overflow_a_byte_do_not_crash_the_handover() -> None:
    cores = make_cores(3)
    wire = HostileWire(cores)
    wire.connect(0, 1)
    wire.run_until(10.0)
    v = cores[0]
    forger = Forger(v.peer_id, random.Random(1))
    sealed = bytes(96)
    for _ in range(2):
        frame = forger.courier(cores[1].peer_id, v.wall_ms(wire.now), recipient=cores[2].peer_id, sealed=sealed)
        v.receive_frame("0-1", frame, wire.now)
    wire.connect(0, 2)
    wire.run_until(40.0)  # struct.error: meeting the recipient packs 510 copies into one byte


@pending
def test_a_ping_whose_echo_cannot_be_encoded_is_dropped() -> None:
    core, forger = _victim(65_535)
    core.receive_frame("X", forger.ping(forger.random_id(), core.wall_ms(1.0), 70_000), 1.0)  # EncodeError (v1 pong)
    assert not [f for _, f in core.frames_to_send() if len(f) > 65_535]


@pending
def test_a_big_ping_echoed_onto_a_small_mtu_link_does_not_crash() -> None:
    # found by the adversary's long run: a 60 KB ping with TTL 0 (not a neighbour's probe) is answered by a
    # directed pong that floods onto every link, and at MTU 185 it needs 423 fragments (EncodeError)
    core, forger = _victim(65_535)
    core.link_up("S", 185, 0.5)
    core.frames_to_send()
    core.receive_frame("X", forger.ping(forger.random_id(), core.wall_ms(1.0), 60_000, ttl=0), 1.0)
    _timers(core, 5.0)


@pending
def test_relaying_a_big_frame_onto_a_tiny_mtu_link_does_not_crash_the_timer() -> None:
    core, forger = _victim(65_535)
    core.link_up("T", 30, 0.5)
    core.receive_frame("X", forger.directed_elsewhere(forger.random_id(), core.wall_ms(1.0), BIG_FRAME_BYTES), 1.0)
    _timers(core, 5.0)  # EncodeError inside handle_timer


@pending
def test_received_public_messages_are_held_to_the_send_limit() -> None:
    core, forger = _victim()
    ident = forger.identity(1)
    core.receive_frame("X", forger.announce(ident, core.wall_ms(1.0)), 1.0)
    core.receive_frame("X", forger.public(ident, core.wall_ms(1.0), 1_000_000), 1.0)
    texts = [ev.text for ev in iter(core.next_event, None) if isinstance(ev, MessageReceived)]
    assert all(len(t) <= core.settings.max_public_text_chars for t in texts)


@pending
def test_a_msg1_flood_keeps_the_session_table_bounded() -> None:
    core, forger = _victim()
    for _ in range(5_000):
        core.receive_frame("X", forger.msg1(forger.random_id(), core.wall_ms(1.0)), 1.0)
    assert all(cur <= bound for cur, bound in bounds(core).values())
    assert any(word in name for name in bounds(core) for word in ("session", "handshake", "responder"))


def test_no_frame_type_escapes_the_recorded_wire() -> None:
    """The harness itself: honest A - V - B deliver with no attack (so a failure above is the attack's doing)."""
    cores = make_cores(3)
    wire = HostileWire(cores)
    wire.connect(0, 1)
    wire.connect(0, 2)
    wire.run_until(WARM_S)
    m = wire.send_private(1, 2, "hello")
    wire.run_until(WARM_S + 30)
    assert [ev.message_id for i, ev in wire.received if i == 2 and ev.private] == [m]
    assert MessageType.NOISE_ENCRYPTED in {f[1] for f in wire.recorded if len(f) > 1}
