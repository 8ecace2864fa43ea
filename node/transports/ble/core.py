"""The sans-IO BLE link core: everything about BitChat-over-BLE that is protocol, not radio.

Radio events (``base.py``) go in with ``now``; out come actions for the adapter (connect, start/stop scanning),
link events for the transport (a link is up, a frame arrived, a link is gone) and one timer. It never imports
trio and never reads the clock.

What it decides (BITCHAT.md §4):

* **GATT framing.** One GATT write is one whole BitChat frame (iOS buffers only long-write offsets), so writes
  pass through as frames. Notifications are a *byte stream*: frames may be split across or concatenated within
  notifications, and padding may sit between them; :class:`NotificationStreamAssembler` cuts frames out using
  the header's lengths, skips inter-frame padding, and resets after a 250 ms stall
  (``bitchat/Services/NotificationStreamAssembler.swift``). Its buffer is bounded. A notification that does
  not start with a frame's version byte at a frame boundary is passed on whole (the codec drops it if bad).
* **MTU.** A link carries at most ATT_MTU - 3 bytes per write/notification; that is the Link's ``mtu``, and the
  mesh (``node/routing/mesh.py`` with ``node/wire/fragment.py``) cuts larger frames into BitChat fragments and
  reassembles them with BitChat's bounds (count, size, time). Connections whose MTU cannot carry a fragment
  are dropped.
* **Pacing.** Per link, a token bucket: ``send_burst`` writes back to back, then ``send_rate_per_s``
  (:meth:`BleCore.reserve_send` says when the next write may go).
* **Connection budget.** At most ``max_central_links`` connections we opened (plus attempts in flight); one
  connect at a time, ≥ 0.5 s apart; an address that failed waits ``connect_backoff_s``; no second connection to an
  address we are already connected with in either role.
* **RSSI gate.** Devices heard below ``rssi_min_dbm`` are not connected to.
* **Duty cycle.** Scanning and advertising follow the power plan (``power.py`` :class:`RadioPlan`: on/off
  windows per power mode, and a cap on central links), which can change at any time with
  :meth:`BleCore.set_plan` (battery state changed).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

from node.transports.ble import gatt
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
from node.transports.ble.power import RadioPlan
from node.wire.packet import (
    FLAG_HAS_RECIPIENT,
    FLAG_HAS_ROUTE,
    FLAG_HAS_SIGNATURE,
    ID_BYTES,
    PAD_BLOCKS,
    PAD_HEADROOM,
    SIGNATURE_BYTES,
    V1_HEADER_BYTES,
    V2_HEADER_BYTES,
)


@dataclass(frozen=True, slots=True)
class BleSettings:
    # Connections we open as central at once (iOS 6, Android 8; BITCHAT.md §4).
    max_central_links: int = 6
    # Devices heard weaker than this are not connected to (iOS −90 dBm). Like iOS, the gate tightens by
    # `rssi_crowded_step_db` once `crowded_links` links are up, and loosens by `rssi_isolated_step_db` after
    # `isolated_after_s` seconds without any link (BITCHAT.md §4: −90, −85 at ≥ 6 links, lower when isolated).
    rssi_min_dbm: int = -90
    rssi_crowded_step_db: int = 5
    crowded_links: int = 6
    rssi_isolated_step_db: int = 10
    isolated_after_s: float = 30.0
    # Seconds between two connect attempts (BitChat: ≥ 0.5 s).
    connect_interval_s: float = 0.5
    # Seconds an address that failed to connect is left alone.
    connect_backoff_s: float = 10.0
    # Writes per second per link after the burst, and the burst (write-without-response has no flow control
    # above the controller; BitChat spaces fragments 20–30 ms, we allow a burst and then a steady rate).
    send_rate_per_s: float = 400.0
    send_burst: int = 32
    # Bytes of a partial notification frame kept (a BitChat frame on BLE is at most one fragment; generous).
    max_stream_buffer_bytes: int = 65_536
    # Partial notification data older than this is discarded (NotificationStreamAssembler's stall reset).
    stream_stall_reset_s: float = 0.25
    # Devices remembered for connect decisions (oldest forgotten).
    max_known_devices: int = 256
    # Roles this node plays.
    scan: bool = True
    advertise: bool = True
    # Scan/advertise duty cycle from the power plan (power.py); None: both continuously.
    plan: RadioPlan | None = None


# --- actions for the adapter -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    address: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    conn_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class SetScanning:
    on: bool


@dataclass(frozen=True, slots=True)
class SetAdvertising:
    on: bool


Action = Connect | Disconnect | SetScanning | SetAdvertising


# --- events for the transport ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkUp:
    conn_id: str
    address: str
    role: Role
    mtu: int  # largest frame one write/notification carries (ATT_MTU - 3)


@dataclass(frozen=True, slots=True)
class FrameReceived:
    conn_id: str
    frame: bytes


@dataclass(frozen=True, slots=True)
class LinkDown:
    conn_id: str
    reason: str


CoreEvent = LinkUp | FrameReceived | LinkDown


@dataclass(slots=True)
class BleCounters:
    devices_discovered: int = 0
    below_rssi_gate: int = 0
    connects_started: int = 0
    connects_failed: int = 0
    links_up: int = 0
    links_down: int = 0
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    stream_bytes_skipped: int = 0
    stream_resets: int = 0
    mtu_too_small: int = 0
    frames_dropped_queue_full: int = 0  # a link's receive queue was full (the Node's reader fell behind)


def frame_length_untrusted(buf: bytes | bytearray) -> int | None:
    """Length of the BitChat frame at the start of ``buf`` from its header (without padding), or None when
    more bytes are needed to tell. ``buf[0]`` must be 1 or 2. The codec validates the frame itself later."""
    version = buf[0]
    header = V1_HEADER_BYTES if version == 1 else V2_HEADER_BYTES
    if len(buf) < header:
        return None
    flags = buf[11]
    payload_len = int.from_bytes(buf[12:header], "big")
    length = header + ID_BYTES + payload_len
    if flags & FLAG_HAS_RECIPIENT:
        length += ID_BYTES
    if flags & FLAG_HAS_SIGNATURE:
        length += SIGNATURE_BYTES
    if version == 2 and flags & FLAG_HAS_ROUTE:
        route_at = header + ID_BYTES + (ID_BYTES if flags & FLAG_HAS_RECIPIENT else 0)
        if len(buf) <= route_at:
            return None
        length += 1 + ID_BYTES * buf[route_at]
    return length


def padding_after(frame_len: int) -> int:
    """Bytes of BitChat padding (BITCHAT.md §1.3) a frame of ``frame_len`` bytes would carry if padded."""
    for block in PAD_BLOCKS:
        if frame_len + PAD_HEADROOM <= block:
            k = block - frame_len
            return k if 1 <= k <= 255 else 0
    return 0


class NotificationStreamAssembler:
    """Cuts whole BitChat frames out of a stream of notification bytes (bounded, stall-reset)."""

    def __init__(self, max_buffer_bytes: int, stall_reset_s: float, counters: BleCounters) -> None:
        self._buf = bytearray()
        self._max = max_buffer_bytes
        self._stall_s = stall_reset_s
        self._last_at = -math.inf
        self._counters = counters
        self._pad_byte = 0  # value of padding still expected after the last frame
        self._pad_left = 0

    def feed(self, data: bytes, now: float) -> list[bytes]:
        if self._buf and now - self._last_at > self._stall_s:
            self._counters.stream_resets += 1
            self._counters.stream_bytes_skipped += len(self._buf)
            self._buf.clear()
            self._pad_left = 0
        self._last_at = now
        if not self._buf and not self._pad_left and data and data[0] not in (1, 2):
            # Not the start of a BitChat frame at a frame boundary: one notification is one opaque frame (the
            # mesh's codec decides; this also keeps the link byte-transparent for the conformance suite).
            return [bytes(data)]
        self._buf += data
        frames: list[bytes] = []
        while self._buf:
            # Padding that followed the previous frame (each byte equals the pad length).
            while self._pad_left and self._buf and self._buf[0] == self._pad_byte:
                del self._buf[0]
                self._pad_left -= 1
            if not self._buf:
                break
            self._pad_left = 0
            if self._buf[0] not in (1, 2):  # not a frame start: padding of another form, or garbage
                self._buf.pop(0)
                self._counters.stream_bytes_skipped += 1
                continue
            length = frame_length_untrusted(self._buf)
            if length is None or len(self._buf) < length:
                if (length or 0) > self._max or len(self._buf) > self._max:
                    self._counters.stream_resets += 1
                    self._counters.stream_bytes_skipped += len(self._buf)
                    self._buf.clear()
                break
            frames.append(bytes(self._buf[:length]))
            del self._buf[:length]
            self._pad_left = padding_after(length)
            self._pad_byte = self._pad_left
        return frames


@dataclass(slots=True)
class _Conn:
    conn_id: str
    address: str
    role: Role
    att_mtu: int
    assembler: NotificationStreamAssembler
    tokens: float
    tokens_at: float


class BleCore:
    """See the module docstring. Feed :meth:`handle_radio_event`, drain :meth:`next_action` and
    :meth:`next_event`, and call :meth:`handle_timer` at :meth:`get_timer`."""

    def __init__(self, settings: BleSettings, now: float) -> None:
        self.settings = settings
        self.counters = BleCounters()
        self._conns: dict[str, _Conn] = {}
        self._connecting: set[str] = set()  # addresses with a connect in flight
        self._known: OrderedDict[str, DeviceDiscovered] = OrderedDict()
        self._backoff_until: dict[str, float] = {}
        self._next_connect_at = now
        self._actions: deque[Action] = deque()
        self._events: deque[CoreEvent] = deque()
        self._plan = settings.plan
        self._plan_t0 = now
        self._scanning = False
        self._advertising = False
        self._switch_at = math.inf
        self._started = False
        self._last_link_at = now  # when a link was last up (isolation is measured from here)

    # --- inputs -------------------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self._started = True
        self._apply_plan(now)

    def stop(self) -> None:
        """Stop scanning and advertising and drop every connection (the transport is shutting down)."""
        self._started = False
        self._switch_at = math.inf
        if self._scanning:
            self._scanning = False
            self._actions.append(SetScanning(False))
        if self._advertising:
            self._advertising = False
            self._actions.append(SetAdvertising(False))
        for conn_id in list(self._conns):
            self._actions.append(Disconnect(conn_id, "shutting down"))

    def set_plan(self, plan: RadioPlan | None, now: float) -> None:
        """Adopt a new radio plan (from the power governor); takes effect at once."""
        self._plan = plan
        self._plan_t0 = now
        if self._started:
            self._apply_plan(now)

    @property
    def max_central_links(self) -> int:
        cap = self.settings.max_central_links
        return min(cap, self._plan.max_central_links) if self._plan else cap

    def handle_radio_event(self, event: RadioEvent, now: float) -> None:
        if isinstance(event, DeviceDiscovered):
            self._on_discovered(event, now)
        elif isinstance(event, Connected):
            self._on_connected(event, now)
        elif isinstance(event, DataReceived):
            self._on_data(event, now)
        elif isinstance(event, MtuChanged):
            conn = self._conns.get(event.conn_id)
            if conn is not None:
                conn.att_mtu = min(conn.att_mtu, event.att_mtu) if conn.att_mtu else event.att_mtu
        elif isinstance(event, Disconnected):
            self._on_disconnected(event.conn_id, event.reason or "disconnected", now)
            self._maybe_connect(now)
        elif isinstance(event, ConnectFailed):
            self._connecting.discard(event.address)
            self.counters.connects_failed += 1
            self._backoff_until[event.address] = now + self.settings.connect_backoff_s
            self._maybe_connect(now)

    def reserve_send(self, conn_id: str, now: float) -> float:
        """Take one write from the link's pacing budget; returns the time at which it may go (``now`` or
        later). The caller waits until then and sends. Unknown links answer ``now`` (the send will fail)."""
        conn = self._conns.get(conn_id)
        if conn is None:
            return now
        s = self.settings
        conn.tokens = min(float(s.send_burst), conn.tokens + (now - conn.tokens_at) * s.send_rate_per_s)
        conn.tokens_at = now
        conn.tokens -= 1.0
        if conn.tokens >= 0:
            return now
        return now + (-conn.tokens) / s.send_rate_per_s

    def record_sent(self, nbytes: int) -> None:
        self.counters.frames_out += 1
        self.counters.bytes_out += nbytes

    def link_mtu(self, conn_id: str) -> int:
        conn = self._conns.get(conn_id)
        return gatt.att_payload_bytes(conn.att_mtu) if conn else 0

    @property
    def central_links(self) -> int:
        return sum(1 for c in self._conns.values() if c.role is Role.CENTRAL)

    @property
    def links(self) -> int:
        return len(self._conns)

    # --- outputs ------------------------------------------------------------------------------------------

    def next_action(self) -> Action | None:
        return self._actions.popleft() if self._actions else None

    def next_event(self) -> CoreEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        t = min(self._switch_at, self._next_connect_time()[0])
        return None if t == math.inf else t

    def handle_timer(self, now: float) -> None:
        if now >= self._switch_at:
            self._apply_plan(now)
        for address, until in list(self._backoff_until.items()):
            if until <= now:
                del self._backoff_until[address]
        self._maybe_connect(now)

    # --- internals ----------------------------------------------------------------------------------------

    def _apply_plan(self, now: float) -> None:
        t = now - self._plan_t0
        scan = self.settings.scan and (self._plan is None or self._plan.scanning(t))
        advertise = self.settings.advertise and (self._plan is None or self._plan.advertising(t))
        if scan != self._scanning:
            self._scanning = scan
            self._actions.append(SetScanning(scan))
        if advertise != self._advertising:
            self._advertising = advertise
            self._actions.append(SetAdvertising(advertise))
        self._switch_at = math.inf if self._plan is None else self._plan_t0 + self._plan.next_change(t)

    def _connect_budget_left(self) -> int:
        return self.max_central_links - self.central_links - len(self._connecting)

    def rssi_gate_dbm(self, now: float) -> int:
        """The RSSI a device must reach now to be connected to (see ``BleSettings.rssi_min_dbm``)."""
        s = self.settings
        if len(self._conns) >= s.crowded_links:
            return s.rssi_min_dbm + s.rssi_crowded_step_db
        if not self._conns and now - self._last_link_at >= s.isolated_after_s:
            return s.rssi_min_dbm - s.rssi_isolated_step_db
        return s.rssi_min_dbm

    def _on_discovered(self, ev: DeviceDiscovered, now: float) -> None:
        self.counters.devices_discovered += 1
        if ev.rssi_dbm < self.rssi_gate_dbm(now):
            self.counters.below_rssi_gate += 1
            self._known.pop(ev.address, None)
            return
        self._known[ev.address] = ev
        self._known.move_to_end(ev.address)
        while len(self._known) > self.settings.max_known_devices:
            self._known.popitem(last=False)
        self._maybe_connect(now)

    def _connected_addresses(self) -> set[str]:
        return {c.address for c in self._conns.values()}

    def _next_connect_time(self) -> tuple[float, str]:
        """When the next connect may start and to whom (``inf`` when nobody qualifies)."""
        if not self._started or not self.settings.scan or self._connecting or self._connect_budget_left() <= 0:
            return math.inf, ""  # one attempt at a time (Bumble and BlueZ allow one pending LE connection)
        busy = self._connected_addresses()
        best = (math.inf, "")
        for address in reversed(self._known):  # most recently heard first
            if address in busy:
                continue
            at = max(self._next_connect_at, self._backoff_until.get(address, -math.inf))
            if at < best[0]:
                best = (at, address)
        return best

    def _maybe_connect(self, now: float) -> None:
        at, address = self._next_connect_time()
        if at > now:
            return
        self._connecting.add(address)
        self._next_connect_at = now + self.settings.connect_interval_s
        self.counters.connects_started += 1
        self._actions.append(Connect(address))

    def _on_connected(self, ev: Connected, now: float) -> None:
        self._connecting.discard(ev.address)
        if ev.role is Role.CENTRAL and self.central_links >= self.max_central_links:
            self._actions.append(Disconnect(ev.conn_id, "central link budget exhausted"))
            return
        if gatt.att_payload_bytes(ev.att_mtu) < gatt.MIN_USEFUL_ATT_PAYLOAD:
            # BitChat (Android) drops links whose MTU exchange failed; a 20-byte write cannot carry a fragment.
            self.counters.mtu_too_small += 1
            self._actions.append(Disconnect(ev.conn_id, f"ATT MTU {ev.att_mtu} too small"))
            return
        assembler = NotificationStreamAssembler(
            self.settings.max_stream_buffer_bytes, self.settings.stream_stall_reset_s, self.counters
        )
        self._conns[ev.conn_id] = _Conn(
            ev.conn_id, ev.address, ev.role, ev.att_mtu, assembler, float(self.settings.send_burst), now
        )
        self.counters.links_up += 1
        self._events.append(LinkUp(ev.conn_id, ev.address, ev.role, gatt.att_payload_bytes(ev.att_mtu)))
        self._maybe_connect(now)

    def _on_data(self, ev: DataReceived, now: float) -> None:
        conn = self._conns.get(ev.conn_id)
        if conn is None or not ev.data:
            return
        self.counters.bytes_in += len(ev.data)
        # One write is one frame (BitChat writes whole frames); notifications are a stream.
        frames = [ev.data] if conn.role is Role.PERIPHERAL else conn.assembler.feed(ev.data, now)
        for frame in frames:
            self.counters.frames_in += 1
            self._events.append(FrameReceived(ev.conn_id, frame))

    def _on_disconnected(self, conn_id: str, reason: str, now: float) -> None:
        if self._conns.pop(conn_id, None) is not None:
            self._last_link_at = now
            self.counters.links_down += 1
            self._events.append(LinkDown(conn_id, reason))
