"""The mailbox protocol (sans-IO codec): sealed envelopes deposited at an anchor for an offline peer, fetched by
that peer after it proves who it is.

The anchor only ever sees courier envelopes (:mod:`node.routing.courier`: Noise_X-sealed to the recipient's
static key, the prologue binding recipient ID and expiry), so it stores ciphertext and routing metadata only.

**Messages** (one per frame; on BetaNet a frame is ``length u32 BE ‖ body`` on ``/aivillage/mailbox/1.0.0``;
the body is ``type u8 ‖ fields``)::

    DEPOSIT    0x01  envelope (courier encoding: recipient 8 ‖ expires_at_ms u64 ‖ copies u8 ‖ sealed)
    CHALLENGE? 0x02  (empty)
    FETCH      0x03  proof (see below) ‖ max_envelopes u16
    ACK        0x04  grant 16 ‖ count u16 ‖ envelope IDs u64 ...
    DEPOSITED  0x81  envelope ID u64 ‖ new u8 (0: the same envelope was already there)
    CHALLENGE  0x82  nonce 32 ‖ anchor ephemeral X25519 public 32 ‖ expires_at_ms u64
    ENVELOPES  0x83  grant 16 ‖ count u16 ‖ (envelope ID u64 ‖ length u32 ‖ envelope) ...
    ACKED      0x84  deleted u16
    ERROR      0xFF  code u8 ‖ UTF-8 reason

**Deposits and quotas.** DEPOSITED means the anchor keeps the envelope until the recipient acknowledges it or it
expires (never evicted for another deposit: the depositor drops its copy on this answer). Depositor keys cost
nothing, so an anchor shares each recipient's mailbox fairly among depositors (a share that shrinks as more deposit
for it, a byte bound, room kept for depositors it pinned) and refuses what does not fit. ERROR
``E_FULL`` means this depositor's share, or the recipient's mailbox, is full: the depositor keeps the envelope and
retries later; ``E_BUSY``: its deposit rate is used up. (The wire is the same as before this policy.)

**Identity proof** (FETCH). A peer ID is SHA-256(Noise static public)[0:8] (:mod:`node.identity`), so only the
holder of the Noise private key *is* that peer. The proof binds both of the peer's keys to one fresh challenge:

* ``transcript = "aivillage mailbox fetch v1" ‖ anchor_key 32 ‖ nonce ‖ ephemeral ‖ expires_at_ms ‖ recipient 8 ‖
  noise_public 32 ‖ signing_public 32`` (``anchor_key``: the anchor's Ed25519 public key, so a proof made for
  one anchor is worthless at another);
* ``mac = HMAC-SHA256(SHA-256("aivillage mailbox dh v1" ‖ X25519(noise_private, ephemeral)), transcript)``
  proves possession of the Noise private key (the anchor computes the same DH with its ephemeral private key);
* ``signature = Ed25519_sign(signing_key, transcript ‖ mac)`` binds the signing key, as the signed announce does.

The anchor refuses a proof whose challenge it did not issue, that expired, that was already used (each challenge
is consumed by its first FETCH, right or wrong), whose peer ID does not match the Noise key, or whose MAC or
signature does not verify. A valid proof yields a short-lived **grant** for that recipient alone, needed to ACK
(delete) envelopes after they are safely stored.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.signing
from libp2p.custom_types import TProtocol

from node.errors import CryptoError
from node.identity import Identity, peer_id_from_noise_key
from node.wire import MalformedFrame

MAILBOX_PROTOCOL = TProtocol("/aivillage/mailbox/1.0.0")
LENGTH = struct.Struct(">I")
MAX_FRAME_BYTES = 1_048_576  # a FETCH answer of many envelopes; one envelope is at most ~2 KB (courier.py)

DEPOSIT, CHALLENGE_REQUEST, FETCH, ACK = 0x01, 0x02, 0x03, 0x04
DEPOSITED, CHALLENGE, ENVELOPES, ACKED, ERROR = 0x81, 0x82, 0x83, 0x84, 0xFF

# Error codes in ERROR frames.
E_MALFORMED, E_REFUSED, E_FULL, E_AUTH, E_UNAVAILABLE, E_BUSY = 1, 2, 3, 4, 5, 6
ERROR_NAMES = {
    E_MALFORMED: "malformed",
    E_REFUSED: "refused",
    E_FULL: "full",
    E_AUTH: "auth",
    E_UNAVAILABLE: "down",
    E_BUSY: "busy",  # this depositor's rate is used up: retry later
}
TRANSIENT = frozenset({E_UNAVAILABLE, E_BUSY})  # errors worth retrying; the others are final for that request

NONCE_BYTES = 32
GRANT_BYTES = 16
KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAC_BYTES = 32
TRANSCRIPT_LABEL = b"aivillage mailbox fetch v1"
DH_LABEL = b"aivillage mailbox dh v1"
MAX_IDS_PER_ACK = 1024  # IDs in one ACK frame

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_CHALLENGE = struct.Struct(">32s32sQ")
_PROOF = struct.Struct(">8s32s32s32s32s64s")  # recipient, noise pub, signing pub, nonce, mac, signature
_ITEM = struct.Struct(">QI")


class MailboxError(CryptoError):
    """The anchor refused a mailbox request (the message names the reason), or its answer made no sense."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"mailbox {ERROR_NAMES.get(code, str(code))}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes
    ephemeral_public: bytes
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Proof:
    recipient_id: bytes
    noise_public: bytes
    signing_public: bytes
    nonce: bytes
    mac: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    id: int
    envelope: bytes  # courier encoding


