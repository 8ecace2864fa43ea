"""A peer flooded out of the LRU peer table keeps its binding (signing key, replay guards) in a bounded record, so
its ID cannot be claimed with another signing key nor its old leave replayed (second security review)."""

from __future__ import annotations

import random

import nacl.signing
import pytest

from node.crypto.session import XXHandshake
from node.identity import Identity
from node.routing.announcing import FIRST_RELAYS_PER_LINK_PER_S, FIRST_RELAYS_PER_S, AnnounceRelays
from node.routing.events import PeerLeft
from node.routing.mesh import MeshCore
from node.routing.peers import RECENT_BINDINGS_PER_PEER
from node.routing.pins import Pin, encode_peer_state
from node.wire import (
    Announce,
    MessageType,
    NoisePayloadType,
    Packet,
    decode_packet_untrusted,
    encode_announce,
    encode_noise_payload,
    encode_packet,
    sign_packet,
)
from tests.routing.test_forged_handshakes import _enc_frame
from tests.routing.test_hoparq import make_cores


def _announce(ts_ms: int, peer_id: bytes, noise: bytes, signer: nacl.signing.SigningKey, ttl: int = 5) -> bytes:
    ann = Announce("x", noise, bytes(signer.verify_key), (), None, None)
    return encode_packet(
        sign_packet(Packet(1, MessageType.ANNOUNCE, ttl, ts_ms, peer_id, None, (), encode_announce(ann)), signer)
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


# ---------------------------------------------------------------- once the memory of forgotten bindings is flushed
T = 200.0  # when the tests below start: A's own way on L (path_ttl_s after its announce) has expired


def _hijacked(rng: random.Random) -> tuple[MeshCore, Identity]:
    """V heard A on L, then RECENT_BINDINGS_PER_PEER + 1 table-fulls of fresh identities flushed A out of the table
    and out of the memory of forgotten bindings, and an attacker on X claimed A's ID (A's Noise key) with its own
    signing key: accepted (A was never proven, so nothing is left to refuse it with)."""
    [core] = make_cores(1, max_peers=16)
    core.link_up("L", 1_200_000, 0.0)
    core.link_up("X", 1_200_000, 0.0)
    core.frames_to_send()
    a = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
    core.receive_frame("L", _announce(core.wall_ms(1.0), a.peer_id, a.noise_public, a.signing_key, ttl=7), 1.0)
    for _ in range(RECENT_BINDINGS_PER_PEER + 1):
        _flood_out(core, rng, 2.0)
    assert core.peers.get(a.peer_id) is None and core.peers.binding(a.peer_id, 2.0) is None
    attacker = nacl.signing.SigningKey(rng.randbytes(32))
    for now in (3.0, T):  # ... and keeps announcing it (A's way on L, learned from its announce at 1 s, is stale)
        core.receive_frame("X", _announce(core.wall_ms(now), a.peer_id, a.noise_public, attacker, ttl=7), now)
    core.frames_to_send()
    info = core.peers.get(a.peer_id)
    assert info is not None and info.signing_public_key == bytes(attacker.verify_key)
    return core, a


def _handshakes(core: MeshCore) -> list[tuple[str, bytes]]:
    return [
        (link, pkt.payload)
        for link, data in core.frames_to_send()
        if (pkt := decode_packet_untrusted(data, core.limits)).type == MessageType.NOISE_HANDSHAKE
    ]


def test_a_handshake_from_a_neighbour_is_answered_on_its_link_whatever_the_path_table_says() -> None:
    """Found by the randomized adversary: after the hijack, V's only path to A was the one learned from the liar's
    announce (its link X), and V answered A's own handshake into it — A could never start a session with V."""
    core, a = _hijacked(random.Random(21))
    assert core.path_to(a.peer_id, T + 1)[0] == ["X"]  # the liar's way
    ini = XXHandshake.initiator_for(a.noise_private)
    msg1 = Packet(1, MessageType.NOISE_HANDSHAKE, 7, core.wall_ms(T + 1), a.peer_id, core.peer_id, (), ini.write())
    core.receive_frame("L", encode_packet(msg1), T + 1)  # straight from A (TTL 7) on L
    answers = _handshakes(core)
    assert ("L", answers[0][1]) in answers  # message 2 goes back on L (and the routed copy on X as before)
    ini.read_untrusted(answers[0][1])


def _prove(core: MeshCore, a: Identity, msg1: bytes, now: float) -> None:
    """A, straight on L, completes the handshake that ``msg1`` started and tells its signing key inside (0x21)."""
    resp = XXHandshake.responder_for(a.noise_private)
    resp.read_untrusted(msg1)
    msg2 = Packet(1, MessageType.NOISE_HANDSHAKE, 7, core.wall_ms(now), a.peer_id, core.peer_id, (), resp.write())
    core.receive_frame("L", encode_packet(msg2), now)
    [msg3] = [payload for link, payload in _handshakes(core) if link == "L"]
    resp.read_untrusted(msg3)
    theirs = resp.finish()
    state = encode_noise_payload(NoisePayloadType.AUTHENTICATED_PEER_STATE, encode_peer_state(a.signing_public, 0))
    sealed = theirs.encrypt(state)
    enc = Packet(1, MessageType.NOISE_ENCRYPTED, 7, core.wall_ms(now + 0.1), a.peer_id, core.peer_id, (), sealed)
    core.receive_frame("L", encode_packet(enc), now + 0.1)


def test_an_announce_conflicting_with_an_unproven_binding_is_answered_with_a_challenge() -> None:
    """Found by the randomized adversary: after the hijack, A's genuine announces were refused (key mismatch) for as
    long as the attacker kept announcing, so V never woke its messages for A. Now the conflict starts a handshake
    on the announce's link; A completes it and proves its signing key (0x21), which pins A and replaces the liar's
    binding (and forgets the paths learned from the liar's announces), and A's announces are taken again while the
    attacker's are refused."""
    core, a = _hijacked(random.Random(22))
    assert core.path_to(a.peer_id, T + 5.0)[0] == ["X"]  # the liar's way
    core.receive_frame("L", _announce(core.wall_ms(T + 5.0), a.peer_id, a.noise_public, a.signing_key, ttl=7), T + 5.0)
    assert core.counters.key_mismatch == 1 and core.counters.binding_challenges == 1
    [msg1] = [payload for link, payload in _handshakes(core) if link == "L"]
    _prove(core, a, msg1, T + 5.1)
    assert core.pins.get(a.peer_id) == Pin(a.peer_id, a.noise_public, a.signing_public)
    info = core.peers.get(a.peer_id)
    assert info is not None and info.signing_public_key == a.signing_public
    assert core.counters.pin_replaced_unproven == 1
    assert core.paths.route(a.peer_id, T + 5.3) is None  # the way via X, learned from the liar, is gone
    assert core.path_to(a.peer_id, T + 5.3)[0] != ["X"]
    attacker = nacl.signing.SigningKey(random.Random(0).randbytes(32))
    core.receive_frame("X", _announce(core.wall_ms(T + 6.0), a.peer_id, a.noise_public, attacker, ttl=7), T + 6.0)
    assert core.counters.pin_conflict == 1


@pytest.mark.parametrize("start", [T + 1.0, T + 90.0])  # the liar's way via X still known / expired
def test_forged_ciphertext_from_throwaway_ids_cannot_silence_the_binding_challenge(start: float) -> None:
    """Found by review: forged 0x11 frames from fresh sender IDs (each a recovery handshake charged to the global
    flood budget) kept that budget empty, so the challenge never went out and the hijack stayed. A challenge that
    does not flood is charged to its arrival link's budget, which a flooder on another link cannot touch; one that
    would flood, with the flood budget spent, goes on the announce's link only."""
    core, a = _hijacked(random.Random(22))
    rng = random.Random(5)
    routed = core.path_to(a.peer_id, start + 31.0)[0] == ["X"]
    now = start
    for step in range(30):  # 30 s of forged ciphertext on X: a burst, then 3 a second
        for k in range(25 if step == 0 else 3):
            t = now + k / 100
            frame = _enc_frame(core, rng.randbytes(8), rng.randbytes(64), t)
            core.receive_frame("X", frame, t)
        core.handle_timer(now + 0.99)  # (their handshakes time out)
        core.frames_to_send()
        now += 1.0
    now -= 0.95  # (just after the last forged frames)
    assert not core.flood_limiter.can(rng.randbytes(8), now)  # the global flood budget is spent
    core.receive_frame("L", _announce(core.wall_ms(now), a.peer_id, a.noise_public, a.signing_key, ttl=7), now)
    assert core.counters.key_mismatch == 1 and core.counters.binding_challenges == 1
    sent = _handshakes(core)
    assert sorted(link for link, _ in sent) == (["L", "X"] if routed else ["L"])  # never a flood
    [msg1] = [payload for link, payload in sent if link == "L"]
    _prove(core, a, msg1, now + 0.1)
    info = core.peers.get(a.peer_id)
    assert info is not None and info.signing_public_key == a.signing_public  # A is bound to its own key again
    assert core.pins.get(a.peer_id) == Pin(a.peer_id, a.noise_public, a.signing_public)
