"""In-process links with a seeded fault injector, for tests and simulation.

A :class:`MemoryNetwork` owns every simulated link between the :class:`MemoryTransport` objects created from
it. ``net.connect(a, b, faults)`` makes a link pair and hands each end to its transport. Each direction has
a pump task (owned by ``net.run``) that releases frames at their delivery time, so latency, jitter and
reordering follow the trio clock — under ``MockClock(autojump_threshold=0)`` a whole mesh runs in
simulated time. All randomness comes from one ``random.Random(seed)``: a run is reproducible.

Faults (per link, changeable at run time with :meth:`MemoryLink.set_faults`):

* ``drop``: probability a frame is lost;
* ``duplicate``: probability a frame is delivered twice;
* ``latency_s`` + uniform ``jitter_s``: delivery delay;
* ``reorder``: probability a frame is held back an extra uniform ``0..reorder_window_s``;
* partitions: ``net.partition({"a"}, {"b", "c"})`` drops frames across groups until ``net.heal()``.

Frames that would overflow the receiver's bounded queue are dropped and counted (``stats.overflow``).
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field

import trio

from node.transports.base import Link, LinkCapabilities, LinkClosed, LinkSink, Transport, check_frame_size

DEFAULT_MTU = 65_535  # bytes; large enough that tests fragment only when they pick a BLE-sized MTU
DEFAULT_QUEUE_FRAMES = 1024  # frames buffered per receiving end before overflow drops


@dataclass(frozen=True, slots=True)
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_window_s: float = 0.05
    latency_s: float = 0.0
    jitter_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"Faults.{name} must be a probability in [0, 1], got {p}")
        for name in ("reorder_window_s", "latency_s", "jitter_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"Faults.{name} must be >= 0")

    @property
    def perfect(self) -> bool:
        return self == Faults()


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    partitioned: int = 0
    overflow: int = 0


@dataclass
class _Direction:
    """Frames in flight from one end to the other, ordered by delivery time."""

    sink: trio.MemorySendChannel[bytes]
    heap: list[tuple[float, int, bytes]] = field(default_factory=list)
    wakeup: trio.Event = field(default_factory=trio.Event)
    closed: bool = False


class MemoryLink(Link):
    def __init__(
        self,
        net: MemoryNetwork,
        owner: MemoryTransport,
        peer: MemoryTransport,
        link_id: str,
        mtu: int,
        faults: Faults,
        out: _Direction,
        inbox: trio.MemoryReceiveChannel[bytes],
    ) -> None:
        self._net = net
        self._owner = owner
        self._peer_transport = peer
        self._link_id = link_id
        self._mtu = mtu
        self._faults = faults
        self._out = out
        self._inbox = inbox
        self._closed = False
        self.peer_link: MemoryLink | None = None

    @property
    def link_id(self) -> str:
        return self._link_id

    @property
    def transport_name(self) -> str:
        return "memory"

    @property
    def mtu(self) -> int:
        return self._mtu

    @property
    def capabilities(self) -> LinkCapabilities:
        f = self._faults
        return LinkCapabilities(
            native_streams=False,
            reliable=f.drop == 0 and f.duplicate == 0,
            ordered=f.reorder == 0 and f.jitter_s == 0,
            broadcast_medium=False,
        )

    @property
    def remote_address(self) -> str:
        return f"memory:{self._peer_transport.name}"

    @property
    def closed(self) -> bool:
        return self._closed

    def set_faults(self, faults: Faults) -> None:
        """Change the faults of this direction (frames we send)."""
        self._faults = faults

    async def send(self, frame: bytes) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed or self._out.closed:
            raise LinkClosed(f"{self._link_id} is closed")
        check_frame_size(frame, self._mtu)
        self._net._transmit(self._owner, self._peer_transport, self._out, bytes(frame), self._faults)

    async def receive(self) -> bytes:
        if self._closed:
            raise LinkClosed(f"{self._link_id} is closed")
        try:
            return await self._inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise LinkClosed(f"{self._link_id} was closed by the peer") from None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.closed = True  # the pump delivers what is in flight, then ends the peer's stream
            self._out.wakeup.set()
            self._inbox.close()
            if self.peer_link is not None:
                self.peer_link._out.closed = True
                self.peer_link._out.wakeup.set()
        await trio.lowlevel.checkpoint()


class MemoryTransport(Transport):
    def __init__(self, net: MemoryNetwork, name: str) -> None:
        self._net = net
        self._name = name
        self._sink: LinkSink | None = None
        self._pending: list[Link] = []
        self.links: list[MemoryLink] = []

    @property
    def name(self) -> str:
        return self._name

    def listen_addresses(self) -> list[str]:
        return [f"memory:{self._name}"]

    def _offer(self, link: MemoryLink) -> None:
        self.links.append(link)
        if self._sink is None:
            self._pending.append(link)
        else:
            self._sink.send_nowait(link)

    async def run(
        self,
        link_sink: LinkSink,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._sink = link_sink
        for link in self._pending:
            link_sink.send_nowait(link)
        self._pending.clear()
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self._sink = None
            with trio.CancelScope(shield=True):
                for link in self.links:
                    await link.aclose()


class MemoryNetwork:
    """A seeded, fault-injecting switchboard. Run it with ``await nursery.start(net.run)`` before use."""

    def __init__(self, seed: int = 0, *, queue_frames: int = DEFAULT_QUEUE_FRAMES) -> None:
        self.rng = random.Random(seed)
        self.queue_frames = queue_frames
        self.stats = NetworkStats()
        self._seq = itertools.count()
        self._link_ids = itertools.count(1)
        self._groups: list[set[str]] | None = None
        self._nursery: trio.Nursery | None = None
        self._unstarted: list[_Direction] = []
        # When a list, every frame offered to the medium is appended as (src, dst, frame): tests inspect
        # exactly what a node put on the wire (e.g. that no plaintext of a private message leaves it).
        self.tap: list[tuple[str, str, bytes]] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for d in self._unstarted:
                nursery.start_soon(self._pump, d)
            self._unstarted.clear()
            task_status.started()
            await trio.sleep_forever()

    def transport(self, name: str) -> MemoryTransport:
        return MemoryTransport(self, name)

    def connect(
        self,
        a: MemoryTransport,
        b: MemoryTransport,
        faults: Faults | None = None,
        *,
        mtu: int = DEFAULT_MTU,
        faults_back: Faults | None = None,
    ) -> tuple[MemoryLink, MemoryLink]:
        """Link ``a`` and ``b``. ``faults`` apply a→b and, unless ``faults_back`` is given, b→a too."""
        faults = faults or Faults()
        faults_back = faults if faults_back is None else faults_back
        a_send, a_recv = trio.open_memory_channel[bytes](self.queue_frames)
        b_send, b_recv = trio.open_memory_channel[bytes](self.queue_frames)
        to_b, to_a = _Direction(b_send), _Direction(a_send)
        n = next(self._link_ids)
        la = MemoryLink(self, a, b, f"memory:{n}a", mtu, faults, to_b, a_recv)
        lb = MemoryLink(self, b, a, f"memory:{n}b", mtu, faults_back, to_a, b_recv)
        la.peer_link, lb.peer_link = lb, la
        for d in (to_b, to_a):
            if self._nursery is None:
                self._unstarted.append(d)
            else:
                self._nursery.start_soon(self._pump, d)
        a._offer(la)
        b._offer(lb)
        return la, lb

    def partition(self, *groups: set[str]) -> None:
        """Drop frames between transports (by name) in different groups; names in no group are isolated."""
        self._groups = [set(g) for g in groups]

    def heal(self) -> None:
        self._groups = None

    def _separated(self, a: str, b: str) -> bool:
        if self._groups is None:
            return False
        return not any(a in g and b in g for g in self._groups)

    def _transmit(
        self, src: MemoryTransport, dst: MemoryTransport, d: _Direction, frame: bytes, faults: Faults
    ) -> None:
        self.stats.sent += 1
        if self.tap is not None:
            self.tap.append((src.name, dst.name, frame))
        if self._separated(src.name, dst.name):
            self.stats.partitioned += 1
            return
        rng = self.rng
        if faults.drop and rng.random() < faults.drop:
            self.stats.dropped += 1
            return
        copies = 1
        if faults.duplicate and rng.random() < faults.duplicate:
            copies = 2
            self.stats.duplicated += 1
        now = trio.current_time()
        for _ in range(copies):
            delay = faults.latency_s + (rng.uniform(0, faults.jitter_s) if faults.jitter_s else 0.0)
            if faults.reorder and rng.random() < faults.reorder:
                delay += rng.uniform(0, faults.reorder_window_s)
            heapq.heappush(d.heap, (now + delay, next(self._seq), frame))
        d.wakeup.set()

    async def _pump(self, d: _Direction) -> None:
        while True:
            if not d.heap:
                if d.closed:
                    d.sink.close()
                    return
                await d.wakeup.wait()
                d.wakeup = trio.Event()
                continue
            due, _, frame = d.heap[0]
            if due > trio.current_time():
                with trio.move_on_at(due):
                    await d.wakeup.wait()
                    d.wakeup = trio.Event()
                continue
            heapq.heappop(d.heap)
            try:
                d.sink.send_nowait(frame)
                self.stats.delivered += 1
            except trio.WouldBlock:
                self.stats.overflow += 1
            except trio.BrokenResourceError:
                d.heap.clear()  # the receiving end is closed: nothing more can arrive
                d.closed = True
            await trio.lowlevel.checkpoint()
