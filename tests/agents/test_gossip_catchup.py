"""Catch-up answers are built once per state change and paged from a cache; pulls and items are also limited
over all peers together, so free identities do not multiply the per-peer allowance (review finding 4)."""

from __future__ import annotations

import nacl.signing

from node.agents.governance import (
    Action,
    ActionKind,
    Electorate,
    Governance,
    Value,
    VoteType,
    make_proposal,
    sign_vote,
)
from node.agents.governance.gossip import (
    GLOBAL_PEERS,
    Gossip,
    Item,
    ItemKind,
    batch_from_bytes_untrusted,
    proposal_item,
    vote_item,
)

NS = "village"
KEYS = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(8)]


def _gossip(burst_pulls: int = 64) -> Gossip:
    gov = Governance(NS, Electorate.of(0, {bytes(k.verify_key): 1 for k in KEYS}))
    for r in range(8):
        p = make_proposal(NS, 0, r, Action(ActionKind.CONFIG, "k", r), expires_at_ms=10**6, signer=KEYS[r])
        assert gov.add_proposal(p, 0)
        for k in KEYS[:4]:
            gov.receive_vote(sign_vote(k, NS, 0, p.hash, r, VoteType.PREVOTE, Value.NO), 0)
    return Gossip(
        gov, items_per_s=100, burst_items=1000, pulls_per_s=1, burst_pulls=burst_pulls, max_answer_bytes=2_000
    )


def _all_pages(g: Gossip, peer: bytes, now_ms: int) -> list[bytes]:
    out: list[bytes] = []
    more = True
    while more:
        items, more = batch_from_bytes_untrusted(g.catch_up(peer, 0, len(out), now_ms))
        out += [it.data for it in items]
    return out


def test_pages_come_from_one_cached_answer_until_the_state_changes() -> None:
    g = _gossip()
    first = _all_pages(g, b"a", 0)
    assert len(first) == 8 + 32 and g.counters["pulls_served"] > 3
    assert g.counters["answer_rebuilds"] == 1  # every page of the walk sliced the same list
    assert _all_pages(g, b"b", 0) == first and g.counters["answer_rebuilds"] == 1
    gov = g.gov
    p = gov.proposals(0, 0)[0]
    extra = sign_vote(KEYS[5], NS, 0, p.hash, 0, VoteType.PREVOTE, Value.NO)
    assert g.receive_items(b"c", [vote_item(extra)], 0).forward
    again = _all_pages(g, b"a", 0)
    assert g.counters["answer_rebuilds"] == 2 and extra.encode() in again and len(again) == len(first) + 1
    assert again[0] == proposal_item(gov.proposals(0, 0)[0]).data


def test_pulls_are_limited_over_all_peers() -> None:
    g = _gossip(burst_pulls=4)
    served = 0
    for i in range(4 * GLOBAL_PEERS * 3):  # three times the global burst, from fresh identities
        items, _ = batch_from_bytes_untrusted(g.catch_up(i.to_bytes(4, "big"), 0, 0, 0))
        served += bool(items)
    assert served == 4 * GLOBAL_PEERS
    assert g.counters["pulls_rate_limited"] == 4 * GLOBAL_PEERS * 2


def test_items_are_limited_over_all_peers() -> None:
    gov = Governance(NS, Electorate.of(0, {bytes(KEYS[0].verify_key): 1}))
    g = Gossip(gov, items_per_s=1, burst_items=2, pulls_per_s=1, burst_pulls=1, max_answer_bytes=2_000)
    junk = [proposal_item(make_proposal(NS, 0, 0, Action(ActionKind.CONFIG, "k", 1), expires_at_ms=9, signer=KEYS[1]))]
    for i in range(GLOBAL_PEERS * 3):  # each fresh identity may send 2 items; all of them together 2 * GLOBAL_PEERS
        g.receive_items(i.to_bytes(4, "big"), junk * 2, 0)
    assert g.counters["items_received"] == 2 * GLOBAL_PEERS
    assert g.counters["items_rate_limited"] == 2 * GLOBAL_PEERS * 2


def test_free_identities_cannot_starve_members_or_our_pull_answers() -> None:
    """Review of govfix, finding 1: the shared buckets hold only non-members; members and answers to our own
    pulls are charged to budgets of their own, and a peer refused by the shared bucket keeps its own tokens."""
    member = KEYS[0]
    gov = Governance(NS, Electorate.of(0, {bytes(member.verify_key): 1}))
    g = Gossip(gov, items_per_s=200.0, burst_items=2048, pulls_per_s=1.0, burst_pulls=64, max_answer_bytes=60_000)
    now = 1_000_000
    junk = [Item(ItemKind.PROPOSAL, b"x" * 80)] * 2048
    for i in range(GLOBAL_PEERS):  # enough free identities to empty both shared buckets
        g.receive_items(bytes([i]) * 32, junk, now)
        for _ in range(64):
            g.catch_up(bytes([i]) * 32, 0, 0, now)
    assert g.counters["items_received"] == 2048 * GLOBAL_PEERS  # the shared bucket is now empty
    late = bytes([200]) * 32
    assert g.receive_items(late, junk[:5], now).forward == [] and g.counters["items_rate_limited"] == 5
    assert g.items.take(late, 2048, now) == 2048  # the refused tokens went back to the late peer's own bucket
    p = make_proposal(
        NS, 0, 0, Action(ActionKind.CONFIG, "ble.power_mode", "saver"), expires_at_ms=now + 60_000, signer=member
    )
    got = g.receive_items(bytes(member.verify_key), [proposal_item(p)], now)
    assert got.new_proposals == [p]  # the member's push is taken
    items, _ = batch_from_bytes_untrusted(g.catch_up(bytes(member.verify_key), 0, 0, now))
    assert [it.data for it in items] == [proposal_item(p).data]  # and its pull is answered
    vote = sign_vote(member, NS, 0, p.hash, 0, VoteType.PREVOTE, Value.YES)
    got = g.receive_items(bytes([201]) * 32, [vote_item(vote)], now, pull_answer=True)
    assert got.new_votes == [vote]  # an answer to our own pull has a budget of its own
