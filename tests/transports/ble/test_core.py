"""The sans-IO BLE link core: notification framing, MTU, central budget, RSSI gate, pacing and the radio plan."""

from __future__ import annotations

from node.transports.ble import gatt
from node.transports.ble.base import Connected, ConnectFailed, DataReceived, DeviceDiscovered, Disconnected, Role
from node.transports.ble.core import (
    Action,
    BleCore,
    BleCounters,
    BleSettings,
    Connect,
    CoreEvent,
    Disconnect,
    FrameReceived,
    LinkDown,
    LinkUp,
    NotificationStreamAssembler,
    SetAdvertising,
    SetScanning,
)
from node.transports.ble.power import PowerMode, plan_for
from node.wire.packet import MessageType, Packet, decode_packet_untrusted, encode_packet

SENDER = bytes.fromhex("0102030405060708")


def frame(payload: bytes, *, recipient: bytes | None = None, signed: bool = False, padded: bool = False) -> bytes:
    pkt = Packet(
        version=1,
        type=MessageType.NOISE_ENCRYPTED if padded else MessageType.MESSAGE,
        ttl=7,
        timestamp_ms=1_700_000_000_000,
        sender_id=SENDER,
        recipient_id=recipient,
        payload=payload,
        signature=b"\xab" * 64 if signed else None,
    )
    return encode_packet(pkt, pad=padded, compress=False)


def assembler() -> NotificationStreamAssembler:
    return NotificationStreamAssembler(4096, 0.25, BleCounters())


def drain(core: BleCore) -> tuple[list[Action], list[CoreEvent]]:
    actions: list[Action] = []
    events: list[CoreEvent] = []
    while (a := core.next_action()) is not None:
        actions.append(a)
    while (e := core.next_event()) is not None:
        events.append(e)
    return actions, events


# --- notification stream -------------------------------------------------------------------------------------


def test_a_frame_split_across_notifications_is_rejoined() -> None:
    f = frame(b"hello over three notifications", recipient=b"\x09" * 8, signed=True)
    asm = assembler()
    assert asm.feed(f[:10], 0.0) == []
    assert asm.feed(f[10:40], 0.01) == []
    assert asm.feed(f[40:], 0.02) == [f]
    assert decode_packet_untrusted(f).payload == b"hello over three notifications"


def test_concatenated_frames_and_padding_between_them_are_cut_apart() -> None:
    a = frame(b"first", padded=True)  # 0x11 frames travel padded to 256 bytes
    b = frame(b"second")
    assert len(a) == 256
    got = assembler().feed(a + b, 0.0)
    assert [decode_packet_untrusted(x).payload for x in got] == [b"first", b"second"]
    assert got[1] == b


def test_a_stalled_partial_frame_is_discarded_after_250_ms() -> None:
    f = frame(b"x" * 50)
    counters = BleCounters()
    asm = NotificationStreamAssembler(4096, 0.25, counters)
    assert asm.feed(f[:20], 0.0) == []
    assert asm.feed(f, 0.3) == [f]  # the stale head was dropped, the fresh frame stands alone
    assert counters.stream_resets == 1 and counters.stream_bytes_skipped == 20


def test_the_stream_buffer_is_bounded() -> None:
    counters = BleCounters()
    asm = NotificationStreamAssembler(256, 0.25, counters)
    huge_header = frame(b"y" * 1000)[:30]  # claims a 1000-byte payload, more than the buffer may hold
    assert asm.feed(huge_header, 0.0) == []
    assert counters.stream_resets == 1
    assert asm.feed(frame(b"ok"), 0.01) == [frame(b"ok")]


def test_a_notification_not_starting_a_frame_passes_whole() -> None:
    assert assembler().feed(b"\x00\x00\x00\x07opaque", 0.0) == [b"\x00\x00\x00\x07opaque"]


# --- the core ---------------------------------------------------------------------------------------------------


def started(settings: BleSettings, now: float = 0.0) -> BleCore:
    core = BleCore(settings, now)
    core.start(now)
    return core


def test_start_advertises_and_scans() -> None:
    actions, _ = drain(started(BleSettings()))
    assert actions == [SetScanning(True), SetAdvertising(True)]


def test_rssi_gate() -> None:
    core = started(BleSettings(rssi_min_dbm=-80))
    drain(core)
    core.handle_radio_event(DeviceDiscovered("weak", -85), 1.0)
    assert drain(core)[0] == []
    assert core.counters.below_rssi_gate == 1
    core.handle_radio_event(DeviceDiscovered("strong", -60), 1.0)
    assert drain(core)[0] == [Connect("strong")]


def up(core: BleCore, conn_id: str, address: str, now: float, role: Role = Role.CENTRAL, mtu: int = 517) -> None:
    core.handle_radio_event(Connected(conn_id, address, role, mtu), now)


