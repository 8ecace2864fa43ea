"""Second security review, unsigned input: fragments are accounted by arrival link as well as by the (forgeable)
sender ID, so neither fragments forging V's sender nor many fresh sender IDs on another link evict V's set; and a
public message is never inflated beyond its bound nor relayed oversize, whoever claims to send it."""

from __future__ import annotations

import os

import pytest

from node.routing.mesh import MeshCore
from node.wire import FragmentPayload, MessageType, Packet, encode_fragment, encode_packet
from tests.routing.test_hoparq import make_cores


def _frag(core: MeshCore, sender: bytes, fid: bytes, index: int, chunk: bytes, now: float) -> bytes:
    f = FragmentPayload(fid, index, 2, MessageType.MESSAGE, chunk)
    pkt = Packet(1, MessageType.FRAGMENT, 7, core.wall_ms(now) + index, sender, None, (), encode_fragment(f))
    return encode_packet(pkt)


@pytest.mark.parametrize("attack", ["forged-sender", "fresh-senders"])
def test_fragments_on_another_link_do_not_evict_a_set_in_progress(attack: str) -> None:
    [core] = make_cores(1)
    core.link_up("L", 1_200_000, 0.0)
    core.link_up("X", 1_200_000, 0.0)
    core.frames_to_send()
    v, fid, now = os.urandom(8), os.urandom(8), 1.0
    whole = encode_packet(Packet(1, MessageType.MESSAGE, 7, core.wall_ms(now), v, None, (), os.urandom(800)))
    half = len(whole) // 2
    core.receive_frame("L", _frag(core, v, fid, 0, whole[:half], now), now)
    n = 8 if attack == "forged-sender" else 128
    for _ in range(n):
        sender = v if attack == "forged-sender" else os.urandom(8)
        core.receive_frame("X", _frag(core, sender, os.urandom(8), 0, b"x", now), now)
    assert core.bounded_sizes()["reassembly_sets"][0] <= core.limits.fragment_max_assemblies
    before = core.counters.fragments_reassembled
    core.receive_frame("L", _frag(core, v, fid, 1, whole[half:], now + 0.1), now + 0.1)  # V's set completes
    assert core.counters.fragments_reassembled == before + 1


@pytest.mark.parametrize(("size", "counter"), [(1_000_000, "malformed"), (250_000, "oversize")])
def test_an_inflated_public_message_from_an_unknown_sender_is_neither_inflated_nor_relayed(
    size: int, counter: str
) -> None:
    """Review: a 1 KB v2 public message that inflates to 1 MB, from a sender with no announce, cost every node it
    reached ~15 ms and was relayed (the size check applied to verified senders only)."""
    [core] = make_cores(1)
    for link in ("A", "B", "X"):
        core.link_up(link, 1_200_000, 0.0)
    core.frames_to_send()
    frame = encode_packet(Packet(2, MessageType.MESSAGE, 6, core.wall_ms(1.0), os.urandom(8), None, (), b"a" * size))
    assert len(frame) < 2000  # it compresses
    core.receive_frame("X", frame, 1.0)
    out = []
    while (t := core.get_timer()) is not None and t <= 3.0:
        core.handle_timer(t)
        out += core.frames_to_send()
    assert out == [] and getattr(core.counters, counter) == 1
