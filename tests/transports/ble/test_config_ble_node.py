"""Node wiring of `[ble]`: enabled = false / auto / true, adapter choice, settings and power plan from the config,
an adapter failing at start, the battery follower — and real `village run` daemons on this machine (no Bluetooth
in the kernel): auto logs one line and runs, true fails the start with a one-line reason."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from node.errors import StartupError
from node.settings import Config
from node.transports.base import Link
from node.transports.ble.bluez import BluezAdapter
from node.transports.ble.bumble_adapter import BumbleAdapter, open_bumble_world
from node.transports.ble.core import BleSettings
from node.transports.ble.doctor import Check, Diagnosis, hci_socket_error
from node.transports.ble.factory import ManagedBleTransport, ble_transport, follow_battery
from node.transports.ble.power import BatteryState, PowerGovernor, PowerMode, RadioPlan, plan_for
from node.transports.ble.settings import BleSection
from node.transports.ble.transport import BleTransport
from tests.test_cli import LOOPBACK_CONFIG, VILLAGE, WAIT_S, _notify_socket, village
from tests.transports.ble.harness import TIMEOUT_S

USABLE = Diagnosis("bluez", (Check("kernel", "Bluetooth in the kernel", True, "yes"),))
UNUSABLE = Diagnosis(
    "bluez",
    (Check("adapter", "Bluetooth adapter", False, "nothing", "there is no Bluetooth adapter", "plug one in"),),
)


def _cfg(**ble: object) -> Config:
    return Config(data_dir=Path("/nonexistent"), ble=BleSection(**ble))  # type: ignore[arg-type]


def _never(_ble: BleSection) -> Diagnosis:
    raise AssertionError("enabled = false must not probe anything")


# ---------------------------------------------------------------- the decision
def test_false_touches_nothing() -> None:
    assert ble_transport(_cfg(enabled="false"), "n", check=_never, read=lambda: None) is None


def test_auto_without_a_working_adapter_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        assert ble_transport(_cfg(), "n", check=lambda _b: UNUSABLE, read=lambda: None) is None
    assert [r.getMessage() for r in caplog.records] == [
        "BLE off: there is no Bluetooth adapter (ble.enabled = auto; `village ble doctor` shows what is missing "
        "and how to fix it)"
    ]


def test_true_without_a_working_adapter_fails_with_one_line() -> None:
    with pytest.raises(StartupError) as caught:
        ble_transport(_cfg(enabled="true"), "n", check=lambda _b: UNUSABLE, read=lambda: None)
    msg = str(caught.value)
    assert msg.startswith("BLE is required (ble.enabled = true) but cannot work here: there is no Bluetooth adapter")
    assert "\n" not in msg


def test_a_working_bluez_adapter_gets_the_configured_settings() -> None:
    t = ble_transport(
        _cfg(max_central_links=4, rssi_min_dbm=-80, power_mode="performance"),
        "village-ab12",
        check=lambda _b: USABLE,
        read=lambda: BatteryState(5, False, "sysfs"),  # ignored: the mode is fixed
    )
    assert isinstance(t, ManagedBleTransport) and not t.required
    assert isinstance(t.inner.adapter, BluezAdapter)
    s = t.inner.settings
    assert (s.max_central_links, s.rssi_min_dbm) == (4, -80)
    assert s.plan == plan_for(PowerMode.PERFORMANCE, 4)
    assert t.name == "ble" and not t.governor.follows_battery
    assert s.scan and s.advertise


def test_no_central_links_means_peripheral_only() -> None:
    t = ble_transport(_cfg(max_central_links=0), "n", check=lambda _b: USABLE, read=lambda: None)
    assert t is not None and not t.inner.settings.scan and t.inner.settings.advertise


def test_bumble_adapter_nickname_and_auto_power_from_the_battery() -> None:
    t = ble_transport(
        _cfg(enabled="true", adapter="bumble", bumble_transport="usb:0", nickname="shelf"),
        "village-ab12",
        check=lambda _b: USABLE,
        read=lambda: BatteryState(12, False, "termux"),
    )
    assert t is not None and t.required and t.governor.follows_battery
    assert isinstance(t.inner.adapter, BumbleAdapter)
    plan = t.inner.settings.plan
    assert plan is not None and plan.mode is PowerMode.SAVER and plan.max_central_links == 2


def test_real_checks_on_this_machine(caplog: pytest.LogCaptureFixture) -> None:
    if hci_socket_error() is None:
        pytest.skip("this kernel has Bluetooth: the no-Bluetooth start path is not reachable here")
    with caplog.at_level(logging.INFO, logger="village.ble"):
        assert ble_transport(_cfg(), "n", read=lambda: None) is None
    assert len(caplog.records) == 1 and "this kernel has no Bluetooth support" in caplog.records[0].getMessage()
    with pytest.raises(StartupError, match="this kernel has no Bluetooth support"):
        ble_transport(_cfg(enabled="true"), "n", read=lambda: None)


# ---------------------------------------------------------------- an adapter that fails at start
@pytest.fixture
def refused_port() -> Iterator[int]:
    with socket.socket() as s:  # bound, never listening: connecting is refused at once
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def _bumble_to(port: int, *, required: bool) -> ManagedBleTransport:
    adapter = BumbleAdapter(transport_spec=f"tcp-client:127.0.0.1:{port}", name="t")
    return ManagedBleTransport(BleTransport(adapter), PowerGovernor("balanced", 6), required=required)


async def test_auto_runs_on_when_the_adapter_fails_to_start(
    refused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    t = _bumble_to(refused_port, required=False)
    send, _recv = trio.open_memory_channel[Link](4)
    with caplog.at_level(logging.INFO, logger="village.ble"), trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(t.run, send)  # started, without BLE
    assert not t.running and "did not start" in t.off_reason and t.name == "ble (off)"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("BLE off: Bumble stack 't' did not start")


async def test_true_fails_the_start_when_the_adapter_fails(refused_port: int) -> None:
    t = _bumble_to(refused_port, required=True)
    send, _recv = trio.open_memory_channel[Link](4)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            with pytest.raises(StartupError, match=r"BLE is required \(ble.enabled = true\) but did not start"):
                await nursery.start(t.run, send)


# ---------------------------------------------------------------- power plans reach the transport
class _RecordingTransport(BleTransport):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.plans: list[RadioPlan | None] = []
        self.plan_changed = trio.Event()

    def set_plan(self, plan: RadioPlan | None) -> None:
        self.plans.append(plan)
        self.plan_changed.set()
        super().set_plan(plan)


async def test_managed_transport_links_up_and_follows_the_battery() -> None:
    readings = iter([BatteryState(50, False, "sysfs")])
    low = BatteryState(10, False, "sysfs")  # after the first reading, the battery stays at 10 %
    async with open_bumble_world() as world:
        gov_a = PowerGovernor("auto", 6)
        first = gov_a.update(BatteryState(50, False, "sysfs"))
        inner_a = _RecordingTransport(BumbleAdapter(world), BleSettings(advertise=False, plan=first))
        a = ManagedBleTransport(inner_a, gov_a, required=True, read=lambda: next(readings, low), poll_s=0.05)
        b = ManagedBleTransport(
            BleTransport(BumbleAdapter(world), BleSettings(scan=False)), PowerGovernor("performance", 6), required=True
        )
        a_send, a_recv = trio.open_memory_channel[Link](4)
        b_send, b_recv = trio.open_memory_channel[Link](4)
        async with trio.open_nursery() as nursery:
            # central first: at 9995064 a Bumble peripheral started before the central was never found (told BLE-core)
            await nursery.start(a.run, a_send)
            await nursery.start(b.run, b_send)
            assert a.running and b.running and a.name == "ble"
            with trio.fail_after(TIMEOUT_S):
                la, lb = await a_recv.receive(), await b_recv.receive()
                await la.send(b"hello over managed BLE")
                assert await lb.receive() == b"hello over managed BLE"
                await inner_a.plan_changed.wait()  # 50 % → still balanced (no call); 10 % → saver
            assert [p.mode if p else None for p in inner_a.plans] == [PowerMode.SAVER]
            assert a.counters.connects_started >= 1
            nursery.cancel_scope.cancel()


async def test_a_certified_power_change_reaches_the_running_radio() -> None:
    """Node.set_config (what a certified ble.* change calls) re-plans the running transport: the mode and a lower
    central-link cap take effect at once, and switching to auto starts the battery follower (review finding 5)."""
    async with open_bumble_world() as world:
        gov = PowerGovernor("balanced", 6)
        inner = _RecordingTransport(BumbleAdapter(world), BleSettings(advertise=False, plan=gov.update(None)))
        t = ManagedBleTransport(inner, gov, required=True, read=lambda: BatteryState(10, False, "sysfs"), poll_s=0.05)
        send, _recv = trio.open_memory_channel[Link](4)
        async with trio.open_nursery() as nursery:
            await nursery.start(t.run, send)
            assert t.running and inner.plans == []
            t.reconfigure(_cfg(power_mode="saver", max_central_links=2).ble)
            assert [p.mode if p else None for p in inner.plans] == [PowerMode.SAVER]
            assert inner._core is not None and inner._core.max_central_links == 2
            t.reconfigure(_cfg(power_mode="saver", max_central_links=2).ble)  # unchanged: nothing applied
            assert len(inner.plans) == 1
            inner.plan_changed = trio.Event()
            t.reconfigure(_cfg(power_mode="auto", max_central_links=6).ble)  # keeps saver until the battery says
            assert [p.mode if p else None for p in inner.plans] == [PowerMode.SAVER, PowerMode.SAVER]
            t.reconfigure(_cfg(power_mode="performance", max_central_links=6).ble)
            assert inner.plans[-1] is not None and inner.plans[-1].mode is PowerMode.PERFORMANCE
            nursery.cancel_scope.cancel()


async def test_follow_battery_applies_only_changes_on_its_period(autojump_clock: trio.testing.MockClock) -> None:
    applied: list[tuple[float, PowerMode]] = []
    readings = iter(
        [
            BatteryState(60, False, "sysfs"),  # balanced: same as the start plan, nothing applied
            BatteryState(15, False, "sysfs"),  # saver
            BatteryState(22, False, "sysfs"),  # saver still (hysteresis)
            BatteryState(22, True, "sysfs"),  # plugged in: performance
        ]
    )
    gov = PowerGovernor("auto", 6)
    gov.update(BatteryState(80, False, "sysfs"))
    t0 = trio.current_time()
    with trio.move_on_after(4 * 60.0 + 1):

        async def read() -> BatteryState | None:
            return next(readings)

        await follow_battery(gov, lambda p: applied.append((trio.current_time() - t0, p.mode)), read)
    assert applied == [(120.0, PowerMode.SAVER), (240.0, PowerMode.PERFORMANCE)]
    assert gov.plan is not None and gov.plan.mode is PowerMode.PERFORMANCE


# ---------------------------------------------------------------- real daemons on this machine
@pytest.fixture
def data_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vlg-", dir="/tmp"))  # short: Unix socket paths are limited
    data = d / "data"
    data.mkdir(mode=0o700)
    yield data
    subprocess.run(["rm", "-rf", str(d)], check=False)


def _no_bluetooth_here() -> None:
    if hci_socket_error() is None:
        pytest.skip("this machine's kernel has Bluetooth; these tests check starting without it")


def test_village_run_with_auto_logs_one_line_and_runs(data_dir: Path) -> None:
    _no_bluetooth_here()
    (data_dir / "config.toml").write_text(LOOPBACK_CONFIG + '[ble]\nenabled = "auto"\n')
    assert village("init", "--data-dir", str(data_dir)).returncode == 0
    notify = _notify_socket(data_dir.parent)
    env = {**os.environ, "NOTIFY_SOCKET": str(data_dir.parent / "notify.sock")}
    proc = subprocess.Popen([*VILLAGE, "run", "--data-dir", str(data_dir)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert notify.recv(64) == b"READY=1"
        status = json.loads(village("status", "--json", "--data-dir", str(data_dir)).stdout)
        assert status["transports"] == ["betanet"]
        assert village("stop", "--data-dir", str(data_dir)).returncode == 0
        _out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    assert proc.returncode == 0, err
    ble_lines = [line for line in err.splitlines() if "BLE" in line or "village.ble" in line]
    assert len(ble_lines) == 1, err
    assert "INFO village.ble: BLE off: this kernel has no Bluetooth support" in ble_lines[0]
    assert "village ble doctor" in ble_lines[0]


def test_village_run_with_true_fails_with_a_one_line_reason(data_dir: Path) -> None:
    _no_bluetooth_here()
    (data_dir / "config.toml").write_text(LOOPBACK_CONFIG + "[ble]\nenabled = true\n")
    assert village("init", "--data-dir", str(data_dir)).returncode == 0
    r = village("run", "--data-dir", str(data_dir))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "village: BLE is required (ble.enabled = true) but cannot work here: this kernel has no Bluetooth support, "
        "so no Bluetooth adapter can be used through it (and 4 more problems); `village ble doctor` shows what is "
        "missing and how to fix it"
    ]
    assert not (data_dir / "control.sock").exists()


def test_village_run_with_false_says_nothing_about_ble(data_dir: Path) -> None:
    (data_dir / "config.toml").write_text(LOOPBACK_CONFIG + "[ble]\nenabled = false\n")
    assert village("init", "--data-dir", str(data_dir)).returncode == 0
    notify = _notify_socket(data_dir.parent)
    env = {**os.environ, "NOTIFY_SOCKET": str(data_dir.parent / "notify.sock")}
    proc = subprocess.Popen([*VILLAGE, "run", "--data-dir", str(data_dir)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert notify.recv(64) == b"READY=1"
        assert village("stop", "--data-dir", str(data_dir)).returncode == 0
        _out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    assert proc.returncode == 0 and "BLE" not in err, err


def test_the_daemon_wires_config_changes_to_the_ble_transport(tmp_path: Path) -> None:
    from node.daemon import build_node
    from node.identity import Identity

    t = _bumble_to(1, required=False)  # never started: the governor is what a start would plan with
    node = build_node(_cfg(), Identity.generate(), plugins=(), transports=[t], control=False, persistent_inbox=False)
    node.set_config(node.config.with_sections(BleSection(power_mode="saver", max_central_links=3)))
    assert (t.governor.configured, t.governor.max_central_links) == ("saver", 3)
    assert t.governor.plan is not None and t.governor.plan.mode is PowerMode.SAVER
