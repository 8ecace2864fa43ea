"""Link probes: pings we sent and await a pong for, and how lossy our links look (a mesh core component).

A ping (BF/MeshPingPayload.swift) goes to a direct neighbour on one link at every periodic announce and when a
neighbour binds a link; its pong gives the link's round-trip time, a pong missing after PING_EXPIRY_S counts
towards the link's loss estimate. :class:`PingTracker` owns the outstanding pings (at most MAX_OUTSTANDING_PINGS,
oldest forgotten beyond), the sent/answered totals and the expiry timer (:meth:`next_deadline`,
:meth:`on_timer` returns the links whose ping was lost). Sans-IO.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from node.routing.meshbase import LOSSY_PONG_RATIO, MAX_OUTSTANDING_PINGS, PING_EXPIRY_S


@dataclass(frozen=True, slots=True)
class _Ping:
    peer_id: bytes
    link_id: str
    sent: float


class PingTracker:
    def __init__(self, max_outstanding: int = MAX_OUTSTANDING_PINGS, expiry_s: float = PING_EXPIRY_S) -> None:
        self.max_outstanding = max_outstanding
        self.expiry_s = expiry_s
        self._pings: OrderedDict[bytes, _Ping] = OrderedDict()  # nonce -> ping, oldest first
        self.sent = 0  # link probes sent, and answered: how lossy our links are (lossy)
        self.answered = 0

    def __len__(self) -> int:
        return len(self._pings)

    def sent_ping(self, nonce: bytes, peer_id: bytes, link_id: str, now: float) -> None:
        self._pings[nonce] = _Ping(peer_id, link_id, now)
        self.sent += 1
        while len(self._pings) > self.max_outstanding:
            self._pings.popitem(last=False)

    def on_pong(self, nonce: bytes, sender: bytes, now: float) -> tuple[str, float] | None:
        """(link, round-trip time) if the pong answers a ping of ours from that peer in time; else None."""
        ping = self._pings.pop(nonce, None)
        if ping is None or ping.peer_id != sender or now - ping.sent > self.expiry_s:
            return None
        self.answered += 1
        return ping.link_id, now - ping.sent

    def lossy(self) -> bool:
        """Our links lose many frames: under LOSSY_PONG_RATIO of our pings were answered (at least 8 sent)."""
        return self.sent >= 8 and self.answered < LOSSY_PONG_RATIO * self.sent

    def next_deadline(self) -> float | None:
        if not self._pings:
            return None
        return next(iter(self._pings.values())).sent + self.expiry_s

    def on_timer(self, now: float) -> list[str]:
        """Forget pings unanswered for the expiry or longer; returns their links (one entry per lost ping)."""
        lost: list[str] = []
        while self._pings:
            nonce, ping = next(iter(self._pings.items()))
            if ping.sent + self.expiry_s > now:  # (the same sum as next_deadline: no rounding gap)
                break
            del self._pings[nonce]
            lost.append(ping.link_id)
        return lost

    def bounded_sizes(self) -> dict[str, tuple[int, int]]:
        return {"pings_outstanding": (len(self._pings), self.max_outstanding)}
