"""Village governance over the mesh: four real in-process Nodes over memory links (autojump clock), each with a
GovMesh over its own SQLite store. Certificates from > 2/3 of the power reach everyone, equivocation evidence
reaches everyone, a partitioned node catches up (through a membership change), hostile pushes are dropped and
counted, and a restarted node keeps what it had."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio
import trio.testing

from node.agents.errors import GovernanceError
from node.agents.governance import (
    Electorate,
    Value,
    VoteType,
    sign_vote,
    verify_certificate,
)
from node.agents.governance.gossip import SERVICE, Item, ItemKind, encode_batch, encode_pull, encode_push
from node.agents.govmesh import GovMesh
from node.agents.govsettings import GovernanceSettings
from node.agents.govstore import GovStore
from node.node import Node
from node.routing.app import AppRemoteError
from node.transports.memory import Faults
from tests.routing.harness import Mesh, start_mesh

SIM_TIMEOUT_S = 900
NS = "village"
LINK = Faults(duplicate=0.1, reorder=0.2, reorder_window_s=0.2, latency_s=0.02, jitter_s=0.03)


@pytest.fixture(autouse=True)
def inline_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """GovMesh writes SQLite in worker threads; under the autojump clock a thread's run looks like idleness and
    the clock would leap past timeouts. Run the blocking calls inline (same code, meaningful simulated time)."""

    async def run_inline(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
        return fn(*args)

    monkeypatch.setattr(trio.to_thread, "run_sync", run_inline)


@dataclasses.dataclass
class Village:
    mesh: Mesh
    govs: list[GovMesh]
    stores: list[GovStore]

    @property
    def nodes(self) -> list[Node]:
        return self.mesh.nodes


def _settings(**kw: Any) -> GovernanceSettings:
    return GovernanceSettings(**kw)


async def _gov(nursery: trio.Nursery, node: Node, genesis: Electorate, path: Path, **kw: Any) -> GovMesh:
    store = GovStore(path)
    store.init(NS, genesis)
    gm = GovMesh(node, store.load(), store, node.identity.signing_key, _settings(**kw))
    await nursery.start(gm.run)
    return gm


async def _village(nursery: trio.Nursery, tmp_path: Path, n: int = 4, **kw: Any) -> Village:
    mesh = await start_mesh(nursery, tmp_path, n)
    for i in range(n):
        for j in range(i + 1, n):
            mesh.connect(i, j, LINK)
    with trio.fail_after(SIM_TIMEOUT_S):
        for i in range(n):
            for j in range(n):
                if i != j:
                    await mesh.wait_until_known(i, j)
    genesis = Electorate.of(0, {nd.identity.signing_public: 1 for nd in mesh.nodes})
    govs = [await _gov(nursery, nd, genesis, tmp_path / f"gov{i}.sqlite", **kw) for i, nd in enumerate(mesh.nodes)]
    return Village(mesh, govs, [g.store for g in govs if isinstance(g.store, GovStore)])


async def _until(gm: GovMesh, pred: Callable[[], bool]) -> None:
    while not pred():
        await gm.changed.wait()


async def _all_until(v: Village, pred: Callable[[GovMesh], bool]) -> None:
    async with trio.open_nursery() as n:
        for gm in v.govs:
            n.start_soon(_until, gm, lambda gm=gm: pred(gm))


async def test_a_proposal_gets_its_certificate_from_more_than_two_thirds_and_everyone_adopts_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    v = await _village(nursery, tmp_path)
    g0, g1, g2, g3 = v.govs
    p = await g0.propose("config", "agents.max_concurrent_requests", 2, ttl_s=600)
    with trio.fail_after(SIM_TIMEOUT_S):
        await _all_until(v, lambda gm: gm.gov.proposal(p.hash) is not None)  # the proposal reached everyone
        await g0.cast(p.hash, Value.YES)
        await g1.cast(p.hash, Value.YES)
        # two of four prevotes (power 2 of 4) are no quorum: nothing certifies however long we wait
        with trio.move_on_after(120):
            await _all_until(v, lambda gm: (p.epoch, p.round) in gm.gov.certificates)
        assert all((p.epoch, p.round) not in gm.gov.certificates for gm in v.govs)
        await g2.cast(p.hash, Value.YES)  # 3 of 4: 3 * 3 > 2 * 4
        await _all_until(v, lambda gm: gm.gov.state()["config"].get("agents.max_concurrent_requests") == 2)
    for gm in v.govs:
        cert = gm.gov.certificates[(p.epoch, p.round)]
        verify_certificate(cert, gm.gov.electorates[0], NS)  # verifiable offline by anyone holding the electorate
        assert cert.value is Value.YES and cert.proposal_hash == p.hash
        assert gm.gossip.counters["items_rate_limited"] == 0
    assert g3.voter.signed.get((0, p.round, VoteType.PREVOTE)) is None  # n3 never prevoted (it only precommitted)
    with pytest.raises(GovernanceError, match="already prevoted"):
        await g0.cast(p.hash, Value.NO)  # an honest node never signs a second, different vote


async def test_equivocation_evidence_reaches_every_node(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    v = await _village(nursery, tmp_path)
    n0, _, n2, n3 = v.nodes
    p = await v.govs[0].propose("policy", "share.documents", "never", ttl_s=600)
    with trio.fail_after(SIM_TIMEOUT_S):
        await _all_until(v, lambda gm: gm.gov.proposal(p.hash) is not None)
        # n3 turns byzantine: a YES prevote to n0, a NO prevote for the same slot to n2 (its own store untouched)
        key = n3.identity.signing_key
        yes = sign_vote(key, NS, p.epoch, p.hash, p.round, VoteType.PREVOTE, Value.YES)
        no = sign_vote(key, NS, p.epoch, p.hash, p.round, VoteType.PREVOTE, Value.NO)
        await n3.app_request(
            n0.identity.peer_id, SERVICE, encode_push(NS, [Item(ItemKind.VOTE, yes.encode())]), timeout_s=30
        )
        await n3.app_request(
            n2.identity.peer_id, SERVICE, encode_push(NS, [Item(ItemKind.VOTE, no.encode())]), timeout_s=30
        )
        culprit = n3.identity.signing_public
        await _all_until(v, lambda gm: culprit in gm.gov.equivocators())
    for gm in v.govs[:3]:
        ev = next(iter(gm.gov.evidence.values()))
        assert {ev.first.value, ev.second.value} == {Value.YES, Value.NO}
        assert ev.first.voter == culprit
    # persisted: a restarted node still holds the evidence
    assert culprit in v.stores[1].load().equivocators()


async def test_a_partitioned_node_catches_up_through_a_membership_change(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    v = await _village(nursery, tmp_path, catch_up_interval_s=30.0)
    g0, g1, g2, g3 = v.govs
    v.mesh.net.partition({"n0", "n1", "n2"}, {"n3"})
    newcomer = nacl.signing.SigningKey(b"\x42" * 32)
    with trio.fail_after(SIM_TIMEOUT_S):
        admit = await g0.propose("admit", bytes(newcomer.verify_key).hex(), 1, ttl_s=3600)
        await _all_until(Village(v.mesh, v.govs[:3], v.stores[:3]), lambda gm: gm.gov.proposal(admit.hash) is not None)
        for gm in (g0, g1, g2):
            await gm.cast(admit.hash, Value.YES)
        await _all_until(Village(v.mesh, v.govs[:3], v.stores[:3]), lambda gm: gm.gov.epoch == 1)
        # epoch 1 (5 members): a config change certified by n0, n1, n2 and the newcomer's absence... needs 4 of 5
        cfg = await g1.propose("config", "mesh.max_hops", 5, ttl_s=3600)
        await _all_until(Village(v.mesh, v.govs[:3], v.stores[:3]), lambda gm: gm.gov.proposal(cfg.hash) is not None)
        for gm in (g0, g1, g2):
            await gm.cast(cfg.hash, Value.YES)
        with trio.move_on_after(120):
            await _until(g0, lambda: (1, cfg.round) in g0.gov.certificates)
        assert (1, cfg.round) not in g0.gov.certificates  # 3 of 5 is not > 2/3
        assert g3.gov.epoch == 0 and g3.gov.proposal(admit.hash) is None  # n3 heard nothing
        v.mesh.net.heal()
        await _until(g3, lambda: g3.gov.epoch == 1 and g3.gov.proposal(cfg.hash) is not None)
        await g3.cast(cfg.hash, Value.YES)  # n3, back, is the fourth of five: 3 * 4 > 2 * 5
        await _all_until(v, lambda gm: gm.gov.state()["config"].get("mesh.max_hops") == 5)
    assert {gm.gov.electorate.digest() for gm in v.govs} == {g0.gov.electorate.digest()}
    assert len(g0.gov.electorate.members) == 5
    assert g3.gossip.counters["pulls_sent"] >= 1


async def test_hostile_pushes_are_dropped_and_counted_and_bounded(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    v = await _village(nursery, tmp_path, gossip_burst_items=64, gossip_items_per_s=1.0)
    n0, n1 = v.nodes[0], v.nodes[1]
    g1 = v.govs[1]
    p = await v.govs[0].propose("config", "mesh.max_hops", 4, ttl_s=600)
    stranger = nacl.signing.SigningKey(b"\x07" * 32)
    member = n0.identity.signing_key
    good = sign_vote(member, NS, 0, p.hash, p.round, VoteType.PREVOTE, Value.YES)
    forged = dataclasses.replace(good, signature=bytes(64), raw=b"")
    items = [
        Item(ItemKind.VOTE, sign_vote(stranger, NS, 0, p.hash, p.round, VoteType.PREVOTE, Value.YES).encode()),
        Item(ItemKind.VOTE, sign_vote(member, NS, 7, p.hash, p.round, VoteType.PREVOTE, Value.YES).encode()),
        Item(ItemKind.VOTE, sign_vote(member, "other", 0, p.hash, p.round, VoteType.PREVOTE, Value.YES).encode()),
        Item(ItemKind.VOTE, forged.encode()),
        Item(ItemKind.VOTE, b"\x56garbage"),
        Item(ItemKind.CERTIFICATE, b"\x43junk"),
    ]
    peer1 = n1.identity.peer_id
    with trio.fail_after(SIM_TIMEOUT_S):
        await _until(g1, lambda: g1.gov.proposal(p.hash) is not None)
        await n0.app_request(peer1, SERVICE, encode_push(NS, items), timeout_s=30)
        c = g1.gov.counters
        assert (c["vote_not_member"], c["vote_unknown_epoch"], c["vote_wrong_namespace"]) == (1, 1, 1)
        assert (c["vote_bad_signature"], c["vote_malformed"], c["certificate_malformed"]) == (1, 1, 1)
        assert g1.gov.votes(0, p.round) == []  # nothing of that was stored
        # a replay flood: one valid vote 200 times costs duplicate checks up to the burst, the rest is dropped
        flood = [Item(ItemKind.VOTE, good.encode())] * 200
        await n0.app_request(peer1, SERVICE, encode_push(NS, flood), timeout_s=30)
        assert g1.gossip.counters["items_rate_limited"] >= 200 - 64 + len(items)
        assert len(g1.gov.votes(0, p.round)) == 1
        with pytest.raises(AppRemoteError, match="malformed"):
            await n0.app_request(peer1, SERVICE, b"\x50\x00", timeout_s=30)
        with pytest.raises(AppRemoteError, match="does not take part"):
            await n0.app_request(peer1, SERVICE, encode_pull("elsewhere", 0, 0), timeout_s=30)
    assert g1.gossip.counters["requests_malformed"] == 1
    assert n1.status()["contained"] == {}


async def test_a_lying_catch_up_answer_is_bounded_and_counted(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    v = await _village(nursery, tmp_path, 2, gossip_burst_items=100, gossip_items_per_s=1.0)
    g0, n1 = v.govs[0], v.nodes[1]
    stranger = nacl.signing.SigningKey(b"\x07" * 32)
    junk = [
        Item(ItemKind.VOTE, sign_vote(stranger, NS, 0, bytes([i]) * 32, 0, VoteType.PREVOTE, Value.YES).encode())
        for i in range(256)
    ]
    answers = [b"not a batch", encode_batch(junk, True)]

    async def liar(peer: bytes, body: bytes) -> bytes:
        return answers.pop(0) if answers else encode_batch(junk, True)

    n1.register_app_handler(SERVICE, liar)
    with trio.fail_after(SIM_TIMEOUT_S):
        assert await g0.pull_from(n1.identity.peer_id) == 0
        assert g0.gossip.counters["pull_answers_malformed"] == 1
        assert await g0.pull_from(n1.identity.peer_id) == 0  # pages of junk: at most the bucket is examined
    c = g0.gossip.counters
    assert c["items_received"] <= 100 + 64  # the burst, plus a token a second of simulated time at most
    assert c["items_rate_limited"] > 256
    assert g0.gov.votes(0, 0) == []
