"""Safety: with byzantine power < 1/3 no two conflicting certificates exist, whatever the interleaving; and a
deterministic multi-node simulation with equivocators, replays and partitions converges on one state."""

from __future__ import annotations

import random
from collections import defaultdict

import nacl.signing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.agents.governance import (
    MEMBERSHIP_ROUND,
    Action,
    ActionKind,
    Electorate,
    Governance,
    Value,
    Vote,
    Voter,
    VoteType,
    has_quorum,
    make_proposal,
    sign_vote,
    verify_certificate,
)
from tests.agents.govsim import NS, Partition, Sim


def best_adversary_certificates(votes: list[Vote], e: Electorate) -> set[tuple[int, int, bytes, Value]]:
    """Every (slot, hash, value) for which the union of ALL precommits ever signed reaches a quorum: what an
    adversary holding every signature could certify."""
    power: dict[tuple[int, int, bytes, Value], int] = defaultdict(int)
    seen: set[tuple[bytes, int, int, bytes, Value]] = set()
    for v in votes:
        if v.vote_type is not VoteType.PRECOMMIT:
            continue
        k = (v.voter, v.epoch, v.round, v.proposal_hash, v.value)
        if k in seen:
            continue
        seen.add(k)
        power[(v.epoch, v.round, v.proposal_hash, v.value)] += e.power(v.voter)
    return {k for k, p in power.items() if has_quorum(p, e.total_power)}


@st.composite
def electorates(draw: st.DrawFn) -> tuple[list[int], set[int]]:
    n = draw(st.integers(4, 9))
    powers = draw(st.lists(st.integers(1, 10), min_size=n, max_size=n))
    total = sum(powers)
    order = draw(st.permutations(range(n)))
    byz: set[int] = set()
    for i in order:  # greedily add byzantine members while their power stays < 1/3
        if 3 * (sum(powers[j] for j in byz) + powers[i]) < total and draw(st.booleans()):
            byz.add(i)
    return powers, byz


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(electorates(), st.randoms(use_true_random=False), st.integers(2, 4))
def test_no_conflicting_certificates_below_one_third(
    setup: tuple[list[int], set[int]], rnd: random.Random, observers: int
) -> None:
    powers, byz = setup
    ks = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(len(powers))]
    e = Electorate.of(0, {bytes(k.verify_key): p for k, p in zip(ks, powers, strict=True)})
    # Two competing proposals for one slot (an equivocating proposer), every honest member an observer too.
    props = [
        make_proposal(NS, 0, 0, Action(ActionKind.CONFIG, "k", v), expires_at_ms=10**9, signer=ks[0]) for v in (1, 2)
    ]
    govs = [Governance(NS, e) for _ in ks]
    for g in govs:
        for p in props:
            g.add_proposal(p, 0)
    voters = {i: Voter(ks[i], govs[i]) for i in range(len(ks)) if i not in byz}
    # Byzantine members sign everything: both proposals, both values, both steps.
    signed: list[Vote] = [
        sign_vote(ks[i], NS, 0, p.hash, 0, t, val) for i in byz for p in props for t in VoteType for val in Value
    ]
    # Each honest member first sees a random one of the proposals; votes reach nodes in a random interleaving.
    inbox: list[tuple[int, Vote]] = [(j, v) for v in signed for j in range(len(ks)) if rnd.random() < 0.8]
    for voter in voters.values():
        v = voter.on_proposal(rnd.choice(props), 0)
        assert v is not None
        signed.append(v)
        inbox += [(j, v) for j in range(len(ks))]
    steps = 0
    while inbox and steps < 20_000:
        steps += 1
        dst, vote = inbox.pop(rnd.randrange(len(inbox)))
        r = govs[dst].receive_vote(vote, 0)
        if dst in voters and r.status == "accepted":
            pre = voters[dst].maybe_precommit(0, 0, 0)
            if pre is not None:
                signed.append(pre)
                inbox += [(j, pre) for j in range(len(ks))]
    # No node saw a conflict, and even the union of all signatures cannot certify two values.
    assert all(not g.conflicts for g in govs)
    assert len(best_adversary_certificates(signed, e)) <= 1
    certs = {(c.proposal_hash, c.value) for g in govs for c in g.certificates.values()}
    assert len(certs) <= 1
    for g in govs:
        for c in g.certificates.values():
            verify_certificate(c, e, NS)
    # honest members never equivocated
    assert not {bytes(ks[i].verify_key) for i in voters} & {v for g in govs for v in g.equivocators()}


def test_the_bound_is_tight_one_third_byzantine_can_fork() -> None:
    """With byzantine power exactly 1/3 (not below), two conflicting certificates CAN be formed: the property
    above is not vacuous."""
    ks = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(3)]
    e = Electorate.of(0, {bytes(k.verify_key): 1 for k in ks})
    a, b = (make_proposal(NS, 0, 0, Action(ActionKind.CONFIG, "k", v), expires_at_ms=10, signer=ks[0]) for v in (1, 2))
    # voter 0 is byzantine (1/3) and signs both; honest 1 signs a, honest 2 signs b
    votes = [sign_vote(ks[0], NS, 0, p.hash, 0, VoteType.PRECOMMIT, Value.YES) for p in (a, b)]
    votes.append(sign_vote(ks[1], NS, 0, a.hash, 0, VoteType.PRECOMMIT, Value.YES))
    votes.append(sign_vote(ks[2], NS, 0, b.hash, 0, VoteType.PRECOMMIT, Value.YES))
    assert best_adversary_certificates(votes, e) == set()  # 2 of 3 is not > 2/3: even then no fork
    ks4 = [*ks, nacl.signing.SigningKey(b"\x09" * 32)]
    e4 = Electorate.of(0, {bytes(k.verify_key): 1 for k in ks4})
    # 4 voters, 2 byzantine (1/2 >= 1/3): both values reach 3 of 4
    votes4 = [sign_vote(k, NS, 0, p.hash, 0, VoteType.PRECOMMIT, Value.YES) for k in ks4[:2] for p in (a, b)]
    votes4.append(sign_vote(ks4[2], NS, 0, a.hash, 0, VoteType.PRECOMMIT, Value.YES))
    votes4.append(sign_vote(ks4[3], NS, 0, b.hash, 0, VoteType.PRECOMMIT, Value.YES))
    assert len(best_adversary_certificates(votes4, e4)) == 2


