"""The governance core: sign-bytes, quorum arithmetic, one vote per slot, evidence, certificates, execution."""

from __future__ import annotations

import contextlib
import dataclasses

import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from node.agents.errors import GovernanceError, InvalidCertificate
from node.agents.governance import (
    ACCEPTED,
    DUPLICATE,
    EQUIVOCATION,
    MEMBERSHIP_ROUND,
    REJECTED,
    Action,
    ActionKind,
    Certificate,
    Electorate,
    Evidence,
    Governance,
    Value,
    Voter,
    VoteResult,
    VoteType,
    certificate_from_bytes_untrusted,
    evidence_from_bytes_untrusted,
    has_quorum,
    make_proposal,
    proposal_from_bytes_untrusted,
    sign_bytes,
    sign_vote,
    verify_certificate,
    vote_from_bytes_untrusted,
)
from node.wire.errors import MalformedFrame

NS = "village-test"
EXPIRES = 1_000_000


def keys(n: int) -> list[nacl.signing.SigningKey]:
    return [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(n)]


def electorate(ks: list[nacl.signing.SigningKey], powers: list[int] | None = None, epoch: int = 0) -> Electorate:
    powers = powers or [1] * len(ks)
    return Electorate.of(epoch, {bytes(k.verify_key): p for k, p in zip(ks, powers, strict=True)})


def config_proposal(ks: list[nacl.signing.SigningKey], round_: int = 0, value: object = 5, epoch: int = 0):  # type: ignore[no-untyped-def]
    return make_proposal(
        NS,
        epoch,
        round_,
        Action(ActionKind.CONFIG, "rag.candidates", value),
        expires_at_ms=EXPIRES,
        signer=ks[0],
    )


def test_sign_bytes_layout_is_fixed_and_verifies_with_another_ed25519() -> None:
    h = bytes(range(32))
    msg = sign_bytes("ns", 7, h, 3, VoteType.PRECOMMIT, Value.YES)
    assert msg == b"AIVG\x01" + b"\x02ns" + (7).to_bytes(8, "big") + h + (3).to_bytes(4, "big") + b"\x02\x01"
    k = keys(1)[0]
    vote = sign_vote(k, "ns", 7, h, 3, VoteType.PRECOMMIT, Value.YES)
    # checked by the `cryptography` package's Ed25519 (OpenSSL), not by the library that signed it
    Ed25519PublicKey.from_public_bytes(vote.voter).verify(vote.signature, msg)
    assert vote_from_bytes_untrusted(vote.encode()) == vote


@pytest.mark.parametrize(
    ("power", "total", "quorum"),
    [(2, 3, False), (3, 3, True), (6, 9, False), (7, 9, True), (200, 300, False), (201, 300, True), (0, 1, False)],
)
def test_quorum_is_strictly_more_than_two_thirds_of_total(power: int, total: int, quorum: bool) -> None:
    assert has_quorum(power, total) is quorum


def vote_all(
    gov: Governance, ks: list[nacl.signing.SigningKey], proposal_hash: bytes, round_: int = 0
) -> list[VoteResult]:
    out: list[VoteResult] = []
    for k in ks:
        v = sign_vote(k, NS, 0, proposal_hash, round_, VoteType.PRECOMMIT, Value.YES)
        out.append(gov.receive_vote(v, now_ms=0))
    return out


def test_two_of_three_is_not_a_quorum_and_three_of_three_is() -> None:
    ks = keys(3)
    gov = Governance(NS, electorate(ks))
    p = config_proposal(ks)
    assert gov.add_proposal(p, now_ms=0)
    r = vote_all(gov, ks[:2], p.hash)
    assert all(x.certificate is None for x in r)
    assert gov.certificates == {}
    (r3,) = vote_all(gov, ks[2:], p.hash)
    assert r3.certificate is not None
    assert gov.execute_ready()[0].proposal == p
    assert gov.config["rag.candidates"][1] == 5


def test_weighted_power_counts_not_heads() -> None:
    ks = keys(4)
    gov = Governance(NS, electorate(ks, [10, 1, 1, 1]))  # total 13: > 26/3 needs 9
    p = config_proposal(ks)
    gov.add_proposal(p, 0)
    (r,) = vote_all(gov, ks[1:2], p.hash)
    assert r.certificate is None
    (r,) = vote_all(gov, ks[:1], p.hash)
    assert r.certificate is not None  # 11 of 13


