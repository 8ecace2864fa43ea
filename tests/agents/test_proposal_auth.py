"""Proposals are signed by their proposer: a peer cannot spend a member's proposal budget by naming it, nor hold
a slot for ever with a far expiry (review of the govmesh merge, finding 1)."""

from __future__ import annotations

import json
import math

import nacl.signing
import pytest

from node.agents.errors import GovernanceError
from node.agents.governance import (
    MEMBERSHIP_ROUND,
    Action,
    ActionKind,
    Electorate,
    Governance,
    Proposal,
    make_proposal,
    proposal_from_bytes_untrusted,
    verify_proposal,
)
from node.agents.governance.core import MAX_PROPOSAL_TTL_MS, PROPOSALS_PER_PROPOSER
from node.agents.governance.formats import proposal_sign_bytes
from node.agents.governance.gossip import Gossip, Item, ItemKind, proposal_item
from node.wire.errors import MalformedFrame

NS = "village"
NOW = 1_000_000
KEYS = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(4)]
PUBS = [bytes(k.verify_key) for k in KEYS]


def _gov() -> Governance:
    return Governance(NS, Electorate.of(0, {p: 1 for p in PUBS}))


def _forged(proposer: bytes, round_: int, action: Action, signer: nacl.signing.SigningKey) -> bytes:
    """A proposal naming ``proposer`` but signed by ``signer`` (the canonical body is what the hash covers)."""
    honest = make_proposal(NS, 0, round_, action, expires_at_ms=NOW + 60_000, signer=signer)
    body = Proposal(NS, 0, round_, action, NOW + 60_000, proposer)
    return body.canonical() + honest.signature


def test_forged_proposals_cannot_spend_a_members_budget() -> None:
    gov = _gov()
    g = Gossip(gov, items_per_s=200, burst_items=2048, pulls_per_s=1, burst_pulls=64, max_answer_bytes=60_000)
    attacker = nacl.signing.SigningKey(b"\x66" * 32)
    items: list[Item] = []
    for i, pub in enumerate(PUBS):
        admit = Action(ActionKind.ADMIT, bytes(attacker.verify_key).hex(), 1)
        items.append(Item(ItemKind.PROPOSAL, _forged(pub, MEMBERSHIP_ROUND, admit, attacker)))
        for r in range(PROPOSALS_PER_PROPOSER):
            cfg = Action(ActionKind.CONFIG, "ble.power_mode", "saver")
            items.append(Item(ItemKind.PROPOSAL, _forged(pub, i * 16 + r, cfg, attacker)))
    got = g.receive_items(b"attacker", items, now_ms=NOW)
    assert got.forward == [] and gov.all_proposals() == []
    assert gov.counters["proposal_bad_signature"] == len(items)
    # the members' own proposals still fit in their budgets
    remove = make_proposal(
        NS, 0, MEMBERSHIP_ROUND, Action(ActionKind.REMOVE, PUBS[3].hex()), expires_at_ms=NOW + 9, signer=KEYS[0]
    )
    own = make_proposal(NS, 0, 200, Action(ActionKind.CONFIG, "x", 4), expires_at_ms=NOW + 9, signer=KEYS[0])
    assert gov.add_proposal(remove, NOW) and gov.add_proposal(own, NOW)


def test_unsigned_and_resigned_proposals_are_refused() -> None:
    gov = _gov()
    p = make_proposal(NS, 0, 1, Action(ActionKind.CONFIG, "x", 1), expires_at_ms=NOW + 9, signer=KEYS[1])
    assert verify_proposal(p)
    with pytest.raises(MalformedFrame):
        proposal_from_bytes_untrusted(p.canonical())  # the unsigned (old) form does not parse
    tampered = bytearray(p.encode())
    tampered[-1] ^= 1
    assert gov.receive_proposal_untrusted(bytes(tampered), NOW) is None
    assert gov.counters["proposal_bad_signature"] == 1
    assert gov.receive_proposal_untrusted(p.encode(), NOW) == p
    assert gov.receive_proposal_untrusted(p.encode(), NOW) is None  # duplicate, recognised before verifying


def test_far_expiry_is_refused_on_receipt() -> None:
    gov = _gov()
    far = make_proposal(
        NS, 0, 1, Action(ActionKind.CONFIG, "x", 1), expires_at_ms=NOW + MAX_PROPOSAL_TTL_MS + 1, signer=KEYS[0]
    )
    assert gov.receive_proposal_untrusted(far.encode(), NOW) is None
    assert gov.counters["proposal_expiry_too_far"] == 1
    near = make_proposal(
        NS, 0, 1, Action(ActionKind.CONFIG, "x", 1), expires_at_ms=NOW + MAX_PROPOSAL_TTL_MS, signer=KEYS[0]
    )
    assert gov.receive_proposal_untrusted(proposal_item(near).data, NOW) == near


def _nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def test_a_value_nested_deeper_than_the_cap_is_refused_by_name() -> None:
    """A 250-deep list is only ~500 JSON characters (under MAX_VALUE_CHARS) but broke every typed reader of it."""
    ok = make_proposal(NS, 0, 1, Action(ActionKind.POLICY, "x.y", _nested(32)), expires_at_ms=NOW + 9, signer=KEYS[0])
    assert ok.action.value == _nested(32)
    for depth in (33, 250):
        with pytest.raises(GovernanceError, match="nested deeper than 32 levels"):
            make_proposal(
                NS, 0, 1, Action(ActionKind.POLICY, "x.y", _nested(depth)), expires_at_ms=NOW + 9, signer=KEYS[0]
            )
    # a peer's proposal carrying one (signed by its proposer, bypassing make_proposal) is refused on parsing
    deep = Proposal(NS, 0, 1, Action(ActionKind.CONFIG, "x", _nested(33)), NOW + 9, bytes(KEYS[0].verify_key))
    sig = KEYS[0].sign(proposal_sign_bytes(deep.hash)).signature
    with pytest.raises(MalformedFrame, match="nested deeper"):
        proposal_from_bytes_untrusted(deep.canonical() + sig)


def test_nan_and_infinity_values_are_refused() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(GovernanceError):
            make_proposal(NS, 0, 1, Action(ActionKind.CONFIG, "x", bad), expires_at_ms=NOW + 9, signer=KEYS[0])
    p = make_proposal(NS, 0, 1, Action(ActionKind.CONFIG, "x", 1), expires_at_ms=NOW + 9, signer=KEYS[0])
    body = json.loads(p.canonical())
    body["action"]["value"] = "@"
    text = json.dumps(body, sort_keys=True, separators=(",", ":")).replace('"@"', "NaN").encode()
    with pytest.raises(MalformedFrame):
        proposal_from_bytes_untrusted(text + p.signature)
