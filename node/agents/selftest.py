"""The Sword agent's adversarial self-test: attacks a fresh governance core the way a hostile member or peer would
and reports which defences held. Pure (sans-IO, deterministic keys), so it runs anywhere in well under a second.

Attacks: a forged signature, a vote from a non-member, a replay into another namespace and another epoch, a late
vote after expiry, an equivocation (two values for one slot), a flood of random bytes, and a minority of
byzantine members trying to certify two values. Each defence is one observable outcome of the core.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import nacl.signing

from node.agents.governance import (
    ACCEPTED,
    DUPLICATE,
    EQUIVOCATION,
    REJECTED,
    Action,
    ActionKind,
    Electorate,
    Governance,
    Value,
    VoteType,
    make_proposal,
    sign_vote,
)

NS = "selftest"


def run_selftest(seed: int = 0, flood: int = 200) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    keys = [nacl.signing.SigningKey(rng.randbytes(32)) for _ in range(7)]
    outsider = nacl.signing.SigningKey(rng.randbytes(32))
    e = Electorate.of(0, {bytes(k.verify_key): 1 for k in keys})
    gov = Governance(NS, e)
    p = make_proposal(NS, 0, 0, Action(ActionKind.CONFIG, "x", 1), expires_at_ms=1000, signer=keys[0])
    q = make_proposal(NS, 0, 0, Action(ActionKind.CONFIG, "x", 2), expires_at_ms=1000, signer=keys[1])
    gov.add_proposal(p, 0)
    gov.add_proposal(q, 0)
    results: list[dict[str, Any]] = []

    def check(attack: str, held: bool, detail: str = "") -> None:
        results.append({"attack": attack, "held": held, "detail": detail})

    good = sign_vote(keys[2], NS, 0, p.hash, 0, VoteType.PREVOTE, Value.YES)
    forged = dataclasses.replace(good, signature=bytes(64), raw=b"")
    check("forged signature", gov.receive_vote(forged, 1).status == REJECTED)
    check(
        "vote from a non-member",
        gov.receive_vote(sign_vote(outsider, NS, 0, p.hash, 0, VoteType.PREVOTE, Value.YES), 1).status == REJECTED,
    )
    other_ns = sign_vote(keys[2], "another-village", 0, p.hash, 0, VoteType.PREVOTE, Value.YES)
    check("replay into another namespace", gov.receive_vote(other_ns, 1).status == REJECTED)
    other_epoch = sign_vote(keys[2], NS, 9, p.hash, 0, VoteType.PREVOTE, Value.YES)
    check("replay into another epoch", gov.receive_vote(other_epoch, 1).status == REJECTED)
    check("first vote counts", gov.receive_vote(good, 1).status == ACCEPTED)
    check("replayed vote is not counted twice", gov.receive_vote_untrusted(good.encode(), 1).status == DUPLICATE)
    twin = sign_vote(keys[2], NS, 0, q.hash, 0, VoteType.PREVOTE, Value.YES)
    r = gov.receive_vote(twin, 1)
    check("equivocation caught as evidence", r.status == EQUIVOCATION and r.evidence is not None)
    late = sign_vote(keys[3], NS, 0, p.hash, 0, VoteType.PREVOTE, Value.YES)
    check("late vote after expiry", gov.receive_vote(late, 1000).status == REJECTED)
    crashes = 0
    for _ in range(flood):
        data = rng.randbytes(rng.randrange(0, 300))
        try:
            gov.receive_vote_untrusted(data, 1)
            gov.receive_certificate_untrusted(data)
            gov.receive_evidence_untrusted(data)
            gov.receive_proposal_untrusted(data, 1)
        except Exception:  # noqa: BLE001 - the defence under test: nothing may escape the untrusted parsers
            crashes += 1
    check(f"flood of {flood} random frames", crashes == 0, f"{crashes} escaped")
    # two byzantine members (2 of 7 < 1/3) sign both values; honest ones split 3 for p and 2 for q
    for k in keys[:2]:
        for prop in (p, q):
            gov.receive_vote(sign_vote(k, NS, 0, prop.hash, 0, VoteType.PRECOMMIT, Value.YES), 1)
    for i, k in enumerate(keys[2:]):
        prop = p if i < 3 else q
        gov.receive_vote(sign_vote(k, NS, 0, prop.hash, 0, VoteType.PRECOMMIT, Value.YES), 1)
    check("byzantine minority cannot certify two values", not gov.conflicts and len(gov.certificates) <= 1)
    return results
