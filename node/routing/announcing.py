"""When this node announces itself, and which announces it passes on: two components of the mesh core.

:class:`AnnounceSchedule` owns the announce timers: the periodic announce (BitChat's interval, doubled on a busy
node), the deferred answer to a new neighbour's announce (one went out on that link just now), and the "settled"
announce SETTLE_ANNOUNCE_S after a link is bound. :meth:`AnnounceSchedule.on_timer` says what is due; the core
builds and sends the announces.

:class:`AnnounceRelays` owns announce relay suppression: the last relayed announce per origin, bounded by
``mesh.max_peers`` entries (least recently relayed forgotten first). It has no timer.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict

from node.routing.meshbase import (
    ANNOUNCE_ANSWER_GAP_S,
    ANNOUNCE_CHANGE_GAP_S,
    BUSY_LINKS,
    LOSSY_EARLY_RELAYS,
    SETTLE_ANNOUNCE_S,
)
from node.routing.ratelimit import OriginLimiter
from node.routing.settings import MeshSection


class AnnounceSchedule:
    """Our own announces: the periodic one, deferred answers per link, and the settled announce."""

    def __init__(self, settings: MeshSection, rng: random.Random) -> None:
        self.settings = settings
        self.rng = rng
        self.next_announce: float | None = None
        self.answers: dict[str, float] = {}  # link -> when a deferred answer to a new neighbour is due
        self.announced_at: dict[str, float] = {}  # link -> when we last announced on it
        self.settled_at: float | None = None  # when a settled announce was last brought forward

    def schedule(self, now: float, links: int) -> None:
        # BitChat (BLEMaintenancePolicy): 15 ± 4 s, doubled to 30 ± 8 s with >= 6 links, where announces are
        # the bulk of the traffic.
        s = self.settings
        factor = 2.0 if links >= BUSY_LINKS else 1.0
        jitter = self.rng.uniform(-s.announce_jitter_s, s.announce_jitter_s)
        self.next_announce = now + max(0.5, factor * (s.announce_interval_s + jitter))

    def announced(self, link_ids: list[str], now: float) -> None:
        for link_id in link_ids:
            self.announced_at[link_id] = now

    def answer_now(self, link_id: str, now: float) -> bool:
        """Whether to answer a new neighbour's announce on ``link_id`` now; if not (one went out just now), the
        answer is deferred to ANNOUNCE_ANSWER_GAP_S after the last and :meth:`on_timer` returns it then."""
        last = self.announced_at.get(link_id)
        if last is not None and now - last < ANNOUNCE_ANSWER_GAP_S:
            self.answers[link_id] = last + ANNOUNCE_ANSWER_GAP_S
            return False
        return True

    def settle_soon(self, now: float) -> None:
        """A link was just bound to a neighbour: announce on every link SETTLE_ANNOUNCE_S from now, naming it —
        the announce relays pass on (link-up announces and answers are not relayed). At most once per announce
        interval: a neighbour reconnecting every few seconds cannot make us announce more often than BitChat."""
        last = self.settled_at
        if last is not None and 0 <= now - last < self.settings.announce_interval_s:
            return
        self.settled_at = now
        settle = now + self.rng.uniform(*SETTLE_ANNOUNCE_S)
        if self.next_announce is None or self.next_announce > settle:
            self.next_announce = settle

    def link_down(self, link_id: str) -> None:
        self.announced_at.pop(link_id, None)
        self.answers.pop(link_id, None)

    def next_deadline(self) -> float | None:
        best = self.next_announce
        if self.answers:
            due = min(self.answers.values())
            if best is None or due < best:
                best = due
        return best

    def on_timer(self, now: float) -> tuple[bool, list[str]]:
        """(whether the periodic announce is due, links whose deferred answer is due). The caller announces and
        then :meth:`schedule`\\ s the next periodic one."""
        periodic = self.next_announce is not None and now >= self.next_announce
        due = [link_id for link_id, t in self.answers.items() if t <= now]
        for link_id in due:
            del self.answers[link_id]
        return periodic, due

    def bounded_sizes(self, max_links: int) -> dict[str, tuple[int, int]]:
        return {"announce_answers": (len(self.answers), max_links), "announced_at": (len(self.announced_at), max_links)}


FIRST_RELAYS_PER_LINK_PER_S = 5.0  # announces of origins new to us passed on to every link, per arrival link
FIRST_RELAYS_PER_S = 10.0  # ... and in all (bursts of 10 s worth); beyond, to phones only until a later announce
MAX_FIRST_RELAY_LINKS = 256  # arrival links whose first-relay budget is remembered


class AnnounceRelays:
    """Announce relay suppression (see :meth:`decide`), bounded by ``max_entries`` origins."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        # origin -> (when we last relayed its announce, SHA-256 of that announce's payload, relays so far)
        self._last: OrderedDict[bytes, tuple[float, bytes, int]] = OrderedDict()
        # Identities are free: every new one's announce would be a mesh-wide flood. Budget per arrival link and
        # in total for announces of origins we have not relayed before.
        self.first_relays = OriginLimiter(
            per_origin_per_s=FIRST_RELAYS_PER_LINK_PER_S,
            burst=10 * FIRST_RELAYS_PER_LINK_PER_S,
            global_per_s=FIRST_RELAYS_PER_S,
            global_burst=10 * FIRST_RELAYS_PER_S,
            max_origins=MAX_FIRST_RELAY_LINKS,
        )

    def __len__(self) -> int:
        return len(self._last)

    def decide(
        self,
        origin: bytes,
        payload: bytes,
        now: float,
        *,
        interval_s: float,
        early_interval_s: float,
        link_id: str = "",
    ) -> str:
        """``"all"`` (pass the announce on to every link) or ``"phones"`` (only to BitChat phones).

        Pass on an origin's announce if it is the first we see, if it changed (at most every
        ANNOUNCE_CHANGE_GAP_S) or if the relay interval has passed since we last passed one on. ``interval_s`` is
        the relay interval; ``early_interval_s`` the one for an origin's first LOSSY_EARLY_RELAYS relays (shorter
        in a lossy neighbourhood, so nodes near the TTL horizon get several chances to learn it). An origin's first
        relay is within the first-relay budget of its arrival link ``link_id`` and in total: beyond, ``"phones"``
        and nothing remembered (its next announce gets another chance)."""
        digest = hashlib.sha256(payload).digest()  # 32 bytes per origin, however large the payload
        last = self._last.get(origin)
        relays = 1
        if last is not None:
            age = now - last[0]
            relays = last[2] + 1
            if age < 0:
                pass  # the clock went back: relay, and start over
            elif last[1] == digest:
                interval = early_interval_s if last[2] < LOSSY_EARLY_RELAYS else interval_s
                if age < interval:
                    return "phones"
            elif age < ANNOUNCE_CHANGE_GAP_S:
                return "phones"
        elif not self.first_relays.allow(link_id.encode(), now):
            return "phones"
        self._last[origin] = (now, digest, relays)
        self._last.move_to_end(origin)
        while len(self._last) > self.max_entries:
            self._last.popitem(last=False)
        return "all"

    def next_deadline(self) -> float | None:
        return None  # nothing here expires on a timer: entries are replaced or evicted

    def bounded_sizes(self) -> dict[str, tuple[int, int]]:
        return {
            "announce_relays": (len(self._last), self.max_entries),
            **self.first_relays.bounded_sizes("announce_first_relay_links"),
        }
