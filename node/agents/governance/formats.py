"""Governance formats: electorates, proposals, votes, evidence and certificates (sans-IO, no clock reads).

Model
-----
* An **electorate** per epoch: Ed25519 public keys with integer voting power (the village's nodes, or a node's
  own agents for local decisions, each under its own ``namespace``). Epoch ``e + 1``'s electorate is epoch ``e``'s
  changed by the one membership certificate of epoch ``e``.
* A **slot** is ``(epoch, round)``. A proposal occupies one slot; membership changes all use the reserved round
  :data:`MEMBERSHIP_ROUND`, so an epoch has at most one membership change and every node derives the same chain
  of electorates.
* A **vote** signs the canonical sign-bytes ``(namespace, epoch, proposal hash, round, vote type, value)``.
  Each voter has one vote per ``(epoch, round, vote type)``; a second, different vote for the same triple is kept
  with the first as **equivocation evidence** (verifiable by anyone, gossiped) and never counted.
* A **certificate** is the set of ``PRECOMMIT`` signatures for one ``(hash, value)`` in one slot whose power is
  strictly greater than 2/3 of the epoch's **total** power (``3 * power > 2 * total``, integers). Anyone holding
  the electorate verifies it offline. Two certificates for different values in one slot need > 1/3 of the power to
  have signed both, so they cannot exist while byzantine power is below 1/3. Nobody has an override.
* A proposal is signed by its proposer (a member of its epoch) over its own domain tag and its hash; a proposal
  whose signature does not verify is refused before anything is charged to the proposer's budgets.
* A proposal carries ``expires_at_ms``: votes arriving (``now_ms`` is injected) after it are refused, honest
  voters do not vote after it. Votes are bound to namespace and epoch, so they cannot be replayed into another
  village or epoch; an identical vote seen again is recognised before any signature check; a certificate executes
  at most once; configuration and policy values are last-writer-wins by ``(epoch, round)``, so the state a node
  reaches depends on the set of certificates it has seen, not on their order.

Liveness is not the point of this core: a slot whose votes split (a byzantine proposer, a partition that never
heals) stays undecided, and proposers move to another round. The membership slot of an epoch is scarce: if its
proposal expires without a certificate, that epoch's electorate can no longer change (documented limitation; a
view-change protocol would fix it).

Wire formats are fixed binary (big endian); every parser is ``*_untrusted`` and raises only ``MalformedFrame``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing

from node.agents.errors import GovernanceError, InvalidCertificate
from node.textsafe import nested_deeper_than
from node.wire.errors import MalformedFrame

SIGN_MAGIC = b"AIVG\x01"  # domain separation for vote sign-bytes, version 1
PROPOSAL_MAGIC = b"AIVGP1"  # domain separation for the proposal hash
PROPOSAL_SIGN_MAGIC = b"AIVGPS1"  # domain separation for the proposer's signature over the proposal hash
VOTE_TAG = 0x56  # 'V'
CERT_TAG = 0x43  # 'C'
EVIDENCE_TAG = 0x45  # 'E'
KEY_BYTES = 32
SIG_BYTES = 64
HASH_BYTES = 32
MAX_NAMESPACE_BYTES = 64
MAX_MEMBERS = 1024  # an electorate of more voters is refused (certificate bitmap and memory bounds)
MAX_POWER = 2**32  # per member; the total stays well inside Python ints anyway, but the wire carries u64
MEMBERSHIP_ROUND = 0xFFFFFFFF  # the one slot per epoch for admitting/removing members
MAX_OPEN_ROUNDS = 256  # slots per epoch with stored votes; more are refused (a member cannot grow us unboundedly)
MAX_EVIDENCE = 4096  # equivocation evidence kept (first come; one per voter per (epoch, round, type))
MAX_PROPOSAL_BYTES = 4096
MAX_KEY_CHARS = 64  # config/policy key names
MAX_VALUE_CHARS = 1024  # config/policy values (JSON-encoded)
MAX_VALUE_DEPTH = 32  # config/policy values: nesting of lists/objects (every reader, typed MCP answers too, copes)
KEEP_EPOCHS = 8  # electorates kept for verifying late certificates


class VoteType(enum.IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2


class Value(enum.IntEnum):
    NO = 0
    YES = 1


def has_quorum(power: int, total: int) -> bool:
    """Strictly more than 2/3 of the total power, in integers (no float rounding, no 'two of three')."""
    return 3 * power > 2 * total


# --------------------------------------------------------------------------------------------- electorate


@dataclass(frozen=True)
class Electorate:
    epoch: int
    members: tuple[tuple[bytes, int], ...]  # (Ed25519 public key, power), sorted by key
    _index: dict[bytes, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _keys: list[nacl.signing.VerifyKey] = field(default_factory=list, init=False, repr=False, compare=False)
    _total: int = field(default=0, init=False, repr=False, compare=False)  # computed once: read on every vote

    def __post_init__(self) -> None:
        if not 0 <= self.epoch < 2**63:
            raise GovernanceError(f"electorate epoch {self.epoch} out of range")
        if not 1 <= len(self.members) <= MAX_MEMBERS:
            raise GovernanceError(f"an electorate has 1 to {MAX_MEMBERS} members, not {len(self.members)}")
        keys = [k for k, _ in self.members]
        if keys != sorted(keys) or len(set(keys)) != len(keys):
            raise GovernanceError("electorate members must be sorted by key and distinct")
        for key, power in self.members:
            if len(key) != KEY_BYTES:
                raise GovernanceError(f"member key must be {KEY_BYTES} bytes")
            if not 1 <= power <= MAX_POWER:
                raise GovernanceError(f"member {key.hex()[:16]} power {power} not in 1..{MAX_POWER}")
        self._index.update({k: i for i, k in enumerate(keys)})
        object.__setattr__(self, "_total", sum(p for _, p in self.members))

    @classmethod
    def of(cls, epoch: int, powers: Mapping[bytes, int]) -> Electorate:
        return cls(epoch, tuple(sorted(powers.items())))

    @property
    def total_power(self) -> int:
        return self._total

    def index(self, key: bytes) -> int | None:
        return self._index.get(key)

    def power(self, key: bytes) -> int:
        i = self._index.get(key)
        return 0 if i is None else self.members[i][1]

    def key_bytes(self, i: int) -> bytes:
        return self.members[i][0]

    def verify_key(self, i: int) -> nacl.signing.VerifyKey:
        if not self._keys:
            self._keys.extend(nacl.signing.VerifyKey(k) for k, _ in self.members)
        return self._keys[i]

    def digest(self) -> bytes:
        h = hashlib.sha256(b"AIVGE1" + struct.pack(">QI", self.epoch, len(self.members)))
        for key, power in self.members:
            h.update(key + struct.pack(">Q", power))
        return h.digest()

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "members": [[k.hex(), p] for k, p in self.members]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Electorate:
        return cls(int(data["epoch"]), tuple((bytes.fromhex(k), int(p)) for k, p in data["members"]))


# ---------------------------------------------------------------------------------------------- proposals


class ActionKind(enum.StrEnum):
    CONFIG = "config"  # adopt a configuration change: key -> value
    POLICY = "policy"  # change shared policy: key -> value
    ADMIT = "admit"  # admit a member (key, power) or change its power
    REMOVE = "remove"  # remove a member


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    key: str = ""  # config/policy key, or the member's public key in hex
    value: Any = None  # JSON value for config/policy; power (int) for admit

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "key": self.key, "value": self.value}


@dataclass(frozen=True, slots=True)
class Proposal:
    namespace: str
    epoch: int
    round: int
    action: Action
    expires_at_ms: int
    proposer: bytes  # Ed25519 public key; it signs the proposal (budgets are charged to it)
    signature: bytes = field(default=b"", compare=False, repr=False)  # over proposal_sign_bytes(hash)

    def canonical(self) -> bytes:
        """The signed body (canonical JSON); the proposal hash is taken over it."""
        body = {
            "ns": self.namespace,
            "epoch": self.epoch,
            "round": self.round,
            "action": self.action.to_json(),
            "expires_at_ms": self.expires_at_ms,
            "proposer": self.proposer.hex(),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(PROPOSAL_MAGIC + self.canonical()).digest()

    def encode(self) -> bytes:
        """Wire and storage form: the canonical body followed by the proposer's 64-byte signature."""
        return self.canonical() + self.signature


