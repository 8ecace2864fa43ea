"""BLE power modes: plans, duty-cycle timing, battery parsing from real file formats, and mode selection."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import pytest

from node.transports.ble.power import (
    SAVER_MAX_CENTRAL_LINKS,
    BatteryState,
    DutyCycle,
    PowerGovernor,
    PowerMode,
    battery_from_sysfs,
    choose_mode,
    describe,
    parse_termux_battery,
    plan_for,
    read_battery,
)


# ---------------------------------------------------------------- plans
def test_plans_follow_bitchat_figures() -> None:
    perf, bal, saver = (plan_for(m, 6) for m in PowerMode)
    assert perf.scan.continuous and perf.advertise.continuous and perf.advertise_interval_ms == 100
    assert (bal.scan.on_s, bal.scan.off_s) == (8.0, 2.0)  # Android normal scan duty
    assert bal.advertise.continuous and bal.advertise_interval_ms == 250
    assert (saver.scan.on_s, saver.scan.off_s) == (2.0, 28.0)  # Android power save
    assert saver.advertise.continuous and saver.advertise_interval_ms == 1000  # iPhones must still find us
    assert perf.max_central_links == bal.max_central_links == 6
    assert saver.max_central_links == SAVER_MAX_CENTRAL_LINKS
    assert plan_for(PowerMode.SAVER, 1).max_central_links == 1  # the cap never raises the config's value
    # every step down scans no more and advertises no more often
    assert perf.scan.fraction_on > bal.scan.fraction_on > saver.scan.fraction_on
    assert perf.advertise_interval_ms < bal.advertise_interval_ms < saver.advertise_interval_ms


def test_duty_cycle_on_off_and_next_change() -> None:
    c = DutyCycle(2.0, 28.0)
    assert [c.is_on(t) for t in (0.0, 1.99, 2.0, 29.99, 30.0, 31.5, 32.0)] == [
        True, True, False, False, True, True, False,
    ]  # fmt: skip
    assert c.next_change(0.0) == 2.0
    assert c.next_change(2.0) == 30.0
    assert c.next_change(29.0) == 30.0
    assert c.next_change(30.0) == 32.0
    always = DutyCycle(1.0, 0.0)
    assert always.is_on(12345.6) and always.next_change(5.0) == math.inf and always.fraction_on == 1.0


def test_plan_next_change_is_the_earlier_of_scan_and_advertise() -> None:
    saver = plan_for(PowerMode.SAVER, 6)
    assert saver.scanning(1.0) and saver.advertising(1.0)
    assert saver.next_change(1.0) == 2.0  # scan stops
    assert not saver.scanning(10.0) and saver.advertising(10.0)
    assert saver.next_change(10.0) == 30.0  # scan starts again; advertising never changes
    assert plan_for(PowerMode.PERFORMANCE, 6).next_change(3.0) == math.inf


def test_describe_is_plain_words() -> None:
    assert describe(plan_for(PowerMode.SAVER, 6)) == (
        "saver: scan 2 s of every 30 s, advertise continuously every 1000 ms, at most 2 central link(s)"
    )
    assert describe(plan_for(PowerMode.PERFORMANCE, 4)).startswith("performance: scan continuously")


# ---------------------------------------------------------------- sysfs
def _supply(root: Path, name: str, **files: str) -> None:
    d = root / name
    d.mkdir(parents=True)
    for key, value in files.items():
        (d / key).write_text(value + "\n")  # the kernel ends every attribute with a newline


def test_sysfs_laptop_on_battery(tmp_path: Path) -> None:
    _supply(tmp_path, "AC", type="Mains", online="0")
    _supply(tmp_path, "BAT0", type="Battery", status="Discharging", capacity="57", present="1")
    assert battery_from_sysfs(tmp_path) == BatteryState(57, False, "sysfs")


def test_sysfs_laptop_plugged_in(tmp_path: Path) -> None:
    _supply(tmp_path, "ADP1", type="Mains", online="1")
    _supply(tmp_path, "BAT0", type="Battery", status="Not charging", capacity="80")
    assert battery_from_sysfs(tmp_path) == BatteryState(80, True, "sysfs")


def test_sysfs_two_batteries_and_energy_counters(tmp_path: Path) -> None:
    _supply(tmp_path, "BAT0", type="Battery", status="Discharging", capacity="30")
    # no capacity file: percent from energy_now / energy_full (µWh)
    _supply(tmp_path, "BAT1", type="Battery", status="Discharging", energy_now="45000000", energy_full="50000000")
    assert battery_from_sysfs(tmp_path) == BatteryState(60, False, "sysfs")  # mean of 30 and 90


def test_sysfs_phone_style_usb_charging(tmp_path: Path) -> None:
    _supply(tmp_path, "battery", type="Battery", status="Charging", capacity="12")
    _supply(tmp_path, "usb", type="USB", online="1")
    assert battery_from_sysfs(tmp_path) == BatteryState(12, True, "sysfs")


def test_sysfs_ignores_peripheral_batteries_and_garbage(tmp_path: Path) -> None:
    _supply(tmp_path, "hidpp_battery_0", type="Battery", scope="Device", status="Discharging", capacity="5")
    assert battery_from_sysfs(tmp_path) is None  # a mouse's battery says nothing about ours
    _supply(tmp_path, "BAT0", type="Battery", status="Unknown", capacity="not-a-number")
    assert battery_from_sysfs(tmp_path) is None
    _supply(tmp_path, "BAT1", type="Battery", status="Full", capacity="250")
    assert battery_from_sysfs(tmp_path) == BatteryState(100, True, "sysfs")  # clamped


def test_sysfs_absent_or_empty(tmp_path: Path) -> None:
    assert battery_from_sysfs(tmp_path / "missing") is None
    assert battery_from_sysfs(tmp_path) is None  # a Pi or a container: the class exists, nothing in it


# ---------------------------------------------------------------- Termux
TERMUX_UNPLUGGED = """{
  "health": "GOOD",
  "percentage": 15,
  "plugged": "UNPLUGGED",
  "status": "DISCHARGING",
  "temperature": 29.100000381469727,
  "current": -297000
}
"""


def test_termux_parse() -> None:
    assert parse_termux_battery(TERMUX_UNPLUGGED) == BatteryState(15, False, "termux")
    charging = TERMUX_UNPLUGGED.replace('"UNPLUGGED"', '"PLUGGED_USB"').replace('"DISCHARGING"', '"CHARGING"')
    assert parse_termux_battery(charging) == BatteryState(15, True, "termux")
    assert parse_termux_battery('{"percentage": 88, "status": "FULL"}') == BatteryState(88, True, "termux")
    assert parse_termux_battery('{"percentage": 88, "status": "NOT_CHARGING"}') == BatteryState(88, True, "termux")
    for junk in ("", "not json", "[1, 2]", '{"health": "GOOD"}', '{"percentage": true}'):
        assert parse_termux_battery(junk) is None, junk


def _fake_termux(bin_dir: Path, body: str) -> None:
    exe = bin_dir / "termux-battery-status"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


def test_read_battery_runs_termux_when_sysfs_says_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_termux(bin_dir, f"cat <<'JSON'\n{TERMUX_UNPLUGGED}JSON\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    empty_sysfs = tmp_path / "sys"
    empty_sysfs.mkdir()
    assert read_battery(empty_sysfs) == BatteryState(15, False, "termux")
    # sysfs wins when it knows something
    _supply(empty_sysfs, "BAT0", type="Battery", status="Discharging", capacity="70")
    assert read_battery(empty_sysfs) == BatteryState(70, False, "sysfs")


def test_read_battery_unknown_when_termux_fails_or_is_absent(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sysfs = tmp_path / "sys"
    sysfs.mkdir()
    assert read_battery(sysfs, search_path=str(bin_dir)) is None  # no termux-battery-status
    _fake_termux(bin_dir, "echo 'Termux:API is not installed' >&2\nexit 1\n")
    assert read_battery(sysfs, search_path=str(bin_dir)) is None


# ---------------------------------------------------------------- selection
@pytest.mark.parametrize(
    ("battery", "mode"),
    [
        (None, PowerMode.BALANCED),
        (BatteryState(None, None, "sysfs"), PowerMode.BALANCED),
        (BatteryState(5, True, "sysfs"), PowerMode.PERFORMANCE),
        (BatteryState(None, True, "sysfs"), PowerMode.PERFORMANCE),
        (BatteryState(90, False, "sysfs"), PowerMode.BALANCED),
        (BatteryState(20, False, "termux"), PowerMode.BALANCED),
        (BatteryState(19, False, "termux"), PowerMode.SAVER),
        (BatteryState(None, False, "sysfs"), PowerMode.BALANCED),
    ],
)
def test_auto_mode_from_battery(battery: BatteryState | None, mode: PowerMode) -> None:
    assert choose_mode("auto", battery) is mode


def test_configured_mode_ignores_the_battery() -> None:
    low = BatteryState(3, False, "sysfs")
    assert choose_mode("performance", low) is PowerMode.PERFORMANCE
    assert choose_mode("balanced", BatteryState(100, True, "sysfs")) is PowerMode.BALANCED
    assert choose_mode("saver", None) is PowerMode.SAVER


def test_saver_hysteresis() -> None:
    assert choose_mode("auto", BatteryState(22, False, "sysfs"), PowerMode.SAVER) is PowerMode.SAVER
    assert choose_mode("auto", BatteryState(25, False, "sysfs"), PowerMode.SAVER) is PowerMode.SAVER
    assert choose_mode("auto", BatteryState(26, False, "sysfs"), PowerMode.SAVER) is PowerMode.BALANCED
    assert choose_mode("auto", BatteryState(22, False, "sysfs"), PowerMode.BALANCED) is PowerMode.BALANCED
    assert choose_mode("auto", BatteryState(22, True, "sysfs"), PowerMode.SAVER) is PowerMode.PERFORMANCE


def test_governor_reports_only_changes() -> None:
    gov = PowerGovernor("auto", 6)
    assert gov.follows_battery
    first = gov.update(BatteryState(50, False, "sysfs"))
    assert first is not None and first.mode is PowerMode.BALANCED
    assert gov.update(BatteryState(40, False, "sysfs")) is None
    low = gov.update(BatteryState(18, False, "sysfs"))
    assert low is not None and low.mode is PowerMode.SAVER and low.max_central_links == 2
    assert gov.update(BatteryState(24, False, "sysfs")) is None  # still saver (hysteresis)
    plugged = gov.update(BatteryState(24, True, "sysfs"))
    assert plugged is not None and plugged.mode is PowerMode.PERFORMANCE and gov.plan is plugged
    fixed = PowerGovernor("saver", 6)
    assert not fixed.follows_battery
    assert fixed.update(None) == plan_for(PowerMode.SAVER, 6) and fixed.update(BatteryState(99, True, "x")) is None
