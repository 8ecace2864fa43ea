"""From ``[ble]`` to the node's BLE transport: on, off with one log line, or a failed start.

``village run`` calls :func:`ble_transport` once before the node starts:

* ``enabled = false``: returns None and touches nothing Bluetooth.
* otherwise it runs the doctor's checks (``doctor.py``) for ``ble.adapter``. When they fail, ``auto`` logs one
  line (``BLE off: <why> ...``) and returns None; ``true`` raises :class:`~node.errors.StartupError` with the
  reason in one line (``village run`` exits 1).
* when they pass it returns a :class:`ManagedBleTransport`: BLE-core's :class:`BleTransport` over the chosen
  adapter (BlueZ, or Bumble on ``ble.bumble_transport``), with the power plan ``ble.power_mode`` selects. If the
  adapter still fails to start (the checks cannot see everything — a dongle that does not answer), ``auto`` logs
  one line and the node runs on without BLE; ``true`` fails the start.

With ``power_mode = auto`` the managed transport re-reads the battery every :data:`~power.BATTERY_POLL_S`
seconds (in a worker thread: sysfs reads, maybe a ``termux-battery-status`` run) and hands a changed plan to the
transport.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Awaitable, Callable

import trio

from node.errors import StartupError
from node.settings import Config
from node.transports.base import LinkSink, Transport
from node.transports.ble.base import RadioAdapter, RadioUnavailable
from node.transports.ble.core import BleCounters, BleSettings
from node.transports.ble.doctor import Diagnosis, Probe, diagnose
from node.transports.ble.power import (
    BATTERY_POLL_S,
    BatteryState,
    PowerGovernor,
    RadioPlan,
    describe,
    plan_for,
    read_battery,
)
from node.transports.ble.settings import BleSection
from node.transports.ble.transport import BleTransport

log = logging.getLogger("village.ble")

BATTERY_READ_THREADS = 1  # one battery read at a time (it may run termux-battery-status)
DOCTOR_HINT = "`village ble doctor` shows what is missing and how to fix it"


def _find_spec_error(module: str) -> str | None:
    """Start-up variant of the doctor's library check: found, not imported (keeps `village run` fast)."""
    return None if importlib.util.find_spec(module) is not None else f"No module named {module!r}"


def start_probe() -> Probe:
    return Probe(import_probe=_find_spec_error)


def make_adapter(ble: BleSection, device_name: str) -> RadioAdapter:
    """The radio adapter ``ble.adapter`` names (imported here only: bleak/bless/bumble load on demand)."""
    if ble.adapter == "bumble":
        from node.transports.ble.bumble_adapter import BumbleAdapter

        return BumbleAdapter(transport_spec=ble.bumble_transport.strip(), name=device_name)
    from node.transports.ble.bluez import BluezAdapter

    return BluezAdapter(device_name)


def ble_settings(ble: BleSection, plan: RadioPlan | None) -> BleSettings:
    """The core's settings from ``[ble]``; ``max_central_links = 0`` means peripheral only, so no scanning."""
    return BleSettings(
        max_central_links=ble.max_central_links,
        rssi_min_dbm=ble.rssi_min_dbm,
        scan=ble.max_central_links > 0,
        plan=plan,
    )


async def follow_battery(
    governor: PowerGovernor,
    apply: Callable[[RadioPlan], None],
    read: Callable[[], Awaitable[BatteryState | None]],
    *,
    poll_s: float = BATTERY_POLL_S,
) -> None:
    """Every ``poll_s`` seconds ``read`` the battery and ``apply`` the plan when the mode changes."""
    while True:
        await trio.sleep(poll_s)
        plan = governor.update(await read())
        if plan is not None:
            log.info("BLE power: %s", describe(plan))
            apply(plan)


def threaded_reader(read: Callable[[], BatteryState | None]) -> Callable[[], Awaitable[BatteryState | None]]:
    """``read`` (blocking: sysfs, maybe a ``termux-battery-status`` run) in a worker thread, one at a time."""
    limiter = trio.CapacityLimiter(BATTERY_READ_THREADS)

    async def read_in_thread() -> BatteryState | None:
        return await trio.to_thread.run_sync(read, limiter=limiter)

    return read_in_thread


def _radio_unavailable(exc: BaseException) -> RadioUnavailable | None:
    """``exc`` itself, or the first leaf of an exception group made only of RadioUnavailable (the transport's
    nursery wraps its adapter's start failure); None when anything else is in there."""
    if isinstance(exc, RadioUnavailable):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_radio_unavailable(e) for e in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
    return None