def proposal_sign_bytes(proposal_hash: bytes) -> bytes:
    """What a proposer signs: its own domain tag and the proposal hash (never valid as vote sign-bytes)."""
    return PROPOSAL_SIGN_MAGIC + proposal_hash


def verify_proposal(proposal: Proposal) -> bool:
    """True when the proposal carries a valid signature of its ``proposer`` key."""
    if len(proposal.signature) != SIG_BYTES:
        return False
    try:
        nacl.bindings.crypto_sign_open(proposal.signature + proposal_sign_bytes(proposal.hash), proposal.proposer)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        return False
    return True


def make_proposal(
    namespace: str,
    epoch: int,
    round_: int,
    action: Action,
    *,
    expires_at_ms: int,
    signer: nacl.signing.SigningKey,
) -> Proposal:
    """A proposal signed by ``signer`` (its proposer), checked like an untrusted one (so what we send, peers
    accept)."""
    p = Proposal(namespace, epoch, round_, action, expires_at_ms, bytes(signer.verify_key))
    sig = signer.sign(proposal_sign_bytes(p.hash)).signature
    try:
        return proposal_from_bytes_untrusted(p.canonical() + sig)
    except MalformedFrame as exc:
        raise GovernanceError(f"invalid proposal: {exc}") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check_action(kind: str, key: Any, value: Any) -> Action:
    try:
        k = ActionKind(kind)
    except ValueError as exc:
        raise MalformedFrame(f"unknown action kind {kind!r}") from exc
    if not isinstance(key, str):
        raise MalformedFrame("action key must be a string")
    if k in (ActionKind.ADMIT, ActionKind.REMOVE):
        try:
            raw = bytes.fromhex(key)
        except ValueError as exc:
            raise MalformedFrame("member key is not hex") from exc
        if len(raw) != KEY_BYTES or key != raw.hex():
            raise MalformedFrame("member key must be 32 bytes in lower-case hex")
        if k is ActionKind.ADMIT and (type(value) is not int or not 1 <= value <= MAX_POWER):
            raise MalformedFrame(f"admit power must be an integer in 1..{MAX_POWER}")
        if k is ActionKind.REMOVE and value is not None:
            raise MalformedFrame("remove carries no value")
    else:
        if not 1 <= len(key) <= MAX_KEY_CHARS or not all(c.isalnum() or c in "._-" for c in key):
            raise MalformedFrame(f"{k.value} key must be 1-{MAX_KEY_CHARS} characters of [A-Za-z0-9._-]")
        if nested_deeper_than(value, MAX_VALUE_DEPTH):  # checked first: json.dumps recurses
            raise MalformedFrame(f"{k.value} value nested deeper than {MAX_VALUE_DEPTH} levels")
        if len(json.dumps(value, allow_nan=False)) > MAX_VALUE_CHARS:  # NaN/Infinity are not JSON
            raise MalformedFrame(f"{k.value} value longer than {MAX_VALUE_CHARS} characters")
    return Action(k, key, value)


