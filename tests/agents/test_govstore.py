"""Governance persistence: a restarted node has the same state and never signs a slot twice."""

from __future__ import annotations

import stat
from pathlib import Path

import nacl.signing
import pytest

from node.agents.errors import GovernanceError
from node.agents.governance import (
    MEMBERSHIP_ROUND,
    Action,
    ActionKind,
    Electorate,
    Governance,
    Voter,
    make_proposal,
)
from node.agents.govstore import GovStore

NS = "village-store"


def test_restart_restores_state_votes_evidence_and_own_signatures(tmp_path: Path) -> None:
    ks = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(4)]
    genesis = Electorate.of(0, {bytes(k.verify_key): 1 for k in ks})
    path = tmp_path / "gov.sqlite"
    store = GovStore(path)
    store.init(NS, genesis)
    gov = Governance(NS, genesis)
    voters = [Voter(k, gov) for k in ks]
    newcomer = nacl.signing.SigningKey(b"\x33" * 32)
    admit = make_proposal(
        NS,
        0,
        MEMBERSHIP_ROUND,
        Action(ActionKind.ADMIT, bytes(newcomer.verify_key).hex(), 1),
        expires_at_ms=10_000,
        signer=ks[0],
    )
    cfg = make_proposal(NS, 0, 0, Action(ActionKind.CONFIG, "x", 1), expires_at_ms=10_000, signer=ks[1])
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
    gov.execute_ready()
    assert gov.epoch == 1 and gov.config["x"][1] == 1
    store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    again = GovStore(path)
    restored = again.load()
    assert restored.state() == gov.state()
    assert set(restored.certificates) == set(gov.certificates)
    signed = again.signed()
    assert len(signed) == 4  # voter 0's prevote and precommit on two slots
    me = Voter(ks[0], restored, signed)
    assert me.on_proposal(cfg, 1) is None  # it remembers: no second vote for the slot after a restart
    with pytest.raises(GovernanceError, match="genesis"):
        again.init("another", genesis)
