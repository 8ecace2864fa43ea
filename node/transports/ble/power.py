"""BLE power modes: how long the radio scans and advertises, chosen from config and battery state.

Three plans (``performance``, ``balanced``, ``saver``) give scan and advertise on/off windows, the advertising
interval and a cap on central links. ``ble.power_mode = "auto"`` picks one from the battery:

* external power (a mains/USB supply online, or a battery charging, full or "not charging") → ``performance``;
* on battery → ``balanced``; below :data:`SAVER_BELOW_PERCENT` → ``saver``, and back to ``balanced`` only
  above :data:`SAVER_EXIT_PERCENT` (hysteresis, so a battery hovering at the threshold does not flap);
* battery state unknown (no ``/sys/class/power_supply`` entries, no Termux) → ``balanced``.

Everything here is pure (plans, parsing, selection, "is the radio on at time t") except :func:`read_battery`,
a thin reader of ``/sys/class/power_supply/*`` (root injectable) and of Termux's ``termux-battery-status``
JSON. It blocks (file reads, a subprocess): call it through ``trio.to_thread.run_sync`` with a limiter.

Figures are BitChat's (``BITCHAT.md`` §4): Android scans 8 s on / 2 s off normally and 2 on / 28 off in power
save; iOS scans continuously with few links and 5 on / 10 off otherwise. Advertising is what lets iPhones in
the background find a Linux node (we must be a peripheral), so no mode switches it off: the modes differ in the
advertising interval instead, as Android's advertise modes do (low latency ~100 ms, balanced ~250 ms, low power
~1 s). Scanning is what costs the battery.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

SYSFS_POWER_SUPPLY = Path("/sys/class/power_supply")
TERMUX_BATTERY_COMMAND = "termux-battery-status"
TERMUX_TIMEOUT_S = 5.0  # the Termux:API app answers in well under a second; a missing app makes it hang
SAVER_BELOW_PERCENT = 20  # auto: on battery below this → saver
SAVER_EXIT_PERCENT = 25  # auto: leave saver only above this (hysteresis)
SAVER_MAX_CENTRAL_LINKS = 2  # saver keeps at most this many outbound links (BitChat Android ultra-low: 2)
BATTERY_POLL_S = 60.0  # how often a running node re-reads the battery for power_mode = auto


class PowerMode(StrEnum):
    PERFORMANCE = "performance"
    BALANCED = "balanced"
    SAVER = "saver"


@dataclass(frozen=True, slots=True)
class DutyCycle:
    """A repeating window: on for ``on_s``, then off for ``off_s``. ``off_s == 0`` means always on."""

    on_s: float
    off_s: float

    @property
    def continuous(self) -> bool:
        return self.off_s == 0

    @property
    def period_s(self) -> float:
        return self.on_s + self.off_s

    @property
    def fraction_on(self) -> float:
        return 1.0 if self.continuous else self.on_s / self.period_s

    def is_on(self, t: float) -> bool:
        """On at time ``t`` (seconds since the plan started)?"""
        return self.continuous or (t % self.period_s) < self.on_s

    def next_change(self, t: float) -> float:
        """The first time after ``t`` at which :meth:`is_on` changes (``inf`` when it never does)."""
        if self.continuous:
            return math.inf
        start = math.floor(t / self.period_s) * self.period_s
        phase = t - start
        return start + (self.on_s if phase < self.on_s else self.period_s)


@dataclass(frozen=True, slots=True)
class RadioPlan:
    mode: PowerMode
    scan: DutyCycle
    advertise: DutyCycle
    advertise_interval_ms: int  # time between advertising packets while advertising is on
    max_central_links: int  # outbound links kept (the config's value, capped in saver)

    def scanning(self, t: float) -> bool:
        return self.scan.is_on(t)

    def advertising(self, t: float) -> bool:
        return self.advertise.is_on(t)

    def next_change(self, t: float) -> float:
        """When scanning or advertising next starts or stops (for the adapter's one timer)."""
        return min(self.scan.next_change(t), self.advertise.next_change(t))


def plan_for(mode: PowerMode, max_central_links: int) -> RadioPlan:
    """The radio plan of ``mode``, with ``max_central_links`` from ``ble.max_central_links``."""
    if mode is PowerMode.PERFORMANCE:
        return RadioPlan(mode, DutyCycle(1.0, 0.0), DutyCycle(1.0, 0.0), 100, max_central_links)
    if mode is PowerMode.BALANCED:
        return RadioPlan(mode, DutyCycle(8.0, 2.0), DutyCycle(1.0, 0.0), 250, max_central_links)
    return RadioPlan(
        mode, DutyCycle(2.0, 28.0), DutyCycle(1.0, 0.0), 1000, min(max_central_links, SAVER_MAX_CENTRAL_LINKS)
    )


# ---------------------------------------------------------------- battery state
@dataclass(frozen=True, slots=True)
class BatteryState:
    """What is known about the power source. ``None`` fields are unknown."""

    percent: int | None  # 0..100, the mean over the system's batteries
    external_power: bool | None  # True: mains/USB/charging; False: running on the battery
    source: str  # "sysfs" or "termux"


_EXTERNAL_STATUSES = {"charging", "full", "not charging"}  # "not charging": plugged in, held by a charge limit
_SUPPLY_TYPES = {"mains", "usb", "wireless"}  # power_supply types that feed the system when online


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _battery_percent(supply: Path) -> int | None:
    capacity = _int(_read(supply / "capacity"))
    if capacity is not None:
        return max(0, min(100, capacity))
    for now_name, full_name in (("energy_now", "energy_full"), ("charge_now", "charge_full")):
        now, full = _int(_read(supply / now_name)), _int(_read(supply / full_name))
        if now is not None and full:
            return max(0, min(100, round(100 * now / full)))
    return None


def battery_from_sysfs(root: Path = SYSFS_POWER_SUPPLY) -> BatteryState | None:
    """Read ``<root>/*/{type,online,status,capacity,scope}`` (the kernel's power_supply class).

    Device-scoped supplies (a mouse's battery) are ignored. Returns None when nothing there says anything
    about the system's power (no entries: a desktop, a Pi, a container)."""
    try:
        supplies = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return None
    percents: list[int] = []
    external: bool | None = None
    for supply in supplies:
        if (_read(supply / "scope") or "").lower() == "device":
            continue
        kind = (_read(supply / "type") or "").lower()
        if kind == "battery":
            pct = _battery_percent(supply)
            if pct is not None:
                percents.append(pct)
            status = (_read(supply / "status") or "").lower()
            if status in _EXTERNAL_STATUSES:
                external = True
            elif status == "discharging" and external is None:
                external = False
        elif kind in _SUPPLY_TYPES or kind.startswith("usb"):
            online = _int(_read(supply / "online"))
            if online == 1:
                external = True
            elif online == 0 and external is None:
                external = False
    if not percents and external is None:
        return None
    percent = round(sum(percents) / len(percents)) if percents else None
    return BatteryState(percent, external, "sysfs")


def parse_termux_battery(text: str) -> BatteryState | None:
    """Parse ``termux-battery-status`` output: a JSON object with ``percentage`` (0..100), ``plugged``
    (``UNPLUGGED``, ``PLUGGED_AC``, ``PLUGGED_USB``, ``PLUGGED_WIRELESS``) and ``status`` (``CHARGING``,
    ``DISCHARGING``, ``FULL``, ``NOT_CHARGING``). Returns None for anything that is not such an object."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pct = data.get("percentage")
    percent = max(0, min(100, int(pct))) if isinstance(pct, int | float) and not isinstance(pct, bool) else None
    plugged = data.get("plugged")
    status = data.get("status")
    external: bool | None = None
    if isinstance(plugged, str) and plugged:
        external = plugged.upper() != "UNPLUGGED"
    elif isinstance(status, str) and status:
        external = status.upper().replace("_", " ").lower() in _EXTERNAL_STATUSES
    if percent is None and external is None:
        return None
    return BatteryState(percent, external, "termux")


def read_battery(
    sysfs_root: Path = SYSFS_POWER_SUPPLY,
    *,
    termux_command: str = TERMUX_BATTERY_COMMAND,
    search_path: str | None = None,
) -> BatteryState | None:
    """The battery state from sysfs, else from Termux (``termux-battery-status`` found on ``search_path``,
    default ``$PATH``), else None.

    Blocking (file reads; the Termux command may take a moment): call through ``trio.to_thread.run_sync``."""
    state = battery_from_sysfs(sysfs_root)
    if state is not None:
        return state
    exe = shutil.which(termux_command, path=search_path)
    if exe is None:
        return None
    try:
        done = subprocess.run([exe], capture_output=True, text=True, timeout=TERMUX_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return parse_termux_battery(done.stdout)


# ---------------------------------------------------------------- mode selection
def choose_mode(configured: str, battery: BatteryState | None, previous: PowerMode | None = None) -> PowerMode:
    """The mode to run in. ``configured`` is ``ble.power_mode``; only ``auto`` looks at the battery.
    ``previous`` is the mode chosen last time (for the saver hysteresis)."""
    if configured != "auto":
        return PowerMode(configured)
    if battery is None:
        return PowerMode.BALANCED
    if battery.external_power:
        return PowerMode.PERFORMANCE
    if battery.percent is None:
        return PowerMode.BALANCED
    if battery.percent < SAVER_BELOW_PERCENT:
        return PowerMode.SAVER
    if previous is PowerMode.SAVER and battery.percent <= SAVER_EXIT_PERCENT:
        return PowerMode.SAVER
    return PowerMode.BALANCED


@dataclass(slots=True)
class PowerGovernor:
    """Keeps the current plan and tells when a new battery reading changes it (sans-IO: the caller reads the
    battery every :data:`BATTERY_POLL_S` seconds and feeds the result)."""

    configured: str  # ble.power_mode
    max_central_links: int  # ble.max_central_links
    plan: RadioPlan | None = None

    def update(self, battery: BatteryState | None) -> RadioPlan | None:
        """Feed a reading; returns the new plan when the mode changed (the first call always returns one)."""
        previous = self.plan.mode if self.plan is not None else None
        mode = choose_mode(self.configured, battery, previous)
        if mode is previous:
            return None
        self.plan = plan_for(mode, self.max_central_links)
        return self.plan

    @property
    def follows_battery(self) -> bool:
        return self.configured == "auto"


def describe(plan: RadioPlan) -> str:
    """One line for logs and `village ble doctor`."""

    def cycle(c: DutyCycle) -> str:
        return "continuously" if c.continuous else f"{c.on_s:g} s of every {c.period_s:g} s"

    return (
        f"{plan.mode}: scan {cycle(plan.scan)}, advertise {cycle(plan.advertise)} every "
        f"{plan.advertise_interval_ms} ms, at most {plan.max_central_links} central link(s)"
    )