def proposal_from_bytes_untrusted(data: bytes) -> Proposal:
    """Parse (not verify) a proposal: its canonical JSON, which must be exactly canonical (one hash per
    proposal), then the proposer's signature."""
    if len(data) > MAX_PROPOSAL_BYTES + SIG_BYTES:
        raise MalformedFrame(f"proposal longer than {MAX_PROPOSAL_BYTES} bytes")
    if len(data) <= SIG_BYTES:
        raise MalformedFrame("proposal too short")
    data, signature = data[:-SIG_BYTES], data[-SIG_BYTES:]
    try:
        body = json.loads(data, parse_constant=_no_constant)
        act = body["action"]
        proposal = Proposal(
            namespace=body["ns"],
            epoch=body["epoch"],
            round=body["round"],
            action=_check_action(act["kind"], act["key"], act["value"]),
            expires_at_ms=body["expires_at_ms"],
            proposer=bytes.fromhex(body["proposer"]),
            signature=signature,
        )
        if set(body) != {"ns", "epoch", "round", "action", "expires_at_ms", "proposer"} or set(act) != {
            "kind",
            "key",
            "value",
        }:
            raise MalformedFrame("unexpected proposal fields")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise MalformedFrame(f"proposal does not parse: {exc}") from exc
    if not isinstance(proposal.namespace, str) or not 1 <= len(proposal.namespace.encode()) <= MAX_NAMESPACE_BYTES:
        raise MalformedFrame("bad namespace")
    for name, v, hi in (("epoch", proposal.epoch, 2**63), ("round", proposal.round, 2**32)):
        if type(v) is not int or not 0 <= v < hi:
            raise MalformedFrame(f"bad {name}")
    if type(proposal.expires_at_ms) is not int or not 0 <= proposal.expires_at_ms < 2**63:
        raise MalformedFrame("bad expires_at_ms")
    if len(proposal.proposer) != KEY_BYTES:
        raise MalformedFrame("bad proposer key")
    membership = proposal.action.kind in (ActionKind.ADMIT, ActionKind.REMOVE)
    if membership != (proposal.round == MEMBERSHIP_ROUND):
        raise MalformedFrame("membership changes (and only they) use the membership round")
    if proposal.canonical() != data:
        raise MalformedFrame("proposal bytes are not canonical")
    return proposal


