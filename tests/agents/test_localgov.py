"""Local decisions are voted by the node's own agents: derived keys, roster powers, Legal's own vote, a certificate
from > 2/3 of the agents' power, and no second vote after a restart."""

from __future__ import annotations

import nacl.signing

from node.agents.governance import (
    Action,
    ActionKind,
    Governance,
    Value,
    Vote,
    VoteType,
    make_proposal,
    verify_certificate,
)
from node.agents.localgov import agent_keys, agents_vote, local_genesis
from node.agents.roster import load_roster

NS = "local"


def _setup(seed: bytes = b"\x01" * 32) -> tuple[Governance, dict[str, nacl.signing.SigningKey]]:
    roster = load_roster(None)
    keys = agent_keys(nacl.signing.SigningKey(seed), roster)
    return Governance(NS, local_genesis(keys, roster)), keys


def test_agent_keys_are_derived_per_node_and_carry_the_roster_powers() -> None:
    roster = load_roster(None)
    a = agent_keys(nacl.signing.SigningKey(b"\x01" * 32), roster)
    assert a.keys() == {s.name for s in roster} and len(a) == 23
    again = agent_keys(nacl.signing.SigningKey(b"\x01" * 32), roster)
    assert {n: bytes(k) for n, k in a.items()} == {n: bytes(k) for n, k in again.items()}  # stable: nothing stored
    other = agent_keys(nacl.signing.SigningKey(b"\x02" * 32), roster)
    assert not {bytes(k.verify_key) for k in a.values()} & {bytes(k.verify_key) for k in other.values()}
    e = local_genesis(a, roster)
    assert e.power(bytes(a["Legal"].verify_key)) == roster.get("Legal").voting_power
    assert e.total_power == sum(s.voting_power for s in roster)


def test_the_agents_certify_a_change_and_legal_votes_its_own_way() -> None:
    gov, keys = _setup()
    king = keys["King"]
    ok = make_proposal(NS, 0, 0, Action(ActionKind.CONFIG, "quiet.hours", 22), expires_at_ms=10_000, signer=king)
    personal = make_proposal(
        NS, 0, 1, Action(ActionKind.POLICY, "share.health", "with-peers"), expires_at_ms=10_000, signer=keys["King"]
    )
    already: dict[bytes, dict[tuple[int, int, VoteType], Vote]] = {}
    for p in (ok, personal):
        assert gov.add_proposal(p, 0)
        made = agents_vote(gov, keys, p, already, 1)
        assert len(made) == 2 * 23  # every agent prevoted and precommitted
        cert = gov.certificates[(0, p.round)]
        verify_certificate(cert, gov.electorates[0], NS)
        assert cert.value is Value.YES
    legal = bytes(keys["Legal"].verify_key)
    prevotes = {v.voter: v.value for v in gov.votes(0, 1) if v.vote_type is VoteType.PREVOTE}
    assert prevotes[legal] is Value.NO  # personal data: Legal opposes ...
    assert sum(1 for v in prevotes.values() if v is Value.YES) == 22  # ... and is outvoted (no agent has a veto)
    assert {v.voter: v.value for v in gov.votes(0, 0) if v.vote_type is VoteType.PREVOTE}[legal] is Value.YES
    gov.execute_ready()
    assert gov.state()["config"] == {"quiet.hours": 22} and gov.state()["policy"] == {"share.health": "with-peers"}
    # after a restart the agents read their votes back and never sign a slot again
    assert agents_vote(gov, keys, ok, already, 2) == []


def test_an_inapplicable_action_is_voted_down() -> None:
    gov, keys = _setup()
    stranger = nacl.signing.SigningKey(b"\x09" * 32)
    p = make_proposal(
        NS,
        0,
        0xFFFFFFFF,
        Action(ActionKind.REMOVE, bytes(stranger.verify_key).hex()),
        expires_at_ms=10_000,
        signer=keys["King"],
    )
    assert gov.add_proposal(p, 0)
    agents_vote(gov, keys, p, {}, 1)
    assert gov.certificates[(0, p.round)].value is Value.NO  # not a member: every agent votes no
    gov.execute_ready()
    assert gov.epoch == 0
