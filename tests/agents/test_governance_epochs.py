"""A superseded epoch's electorate decides nothing (review of issue 16, findings 3 and 4): proposals and votes of
old epochs are refused, an old epoch's certificate is kept as history and never executed, and one member cannot
fill an epoch's slots so that even its own removal is refused."""

from __future__ import annotations

import nacl.signing
from hypothesis import given, settings
from hypothesis import strategies as st

from node.agents.governance import MEMBERSHIP_ROUND, Action, ActionKind, Electorate, Governance
from node.agents.governance.formats import MAX_OPEN_ROUNDS, Certificate, Value, VoteType, make_proposal, sign_vote

NS = "village"
NOW = 1_000
KEYS = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(5)]


def pub(k: nacl.signing.SigningKey) -> bytes:
    return bytes(k.verify_key)


def certify(
    govs: list[Governance], signers: list[nacl.signing.SigningKey], epoch: int, rnd: int, action: Action
) -> None:
    p = make_proposal(NS, epoch, rnd, action, expires_at_ms=10**12, signer=signers[0])
    for g in govs:
        g.add_proposal(p, NOW)
    for vt in (VoteType.PREVOTE, VoteType.PRECOMMIT):
        for k in signers:
            v = sign_vote(k, NS, epoch, p.hash, rnd, vt, Value.YES)
            for g in govs:
                g.receive_vote(v, NOW)
    for g in govs:
        g.execute_ready()


def grown_village() -> Governance:
    """Genesis {A}; B, C, D admitted one epoch at a time: A holds 1/4 of epoch 3."""
    g = Governance(NS, Electorate.of(0, {pub(KEYS[0]): 1}))
    signers = [KEYS[0]]
    for k in KEYS[1:4]:
        certify([g], signers, g.epoch, MEMBERSHIP_ROUND, Action(ActionKind.ADMIT, pub(k).hex(), 1))
        signers.append(k)
    assert g.epoch == 3 and g.electorate.total_power == 4
    return g


def test_old_electorate_cannot_start_a_proposal_or_vote() -> None:
    g = grown_village()
    certify([g], [KEYS[0]], 0, 7, Action(ActionKind.POLICY, "share_everything", True))
    assert g.state()["policy"] == {} and (0, 7) not in g.certificates
    assert g.counters["proposal_not_current_epoch"] == 1 and g.counters["vote_not_current_epoch"] == 2


def old_epoch_certificate(epoch: int, rnd: int, action: Action) -> tuple[Certificate, Governance]:
    """The certificate A alone forms in a copy of the village still at ``epoch`` (A the whole electorate)."""
    old = Governance(NS, Electorate.of(0, {pub(KEYS[0]): 1}))
    certify([old], [KEYS[0]], 0, rnd, action)
    cert = old.certificates[(0, rnd)]
    return cert, old


def test_an_old_epoch_certificate_is_history_never_executed() -> None:
    g = grown_village()
    action = Action(ActionKind.POLICY, "share_everything", True)
    cert, old = old_epoch_certificate(0, 7, action)
    assert old.state()["policy"] == {"share_everything": True}  # it did decide, back when A was the electorate
    assert g.receive_certificate(cert) is not None  # verified against the kept electorate: kept as history
    assert g.add_proposal(old.proposals(0, 7)[0], NOW)  # its certified proposal too
    assert g.execute_ready() == [] and g.state()["policy"] == {}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 50)), min_size=1, max_size=6))
def test_only_current_epoch_certificates_change_state(attempts: list[tuple[int, int]]) -> None:
    """Whatever old epochs A alone certifies, and in whatever order they arrive, the shared state is what the
    current electorate decided."""
    g = grown_village()
    before = g.state()
    for epoch, rnd in attempts:
        certify([g], [KEYS[0]], epoch, rnd, Action(ActionKind.CONFIG, f"k{epoch}_{rnd}", rnd))
        cert, old = old_epoch_certificate(epoch, rnd, Action(ActionKind.CONFIG, f"k{epoch}_{rnd}", rnd))
        g.receive_certificate(cert)
        g.add_proposal(old.proposals(0, rnd)[0], NOW)
        g.execute_ready()
    assert g.state() == before
    certify([g], KEYS[:4], g.epoch, 1, Action(ActionKind.CONFIG, "current", 1))
    assert g.state()["config"] == {"current": 1}


