"""A peer flooded out of the LRU peer table keeps its binding (signing key, replay guards) in a bounded record, so
its ID cannot be claimed with another signing key nor its old leave replayed (second security review)."""

from __future__ import annotations

import random

import nacl.signing

from node.identity import Identity
from node.routing.announcing import FIRST_RELAYS_PER_LINK_PER_S, FIRST_RELAYS_PER_S, AnnounceRelays
from node.routing.events import PeerLeft
from node.routing.mesh import MeshCore
from node.wire import Announce, MessageType, Packet, encode_announce, encode_packet, sign_packet
from tests.routing.test_hoparq import make_cores


def _announce(ts_ms: int, peer_id: bytes, noise: bytes, signer: nacl.signing.SigningKey) -> bytes:
    ann = Announce("x", noise, bytes(signer.verify_key), (), None, None)
    return encode_packet(
        sign_packet(Packet(1, MessageType.ANNOUNCE, 5, ts_ms, peer_id, None, (), encode_announce(ann)), signer)
    )


def _flood_out(core: MeshCore, rng: random.Random, now: float) -> None:
    for i in range(core.peers.max_peers):
        f = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
        core.receive_frame("X", _announce(core.wall_ms(now) + i, f.peer_id, f.noise_public, f.signing_key), now)
    core.frames_to_send()


def _core() -> MeshCore:
    [core] = make_cores(1)
    core.link_up("L", 1_200_000, 0.0)
    core.link_up("X", 1_200_000, 0.0)
    core.frames_to_send()
    return core


def test_an_evicted_unpinned_peer_cannot_be_claimed_with_another_signing_key() -> None:
    rng = random.Random(11)
    v = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
    core = _core()
    core.receive_frame("L", _announce(core.wall_ms(1.0), v.peer_id, v.noise_public, v.signing_key), 1.0)
    _flood_out(core, rng, 1.0)
    assert core.peers.get(v.peer_id) is None
    attacker = nacl.signing.SigningKey(rng.randbytes(32))
    refused = 0
    for minute in range(60):  # an hour: the attacker re-announces V every 30 s, V announces every minute
        now = 10.0 + minute * 60
        core.receive_frame("X", _announce(core.wall_ms(now), v.peer_id, v.noise_public, attacker), now)
        before = core.counters.key_mismatch
        core.receive_frame("L", _announce(core.wall_ms(now + 31), v.peer_id, v.noise_public, v.signing_key), now + 31)
        refused += core.counters.key_mismatch - before
        core.frames_to_send()
    info = core.peers.get(v.peer_id)
    assert refused == 0 and info is not None and info.signing_public_key == v.signing_public


def test_a_leave_cannot_be_replayed_after_the_peer_was_flooded_out() -> None:
    rng = random.Random(4)
    v = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
    core = _core()
    first = _announce(core.wall_ms(1.0), v.peer_id, v.noise_public, v.signing_key)
    core.receive_frame("L", first, 1.0)
    leave = encode_packet(
        sign_packet(Packet(1, MessageType.LEAVE, 5, core.wall_ms(20.0), v.peer_id, None, (), b""), v.signing_key)
    )
    core.receive_frame("L", leave, 20.0)
    core.receive_frame("L", _announce(core.wall_ms(40.0), v.peer_id, v.noise_public, v.signing_key), 40.0)  # back
    while core.next_event() is not None:
        pass
    _flood_out(core, rng, 60.0)
    assert core.peers.get(v.peer_id) is None
    core.receive_frame("X", first, 61.0)  # replays, both inside the clock window
    core.receive_frame("X", leave, 61.0)
    events = []
    while (e := core.next_event()) is not None:
        events.append(e)
    assert not any(isinstance(e, PeerLeft) for e in events)
    info = core.peers.get(v.peer_id)
    assert info is None or not info.left
    assert core.counters.leave_replayed >= 1
    assert core.bounded_sizes()["recent_bindings"][0] >= 1


def test_first_relays_of_new_origins_have_a_budget_per_link_and_in_total() -> None:
    """Review: every announce of a fresh identity was passed on to every link, with no overall limit."""
    relays = AnnounceRelays(10_000)
    rng = random.Random(1)

    def burst(link: str, n: int, now: float) -> int:
        return sum(
            relays.decide(rng.randbytes(8), b"a", now, interval_s=30.0, early_interval_s=30.0, link_id=link) == "all"
            for _ in range(n)
        )

    assert burst("X", 200, 1.0) == 10 * FIRST_RELAYS_PER_LINK_PER_S  # one link: its burst, then phones only
    assert burst("Y", 200, 1.0) == 10 * FIRST_RELAYS_PER_S - 10 * FIRST_RELAYS_PER_LINK_PER_S  # the total's rest
    assert burst("Z", 100, 3.0) == 2 * FIRST_RELAYS_PER_S  # refilled at the global rate
    origin = rng.randbytes(8)  # an origin refused once is not remembered: its next announce gets a chance
    assert relays.decide(origin, b"a", 3.0, interval_s=30.0, early_interval_s=30.0, link_id="Z") == "phones"
    assert relays.decide(origin, b"a", 60.0, interval_s=30.0, early_interval_s=30.0, link_id="Z") == "all"
    assert relays.bounded_sizes()["announce_first_relay_links"][0] == 3
