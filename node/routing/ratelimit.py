"""Token buckets per origin and globally: how often remote input may make this node originate a flood.

One frame from anyone (a ciphertext from a sender we hold no session with, a directed ping from afar, a courier
envelope sealed by a throwaway key) can make the node start a handshake or answer on every link. Such answers
are rate-limited per origin (``per_origin_per_s``, burst ``burst``) and in total (``global_per_s``, burst
``global_burst``), so however many identities an attacker makes, the floods it causes are bounded. The table of
origins is bounded (``max_origins``, least recently used forgotten: a forgotten origin starts with a full bucket,
which the global bucket still bounds). Sans-IO.
"""

from __future__ import annotations

from collections import OrderedDict


class OriginLimiter:
    def __init__(
        self, *, per_origin_per_s: float, burst: float, global_per_s: float, global_burst: float, max_origins: int
    ) -> None:
        self.per_origin_per_s = per_origin_per_s
        self.burst = burst
        self.global_per_s = global_per_s
        self.global_burst = global_burst
        self.max_origins = max_origins
        self._origins: OrderedDict[bytes, tuple[float, float]] = OrderedDict()  # origin -> (tokens, at)
        self._global: tuple[float, float] | None = None

    def __len__(self) -> int:
        return len(self._origins)

    @staticmethod
    def _refill(state: tuple[float, float] | None, now: float, rate: float, burst: float) -> float:
        if state is None:
            return burst
        tokens, at = state
        return min(burst, tokens + max(0.0, now - at) * rate)

    def can(self, origin: bytes, now: float) -> bool:
        """Whether :meth:`allow` would let ``origin`` through now (nothing is taken)."""
        mine = self._refill(self._origins.get(origin), now, self.per_origin_per_s, self.burst)
        total = self._refill(self._global, now, self.global_per_s, self.global_burst)
        return mine >= 1.0 and total >= 1.0

    def allow(self, origin: bytes, now: float) -> bool:
        """Take one token from ``origin``'s bucket and the global one; False (nothing taken) if either is empty."""
        mine = self._refill(self._origins.get(origin), now, self.per_origin_per_s, self.burst)
        total = self._refill(self._global, now, self.global_per_s, self.global_burst)
        if mine < 1.0 or total < 1.0:
            return False
        self._origins[origin] = (mine - 1.0, now)
        self._origins.move_to_end(origin)
        while len(self._origins) > self.max_origins:
            self._origins.popitem(last=False)
        self._global = (total - 1.0, now)
        return True

    def bounded_sizes(self, name: str) -> dict[str, tuple[int, int]]:
        return {name: (len(self._origins), self.max_origins)}