# ---------------------------------------------------------------- proof


def transcript(
    anchor_key: bytes, challenge: Challenge, recipient_id: bytes, noise_public: bytes, signing_public: bytes
) -> bytes:
    return (
        TRANSCRIPT_LABEL
        + anchor_key
        + challenge.nonce
        + challenge.ephemeral_public
        + _U64.pack(challenge.expires_at_ms)
        + recipient_id
        + noise_public
        + signing_public
    )


def _dh_key(private: bytes, public: bytes) -> bytes:
    try:
        shared = nacl.bindings.crypto_scalarmult(private, public)
    except nacl.exceptions.RuntimeError as exc:  # a low-order point: no shared secret
        raise CryptoError("mailbox: X25519 with a low-order key") from exc
    if shared == bytes(32):
        raise CryptoError("mailbox: X25519 with a low-order key")
    return hashlib.sha256(DH_LABEL + shared).digest()


def make_proof(identity: Identity, anchor_key: bytes, challenge: Challenge) -> Proof:
    """The recipient's answer to ``challenge`` from the anchor whose Ed25519 key is ``anchor_key``."""
    t = transcript(anchor_key, challenge, identity.peer_id, identity.noise_public, identity.signing_public)
    mac = hmac.new(_dh_key(identity.noise_private, challenge.ephemeral_public), t, hashlib.sha256).digest()
    signature = identity.signing_key.sign(t + mac).signature
    return Proof(identity.peer_id, identity.noise_public, identity.signing_public, challenge.nonce, mac, signature)


def check_proof(proof: Proof, anchor_key: bytes, challenge: Challenge, ephemeral_private: bytes) -> None:
    """Raise :class:`CryptoError` unless ``proof`` answers ``challenge`` (already looked up by its nonce)."""
    if peer_id_from_noise_key(proof.noise_public) != proof.recipient_id:
        raise CryptoError("the Noise key does not hash to the recipient's peer ID")
    t = transcript(anchor_key, challenge, proof.recipient_id, proof.noise_public, proof.signing_public)
    try:
        nacl.signing.VerifyKey(proof.signing_public).verify(t + proof.mac, proof.signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError) as exc:
        raise CryptoError("the signature does not verify") from exc
    expected = hmac.new(_dh_key(ephemeral_private, proof.noise_public), t, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, proof.mac):
        raise CryptoError("the proof of the Noise key does not verify")


# ---------------------------------------------------------------- frames


def frame(body: bytes) -> bytes:
    return LENGTH.pack(len(body)) + body


def encode_deposit(envelope: bytes) -> bytes:
    return bytes([DEPOSIT]) + envelope


def encode_challenge_request() -> bytes:
    return bytes([CHALLENGE_REQUEST])


def encode_fetch(proof: Proof, max_envelopes: int) -> bytes:
    return (
        bytes([FETCH])
        + _PROOF.pack(
            proof.recipient_id, proof.noise_public, proof.signing_public, proof.nonce, proof.mac, proof.signature
        )
        + _U16.pack(max_envelopes)
    )


def encode_ack(grant: bytes, ids: list[int]) -> bytes:
    if len(ids) > MAX_IDS_PER_ACK:
        raise ValueError(f"at most {MAX_IDS_PER_ACK} IDs per ACK")
    return bytes([ACK]) + grant + _U16.pack(len(ids)) + b"".join(_U64.pack(i) for i in ids)


def encode_deposited(envelope_id: int, new: bool) -> bytes:
    return bytes([DEPOSITED]) + _U64.pack(envelope_id) + bytes([int(new)])


def encode_challenge(ch: Challenge) -> bytes:
    return bytes([CHALLENGE]) + _CHALLENGE.pack(ch.nonce, ch.ephemeral_public, ch.expires_at_ms)


