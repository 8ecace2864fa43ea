"""The per-direction link model: loss, latency + jitter, bandwidth with a bounded FIFO, MTU.

A frame offered to a direction waits behind the frames already queued there, is serialised at
``bandwidth_bytes_per_s`` (``len / bandwidth`` seconds), then travels ``latency_s`` plus a uniform
``0..jitter_s``. At most ``queue_frames`` frames wait or serialise at once; a frame beyond that is dropped
at the tail and counted. Loss strikes after serialisation (the air time was spent). A frame larger than the
MTU is refused and counted — a core must fragment to the MTU it was given at ``link_up``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from node.sim.errors import SimError

BLE_MTU = 512  # bytes: BitChat's usual link limit (ATT_MTU 517 − 3, rounded to the fragment planner's 512)
BLE_BANDWIDTH_BYTES_PER_S = 20_000  # a conservative BLE GATT write-without-response rate (~160 kbit/s)
DEFAULT_QUEUE_FRAMES = 64  # frames waiting per direction before tail drop (a BLE stack's few-dozen buffers)


@dataclass(frozen=True, slots=True)
class LinkModel:
    loss: float = 0.0  # probability a frame is lost after serialisation
    latency_s: float = 0.01  # one-way propagation + stack delay
    jitter_s: float = 0.005  # uniform 0..jitter_s added per frame (frames may reorder)
    bandwidth_bytes_per_s: float | None = BLE_BANDWIDTH_BYTES_PER_S  # None: no serialisation delay, no queue
    queue_frames: int = DEFAULT_QUEUE_FRAMES
    mtu: int = BLE_MTU

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise SimError(f"LinkModel.loss must be a probability in [0, 1], got {self.loss}")
        if self.latency_s < 0 or self.jitter_s < 0:
            raise SimError(f"LinkModel.latency_s and jitter_s must be >= 0, got {self.latency_s}, {self.jitter_s}")
        if self.bandwidth_bytes_per_s is not None and self.bandwidth_bytes_per_s <= 0:
            raise SimError(f"LinkModel.bandwidth_bytes_per_s must be > 0 or None, got {self.bandwidth_bytes_per_s}")
        if self.queue_frames < 1:
            raise SimError(f"LinkModel.queue_frames must be >= 1, got {self.queue_frames}")
        if self.mtu < 64:
            raise SimError(f"LinkModel.mtu must be >= 64 bytes, got {self.mtu}")


@dataclass(slots=True)
class LinkStats:
    """Frames offered to links, summed over every direction."""

    offered: int = 0  # frames a core handed to a link it holds up
    transmitted: int = 0  # accepted into the FIFO and put on the air
    delivered: int = 0  # handed to the receiving core
    bytes_delivered: int = 0
    lost: int = 0  # struck by the loss probability
    tail_dropped: int = 0  # the direction's FIFO was full
    oversize: int = 0  # larger than the link MTU
    cut: int = 0  # the link was down when the frame was sent, or went down while it was in flight


@dataclass(slots=True)
class Direction:
    """One direction of one edge: ``src`` sends on its link ``link_id``, ``dst`` receives on its own."""

    edge: int
    src: int
    dst: int
    link_id: str  # the same string names the edge at both ends
    model: LinkModel
    busy_until: float = 0.0  # when the frame being serialised finishes
    queue: deque[float] = field(default_factory=deque)  # finish times of frames waiting or serialising
    generation: int = 0  # bumped on every down/up, so frames in flight across a cut are discarded
    up: bool = False  # the edge is up (both ends hold the link)
    bytes_delivered: int = 0
    frames_delivered: int = 0
