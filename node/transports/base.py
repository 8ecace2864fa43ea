"""The one small interface every transport implements.

A :class:`Link` carries whole frames (one BitChat packet each, or a fragment of one) between this node and
one neighbour. A :class:`Transport` produces links: it is started in the Node's nursery with
``await nursery.start(transport.run, link_sink)``, reports readiness once it listens, and pushes each new
:class:`Link` (inbound or outbound) into ``link_sink``. The Node owns one reader task per link.

Error tree (all under :class:`node.errors.TransportError`)::

    TransportError
    ├── LinkClosed      the link is gone (closed by us, the peer, or the medium) — send/receive end here
    └── FrameSizeError  local: we tried to send an empty frame or one larger than ``link.mtu``

Every transport runs the conformance suite in ``tests/transports/conformance.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import trio

from node.errors import TransportError


class LinkClosed(TransportError):
    """The link was closed (locally or by the peer); nothing more can be sent or received on it."""


class FrameSizeError(TransportError):
    """Local error: a frame was empty or larger than the link's MTU (fragment it first)."""


@dataclass(frozen=True, slots=True)
class LinkCapabilities:
    # Frames of any size up to `mtu` arrive whole, in order and reliably while the link is up (a libp2p
    # stream); False for datagram-like media (BLE writes, a lossy simulated radio).
    native_streams: bool = False
    # Every frame sent while the link is up is delivered exactly once (no drops, no duplicates).
    reliable: bool = False
    # Frames arrive in the order they were sent.
    ordered: bool = False
    # Costs/limits used by routing: a broadcast medium (BLE) vs a point-to-point internet link.
    broadcast_medium: bool = False


class Link(ABC):
    """One bidirectional frame channel to a neighbour. Implementations must be safe for one concurrent
    sender and one concurrent receiver, and ``receive`` must be cancel-safe (a cancelled receive loses
    no frame)."""

    @property
    @abstractmethod
    def link_id(self) -> str:
        """Unique within this node for the life of the process, e.g. ``memory:3``."""

    @property
    @abstractmethod
    def transport_name(self) -> str:
        """``memory``, ``ble``, ``betanet`` ..."""

    @property
    @abstractmethod
    def mtu(self) -> int:
        """Largest frame, in bytes, that :meth:`send` accepts."""

    @property
    @abstractmethod
    def capabilities(self) -> LinkCapabilities: ...

    @property
    @abstractmethod
    def remote_address(self) -> str:
        """Human-readable address of the other end (for logs and ``village peers``)."""

    @property
    def authenticated_signing_key(self) -> bytes | None:
        """The peer's Ed25519 key as authenticated by the transport itself (BetaNet's Noise handshake), or
        None where the medium authenticates nothing (BLE, memory). The mesh refuses a direct announce over
        this link signed with another key."""
        return None

    @property
    def rate_key(self) -> str | None:
        """What per-source budgets in the mesh (new identity pins) count this link under: the remote's address, or
        its network prefix, which a reconnect does not change (link ids are per connection). None: the link id."""
        return None

    @abstractmethod
    async def send(self, frame: bytes) -> None:
        """Queue ``frame`` for the peer. Raises :class:`FrameSizeError` for an empty or oversize frame and
        :class:`LinkClosed` once the link is closed."""

    @abstractmethod
    async def receive(self) -> bytes:
        """Wait for the next frame. Raises :class:`LinkClosed` when the link has closed and nothing is left."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the link (idempotent). The peer's ``receive`` then raises :class:`LinkClosed`."""


LinkSink = trio.MemorySendChannel[Link]


class Transport(ABC):
    """A source of links, owned by the Node's nursery."""

    @property
    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    async def run(
        self,
        link_sink: LinkSink,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Start listening, call ``task_status.started()``, then push every new link into ``link_sink``
        until cancelled. On cancellation close every link this transport opened."""

    def listen_addresses(self) -> list[str]:
        """Addresses peers can reach us at (empty for transports without addresses)."""
        return []


def check_frame_size(frame: bytes, mtu: int) -> None:
    if not frame:
        raise FrameSizeError("cannot send an empty frame")
    if len(frame) > mtu:
        raise FrameSizeError(f"frame of {len(frame)} bytes exceeds the link MTU of {mtu} bytes")