# -------------------------------------------------------------------------------------------------- votes


def sign_bytes(namespace: str, epoch: int, proposal_hash: bytes, round_: int, vote_type: int, value: int) -> bytes:
    """The canonical bytes a vote signs. Fixed layout: magic, namespace (u8 length), epoch u64, hash, round u32,
    type u8, value u8."""
    ns = namespace.encode()
    return b"".join(
        (
            SIGN_MAGIC,
            bytes((len(ns),)),
            ns,
            struct.pack(">Q", epoch),
            proposal_hash,
            struct.pack(">IBB", round_, vote_type, value),
        )
    )


@dataclass(frozen=True, slots=True)
class Vote:
    namespace: str
    epoch: int
    proposal_hash: bytes
    round: int
    vote_type: VoteType
    value: Value
    voter: bytes
    signature: bytes
    # The sign-bytes as received (parsing re-derives every field from them, so they are canonical); saves
    # rebuilding them for the signature check. Not part of equality.
    raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def slot(self) -> tuple[int, int, VoteType]:
        return (self.epoch, self.round, self.vote_type)

    def message(self) -> bytes:
        if self.raw:
            return self.raw
        return sign_bytes(self.namespace, self.epoch, self.proposal_hash, self.round, self.vote_type, self.value)

    def encode(self) -> bytes:
        return bytes((VOTE_TAG,)) + self.voter + self.message() + self.signature

    def to_json(self) -> dict[str, Any]:
        return {
            "voter": self.voter.hex(),
            "epoch": self.epoch,
            "round": self.round,
            "type": self.vote_type.name.lower(),
            "value": self.value.name.lower(),
            "proposal": self.proposal_hash.hex(),
        }


def sign_vote(
    key: nacl.signing.SigningKey,
    namespace: str,
    epoch: int,
    proposal_hash: bytes,
    round_: int,
    vote_type: VoteType,
    value: Value,
) -> Vote:
    msg = sign_bytes(namespace, epoch, proposal_hash, round_, vote_type, value)
    sig = key.sign(msg).signature
    return Vote(namespace, epoch, proposal_hash, round_, vote_type, value, bytes(key.verify_key), sig)


