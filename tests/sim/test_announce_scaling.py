"""Announce traffic that does not grow with the square of the mesh: relay suppression of unchanged announces,
no relaying of link-up announces (one flood per node at start-up), pruning of announce relays by the sender's
neighbour list, and far peers that stay reachable between the rarer refreshes."""

from __future__ import annotations

import dataclasses

from node.routing.mesh import MeshCore
from node.routing.settings import MeshSection
from node.sim import LinkModel, Simulation, Topology, line
from node.wire import MessageType, decode_packet_untrusted, encode_packet

PERFECT = LinkModel(bandwidth_bytes_per_s=None)


def _settings(**kw: float) -> MeshSection:
    return dataclasses.replace(MeshSection(), **kw)  # type: ignore[arg-type]


def _count_announces_from(core: MeshCore, origin: bytes, log: list[float], clock: Simulation) -> None:
    """Record when ``core`` receives an announce from ``origin`` (any copy)."""
    original = core.receive_frame

    def receive(link_id: str, data: bytes, now: float) -> bool:
        pkt = decode_packet_untrusted(data)
        if pkt.type == MessageType.ANNOUNCE and pkt.sender_id == origin:
            log.append(now)
        return original(link_id, data, now)

    core.receive_frame = receive  # type: ignore[method-assign]


def _record_frames(sim: Simulation) -> list[tuple[int, str, bytes]]:
    """Every frame every core puts on a link: (node, link ID, frame)."""
    sent: list[tuple[int, str, bytes]] = []
    for i, core in enumerate(sim.cores):
        original = core.frames_to_send

        def frames(i: int = i, original=original) -> list[tuple[str, bytes]]:  # type: ignore[no-untyped-def]
            out: list[tuple[str, bytes]] = original()
            sent.extend((i, link_id, frame) for link_id, frame in out)
            return out

        core.frames_to_send = frames  # type: ignore[method-assign]
    return sent


def test_an_unchanged_announce_is_relayed_once_per_relay_interval() -> None:
    slow = _settings(announce_relay_min_interval_s=60.0)
    sim = Simulation(line(3), PERFECT, slow, seed=2)
    heard: list[float] = []
    _count_announces_from(sim.cores[2], sim.peer_ids[0], heard, sim)
    sim.run_until(300.0)
    relayed = [t for t in heard if t > 10.0]
    # Node 0 announces every 15 +- 4 s (about 19 times in 290 s); node 1 passes one on per 60 s.
    assert 3 <= len(relayed) <= 6, relayed
    assert sim.cores[1].counters.announce_relay_suppressed >= 10
    assert sim.cores[2].is_reachable(sim.cores[2].peers.get(sim.peer_ids[0]), sim.now)  # type: ignore[arg-type]

    default = Simulation(line(3), PERFECT, MeshSection(), seed=2)
    heard_default: list[float] = []
    _count_announces_from(default.cores[2], default.peer_ids[0], heard_default, default)
    default.run_until(300.0)
    assert len([t for t in heard_default if t > 10.0]) >= 2 * len(relayed)  # a small mesh: BitChat-like


def test_a_changed_announce_is_relayed_within_the_interval() -> None:
    # 0 - 1 - 2, and 3 hanging off 0: node 3 comes up late, so 0's neighbour list changes.
    topo = Topology("line+1", 4, ((0, 1), (0, 3), (1, 2)))
    sim = Simulation(topo, PERFECT, _settings(announce_relay_min_interval_s=600.0), seed=4)
    sim.node_down(3)
    sim.run_until(100.0)
    far = sim.cores[2].paths
    assert sim.peer_ids[3] not in far.neighbours_of(sim.peer_ids[0])
    sim.node_up(3)
    sim.run_until(110.0)  # 0 announces again ~3 s after the link came up; the change is passed on at once
    assert sim.peer_ids[3] in far.neighbours_of(sim.peer_ids[0])


def test_link_up_announces_are_not_relayed_the_settled_one_is() -> None:
    sim = Simulation(line(3), PERFECT, MeshSection(), seed=5)
    heard: list[float] = []
    _count_announces_from(sim.cores[2], sim.peer_ids[0], heard, sim)
    sim.run_until(2.0)
    assert heard == [] and sim.cores[2].peers.get(sim.peer_ids[0]) is None
    sim.run_until(5.0)  # ~3 s after its link came up, node 0 announces on every link: that one travels
    assert len(heard) == 1 and sim.cores[2].peers.get(sim.peer_ids[0]) is not None
    assert sim.peer_ids[1] in sim.cores[2].paths.neighbours_of(sim.peer_ids[0])  # and names its neighbour