def test_one_member_cannot_freeze_an_epoch() -> None:
    g = Governance(NS, Electorate.of(0, {pub(k): 1 for k in KEYS[:4]}))
    mallory = KEYS[3]
    accepted = 0
    for r in range(1000, 1000 + MAX_OPEN_ROUNDS):
        p = make_proposal(NS, 0, r, Action(ActionKind.CONFIG, "junk", r), expires_at_ms=10**12, signer=mallory)
        accepted += g.add_proposal(p, NOW)
    assert accepted < MAX_OPEN_ROUNDS // 4 and g.counters["proposal_proposer_full"] > 0
    honest = make_proposal(NS, 0, 5, Action(ActionKind.CONFIG, "x", 1), expires_at_ms=10**12, signer=KEYS[1])
    assert g.add_proposal(honest, NOW)
    remove = make_proposal(
        NS,
        0,
        MEMBERSHIP_ROUND,
        Action(ActionKind.REMOVE, pub(mallory).hex()),
        expires_at_ms=10**12,
        signer=KEYS[0],
    )
    assert g.add_proposal(remove, NOW)
    certify([g], KEYS[:3], 0, MEMBERSHIP_ROUND, Action(ActionKind.REMOVE, pub(mallory).hex()))
    assert g.epoch == 1 and g.electorate.index(pub(mallory)) is None


def test_state_of_dropped_epochs_is_pruned_and_pending_certificates_are_bounded() -> None:
    from node.agents.governance.core import MAX_PENDING_CERTS, PENDING_EPOCHS_AHEAD
    from node.agents.governance.formats import KEEP_EPOCHS

    g = Governance(NS, Electorate.of(0, {pub(KEYS[0]): 1}))
    certify([g], [KEYS[0]], 0, 3, Action(ActionKind.CONFIG, "early", 1))
    assert (0, 3) in g.certificates
    for i in range(KEEP_EPOCHS + 1):  # admit and remove a second member, one epoch at a time
        kind = ActionKind.ADMIT if i % 2 == 0 else ActionKind.REMOVE
        signers = [KEYS[0]] if kind is ActionKind.ADMIT else [KEYS[0], KEYS[1]]
        action = Action(kind, pub(KEYS[1]).hex(), 1) if kind is ActionKind.ADMIT else Action(kind, pub(KEYS[1]).hex())
        certify([g], signers, g.epoch, MEMBERSHIP_ROUND, action)
    assert g.epoch == KEEP_EPOCHS + 1 and min(g.electorates) > 0
    assert not [k for k in (*g.certificates, *g.executed) if k[0] < min(g.electorates)]
    assert g.state()["config"] == {"early": 1}  # what was decided stays decided

    junk = Certificate(NS, g.epoch + 50, 0, b"\x00" * 32, Value.YES, (0,), (b"\x00" * 64,))
    assert g.receive_certificate(junk) is None and not g._pending_certs  # too far ahead
    for r in range(MAX_PENDING_CERTS + 10):
        far = Certificate(NS, g.epoch + PENDING_EPOCHS_AHEAD, r, b"\x00" * 32, Value.YES, (0,), (b"\x00" * 64,))
        g.receive_certificate(far)
    near = Certificate(NS, g.epoch + 1, MEMBERSHIP_ROUND, b"\x01" * 32, Value.YES, (0,), (b"\x00" * 64,))
    g.receive_certificate(near)
    assert len(g._pending_certs) == MAX_PENDING_CERTS and near.slot in g._pending_certs  # nearest epoch first


def test_evidence_is_bounded_per_voter() -> None:
    from node.agents.governance.core import EVIDENCE_PER_VOTER

    g = Governance(NS, Electorate.of(0, {pub(k): 1 for k in KEYS[:4]}))
    liar = KEYS[3]
    for r in range(EVIDENCE_PER_VOTER + 5):
        p = make_proposal(NS, 0, r, Action(ActionKind.CONFIG, "k", r), expires_at_ms=10**12, signer=KEYS[r % 3])
        assert g.add_proposal(p, NOW)
        g.receive_vote(sign_vote(liar, NS, 0, p.hash, r, VoteType.PREVOTE, Value.YES), NOW)
        g.receive_vote(sign_vote(liar, NS, 0, p.hash, r, VoteType.PREVOTE, Value.NO), NOW)
    assert len(g.evidence) == EVIDENCE_PER_VOTER and g.counters["evidence_voter_full"] == 5
    assert g.equivocators() == {pub(liar)}