def _parse_sign_bytes(data: bytes, pos: int) -> tuple[str, int, bytes, int, VoteType, Value, int]:
    if data[pos : pos + len(SIGN_MAGIC)] != SIGN_MAGIC:
        raise MalformedFrame("bad sign-bytes magic")
    pos += len(SIGN_MAGIC)
    if pos >= len(data):
        raise MalformedFrame("truncated")
    n = data[pos]
    pos += 1
    end = pos + n + 8 + HASH_BYTES + 6
    if n == 0 or n > MAX_NAMESPACE_BYTES or end > len(data):
        raise MalformedFrame("truncated or bad namespace")
    try:
        ns = data[pos : pos + n].decode()
    except UnicodeDecodeError as exc:
        raise MalformedFrame("namespace is not UTF-8") from exc
    pos += n
    (epoch,) = struct.unpack_from(">Q", data, pos)
    pos += 8
    h = data[pos : pos + HASH_BYTES]
    pos += HASH_BYTES
    round_, vtype, value = struct.unpack_from(">IBB", data, pos)
    if epoch >= 2**63 or vtype not in (1, 2) or value not in (0, 1):
        raise MalformedFrame("bad epoch, vote type or value")
    return ns, epoch, h, round_, VoteType(vtype), Value(value), end


def vote_from_bytes_untrusted(data: bytes) -> Vote:
    """Parse (not verify) a vote: tag, voter key, sign-bytes, signature."""
    if len(data) < 1 + KEY_BYTES + SIG_BYTES or data[0] != VOTE_TAG:
        raise MalformedFrame("not a vote")
    voter = data[1 : 1 + KEY_BYTES]
    ns, epoch, h, round_, vtype, value, pos = _parse_sign_bytes(data, 1 + KEY_BYTES)
    if len(data) != pos + SIG_BYTES:
        raise MalformedFrame("vote length mismatch")
    return Vote(ns, epoch, h, round_, vtype, value, voter, data[pos:], data[1 + KEY_BYTES : pos])


