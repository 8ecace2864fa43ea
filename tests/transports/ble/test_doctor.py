"""`village ble doctor`: every check judged from injected facts, the probes read from fake sysfs/proc trees and
a real dbus-daemon, and the real command on this machine (no Bluetooth in the kernel: it must say so)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.transports.ble.doctor import (
    CAP_NET_ADMIN,
    CAP_NET_RAW,
    AdapterInfo,
    Check,
    Diagnosis,
    Facts,
    Probe,
    RfkillInfo,
    dbus_auth_error,
    dbus_system_socket,
    diagnose,
    evaluate,
    gather_facts,
    hci_socket_error,
)
from node.transports.ble.settings import BleSection
from tests.test_cli import village

BLUEZ = BleSection()
GOOD = Facts(
    kernel_error=None,
    bluetoothd_path="/usr/libexec/bluetooth/bluetoothd",
    bluetoothd_running=True,
    dbus_socket="/run/dbus/system_bus_socket",
    dbus_error=None,
    adapters=(AdapterInfo("hci0", "B8:27:EB:00:00:01", True),),
    rfkill=(RfkillInfo("rfkill0", False, False),),
    euid=1000,
    effective_caps=0,
    groups=frozenset({"pi", "bluetooth"}),
    library_errors={"bleak": None, "bless": None, "bumble": None},
    bluez_version="5.66",
    usb_bluetooth=("1-1.3 (0a12:0001)",),
)


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _judge(ble: BleSection = BLUEZ, /, **changes: Any) -> Diagnosis:
    return Diagnosis(ble.adapter, tuple(evaluate(dataclasses.replace(GOOD, **changes), ble)))


# ---------------------------------------------------------------- judging facts
def test_a_working_raspberry_pi_passes_every_bluez_check() -> None:
    d = _judge()
    assert d.usable and d.problems == []
    assert [c.name for c in d.checks] == [
        "kernel", "bluez", "bluez_version", "bluetoothd", "dbus", "adapter", "rfkill", "powered", "permissions",
        "libraries",
    ]  # fmt: skip
    assert all(c.ok for c in d.checks)
    assert d.summary() == "BLE can work here with adapter = bluez"
    assert d.report().startswith("BLE can work here (adapter = bluez).")


@pytest.mark.parametrize(
    ("changes", "name", "problem", "fix"),
    [
        (
            {"kernel_error": "Address family not supported by protocol"},
            "kernel",
            "this kernel has no Bluetooth support",
            "CONFIG_BT",
        ),
        ({"kernel_error": "Operation not permitted"}, "kernel", "refused to open a Bluetooth socket", "CONFIG_BT"),
        ({"bluetoothd_path": None}, "bluez", "BlueZ is not installed", "sudo apt install bluez"),
        ({"bluetoothd_running": False}, "bluetoothd", "not running", "systemctl enable --now bluetooth"),
        (
            {"dbus_error": "/run/dbus/system_bus_socket does not exist"},
            "dbus",
            "cannot reach the D-Bus system bus",
            "sudo apt install dbus",
        ),
        ({"adapters": ()}, "adapter", "there is no Bluetooth adapter", "dtoverlay=disable-bt"),
        ({"adapters": (AdapterInfo("hci0", "", False),)}, "powered", "powered off", "bluetoothctl power on"),
        ({"rfkill": (RfkillInfo("rfkill0", True, False),)}, "rfkill", "blocked by rfkill", "rfkill unblock bluetooth"),
        ({"rfkill": (RfkillInfo("rfkill3", False, True),)}, "rfkill", "hardware switch", "wireless switch"),
        (
            {"library_errors": {"bleak": "ModuleNotFoundError: No module named 'bleak'", "bless": None}},
            "libraries",
            "bleak is not installed",
            "pip install 'aivillage[ble]'",
        ),
    ],
)
def test_each_bluez_problem_is_named_with_its_fix(
    changes: dict[str, object], name: str, problem: str, fix: str
) -> None:
    d = _judge(**changes)
    check = _by_name(list(d.checks))[name]
    assert not check.ok and check.required
    assert problem in check.problem and fix in check.fix
    assert not d.usable
    assert problem in d.summary()
    report = d.report()
    assert f"[FAIL] {check.title}" in report and f"problem: {check.problem}" in report and fix in report


def test_old_bluez_is_a_warning() -> None:
    d = _judge(bluez_version="5.55")
    check = _by_name(list(d.checks))["bluez_version"]
    assert not check.ok and not check.required and "before 5.62" in check.problem and d.usable
    assert "[warn] BlueZ version: BlueZ 5.55" in d.report()
    assert _by_name(list(_judge(bluez_version=None).checks))["bluez_version"].ok
    assert "bluez_version" not in _by_name(list(_judge(bluetoothd_path=None).checks))


def test_termux_gets_the_android_explanation(tmp_path: Path) -> None:
    env = {"PREFIX": "/data/data/com.termux/files/usr", "TERMUX_VERSION": "0.118.1"}
    facts = gather_facts(_fake_probe(tmp_path, env=env, kernel_probe=lambda: "Permission denied"))
    assert facts.termux
    kernel = _by_name(evaluate(facts, BLUEZ))["kernel"]
    assert "Android does not let apps (Termux included)" in kernel.problem
    assert "termux-usb" in kernel.fix and 'bumble_transport = "usb:0"' in kernel.fix


def test_no_adapter_is_one_problem_not_two() -> None:
    d = _judge(adapters=())
    assert [c.name for c in d.problems] == ["adapter"]  # "powered" is not judged without an adapter


def test_unknown_power_state_is_not_a_failure() -> None:
    d = _judge(adapters=(AdapterInfo("hci0", "", None),))
    powered = _by_name(list(d.checks))["powered"]
    assert powered.ok and not powered.required and d.usable


def test_several_problems_are_counted_in_the_summary() -> None:
    d = _judge(kernel_error="Address family not supported by protocol", adapters=(), bluetoothd_running=False)
    assert d.summary().startswith("this kernel has no Bluetooth support")
    assert d.summary().endswith("(and 2 more problems)")


def test_permissions_are_advice_for_bluez() -> None:
    ok_root = _by_name(evaluate(dataclasses.replace(GOOD, euid=0, groups=frozenset()), BLUEZ))["permissions"]
    assert ok_root.ok and ok_root.found == "running as root"
    caps = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
    with_caps = _by_name(evaluate(dataclasses.replace(GOOD, groups=frozenset(), effective_caps=caps), BLUEZ))
    assert with_caps["permissions"].ok
    d = _judge(groups=frozenset({"pi"}))
    perm = _by_name(list(d.checks))["permissions"]
    assert not perm.ok and not perm.required and "usermod -aG bluetooth" in perm.fix
    assert d.usable  # BlueZ's D-Bus policy decides; the doctor only warns
    assert "[warn] Permissions" in d.report()


def test_bumble_over_usb_needs_a_dongle_and_bumble() -> None:
    usb = BleSection(adapter="bumble", bumble_transport="usb:0")
    d = _judge(usb, kernel_error="Address family not supported by protocol", bluetoothd_path=None, dbus_error="x")
    assert d.usable  # USB dongles need neither the kernel's Bluetooth nor BlueZ
    assert [c.name for c in d.checks] == ["bumble_transport", "usb_dongle", "libraries"]
    d = _judge(usb, usb_bluetooth=())
    assert [c.name for c in d.problems] == ["usb_dongle"] and "no USB Bluetooth dongle" in d.summary()
    d = _judge(usb, library_errors={"bumble": "ModuleNotFoundError: No module named 'bumble'"})
    assert [c.name for c in d.problems] == ["libraries"] and "bumble is not installed" in d.summary()


def test_bumble_over_an_hci_socket_needs_the_kernel_adapter_and_capabilities() -> None:
    hci = BleSection(adapter="bumble", bumble_transport="hci-socket:0")
    d = _judge(hci)
    assert [c.name for c in d.checks] == [
        "bumble_transport", "kernel", "adapter", "rfkill", "permissions", "bluez_off", "libraries",
    ]  # fmt: skip
    bluez_off = _by_name(list(d.checks))["bluez_off"]
    assert not bluez_off.ok and not bluez_off.required and "systemctl disable --now bluetooth" in bluez_off.fix
    assert _by_name(list(_judge(hci, bluetoothd_running=False).checks))["bluez_off"].ok
    perm = _by_name(list(d.checks))["permissions"]
    assert not perm.ok and perm.required and "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW" in perm.fix
    caps = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
    assert _judge(hci, effective_caps=caps).usable
    assert not _judge(hci, effective_caps=1 << CAP_NET_RAW).usable


def test_bumble_serial_device_and_missing_transport() -> None:
    serial = BleSection(adapter="bumble", bumble_transport="serial:/dev/ttyUSB0,1000000")
    d = _judge(serial)
    assert [c.name for c in d.problems] == ["serial_device"] and "/dev/ttyUSB0 does not exist" in d.report()
    assert _judge(serial, serial_present=frozenset({"/dev/ttyUSB0"})).usable
    # config validation refuses this when BLE is on; the doctor still explains it
    empty = BleSection(enabled="false", adapter="bumble")
    assert [c.name for c in _judge(empty).problems] == ["bumble_transport"]


def test_json_record_shape() -> None:
    d = _judge(bluetoothd_running=False)
    data = json.loads(json.dumps(d.to_json()))
    assert data["adapter"] == "bluez" and data["usable"] is False
    assert data["summary"] == "the Bluetooth service is not running"
    rec = next(c for c in data["checks"] if c["name"] == "bluetoothd")
    assert set(rec) == {"name", "title", "ok", "required", "found", "problem", "fix"} and rec["ok"] is False


# ---------------------------------------------------------------- probes on fake trees
def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _fake_probe(root: Path, **kw: object) -> Probe:
    defaults: dict[str, object] = {
        "sys_root": root / "sys",
        "proc_root": root / "proc",
        "bluetoothd_paths": (str(root / "usr/libexec/bluetooth/bluetoothd"),),
        "env": {},
        "which": lambda _name: None,
        "kernel_probe": lambda: None,
        "up_probe": lambda index: index == 0,
        "dbus_probe": lambda _path, _uid: None,
        "import_probe": lambda _m: None,
        "euid": lambda: 1000,
        "groups": lambda: frozenset({"bluetooth"}),
        "version_probe": lambda _path: "5.66",
    }
    defaults.update(kw)
    return Probe(**defaults)  # type: ignore[arg-type]


def test_probe_reads_sysfs_and_proc(tmp_path: Path) -> None:
    sys_bt = tmp_path / "sys/class/bluetooth"
    _write(sys_bt / "hci0/address", "b8:27:eb:12:34:56")
    _write(sys_bt / "hci1/address", "00:1a:7d:da:71:13")
    (sys_bt / "hci0:64").mkdir()  # a connection entry, not an adapter
    _write(tmp_path / "sys/class/rfkill/rfkill0/type", "wlan")
    _write(tmp_path / "sys/class/rfkill/rfkill0/soft", "1")
    _write(tmp_path / "sys/class/rfkill/rfkill1/type", "bluetooth")
    _write(tmp_path / "sys/class/rfkill/rfkill1/soft", "1")
    _write(tmp_path / "sys/class/rfkill/rfkill1/hard", "0")
    _write(tmp_path / "sys/bus/usb/devices/1-1.3/bDeviceClass", "e0")
    _write(tmp_path / "sys/bus/usb/devices/1-1.3/idVendor", "0a12")
    _write(tmp_path / "sys/bus/usb/devices/1-1.3/idProduct", "0001")
    _write(tmp_path / "sys/bus/usb/devices/1-1.4/bDeviceClass", "00")  # class per interface
    _write(tmp_path / "sys/bus/usb/devices/1-1.4/1-1.4:1.0/bInterfaceClass", "e0")
    _write(tmp_path / "sys/bus/usb/devices/1-1.5/bDeviceClass", "09")  # a hub
    _write(tmp_path / "proc/1/comm", "systemd")
    _write(tmp_path / "proc/431/comm", "bluetoothd")
    _write(tmp_path / "proc/self/status", "Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t0000000000003000")
    _write(tmp_path / "usr/libexec/bluetooth/bluetoothd", "")
    facts = gather_facts(_fake_probe(tmp_path))
    assert facts.adapters == (
        AdapterInfo("hci0", "b8:27:eb:12:34:56", True),
        AdapterInfo("hci1", "00:1a:7d:da:71:13", False),
    )
    assert facts.rfkill == (RfkillInfo("rfkill1", True, False),)  # the wlan switch is not ours
    assert facts.bluetoothd_running and facts.bluetoothd_path == str(tmp_path / "usr/libexec/bluetooth/bluetoothd")
    assert facts.effective_caps == (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
    assert facts.usb_bluetooth == ("1-1.3 (0a12:0001)", "1-1.4 (?:?)")
    assert facts.bluez_version == "5.66"
    d = Diagnosis("bluez", tuple(evaluate(facts, BLUEZ)))
    assert [c.name for c in d.problems] == ["rfkill"]  # soft-blocked; hci0 is up


def test_probe_of_an_empty_machine(tmp_path: Path) -> None:
    facts = gather_facts(_fake_probe(tmp_path, kernel_probe=lambda: "Address family not supported by protocol"))
    assert facts.adapters == () and facts.rfkill == () and not facts.bluetoothd_running
    assert facts.bluetoothd_path is None and facts.effective_caps is None and facts.usb_bluetooth == ()
    assert facts.bluez_version is None


def test_dbus_address_from_the_environment() -> None:
    assert dbus_system_socket({}) == "/run/dbus/system_bus_socket"
    env = {"DBUS_SYSTEM_BUS_ADDRESS": "tcp:host=x,port=1;unix:path=/var/run/dbus/sys,guid=ab"}
    assert dbus_system_socket(env) == "/var/run/dbus/sys"


@pytest.fixture
def dbus_daemon(tmp_path: Path) -> Iterator[Path]:
    exe = shutil.which("dbus-daemon")
    if exe is None:
        pytest.skip("dbus-daemon is not installed here: the D-Bus probe is checked against a real bus only")
    sock = tmp_path / "bus.sock"
    proc = subprocess.Popen(
        [exe, "--session", "--nofork", "--print-address", f"--address=unix:path={sock}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(f"unix:path={sock}")  # printed once it listens
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dbus_probe_against_a_real_bus(dbus_daemon: Path, tmp_path: Path) -> None:
    assert dbus_auth_error(str(dbus_daemon), os.geteuid()) is None
    refused = dbus_auth_error(str(dbus_daemon), os.geteuid() + 4242)  # claims to be someone else
    assert refused is not None and "refused us" in refused
    missing = dbus_auth_error(str(tmp_path / "nope.sock"), os.geteuid())
    assert missing == f"{tmp_path / 'nope.sock'} does not exist"


def test_kernel_probe_on_this_machine() -> None:
    err = hci_socket_error()
    if err is None:
        pytest.skip("this kernel has Bluetooth: the no-Bluetooth path is checked with injected facts only")
    assert err == "Address family not supported by protocol"


# ---------------------------------------------------------------- the real command here
def _no_bluetooth_here() -> None:
    if hci_socket_error() is None:
        pytest.skip("this machine's kernel has Bluetooth; these tests check the no-Bluetooth report")


def test_village_ble_doctor_on_this_machine(tmp_path: Path) -> None:
    _no_bluetooth_here()
    r = village("ble", "doctor", "--data-dir", str(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("BLE cannot work here (adapter = bluez): this kernel has no Bluetooth support")
    assert "[FAIL] Bluetooth in the kernel: opening a Bluetooth socket failed" in r.stdout
    assert "fix: use a kernel built with Bluetooth" in r.stdout
    assert "\nPower: balanced: scan 8 s of every 10 s" in r.stdout  # no battery here: balanced
    r = village("ble", "doctor", "--json", "--data-dir", str(tmp_path))
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert data["usable"] is False and data["adapter"] == "bluez"
    kernel = next(c for c in data["checks"] if c["name"] == "kernel")
    assert kernel["ok"] is False and "no Bluetooth support" in kernel["problem"]


def test_village_ble_doctor_follows_the_config(tmp_path: Path) -> None:
    _no_bluetooth_here()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ble]\nadapter = "bumble"\nbumble_transport = "hci-socket:0"\n')
    r = village("ble", "doctor", "--json", "--config", str(cfg), "--data-dir", str(tmp_path))
    data = json.loads(r.stdout)
    assert r.returncode == 1 and data["adapter"] == "bumble"
    assert [c["name"] for c in data["checks"] if not c["ok"] and c["required"]] == ["kernel", "adapter"]


def test_diagnose_here_matches_the_kernel() -> None:
    _no_bluetooth_here()
    d = diagnose(BLUEZ)
    assert not d.usable and d.problems[0].name == "kernel"


def test_power_line() -> None:
    from node.transports.ble.doctor import power_summary
    from node.transports.ble.power import BatteryState

    line = power_summary(BleSection(), BatteryState(12, False, "termux"))
    assert line.startswith("saver: scan 2 s of every 30 s") and "battery 12 %, on battery (from termux)" in line
    assert "chosen by power_mode = auto" in line
    fixed = power_summary(BleSection(power_mode="performance"), None, read=False)
    assert (
        fixed.startswith("performance: scan continuously")
        and "power_mode = performance; battery state unknown" in fixed
    )


def test_bluetoothd_version_runs_the_program(tmp_path: Path) -> None:
    from node.transports.ble.doctor import bluetoothd_version

    exe = tmp_path / "bluetoothd"
    exe.write_text('#!/bin/sh\n[ "$1" = --version ] && echo 5.66\n')
    exe.chmod(0o755)
    assert bluetoothd_version(str(exe)) == "5.66"
    assert bluetoothd_version(str(tmp_path / "missing")) is None
