"""`village ble doctor`: what BLE needs on this machine, and what is missing, in plain words.

Two steps, so every rule is testable without a radio:

1. :func:`gather_facts` asks the machine (through a :class:`Probe` whose roots and calls tests replace): is
   Bluetooth in the kernel (can an ``AF_BLUETOOTH`` socket be opened), is BlueZ installed and ``bluetoothd``
   running, is the D-Bus system bus reachable (connect + ``AUTH EXTERNAL``), which adapters exist
   (``/sys/class/bluetooth/hci*``) and are they up (``HCIGETDEVINFO``), is Bluetooth rfkill-blocked
   (``/sys/class/rfkill``), are we root or do we hold CAP_NET_ADMIN/CAP_NET_RAW or the ``bluetooth`` group,
   and do bleak, bless and bumble import.
2. :func:`evaluate` turns those :class:`Facts` into :class:`Check` records — ok, what was found, the problem and
   the fix — for the adapter the config chooses. BLE can work when every *required* check is ok.

The node uses the same two steps at start (:func:`diagnose`) to decide ``ble.enabled = auto``.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import importlib
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.transports.ble.power import BatteryState, choose_mode, describe, plan_for, read_battery
from node.transports.ble.settings import BleSection

AF_BLUETOOTH = 31  # <sys/socket.h>; Python builds without Bluetooth headers lack socket.AF_BLUETOOTH
BTPROTO_HCI = 1
HCIGETDEVINFO = 0x800448D3  # _IOR('H', 211, int) in <bluetooth/hci.h>
HCI_DEV_INFO_BYTES = 92  # sizeof(struct hci_dev_info); flags (u32) sit at offset 16
HCI_UP = 1  # bit 0 of hci_dev_info.flags: the controller is powered and initialised
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
DBUS_SYSTEM_SOCKET = "/run/dbus/system_bus_socket"
DBUS_TIMEOUT_S = 2.0  # a local bus answers AUTH in milliseconds
BLUETOOTHD_PATHS = ("/usr/libexec/bluetooth/bluetoothd", "/usr/lib/bluetooth/bluetoothd", "/usr/sbin/bluetoothd")
BLUEZ_MIN_VERSION = (5, 62)  # first BlueZ that tells clients the negotiated MTU (bleak needs it for our links)
VERSION_TIMEOUT_S = 2.0
BLUEZ_LIBRARIES = ("bleak", "bless")
BUMBLE_LIBRARIES = ("bumble",)
INSTALL_LIBS_FIX = "install the BLE extra into the node's environment: pip install 'aivillage[ble]'"


@dataclass(frozen=True, slots=True)
class Check:
    """One finding. ``required`` checks must be ok for BLE to work; others are advice."""

    name: str  # stable identifier, e.g. "kernel"
    title: str  # what was checked, e.g. "Bluetooth in the kernel"
    ok: bool
    found: str  # what the machine showed, in plain words
    problem: str = ""
    fix: str = ""
    required: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "ok": self.ok,
            "required": self.required,
            "found": self.found,
            "problem": self.problem,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    name: str  # hci0
    address: str  # from sysfs, "" when unknown
    up: bool | None  # None: could not ask the kernel


@dataclass(frozen=True, slots=True)
class RfkillInfo:
    name: str  # rfkill0
    soft_blocked: bool
    hard_blocked: bool


@dataclass(frozen=True, slots=True)
class Facts:
    kernel_error: str | None  # None: an AF_BLUETOOTH socket opened
    bluetoothd_path: str | None
    bluetoothd_running: bool
    dbus_socket: str
    dbus_error: str | None  # None: the system bus accepted us
    adapters: tuple[AdapterInfo, ...]
    rfkill: tuple[RfkillInfo, ...]
    euid: int
    effective_caps: int | None  # CapEff bits, None when /proc does not say
    groups: frozenset[str]
    library_errors: Mapping[str, str | None]  # module → import error, None when it imports
    bluez_version: str | None = None  # `bluetoothd --version`, None when unknown
    termux: bool = False  # running under Termux on Android
    usb_bluetooth: tuple[str, ...] = ()  # USB devices of class e0 (Bluetooth), e.g. "1-1.3 (0a12:0001)"
    serial_present: frozenset[str] = frozenset()  # serial device paths named by ble.bumble_transport that exist


# ---------------------------------------------------------------- probing the machine
def _open_hci_socket() -> socket.socket:
    return socket.socket(AF_BLUETOOTH, socket.SOCK_RAW | socket.SOCK_CLOEXEC, BTPROTO_HCI)


def hci_socket_error() -> str | None:
    """None if the kernel lets us open a Bluetooth HCI socket, else why not."""
    try:
        _open_hci_socket().close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def hci_is_up(index: int) -> bool | None:
    """Ask the kernel (HCIGETDEVINFO) whether ``hci<index>`` is up; None when it cannot be asked."""
    buf = bytearray(HCI_DEV_INFO_BYTES)
    struct.pack_into("=H", buf, 0, index)
    try:
        with _open_hci_socket() as sock:
            fcntl.ioctl(sock.fileno(), HCIGETDEVINFO, buf)
    except OSError:
        return None
    (flags,) = struct.unpack_from("=I", buf, 16)
    return bool(flags & HCI_UP)


def dbus_system_socket(env: Mapping[str, str]) -> str:
    """The system bus socket path (``$DBUS_SYSTEM_BUS_ADDRESS`` ``unix:path=...``, else the standard one)."""
    for part in env.get("DBUS_SYSTEM_BUS_ADDRESS", "").split(";"):
        if part.startswith("unix:"):
            for kv in part[len("unix:") :].split(","):
                if kv.startswith("path="):
                    return kv[len("path=") :]
    return DBUS_SYSTEM_SOCKET


def dbus_auth_error(path: str, uid: int) -> str | None:
    """Connect to the bus at ``path`` and authenticate (SASL EXTERNAL); None when the bus says OK."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(DBUS_TIMEOUT_S)
            sock.connect(path)
            sock.sendall(b"\0AUTH EXTERNAL " + str(uid).encode().hex().encode() + b"\r\n")
            reply = sock.recv(256)
            with contextlib.suppress(OSError):
                sock.sendall(b"CANCEL\r\n")
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"connecting to {path} failed: {exc.strerror or exc}"
    if not reply.startswith(b"OK "):
        return f"the bus at {path} refused us: {reply.decode(errors='replace').strip() or 'no answer'}"
    return None