def encode_envelopes(grant: bytes, items: list[StoredEnvelope]) -> bytes:
    parts = [bytes([ENVELOPES]), grant, _U16.pack(len(items))]
    for item in items:
        parts.append(_ITEM.pack(item.id, len(item.envelope)))
        parts.append(item.envelope)
    return b"".join(parts)


def encode_acked(deleted: int) -> bytes:
    return bytes([ACKED]) + _U16.pack(min(deleted, 0xFFFF))


def encode_error(code: int, reason: str) -> bytes:
    return bytes([ERROR, code]) + reason.encode()[:512]


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded client request: exactly one of the optional fields is set, by ``type``."""

    type: int
    envelope: bytes = b""
    proof: Proof | None = None
    max_envelopes: int = 0
    grant: bytes = b""
    ids: tuple[int, ...] = ()


def decode_request_untrusted(body: bytes) -> Request:
    if not body:
        raise MalformedFrame("empty mailbox request")
    kind, rest = body[0], body[1:]
    if kind == DEPOSIT:
        return Request(kind, envelope=rest)
    if kind == CHALLENGE_REQUEST:
        if rest:
            raise MalformedFrame("challenge request with a body")
        return Request(kind)
    if kind == FETCH:
        if len(rest) != _PROOF.size + _U16.size:
            raise MalformedFrame(f"fetch of {len(rest)} bytes (expected {_PROOF.size + _U16.size})")
        proof = Proof(*_PROOF.unpack_from(rest))
        (limit,) = _U16.unpack_from(rest, _PROOF.size)
        return Request(kind, proof=proof, max_envelopes=limit)
    if kind == ACK:
        if len(rest) < GRANT_BYTES + _U16.size:
            raise MalformedFrame("ack too short")
        grant = rest[:GRANT_BYTES]
        (n,) = _U16.unpack_from(rest, GRANT_BYTES)
        ids_raw = rest[GRANT_BYTES + _U16.size :]
        if n > MAX_IDS_PER_ACK or len(ids_raw) != n * _U64.size:
            raise MalformedFrame(f"ack of {n} IDs in {len(ids_raw)} bytes")
        ids = tuple(_U64.unpack_from(ids_raw, i * _U64.size)[0] for i in range(n))
        return Request(kind, grant=grant, ids=ids)
    raise MalformedFrame(f"unknown mailbox request type 0x{kind:02x}")


def _check_error(body: bytes) -> None:
    if body and body[0] == ERROR:
        if len(body) < 2:
            raise MalformedFrame("error frame without a code")
        raise MailboxError(body[1], body[2:].decode("utf-8", errors="replace"))


def decode_deposited_untrusted(body: bytes) -> tuple[int, bool]:
    _check_error(body)
    if len(body) != 1 + _U64.size + 1 or body[0] != DEPOSITED:
        raise MalformedFrame("expected DEPOSITED")
    return _U64.unpack_from(body, 1)[0], bool(body[-1])


def decode_challenge_untrusted(body: bytes) -> Challenge:
    _check_error(body)
    if len(body) != 1 + _CHALLENGE.size or body[0] != CHALLENGE:
        raise MalformedFrame("expected CHALLENGE")
    return Challenge(*_CHALLENGE.unpack_from(body, 1))


def decode_envelopes_untrusted(body: bytes) -> tuple[bytes, list[StoredEnvelope]]:
    _check_error(body)
    if len(body) < 1 + GRANT_BYTES + _U16.size or body[0] != ENVELOPES:
        raise MalformedFrame("expected ENVELOPES")
    grant = body[1 : 1 + GRANT_BYTES]
    (n,) = _U16.unpack_from(body, 1 + GRANT_BYTES)
    pos = 1 + GRANT_BYTES + _U16.size
    items = []
    for _ in range(n):
        if pos + _ITEM.size > len(body):
            raise MalformedFrame("truncated ENVELOPES")
        env_id, size = _ITEM.unpack_from(body, pos)
        pos += _ITEM.size
        if pos + size > len(body):
            raise MalformedFrame("truncated envelope in ENVELOPES")
        items.append(StoredEnvelope(env_id, body[pos : pos + size]))
        pos += size
    if pos != len(body):
        raise MalformedFrame("trailing bytes after ENVELOPES")
    return grant, items


def decode_acked_untrusted(body: bytes) -> int:
    _check_error(body)
    if len(body) != 1 + _U16.size or body[0] != ACKED:
        raise MalformedFrame("expected ACKED")
    return int(_U16.unpack_from(body, 1)[0])