def verify_vote(vote: Vote, electorate: Electorate) -> bool:
    """True when the voter is a member of ``electorate`` (same epoch) and the signature is valid."""
    i = electorate.index(vote.voter)
    if i is None or vote.epoch != electorate.epoch:
        return False
    try:
        electorate.verify_key(i).verify(vote.message(), vote.signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


# ----------------------------------------------------------------------------------------------- evidence


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two validly signed, different votes of one voter for the same (epoch, round, type)."""

    first: Vote
    second: Vote

    def encode(self) -> bytes:
        a, b = self.first.encode(), self.second.encode()
        return bytes((EVIDENCE_TAG,)) + struct.pack(">H", len(a)) + a + b

    def to_json(self) -> dict[str, Any]:
        return {"voter": self.first.voter.hex(), "first": self.first.to_json(), "second": self.second.to_json()}


def evidence_from_bytes_untrusted(data: bytes) -> Evidence:
    if len(data) < 3 or data[0] != EVIDENCE_TAG:
        raise MalformedFrame("not evidence")
    (n,) = struct.unpack_from(">H", data, 1)
    return Evidence(vote_from_bytes_untrusted(data[3 : 3 + n]), vote_from_bytes_untrusted(data[3 + n :]))


def verify_evidence(ev: Evidence, electorate: Electorate) -> bool:
    a, b = ev.first, ev.second
    return (
        a.voter == b.voter
        and a.namespace == b.namespace
        and a.slot == b.slot
        and (a.proposal_hash, a.value) != (b.proposal_hash, b.value)
        and verify_vote(a, electorate)
        and verify_vote(b, electorate)
    )


# ------------------------------------------------------------------------------------------- certificates


@dataclass(frozen=True, slots=True)
class Certificate:
    """The precommit signatures (> 2/3 of the total power) for one value in one slot.

    Signers are a bitmap over the electorate's sorted members, signatures follow in member order, so a
    certificate is ``~ 60 + members/8 + 64 * signers`` bytes."""

    namespace: str
    epoch: int
    round: int
    proposal_hash: bytes
    value: Value
    signers: tuple[int, ...]  # member indices, ascending
    signatures: tuple[bytes, ...]

    @property
    def slot(self) -> tuple[int, int]:
        return (self.epoch, self.round)

    def message(self) -> bytes:
        return sign_bytes(self.namespace, self.epoch, self.proposal_hash, self.round, VoteType.PRECOMMIT, self.value)

    def encode(self) -> bytes:
        nbits = (max(self.signers) + 1) if self.signers else 0
        bitmap = bytearray((nbits + 7) // 8)
        for i in self.signers:
            bitmap[i // 8] |= 0x80 >> (i % 8)
        return b"".join(
            (bytes((CERT_TAG,)), self.message(), struct.pack(">H", len(bitmap)), bytes(bitmap), *self.signatures)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "round": self.round,
            "proposal": self.proposal_hash.hex(),
            "value": self.value.name.lower(),
            "signers": len(self.signers),
            "bytes": len(self.encode()),
        }


def certificate_from_bytes_untrusted(data: bytes) -> Certificate:
    if len(data) < 2 or data[0] != CERT_TAG:
        raise MalformedFrame("not a certificate")
    ns, epoch, h, round_, vtype, value, pos = _parse_sign_bytes(data, 1)
    if vtype is not VoteType.PRECOMMIT:
        raise MalformedFrame("a certificate holds precommits")
    if pos + 2 > len(data):
        raise MalformedFrame("truncated certificate")
    (nb,) = struct.unpack_from(">H", data, pos)
    pos += 2
    if nb > (MAX_MEMBERS + 7) // 8 or pos + nb > len(data):
        raise MalformedFrame("bad signer bitmap")
    bitmap = data[pos : pos + nb]
    pos += nb
    signers = tuple(i for i in range(nb * 8) if bitmap[i // 8] & (0x80 >> (i % 8)))
    if len(data) != pos + SIG_BYTES * len(signers):
        raise MalformedFrame("certificate length mismatch")
    sigs = tuple(data[pos + SIG_BYTES * k : pos + SIG_BYTES * (k + 1)] for k in range(len(signers)))
    return Certificate(ns, epoch, round_, h, value, signers, sigs)


def verify_certificate(cert: Certificate, electorate: Electorate, namespace: str) -> None:
    """Raise :class:`InvalidCertificate` unless every signature verifies and the signers hold > 2/3 of the total."""
    if cert.namespace != namespace or cert.epoch != electorate.epoch:
        raise InvalidCertificate("certificate is for another namespace or epoch")
    if len(cert.signers) != len(cert.signatures) or len(set(cert.signers)) != len(cert.signers):
        raise InvalidCertificate("signers and signatures do not match")
    msg = cert.message()
    power = 0
    for i, sig in zip(cert.signers, cert.signatures, strict=True):
        if not 0 <= i < len(electorate.members):
            raise InvalidCertificate(f"signer {i} is not a member of epoch {electorate.epoch}")
        try:
            electorate.verify_key(i).verify(msg, sig)
        except nacl.exceptions.BadSignatureError as exc:
            raise InvalidCertificate(f"signature of member {i} does not verify") from exc
        power += electorate.members[i][1]
    if not has_quorum(power, electorate.total_power):
        raise InvalidCertificate(f"signers hold {power} of {electorate.total_power}: not more than 2/3")


def next_electorate(electorate: Electorate, action: Action) -> Electorate:
    powers = dict(electorate.members)
    key = bytes.fromhex(action.key)
    if action.kind is ActionKind.ADMIT:
        powers[key] = int(action.value)
    elif action.kind is ActionKind.REMOVE:
        powers.pop(key, None)
    else:
        raise GovernanceError(f"{action.kind.value} does not change the electorate")
    return Electorate.of(electorate.epoch + 1, powers)


def action_applicable(electorate: Electorate, action: Action) -> str | None:
    """Why an honest voter would vote NO on this action (None: it would vote YES)."""
    if action.kind is ActionKind.REMOVE:
        key = bytes.fromhex(action.key)
        if electorate.index(key) is None:
            return "not a member"
        if len(electorate.members) == 1:
            return "cannot remove the last member"
    if action.kind is ActionKind.ADMIT and len(electorate.members) >= MAX_MEMBERS:
        return "electorate is full"
    return None


def signer_power(electorate: Electorate, signers: Iterable[int]) -> int:
    return sum(electorate.members[i][1] for i in signers)


def sorted_members(powers: Mapping[bytes, int]) -> Sequence[tuple[bytes, int]]:
    return sorted(powers.items())
