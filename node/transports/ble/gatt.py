"""BitChat's GATT service over BLE (BITCHAT.md §4; BLE/BLEService.swift, AND/mesh/BluetoothGattServerManager.kt).

One primary service with one characteristic. Peers write frames to it (write-without-response; plain write is
accepted too) and subscribe to its notifications (CCCD 0x2902, which Android requires). Advertising carries the
primary service UUID only, no local name (iOS); Android adds its 8-byte peer ID as scan-response service data.
"""

from __future__ import annotations

from typing import Final

# BitChat mainnet service; iOS DEBUG builds use the testnet UUID (last group ...4B5A).
SERVICE_UUID: Final = "F47B5E2D-4A9E-4C5A-9B3F-8E1D2C3A4B5C"
SERVICE_UUID_TESTNET: Final = "F47B5E2D-4A9E-4C5A-9B3F-8E1D2C3A4B5A"
CHARACTERISTIC_UUID: Final = "A1B2C3D4-E5F6-4A5B-8C9D-0E1F2A3B4C5D"
CCCD_UUID: Final = "00002902-0000-1000-8000-00805F9B34FB"  # Client Characteristic Configuration Descriptor

# Characteristic properties (Bluetooth Core Vol 3 Part G §3.3.1.1): read, write, write-without-response, notify.
PROP_READ: Final = 0x02
PROP_WRITE_WITHOUT_RESPONSE: Final = 0x04
PROP_WRITE: Final = 0x08
PROP_NOTIFY: Final = 0x10
CHARACTERISTIC_PROPERTIES: Final = PROP_READ | PROP_WRITE_WITHOUT_RESPONSE | PROP_WRITE | PROP_NOTIFY

# ATT: the payload of one write/notification is ATT_MTU - 3 (1 opcode + 2 handle bytes).
ATT_HEADER_BYTES: Final = 3
ATT_MTU_DEFAULT: Final = 23  # before any MTU exchange (Core Vol 3 Part F §3.2.8)
ATT_MTU_REQUEST: Final = 517  # what Android requests, the ATT maximum; we ask for the same
ATT_MTU_MAX: Final = 517
# A link must carry a fragment header plus some data; BitChat's smallest chunk is 64 bytes (BITCHAT.md §4).
MIN_USEFUL_ATT_PAYLOAD: Final = 64 + 16 + 8 + 8 + 13  # chunk + v2 header + sender + recipient + fragment header


# An attribute value is at most 512 bytes (Core Vol 3 Part F §3.2.9); servers reject longer writes, so even
# with a 517-byte ATT MTU one write/notification carries at most 512 bytes (Bumble drops a 513-byte write).
GATT_MAX_ATTRIBUTE_VALUE_BYTES: Final = 512


def att_payload_bytes(att_mtu: int) -> int:
    """Bytes one GATT write or notification can carry on a connection with ``att_mtu``."""
    return max(0, min(att_mtu - ATT_HEADER_BYTES, GATT_MAX_ATTRIBUTE_VALUE_BYTES))
