"""The radio-adapter interface: what a BLE stack must offer the BitChat BLE transport.

Two adapters implement :class:`RadioAdapter`: ``bluez.py`` (bleak as central + bless as peripheral, production on
Linux) and ``bumble_adapter.py`` (Bumble's stack: virtual controllers in tests, USB/HCI dongles). An adapter is
*thin*: it moves raw bytes and reports radio events. It knows nothing of BitChat frames, fragments, pacing,
RSSI gates or connection budgets — those live in the sans-IO core (``core.py``).

How the transport (``transport.py``) uses an adapter::

    async with trio.open_nursery() as nursery:
        await nursery.start(adapter.run, events_send)    # adapter owns its stack; started() once powered on
        await adapter.start_peripheral()                  # GATT server: BitChat service (gatt.py) + advertising
        await adapter.start_scanning()                    # DeviceDiscovered events follow
        async for event in events_recv:                   # every RadioEvent below
            ... feed the core; the core answers with actions:
            await adapter.connect(address)                # central role: connect, exchange MTU (ask 517),
                                                          # discover the service, subscribe to notifications;
                                                          # then a Connected(role=CENTRAL) event
            await adapter.send(conn_id, frame)            # one GATT write-without-response (we are central)
                                                          # or one notification (we are peripheral)
            await adapter.disconnect(conn_id)

Rules every adapter follows:

* ``run`` pushes events into the bounded channel it is given and returns only when cancelled (then it
  disconnects everything, stops advertising and scanning, and releases the stack: no thread or event loop is
  left behind). Methods may be called from any trio task once ``run`` has reported ``started()``.
* A peripheral-role connection is reported with :class:`Connected` only once the central has subscribed to
  notifications (CCCD written), because before that we cannot send to it; a central-role connection once the
  service is discovered and we are subscribed.
* :class:`DataReceived` carries the bytes of one GATT write (peripheral role) or one notification (central role)
  exactly as they arrived; the core reassembles frames from it (a write is one frame; notifications are a byte
  stream). ``send`` takes at most ``att_payload_bytes(att_mtu)`` bytes (gatt.py).
* Errors from the stack are converted at the boundary into :class:`RadioError` (``raise ... from exc``);
  ``send``/``disconnect`` on a connection that is gone raise :class:`RadioConnectionLost`.
* Addresses are opaque strings (``AA:BB:CC:DD:EE:FF`` or ``AA:BB:..../P`` for Bumble's random addresses);
  connection IDs are strings unique for the adapter's life.

Error tree (under :class:`node.errors.TransportError`)::

    TransportError
    └── RadioError               the BLE stack failed (not powered, connect failed/timed out, GATT error)
        ├── RadioUnavailable     no adapter / stack cannot start here (``enabled = auto`` turns BLE off)
        └── RadioConnectionLost  the connection is gone
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import trio

from node.errors import TransportError
from node.transports.ble.events import (
    Connected,
    ConnectFailed,
    DataReceived,
    DeviceDiscovered,
    Disconnected,
    MtuChanged,
    RadioEvent,
    Role,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "ConnectFailed",
    "Connected",
    "DataReceived",
    "DeviceDiscovered",
    "Disconnected",
    "MtuChanged",
    "RadioAdapter",
    "RadioConnectionLost",
    "RadioError",
    "RadioEvent",
    "RadioEventSink",
    "RadioUnavailable",
    "Role",
]

CONNECT_TIMEOUT_S = 8.0  # BitChat's connect timeout (BITCHAT.md §4); both adapters use it


class RadioError(TransportError):
    """The BLE stack failed; the message says what (and the cause is chained)."""


class RadioUnavailable(RadioError):
    """No usable radio here (no adapter, no BlueZ, not powered, no permission)."""


class RadioConnectionLost(RadioError):
    """The connection the call named is gone."""


RadioEventSink = trio.MemorySendChannel[RadioEvent]


class RadioAdapter(ABC):
    """One BLE radio in both roles at once. See the module docstring for the contract."""

    @property
    @abstractmethod
    def name(self) -> str:
        """``bluez`` or ``bumble``."""

    @property
    @abstractmethod
    def local_address(self) -> str:
        """Our own BLE address (valid after ``run`` started)."""

    @abstractmethod
    async def run(
        self, events: RadioEventSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Power the stack on, register BitChat's GATT service, report ``started()``, then push events until
        cancelled. Raises :class:`RadioUnavailable` before ``started()`` when there is no usable radio."""

    @abstractmethod
    async def start_peripheral(self) -> None:
        """Advertise BitChat's service UUID (connectable) and accept centrals on our GATT server."""

    @abstractmethod
    async def stop_peripheral(self) -> None:
        """Stop advertising (existing connections stay)."""

    @abstractmethod
    async def start_scanning(self) -> None:
        """Report :class:`DeviceDiscovered` for devices advertising the service."""

    @abstractmethod
    async def stop_scanning(self) -> None: ...

    @abstractmethod
    async def connect(self, address: str) -> None:
        """Connect as central (timeout 8 s, BITCHAT.md §4), exchange MTU, discover the service, subscribe.
        The outcome arrives as a :class:`Connected` or :class:`ConnectFailed` event; this call returns once
        the attempt has been started or has finished."""

    @abstractmethod
    async def send(self, conn_id: str, data: bytes) -> None:
        """One write-without-response (central role) or one notification (peripheral role) of ``data``
        (at most ATT_MTU - 3 bytes). Raises :class:`RadioConnectionLost` if the connection is gone."""

    @abstractmethod
    async def disconnect(self, conn_id: str) -> None:
        """Drop the connection (idempotent); a :class:`Disconnected` event follows if it was up."""
