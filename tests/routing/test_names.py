"""Name resolution that cannot be shadowed (issue 13, item 5): exact peer ID > fingerprint > unique ID prefix >
nickname (only when unique and not hex-like); ambiguity is an error listing the candidates."""

from __future__ import annotations

import hashlib

import pytest

from node.errors import MeshError
from node.identity import fingerprint_from_noise_key
from node.routing.names import hex_like, resolve_peer_ref
from node.routing.peers import PeerInfo, PeerTable


def peer(seed: int, nickname: str) -> PeerInfo:
    noise = hashlib.sha256(b"noise %d" % seed).digest()
    peer_id = hashlib.sha256(noise).digest()[:8]
    return PeerInfo(peer_id, noise, bytes(32), nickname, 0.0, 0.0)


def table(*peers: PeerInfo) -> PeerTable:
    t = PeerTable(1000)
    for p in peers:
        t.upsert(p)
    return t


def test_a_nickname_that_looks_like_an_id_prefix_never_captures_the_reference() -> None:
    victim = peer(1, "alice")
    attacker = peer(2, victim.peer_id.hex()[:8])  # announces the victim's ID prefix as its nickname
    t = table(victim, attacker)
    assert t.resolve(victim.peer_id.hex()[:8]) == [victim]
    assert t.resolve(victim.peer_id.hex()) == [victim]
    assert t.resolve(fingerprint_from_noise_key(victim.noise_public_key)) == [victim]


def test_a_nickname_equal_to_a_full_id_or_fingerprint_never_captures_it() -> None:
    victim = peer(1, "alice")
    fp = fingerprint_from_noise_key(victim.noise_public_key)
    t = table(peer(2, victim.peer_id.hex()), peer(3, fp), peer(4, fp.upper()), victim)
    assert t.resolve(victim.peer_id.hex()) == [victim]
    assert t.resolve(fp) == [victim]
    assert t.resolve(fp.upper()) == [victim]


def test_an_unknown_hex_reference_does_not_fall_back_to_a_nickname() -> None:
    named = peer(2, "deadbeef")
    assert not named.peer_id.hex().startswith("deadbeef")
    assert table(peer(1, "alice"), named).resolve("deadbeef") == []


def test_fingerprint_prefixes_past_the_peer_id_resolve() -> None:
    p = peer(1, "alice")
    fp = fingerprint_from_noise_key(p.noise_public_key)
    assert table(p, peer(2, "bob")).resolve(fp[:30]) == [p]


def test_ambiguous_prefixes_and_nicknames_return_every_candidate() -> None:
    peers = [peer(i, "bob") for i in range(400)]
    t = table(*peers)
    first = peers[0].peer_id.hex()
    shared = [p for p in peers if p.peer_id.hex()[:4] == first[:4]]
    if len(shared) > 1:
        assert sorted(x.peer_id for x in t.resolve(first[:4])) == sorted(x.peer_id for x in shared)
    assert len(t.resolve("bob")) == 400
    assert t.resolve(first) == [peers[0]]  # the exact ID still wins over the prefix of others


def test_a_unique_nickname_resolves() -> None:
    a, b = peer(1, "alice"), peer(2, "bob")
    assert table(a, b).resolve("alice") == [a]
    assert table(a, b).resolve("ALICE") == []  # nicknames are exact
    assert table(a, b).resolve("abc") == []  # short hex is no prefix: may be a nickname, none here
    c = peer(3, "abc")
    assert table(a, c).resolve("abc") == [c]


def test_hex_like() -> None:
    assert hex_like("3f2a") and hex_like("3F2A9C01") and not hex_like("3f2") and not hex_like("3f2g")


def test_resolve_peer_ref_takes_any_iterable() -> None:
    a = peer(1, "alice")
    assert resolve_peer_ref("alice", iter([a])) == [a]


async def test_the_node_refuses_an_ambiguous_reference_listing_the_candidates(tmp_path: object) -> None:
    import trio

    from tests.routing.harness import start_mesh

    async with trio.open_nursery() as nursery:
        mesh = await start_mesh(nursery, tmp_path, 1)  # type: ignore[arg-type]
        node = mesh.nodes[0]
        assert node.core is not None
        twins = [peer(10, "twin"), peer(11, "twin\x1b[31m")]
        twins[1].nickname = "twin"
        for p in twins:
            node.core.peers.upsert(p)
        with pytest.raises(MeshError, match="matches several peers") as e:
            node.resolve_peer("twin")
        assert all(p.peer_id.hex() in str(e.value) for p in twins)
        shadow = peer(12, twins[0].peer_id.hex()[:8])
        node.core.peers.upsert(shadow)
        assert node.resolve_peer(twins[0].peer_id.hex()[:8]) == twins[0].peer_id
        nursery.cancel_scope.cancel()