def bluetoothd_version(path: str) -> str | None:
    """``bluetoothd --version`` (e.g. ``5.66``), None when it cannot be run."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = done.stdout.strip()
    return out if done.returncode == 0 and out else None


def _import_error(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure to import means the library cannot be used; report it as found
        return f"{type(exc).__name__}: {exc}"
    return None


def _current_groups() -> frozenset[str]:
    names = set()
    for gid in {os.getegid(), *os.getgroups()}:
        with contextlib.suppress(KeyError):
            names.add(grp.getgrgid(gid).gr_name)
    return frozenset(names)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Probe:
    """Where and how facts are read; tests replace the roots and the calls."""

    sys_root: Path = Path("/sys")
    proc_root: Path = Path("/proc")
    bluetoothd_paths: tuple[str, ...] = BLUETOOTHD_PATHS
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    which: Callable[[str], str | None] = shutil.which
    kernel_probe: Callable[[], str | None] = hci_socket_error
    up_probe: Callable[[int], bool | None] = hci_is_up
    dbus_probe: Callable[[str, int], str | None] = dbus_auth_error
    import_probe: Callable[[str], str | None] = _import_error
    version_probe: Callable[[str], str | None] = bluetoothd_version
    euid: Callable[[], int] = os.geteuid
    groups: Callable[[], frozenset[str]] = _current_groups


def _adapters(probe: Probe) -> tuple[AdapterInfo, ...]:
    root = probe.sys_root / "class" / "bluetooth"
    try:
        names = sorted(p.name for p in root.iterdir() if p.name.startswith("hci") and p.name[3:].isdigit())
    except OSError:
        return ()
    return tuple(
        AdapterInfo(name, _read(root / name / "address") or "", probe.up_probe(int(name[3:]))) for name in names
    )


def _rfkill(probe: Probe) -> tuple[RfkillInfo, ...]:
    root = probe.sys_root / "class" / "rfkill"
    found = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return ()
    for entry in entries:
        if _read(entry / "type") != "bluetooth":
            continue
        found.append(RfkillInfo(entry.name, _read(entry / "soft") == "1", _read(entry / "hard") == "1"))
    return tuple(found)


def _usb_bluetooth(sys_root: Path) -> tuple[str, ...]:
    """USB devices whose device class or one of whose interfaces is e0 (Wireless Controller: Bluetooth)."""
    root = sys_root / "bus" / "usb" / "devices"
    try:
        devices = sorted(p for p in root.iterdir() if ":" not in p.name)
    except OSError:
        return ()
    found = []
    for dev in devices:
        classes = {_read(dev / "bDeviceClass")}
        with contextlib.suppress(OSError):
            classes |= {_read(i / "bInterfaceClass") for i in dev.iterdir() if ":" in i.name}
        if "e0" in classes:
            ids = f"{_read(dev / 'idVendor') or '?'}:{_read(dev / 'idProduct') or '?'}"
            found.append(f"{dev.name} ({ids})")
    return tuple(found)


def _bluetoothd_running(proc_root: Path) -> bool:
    try:
        pids = [p for p in proc_root.iterdir() if p.name.isdigit()]
    except OSError:
        return False
    return any(_read(p / "comm") == "bluetoothd" for p in pids)


def _effective_caps(proc_root: Path) -> int | None:
    status = _read(proc_root / "self" / "status") or ""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            with contextlib.suppress(ValueError):
                return int(line.split(":", 1)[1].strip(), 16)
    return None


def gather_facts(probe: Probe | None = None, serial_paths: tuple[str, ...] = ()) -> Facts:
    """Read everything :func:`evaluate` needs. Blocking (sockets, file reads, imports): a CLI command or a
    start-up check calls it directly; a running node goes through ``trio.to_thread.run_sync``."""
    probe = probe or Probe()
    bluetoothd = next((p for p in probe.bluetoothd_paths if Path(p).exists()), None) or probe.which("bluetoothd")
    dbus_socket = dbus_system_socket(probe.env)
    euid = probe.euid()
    return Facts(
        kernel_error=probe.kernel_probe(),
        bluetoothd_path=bluetoothd,
        bluez_version=probe.version_probe(bluetoothd) if bluetoothd else None,
        termux="TERMUX_VERSION" in probe.env or "com.termux" in probe.env.get("PREFIX", ""),
        bluetoothd_running=_bluetoothd_running(probe.proc_root),
        dbus_socket=dbus_socket,
        dbus_error=probe.dbus_probe(dbus_socket, euid),
        adapters=_adapters(probe),
        rfkill=_rfkill(probe),
        euid=euid,
        effective_caps=_effective_caps(probe.proc_root),
        groups=probe.groups(),
        library_errors={m: probe.import_probe(m) for m in (*BLUEZ_LIBRARIES, *BUMBLE_LIBRARIES)},
        usb_bluetooth=_usb_bluetooth(probe.sys_root),
        serial_present=frozenset(p for p in serial_paths if Path(p).exists()),
    )


# ---------------------------------------------------------------- judging the facts
def _kernel(f: Facts, required: bool) -> Check:
    title = "Bluetooth in the kernel"
    if f.kernel_error is None:
        return Check("kernel", title, True, "the kernel has Bluetooth support", required=required)
    dongle = (
        'plug in a USB Bluetooth dongle and set [ble] adapter = "bumble", bumble_transport = "usb:0", which drives '
        "the dongle without the kernel"
    )
    if f.termux:
        problem = "Android does not let apps (Termux included) use the phone's Bluetooth controller directly"
        fix = f"on a phone, {dongle} (Termux reaches USB devices through termux-usb)"
    else:
        no_bt = "not supported" in f.kernel_error.lower() or "family" in f.kernel_error.lower()
        problem = (
            "this kernel has no Bluetooth support, so no Bluetooth adapter can be used through it"
            if no_bt
            else "the kernel refused to open a Bluetooth socket"
        )
        fix = (
            "use a kernel built with Bluetooth (CONFIG_BT; Raspberry Pi OS, Debian and Ubuntu kernels have it — "
            f"containers and many VMs do not pass it through), or {dongle}"
        )
    return Check("kernel", title, False, f"opening a Bluetooth socket failed: {f.kernel_error}", problem, fix, required)


def _bluez_installed(f: Facts) -> Check:
    title = "BlueZ (the Linux Bluetooth service)"
    if f.bluetoothd_path:
        return Check("bluez", title, True, f"bluetoothd is installed at {f.bluetoothd_path}")
    return Check(
        "bluez",
        title,
        False,
        "no bluetoothd program was found",
        "BlueZ is not installed",
        "install it: sudo apt install bluez (Debian, Raspberry Pi OS, Ubuntu)",
    )


def _parse_version(text: str) -> tuple[int, ...] | None:
    parts = text.strip().split(".")
    try:
        return tuple(int(p) for p in parts[:2])
    except ValueError:
        return None


def _bluez_version(f: Facts) -> Check:
    title = "BlueZ version"
    need = ".".join(map(str, BLUEZ_MIN_VERSION))
    version = _parse_version(f.bluez_version) if f.bluez_version else None
    if version is None:
        return Check("bluez_version", title, True, "version unknown", required=False)
    if version >= BLUEZ_MIN_VERSION:
        return Check("bluez_version", title, True, f"BlueZ {f.bluez_version}", required=False)
    return Check(
        "bluez_version",
        title,
        False,
        f"BlueZ {f.bluez_version}",
        f"BlueZ before {need} does not tell the node the negotiated MTU, so links this node opens as central "
        "cannot carry BitChat frames (peers connecting to us still work)",
        f"upgrade BlueZ to {need} or later (Debian 12 and Raspberry Pi OS bookworm ship 5.66)",
        required=False,
    )


def _bluetoothd_running_check(f: Facts) -> Check:
    title = "bluetoothd running"
    if f.bluetoothd_running:
        return Check("bluetoothd", title, True, "bluetoothd is running")
    return Check(
        "bluetoothd",
        title,
        False,
        "no bluetoothd process is running (in this PID namespace)",
        "the Bluetooth service is not running",
        "start it and keep it on at boot: sudo systemctl enable --now bluetooth",
    )


def _dbus(f: Facts) -> Check:
    title = "D-Bus system bus"
    if f.dbus_error is None:
        return Check("dbus", title, True, f"the system bus at {f.dbus_socket} accepted us")
    return Check(
        "dbus",
        title,
        False,
        f.dbus_error,
        "the node cannot reach the D-Bus system bus, which is how it talks to BlueZ",
        "install and start D-Bus (sudo apt install dbus; sudo systemctl start dbus); in a container, mount the "
        "host's /run/dbus/system_bus_socket",
    )


def _adapter_present(f: Facts, required: bool) -> Check:
    title = "Bluetooth adapter"
    if f.adapters:
        names = ", ".join(f"{a.name} ({a.address})" if a.address else a.name for a in f.adapters)
        return Check("adapter", title, True, f"found {names}", required=required)
    return Check(
        "adapter",
        title,
        False,
        "nothing in /sys/class/bluetooth",
        "there is no Bluetooth adapter",
        "plug in a USB Bluetooth adapter or enable the built-in one (on a Raspberry Pi, remove dtoverlay=disable-bt "
        "from /boot/firmware/config.txt); `dmesg | grep -i bluetooth` shows why the kernel found none",
        required,
    )


def _adapter_powered(f: Facts, required: bool) -> Check:
    title = "Adapter powered"
    up = [a.name for a in f.adapters if a.up]
    unknown = [a.name for a in f.adapters if a.up is None]
    if up:
        return Check("powered", title, True, f"{', '.join(up)} is up", required=required)
    if unknown and len(unknown) == len(f.adapters):
        return Check(
            "powered", title, True, f"could not ask the kernel whether {', '.join(unknown)} is up", required=False
        )
    down = ", ".join(a.name for a in f.adapters)
    return Check(
        "powered",
        title,
        False,
        f"{down} is down",
        "the Bluetooth adapter is powered off",
        "power it on: bluetoothctl power on (and set AutoEnable=true in /etc/bluetooth/main.conf to keep it on)",
        required,
    )


def _rfkill_check(f: Facts, required: bool) -> Check:
    title = "Radio not blocked (rfkill)"
    hard = [r.name for r in f.rfkill if r.hard_blocked]
    soft = [r.name for r in f.rfkill if r.soft_blocked]
    if hard:
        return Check(
            "rfkill",
            title,
            False,
            f"hard-blocked: {', '.join(hard)}",
            "a hardware switch or the firmware has turned the Bluetooth radio off",
            "flip the wireless switch or enable Bluetooth in the firmware setup",
            required,
        )
    if soft:
        return Check(
            "rfkill",
            title,
            False,
            f"soft-blocked: {', '.join(soft)}",
            "Bluetooth is blocked by rfkill",
            "unblock it: sudo rfkill unblock bluetooth",
            required,
        )
    found = "no Bluetooth rfkill switch is blocked" if f.rfkill else "no Bluetooth rfkill switch exists"
    return Check("rfkill", title, True, found, required=required)


def _has_caps(f: Facts, *caps: int) -> bool:
    return f.effective_caps is not None and all(f.effective_caps >> c & 1 for c in caps)


def _permissions(f: Facts, raw_hci: bool) -> Check:
    title = "Permissions"
    if f.euid == 0:
        return Check("permissions", title, True, "running as root", required=raw_hci)
    caps = _has_caps(f, CAP_NET_ADMIN, CAP_NET_RAW)
    if raw_hci:
        if caps:
            return Check("permissions", title, True, "CAP_NET_ADMIN and CAP_NET_RAW are held")
        return Check(
            "permissions",
            title,
            False,
            "not root, and CAP_NET_ADMIN/CAP_NET_RAW are not both held",
            "Bumble needs CAP_NET_ADMIN and CAP_NET_RAW to drive an adapter through an HCI socket",
            "run the node as root, or grant the capabilities: in its systemd unit "
            "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW, or sudo setcap cap_net_admin,cap_net_raw+eip on the "
            "Python binary",
        )
    if caps or "bluetooth" in f.groups:
        held = "in the bluetooth group" if "bluetooth" in f.groups else "CAP_NET_ADMIN and CAP_NET_RAW are held"
        return Check("permissions", title, True, held, required=False)
    return Check(
        "permissions",
        title,
        False,
        "not root, not in the bluetooth group, no CAP_NET_ADMIN/CAP_NET_RAW",
        "BlueZ's D-Bus policy may refuse to let this user advertise or run a GATT server",
        "add the user to the bluetooth group (sudo usermod -aG bluetooth $USER, then log in again) or run the "
        "node's systemd unit with AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW",
        required=False,
    )


def _libraries(f: Facts, modules: tuple[str, ...]) -> Check:
    title = "Python libraries (" + ", ".join(modules) + ")"
    missing = {m: f.library_errors.get(m) for m in modules if f.library_errors.get(m) is not None}
    if not missing:
        return Check("libraries", title, True, ", ".join(modules) + (" imports" if len(modules) == 1 else " import"))
    return Check(
        "libraries",
        title,
        False,
        "; ".join(f"{m}: {err}" for m, err in missing.items()),
        ", ".join(missing) + (" is" if len(missing) == 1 else " are") + " not installed or do not import",
        INSTALL_LIBS_FIX,
    )


def _bumble_transport(ble: BleSection) -> Check:
    title = "Bumble transport"
    spec = ble.bumble_transport.strip()
    if spec:
        return Check("bumble_transport", title, True, f'ble.bumble_transport = "{spec}"')
    return Check(
        "bumble_transport",
        title,
        False,
        "ble.bumble_transport is empty",
        "Bumble does not know which controller to drive",
        'set [ble] bumble_transport, e.g. "usb:0" for the first USB dongle or "hci-socket:0" for hci0',
    )


def _usb_dongle(f: Facts) -> Check:
    title = "USB Bluetooth dongle"
    if f.usb_bluetooth:
        return Check("usb_dongle", title, True, "USB Bluetooth controller(s): " + ", ".join(f.usb_bluetooth))
    return Check(
        "usb_dongle",
        title,
        False,
        "no USB device of class e0 (Wireless Controller / Bluetooth) in /sys/bus/usb/devices",
        "no USB Bluetooth dongle is plugged in",
        "plug one in (any Bluetooth 4.0+ USB dongle); `lsusb` should list it",
    )


def _serial_device(f: Facts, spec: str) -> Check:
    title = "Serial HCI controller"
    device = spec[len("serial:") :].split(",", 1)[0]
    if device in f.serial_present:
        return Check("serial_device", title, True, f"{device} exists")
    return Check(
        "serial_device",
        title,
        False,
        f"{device} does not exist",
        "the serial port named in ble.bumble_transport is not there",
        "connect the controller, or fix the device path in ble.bumble_transport",
    )


def evaluate(facts: Facts, ble: BleSection) -> list[Check]:
    """The checks for the adapter ``ble.adapter`` selects, in the order a user should fix them."""
    if ble.adapter == "bluez":
        return [
            _kernel(facts, True),
            _bluez_installed(facts),
            *([_bluez_version(facts)] if facts.bluetoothd_path else []),
            _bluetoothd_running_check(facts),
            _dbus(facts),
            _adapter_present(facts, True),
            _rfkill_check(facts, True),
            *([_adapter_powered(facts, True)] if facts.adapters else []),
            _permissions(facts, raw_hci=False),
            _libraries(facts, BLUEZ_LIBRARIES),
        ]
    spec = ble.bumble_transport.strip()
    hci_socket = spec.startswith("hci-socket")
    checks = [_bumble_transport(ble), _libraries(facts, BUMBLE_LIBRARIES)]
    if spec.startswith("usb:"):
        checks.insert(1, _usb_dongle(facts))
    elif spec.startswith("serial:"):
        checks.insert(1, _serial_device(facts, spec))
    if hci_socket:  # Bumble drives the kernel's adapter directly: the kernel side matters, BlueZ must keep off
        checks[1:1] = [
            _kernel(facts, True),
            _adapter_present(facts, True),
            _rfkill_check(facts, True),
            _permissions(facts, raw_hci=True),
            _bluez_keeps_off(facts),
        ]
    return checks


def _bluez_keeps_off(f: Facts) -> Check:
    title = "Adapter free for Bumble"
    if not f.bluetoothd_running:
        return Check("bluez_off", title, True, "bluetoothd is not running", required=False)
    return Check(
        "bluez_off",
        title,
        False,
        "bluetoothd is running",
        "BlueZ may hold the adapter; Bumble's HCI socket needs it to itself (the exclusive user channel)",
        'stop BlueZ (sudo systemctl disable --now bluetooth), or use adapter = "bluez" instead',
        required=False,
    )


@dataclass(frozen=True, slots=True)
class Diagnosis:
    adapter: str
    checks: tuple[Check, ...]
    power: str = ""  # the power plan BLE would run with, in words (empty: not computed)

    @property
    def usable(self) -> bool:
        return all(c.ok for c in self.checks if c.required)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.required and not c.ok]

    def summary(self) -> str:
        """One line: why BLE cannot work (the first problem), or that it can."""
        if self.usable:
            return f"BLE can work here with adapter = {self.adapter}"
        first = self.problems[0]
        more = len(self.problems) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        return f"{first.problem}{tail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter,
            "usable": self.usable,
            "summary": self.summary(),
            "checks": [c.to_json() for c in self.checks],
            "power": self.power,
        }

    def report(self) -> str:
        """The human report of `village ble doctor`."""
        head = (
            f"BLE can work here (adapter = {self.adapter})."
            if self.usable
            else f"BLE cannot work here (adapter = {self.adapter}): {self.summary()}."
        )
        lines = [head, ""]
        for c in self.checks:
            mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
            lines.append(f"[{mark}] {c.title}: {c.found}")
            if not c.ok:
                lines.append(f"       problem: {c.problem}")
                if c.fix:
                    lines.append(f"       fix: {c.fix}")
        if self.power:
            lines += ["", f"Power: {self.power}"]
        return "\n".join(lines)


def diagnose(ble: BleSection, probe: Probe | None = None, *, power: bool = True) -> Diagnosis:
    """Gather the facts and judge them for ``ble.adapter`` (blocking; see :func:`gather_facts`)."""
    spec = ble.bumble_transport.strip()
    serial = (spec[len("serial:") :].split(",", 1)[0],) if spec.startswith("serial:") else ()
    checks = tuple(evaluate(gather_facts(probe, serial), ble))
    return Diagnosis(ble.adapter, checks, power_summary(ble) if power else "")


def power_summary(ble: BleSection, battery: BatteryState | None = None, *, read: bool = True) -> str:
    """The plan ``ble.power_mode`` selects now, and why (reads the battery unless ``read`` is False)."""
    if read and battery is None:
        battery = read_battery()
    mode = choose_mode(ble.power_mode, battery)
    if battery is None:
        why = "battery state unknown"
    else:
        pct = f"{battery.percent} %" if battery.percent is not None else "level unknown"
        src = {True: "on external power", False: "on battery", None: "power source unknown"}[battery.external_power]
        why = f"battery {pct}, {src} (from {battery.source})"
    chosen = "chosen by power_mode = auto" if ble.power_mode == "auto" else f"power_mode = {ble.power_mode}"
    return f"{describe(plan_for(mode, ble.max_central_links))} ({chosen}; {why})"