class ManagedBleTransport(Transport):
    """:class:`BleTransport` plus the ``ble.enabled`` policy for an adapter that fails at start and, for
    ``power_mode = auto``, the battery follower."""

    def __init__(
        self,
        inner: BleTransport,
        governor: PowerGovernor,
        *,
        required: bool,
        read: Callable[[], BatteryState | None] = read_battery,
        poll_s: float = BATTERY_POLL_S,
    ) -> None:
        self.inner = inner
        self.governor = governor
        self.required = required
        self.running = False  # True once the adapter started
        self.off_reason = ""  # why BLE is off after a failed start under enabled = auto
        self._read = read
        self._poll_s = poll_s
        self._nursery: trio.Nursery | None = None
        self._follower: trio.CancelScope | None = None

    @property
    def name(self) -> str:
        return f"{self.inner.name} (off)" if self.off_reason else self.inner.name

    @property
    def counters(self) -> BleCounters:
        return self.inner.counters

    def listen_addresses(self) -> list[str]:
        return self.inner.listen_addresses()

    async def run(self, link_sink: LinkSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        failure: RadioUnavailable | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await nursery.start(self.inner.run, link_sink)
            except (RadioUnavailable, BaseExceptionGroup) as raised:
                failure = _radio_unavailable(raised)
                if failure is None:
                    raise
            else:
                self.running = True
                plan = self.governor.plan
                log.info(
                    "BLE on: %s adapter at %s; power %s",
                    self.inner.adapter.name,
                    self.inner.adapter.local_address or "?",
                    describe(plan) if plan else "continuous",
                )
                self._start_follower()
                task_status.started()
        self._nursery = None
        # Only a failed start gets here before cancellation (the nursery had no task left to wait for); raising
        # outside the nursery keeps the error unwrapped for the Node and `village run`.
        if failure is not None:
            if self.required:
                raise StartupError(f"BLE is required (ble.enabled = true) but did not start: {failure}") from failure
            self.off_reason = str(failure)
            log.info("BLE off: %s (ble.enabled = auto; %s)", failure, DOCTOR_HINT)
            task_status.started()

    def _start_follower(self) -> None:
        """(Re)start the battery follower for the current governor (stopping the previous one)."""
        if self._follower is not None:
            self._follower.cancel()
            self._follower = None
        if self._nursery is None or not self.governor.follows_battery:
            return
        scope = self._follower = trio.CancelScope()
        governor = self.governor

        async def follow() -> None:
            with scope:
                await follow_battery(governor, self.inner.set_plan, threaded_reader(self._read), poll_s=self._poll_s)

        self._nursery.start_soon(follow)

    def reconfigure(self, ble: BleSection) -> None:
        """Adopt a changed ``ble.power_mode`` / ``ble.max_central_links`` (a certified config change) at once.

        Under ``auto`` the current mode is kept until the follower's next battery reading (no blocking read
        here). ``max_central_links`` can only lower the cap the transport started with (``0`` at start means no
        scanning): raising it above that takes a restart."""
        g = self.governor
        if (ble.power_mode, ble.max_central_links) == (g.configured, g.max_central_links):
            return
        new = PowerGovernor(ble.power_mode, ble.max_central_links)
        if new.follows_battery and g.plan is not None:
            new.plan = plan_for(g.plan.mode, ble.max_central_links)
        else:
            new.update(None)
        self.governor = new
        if self.running and new.plan is not None:
            log.info("BLE power (reconfigured): %s", describe(new.plan))
            self.inner.set_plan(new.plan)
        self._start_follower()


def ble_transport(
    cfg: Config,
    default_nickname: str,
    *,
    check: Callable[[BleSection], Diagnosis] | None = None,
    read: Callable[[], BatteryState | None] = read_battery,
) -> ManagedBleTransport | None:
    """The node's BLE transport per ``cfg.ble`` (see the module docstring), or None. ``default_nickname`` is
    the node's announced name, the BLE device name unless ``ble.nickname`` is set. Blocking (the checks read
    sysfs and probe sockets): call it before ``trio.run``."""
    ble = cfg.ble
    if ble.enabled == "false":
        return None
    diagnosis = check(ble) if check is not None else diagnose(ble, start_probe(), power=False)
    if not diagnosis.usable:
        if ble.enabled == "true":
            raise StartupError(
                f"BLE is required (ble.enabled = true) but cannot work here: {diagnosis.summary()}; {DOCTOR_HINT}"
            )
        log.info("BLE off: %s (ble.enabled = auto; %s)", diagnosis.summary(), DOCTOR_HINT)
        return None
    governor = PowerGovernor(ble.power_mode, ble.max_central_links)
    plan = governor.update(read() if governor.follows_battery else None)
    adapter = make_adapter(ble, ble.nickname or default_nickname)
    return ManagedBleTransport(
        BleTransport(adapter, ble_settings(ble, plan)), governor, required=ble.enabled == "true", read=read
    )