def test_one_vote_per_slot_second_vote_is_evidence_not_counted() -> None:
    ks = keys(4)
    gov = Governance(NS, electorate(ks))
    a, b = config_proposal(ks, value=1), config_proposal(ks, value=2)
    gov.add_proposal(a, 0)
    gov.add_proposal(b, 0)
    byz = ks[0]
    first = gov.receive_vote(sign_vote(byz, NS, 0, a.hash, 0, VoteType.PRECOMMIT, Value.YES), 0)
    second = gov.receive_vote(sign_vote(byz, NS, 0, b.hash, 0, VoteType.PRECOMMIT, Value.YES), 0)
    assert first.status == ACCEPTED
    assert second.status == EQUIVOCATION and second.evidence is not None
    # the evidence travels as bytes and convinces another participant that never saw the votes
    other = Governance(NS, electorate(ks))
    got = other.receive_evidence_untrusted(second.evidence.encode())
    assert got is not None and other.equivocators() == {bytes(byz.verify_key)}
    assert other.receive_evidence_untrusted(second.evidence.encode()) is None  # once
    # the second vote was not counted: 3 honest votes for b reach only 3 of 4 with byz's b-vote ignored ...
    for k in ks[1:3]:
        gov.receive_vote(sign_vote(k, NS, 0, b.hash, 0, VoteType.PRECOMMIT, Value.YES), 0)
    assert gov.certificates == {}  # 2 honest + the ignored equivocation = not 3 of 4
    # a forged "evidence" with a bad signature is refused
    forged = evidence_from_bytes_untrusted(second.evidence.encode())
    bad = Evidence(forged.first, dataclasses.replace(forged.second, signature=b"\x00" * 64))
    assert Governance(NS, electorate(ks)).receive_evidence_untrusted(bad.encode()) is None


def test_certificate_verifies_offline_from_bytes_and_refuses_tampering() -> None:
    ks = keys(4)
    e = electorate(ks)
    gov = Governance(NS, e)
    p = config_proposal(ks)
    gov.add_proposal(p, 0)
    cert = next(r.certificate for r in vote_all(gov, ks[:3], p.hash) if r.certificate)
    data = cert.encode()
    again = certificate_from_bytes_untrusted(data)
    verify_certificate(again, e, NS)  # anyone holding the electorate
    flipped = bytearray(data)
    flipped[-1] ^= 1
    with pytest.raises(InvalidCertificate):
        verify_certificate(certificate_from_bytes_untrusted(bytes(flipped)), e, NS)
    short = Certificate(NS, 0, 0, cert.proposal_hash, cert.value, cert.signers[:2], cert.signatures[:2])
    with pytest.raises(InvalidCertificate, match="not more than 2/3"):
        verify_certificate(short, e, NS)
    with pytest.raises(InvalidCertificate):
        verify_certificate(again, e, "another-village")
    dup = Certificate(NS, 0, 0, cert.proposal_hash, cert.value, (0, 0, 0), (cert.signatures[0],) * 3)
    with pytest.raises(InvalidCertificate):
        verify_certificate(dup, e, NS)
    # and the receiving side executes it
    peer = Governance(NS, e)
    peer.add_proposal(p, 0)
    assert peer.receive_certificate_untrusted(data) is not None
    assert [x.proposal for x in peer.execute_ready()] == [p]
    assert peer.execute_ready() == []  # replaying the certificate executes nothing
    assert peer.receive_certificate_untrusted(data) is None


def test_replays_and_expiry() -> None:
    ks = keys(4)
    gov = Governance(NS, electorate(ks))
    p = config_proposal(ks)
    gov.add_proposal(p, 0)
    v = sign_vote(ks[1], NS, 0, p.hash, 0, VoteType.PREVOTE, Value.YES)
    assert gov.receive_vote_untrusted(v.encode(), 0).status == ACCEPTED
    assert gov.receive_vote_untrusted(v.encode(), 0).status == DUPLICATE
    other_ns = sign_vote(ks[2], "other", 0, p.hash, 0, VoteType.PREVOTE, Value.YES)
    assert gov.receive_vote(other_ns, 0).status == REJECTED
    wrong_epoch = sign_vote(ks[2], NS, 5, p.hash, 0, VoteType.PREVOTE, Value.YES)
    assert gov.receive_vote(wrong_epoch, 0).status == REJECTED
    outsider = sign_vote(keys(9)[8], NS, 0, p.hash, 0, VoteType.PREVOTE, Value.YES)
    assert gov.receive_vote(outsider, 0).status == REJECTED
    late = sign_vote(ks[3], NS, 0, p.hash, 0, VoteType.PREVOTE, Value.YES)
    assert gov.receive_vote(late, EXPIRES).status == REJECTED
    assert gov.counters["vote_expired"] == 1
    assert not Governance(NS, electorate(ks)).add_proposal(p, EXPIRES)
    voter = Voter(ks[0], gov)
    assert voter.on_proposal(p, EXPIRES) is None  # honest members do not vote after expiry


