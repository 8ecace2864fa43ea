"""Multi-hop routing between real Nodes over memory links, in simulated time: relayed announces feed the path
table; private messages travel on v2 source routes; broadcasts cross the mesh without amplifying in loops;
failover to another link or path; partitions heal and deliver what waited; forged and replayed packets are
ignored and counted, and never relayed."""

from __future__ import annotations

import random
from pathlib import Path

import nacl.signing
import trio
import trio.testing

from node.routing.relay import fanout_subset, relayed_ttl
from node.transports.memory import Faults
from node.wire import MessageType, Packet, decode_packet_untrusted, encode_packet, sign_packet
from tests.routing.harness import EPOCH_MS, Mesh, start_mesh
from tests.routing.test_neighbours import SIM_TIMEOUT_S, inbox_texts

LOSSY = Faults(drop=0.1, duplicate=0.05, reorder=0.1, reorder_window_s=0.2, latency_s=0.02, jitter_s=0.03)
# Broadcasts are best effort (no acks; BitChat repairs them with gossip sync): a test that every node gets one
# uses a medium that duplicates and reorders but does not lose. Loss is measured by bench/mesh_sim.py.
MESSY = Faults(duplicate=0.1, reorder=0.2, reorder_window_s=0.2, latency_s=0.02, jitter_s=0.03)


def pid(mesh: Mesh, i: int) -> bytes:
    return mesh.nodes[i].identity.peer_id


def core(mesh: Mesh, i: int):  # type: ignore[no-untyped-def]
    c = mesh.nodes[i].core
    assert c is not None
    return c


async def line(nursery: trio.Nursery, tmp_path: Path, n: int, faults: Faults | None = None, **kw: object) -> Mesh:
    mesh = await start_mesh(nursery, tmp_path, n, **kw)  # type: ignore[arg-type]
    for i in range(n - 1):
        mesh.connect(i, i + 1, faults)
    return mesh


