"""Governance persistence: a restarted node has the same state and never signs a slot twice."""

from __future__ import annotations

import stat
from pathlib import Path

import nacl.signing
import pytest

from node.agents.errors import GovernanceError
from node.agents.governance import (
    Action,
    ActionKind,
    Certificate,
    Electorate,
    Value,
    Voter,
    VoteType,
    make_proposal,
    sign_vote,
)
from node.agents.govstore import GovStore
from tests.agents.govstore_scenario import certify_admit_and_config

NS = "village-store"


def test_restart_restores_state_votes_evidence_and_own_signatures(tmp_path: Path) -> None:
    path = tmp_path / "gov.sqlite"
    store = GovStore(path)
    run = certify_admit_and_config(store, NS)
    ks, genesis, gov, cfg = run.keys, run.genesis, run.gov, run.cfg
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


def test_unsigned_proposals_stored_before_signing_are_kept_only_when_certified(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store written before proposals were signed holds bare canonical bodies: at restart the certified one is
    kept (the quorum signed its hash) and applied; an uncertified one is skipped with a warning (review of govfix,
    finding 3)."""
    ks = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(4)]
    genesis = Electorate.of(0, {bytes(k.verify_key): 1 for k in ks})
    store = GovStore(tmp_path / "gov.sqlite")
    store.init(NS, genesis)
    done = make_proposal(NS, 0, 0, Action(ActionKind.CONFIG, "ble.power_mode", "saver"), expires_at_ms=9, signer=ks[0])
    open_ = make_proposal(NS, 0, 1, Action(ActionKind.CONFIG, "ble.power_mode", "fast"), expires_at_ms=9, signer=ks[1])
    for p in (done, open_):  # the old storage form: the canonical body, no signature
        store.db.execute("INSERT INTO proposals VALUES (?, ?, ?, ?)", (p.hash, p.epoch, p.round, p.canonical()))
    by_index = sorted((genesis.index(bytes(k.verify_key)) or 0, k) for k in ks[:3])
    sigs = tuple(sign_vote(k, NS, 0, done.hash, 0, VoteType.PRECOMMIT, Value.YES).signature for _, k in by_index)
    store.save_certificate(Certificate(NS, 0, 0, done.hash, Value.YES, tuple(i for i, _ in by_index), sigs))
    caplog.set_level("WARNING", "village.governance")
    gov = store.load()
    assert gov.proposal(done.hash) is not None and gov.config["ble.power_mode"][1] == "saver"
    assert gov.proposal(open_.hash) is None and gov.counters["stored_proposal_unsigned_skipped"] == 1
    assert open_.hash.hex()[:16] in caplog.text
