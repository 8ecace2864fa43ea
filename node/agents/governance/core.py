"""The governance state machine of one participant (sans-IO: bytes and ``now_ms`` in, results out).

:class:`Governance` keeps the electorates, proposals, votes, certificates and equivocation evidence one
participant has seen and executes certified proposals. :class:`Voter` is the honest behaviour of one member on
top of it (CometBFT's two steps): prevote on the first valid proposal of a slot (YES when the action applies,
NO otherwise), precommit the value that gathered > 2/3 prevotes (a "polka"), never sign twice for one
``(epoch, round, type)``. The adapter (trio, mesh gossip, SQLite) lives elsewhere and feeds bytes in.

Every table is bounded: votes only from members of a known epoch, on a known proposal (so at most
``members * 2`` per slot), at most :data:`MAX_OPEN_ROUNDS` slots per epoch (the membership slot is always
reserved), :data:`PROPOSALS_PER_SLOT` proposals per slot, :data:`PROPOSALS_PER_PROPOSER` per member and epoch
(and one membership change each), :data:`MAX_EVIDENCE` pieces of evidence, :data:`KEEP_EPOCHS` electorates, and
:data:`MAX_PENDING_CERTS` certificates waiting for an electorate we do not have yet.

Only the current epoch's electorate decides: proposals and votes of other epochs are refused, and a certificate
of an older epoch (its electorate is kept to verify it) is history, never executed.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing

from node.agents.errors import InvalidCertificate
from node.agents.governance.formats import (
    KEEP_EPOCHS,
    MAX_EVIDENCE,
    MAX_OPEN_ROUNDS,
    MEMBERSHIP_ROUND,
    ActionKind,
    Certificate,
    Electorate,
    Evidence,
    Proposal,
    Value,
    Vote,
    VoteType,
    action_applicable,
    certificate_from_bytes_untrusted,
    evidence_from_bytes_untrusted,
    has_quorum,
    next_electorate,
    proposal_from_bytes_untrusted,
    sign_vote,
    verify_certificate,
    verify_evidence,
    verify_proposal,
    vote_from_bytes_untrusted,
)
from node.wire.errors import MalformedFrame

PROPOSALS_PER_SLOT = 4  # different proposals kept for one slot (an equivocating proposer cannot grow us)
PROPOSALS_PER_PROPOSER = 16  # config/policy proposals one member may open per epoch (plus one membership change)
MAX_PENDING_CERTS = 64  # certificates of epochs whose electorate we do not know yet
PENDING_EPOCHS_AHEAD = 2  # how many epochs ahead a certificate may wait for its electorate
EVIDENCE_PER_VOTER = 4  # pieces of equivocation evidence kept per member (one proves the equivocation)
MAX_CONFLICTS = 16  # conflicting certificates kept as proof of a > 1/3 fault
MAX_PROPOSAL_TTL_MS = 30 * 24 * 3600 * 1000  # a received proposal expiring later than this is refused (30 days)

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
EQUIVOCATION = "equivocation"
REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class VoteResult:
    status: str  # accepted | duplicate | equivocation | rejected
    reason: str = ""
    certificate: Certificate | None = None  # a certificate this vote completed
    evidence: Evidence | None = None  # new equivocation evidence this vote revealed


@dataclass(frozen=True, slots=True)
class Executed:
    epoch: int
    round: int
    proposal: Proposal
    value: Value


@dataclass
class _Slot:
    proposals: dict[bytes, Proposal] = field(default_factory=dict)
    votes: dict[VoteType, dict[int, Vote]] = field(
        default_factory=lambda: {VoteType.PREVOTE: {}, VoteType.PRECOMMIT: {}}
    )
    tally: Counter[tuple[VoteType, bytes, Value]] = field(default_factory=Counter)


class Governance:
    """What one participant knows. Not thread-safe; one owner feeds it."""

    def __init__(self, namespace: str, genesis: Electorate) -> None:
        self.namespace = namespace
        self.electorates: dict[int, Electorate] = {genesis.epoch: genesis}
        self.epoch = genesis.epoch
        self._slots: dict[tuple[int, int], _Slot] = {}
        self.certificates: dict[tuple[int, int], Certificate] = {}
        self.conflicts: list[tuple[Certificate, Certificate]] = []  # stays empty while byzantine power < 1/3
        self.evidence: dict[tuple[bytes, int, int, int], Evidence] = {}
        self.executed: dict[tuple[int, int], Executed] = {}
        self.config: dict[str, tuple[tuple[int, int], Any]] = {}  # key -> ((epoch, round), value), LWW
        self.policy: dict[str, tuple[tuple[int, int], Any]] = {}
        self._pending_certs: dict[tuple[int, int], Certificate] = {}  # slot -> unverified, of a coming epoch
        self._evidence_of: Counter[bytes] = Counter()  # voter -> pieces of evidence kept
        self._proposed: Counter[tuple[int, bytes, bool]] = Counter()  # (epoch, proposer, membership) -> kept
        # certificates adopted from the pending queue when their epoch began: the adapter persists and forwards
        # them (take_adopted); bounded like the queue they came from
        self._adopted: deque[Certificate] = deque(maxlen=MAX_PENDING_CERTS)
        self.counters: Counter[str] = Counter()
        self.changes = 0  # bumped whenever the shared items (proposals, votes, certificates, evidence) change

    @property
    def electorate(self) -> Electorate:
        return self.electorates[self.epoch]

    # ----------------------------------------------------------------------------------------- proposals

    def receive_proposal_untrusted(self, data: bytes, now_ms: int) -> Proposal | None:
        """A proposal a peer sent: parsed, refused when it expires more than :data:`MAX_PROPOSAL_TTL_MS` after
        ``now_ms`` (it would hold its slot and its proposer's budget for ever), then :meth:`add_proposal`."""
        try:
            proposal = proposal_from_bytes_untrusted(data)
        except MalformedFrame:
            self.counters["proposal_malformed"] += 1
            return None
        if proposal.expires_at_ms > now_ms + MAX_PROPOSAL_TTL_MS:
            self.counters["proposal_expiry_too_far"] += 1
            return None
        return proposal if self.add_proposal(proposal, now_ms) else None

    def add_proposal(self, proposal: Proposal, now_ms: int, *, unsigned_if_certified: bool = False) -> bool:
        """Keep a proposal if it is for our namespace, the current epoch, signed by its proposer (a member), and
        not expired. The signature is checked before the proposer's budget is charged: nobody else can spend it.
        ``unsigned_if_certified`` (stores only: proposals kept before proposals were signed) accepts a proposal
        without a valid signature when a certificate we hold decides it: the quorum signed its hash.

        A proposal of an older epoch is kept only when a certificate we hold decides it (history: it is never
        executed, see :meth:`execute_ready`); an older electorate cannot start anything new."""
        e = self.electorates.get(proposal.epoch)
        if proposal.namespace != self.namespace or e is None:
            self.counters["proposal_unknown_epoch"] += 1
            return False
        cert = self.certificates.get((proposal.epoch, proposal.round))
        certified = cert is not None and cert.proposal_hash == proposal.hash
        if proposal.epoch != self.epoch and not certified:
            self.counters["proposal_not_current_epoch"] += 1
            return False
        if e.index(proposal.proposer) is None:
            self.counters["proposal_not_member"] += 1
            return False
        have = self._slots.get((proposal.epoch, proposal.round))
        if have is not None and proposal.hash in have.proposals:
            self.counters["proposal_duplicate"] += 1
            return False
        if now_ms >= proposal.expires_at_ms and not certified:  # a certificate proves it was voted in time
            self.counters["proposal_expired"] += 1
            return False
        if not verify_proposal(proposal) and not (unsigned_if_certified and certified):
            self.counters["proposal_bad_signature"] += 1
            return False
        membership = proposal.round == MEMBERSHIP_ROUND
        budget_key = (proposal.epoch, proposal.proposer, membership)
        budget = 1 if membership else PROPOSALS_PER_PROPOSER
        if self._proposed[budget_key] >= budget and not certified:
            self.counters["proposal_proposer_full"] += 1  # one member cannot crowd the others out of an epoch
            return False
        slot = self._slot(proposal.epoch, proposal.round)
        if slot is None:
            return False
        if len(slot.proposals) >= PROPOSALS_PER_SLOT and not certified and not membership:
            self.counters["proposal_slot_full"] += 1  # the membership slot is bounded by one per member instead
            return False
        slot.proposals[proposal.hash] = proposal
        self._proposed[budget_key] += 1
        self.changes += 1
        return True

    def proposals(self, epoch: int, round_: int) -> list[Proposal]:
        slot = self._slots.get((epoch, round_))
        return list(slot.proposals.values()) if slot else []

    def proposal(self, proposal_hash: bytes) -> Proposal | None:
        for slot in self._slots.values():
            if proposal_hash in slot.proposals:
                return slot.proposals[proposal_hash]
        return None

    def _slot(self, epoch: int, round_: int) -> _Slot | None:
        key = (epoch, round_)
        slot = self._slots.get(key)
        if slot is None:
            open_rounds = sum(1 for e, r in self._slots if e == epoch and r != MEMBERSHIP_ROUND)
            if open_rounds >= MAX_OPEN_ROUNDS and round_ != MEMBERSHIP_ROUND:  # that one is always reserved
                self.counters["slots_full"] += 1
                return None
            slot = self._slots[key] = _Slot()
        return slot

    # --------------------------------------------------------------------------------------------- votes

    def receive_vote_untrusted(self, data: bytes, now_ms: int) -> VoteResult:
        try:
            vote = vote_from_bytes_untrusted(data)
        except MalformedFrame as exc:
            self.counters["vote_malformed"] += 1
            return VoteResult(REJECTED, f"malformed: {exc}")
        return self.receive_vote(vote, now_ms)

    def receive_vote(self, vote: Vote, now_ms: int) -> VoteResult:
        e = self.electorates.get(vote.epoch)
        if vote.namespace != self.namespace:
            return self._reject("vote_wrong_namespace", "another namespace")
        if e is None:
            return self._reject("vote_unknown_epoch", f"epoch {vote.epoch} is not known here")
        if vote.epoch != self.epoch:
            return self._reject("vote_not_current_epoch", f"epoch {vote.epoch} is over (now {self.epoch})")
        i = e.index(vote.voter)
        if i is None:
            return self._reject("vote_not_member", "voter is not a member of the epoch")
        slot = self._slots.get((vote.epoch, vote.round))
        proposal = slot.proposals.get(vote.proposal_hash) if slot else None
        if slot is None or proposal is None:
            return self._reject("vote_unknown_proposal", "proposal not known here (send it first)")
        prior = slot.votes[vote.vote_type].get(i)
        known = self.evidence.get((vote.voter, *vote.slot))
        if prior == vote or (known is not None and vote in (known.first, known.second)):
            self.counters["vote_duplicate"] += 1  # a replay: recognised before any signature check
            return VoteResult(DUPLICATE)
        if now_ms >= proposal.expires_at_ms:
            return self._reject("vote_expired", "the proposal has expired")
        try:  # the binding itself: one concatenation, no wrapper (VerifyKey.verify re-checks types per call)
            nacl.bindings.crypto_sign_open(vote.signature + vote.message(), e.key_bytes(i))
        except nacl.exceptions.BadSignatureError:
            return self._reject("vote_bad_signature", "signature does not verify")
        if prior is not None:
            return VoteResult(
                EQUIVOCATION, "second vote for the slot", evidence=self._add_evidence(Evidence(prior, vote))
            )
        slot.votes[vote.vote_type][i] = vote
        key = (vote.vote_type, vote.proposal_hash, vote.value)
        slot.tally[key] += e.members[i][1]
        self.counters["vote_accepted"] += 1
        self.changes += 1
        cert = None
        if (
            vote.vote_type is VoteType.PRECOMMIT
            and (vote.epoch, vote.round) not in self.certificates
            and has_quorum(slot.tally[key], e.total_power)
        ):
            signers = sorted(
                j for j, v in slot.votes[VoteType.PRECOMMIT].items() if (v.proposal_hash, v.value) == key[1:]
            )
            votes = slot.votes[VoteType.PRECOMMIT]
            cert = Certificate(
                self.namespace,
                vote.epoch,
                vote.round,
                vote.proposal_hash,
                vote.value,
                tuple(signers),
                tuple(votes[j].signature for j in signers),
            )
            self.certificates[cert.slot] = cert
            self.counters["certificate_formed"] += 1
        return VoteResult(ACCEPTED, certificate=cert)

    def _reject(self, counter: str, reason: str) -> VoteResult:
        self.counters[counter] += 1
        return VoteResult(REJECTED, reason)

    def polka(self, epoch: int, round_: int) -> tuple[bytes, Value] | None:
        """The (proposal hash, value) that has > 2/3 of the prevote power in this slot, if any."""
        slot = self._slots.get((epoch, round_))
        e = self.electorates.get(epoch)
        if slot is None or e is None:
            return None
        for (vtype, h, v), power in slot.tally.items():
            if vtype is VoteType.PREVOTE and has_quorum(power, e.total_power):
                return h, v
        return None

    def votes(self, epoch: int, round_: int) -> list[Vote]:
        slot = self._slots.get((epoch, round_))
        if slot is None:
            return []
        return [v for by_type in slot.votes.values() for v in by_type.values()]

    def all_votes(self) -> list[Vote]:
        return [v for s in self._slots.values() for by_type in s.votes.values() for v in by_type.values()]

    def all_proposals(self) -> list[Proposal]:
        return [p for s in self._slots.values() for p in s.proposals.values()]

    # ------------------------------------------------------------------------------------------ evidence

    def _add_evidence(self, ev: Evidence) -> Evidence | None:
        key = (ev.first.voter, *ev.first.slot)
        if key in self.evidence:
            return None
        if self._evidence_of[ev.first.voter] >= EVIDENCE_PER_VOTER:  # one piece proves it; a few suffice
            self.counters["evidence_voter_full"] += 1
            return None
        if len(self.evidence) >= MAX_EVIDENCE:
            self.counters["evidence_full"] += 1
            return None
        self.evidence[key] = ev
        self._evidence_of[ev.first.voter] += 1
        self.changes += 1
        self.counters["evidence"] += 1
        return ev

    def receive_evidence_untrusted(self, data: bytes) -> Evidence | None:
        """Evidence a peer gossiped: kept (and returned, to gossip on) when new and valid."""
        try:
            ev = evidence_from_bytes_untrusted(data)
        except MalformedFrame:
            self.counters["evidence_malformed"] += 1
            return None
        if (ev.first.voter, *ev.first.slot) in self.evidence:
            self.counters["evidence_duplicate"] += 1
            return None
        e = self.electorates.get(ev.first.epoch)
        if ev.first.namespace != self.namespace or e is None or not verify_evidence(ev, e):
            self.counters["evidence_invalid"] += 1
            return None
        return self._add_evidence(ev)

    def equivocators(self) -> set[bytes]:
        return {voter for voter, *_ in self.evidence}

    # -------------------------------------------------------------------------------------- certificates

    def receive_certificate_untrusted(self, data: bytes) -> Certificate | None:
        """A certificate a peer sent: verified against its epoch's electorate, kept when new."""
        try:
            cert = certificate_from_bytes_untrusted(data)
        except MalformedFrame:
            self.counters["certificate_malformed"] += 1
            return None
        return self.receive_certificate(cert)

    def receive_certificate(self, cert: Certificate) -> Certificate | None:
        if cert.namespace != self.namespace:
            self.counters["certificate_wrong_namespace"] += 1
            return None
        have = self.certificates.get(cert.slot)
        if have is not None and (have.proposal_hash, have.value) == (cert.proposal_hash, cert.value):
            self.counters["certificate_duplicate"] += 1  # this slot is decided the same way: nothing to check
            return None
        e = self.electorates.get(cert.epoch)
        if e is None:
            if self._keep_pending(cert):
                self.counters["certificate_pending"] += 1  # verified once its electorate is known
            else:
                self.counters["certificate_unknown_epoch"] += 1
            return None
        try:
            verify_certificate(cert, e, self.namespace)
        except InvalidCertificate:
            self.counters["certificate_invalid"] += 1
            return None
        if have is not None:
            if len(self.conflicts) < MAX_CONFLICTS:  # a verified conflicting certificate: impossible below 1/3
                self.conflicts.append((have, cert))
            self.counters["certificate_conflict"] += 1
            return None
        self.certificates[cert.slot] = cert
        self.counters["certificate_received"] += 1
        self.changes += 1
        return cert

    # ---------------------------------------------------------------------------------------- execution

    def execute_ready(self) -> list[Executed]:
        """Apply every certified slot whose proposal is known and not yet applied, in (epoch, round) order.

        A NO certificate decides its slot too (recorded, nothing changes). A membership certificate of the
        current epoch moves to the next epoch; certificates of that epoch waiting for it are then verified.

        Only certificates of the current epoch are executed: a superseded electorate (its members may hold
        less than 2/3 now, or have been removed) cannot change anything; its late certificates are kept as
        history. Within an epoch the config/policy rounds sort before :data:`MEMBERSHIP_ROUND`."""
        done: list[Executed] = []
        progress = True
        while progress:
            progress = False
            for slot_key in sorted(self.certificates):
                if slot_key in self.executed:
                    continue
                cert = self.certificates[slot_key]
                slot = self._slots.get(slot_key)
                proposal = slot.proposals.get(cert.proposal_hash) if slot else None
                if proposal is None:
                    continue
                membership = proposal.round == MEMBERSHIP_ROUND
                if cert.epoch != self.epoch:
                    continue  # an older epoch's decision is history, never applied; a newer one waits
                ex = Executed(cert.epoch, cert.round, proposal, cert.value)
                self.executed[slot_key] = ex
                done.append(ex)
                if cert.value is Value.YES:
                    self._apply(proposal)
                    if membership:
                        self._adopt_pending()
                        progress = True
                        break
        return done

    def _apply(self, p: Proposal) -> None:
        a = p.action
        version = (p.epoch, p.round)
        if a.kind in (ActionKind.CONFIG, ActionKind.POLICY):
            table = self.config if a.kind is ActionKind.CONFIG else self.policy
            have = table.get(a.key)
            if have is None or have[0] < version:
                table[a.key] = (version, a.value)
            return
        new = next_electorate(self.electorates[p.epoch], a)
        self.electorates[new.epoch] = new
        self.epoch = new.epoch
        for old in sorted(self.electorates)[:-KEEP_EPOCHS]:
            del self.electorates[old]
        self._prune()
        self.counters["epoch_advanced"] += 1

    def _prune(self) -> None:
        """Forget the per-epoch state of epochs whose electorate is no longer kept (nothing can verify it)."""
        oldest = min(self.electorates)
        self.changes += 1
        for table in (self._slots, self.certificates, self.executed):
            for key in [k for k in table if k[0] < oldest]:
                del table[key]
        for pkey in [k for k in self._proposed if k[0] < oldest]:
            del self._proposed[pkey]
        for ekey in [k for k in self.evidence if k[1] < oldest]:
            ev = self.evidence.pop(ekey)
            self._evidence_of[ev.first.voter] -= 1
        self._evidence_of = +self._evidence_of  # drop zero counts

    def _keep_pending(self, cert: Certificate) -> bool:
        """Hold an unverifiable certificate of one of the next epochs: one per slot, the nearest epochs first (a
        flood of junk for far epochs cannot crowd out the next epoch's; junk for it is dropped on adoption)."""
        if not self.epoch < cert.epoch <= self.epoch + PENDING_EPOCHS_AHEAD:
            return False
        if cert.slot in self._pending_certs or len(self._pending_certs) < MAX_PENDING_CERTS:
            self._pending_certs.setdefault(cert.slot, cert)
            return True
        worst = max(self._pending_certs)
        if cert.slot < worst:
            del self._pending_certs[worst]
            self._pending_certs[cert.slot] = cert
            return True
        return False

    def _adopt_pending(self) -> None:
        pending, self._pending_certs = self._pending_certs, {}
        for _, cert in sorted(pending.items()):
            if self.receive_certificate(cert) is not None:
                self._adopted.append(cert)

    def take_adopted(self) -> list[Certificate]:
        """The certificates verified out of the pending queue since the last call (an adapter stores and
        gossips them like the ones it received: they arrived before their electorate did)."""
        adopted = list(self._adopted)
        self._adopted.clear()
        return adopted

    def state(self) -> dict[str, Any]:
        """The shared state certificates produced (what every honest participant must agree on)."""
        return {
            "epoch": self.epoch,
            "electorate": self.electorate.digest().hex(),
            "config": {k: v for k, (_, v) in sorted(self.config.items())},
            "policy": {k: v for k, (_, v) in sorted(self.policy.items())},
        }


class Voter:
    """An honest member: never signs two different votes for one (epoch, round, type).

    ``signed`` is what this member has signed; an adapter persists it *before* sending a vote, and passes it
    back after a restart, so a crash cannot make an honest node equivocate."""

    def __init__(
        self,
        key: nacl.signing.SigningKey,
        gov: Governance,
        signed: dict[tuple[int, int, VoteType], Vote] | None = None,
    ) -> None:
        self.key = key
        self.public = bytes(key.verify_key)
        self.gov = gov
        self.signed: dict[tuple[int, int, VoteType], Vote] = dict(signed or {})

    def _sign(self, p_epoch: int, p_round: int, h: bytes, vtype: VoteType, value: Value) -> Vote | None:
        if (p_epoch, p_round, vtype) in self.signed:
            return None
        e = self.gov.electorates.get(p_epoch)
        if e is None or e.index(self.public) is None:
            return None
        vote = sign_vote(self.key, self.gov.namespace, p_epoch, h, p_round, vtype, value)
        self.signed[vote.slot] = vote
        return vote

    def on_proposal(self, proposal: Proposal, now_ms: int) -> Vote | None:
        """Prevote on the first proposal seen for a slot: YES if its action applies, NO otherwise."""
        if now_ms >= proposal.expires_at_ms:
            return None
        e = self.gov.electorates.get(proposal.epoch)
        if e is None or proposal.epoch != self.gov.epoch:
            return None
        value = Value.YES if action_applicable(e, proposal.action) is None else Value.NO
        return self._sign(proposal.epoch, proposal.round, proposal.hash, VoteType.PREVOTE, value)

    def maybe_precommit(self, epoch: int, round_: int, now_ms: int) -> Vote | None:
        """Precommit the polka's value once a slot has one (and the proposal has not expired)."""
        polka = self.gov.polka(epoch, round_)
        if polka is None:
            return None
        proposal = self.gov.proposal(polka[0])
        if proposal is None or now_ms >= proposal.expires_at_ms:
            return None
        return self._sign(epoch, round_, polka[0], VoteType.PRECOMMIT, polka[1])