def test_announce_relays_skip_the_senders_neighbours() -> None:
    # 0 - 1, and 1, 2, 3 all neighbours of each other: 1 covers 2 and 3, so 2 and 3 never pass 0's announces
    # on to each other.
    topo = Topology("kite", 4, ((0, 1), (1, 2), (1, 3), (2, 3)))
    sim = Simulation(topo, PERFECT, MeshSection(), seed=6)
    sent = _record_frames(sim)
    sim.run_until(120.0)
    origin = sim.peer_ids[0]

    def announces_from_origin(node: int) -> int:
        n = 0
        for i, _link, frame in sent:
            if i != node or frame[1] != MessageType.ANNOUNCE:
                continue
            if decode_packet_untrusted(frame).sender_id == origin:
                n += 1
        return n

    assert announces_from_origin(1) >= 3  # 1 relays them
    assert announces_from_origin(2) == 0 and announces_from_origin(3) == 0


def test_a_far_peer_stays_reachable_between_rare_refreshes() -> None:
    settings = _settings(peer_expiry_s=20.0, announce_relay_min_interval_s=60.0)
    sim = Simulation(line(4), PERFECT, settings, seed=7)
    sim.run_until(30.0)
    near, far = sim.cores[0].peers.get(sim.peer_ids[1]), sim.cores[0].peers.get(sim.peer_ids[3])
    assert near is not None and far is not None and far.hops == 3
    assert sim.cores[0].peer_expiry_for(near) == 20.0 and sim.cores[0].peer_expiry_for(far) >= 150.0
    t = 30.0
    while t < 300.0:  # refreshed only every 60 s, shown as gone after 20 s of silence it would flap
        sim.run_until(t)
        assert sim.cores[0].is_reachable(far, t), t
        t += 5.0


def test_a_copy_of_a_taken_packet_is_a_duplicate_without_a_parse() -> None:
    sim = Simulation(line(2), PERFECT, MeshSection(), seed=8)
    sim.run_until(10.0)
    frame = encode_packet(sim.cores[0].announce_packet(sim.now))
    link = next(iter(sim.cores[1].links))
    core = sim.cores[1]
    before = core.counters.duplicate
    assert core.receive_frame(link, frame, sim.now) is True
    relayed_copy = frame[:2] + bytes([frame[2] - 1]) + frame[3:]  # TTL rewritten, as a relay does
    assert core.receive_frame(link, relayed_copy, sim.now) is False
    assert core.receive_frame(link, frame, sim.now) is False
    assert core.counters.duplicate == before + 2
    assert core.receive_frame(link, b"\x01\x01", sim.now) is False  # too short: malformed, not a crash
    assert core.counters.malformed == 1


def test_a_message_to_a_peer_never_heard_of_gets_through_by_a_flooded_handshake() -> None:
    # Every flood of node 2's announces misses node 0 (its copies are dropped on arrival), so node 0 never learns
    # node 2 from an announce. Noise XX needs none: the handshake proves node 2's key.
    sim = Simulation(line(3), PERFECT, MeshSection(), seed=9)
    sender, target = sim.cores[0], sim.peer_ids[2]
    original = sender.receive_frame

    def receive(link_id: str, data: bytes, now: float) -> bool:
        if data[1] == MessageType.ANNOUNCE and decode_packet_untrusted(data).sender_id == target:
            return False
        return original(link_id, data, now)

    sender.receive_frame = receive  # type: ignore[method-assign]
    sim.run_until(20.0)
    assert sender.peers.get(target) is None
    rec = sim.send_private(0, 2, "hello stranger")
    sim.run_until(60.0)
    assert rec.delivered_s is not None and rec.acked_s is not None
    assert sender.counters.unknown_peer_probes >= 1 and sender.peers.get(target) is None


def test_in_a_lossy_neighbourhood_an_origins_first_relays_come_at_the_short_interval() -> None:
    # A long relay interval (300 s): with clean links node 1 passes node 0's unchanged announce on once in the
    # first 200 s; when most of its pings go unanswered, the first three relays come >= 15 s apart.
    def relays_of_origin(loss: float) -> tuple[int, bool]:
        settings = _settings(announce_relay_per_s=0.01)
        sim = Simulation(line(3), LinkModel(loss=loss, bandwidth_bytes_per_s=None), settings, seed=11)
        sent = _record_frames(sim)
        sim.run_until(200.0)
        origin = sim.peer_ids[0]
        n = 0
        for i, _link, frame in sent:
            if i == 1 and frame[1] == MessageType.ANNOUNCE and decode_packet_untrusted(frame).sender_id == origin:
                n += 1
        return n, sim.cores[1].lossy_neighbourhood()

    assert relays_of_origin(0.0) == (1, False)
    relays, lossy = relays_of_origin(0.35)
    assert lossy and relays == 3