def test_no_execution_without_a_certificate_and_no_override() -> None:
    ks = keys(4)
    gov = Governance(NS, electorate(ks, [5, 1, 1, 1]))  # the "king" holds 5 of 8: still under 2/3
    p = config_proposal(ks)
    gov.add_proposal(p, 0)
    voters = [Voter(k, gov) for k in ks]
    for v in voters:
        vote = v.on_proposal(p, 0)
        assert vote is not None
        gov.receive_vote(vote, 0)
    assert gov.polka(0, 0) == (p.hash, Value.YES)
    pre = voters[0].maybe_precommit(0, 0, 0)
    assert pre is not None
    gov.receive_vote(pre, 0)
    assert gov.execute_ready() == [] and gov.config == {}  # the biggest voter alone decides nothing
    for v in voters[1:2]:
        vote = v.maybe_precommit(0, 0, 0)
        assert vote is not None
        gov.receive_vote(vote, 0)
    assert [x.value for x in gov.execute_ready()] == [Value.YES]  # 6 of 8 > 2/3
    assert voters[0].maybe_precommit(0, 0, 0) is None  # an honest member never signs the slot twice


def test_admit_and_remove_members_change_the_epoch() -> None:
    ks = keys(5)
    gov = Governance(NS, electorate(ks[:4]))
    newcomer = ks[4]
    admit = make_proposal(
        NS,
        0,
        MEMBERSHIP_ROUND,
        Action(ActionKind.ADMIT, bytes(newcomer.verify_key).hex(), 2),
        expires_at_ms=EXPIRES,
        signer=ks[0],
    )
    gov.add_proposal(admit, 0)
    for k in ks[:3]:
        gov.receive_vote(sign_vote(k, NS, 0, admit.hash, MEMBERSHIP_ROUND, VoteType.PRECOMMIT, Value.YES), 0)
    gov.execute_ready()
    assert gov.epoch == 1 and gov.electorate.power(bytes(newcomer.verify_key)) == 2
    # a vote of the newcomer in epoch 0 is refused; in epoch 1 it counts
    p1 = config_proposal(ks, epoch=1)
    gov.add_proposal(p1, 0)
    assert gov.receive_vote(sign_vote(newcomer, NS, 0, p1.hash, 0, VoteType.PREVOTE, Value.YES), 0).status == REJECTED
    assert gov.receive_vote(sign_vote(newcomer, NS, 1, p1.hash, 0, VoteType.PREVOTE, Value.YES), 0).status == ACCEPTED
    remove = make_proposal(
        NS,
        1,
        MEMBERSHIP_ROUND,
        Action(ActionKind.REMOVE, bytes(ks[3].verify_key).hex()),
        expires_at_ms=EXPIRES,
        signer=ks[0],
    )
    gov.add_proposal(remove, 0)
    for k in [*ks[:3], newcomer]:  # 5 of 6
        gov.receive_vote(sign_vote(k, NS, 1, remove.hash, MEMBERSHIP_ROUND, VoteType.PRECOMMIT, Value.YES), 0)
    gov.execute_ready()
    assert gov.epoch == 2 and gov.electorate.index(bytes(ks[3].verify_key)) is None


def test_membership_only_in_the_membership_round() -> None:
    ks = keys(2)
    with pytest.raises(GovernanceError):
        make_proposal(NS, 0, 3, Action(ActionKind.ADMIT, "00" * 32, 1), expires_at_ms=EXPIRES, signer=ks[0])
    with pytest.raises(GovernanceError):
        make_proposal(
            NS,
            0,
            MEMBERSHIP_ROUND,
            Action(ActionKind.CONFIG, "x", 1),
            expires_at_ms=EXPIRES,
            signer=ks[0],
        )


def test_electorate_validation_names_the_problem() -> None:
    with pytest.raises(GovernanceError, match="power"):
        Electorate.of(0, {b"\x01" * 32: 0})
    with pytest.raises(GovernanceError, match="members"):
        Electorate.of(0, {})


@given(st.binary(max_size=600))
def test_untrusted_parsers_raise_only_malformed_frame(data: bytes) -> None:
    for parse in (
        vote_from_bytes_untrusted,
        certificate_from_bytes_untrusted,
        evidence_from_bytes_untrusted,
        proposal_from_bytes_untrusted,
    ):
        with contextlib.suppress(MalformedFrame):
            parse(data)


@given(st.binary(max_size=200), st.integers(0, 200))
def test_mutated_votes_never_crash_the_core(noise: bytes, at: int) -> None:
    ks = keys(4)
    gov = Governance(NS, electorate(ks))
    p = config_proposal(ks)
    gov.add_proposal(p, 0)
    good = sign_vote(ks[1], NS, 0, p.hash, 0, VoteType.PREVOTE, Value.YES).encode()
    data = good[:at] + noise + good[at + len(noise) :]
    r = gov.receive_vote_untrusted(data, 0)
    assert r.status in (ACCEPTED, REJECTED)
    if r.status == ACCEPTED:
        assert data == good


def test_swords_adversarial_selftest_finds_every_defence_holding() -> None:
    from node.agents.selftest import run_selftest

    results = run_selftest(seed=3, flood=100)
    assert len(results) == 10
    assert [r["attack"] for r in results if not r["held"]] == []
