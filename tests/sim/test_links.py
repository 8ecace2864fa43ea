"""The link model, observed through two cores: loss, bandwidth with a bounded FIFO, MTU, cuts that heal."""

from __future__ import annotations

import dataclasses

import pytest

from node.routing.settings import MeshSection
from node.sim import LinkModel, Partition, Simulation, line
from node.wire import MessageType


def test_loss_drops_about_the_configured_fraction() -> None:
    sim = Simulation(line(2), LinkModel(loss=0.3, bandwidth_bytes_per_s=None), seed=4)
    sim.run_until(5.0)
    for k in range(2000):
        sim.broadcast(0, f"b{k}")
        sim.run_until(sim.now + 0.01)
    sim.run_until(sim.now + 5.0)
    r = sim.report()
    assert r.link.lost / r.link.transmitted == pytest.approx(0.3, abs=0.03)
    assert r.broadcast_delivery_ratio == pytest.approx(0.7, abs=0.03)  # node 1 got what was not lost
    assert r.frames_by_type["message"] == 2000  # node 1 never sends a broadcast back out of its only link


def test_bandwidth_bounds_bytes_per_second_and_the_fifo_drops_at_the_tail() -> None:
    bw = 4000.0
    model = LinkModel(loss=0.0, latency_s=0.0, jitter_s=0.0, bandwidth_bytes_per_s=bw, queue_frames=20)
    sim = Simulation(line(2), model, seed=2)
    sim.run_until(1.0)  # link-up announces and pings are through
    before = sim.report().link
    for k in range(50):  # ~230 B frames: 50 at once overflow a 20-frame FIFO
        sim.broadcast(0, f"burst {k:03d} " + "x" * 80)
    after = sim.report().link
    assert after.tail_dropped - before.tail_dropped == 30
    forward = sim.edges[0].forward
    last, per_second = forward.bytes_delivered, []
    for t in range(2, 8):
        sim.run_until(float(t))
        per_second.append(forward.bytes_delivered - last)
        last = forward.bytes_delivered
    assert max(per_second) <= bw
    assert per_second[0] >= 0.8 * bw  # the queue kept the link busy
    assert sim.report().broadcast_receivers == 20


def test_cores_fragment_to_the_link_mtu() -> None:
    sim = Simulation(line(2), LinkModel(mtu=256, bandwidth_bytes_per_s=None), seed=1)
    sim.run_until(2.0)
    sim.broadcast(0, "".join(chr(0x4E00 + (k * 7919) % 20000) for k in range(500)))  # 1,500 B, incompressible
    sim.run_until(4.0)
    r = sim.report()
    assert r.link.oversize == 0 and r.fragment_frames > 0
    assert r.broadcast_receivers == 1


def test_a_partition_cuts_links_for_its_window_then_heals() -> None:
    sim = Simulation(line(3), LinkModel(bandwidth_bytes_per_s=None), seed=5)
    sim.add_partition(Partition(frozenset({(1, 2)}), start_s=20.0, end_s=60.0))
    sim.run_until(19.0)
    assert sim.link_is_up(1, 2) and "sim:1" in sim.cores[2].links
    sim.run_until(30.0)
    assert not sim.link_is_up(1, 2) and sim.link_is_up(0, 1)
    assert not sim.cores[2].links and "sim:1" not in sim.cores[1].links
    during = sim.broadcast(1, "during the cut")
    sim.run_until(59.0)
    assert set(during.reached) == {0}
    sim.run_until(61.0)
    assert sim.link_is_up(1, 2) and "sim:1" in sim.cores[2].links
    after = sim.broadcast(1, "after the heal")
    sim.run_until(70.0)
    assert set(after.reached) == {0, 2}


def test_a_node_going_down_takes_all_its_links_and_returns() -> None:
    sim = Simulation(line(3), LinkModel(bandwidth_bytes_per_s=None), seed=6)
    sim.run_until(10.0)
    sim.node_down(1)
    assert not sim.cores[1].links and not sim.cores[0].links and not sim.cores[2].links
    sim.run_until(20.0)
    frames = sim.frames_by_type()
    sim.node_up(1)
    assert len(sim.cores[1].links) == 2
    sim.run_until(21.0)
    # link-up announces, and answers to them (a neighbour's first announce on a link is answered)
    assert sim.frames_by_type()[MessageType.ANNOUNCE] >= frames[MessageType.ANNOUNCE] + 8


def test_per_direction_models_apply_to_one_direction_only() -> None:
    sim = Simulation(line(2), LinkModel(bandwidth_bytes_per_s=None), seed=9)
    sim.set_link_model(1, 0, dataclasses.replace(LinkModel(bandwidth_bytes_per_s=None), loss=1.0))
    sim.run_until(3.0)
    for k in range(20):
        sim.broadcast(0, f"to one {k}")
        sim.broadcast(1, f"to zero {k}")
    sim.run_until(6.0)
    reached = [len(b.reached) for b in sim.broadcasts]
    assert reached[0::2] == [1] * 20 and reached[1::2] == [0] * 20
    assert sim.settings == MeshSection()
