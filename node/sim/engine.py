"""A seeded discrete-event simulator of N :class:`~node.routing.mesh.MeshCore` in one process.

The cores are the daemon's own sans-IO cores; this module is their adapter, the way ``node.node`` is over
real links — but time is a float on an event heap instead of trio's clock, so 1,000 nodes run in one
thread without a task per link. Three kinds of event share one heap, ordered by (simulated time, sequence):

* a frame arriving at the far end of a link direction (:mod:`node.sim.links` models loss, latency, jitter,
  bandwidth with a bounded FIFO, MTU);
* a core's timer (``get_timer`` re-read after every input; stale heap entries are skipped);
* a scheduled call: a link or node going down/up (churn, partitions) or a user's action.

Links come up at uniform times within ``link_up_spread_s`` (1 s) of the start, or, with ``join_window_s``, nodes join
at uniform times within that window and each link comes up within the spread after both its ends have joined.

After every input the core is drained as ``node.node`` drains it: frames go to their links, events are
turned into metrics (:mod:`node.sim.metrics`), the timer is re-armed. Everything random comes from the
seed — node keys and each core's ``rng`` from ``(seed, node)``, link faults from one link RNG — so a seed
reproduces a run event for event.

All nodes verify the same signed bytes, so signature checks go through :class:`VerifyCache`, keyed by the
frame with its TTL byte zeroed (BitChat signatures exclude the TTL) and the key: the answer is the codec's
own, computed once per distinct (packet, key). Likewise announce payloads are parsed once (:class:`AnnounceCache`)
and the set of an announce's neighbour list built once (:class:`NeighbourSets`): equal immutable values shared by
the nodes that hold them, which keeps memory per simulated node down (no behaviour depends on their identity).
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import nacl.signing

from node.errors import MeshError
from node.identity import Identity
from node.routing.mesh import (
    DeliveryAcked,
    MeshCore,
    MeshCounters,
    MeshEvent,
    MessageReceived,
    PeerAnnounced,
    PrivateFailed,
)
from node.routing.settings import MeshSection
from node.routing.timers import TIMER_FAILURE_PAUSE_S
from node.sim.errors import SimError
from node.sim.links import Direction, LinkModel, LinkStats
from node.sim.metrics import BroadcastRecord, SimReport, UnicastRecord, build_report
from node.sim.scenario import Churn, Partition
from node.sim.topology import Topology
from node.wire import Announce, WireLimits, decode_announce_untrusted, verify_wire_signature

EPOCH_MS = 1_700_000_000_000.0  # every node's wall clock reads this at simulated time 0 (as tests/routing)
VERIFY_CACHE_ENTRIES = 200_000  # distinct (packet, key) results kept; the oldest go first beyond this
GC_THRESHOLDS_WHILE_RUNNING = (50_000, 20, 100)  # gc.set_threshold during run_until (restored after)
MAX_EVENTS_IN_FLIGHT = 5_000_000  # bound on the event heap; a frame beyond it is tail-dropped and counted
MAX_TIMER_REFIRES = 10_000  # a core asking for its timer at the same instant this often is stuck: a bug
LINK_UP_SPREAD_S = 1.0  # links come up at uniform times in [0, this) so the first announces do not collide

_DELIVER, _TIMER, _CALL = 0, 1, 2
# (time, sequence, kind, direction for _DELIVER, frame for _DELIVER, node for _TIMER / call index for _CALL)
_Entry = tuple[float, int, int, Direction | None, bytes, int]


class VerifyCache:
    """A bounded memo of ``verify_wire_signature`` keyed by (frame with byte 2 — the TTL — zeroed, key)."""

    def __init__(
        self, limits: WireLimits, max_entries: int = VERIFY_CACHE_ENTRIES, clock: Callable[[], float] | None = None
    ) -> None:
        self.limits = limits
        self.max_entries = max_entries
        self.calls = 0
        self.hits = 0
        # With a clock: seconds spent in the real checks (misses), so a report can say what the hits would have
        # cost had every node checked its own copy, as a real node does.
        self.clock = clock
        self.miss_s = 0.0
        self._memo: dict[tuple[bytes, bytes], bool] = {}

    def __call__(self, frame: bytes, key: bytes, limits: WireLimits) -> bool:
        self.calls += 1
        if limits is not self.limits and limits != self.limits:
            return verify_wire_signature(frame, key, limits)
        memo_key = (frame[:2] + b"\x00" + frame[3:], key) if len(frame) > 2 else (frame, key)
        found = self._memo.get(memo_key)
        if found is not None:
            self.hits += 1
            return found
        if self.clock is None:
            ok = verify_wire_signature(frame, key, limits)
        else:
            start = self.clock()
            ok = verify_wire_signature(frame, key, limits)
            self.miss_s += self.clock() - start
        self._memo[memo_key] = ok
        if len(self._memo) > self.max_entries:
            del self._memo[next(iter(self._memo))]
        return ok


class AnnounceCache:
    """A bounded memo of ``decode_announce_untrusted`` keyed by the payload bytes: every node of a flood parses the
    same announce payload (announces are frozen dataclasses, safe to share). Malformed payloads are not kept."""

    def __init__(self, max_entries: int = VERIFY_CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._memo: dict[bytes, Announce] = {}

    def __call__(self, payload: bytes) -> Announce:
        found = self._memo.get(payload)
        if found is None:
            found = self._memo[payload] = decode_announce_untrusted(payload)
            if len(self._memo) > self.max_entries:
                del self._memo[next(iter(self._memo))]
        return found


class NeighbourSets:
    """A bounded memo of ``frozenset(neighbours)``: every node hearing one announce keeps the set of its neighbour
    list in its path table (one per origin); the simulated nodes share one equal set instead of one each."""

    def __init__(self, max_entries: int = VERIFY_CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._memo: dict[tuple[bytes, ...], frozenset[bytes]] = {}

    def __call__(self, neighbours: tuple[bytes, ...]) -> frozenset[bytes]:
        found = self._memo.get(neighbours)
        if found is None:
            found = self._memo[neighbours] = frozenset(neighbours)
            if len(self._memo) > self.max_entries:
                del self._memo[next(iter(self._memo))]
        return found


@dataclass(slots=True)
class _Edge:
    a: int
    b: int
    forward: Direction  # a -> b
    backward: Direction  # b -> a
    up: bool = False
    started: bool = False  # its initial link-up time has passed
    cuts: int = 0  # partitions currently cutting it


class Simulation:
    """``Simulation(topology, link_model, settings, seed=...)``; then ``run_until``, ``send_private``,
    ``broadcast``, ``add_churn``, ``add_partition``, ``report``."""

    def __init__(
        self,
        topology: Topology,
        link_model: LinkModel | None = None,
        settings: MeshSection | None = None,
        *,
        seed: int = 0,
        limits: WireLimits | None = None,
        wall_clock: Callable[[], float] = time.perf_counter,
        link_up_spread_s: float = LINK_UP_SPREAD_S,
        join_window_s: float = 0.0,
        on_event: Callable[[int, MeshEvent, float], None] | None = None,
    ) -> None:
        # Checked first (before any key is made); NaN fails every comparison, so `< 0` alone would let it through.
        for name, value in (("join_window_s", join_window_s), ("link_up_spread_s", link_up_spread_s)):
            if not math.isfinite(value) or value < 0:
                raise SimError(f"{name} must be a finite number >= 0, got {value}")
        self.topology = topology
        self.link_model = link_model or LinkModel()
        self.settings = settings or MeshSection()
        self.limits = limits or WireLimits()
        self.seed = seed
        self.now = 0.0
        self.on_event = on_event
        self._wall_clock = wall_clock
        self._wall_s = 0.0
        self._events = 0
        self._seq = 0
        self._heap: list[_Entry] = []
        self._calls: dict[int, Callable[[], None]] = {}
        self.link_rng = random.Random(seed * 2 + 1)
        self.verify = VerifyCache(self.limits, clock=wall_clock)
        self.decode_announce = AnnounceCache()
        self.neighbour_set = NeighbourSets()
        self.stats = LinkStats()
        self._frames_by_type = [0] * 256
        self.unicasts: list[UnicastRecord] = []
        self.broadcasts: list[BroadcastRecord] = []
        self._unicast_by_id: dict[str, UnicastRecord] = {}
        self._broadcast_by_id: dict[str, BroadcastRecord] = {}
        self.peers_announced = 0

        self.cores: list[MeshCore] = []
        for i in range(topology.n):
            rng = random.Random(seed * 1000 + i)  # as tests/routing/harness.py: keys and core randomness
            identity = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
            self.cores.append(
                MeshCore(
                    identity=identity,
                    settings=self.settings,
                    limits=self.limits,
                    nickname=f"n{i}",
                    wall_offset_ms=EPOCH_MS,
                    rng=rng,
                    verify=self.verify,
                    decode_announce=self.decode_announce,
                    neighbour_set=self.neighbour_set,
                )
            )
        self.peer_ids = [c.peer_id for c in self.cores]
        self._node_up = [True] * topology.n
        self._timer_at: list[float | None] = [None] * topology.n
        self._refires = [0] * topology.n
        # After a failed timer task (contained and counted by the core) its timer waits TIMER_FAILURE_PAUSE_S, as the
        # daemon's does: a task that failed before it popped its due item would otherwise refire at the same instant.
        self._timer_paused_until = [-math.inf] * topology.n
        self._out: list[dict[str, Direction]] = [{} for _ in range(topology.n)]
        self._node_edges: list[list[_Edge]] = [[] for _ in range(topology.n)]
        self.edges: list[_Edge] = []
        self._edge_index: dict[tuple[int, int], _Edge] = {}
        # When each node joins: with a window, at a uniform time in [0, window) from a stream of its own (the link
        # RNG's sequence is the same with or without one); a link comes up once both ends have joined, plus the
        # usual spread. A real mesh does not boot all its nodes in one second.
        join_rng = random.Random(f"join:{seed}")
        self.join_at_s = [join_rng.uniform(0.0, join_window_s) if join_window_s else 0.0 for _ in range(topology.n)]
        join_at = self.join_at_s
        for e, (a, b) in enumerate(topology.edges):
            link_id = f"sim:{e}"
            edge = _Edge(
                a,
                b,
                Direction(e, a, b, link_id, self.link_model),
                Direction(e, b, a, link_id, self.link_model),
            )
            self.edges.append(edge)
            self._edge_index[(a, b)] = edge
            self._out[a][link_id] = edge.forward
            self._out[b][link_id] = edge.backward
            self._node_edges[a].append(edge)
            self._node_edges[b].append(edge)
            joined = join_at[a] if join_at[a] > join_at[b] else join_at[b]
            self._schedule_call(joined + self.link_rng.uniform(0.0, link_up_spread_s), self._starter(edge))

    # ------------------------------------------------------------ scheduling
    def _push(self, entry: _Entry) -> None:
        heapq.heappush(self._heap, entry)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _schedule_call(self, at_s: float, fn: Callable[[], None]) -> None:
        seq = self._next_seq()
        self._calls[seq] = fn
        self._push((max(at_s, self.now), seq, _CALL, None, b"", seq))

    def schedule(self, at_s: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` at simulated time ``at_s`` (e.g. a send in the middle of a run)."""
        self._schedule_call(at_s, fn)

    def _starter(self, edge: _Edge) -> Callable[[], None]:
        def start() -> None:
            edge.started = True
            self._refresh(edge)

        return start

    # ------------------------------------------------------------ faults
    def set_link_model(self, src: int, dst: int, model: LinkModel) -> None:
        """Give the direction ``src`` → ``dst`` its own model (from now on; the MTU a core was given at
        link-up changes at the next link-up)."""
        edge = self._edge(src, dst)
        (edge.forward if edge.a == src else edge.backward).model = model

    def _edge(self, i: int, j: int) -> _Edge:
        edge = self._edge_index.get((min(i, j), max(i, j)))
        if edge is None:
            raise SimError(f"nodes {i} and {j} are not neighbours in topology {self.topology.name}")
        return edge

    def node_down(self, i: int) -> None:
        self._check_node(i)
        self._node_up[i] = False
        for edge in self._node_edges[i]:
            self._refresh(edge)

    def node_up(self, i: int) -> None:
        self._check_node(i)
        self._node_up[i] = True
        for edge in self._node_edges[i]:
            self._refresh(edge)

    def add_churn(self, churn: Churn) -> None:
        self._check_node(churn.node)
        self._schedule_call(churn.down_s, lambda: self.node_down(churn.node))
        if churn.up_s is not None:
            self._schedule_call(churn.up_s, lambda: self.node_up(churn.node))

    def add_partition(self, partition: Partition) -> None:
        edges = [self._edge(i, j) for i, j in sorted(partition.edges)]

        def cut() -> None:
            for edge in edges:
                edge.cuts += 1
                self._refresh(edge)

        def heal() -> None:
            for edge in edges:
                edge.cuts -= 1
                self._refresh(edge)

        self._schedule_call(partition.start_s, cut)
        if partition.end_s is not None:
            self._schedule_call(partition.end_s, heal)

    def link_is_up(self, i: int, j: int) -> bool:
        return self._edge(i, j).up

    def _check_node(self, i: int) -> None:
        if not 0 <= i < self.topology.n:
            raise SimError(f"node {i} is not in this simulation (0..{self.topology.n - 1})")

    def _refresh(self, edge: _Edge) -> None:
        should = edge.started and edge.cuts == 0 and self._node_up[edge.a] and self._node_up[edge.b]
        if should == edge.up:
            return
        edge.up = should
        now = self.now
        for d in (edge.forward, edge.backward):
            d.up = should
            d.generation += 1  # frames in flight on the old link never arrive
            d.queue.clear()
            d.busy_until = now
        a, b = self.cores[edge.a], self.cores[edge.b]
        if should:
            a.link_up(edge.forward.link_id, edge.forward.model.mtu, now)
            b.link_up(edge.backward.link_id, edge.backward.model.mtu, now)
        else:
            a.link_down(edge.forward.link_id, now)
            b.link_down(edge.backward.link_id, now)
        self._drain(edge.a)
        self._drain(edge.b)

    # ------------------------------------------------------------ user actions
    def send_private(self, i: int, j: int, text: str) -> UnicastRecord:
        """Node ``i`` sends ``text`` privately to node ``j`` now, as the daemon does for a full peer ID
        (:meth:`node.node.Node.send_private`): a peer ``i`` has not heard an announce from yet gets the message
        when it appears. A refusal by the core (too many pending, bad text) is recorded, not raised: it is an
        undelivered message."""
        self._check_node(i)
        self._check_node(j)
        core, peer = self.cores[i], self.peer_ids[j]
        try:
            core.check_private(peer, text)
            message_id: str | None = core.new_message_id()
            assert message_id is not None
            core.queue_private(message_id, peer, text, self.now)
            refused = None
        except MeshError as exc:
            message_id, refused = None, str(exc)
        rec = UnicastRecord(i, j, self.now, message_id, refused)
        self.unicasts.append(rec)
        if message_id is not None:
            self._unicast_by_id[message_id] = rec
        self._drain(i)
        return rec

    def broadcast(self, i: int, text: str) -> BroadcastRecord:
        self._check_node(i)
        message_id = self.cores[i].broadcast(text, self.now)
        rec = BroadcastRecord(i, self.now, message_id)
        self.broadcasts.append(rec)
        self._broadcast_by_id[message_id] = rec
        self._drain(i)
        return rec

    def inject(self, i: int, frame: bytes) -> None:
        """Put ``frame`` on every up link of node ``i``, past its core: a hostile node's radio
        (:mod:`node.sim.adversary`)."""
        self._check_node(i)
        for d in self._out[i].values():
            if d.up:
                self._transmit(d, frame)

    # ------------------------------------------------------------ the loop
    def run_until(self, t_end: float) -> None:
        """Process every event due at or before simulated time ``t_end``; then ``now == t_end``.

        While it runs, the cyclic garbage collector's thresholds are raised (and restored after): a large
        simulation allocates millions of short-lived frames and packets, and at the default threshold the collector
        keeps walking the cores' long-lived tables (one sixth of the run time at 1,000 nodes)."""
        if t_end < self.now:
            raise SimError(f"run_until({t_end}) is in the past (now = {self.now})")
        thresholds = gc.get_threshold()
        gc.set_threshold(*(max(t, want) for t, want in zip(thresholds, GC_THRESHOLDS_WHILE_RUNNING, strict=False)))
        try:
            self._run_until(t_end)
        finally:
            gc.set_threshold(*thresholds)

    def _run_until(self, t_end: float) -> None:
        wall0 = self._wall_clock()
        heap = self._heap
        cores = self.cores
        stats = self.stats
        timer_at = self._timer_at
        drain = self._drain
        pop = heapq.heappop
        events = 0
        while heap and heap[0][0] <= t_end:
            t, _, kind, d, frame, arg = pop(heap)
            self.now = t
            events += 1
            if kind == _DELIVER:
                assert d is not None
                if arg != d.generation:
                    stats.cut += 1
                    continue
                size = len(frame)
                stats.delivered += 1
                stats.bytes_delivered += size
                d.frames_delivered += 1
                d.bytes_delivered += size
                dst = d.dst
                if cores[dst].receive_frame(d.link_id, frame, t):
                    drain(dst)  # (a duplicate changes nothing there: no output, events or earlier timer)
            elif kind == _TIMER:
                if timer_at[arg] != t:
                    continue  # re-armed since this entry was pushed
                timer_at[arg] = None
                if not cores[arg].handle_timer(t):
                    self._timer_paused_until[arg] = t + TIMER_FAILURE_PAUSE_S
                drain(arg)
            else:
                self._calls.pop(arg)()
        self.now = t_end
        self._events += events
        self._wall_s += self._wall_clock() - wall0

    def _drain(self, i: int) -> None:
        core = self.cores[i]
        frames = core.frames_to_send()
        if frames:
            out = self._out[i]
            transmit = self._transmit
            for link_id, frame in frames:
                d = out.get(link_id)
                if d is None:
                    self.stats.cut += 1  # not a link of ours: a core bug, but counted, not raised
                else:
                    transmit(d, frame)
        event = core.next_event()
        while event is not None:
            self._on_event(i, event)
            event = core.next_event()
        t = core.get_timer()
        timer_at = self._timer_at
        if t is None:
            timer_at[i] = None
            return
        now = self.now
        paused = self._timer_paused_until[i]
        if t < paused and paused > now:
            t = paused  # a timer task failed: nothing runs before the pause is over (the same past deadline included)
        elif t <= now:
            t = now
            self._refires[i] += 1
            if self._refires[i] > MAX_TIMER_REFIRES:
                raise SimError(f"node {i}'s timer stays at {now}: its core never advances it")
        elif self._refires[i]:
            self._refires[i] = 0
        if t != timer_at[i]:
            timer_at[i] = t
            self._seq += 1
            heapq.heappush(self._heap, (t, self._seq, _TIMER, None, b"", i))

    def _transmit(self, d: Direction, frame: bytes) -> None:
        stats = self.stats
        stats.offered += 1
        if not d.up:
            stats.cut += 1
            return
        model = d.model
        size = len(frame)
        if size > model.mtu:
            stats.oversize += 1
            return
        now = self.now
        finish = now
        bandwidth = model.bandwidth_bytes_per_s
        if bandwidth is not None:
            q = d.queue
            while q and q[0] <= now:
                q.popleft()
            if len(q) >= model.queue_frames:
                stats.tail_dropped += 1
                return
            busy = d.busy_until
            finish = (busy if busy > now else now) + size / bandwidth
            d.busy_until = finish
            q.append(finish)
        if len(self._heap) >= MAX_EVENTS_IN_FLIGHT:
            stats.tail_dropped += 1
            return
        stats.transmitted += 1
        self._frames_by_type[frame[1]] += 1
        rng = self.link_rng
        if model.loss and rng.random() < model.loss:
            stats.lost += 1
            return
        arrival = finish + model.latency_s
        if model.jitter_s:
            arrival += rng.random() * model.jitter_s
        self._seq += 1
        heapq.heappush(self._heap, (arrival, self._seq, _DELIVER, d, frame, d.generation))

    def _on_event(self, i: int, event: MeshEvent) -> None:
        now = self.now
        if isinstance(event, MessageReceived):
            if event.private:
                rec = self._unicast_by_id.get(event.message_id)
                if rec is not None and rec.dst == i and rec.delivered_s is None:
                    rec.delivered_s = now
                    rec.hops = event.hops
            else:
                b = self._broadcast_by_id.get(event.message_id)
                if b is not None and i != b.src and i not in b.reached:
                    b.reached[i] = now
        elif isinstance(event, DeliveryAcked):
            rec = self._unicast_by_id.get(event.message_id)
            if rec is not None and rec.src == i and rec.acked_s is None:
                rec.acked_s = now
        elif isinstance(event, PrivateFailed):
            rec = self._unicast_by_id.get(event.message_id)
            if rec is not None and rec.src == i:
                rec.failed = event.reason
        elif isinstance(event, PeerAnnounced):
            self.peers_announced += 1
        if self.on_event is not None:
            self.on_event(i, event, now)

    # ------------------------------------------------------------ results
    def frames_by_type(self) -> dict[int, int]:
        """Frames put on links since the start, by packet type (byte 1)."""
        return {t: c for t, c in enumerate(self._frames_by_type) if c}

    def report(self) -> SimReport:
        counters = {f.name: 0 for f in dataclasses.fields(MeshCounters)}
        for core in self.cores:
            for name in counters:
                counters[name] += getattr(core.counters, name)
        return build_report(
            nodes=self.topology.n,
            edges=len(self.edges),
            sim_time_s=self.now,
            wall_s=self._wall_s,
            events=self._events,
            unicasts=self.unicasts,
            broadcasts=self.broadcasts,
            frames_by_type=self.frames_by_type(),
            link=self.stats,
            core_counters=counters,
            verify_calls=self.verify.calls,
            verify_cache_hits=self.verify.hits,
        )
