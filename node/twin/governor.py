"""The learning governor: learning runs only when the device can afford it.

Sans-IO core (:class:`Governor`): fed readings (battery, temperature) and the CPU seconds learning spent, with
``now`` injected; answers :meth:`Governor.decide` with ``allowed`` and a human reason (shown by
``village twin status``). Learning is paused when

* the battery is below ``min_battery_percent`` and not on external power (or not charging while
  ``require_charging``);
* the hottest thermal zone is above ``max_temp_c``;
* learning used more than ``cpu_budget_s_per_hour`` CPU seconds in the last hour (sliding window, per minute).

Events that arrive while paused wait in a :class:`DeferredQueue`, bounded in entries and bytes (oldest dropped
first, counted), and are learned when the governor allows again.

Readers (blocking, for ``trio.to_thread``): :func:`read_temperature_c` over ``/sys/class/thermal`` and the BLE
power reader's :func:`node.transports.ble.power.read_battery` (sysfs, then Termux). Both take a root so tests
use fake sysfs trees.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from node.transports.ble.power import BatteryState

SYSFS_THERMAL = Path("/sys/class/thermal")
WINDOW_S = 3600.0  # the CPU budget's window
SLOT_S = 60.0  # the window is kept as per-minute totals (at most 60 slots)
MAX_THERMAL_ZONES = 64  # more zones than this are not read


@dataclass(frozen=True, slots=True)
class GovernorLimits:
    min_battery_percent: int = 30
    require_charging: bool = False
    max_temp_c: float = 45.0
    cpu_budget_s_per_hour: float = 60.0


@dataclass(frozen=True, slots=True)
class Readings:
    battery: BatteryState | None  # None: no battery information (a desktop, a Pi on mains)
    temp_c: float | None  # the hottest thermal zone; None when there is none


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


@dataclass(slots=True)
class Governor:
    limits: GovernorLimits
    readings: Readings = Readings(None, None)
    _slots: deque[tuple[float, float]] = field(default_factory=deque)  # (slot start, cpu seconds)

    def update(self, readings: Readings) -> None:
        self.readings = readings

    def charge(self, cpu_s: float, now: float) -> None:
        """Learning spent ``cpu_s`` CPU seconds at ``now``."""
        start = now - (now % SLOT_S)
        if self._slots and self._slots[-1][0] == start:
            self._slots[-1] = (start, self._slots[-1][1] + cpu_s)
        else:
            self._slots.append((start, cpu_s))
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._slots and self._slots[0][0] <= now - WINDOW_S:
            self._slots.popleft()

    def cpu_used_s(self, now: float) -> float:
        self._expire(now)
        return sum(s for _, s in self._slots)

    def decide(self, now: float) -> Decision:
        lim, r = self.limits, self.readings
        b = r.battery
        if b is not None:
            if lim.require_charging and b.external_power is not True:
                return Decision(False, "waiting for the charger (twin.require_charging)")
            if b.external_power is not True and b.percent is not None and b.percent < lim.min_battery_percent:
                return Decision(False, f"battery {b.percent} % < {lim.min_battery_percent} % and not charging")
        if r.temp_c is not None and r.temp_c > lim.max_temp_c:
            return Decision(False, f"too hot: {r.temp_c:.1f} °C > {lim.max_temp_c:.1f} °C")
        used = self.cpu_used_s(now)
        if used >= lim.cpu_budget_s_per_hour:
            return Decision(False, f"CPU budget spent: {used:.1f} s of {lim.cpu_budget_s_per_hour:.1f} s this hour")
        return Decision(True, "learning allowed")

    def next_budget_s(self, now: float) -> float:
        """Seconds until the oldest slot leaves the window (when a spent budget frees up)."""
        self._expire(now)
        return max(0.0, self._slots[0][0] + WINDOW_S - now) if self._slots else 0.0


def read_temperature_c(root: Path = SYSFS_THERMAL) -> float | None:
    """The hottest ``<root>/thermal_zone*/temp`` (millidegrees Celsius), or None. Blocking: use a thread."""
    try:
        zones = sorted(p for p in root.glob("thermal_zone*") if p.is_dir())[:MAX_THERMAL_ZONES]
    except OSError:
        return None
    temps = []
    for z in zones:
        try:
            text = (z / "temp").read_text(encoding="ascii").strip()
            milli = int(text)
        except (OSError, ValueError):
            continue
        if -50_000 <= milli <= 200_000:  # outside this a sensor reports garbage (e.g. -274000 when absent)
            temps.append(milli / 1000.0)
    return max(temps) if temps else None


T = TypeVar("T")


@dataclass(slots=True)
class DeferredQueue(Generic[T]):
    """Events waiting for the governor: at most ``max_entries`` and ``max_bytes``; oldest dropped first."""

    max_entries: int
    max_bytes: int
    _items: deque[tuple[T, int]] = field(default_factory=deque)
    bytes: int = 0
    dropped: int = 0

    def push(self, item: T, size_bytes: int) -> None:
        if size_bytes > self.max_bytes:
            self.dropped += 1
            return
        self._items.append((item, size_bytes))
        self.bytes += size_bytes
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            _, n = self._items.popleft()
            self.bytes -= n
            self.dropped += 1

    def pop(self) -> T | None:
        if not self._items:
            return None
        item, n = self._items.popleft()
        self.bytes -= n
        return item

    def __len__(self) -> int:
        return len(self._items)
