"""The ``[ble]`` section: BitChat over Bluetooth LE (node/transports/ble/)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from node.errors import ConfigError
from node.schema import check_utf8_bytes, setting

# `enabled` takes the strings below or a bare TOML boolean (true/false are stored as "true"/"false").
BLE_ENABLED = ("auto", "true", "false")
BLE_POWER_MODES = ("auto", "performance", "balanced", "saver")


@dataclass(frozen=True, slots=True)
class BleSection:
    SECTION: ClassVar[str] = "ble"

    enabled: str = setting(
        "auto",
        "auto: run BLE where a working adapter is found, otherwise log one line and run without it. "
        "true: BLE is required; the node refuses to start without a working adapter. false: never touch BLE. "
        "true/false may also be written as bare booleans.",
        choices=BLE_ENABLED,
    )
    adapter: str = setting(
        "bluez",
        "bluez: the system Bluetooth stack over D-Bus (bleak as central, bless as peripheral; Linux, Raspberry Pi). "
        "bumble: Google's Bumble stack driving an HCI controller directly (USB dongle, serial, or a virtual "
        "controller) where BlueZ is absent; needs ble.bumble_transport.",
        choices=("bluez", "bumble"),
    )
    bumble_transport: str = setting(
        "",
        'With adapter = bumble: Bumble\'s transport spec for the controller, e.g. "usb:0", "serial:/dev/ttyUSB0", '
        '"tcp-client:127.0.0.1:9000".',
    )
    power_mode: str = setting(
        "auto",
        "Scan/advertise duty cycle. performance: scan and advertise continuously. balanced: scan 8 s of every 10 "
        "(BitChat Android's normal mode). saver: scan 2 s of every 30, advertise less often. auto: performance on "
        "external power, balanced on battery, saver on battery below 20 % (back to balanced above 25 %); balanced "
        "when the battery state cannot be read.",
        choices=BLE_POWER_MODES,
    )
    max_central_links: int = setting(
        6,
        "Most links this node opens as central (it connects out); peers connecting to us do not count "
        "(BitChat: iOS 6, Android 8). 0: peripheral only.",
        min=0,
        max=16,
    )
    rssi_min_dbm: int = setting(
        -90,
        "Peers heard weaker than this are not connected to, in dBm (BitChat iOS: -90).",
        min=-100,
        max=-30,
    )
    nickname: str = setting(
        "",
        "BLE device name BlueZ shows (adapter alias / GAP name; <= 255 UTF-8 bytes). Empty: the node's nickname. "
        "Announces always carry node.nickname.",
    )

    @staticmethod
    def from_toml(key: str, value: Any) -> Any:
        """``enabled = true`` is the natural spelling: bare booleans become "true"/"false"."""
        if key == "enabled":
            if isinstance(value, bool):
                return "true" if value else "false"
            if not isinstance(value, str):
                raise ConfigError(f"ble.enabled: expected auto, true or false, got {value!r}")
        return value

    def __post_init__(self) -> None:
        check_utf8_bytes("ble.nickname", self.nickname, 255)
        if self.adapter == "bumble" and self.enabled != "false" and not self.bumble_transport.strip():
            raise ConfigError(
                'ble.bumble_transport: adapter = "bumble" needs a Bumble transport spec, e.g. "usb:0" or '
                '"tcp-client:127.0.0.1:9000"'
            )
