"""What a simulation measured: one record per message sent, and the :class:`SimReport` built from them.

* Unicast: delivered when the recipient's core first emits ``MessageReceived`` for the message ID;
  latency = that time − the time the sender's core accepted it. A send the sender's core refused (e.g. the
  peer is still unknown to it) counts as sent and not delivered, and is counted in ``unicast_refused``.
* Broadcast: the fraction of the other nodes whose core emitted ``MessageReceived`` for it; latency is
  measured per (message, receiver).
* Transmissions: frames the cores put on links (accepted by the link FIFO), by packet type (byte 1).
  Unicast messages cost the Noise types (handshake 0x10, encrypted 0x11 — acks included) and the hop acks
  (0x40; hop retransmissions are counted under their own type), broadcasts the
  public-message type 0x02, fragments 0x20 are counted apart; announces, pings and leaves are control traffic.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field

from node.sim.links import LinkStats
from node.wire import MessageType

UNICAST_TYPES = frozenset({MessageType.NOISE_HANDSHAKE, MessageType.NOISE_ENCRYPTED, MessageType.HOP_ACK})
BROADCAST_TYPES = frozenset({MessageType.MESSAGE})


def type_name(t: int) -> str:
    try:
        return MessageType(t).name.lower()
    except ValueError:
        return f"0x{t:02x}"


@dataclass(slots=True)
class UnicastRecord:
    src: int
    dst: int
    sent_s: float
    message_id: str | None  # None when the sender's core refused the message
    refused: str | None = None
    delivered_s: float | None = None
    hops: int | None = None
    acked_s: float | None = None
    failed: str | None = None  # the sender's core gave up (PrivateFailed)


@dataclass(slots=True)
class BroadcastRecord:
    src: int
    sent_s: float
    message_id: str
    reached: dict[int, float] = field(default_factory=dict)  # node -> first receipt time


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(len * q / 100), at least 1
    return ordered[int(rank) - 1]


@dataclass(frozen=True, slots=True)
class SimReport:
    nodes: int
    edges: int
    sim_time_s: float
    wall_s: float  # wall-clock seconds spent inside run_until (the only non-deterministic field)
    events: int  # heap events processed
    unicast_sent: int
    unicast_refused: int
    unicast_delivered: int
    unicast_failed: int  # undelivered, and the sender's core gave up (PrivateFailed)
    unicast_retrying: int  # undelivered and still pending at the sender when the run ended
    unicast_acked: int
    unicast_latency_median_s: float | None
    unicast_latency_p95_s: float | None
    broadcast_sent: int
    broadcast_receivers: int  # (message, receiver) pairs reached
    broadcast_delivery_ratio: float | None  # mean over broadcasts of the fraction of other nodes reached
    broadcast_latency_median_s: float | None
    broadcast_latency_p95_s: float | None
    frames_by_type: dict[str, int]  # frames put on links since the start
    unicast_frames: int
    broadcast_frames: int
    fragment_frames: int
    link: LinkStats
    core_counters: dict[str, int]  # MeshCounters summed over the nodes
    verify_calls: int
    verify_cache_hits: int

    @property
    def speed_factor(self) -> float | None:
        """Simulated seconds per wall-clock second."""
        return self.sim_time_s / self.wall_s if self.wall_s > 0 else None

    @property
    def unicast_delivery_ratio(self) -> float | None:
        return self.unicast_delivered / self.unicast_sent if self.unicast_sent else None

    @property
    def unicast_frames_per_delivered(self) -> float | None:
        return self.unicast_frames / self.unicast_delivered if self.unicast_delivered else None

    @property
    def broadcast_frames_per_receiver(self) -> float | None:
        return self.broadcast_frames / self.broadcast_receivers if self.broadcast_receivers else None

    def deterministic(self) -> SimReport:
        """This report with the wall-clock time zeroed: two runs with the same seed compare equal."""
        return dataclasses.replace(self, wall_s=0.0)


def build_report(
    *,
    nodes: int,
    edges: int,
    sim_time_s: float,
    wall_s: float,
    events: int,
    unicasts: list[UnicastRecord],
    broadcasts: list[BroadcastRecord],
    frames_by_type: dict[int, int],
    link: LinkStats,
    core_counters: dict[str, int],
    verify_calls: int,
    verify_cache_hits: int,
) -> SimReport:
    u_lat = [r.delivered_s - r.sent_s for r in unicasts if r.delivered_s is not None]
    b_lat = [t - b.sent_s for b in broadcasts for t in b.reached.values()]
    others = max(1, nodes - 1)
    return SimReport(
        nodes=nodes,
        edges=edges,
        sim_time_s=sim_time_s,
        wall_s=wall_s,
        events=events,
        unicast_sent=len(unicasts),
        unicast_refused=sum(1 for r in unicasts if r.refused is not None),
        unicast_delivered=len(u_lat),
        unicast_failed=sum(1 for r in unicasts if r.delivered_s is None and r.failed is not None),
        unicast_retrying=sum(
            1 for r in unicasts if r.delivered_s is None and r.message_id is not None and r.failed is None
        ),
        unicast_acked=sum(1 for r in unicasts if r.acked_s is not None),
        unicast_latency_median_s=statistics.median(u_lat) if u_lat else None,
        unicast_latency_p95_s=percentile(u_lat, 95),
        broadcast_sent=len(broadcasts),
        broadcast_receivers=len(b_lat),
        broadcast_delivery_ratio=(
            statistics.fmean(len(b.reached) / others for b in broadcasts) if broadcasts else None
        ),
        broadcast_latency_median_s=statistics.median(b_lat) if b_lat else None,
        broadcast_latency_p95_s=percentile(b_lat, 95),
        frames_by_type={type_name(t): c for t, c in sorted(frames_by_type.items())},
        unicast_frames=sum(c for t, c in frames_by_type.items() if t in UNICAST_TYPES),
        broadcast_frames=sum(c for t, c in frames_by_type.items() if t in BROADCAST_TYPES),
        fragment_frames=frames_by_type.get(MessageType.FRAGMENT, 0),
        link=dataclasses.replace(link),
        core_counters=dict(core_counters),
        verify_calls=verify_calls,
        verify_cache_hits=verify_cache_hits,
    )