async def test_private_message_crosses_four_relays_on_a_source_route(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await line(nursery, tmp_path, 5, seed=11)
    mesh.net.tap = []
    a, e = mesh.nodes[0], mesh.nodes[4]
    with trio.fail_after(SIM_TIMEOUT_S):
        await mesh.wait_until_known(0, 4)
        await mesh.wait_until_known(4, 0)
        # The topology from the relayed announces' neighbour lists is complete once every node announced twice.
        await a.wait_until(
            lambda: (r := core(mesh, 0).paths.route(pid(mesh, 4), trio.current_time())) is not None and bool(r.via)
        )
        route = core(mesh, 0).paths.route(pid(mesh, 4), trio.current_time())
        assert route is not None
        assert (route.hops, route.via, route.source) == (4, (pid(mesh, 1), pid(mesh, 2), pid(mesh, 3)), "topology")
        secret = "meet at the well at noon"
        message_id = a.send_private(e.identity.peer_id_hex, secret)
        await a.wait_until(lambda: a.outgoing[message_id].state == "delivered")
    assert inbox_texts(mesh, 4) == [(secret, True)]
    assert e.inbox is not None and e.inbox.list()[0].hops == 4
    assert core(mesh, 0).counters.sent_routed > 0
    assert sum(core(mesh, i).counters.relayed for i in (1, 2, 3)) > 0
    # Relays carried it without reading it: no plaintext anywhere, and the routed frames were v2 with a route.
    frames = [decode_packet_untrusted(f) for _, _, f in mesh.net.tap]
    assert not any(secret.encode() in f for _, _, f in mesh.net.tap)
    routed = [p for p in frames if p.type == MessageType.NOISE_ENCRYPTED and p.route]
    assert routed and all(p.version == 2 for p in routed)
    # Source-routed packets go hop by hop: the middle nodes never flood them back towards the sender.
    assert not any(
        src == "n2" and dst == "n1" and p.route and p.sender_id == pid(mesh, 0)
        for (src, dst, _), p in zip(mesh.net.tap, frames, strict=True)
    )


async def test_broadcast_reaches_every_node_of_a_grid(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await start_mesh(nursery, tmp_path, 9, seed=12)
    for r in range(3):  # a 3 x 3 grid
        for c in range(3):
            i = 3 * r + c
            if c < 2:
                mesh.connect(i, i + 1, MESSY)
            if r < 2:
                mesh.connect(i, i + 3, MESSY)
    with trio.fail_after(SIM_TIMEOUT_S):
        for j in range(1, 9):
            await mesh.wait_until_known(j, 0)
        message_id = mesh.nodes[0].broadcast("town meeting tonight")
        for j in range(1, 9):
            await mesh.nodes[j].wait_until(lambda j=j: bool(inbox_texts(mesh, j)))  # type: ignore[misc]
    for j in range(1, 9):
        inbox = mesh.nodes[j].inbox
        assert inbox is not None
        (msg,) = inbox.list()
        assert (msg.id, msg.text) == (message_id, "town meeting tonight")
    assert inbox_texts(mesh, 8) and mesh.nodes[8].inbox.list()[0].hops >= 3  # type: ignore[union-attr]


async def test_a_loop_never_amplifies_a_broadcast(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    n = 8
    mesh = await start_mesh(nursery, tmp_path, n, seed=13)
    for i in range(n):  # a ring, plus two chords: several loops
        mesh.connect(i, (i + 1) % n)
    mesh.connect(0, 4)
    mesh.connect(2, 6)
    with trio.fail_after(SIM_TIMEOUT_S):
        for j in range(1, n):
            await mesh.wait_until_known(j, 0)
        mesh.net.tap = []
        mesh.nodes[0].broadcast("round and round")
        await trio.sleep(120)  # long after every relay's jitter: anything still circulating would show
    copies = [f for _, _, f in mesh.net.tap if f[1] == MessageType.MESSAGE]
    links = n + 2
    assert len(copies) <= 2 * links  # at most once per node per link, whatever the loops
    # Every node relayed it at most once (duplicates are dropped before relaying).
    senders = [src for src, _, f in mesh.net.tap if f[1] == MessageType.MESSAGE]
    per_node = {s: senders.count(s) for s in set(senders)}
    assert all(count <= 3 for count in per_node.values())  # no node has more than 3 links
    assert all(len(inbox_texts(mesh, j)) == 1 for j in range(1, n))


async def test_failover_to_a_second_link_and_to_another_path(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # 0 and 3 are joined by two links of their own (think BLE and BetaNet), and by a path through 1 and 2.
    mesh = await start_mesh(nursery, tmp_path, 4, seed=14)
    first, _ = mesh.connect(0, 3)
    second, _ = mesh.connect(0, 3)
    mesh.connect(0, 1)
    mesh.connect(1, 2)
    mesh.connect(2, 3)
    a, d = mesh.nodes[0], mesh.nodes[3]
    with trio.fail_after(SIM_TIMEOUT_S):
        await a.wait_until(lambda: len(core(mesh, 0).paths.direct_links(pid(mesh, 3), trio.current_time())) == 2)
        await mesh.wait_until_known(0, 2)
        m1 = a.send_private(d.identity.peer_id_hex, "one")
        await a.wait_until(lambda: a.outgoing[m1].state == "delivered")
        await first.aclose()  # one transport goes: the other link carries on
        m2 = a.send_private(d.identity.peer_id_hex, "two")
        await a.wait_until(lambda: a.outgoing[m2].state == "delivered")
        assert core(mesh, 0).paths.direct_links(pid(mesh, 3), trio.current_time()) == [second.link_id]
        await second.aclose()  # no direct link left: the path through 1 and 2 takes over
        m3 = a.send_private(d.identity.peer_id_hex, "three")
        await a.wait_until(lambda: a.outgoing[m3].state == "delivered")
    assert [t for t, _ in inbox_texts(mesh, 3)] == ["one", "two", "three"]
    route = core(mesh, 0).paths.route(pid(mesh, 3), trio.current_time())
    assert route is not None and route.hops == 3


async def test_partition_and_heal_delivers_every_queued_message(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # 10 % loss on each of 3 hops loses ~half the send+ack round trips: resends every <= 15 s keep this short.
    # The first two minutes of the partition still look like a lossy path (the peer was heard lately), so about
    # ten resends go before the messages are held; 40 attempts leave room for an unlucky run after the heal.
    mesh = await line(nursery, tmp_path, 4, LOSSY, seed=15, private_retry_max_interval_s=15.0, private_max_attempts=40)
    a, d = mesh.nodes[0], mesh.nodes[3]
    with trio.fail_after(SIM_TIMEOUT_S):
        await mesh.wait_until_known(0, 3)
        first = a.send_private(d.identity.peer_id_hex, "before")
        await a.wait_until(lambda: a.outgoing[first].state == "delivered")
        mesh.net.partition({"n0", "n1"}, {"n2", "n3"})
        queued = [a.send_private(d.identity.peer_id_hex, f"queued {k}") for k in range(5)]
        await trio.sleep(240)  # four minutes apart: retries back off, nothing is lost
        assert all(a.outgoing[m].state == "pending" for m in queued)
        mesh.net.heal()
        await a.wait_until(lambda: all(a.outgoing[m].state == "delivered" for m in queued))
        await trio.sleep(60)  # let retransmits settle: still exactly once in the inbox
    texts = sorted(t for t, _ in inbox_texts(mesh, 3))
    assert texts == ["before", *[f"queued {k}" for k in range(5)]]


async def test_forged_and_replayed_packets_are_ignored_counted_and_not_relayed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await line(nursery, tmp_path, 3, seed=16)
    rogue_t = mesh.net.transport("rogue")
    rogue_link, _ = mesh.net.connect(rogue_t, mesh.transports[1])
    with trio.fail_after(SIM_TIMEOUT_S):
        await mesh.wait_until_known(1, 0)
        await mesh.wait_until_known(2, 0)
        mesh.net.tap = []
        # A message claiming to be n0's, signed with another key.
        forged = sign_packet(
            Packet(
                1,
                MessageType.MESSAGE,
                7,
                int(EPOCH_MS + trio.current_time() * 1000),
                pid(mesh, 0),
                payload=b"send your keys to the rogue",
            ),
            nacl.signing.SigningKey(random.Random(1).randbytes(32)),
        )
        await rogue_link.send(encode_packet(forged))
        await mesh.nodes[1].wait_until(lambda: core(mesh, 1).counters.bad_signature >= 1)
        # A genuine broadcast from n0, captured and replayed by the rogue: a duplicate, then (much later) stale.
        mesh.nodes[0].broadcast("genuine")
        await mesh.nodes[2].wait_until(lambda: bool(inbox_texts(mesh, 2)))
        genuine = next(f for src, _, f in mesh.net.tap if src == "n0" and f[1] == MessageType.MESSAGE)
        dup_before = core(mesh, 1).counters.duplicate
        await rogue_link.send(genuine)
        await mesh.nodes[1].wait_until(lambda: core(mesh, 1).counters.duplicate > dup_before)
        await trio.sleep(400)  # past the dedupe window (300 s) and the clock-skew bound (120 s)
        stale_before = core(mesh, 1).counters.stale
        await rogue_link.send(genuine)
        await mesh.nodes[1].wait_until(lambda: core(mesh, 1).counters.stale > stale_before)
    assert inbox_texts(mesh, 1) == [("genuine", False)]
    assert inbox_texts(mesh, 2) == [("genuine", False)]
    # The forgery never left n1.
    assert not any(src == "n1" and b"rogue" in f for src, _, f in mesh.net.tap)


def test_relay_rules_match_bitchat() -> None:
    a, m, f = MessageType.ANNOUNCE, MessageType.MESSAGE, MessageType.FRAGMENT
    assert relayed_ttl(m, 7, broadcast=True, degree=2) == 6
    assert relayed_ttl(m, 7, broadcast=True, degree=4) == 5  # min(7, 6) - 1
    assert relayed_ttl(a, 7, broadcast=True, degree=4) == 6  # announces keep 7
    assert relayed_ttl(a, 7, broadcast=True, degree=8) == 6  # ours keep their reach at busy nodes too
    assert relayed_ttl(m, 7, broadcast=True, degree=6) == 4  # min(7, 5) - 1
    assert relayed_ttl(m, 2, broadcast=True, degree=8) == 1
    assert relayed_ttl(f, 7, broadcast=True, degree=6) == 4
    assert relayed_ttl(MessageType.NOISE_ENCRYPTED, 9, broadcast=False, degree=8) == 6  # clamped to 7 first
    links = [f"l{i}" for i in range(8)]
    subset = fanout_subset("abc", links)
    assert len(subset) == 4 and subset == fanout_subset("abc", list(reversed(links)))  # bitlen(7) + 1
    assert fanout_subset("abc", links[:2]) == links[:2]


async def test_a_forged_copy_arriving_first_does_not_suppress_the_genuine_packet(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await start_mesh(nursery, tmp_path, 2, seed=17)
    mesh.connect(0, 1, Faults(latency_s=1.0))  # the genuine path is slow...
    rogue_link, _ = mesh.net.connect(mesh.net.transport("rogue"), mesh.transports[1])  # ...the rogue's is not
    with trio.fail_after(SIM_TIMEOUT_S):
        await mesh.wait_until_known(1, 0)
        mesh.net.tap = []
        mesh.nodes[0].broadcast("the genuine article")
        await trio.testing.wait_all_tasks_blocked()  # n0's link writer has put it on the (slow) medium
        genuine = next(f for src, _, f in mesh.net.tap if src == "n0" and f[1] == MessageType.MESSAGE)
        await rogue_link.send(genuine[:-1] + bytes([genuine[-1] ^ 1]))  # one signature bit flipped
        await mesh.nodes[1].wait_until(lambda: core(mesh, 1).counters.bad_signature >= 1)
        await mesh.nodes[1].wait_until(lambda: bool(inbox_texts(mesh, 1)))
    assert inbox_texts(mesh, 1) == [("the genuine article", False)]


async def test_a_replayed_announce_does_not_steal_a_links_binding(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await start_mesh(nursery, tmp_path, 3, seed=18)
    mesh.connect(0, 1)
    mesh.connect(1, 2)
    with trio.fail_after(SIM_TIMEOUT_S):
        await mesh.wait_until_known(1, 0)
        await mesh.wait_until_known(1, 2)
    # n0 relays a fresh announce of n2's with its TTL set back to 7 (no signature covers the TTL), as if n2
    # were its own neighbour on n0's link to n1.
    now = trio.current_time() + 0.5  # a timestamp n2 has not used: not a duplicate of its last announce
    n1 = core(mesh, 1)
    link_n0 = n1.paths.direct_links(pid(mesh, 0), now)[0]
    forged_direct = encode_packet(core(mesh, 2).announce_packet(now))
    assert forged_direct[2] == 7
    before = n1.counters.binding_mismatch
    n1.receive_frame(link_n0, forged_direct, now)
    assert n1.counters.binding_mismatch == before + 1
    assert n1.paths.peer_on_link(link_n0) == pid(mesh, 0)  # still n0's link
    assert n1.paths.direct_links(pid(mesh, 2), now) != [link_n0]