def test_central_budget_one_attempt_at_a_time_and_spacing() -> None:
    core = started(BleSettings(max_central_links=2, connect_interval_s=0.5))
    drain(core)
    for i in range(4):
        core.handle_radio_event(DeviceDiscovered(f"d{i}", -50), 1.0)
    assert drain(core)[0] == [Connect("d0")]  # one attempt in flight at a time
    up(core, "c0", "d0", 1.1)
    actions, events = drain(core)
    assert actions == [] and events == [LinkUp("c0", "d0", Role.CENTRAL, 512)]
    assert core.get_timer() == 1.5  # 0.5 s after the last connect started
    core.handle_timer(1.5)
    assert drain(core)[0] == [Connect("d3")]  # the most recently heard device next
    up(core, "c3", "d3", 1.6)
    core.handle_timer(5.0)
    assert drain(core)[0] == []  # budget of 2 central links used up
    assert core.get_timer() is None
    # A peer connecting to us does not use the budget, and its address is not dialled again.
    up(core, "p1", "d1", 5.0, role=Role.PERIPHERAL)
    core.handle_radio_event(Disconnected("c0"), 6.0)
    actions, events = drain(core)
    assert events[-1] == LinkDown("c0", "disconnected")
    assert actions == [Connect("d2")]  # d3 and d1 are linked already; d2 was heard after d0


def test_failed_address_backs_off() -> None:
    core = started(BleSettings(connect_backoff_s=10.0))
    drain(core)
    core.handle_radio_event(DeviceDiscovered("d", -50), 0.0)
    assert drain(core)[0] == [Connect("d")]
    core.handle_radio_event(ConnectFailed("d", "timeout"), 8.0)
    assert drain(core)[0] == []
    assert core.get_timer() == 18.0
    core.handle_timer(18.0)
    assert drain(core)[0] == [Connect("d")]


def test_too_small_mtu_is_dropped() -> None:
    core = started(BleSettings())
    drain(core)
    up(core, "c", "d", 0.0, role=Role.PERIPHERAL, mtu=gatt.ATT_MTU_DEFAULT)
    actions, events = drain(core)
    assert events == [] and actions == [Disconnect("c", "ATT MTU 23 too small")]


def test_writes_are_frames_and_notifications_a_stream() -> None:
    core = started(BleSettings())
    up(core, "p", "a", 0.0, role=Role.PERIPHERAL)
    up(core, "c", "b", 0.0, role=Role.CENTRAL)
    drain(core)
    f = frame(b"abc")
    core.handle_radio_event(DataReceived("p", f), 0.1)
    core.handle_radio_event(DataReceived("c", f[:5]), 0.1)
    core.handle_radio_event(DataReceived("c", f[5:] + f), 0.1)
    assert drain(core)[1] == [FrameReceived("p", f), FrameReceived("c", f), FrameReceived("c", f)]


def test_pacing_burst_then_rate() -> None:
    core = started(BleSettings(send_rate_per_s=100.0, send_burst=3))
    up(core, "c", "a", 0.0)
    times = [core.reserve_send("c", 0.0) for _ in range(5)]
    assert times[:3] == [0.0, 0.0, 0.0]
    assert times[3:] == [0.01, 0.02]
    assert core.reserve_send("c", 1.0) == 1.0  # refilled after a pause


def test_saver_plan_duty_cycles_scanning_and_caps_links() -> None:
    plan = plan_for(PowerMode.SAVER, 6)
    core = started(BleSettings(plan=plan))
    assert drain(core)[0] == [SetScanning(True), SetAdvertising(True)]
    assert core.max_central_links == plan.max_central_links < 6
    t_off = core.get_timer()
    assert t_off == plan.scan.on_s
    core.handle_timer(t_off)
    assert drain(core)[0] == [SetScanning(False)]
    t_on = core.get_timer()
    assert t_on == plan.scan.on_s + plan.scan.off_s
    core.handle_timer(t_on)
    assert drain(core)[0] == [SetScanning(True)]
    core.set_plan(plan_for(PowerMode.PERFORMANCE, 6), t_on + 1)
    assert core.get_timer() is None and core.max_central_links == 6


def test_rssi_gate_tightens_when_crowded_and_loosens_when_isolated() -> None:
    core = started(BleSettings(rssi_min_dbm=-90, max_central_links=8, connect_interval_s=0.0), now=0.0)
    drain(core)
    assert core.rssi_gate_dbm(10.0) == -90
    core.handle_radio_event(DeviceDiscovered("far", -95), 10.0)
    assert drain(core)[0] == []
    # 30 s without any link: a −95 dBm device is worth a try (iOS goes down to −100).
    assert core.rssi_gate_dbm(30.0) == -100
    core.handle_radio_event(DeviceDiscovered("far", -95), 30.0)
    assert drain(core)[0] == [Connect("far")]
    for i in range(6):
        up(core, f"p{i}", f"peer{i}", 31.0, role=Role.PERIPHERAL)
    assert core.rssi_gate_dbm(31.0) == -85  # six links up: only clearly heard devices
    drain(core)
    core.handle_radio_event(ConnectFailed("far", "timeout"), 31.0)
    core.handle_radio_event(DeviceDiscovered("near-ish", -88), 31.0)
    assert drain(core)[0] == []
    assert core.counters.below_rssi_gate == 2
