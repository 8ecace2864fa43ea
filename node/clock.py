"""The one place that reads the wall clock.

Protocol cores never read time; they take ``now`` (trio's monotonic clock, seconds) as an argument. The
only other notion of time the protocol needs is BitChat's wall-clock timestamp (milliseconds since the Unix
epoch) carried in every packet. :class:`Clock` bundles both so tests can pin the wall clock while
``trio.testing.MockClock`` drives the monotonic one: ``wall_ms()`` is derived from the trio clock plus a fixed
offset taken once at construction, so under the autojump clock wall time advances with simulated time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import trio


@dataclass
class Clock:
    """Monotonic seconds for timers (trio's clock) and wall-clock ms for packet timestamps."""

    # Wall-clock ms at trio-time 0; None means "take it from the system clock on first use".
    epoch_offset_ms: float | None = None
    _offset: float | None = field(default=None, init=False, repr=False)

    def now(self) -> float:
        """Trio's current time in seconds (monotonic; mocked in tests)."""
        return trio.current_time()

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch, consistent with :meth:`now`."""
        if self._offset is None:
            if self.epoch_offset_ms is not None:
                self._offset = self.epoch_offset_ms
            else:
                self._offset = time.time() * 1000.0 - trio.current_time() * 1000.0
        return int(self._offset + trio.current_time() * 1000.0)


def system_wall_ms() -> int:
    """Wall-clock ms outside trio (CLI, tooling)."""
    return int(time.time() * 1000)
