"""The delivery fallback for a private message to a peer never heard of: once its UNKNOWN_PEER_PROBES are spent,
the sender keeps probing (flooded handshakes) within its own budget instead of waiting for an announce that may
never get through; a burst of such sends is refused by that budget, not passed on to the mesh."""

from __future__ import annotations

from node.routing.mesh import MeshCore
from node.routing.meshbase import FALLBACK_PROBES_PER_MIN, UNKNOWN_PEER_PROBES
from node.routing.settings import MeshSection
from node.sim import LinkModel, Simulation, line
from node.wire import MessageType, decode_packet_untrusted

PERFECT = LinkModel(bandwidth_bytes_per_s=None)


def _deaf_to(core: MeshCore, target: bytes, *, handshakes_until_s: float) -> None:
    """``core`` never takes an announce from ``target`` (so ``target`` is known to it only by its neighbour's
    one-sided claim), and loses ``target``'s handshake messages until ``handshakes_until_s``."""
    original = core.receive_frame

    def receive(link_id: str, data: bytes, now: float) -> bool:
        pkt = decode_packet_untrusted(data)
        if pkt.sender_id == target and (
            pkt.type == MessageType.ANNOUNCE or (pkt.type == MessageType.NOISE_HANDSHAKE and now < handshakes_until_s)
        ):
            return False
        return original(link_id, data, now)

    core.receive_frame = receive  # type: ignore[method-assign]


def test_a_peer_named_only_by_a_one_sided_claim_gets_the_message_after_the_probes_by_the_fallback() -> None:
    # Node 0 never hears node 2's announce (node 1 names node 2, node 2's own list never reaches node 0: no two-way
    # edge) and every handshake answer of node 2 is lost until 150 s, i.e. through all six probes (20-155 s).
    # Without the fallback the message then waits for an announce that never comes (it would expire at 620 s).
    sim = Simulation(line(3), PERFECT, MeshSection(), seed=9)
    sender, target = sim.cores[0], sim.peer_ids[2]
    _deaf_to(sender, target, handshakes_until_s=150.0)
    sim.run_until(20.0)
    assert sender.peers.get(target) is None
    rec = sim.send_private(0, 2, "hello across a one-way claim")
    sim.run_until(150.0)
    assert rec.delivered_s is None and sender.counters.unknown_peer_probes == UNKNOWN_PEER_PROBES
    assert sender.counters.fallback_probes == 0
    sim.run_until(240.0)
    assert rec.delivered_s is not None and rec.acked_s is not None
    assert sender.counters.fallback_probes >= 1 and sender.peers.get(target) is None


def test_fallback_probes_are_bounded_by_the_senders_budget() -> None:
    # 40 messages to 40 made-up peer IDs: each gets its six ordinary probes, then the fallback; over 600 s the
    # sender may start at most the burst plus FALLBACK_PROBES_PER_MIN a minute of fallback probes, and the rest are
    # refused (counted). The relay next door sees no more handshakes from the sender than that allows.
    sim = Simulation(line(2), PERFECT, MeshSection(), seed=5)
    sender = sim.cores[0]
    sim.run_until(10.0)
    strangers = [bytes([0xEE, k]) + bytes(6) for k in range(40)]
    for peer in strangers:
        mid = sender.new_message_id()
        assert mid is not None
        sender.queue_private(mid, peer, "is anyone there?", sim.now)
    ordinary = len(strangers) * UNKNOWN_PEER_PROBES
    sim.run_until(200.0)
    assert sender.counters.unknown_peer_probes == ordinary
    sim.run_until(610.0)
    elapsed_min = (610.0 - 10.0) / 60.0
    budget = FALLBACK_PROBES_PER_MIN * (1 + elapsed_min)
    assert 0 < sender.counters.fallback_probes <= budget
    assert sender.counters.fallback_refused > sender.counters.fallback_probes
    assert sender.counters.unknown_peer_probes == ordinary  # the ordinary probes are per message, not repeated
