"""What the governance store tests (SQLite: tests/agents/test_govstore.py; PostgreSQL:
tests/anchor/stores/test_govstore_pg.py) write before a restart: four members certify an ADMIT and a CONFIG
proposal at both steps, the store receiving each proposal, vote and certificate, and member 0's own signatures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nacl.signing

from node.agents.governance import (
    MEMBERSHIP_ROUND,
    Action,
    ActionKind,
    Electorate,
    Governance,
    Proposal,
    Voter,
    make_proposal,
)


@dataclass
class Certified:
    keys: list[nacl.signing.SigningKey]
    genesis: Electorate
    gov: Governance
    admit: Proposal
    cfg: Proposal  # sets "x" to 1


def certify_admit_and_config(store: Any, ns: str) -> Certified:
    """Run the scenario into ``store`` (a GovStore or PgGovStore, initialised here with the genesis electorate)."""
    ks = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(4)]
    genesis = Electorate.of(0, {bytes(k.verify_key): 1 for k in ks})
    store.init(ns, genesis)
    gov = Governance(ns, genesis)
    voters = [Voter(k, gov) for k in ks]
    newcomer = nacl.signing.SigningKey(b"\x33" * 32)
    admit = make_proposal(
        ns,
        0,
        MEMBERSHIP_ROUND,
        Action(ActionKind.ADMIT, bytes(newcomer.verify_key).hex(), 1),
        expires_at_ms=10_000,
        signer=ks[0],
    )
    cfg = make_proposal(ns, 0, 0, Action(ActionKind.CONFIG, "x", 1), expires_at_ms=10_000, signer=ks[1])
    for p in (admit, cfg):
        assert gov.add_proposal(p, 0)
        store.save_proposal(p)
        for step in ("pre", "commit"):
            for v in voters:
                vote = v.on_proposal(p, 1) if step == "pre" else v.maybe_precommit(p.epoch, p.round, 1)
                assert vote is not None
                if v is voters[0]:
                    store.save_signed(vote)
                r = gov.receive_vote(vote, 1)
                store.save_vote(vote)
                if r.certificate:
                    store.save_certificate(r.certificate)
    return Certified(ks, genesis, gov, admit, cfg)
