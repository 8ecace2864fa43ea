"""What a BLE radio adapter reports (:mod:`node.transports.ble.base`) and the sans-IO link core
(:mod:`node.transports.ble.core`) consumes: plain records, no I/O, no trio."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.Enum):
    CENTRAL = "central"  # we connected out; we write, the peer notifies us
    PERIPHERAL = "peripheral"  # the peer connected to our GATT server; it writes, we notify


@dataclass(frozen=True, slots=True)
class DeviceDiscovered:
    """An advertisement carrying BitChat's service UUID (adapters filter out all others)."""

    address: str
    rssi_dbm: int
    # Android puts its 8-byte peer ID in scan-response service data; None when absent.
    peer_id_hint: bytes | None = None


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is ready to carry frames in both directions (see the rules above)."""

    conn_id: str
    address: str
    role: Role
    att_mtu: int


@dataclass(frozen=True, slots=True)
class MtuChanged:
    conn_id: str
    att_mtu: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Raw bytes of one GATT write (role PERIPHERAL) or one notification (role CENTRAL)."""

    conn_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Disconnected:
    conn_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """A :meth:`RadioAdapter.connect` started by the core did not produce a connection."""

    address: str
    reason: str = ""


RadioEvent = DeviceDiscovered | Connected | MtuChanged | DataReceived | Disconnected | ConnectFailed