def cfg(key: str, value: object) -> Action:
    return Action(ActionKind.CONFIG, key, value)


def test_simulation_with_equivocators_replays_and_a_partition_converges() -> None:
    sim = Sim(
        seed=7,
        powers=[1] * 7,
        byzantine={5, 6},  # 2 of 7 < 1/3
        partitions=(Partition(0, 3_000, frozenset({0, 1, 2})),),
    )
    sim.propose(0, 0, cfg("rag.candidates", 40))
    sim.propose(1, 1, Action(ActionKind.POLICY, "share.default", "private"))
    sim.propose(3, 2, cfg("rag.candidates", 60))  # proposed on the other side of the partition
    sim.propose_twice(5, 3, cfg("mesh.ttl", 3), cfg("mesh.ttl", 9))  # byzantine proposer
    sim.run_until(1_000)
    # During the partition neither side holds > 2/3 (3 honest | 2 honest + 2 byzantine): nothing executes.
    assert all(not n.gov.executed for n in sim.honest())
    sim.run_until(15_000)
    states = {repr(n.gov.state()) for n in sim.honest()}
    assert len(states) == 1, states
    state = sim.honest()[0].gov.state()
    assert state["config"]["rag.candidates"] == 60  # round 2 wins over round 0 whatever the arrival order
    assert state["policy"] == {"share.default": "private"}
    for n in sim.nodes:
        assert not n.gov.conflicts
    byz_keys = {bytes(sim.nodes[i].key.verify_key) for i in (5, 6)}
    for n in sim.honest():
        assert n.gov.equivocators() == byz_keys  # evidence gossiped to every honest node
        assert n.gov.counters["vote_duplicate"] > 0  # replays and duplicates recognised
        assert {s for s in n.gov.executed} >= {(0, 0), (0, 1), (0, 2)}


def test_simulation_membership_change_then_new_member_votes() -> None:
    sim = Sim(seed=3, powers=[2, 2, 2, 1, 1], byzantine={4})  # 1 of 8
    newcomer = nacl.signing.SigningKey(b"\x42" * 32)
    sim.propose(0, MEMBERSHIP_ROUND, Action(ActionKind.ADMIT, bytes(newcomer.verify_key).hex(), 3))
    sim.run_until(5_000)
    for n in sim.honest():
        assert n.gov.epoch == 1 and n.gov.electorate.power(bytes(newcomer.verify_key)) == 3
    # epoch 1 has total 11: the old honest members (7) alone are not > 2/3; with the newcomer (10) they are
    p = sim.propose(1, 0, cfg("twin.enabled", True))
    assert p.epoch == 1
    sim.run_until(10_000)
    assert all((1, 0) not in n.gov.certificates for n in sim.honest())
    for n in sim.honest():
        v = sign_vote(newcomer, NS, 1, p.hash, 0, VoteType.PREVOTE, Value.YES)
        n.gov.receive_vote(v, sim.now)
    pre = sign_vote(newcomer, NS, 1, p.hash, 0, VoteType.PRECOMMIT, Value.YES)
    sim.broadcast(0, "vote", pre.encode())
    sim.run_until(20_000)
    for n in sim.honest():
        assert n.gov.state()["config"] == {"twin.enabled": True}
    # a replayed epoch-0 vote for the epoch-1 proposal is refused everywhere
    old = sign_vote(newcomer, NS, 0, p.hash, 0, VoteType.PREVOTE, Value.YES)
    assert all(n.gov.receive_vote(old, sim.now).status == "rejected" for n in sim.nodes)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000))
def test_simulation_seeds_never_fork(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(4, 8)
    powers = [rng.randint(1, 5) for _ in range(n)]
    byz: set[int] = set()
    for i in rng.sample(range(n), n):
        if 3 * (sum(powers[j] for j in byz) + powers[i]) < sum(powers):
            byz.add(i)
    side = frozenset(rng.sample(range(n), n // 2))
    sim = Sim(seed, powers, byz, partitions=(Partition(rng.randint(0, 500), rng.randint(500, 4_000), side),))
    for r in range(4):
        proposer = rng.randrange(n)
        if proposer in byz:
            sim.propose_twice(proposer, r, cfg("a", r), cfg("a", -r))
        else:
            sim.propose(proposer, r, cfg("a", r))
    sim.run_until(12_000)
    assert all(not node.gov.conflicts for node in sim.nodes)
    certified: dict[tuple[int, int], set[tuple[bytes, Value]]] = defaultdict(set)
    for node in sim.nodes:
        for slot, c in node.gov.certificates.items():
            certified[slot].add((c.proposal_hash, c.value))
    assert all(len(v) == 1 for v in certified.values())
    assert len({repr(x.gov.state()) for x in sim.honest()}) == 1
